"""Abstract machine states: registers, stack slots and call frames, as the verifier tracks them.

A :class:`Reg` says what one register holds on one path: nothing readable yet, a scalar (with its
:class:`~.scalar.Scalar` knowledge), or a pointer of a kind the kernel's verifier knows (ctx, fp —
a pointer into a stack frame —, map_ptr, map_value, map_value_or_null) with a fixed and a variable
offset. Registers are immutable values; a :class:`Frame` holds eleven of them plus its stack, a
:class:`State` the frames of one path (one per bpf-to-bpf call level).

This module also decides when a path may be cut short (:func:`subsumes`: every behaviour of the
new state is one an already-verified state had) and when a loop made no progress
(:func:`exact_key`), and renders states the way the kernel's verifier log does.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from ..isa import FP, NREGS
from . import scalar as sc
from .scalar import Scalar

NOT_INIT, SCALAR, CTX, STACK, MAP_PTR, MAP_VALUE = (
    "not_init", "scalar", "ctx", "fp", "map_ptr", "map_value")

SLOT = 8                     # bytes per stack slot (BPF_REG_SIZE)
INVALID, MISC, ZERO, SPILL = "?", "m", "0", "r"   # per-byte stack contents, kernel log letters


class Reg(NamedTuple):
    kind: str
    s: Scalar = sc.ZERO   # a scalar's value; for pointers, the variable part of the offset
    off: int = 0          # a pointer's fixed offset
    map: int = -1         # index into Program.maps (map_ptr, map_value)
    frame: int = 0        # the frame an fp pointer points into
    id: int = 0           # copies of one map_value_or_null share it: one NULL check covers all
    null: bool = False    # map_value_or_null: must be compared with 0 before use

    @property
    def is_ptr(self) -> bool:
        return self.kind != SCALAR and self.kind != NOT_INIT

    @property
    def type_name(self) -> str:
        """The kernel's name for the register's type (reg_type_str)."""
        return "map_value_or_null" if self.null else self.kind


UNINIT = Reg(NOT_INIT, sc.UNKNOWN)
UNKNOWN = Reg(SCALAR, sc.UNKNOWN)


def scalar(s: Scalar) -> Reg:
    return Reg(SCALAR, s)


class Slot(NamedTuple):
    """One 8-byte stack slot: a letter per byte (index 0 is the highest address, as in the
    kernel) and the register spilled there, if the slot holds one whole register."""

    types: str
    spill: Reg | None = None


EMPTY = Slot(INVALID * SLOT)


def slot_of(off: int) -> tuple[int, int]:
    """(slot index, byte index in the slot) of the stack byte at ``fp + off`` (off < 0)."""
    return (-off - 1) // SLOT, (-off - 1) % SLOT


class Frame:
    """The registers and stack of one call level."""

    __slots__ = ("regs", "stack", "callsite", "frameno", "subprog")

    def __init__(self, regs: list[Reg], stack: dict[int, Slot], callsite: int, frameno: int,
                 subprog: int) -> None:
        self.regs = regs
        self.stack = stack
        self.callsite = callsite   # pc of the call that made this frame (-1 for the main one)
        self.frameno = frameno
        self.subprog = subprog     # first pc of the function this frame runs

    @classmethod
    def entry(cls, frameno: int, callsite: int, subprog: int) -> "Frame":
        regs = [UNINIT] * NREGS
        regs[FP] = Reg(STACK, frame=frameno)
        return cls(regs, {}, callsite, frameno, subprog)

    def copy(self) -> "Frame":
        return Frame(list(self.regs), dict(self.stack), self.callsite, self.frameno, self.subprog)


class State:
    """Everything known on one path at one pc."""

    __slots__ = ("frames", "pc", "parent", "hist")

    def __init__(self, frames: list[Frame], pc: int, parent=None, hist=None) -> None:
        self.frames = frames
        self.pc = pc
        self.parent = parent   # the newest checkpoint on this path (see check.Checkpoint)
        self.hist = hist if hist is not None else []   # (pc, stack slot) since that checkpoint

    @property
    def cur(self) -> Frame:
        return self.frames[-1]

    def copy(self) -> "State":
        return State([f.copy() for f in self.frames], self.pc, self.parent, list(self.hist))

    def all_regs(self):
        """Every register and spilled register of every frame, with a way to replace it."""
        for f in self.frames:
            for i, r in enumerate(f.regs):
                yield r, f.regs.__setitem__, i
            for spi, slot in f.stack.items():
                if slot.spill is not None:
                    yield slot.spill, _respill(f.stack), spi


def _respill(stack: dict[int, Slot]) -> Callable[[int, Reg], None]:
    def put(spi: int, reg: Reg) -> None:
        stack[spi] = Slot(stack[spi].types, reg)
    return put


# --- pruning: does an explored state cover the current one? --------------------------------------

LiveFn = Callable[[State, int], frozenset[int]]


def subsumes(old: State, cur: State, live: LiveFn, precise: set) -> bool:
    """Whether every path from ``cur`` behaves like one from ``old`` (already found safe):
    same call chain, and each live register / stack byte of ``cur`` is within ``old``'s —
    where for scalars only the ``precise`` ones' values count (see :mod:`.precision`)."""
    if len(old.frames) != len(cur.frames):
        return False
    idmap: dict[int, int] = {}
    for depth, (fo, fc) in enumerate(zip(old.frames, cur.frames)):
        if fo.callsite != fc.callsite:
            return False
        ro, rc = fo.regs, fc.regs
        for i in live(old, depth):
            if not regsafe(ro[i], rc[i], idmap, (depth, i) in precise):
                return False
        if not _stacksafe(fo.stack, fc.stack, idmap, depth, precise):
            return False
    return True


def regsafe(old: Reg, cur: Reg, idmap: dict[int, int], precise: bool = True) -> bool:
    if old.kind == NOT_INIT:
        return True   # the explored path never read it, so its value cannot matter
    if old.kind != cur.kind:
        return False
    if old.kind == SCALAR:
        return not precise or sc.within(old.s, cur.s)
    if (old.off != cur.off or old.map != cur.map or old.frame != cur.frame
            or old.null != cur.null or not sc.within(old.s, cur.s)):
        return False
    if old.id or cur.id:
        # ids link copies of one nullable pointer: the links must be the same in both states
        if idmap.setdefault(old.id, cur.id) != cur.id:
            return False
        if idmap.setdefault(-1 - cur.id, old.id) != old.id:
            return False
    return True


def _stacksafe(old: dict[int, Slot], cur: dict[int, Slot], idmap: dict[int, int], depth: int,
               precise: set) -> bool:
    for spi, os_ in old.items():
        cs = cur.get(spi, EMPTY)
        if os_.spill is not None:
            exact = ("s", depth, spi) in precise
            if cs.spill is not None:
                if not regsafe(os_.spill, cs.spill, idmap, exact):
                    return False
                continue
            # old held a whole register; cur holds bytes: fine only if reads cannot tell
            if os_.spill.kind != SCALAR:
                return False
            if INVALID in cs.types:
                return False
            want = sc.ZERO if cs.types == ZERO * SLOT else sc.UNKNOWN
            if exact and not sc.within(os_.spill.s, want):
                return False
            continue
        for o, c in zip(os_.types, cs.types):
            if o == INVALID or o == c:
                continue
            if o == MISC and (c == ZERO or (c == SPILL and cs.spill.kind == SCALAR)):
                continue
            if o == ZERO and c == SPILL and cs.spill.kind == SCALAR and cs.spill.s == sc.ZERO:
                continue
            return False
    for spi, cs in cur.items():
        # where old had no spilled register, its future may overwrite part of the slot, which
        # a spilled pointer forbids
        if cs.spill is not None and cs.spill.kind != SCALAR and old.get(spi, EMPTY).spill is None:
            return False
    return True


def quick_key(st: State, live: LiveFn) -> tuple:
    """The live registers of the current frame, ids left out: equal exact keys have equal quick
    keys (the kernel's states_maybe_looping)."""
    regs = st.frames[-1].regs
    return (len(st.frames), tuple(regs[i]._replace(id=0) if regs[i].id else regs[i]
                                  for i in sorted(live(st, len(st.frames) - 1))))


def exact_key(st: State, live: LiveFn) -> tuple:
    """A hashable picture of the live part of ``st``: equal keys at one pc on one path mean the
    loop between them made no progress (the kernel's "infinite loop detected")."""
    ids: dict[int, int] = {}

    def norm(r: Reg) -> Reg:
        if r.id:
            r = r._replace(id=ids.setdefault(r.id, len(ids) + 1))
        return r

    out = []
    for depth, f in enumerate(st.frames):
        lv = live(st, depth)
        regs = tuple(norm(r) if i in lv else UNINIT for i, r in enumerate(f.regs))
        stack = tuple(sorted((k, s.types, norm(s.spill) if s.spill else None)
                             for k, s in f.stack.items()))
        out.append((f.callsite, regs, stack))
    return tuple(out)


# --- the kernel's log spelling ---------------------------------------------------------------


def fmt_reg(r: Reg, maps, frameno: int = 0) -> str:
    if r.kind == SCALAR:
        return sc.fmt(r.s)
    if r.kind == STACK:
        where = f"fp[{r.frame}]" if r.frame != frameno else "fp"
        if r.s.is_const:
            return f"{where}{r.off + sc.s64(r.s.tv)}" if (r.off or r.s.tv) else f"{where}0"
        return f"{where}(off={r.off},{sc.fmt(r.s)[7:-1]})"
    parts = []
    if r.id:
        parts.append(f"id={r.id}")
    if r.off:
        parts.append(f"off={r.off}")
    if not r.s.is_const:
        parts.append(sc.fmt(r.s)[7:-1])
    elif r.s.tv:
        parts.append(f"imm={sc.s64(r.s.tv)}")
    if r.kind in (MAP_PTR, MAP_VALUE) and 0 <= r.map < len(maps):
        m = maps[r.map]
        parts.append(f"ks={getattr(m, 'key_size', '?')},vs={getattr(m, 'value_size', '?')}")
    return f"{r.type_name}({','.join(parts)})"


def fmt_slot(off: int, slot: Slot, maps, frameno: int) -> str:
    if slot.spill is not None:
        return f"fp{off}={fmt_reg(slot.spill, maps, frameno)}"
    return f"fp{off}={slot.types}"


def fmt_frame(f: Frame, maps, regs=None, written=()) -> str:
    """``R1=ctx() R10=fp0 fp-8=mmmmmmmm``: the readable registers (or only ``regs``) and the
    stack slots that hold something; ``_w`` marks what the last instruction wrote."""
    items = []
    for i in (range(NREGS) if regs is None else regs):
        r = f.regs[i]
        if r.kind != NOT_INIT:
            mark = "_w" if i in written else ""
            items.append(f"R{i}{mark}={fmt_reg(r, maps, f.frameno)}")
    if regs is None:
        for spi in sorted(f.stack):
            slot = f.stack[spi]
            if slot.spill is not None or slot.types != EMPTY.types:
                items.append(fmt_slot(-(spi + 1) * SLOT, slot, maps, f.frameno))
    prefix = f"frame{f.frameno}: " if f.frameno else ""
    return prefix + " ".join(items)
