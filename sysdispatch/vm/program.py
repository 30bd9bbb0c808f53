"""Programs: a checked sequence of instruction slots plus what it refers to.

:meth:`Program.load` is the load-time check every program passes before anything else sees it
(the structural part of what the kernel's ``bpf_check`` does before walking paths): every opcode
known, reserved fields zero, ``lddw`` complete, jump and call targets inside the program and never
inside an ``lddw``, helper ids known, map references valid. The path-sensitive verifier builds on a
loaded program.

A program also carries its program type (what its ctx is, which helpers it may call), the maps it
references (``lddw rX, map`` loads entry ``imm`` of :attr:`Program.maps`) and, when it came from
text, the source location of every slot so errors can say ``file:line:col``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import EncodingError, Location, SysdispatchError
from .isa import (CALL_HELPER, FP, Insn, LDDW_SOURCES, OpSpec, PSEUDO_MAP_FD,
                  PSEUDO_MAP_VALUE, decode_program, spec_of)


@dataclass(frozen=True, slots=True)
class ProgType:
    """A program type: what r1 points to at entry and which helpers are allowed."""

    name: str
    ctx_size: int            # bytes of ctx (0: the ctx is caller-given memory of any size)
    ctx_writable: bool
    helpers: frozenset[int]  # allowed helper ids

    def __str__(self) -> str:
        return self.name

    @property
    def ctx_region(self) -> str:
        """What faults call the memory r1 points to at entry: this type's ctx, or the caller's
        memory (both engines name the region so)."""
        return f"{self.name} ctx" if self.ctx_size else "mem"


# Helper ids by their Linux numbers (include/uapi/linux/bpf.h).
MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM = 1, 2, 3
KTIME_GET_NS, TRACE_PRINTK, GET_PRANDOM_U32 = 5, 6, 7
TAIL_CALL, GET_CURRENT_PID_TGID = 12, 14

_ALL_HELPERS = frozenset({MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, KTIME_GET_NS,
                          TRACE_PRINTK, GET_PRANDOM_U32, TAIL_CALL, GET_CURRENT_PID_TGID})

# seccomp: ctx is the 64-byte, read-only struct seccomp_data.
SECCOMP = ProgType("seccomp", 64, False, _ALL_HELPERS)
# generic: ctx is caller-given memory (the conformance suite's r1/r2), as a socket filter's would be.
GENERIC = ProgType("generic", 0, True, _ALL_HELPERS)
PROG_TYPES = {t.name: t for t in (SECCOMP, GENERIC)}


@dataclass(frozen=True, eq=False)
class Program:
    """A loaded (structurally checked) program. Build with :meth:`load` or :meth:`from_bytes`."""

    insns: tuple[Insn, ...]
    specs: tuple[OpSpec | None, ...]  # None for the second slot of an lddw
    prog_type: ProgType = GENERIC
    maps: tuple[Any, ...] = ()
    name: str = "prog"
    source: tuple[Location | None, ...] | None = None
    labels: Mapping[int, str] = field(default_factory=dict)  # pc -> label, for disassembly

    def __len__(self) -> int:
        return len(self.insns)

    def where(self, pc: int) -> Location | None:
        """The source location of slot ``pc``, when the program came from text."""
        if self.source is not None and 0 <= pc < len(self.source):
            return self.source[pc]
        return None

    def error(self, exc: SysdispatchError, pc: int) -> SysdispatchError:
        """Attach pc and source location of slot ``pc`` to ``exc``."""
        return exc.at(loc=self.where(pc), pc=pc)

    def bytes(self) -> bytes:
        return b"".join(i.encode() for i in self.insns)

    @classmethod
    def from_bytes(cls, raw: bytes, **kw) -> "Program":
        return cls.load(decode_program(raw), **kw)

    @classmethod
    def load(cls, insns: Sequence[Insn], *, prog_type: ProgType = GENERIC,
             maps: Sequence[Any] = (), name: str = "prog",
             source: Sequence[Location | None] | None = None,
             labels: Mapping[int, str] | None = None,
             helpers: frozenset[int] | None = None) -> "Program":
        """Check ``insns`` and return a :class:`Program`, or raise an error naming the pc.

        ``helpers`` overrides the program type's helper whitelist (the conformance suite
        calls helper 5 with its own meaning).
        """
        insns = tuple(insns)
        src = tuple(source) if source is not None else None
        prog = cls(insns, (), prog_type, tuple(maps), name, src, dict(labels or {}))
        try:
            specs = _check(insns, prog.maps, prog_type.helpers if helpers is None else helpers)
        except SysdispatchError as exc:
            raise prog.error(exc, exc.pc if exc.pc is not None else 0) from None
        object.__setattr__(prog, "specs", specs)
        return prog


def _check(insns: tuple[Insn, ...], maps: tuple[Any, ...],
           helpers: frozenset[int]) -> tuple[OpSpec | None, ...]:
    n = len(insns)
    if n == 0:
        raise EncodingError("program has no instructions", pc=0)
    specs: list[OpSpec | None] = []
    pc = 0
    while pc < n:
        insn = insns[pc]
        try:
            spec = spec_of(insn)
        except EncodingError as exc:
            raise exc.at(pc=pc)
        specs.append(spec)
        _check_registers(insn, spec, pc)
        if spec.wide:
            if pc + 1 >= n:
                raise EncodingError("lddw without its second slot", pc=pc)
            nxt = insns[pc + 1]
            if (nxt.code, nxt.dst, nxt.src, nxt.off) != (0, 0, 0, 0):
                raise EncodingError("second slot of lddw must have only an immediate", pc=pc + 1)
            if insn.src not in LDDW_SOURCES:
                raise EncodingError(f"lddw with unsupported src {insn.src}", pc=pc)
            if insn.src in (PSEUDO_MAP_FD, PSEUDO_MAP_VALUE) and not 0 <= insn.imm < len(maps):
                raise EncodingError(f"lddw refers to map {insn.imm}, program has {len(maps)}", pc=pc)
            specs.append(None)
            pc += 2
            continue
        if spec.kind == "call" and insn.src == CALL_HELPER and insn.imm not in helpers:
            raise EncodingError(f"unknown helper {insn.imm}", pc=pc)
        pc += 1
    for pc, (insn, spec) in enumerate(zip(insns, specs)):
        if spec is None:
            continue
        target = jump_target(pc, insn, spec)
        if target is None:
            continue
        what = "call" if spec.kind == "local_call" else "jump"
        if not 0 <= target < n:
            raise EncodingError(f"{what} out of range (target {target}, {n} insns)", pc=pc)
        if specs[target] is None:
            raise EncodingError(f"{what} into the middle of lddw (target {target})", pc=pc)
    return tuple(specs)


def _check_registers(insn: Insn, spec: OpSpec, pc: int) -> None:
    """r0-r10 only, as the kernel's check_reg_arg; only memory stores may name r10 as dst."""
    regs = [("dst", insn.dst)]
    if (spec.reg and spec.kind != "callx") or spec.kind in ("ldx", "ldxs", "stx"):
        regs.append(("src", insn.src))
    for field_name, reg in regs:
        if reg > FP:
            raise EncodingError(f"invalid register r{reg} in {field_name}", pc=pc)


def jump_target(pc: int, insn: Insn, spec: OpSpec) -> int | None:
    """Absolute target of a jump or local call at ``pc``; None for other instructions."""
    if spec.kind in ("ja", "jcc", "jcc32"):
        return pc + insn.off + 1
    if spec.kind in ("ja32", "local_call"):
        return pc + insn.imm + 1
    return None
