"""Our assembler and disassembler against LLVM's BPF target (llvm-mc), form by form.

Two directions, each one llvm-mc call for all instructions:

* assemble: our disassembly of every sample instruction is fed to ``llvm-mc -show-encoding``;
  LLVM's bytes must equal ours (and our own assembler's reading of the same text);
* disassemble: our bytes are fed to ``llvm-mc -disassemble``; LLVM's text must equal ours, up to
  the ``<target>`` note we add, how an ``lddw`` value is written, and r/w in memory operands
  (LLVM spells those by its alu32 mode, so either spelling counts).

``llvm-mc`` (Debian's llvm, 14) is used when on PATH, and ``llvm-mc-19`` too when installed
(``apt-get install llvm-19``; it knows the v4 forms). Forms a version does not know, or spells
differently, are skipped with the reason.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

import pytest

from sysdispatch.vm.asm import parse
from sysdispatch.vm.asm_syntax import NOTE
from sysdispatch.vm.disasm import format_insn
from sysdispatch.vm.isa import SPECS, OpSpec

from asm_samples import MAPS, samples

TOOLS = ("llvm-mc", "llvm-mc-19")
V4 = "a cpu v4 form (LLVM 18+)"


def llvm14_gap(spec: OpSpec, slots, direction: str) -> str | None:
    """Why llvm-mc 14 cannot check ``slots`` in ``direction``, or None when it can."""
    if spec.kind in ("movsx", "ldxs", "bswap", "ja32") or spec.op in ("sdiv", "smod"):
        return V4
    if spec.op == "mod":
        return "LLVM 14 has no BPF mod ('%=')"
    if spec.kind == "st":
        return "LLVM 14 has no store-immediate syntax"
    if spec.op == "jset":
        return "LLVM 14 has no jset ('&' in a jump)"
    if spec.kind == "callx":
        return "LLVM 14 puts callx's register in imm; RFC 9669 and the kernel use dst"
    if spec.kind == "atomic" and spec.op not in ("add", "or", "and", "xor") and direction == "asm":
        return "LLVM 14's BPF asm parser rejects ',' (checked by the disassemble direction)"
    return common_gap(spec, slots, direction)


def llvm19_gap(spec: OpSpec, slots, direction: str) -> str | None:
    if spec.kind == "ja32" and direction == "asm":
        if slots[0].imm < 0:
            return "llvm-mc 19.1.7 crashes (SIGSEGV) assembling a backward gotol"
        if slots[0].imm > 0x7FFF:
            return "LLVM 19's asm parser reads gotol's operand as 16-bit"
    return common_gap(spec, slots, direction)


def common_gap(spec: OpSpec, slots, direction: str) -> str | None:
    if spec.kind == "local_call":
        return "'call pc+N' is bpftool's spelling; LLVM has local calls only as relocations"
    if spec.wide and slots[0].src != 0:
        return "map loads are our syntax ('map[NAME] ll'); LLVM prints ld_pseudo"
    return None


@functools.cache
def tool(name: str):
    """(path, gap function) of an installed llvm-mc with a BPF target, or None."""
    path = shutil.which(name)
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"LLVM version (\d+)", out)
    if m is None or "bpf" not in out:
        return None
    return path, (llvm14_gap if int(m.group(1)) < 18 else llvm19_gap)


CASES = [(spec, i, slots) for spec in SPECS for i, slots in enumerate(samples(spec))]


def _case_id(spec: OpSpec, i: int) -> str:
    return f"{spec.name}-{'x' if spec.reg else 'k'}{i}"


def text_of(slots) -> str:
    return format_insn(100, slots[0], slots[1] if len(slots) > 1 else None, maps=MAPS)


def _run(path: str, args: list[str], lines: list[str]):
    """Run llvm-mc on ``lines``; (stdout lines after .text, {1-based input line: diagnostic})."""
    proc = subprocess.run([path, "-triple", "bpfel", *args], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=120)
    diags = {int(m.group(1)): m.group(2)
             for m in re.finditer(r"<stdin>:(\d+):\d+: (?:error|warning): (.*)", proc.stderr)}
    out = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip() and ln.strip() != ".text"]
    return out, diags


def _per_line(lines, out, diags):
    """Pair each input line with its output line, or with LLVM's diagnostic."""
    it = iter(out)
    return [("diag", diags[n]) if n in diags else ("ok", next(it, "<missing output>"))
            for n in range(1, len(lines) + 1)]


@functools.cache
def assembled(name: str) -> dict[tuple[str, int], tuple[str, object]]:
    """Every checkable case's text, assembled by llvm-mc in one call."""
    path, gap = tool(name)
    keys, lines = [], []
    for spec, i, slots in CASES:
        if gap(spec, slots, "asm") is None:
            keys.append((spec, i))
            lines.append(NOTE.sub("", text_of(slots)))
    out, diags = _run(path, ["-show-encoding", "-mattr=+alu32"], lines)
    results = {}
    for key, (status, value) in zip(keys, _per_line(lines, out, diags)):
        if status == "ok":
            m = re.search(r"encoding: \[([^\]]*)\]", value)
            value = bytes(int(b, 16) for b in m.group(1).split(",")) if m else value
        results[key] = (status, value)
    return results


@functools.cache
def disassembled(name: str, alu32: bool) -> dict[tuple[str, int], tuple[str, str]]:
    """Every checkable case's bytes, disassembled by llvm-mc in one call."""
    path, gap = tool(name)
    keys, lines = [], []
    for spec, i, slots in CASES:
        if gap(spec, slots, "disasm") is None:
            keys.append((spec, i))
            raw = b"".join(s.encode() for s in slots)
            lines.append(" ".join(f"0x{b:02x}" for b in raw))
    out, diags = _run(path, ["-disassemble"] + (["-mattr=+alu32"] if alu32 else []), lines)
    return dict(zip(keys, _per_line(lines, out, diags)))


def _need(name: str):
    found = tool(name)
    if found is None:
        pytest.skip(f"{name} with a BPF target is not installed (Debian: llvm / llvm-19)")
    return found


def _normalize(text: str) -> str:
    """Our text and LLVM's, minus the differences that are only spelling choices."""
    text = " ".join(NOTE.sub("", text).split())
    m = re.fullmatch(r"(r\d+) = (-?(?:0x)?[0-9a-f]+) ll", text)
    if m:                                           # lddw: -1 and 0xffffffffffffffff are one value
        text = f"{m.group(1)} = {int(m.group(2), 0) & (2**64 - 1)} ll"
    return text


@pytest.mark.parametrize("name", TOOLS)
@pytest.mark.parametrize("spec,i,slots", CASES, ids=[_case_id(s, i) for s, i, _ in CASES])
def test_llvm_assembles_our_text_to_our_bytes(name, spec, i, slots):
    _, gap = _need(name)
    reason = gap(spec, slots, "asm")
    if reason:
        pytest.skip(reason)
    status, value = assembled(name)[spec, i]
    text = text_of(slots)
    assert status == "ok", f"{name} rejects {text!r}: {value}"
    ours = b"".join(s.encode() for s in slots)
    assert value == ours, f"{text!r}: {name} {value.hex()} ours {ours.hex()}"
    assert b"".join(s.encode() for s in parse(text, maps=MAPS).insns) == ours


@pytest.mark.parametrize("name", TOOLS)
@pytest.mark.parametrize("spec,i,slots", CASES, ids=[_case_id(s, i) for s, i, _ in CASES])
def test_llvm_disassembles_our_bytes_to_our_text(name, spec, i, slots):
    _, gap = _need(name)
    reason = gap(spec, slots, "disasm")
    if reason:
        pytest.skip(reason)
    ours = _normalize(text_of(slots))
    theirs = [disassembled(name, alu32)[spec, i] for alu32 in (True, False)]
    texts = [_normalize(v) for status, v in theirs if status == "ok"]
    assert texts, f"{name} cannot decode {ours!r}: {theirs[0][1]}"
    assert ours in texts, f"ours {ours!r}, {name}: {texts}"
