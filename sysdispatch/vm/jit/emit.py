"""JIT code for one instruction: Python statements pasted from the semantics templates.

Instruction semantics are never spelled here: ALU, jump conditions, byte order, sign extension
and atomics paste the expression templates of :mod:`sysdispatch.vm.semantics` with ``a``/``b``/
``c``/``m``/``v`` replaced by register names or literals. Loads and stores go through the run's
:class:`~sysdispatch.vm.memory.Memory` with the interpreter's fast path (its last region hit)
inline, so faults are the interpreter's. An access at a constant offset from ``r10`` that lies
inside the 512-byte frame indexes the frame's stack directly — ``stk`` (bytes) or ``s2``/``s4``/
``s8`` (word views) when aligned, struct otherwise: ``r10`` is never written (the compile step
refuses such programs, as the interpreter does), so the address is known.

Control transfers (jumps, exit, calls) are the caller's (:mod:`.codegen`); this module emits the
statements of everything else, and the condition of a conditional jump.
"""

from __future__ import annotations

import re
import sys
from typing import Callable

from .. import semantics as sem
from ..isa import FP, PSEUDO_IMM64, STACK_SIZE, Insn, lddw_value
from ..interp import writes_fp
from ..memory import SIZE_MASK
from ..program import Program

# Word views of the stack are in the machine's byte order: usable only where it is BPF's.
WORD_VIEWS = sys.byteorder == "little"

_NAME = re.compile(r"\b([abcmv])\b")

Emit = Callable[..., None]  # emit(line, extra_indent=0)


def paste(template: str, **names: str) -> str:
    """``template`` with its placeholders ``a``, ``b``, ``c``, ``m``, ``v`` replaced."""
    return _NAME.sub(lambda mt: names.get(mt.group(1), mt.group(1)), template)


def lit(v: int) -> str:
    return str(v) if v < 4096 else hex(v)


def reg(n: int, bits: int = 64, narrow: frozenset[int] | set[int] = frozenset()) -> str:
    """Register ``n`` as an operand of ``bits`` width; no mask when it is known to fit."""
    return f"r{n}" if bits == 64 or n in narrow else f"(r{n} & {sem.M32})"


def condition(insn: Insn, spec, narrow: set[int]) -> str:
    """The Python condition of a conditional jump."""
    bits = sem.width(spec)
    b = reg(insn.src, bits, narrow) if spec.reg else lit(sem.operand(insn.imm, bits))
    return paste(sem.jcc_expr(spec.op, bits), a=reg(insn.dst, bits, narrow), b=b)


def statement(emit: Emit, program: Program, pc: int, insn: Insn, spec, narrow: set[int],
              map_consts: list[int], ctx: tuple[frozenset[int], int] | None = None) -> bool:
    """The code of an instruction that does not transfer control (no jump, call or exit).

    ``ctx``, in a lean function (see :mod:`.lean`): the registers holding the ctx pointer here
    and the type's ctx size (0: caller memory of any size); an access through one of them reads
    the ctx bytes ``cb`` directly. Returns whether it did."""
    kind, op = spec.kind, spec.op
    dst, src, off = insn.dst, insn.src, insn.off
    if writes_fp(insn, spec):  # faults when it runs (see interp.writes_fp)
        emit(f"FPW({insn.code}, {insn.off}, {insn.imm})")
        return False
    if kind in ("alu", "alu32", "neg"):
        bits = sem.width(spec)
        expr = sem.neg_expr(bits) if kind == "neg" else sem.alu_expr(op, bits)
        b = reg(src, bits, narrow) if spec.reg else lit(sem.operand(insn.imm, bits))
        emit(f"r{dst} = {paste(expr, a=reg(dst, bits, narrow), b=b)}")
    elif kind == "lddw":
        if insn.src == PSEUDO_IMM64:
            emit(f"r{dst} = {lit(lddw_value(insn, program.insns[pc + 1]))}")
        else:
            map_consts.append(pc)
            emit(f"r{dst} = K{pc}")
    elif kind == "movsx":
        emit(f"r{dst} = {paste(sem.movsx_expr(spec.size, sem.width(spec)), b=f'r{src}')}")
    elif kind in ("end", "bswap"):
        expr = sem.end_expr("le" if op == "le" else "be", spec.size)
        emit(f"r{dst} = {paste(expr, a=f'r{dst}')}")
    elif kind in ("ldx", "ldxs"):
        if ctx is not None and src in ctx[0]:
            _ctx_load(emit, dst, src, off, spec.size, kind == "ldxs", ctx[1])
            return True
        _load(emit, dst, src, off, spec.size, kind == "ldxs")
    elif kind in ("st", "stx"):
        size = spec.size
        value = (lit(insn.imm & SIZE_MASK[size]) if kind == "st"
                 else f"r{src}" if size == 8 or (size == 4 and src in narrow)
                 else f"(r{src} & {lit(SIZE_MASK[size])})")
        if ctx is not None and dst in ctx[0]:
            _ctx_store(emit, dst, off, size, value, ctx[1], program.prog_type.ctx_writable)
            return True
        _store(emit, dst, off, size, value)
    elif kind == "atomic":
        _atomic(emit, dst, src, off, spec.size, op, narrow)
    else:  # control transfers are the caller's; anything else is a new OpSpec kind
        raise ValueError(f"no JIT code for '{spec.name}'")
    return False


def narrowed(narrow: set[int], program: Program, pc: int, insn: Insn, spec) -> None:
    """Update ``narrow`` — registers known to hold less than 2**32 — past the instruction.

    Only facts that follow from the instruction fields: ALU32 and 32-bit loads zero-extend, a
    64-bit ``mov``/``and`` of a small non-negative immediate or a narrow register, shifts right
    by 32 or more; a call may change r0-r5. Anything else that writes a register forgets it.
    """
    kind, dst = spec.kind, insn.dst
    if kind in ("call", "local_call", "callx"):
        narrow.difference_update(range(6))
        return
    if kind == "atomic":
        into = sem.ATOMIC[spec.op][1]
        reg_ = insn.src if into == "src" else 0 if into == "r0" else None
        if reg_ is not None:
            (narrow.add if spec.size == 4 else narrow.discard)(reg_)
        return
    if kind not in ("alu", "alu32", "neg", "movsx", "end", "bswap", "lddw", "ldx", "ldxs"):
        return
    fits = False
    if kind in ("alu32", "ldx") or (kind == "neg" and not spec.is64):
        fits = kind != "ldx" or spec.size <= 4
    elif kind == "movsx":
        fits = not spec.is64
    elif kind in ("end", "bswap"):
        fits = spec.size <= 32
    elif kind == "lddw":
        fits = insn.src == PSEUDO_IMM64 and lddw_value(insn, program.insns[pc + 1]) < 1 << 32
    elif kind == "alu" and spec.op in ("mov", "and"):
        fits = (insn.src in narrow) if spec.reg else 0 <= insn.imm
        if spec.op == "and" and not spec.reg and not fits:
            fits = dst in narrow  # and with a negative imm keeps the low 32 bits of dst
    elif kind == "alu" and spec.op == "rsh" and not spec.reg:
        fits = insn.imm & 63 >= 32 or dst in narrow
    (narrow.add if fits else narrow.discard)(dst)


# --- memory ----------------------------------------------------------------------------------

def stack_offset(base: int, off: int, size: int) -> int | None:
    """Offset into the frame's stack buffer for ``r10 + off``, when fully inside it."""
    if base != FP:
        return None
    o = STACK_SIZE + off
    return o if 0 <= o and o + size <= STACK_SIZE else None


def _stack_item(so: int, size: int) -> str | None:
    """The stack as an array of ``size``-byte words (``stk`` itself for bytes): an aligned
    access is one index, much cheaper than struct."""
    if size == 1:
        return f"stk[{so}]"
    return f"s{size}[{so // size}]" if WORD_VIEWS and so % size == 0 else None


def _load(emit: Emit, dst: int, src: int, off: int, size: int, signed: bool) -> None:
    conv = (lambda e: paste(sem.ldxs_expr(size), v=e)) if signed else (lambda e: e)
    so = stack_offset(src, off, size)
    if so is not None:
        item = _stack_item(so, size) or f"U{size}(stk, {so})[0]"
        emit(f"r{dst} = {conv(item)}")
        return
    addr = f"r{src} + {off}" if off else f"r{src}"
    emit("g = mem.last")
    emit(f"o = {addr} - g.base")
    emit(f"if 0 <= o <= g.size - {size}:")
    emit(f"r{dst} = {conv(f'U{size}(g.buf, o)[0]')}", 1)
    emit("else:")
    emit(f"r{dst} = {conv(f'mem.load({addr}, {size})')}", 1)


def _ctx_load(emit: Emit, dst: int, src: int, off: int, size: int, signed: bool,
              ctx_size: int) -> None:
    """A load from the ctx pointer plus ``off``: the ctx bytes ``cb`` (``n`` of them) indexed
    directly. Outside them, ``CF`` makes the access through a real Memory holding the ctx, which
    raises the interpreter's fault."""
    conv = (lambda e: paste(sem.ldxs_expr(size), v=e)) if signed else (lambda e: e)
    addr = f"r{src} + {off}" if off else f"r{src}"
    fault = f"CF(cb, {addr}, {size})"
    item = f"cb[{off}]" if size == 1 else f"U{size}(cb, {off})[0]"
    if off < 0 or (ctx_size and off + size > ctx_size):
        emit(f"r{dst} = {conv(fault)}")
    elif ctx_size:  # a fixed-size ctx: the entry checked its length
        emit(f"r{dst} = {conv(item)}")
    else:
        emit(f"r{dst} = {conv(item)} if n >= {off + size} else {conv(fault)}")


def _ctx_store(emit: Emit, dst: int, off: int, size: int, value: str, ctx_size: int,
               writable: bool) -> None:
    """A store to the ctx pointer plus ``off``: into ``cb`` when it is writable and the store
    lies inside it, else through ``CS`` (a real Memory, which raises the interpreter's fault)."""
    addr = f"r{dst} + {off}" if off else f"r{dst}"
    slow = f"CS(cb, {addr}, {size}, {value})"
    fast = f"cb[{off}] = {value}" if size == 1 else f"P{size}(cb, {off}, {value})"
    if not writable or off < 0 or (ctx_size and off + size > ctx_size):
        emit(slow)
    elif ctx_size:
        emit(fast)
    else:
        emit(f"if n >= {off + size}:")
        emit(fast, 1)
        emit("else:")
        emit(slow, 1)


def _store(emit: Emit, dst: int, off: int, size: int, value: str) -> None:
    so = stack_offset(dst, off, size)
    if so is not None:
        item = _stack_item(so, size)
        emit(f"{item} = {value}" if item else f"P{size}(stk, {so}, {value})")
        return
    addr = f"r{dst} + {off}" if off else f"r{dst}"
    emit("g = mem.last")
    emit(f"o = {addr} - g.base")
    emit(f"if 0 <= o <= g.size - {size} and g.writable:")
    emit(f"P{size}(g.buf, o, {value})", 1)
    emit("else:")
    emit(f"mem.store({addr}, {size}, {value})", 1)


def _atomic(emit: Emit, dst: int, src: int, off: int, size: int, op: str,
            narrow: set[int]) -> None:
    expr, into = sem.atomic_expr(op, 8 * size)
    mask = lit(SIZE_MASK[size])
    b = f"(r{src} & {mask})" if size == 4 and src not in narrow else f"r{src}"
    c = f"(r0 & {mask})" if size == 4 and 0 not in narrow else "r0"
    fetch = {None: "", "src": f"r{src} = ", "r0": "r0 = "}[into]
    so = stack_offset(dst, off, size)
    if so is not None:
        # The frame's stack belongs to this run alone: no other thread can interleave.
        item = _stack_item(so, size)
        new = paste(expr, m="om", b=b, c=c)
        emit(f"om = {item or f'U{size}(stk, {so})[0]'}")
        emit(f"{item} = {new}" if item else f"P{size}(stk, {so}, {new})")
        if fetch:
            emit(f"{fetch}om")
        return
    addr = f"r{dst} + {off}" if off else f"r{dst}"
    uses_c = "c" in _NAME.findall(expr)
    params = f"m, b={b}" + (f", c={c}" if uses_c else "")
    emit(f"{fetch}mem.atomic({addr}, {size}, lambda {params}: {expr})")
