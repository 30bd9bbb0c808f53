"""Memory accesses as the verifier checks them: ctx, stack, map values, caller memory.

:func:`load`, :func:`store` and :func:`atomic` check one instruction's access through a pointer
register and return what it reads; :func:`readable` checks the memory a helper argument points to.
The rules and messages are the kernel's (check_mem_access and friends in kernel/bpf/verifier.c):

* ctx of a seccomp program: the 64-byte ``struct seccomp_data``, read-only, through the unmodified
  ctx pointer only; 4-byte loads at any 4-aligned offset (``nr``, ``arch``, and either half of the
  u64 fields, as classic seccomp filters read them), 8-byte loads of the u64 fields
  (``instruction_pointer``, ``args[i]``) at 8-aligned offsets; nothing else;
* ctx of a generic program: ``mem_size`` bytes of caller memory, read/write, any offset that is
  provably inside;
* stack: 512 bytes below the frame pointer, accesses aligned to their size, bytes written before
  they are read; an aligned 8-byte store of a register spills it (pointers keep their type when
  filled back), a pointer may only be spilled whole and read back whole;
* map values: ``value_size`` bytes, after a NULL check, constant or bounded variable offsets.

Where a privileged kernel would let a pointer's value turn into a scalar (storing it into map or
caller memory, reading part of a spilled pointer back, overwriting part of one) this verifier
follows the unprivileged rules instead, so no address can leak into r0 or into memory the host
reads. Atomics must be aligned whatever the memory (the kernel's strict_alignment_once).
"""

from __future__ import annotations

from ..isa import STACK_SIZE
from . import scalar as sc
from . import tnum
from .state import (CTX, EMPTY, INVALID, MAP_PTR, MAP_VALUE, MISC, NOT_INIT, SCALAR, SLOT,
                    SPILL, STACK, ZERO, Frame, Reg, Slot, UNKNOWN, scalar, slot_of)

MAX_VAR_OFF = 1 << 29  # BPF_MAX_VAR_OFF: larger offsets are treated as unbounded


class Reject(Exception):
    """The current instruction is refused; the walk adds pc, disassembly and location."""


def loaded(size: int, sx: bool) -> Reg:
    return scalar(sc.of_size_signed(size) if sx else sc.of_size(size))


def _bad_ptr(regno: int, reg: Reg) -> None:
    if reg.kind == NOT_INIT:
        raise Reject(f"R{regno} !read_ok")
    if reg.kind in (SCALAR, MAP_PTR) or reg.null:
        raise Reject(f"R{regno} invalid mem access '{reg.type_name}'")


# --- regions: map values and caller memory -------------------------------------------------


def region(v, regno: int, reg: Reg, off: int, size: int, limit: int, what: str) -> None:
    """``size`` bytes at ``reg + off`` must lie inside [0, limit)."""
    def fail(at: int, why: str = "") -> None:
        raise Reject(f"invalid access to {what}={limit} off={at} size={size}{why}")

    base = reg.off + off
    var = reg.s
    if var.is_const:
        at = base + sc.s64(var.tv)
        if at < 0 or at + size > limit:
            fail(at)
        return
    if var.smin < 0 and var.smin + base < 0:
        raise Reject(f"R{regno} min value is negative, either use unsigned index or do a "
                     f"if (index >=0) check.")
    lo = var.smin + base
    if lo < 0 or lo + size > limit:
        fail(lo, f"; R{regno} min value is outside of the allowed memory range")
    if var.umax >= MAX_VAR_OFF:
        raise Reject(f"R{regno} unbounded memory access, make sure to bounds check any such "
                     f"access")
    hi = var.umax + base
    if hi + size > limit:
        fail(hi, f"; R{regno} max value is outside of the allowed memory range")


def _map_value(v, regno: int, reg: Reg, off: int, size: int) -> None:
    region(v, regno, reg, off, size, v.maps[reg.map].value_size, "map value, value_size")


def _mem(v, regno: int, reg: Reg, off: int, size: int) -> None:
    region(v, regno, reg, off, size, v.mem_size, "memory, mem_size")


# --- ctx ---------------------------------------------------------------------------------------


def _seccomp_ctx(v, regno: int, reg: Reg, off: int, size: int, write: bool) -> None:
    if reg.off:
        raise Reject(f"dereference of modified ctx ptr R{regno} off={reg.off} disallowed")
    if not reg.s.is_const or reg.s.tv:
        raise Reject(f"variable ctx access var_off={tnum.fmt(reg.s.tnum)} disallowed")
    ok = not write and 0 <= off and off + size <= v.ctx_size and (
        (size == 4 and off % 4 == 0) or (size == 8 and off % 8 == 0 and off >= 8))
    if not ok:
        raise Reject(f"invalid bpf_context access off={off} size={size}")


def _ctx(v, regno: int, reg: Reg, off: int, size: int, write: bool) -> None:
    if v.ctx_size:
        _seccomp_ctx(v, regno, reg, off, size, write)
    else:
        _mem(v, regno, reg, off, size)


# --- stack -------------------------------------------------------------------------------------


def _stack_range(v, regno: int, reg: Reg, off: int, size: int, verb: str) -> tuple[int, int]:
    """Check alignment and bounds of a stack access; (lowest, highest) start offset from fp."""
    base = reg.off + off
    at = tnum.add(reg.s.tnum, tnum.const(base))
    if (at[0] | at[1]) & (size - 1):
        var = str(sc.s64(reg.s.tv)) if reg.s.is_const else tnum.fmt(reg.s.tnum)
        raise Reject(f"misaligned stack access off {var}+{reg.off}+{off} size {size}")
    if reg.s.is_const:
        lo = hi = base + sc.s64(reg.s.tv)
        if lo < -STACK_SIZE or lo + size > 0:
            raise Reject(f"invalid {verb} stack R{regno} off={lo} size={size}")
        return lo, hi
    if reg.s.smax >= MAX_VAR_OFF or reg.s.smin <= -MAX_VAR_OFF:
        raise Reject(f"invalid unbounded variable-offset {verb} stack R{regno}")
    lo, hi = base + reg.s.smin, base + reg.s.smax
    if lo < -STACK_SIZE or hi + size > 0:
        raise Reject(f"invalid variable-offset {verb} stack R{regno} "
                     f"var_off={tnum.fmt(reg.s.tnum)} off={base} size={size}")
    return lo, hi


def _stack_read(v, frame: Frame, lo: int, hi: int, size: int, sx: bool, regno: int) -> Reg:
    """Read ``size`` bytes at fp+lo .. fp+hi (start offsets); what the destination gets."""
    stack = frame.stack
    if lo == hi:
        spi, idx = slot_of(lo)
        slot = stack.get(spi, EMPTY)
        if slot.spill is not None:
            v.slot = (frame.frameno, spi)   # a fill: precision tracking follows the value
            if size == 8:
                return slot.spill
            if slot.spill.kind != SCALAR:
                raise Reject("invalid size of register fill")
            return _part_of(slot.spill.s, lo, spi, size, sx)
    all_zero = True
    for at in range(lo, hi + size):
        spi, idx = slot_of(at)
        slot = stack.get(spi, EMPTY)
        t = slot.types[idx]
        if t == INVALID:
            raise Reject(f"invalid read from stack off {lo}+{at - lo} size {size}")
        if t == SPILL and slot.spill.kind != SCALAR:
            raise Reject(f"R{regno} variable-offset read from stack would read part of the "
                         f"pointer spilled at fp{-(spi + 1) * SLOT}")
        if t != ZERO:
            all_zero = False
    return scalar(sc.ZERO) if all_zero else loaded(size, sx)


def _part_of(s: sc.Scalar, lo: int, spi: int, size: int, sx: bool) -> Reg:
    """Some bytes of a spilled scalar: exact for constants (little-endian), else any value."""
    if not s.is_const:
        return loaded(size, sx)
    shift = 8 * (lo + (spi + 1) * SLOT)
    bits = 8 * size
    val = (s.tv >> shift) & ((1 << bits) - 1)
    if sx and val >> (bits - 1):
        val -= 1 << bits
    return scalar(sc.const(val))


def _stack_write(v, frame: Frame, lo: int, hi: int, size: int, value: Reg | None, imm: int,
                 regno: int) -> None:
    """Write ``value`` (a register, or None for the immediate ``imm``) at fp+lo .. fp+hi."""
    stack = frame.stack
    v.note_depth(frame, -lo)
    if value is not None and value.is_ptr:
        if value.kind == STACK and value.frame > frame.frameno:
            raise Reject("cannot spill pointers to stack into stack frame of the caller")
        if lo != hi:
            raise Reject(f"R{regno} variable-offset stack write of a pointer")
        if size != SLOT:
            raise Reject("invalid size of register spill")
    if lo != hi:
        _stack_write_var(stack, lo, hi, size, value, imm)
        return
    spi, idx = slot_of(lo)
    if size == SLOT:
        reg = value if value is not None else scalar(sc.const(imm))
        stack[spi] = Slot(SPILL * SLOT, reg)
        v.slot = (frame.frameno, spi)   # a spill: precision tracking follows the value
        return
    old = stack.get(spi, EMPTY)
    if old.spill is not None and old.spill.kind != SCALAR:
        raise Reject("attempt to corrupt spilled pointer on stack")
    zero = (value.s == sc.ZERO) if value is not None else imm == 0
    types = list(old.types)
    if old.spill is not None:   # the rest of a spilled scalar becomes plain bytes
        fill = ZERO if old.spill.s == sc.ZERO else MISC
        types = [fill] * SLOT
    for at in range(lo, lo + size):
        types[slot_of(at)[1]] = ZERO if zero else MISC
    stack[spi] = Slot("".join(types))


def _stack_write_var(stack: dict[int, Slot], lo: int, hi: int, size: int, value: Reg | None,
                     imm: int) -> None:
    """A write somewhere in fp+lo .. fp+hi+size: bytes already holding data become unknown data;
    bytes never written stay unreadable (this write may not have reached them)."""
    zero = (value.s == sc.ZERO) if value is not None else imm == 0
    for at in range(lo, hi + size):
        spi, idx = slot_of(at)
        slot = stack.get(spi, EMPTY)
        if slot.spill is not None:
            if slot.spill.kind != SCALAR:
                raise Reject(f"spilled ptr in range of var-offset stack write; ptr off: "
                             f"{-(spi + 1) * SLOT}")
            fill = ZERO if slot.spill.s == sc.ZERO else MISC
            slot = Slot(fill * SLOT)
        t = slot.types[idx]
        if t != INVALID and not (t == ZERO and zero):
            slot = Slot(slot.types[:idx] + MISC + slot.types[idx + 1:])
        stack[spi] = slot


# --- instructions ------------------------------------------------------------------------------


def load(v, st, regno: int, off: int, size: int, sx: bool) -> Reg:
    """``*(size *)(R<regno> + off)``: check it and return what the destination gets."""
    reg = st.cur.regs[regno]
    _bad_ptr(regno, reg)
    if reg.kind == CTX:
        _ctx(v, regno, reg, off, size, False)
        return loaded(size, sx)
    if reg.kind == MAP_VALUE:
        _map_value(v, regno, reg, off, size)
        return loaded(size, sx)
    if reg.kind == STACK:
        lo, hi = _stack_range(v, regno, reg, off, size, "read from")
        return _stack_read(v, st.frames[reg.frame], lo, hi, size, sx, regno)
    raise Reject(f"R{regno} invalid mem access '{reg.type_name}'")


def store(v, st, regno: int, off: int, size: int, value: Reg | None, imm: int,
          src: int) -> None:
    """``*(size *)(R<regno> + off) = value`` (a register numbered ``src``, or ``imm``)."""
    reg = st.cur.regs[regno]
    _bad_ptr(regno, reg)
    if reg.kind == STACK:
        lo, hi = _stack_range(v, regno, reg, off, size, "write to")
        _stack_write(v, st.frames[reg.frame], lo, hi, size, value, imm, src)
        return
    if reg.kind == CTX:
        _ctx(v, regno, reg, off, size, True)
        where = "mem"
    elif reg.kind == MAP_VALUE:
        _map_value(v, regno, reg, off, size)
        where = "map"
    else:
        raise Reject(f"R{regno} invalid mem access '{reg.type_name}'")
    if value is not None and value.is_ptr:
        raise Reject(f"R{src} leaks addr into {where}")


def atomic(v, st, regno: int, off: int, size: int, src: int) -> None:
    """A read-modify-write of ``size`` bytes at ``R<regno> + off`` with scalar R<src>."""
    reg = st.cur.regs[regno]
    _bad_ptr(regno, reg)
    if reg.kind == CTX and v.ctx_size:
        raise Reject(f"BPF_ATOMIC stores into R{regno} ctx is not allowed")
    at = tnum.add(reg.s.tnum, tnum.const(reg.off + off))
    if (at[0] | at[1]) & (size - 1):
        var = str(sc.s64(reg.s.tv)) if reg.s.is_const else tnum.fmt(reg.s.tnum)
        desc = "stack " if reg.kind == STACK else ""
        raise Reject(f"misaligned {desc}access off {var}+{reg.off}+{off} size {size}")
    if reg.kind == STACK:
        lo, hi = _stack_range(v, regno, reg, off, size, "read from")
        frame = st.frames[reg.frame]
        if lo == hi:
            slot = frame.stack.get(slot_of(lo)[0], EMPTY)
            if slot.spill is not None and slot.spill.kind != SCALAR:
                raise Reject("attempt to corrupt spilled pointer on stack")
        _stack_read(v, frame, lo, hi, size, False, regno)
        _stack_write(v, frame, lo, hi, size, UNKNOWN, 0, src)
        return
    if reg.kind == CTX:
        _mem(v, regno, reg, off, size)
    elif reg.kind == MAP_VALUE:
        _map_value(v, regno, reg, off, size)
    else:
        raise Reject(f"R{regno} invalid mem access '{reg.type_name}'")


# --- helper arguments ------------------------------------------------------------------------


def readable(v, st, regno: int, reg: Reg, size: int, expected: str) -> None:
    """R<regno> must point to ``size`` initialised bytes a helper may read."""
    if reg.kind == STACK:
        lo, hi = _indirect_range(regno, reg, size)
        frame = st.frames[reg.frame]
        for at in range(lo, hi + size):
            spi, idx = slot_of(at)
            slot = frame.stack.get(spi, EMPTY)
            t = slot.types[idx]
            if t == INVALID:
                raise Reject(f"invalid indirect read from stack R{regno} off {lo}+{at - lo} "
                             f"size {size}")
            if t == SPILL and slot.spill.kind != SCALAR:
                raise Reject(f"R{regno} leaks addr into helper function (pointer spilled at "
                             f"fp{-(spi + 1) * SLOT})")
        return
    if reg.kind == MAP_VALUE and not reg.null:
        _map_value(v, regno, reg, 0, size)
        return
    raise Reject(f"R{regno} type={reg.type_name} expected={expected}")


def _indirect_range(regno: int, reg: Reg, size: int) -> tuple[int, int]:
    if reg.s.is_const:
        lo = hi = reg.off + sc.s64(reg.s.tv)
        if lo < -STACK_SIZE or lo + size > 0:
            raise Reject(f"invalid indirect access to stack R{regno} off={lo} size={size}")
        return lo, hi
    if reg.s.smax >= MAX_VAR_OFF or reg.s.smin <= -MAX_VAR_OFF:
        raise Reject(f"invalid unbounded variable-offset indirect access to stack R{regno}")
    lo, hi = reg.off + reg.s.smin, reg.off + reg.s.smax
    if lo < -STACK_SIZE or hi + size > 0:
        raise Reject(f"invalid variable-offset indirect access to stack R{regno} "
                     f"var_off={tnum.fmt(reg.s.tnum)} off={reg.off} size={size}")
    return lo, hi
