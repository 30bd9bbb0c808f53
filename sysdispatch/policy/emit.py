"""Code emission for generated programs: instructions with symbolic jump targets, and the link step.

The compiler and the matchers in :mod:`.model` produce a flat list of items — an :class:`~sysdispatch.vm.isa.Insn`,
a :class:`Label`, or a :class:`Goto` (a jump instruction whose offset is a label still to be
resolved). :func:`link` places the labels, fills in every offset and fails loudly on a label that
is missing or defined twice. Instructions are built with ``isa.make`` from the one opcode table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Union

from ..errors import Location
from ..vm import isa
from ..vm.isa import Insn

# Register conventions of generated code. The seccomp ctx arrives in r1; a helper call clobbers
# r1-r5, and a tail call that falls through may be followed by another one, so generated code
# keeps the ctx in r6 (callee-saved) and loads r1 from it before each call.
CTX, ARG, INDEX, TABLE, SCRATCH = 6, 2, 3, 2, 4
OFF_NR, OFF_ARCH = 0, 4


def arg_offset(i: int) -> int:
    """Offset of ``args[i]`` in struct seccomp_data."""
    return 16 + 8 * i


@dataclass(frozen=True, slots=True)
class Label:
    name: str


@dataclass(frozen=True, slots=True)
class Goto:
    """A jump whose offset is the distance to ``target`` (resolved by :func:`link`)."""

    insn: Insn
    target: str


# A Location sets the source of the instructions after it (None: unknown from here on).
Item = Union[Insn, Label, Goto, Location, None]


def fits_imm(value: int) -> bool:
    """True when a 64-bit operation with 32-bit immediate ``imm`` (sign-extended) sees ``value``."""
    value &= 0xFFFFFFFFFFFFFFFF
    return value < 0x80000000 or value >= 0xFFFFFFFF80000000


def load_imm64(reg: int, value: int) -> list[Item]:
    """``reg = value`` for any 64-bit value (one mov when the immediate fits, else lddw)."""
    if fits_imm(value):
        return [isa.make("mov", reg, imm=value, reg=False)]
    return list(isa.lddw(reg, value))


def jump(op: str, reg: int, value: int, target: str, *, scratch: int = SCRATCH,
         wide: bool = True) -> list[Item]:
    """``if reg <op> value goto target`` with an unsigned 64-bit (``wide``) or 32-bit compare."""
    name = op if wide else op + "32"
    if not wide or fits_imm(value):
        return [Goto(isa.make(name, reg, imm=value, reg=False), target)]
    return list(isa.lddw(scratch, value)) + [Goto(isa.make(name, reg, scratch, reg=True), target)]


def ret(value: int) -> list[Item]:
    """``w0 = value; exit`` — a seccomp return value is the low 32 bits of r0."""
    return [isa.make("mov32", 0, imm=value & 0xFFFFFFFF, reg=False), isa.make("exit")]


@dataclass(frozen=True, slots=True)
class Linked:
    insns: list[Insn]
    labels: dict[int, str]                # pc -> label
    source: list[Location | None]         # pc -> where in the policy the slot comes from


def link(items: Iterable[Item]) -> Linked:
    """Resolve labels into offsets. ValueError on a bad label (a bug in the generator, never a
    user mistake)."""
    items = list(items)
    where: dict[str, int] = {}
    pc = 0
    for it in items:
        if isinstance(it, Label):
            if it.name in where:
                raise ValueError(f"label '{it.name}' defined twice")
            where[it.name] = pc
        elif it is not None and not isinstance(it, Location):
            pc += 1
    out: list[Insn] = []
    source: list[Location | None] = []
    loc: Location | None = None
    for it in items:
        if it is None or isinstance(it, Location):
            loc = it
            continue
        if isinstance(it, Label):
            continue
        if isinstance(it, Goto):
            if it.target not in where:
                raise ValueError(f"undefined label '{it.target}'")
            out.append(replace(it.insn, off=where[it.target] - len(out) - 1))
        else:
            out.append(it)
        source.append(loc)
    labels: dict[int, str] = {}
    for name, at in where.items():
        labels.setdefault(at, name)
    return Linked(out, labels, source)
