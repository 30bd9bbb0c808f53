"""The eBPF disassembler: instructions -> LLVM / kernel syntax text, as llvm-objdump prints it.

``r0 = *(u32 *)(r1 + 0)``, ``if r2 == 59 goto +3 <pc 12>``, ``r1 = map[conns] ll``. Immediates are
signed decimal like llvm-objdump 14 prints them; ``lddw`` values above 16 bits print in hex. Jumps
show the relative offset the bytes hold and, in ``<...>``, the absolute target (its label when the
program has one). Everything printed re-assembles with :func:`~sysdispatch.vm.asm.assemble` to the
same bytes: the ``<...>`` note, the ``N:`` pc prefix and the raw bytes are skipped by the parser.
The spellings come from :mod:`~sysdispatch.vm.asm_syntax`, which the assembler reads too.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..errors import EncodingError
from .asm_syntax import (ALU_OPERATORS, ATOMIC_FETCH_PREFIX, ATOMIC_OPERATORS, CMPXCHG_FUNCS,
                         JMP_OPERATORS, MAP_FORMS, XCHG_FUNCS, map_names)
from .isa import PSEUDO_IMM64, SIZE_CTYPE, Insn, lddw_value
from .program import Program, jump_target

BYTES_WIDTH = 16 * 3   # room for the 16 raw bytes of an lddw, so the text columns line up


def format_insn(pc: int, insn: Insn, second: Insn | None = None, *,
                labels: Mapping[int, str] | None = None,
                maps: Mapping[str, Any] | Sequence[Any] = ()) -> str:
    """One instruction at ``pc`` in LLVM syntax; ``second`` is the next slot (needed by lddw).

    ``labels`` ({pc: name}) names jump targets; ``maps`` (a sequence, or name -> map) names the
    maps an lddw refers to (a map's ``name`` attribute, else its index).
    """
    spec = insn.spec
    kind, d, s = spec.kind, insn.dst, insn.src
    r = "r" if spec.is64 else "w"
    if kind in ("alu", "alu32"):
        operand = f"{r}{s}" if spec.reg else str(insn.imm)
        return f"{r}{d} {ALU_OPERATORS[spec.op]} {operand}"
    if kind == "neg":
        return f"{r}{d} = -{r}{d}"
    if kind == "movsx":
        return f"{r}{d} = (s{spec.size}){r}{s}"
    if kind in ("end", "bswap"):
        return f"r{d} = {spec.op}{spec.size} r{d}"
    if kind in ("ja", "ja32"):
        rel = insn.off if kind == "ja" else insn.imm
        return f"{'goto' if kind == 'ja' else 'gotol'} {rel:+d}{_note(pc, insn, spec, labels)}"
    if kind in ("jcc", "jcc32"):
        operand = f"{r}{s}" if spec.reg else str(insn.imm)
        return (f"if {r}{d} {JMP_OPERATORS[spec.op]} {operand} goto {insn.off:+d}"
                f"{_note(pc, insn, spec, labels)}")
    if kind == "call":
        return f"call {insn.imm}"
    if kind == "local_call":
        return f"call pc{insn.imm:+d}{_note(pc, insn, spec, labels)}"
    if kind == "callx":
        return f"callx r{d}"
    if kind == "exit":
        return "exit"
    if kind == "lddw":
        if second is None:
            raise EncodingError("lddw without its second slot", pc=pc)
        if insn.src == PSEUDO_IMM64:
            return f"r{d} = {_imm64(lddw_value(insn, second))} ll"
        form = MAP_FORMS.get(insn.src)
        if form is None:
            raise EncodingError(f"lddw with unsupported src {insn.src}", pc=pc)
        extra = f" {'+' if second.imm >= 0 else '-'} {abs(second.imm)}" if second.imm else ""
        return f"r{d} = {form}[{_map_name(insn.imm, maps)}]{extra} ll"
    mem = f"({_reg_off(d if kind in ('st', 'stx', 'atomic') else s, insn.off)})"
    ctype = SIZE_CTYPE[spec.size]
    if kind == "ldx":
        return f"r{d} = *({ctype} *){mem}"
    if kind == "ldxs":
        return f"r{d} = *(s{spec.size * 8} *){mem}"
    if kind == "st":
        return f"*({ctype} *){mem} = {insn.imm}"
    if kind == "stx":
        return f"*({ctype} *){mem} = r{s}"
    # atomic: the 32-bit forms name their register wN, as llvm-objdump does with alu32
    a = "r" if spec.size == 8 else "w"
    if spec.op in ATOMIC_OPERATORS:
        return f"lock *({ctype} *){mem} {ATOMIC_OPERATORS[spec.op]} {a}{s}"
    if spec.op.startswith("fetch_"):
        return f"{a}{s} = {ATOMIC_FETCH_PREFIX}{spec.op}(({ctype} *){mem}, {a}{s})"
    where = _reg_off(d, insn.off)
    if spec.op == "xchg":
        return f"{a}{s} = {XCHG_FUNCS[spec.size]}({where}, {a}{s})"
    return f"{a}0 = {CMPXCHG_FUNCS[spec.size]}({where}, {a}0, {a}{s})"


def disassemble(program: Program, *, with_pc: bool = True, with_bytes: bool = False) -> str:
    """The whole program, one instruction a line, its labels on lines of their own."""
    lines = []
    insns = program.insns
    for pc, (insn, spec) in enumerate(zip(insns, program.specs)):
        if spec is None:           # second slot of an lddw: printed with the first
            continue
        if pc in program.labels:
            lines.append(f"{program.labels[pc]}:")
        second = insns[pc + 1] if spec.wide else None
        text = format_insn(pc, insn, second, labels=program.labels, maps=program.maps)
        prefix = ""
        if with_pc:
            prefix = f"{pc:6d}:  "
        if with_bytes:
            raw = insn.encode() + (second.encode() if second is not None else b"")
            prefix += f"{raw.hex(' '):<{BYTES_WIDTH}}  "
        lines.append(prefix + text if prefix else text)
    return "\n".join(lines) + "\n"


def _note(pc: int, insn: Insn, spec, labels: Mapping[int, str] | None) -> str:
    """`` <label>`` or `` <pc N>``: where a jump lands, for a reader (the parser skips it)."""
    target = jump_target(pc, insn, spec)
    if labels and target in labels:
        return f" <{labels[target]}>"
    return f" <pc {target}>"


def _reg_off(reg: int, off: int) -> str:
    return f"r{reg} {'-' if off < 0 else '+'} {abs(off)}"


def _imm64(value: int) -> str:
    """An lddw value: small ones in decimal, the rest as the unsigned 64-bit pattern in hex."""
    return str(value) if value <= 0xFFFF else f"0x{value:x}"


def _map_name(index: int, maps: Mapping[str, Any] | Sequence[Any]) -> str:
    names = map_names(maps)
    if 0 <= index < len(names) and isinstance(names[index], str) and names[index].isidentifier():
        return names[index]
    return str(index)
