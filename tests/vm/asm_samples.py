"""Shared data for the asm/disasm/llvm-mc tests: sample instructions and conformance text.

:func:`samples` builds representative instructions for every form in isa.SPECS: fields a form
fixes take their fixed value, reserved fields are zero, and the free fields cycle through edge
values (registers r0..r10, offsets and immediates at their limits, negatives). :func:`asm_of`
reads the ``-- asm`` section of a bpf_conformance ``.data`` file.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from sysdispatch.vm.isa import FIELDS, LDDW_SOURCES, SPECS, Insn, OpSpec, lddw

REGS = (0, 1, 5, 9, 10, 3)
OFFS = (0, -8, 4, 0x7FFF, -0x8000, 1)
IMMS = (0, 1, -1, 0x7FFFFFFF, -0x80000000, 59)
LDDW_VALUES = (0, 1, 0x1122334455667788, 0xFFFFFFFFFFFFFFFF, 0x80000000, 0xFFFF, 0x10000)

# Maps for lddw map forms: what a map object offers the (dis)assembler is its name.
MAPS = tuple(SimpleNamespace(name=n) for n in ("conns", "syscalls", "counts"))


def build(spec: OpSpec, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0,
          second: int = 0) -> tuple[Insn, ...]:
    """The slot(s) of ``spec`` with these free fields (fixed/reserved ones are forced)."""
    fields = {"dst": dst, "src": src, "off": off, "imm": imm}
    for f in FIELDS:
        if f in spec.zero:
            fields[f] = 0
    fields.update(dict(spec.fixed))
    if spec.wide:
        fields["off"] = 0
        if fields["src"] == LDDW_SOURCES[0]:
            return lddw(fields["dst"], second)
        return (Insn(spec.code, fields["dst"], fields["src"], 0, fields["imm"] % len(MAPS)),
                Insn(0, 0, 0, 0, ((second + 0x80000000) & 0xFFFFFFFF) - 0x80000000))
    return (Insn(spec.code, **fields),)


def samples(spec: OpSpec, n: int = 6) -> list[tuple[Insn, ...]]:
    """``n`` varied instructions of ``spec``."""
    out = []
    for i in range(n):
        src = LDDW_SOURCES[i % len(LDDW_SOURCES)] if spec.wide else REGS[(i + 2) % len(REGS)]
        out.append(build(spec, REGS[i % len(REGS)], src, OFFS[i % len(OFFS)],
                         IMMS[i % len(IMMS)], LDDW_VALUES[i % len(LDDW_VALUES)]))
    return out


def all_samples(n: int = 6) -> list[tuple[OpSpec, tuple[Insn, ...]]]:
    return [(spec, slots) for spec in SPECS for slots in samples(spec, n)]


# --- the conformance suite's .data files -------------------------------------------------------

CONFORMANCE_HELPERS = frozenset({5})   # the suite's helper 5 (returns r1)


def sections(path: Path) -> dict[str, tuple[int, str]]:
    """``-- name`` sections of a bpf_conformance .data file: name -> (first line number, text)."""
    out: dict[str, tuple[int, str]] = {}
    name = None
    for lineno, line in enumerate(path.read_text().splitlines(keepends=True), 1):
        if line.startswith("-- "):
            name = line[3:].strip()
            out[name] = (lineno + 1, "")
        elif name is not None:
            first, text = out[name]
            out[name] = (first, text + line)
    return out


def asm_of(path: Path) -> str:
    """The ``-- asm`` text, padded so that line numbers in errors are the .data file's."""
    first, text = sections(path).get("asm", (1, ""))
    return "\n" * (first - 1) + text
