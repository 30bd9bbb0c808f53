"""Scalar values as the verifier knows them: unsigned and signed 64-bit ranges plus a tnum.

A :class:`Scalar` over-approximates the set of values a register may hold on one path:
``umin..umax`` (unsigned), ``smin..smax`` (signed) and the tnum ``(tv, tm)`` (known bits). The
functions here are the verifier's transfer functions: what an ALU operation does to that knowledge
(:func:`alu`), what a conditional jump proves on each of its edges (:func:`branch`,
:func:`refine`). Each result contains every concrete result; when in doubt a result is widened,
never narrowed. Constant operands are folded through :mod:`sysdispatch.vm.semantics`, the same
expressions the interpreter runs, so the verifier and the engines cannot disagree about a value.

32-bit operations work on a zero-extended view of the low halves (:func:`low32`) and put the
result back through :func:`trunc32`; the kernel also keeps separate 32-bit bounds, which this
module derives on demand instead (less precise for values whose upper half is unknown, but sound).
"""

from __future__ import annotations

from typing import NamedTuple

from .. import semantics
from . import tnum
from .tnum import U32, U64

S64_MIN, S64_MAX = -(1 << 63), (1 << 63) - 1
S32_MIN, S32_MAX = -(1 << 31), (1 << 31) - 1
SIGN = 1 << 63
HI32 = U64 ^ U32


def s64(v: int) -> int:
    return v - (1 << 64) if v & SIGN else v




class Scalar(NamedTuple):
    umin: int
    umax: int
    smin: int
    smax: int
    tv: int  # tnum value
    tm: int  # tnum mask (unknown bits)

    @property
    def is_const(self) -> bool:
        return self.tm == 0

    @property
    def value(self) -> int:
        """The unsigned value of a constant."""
        return self.tv

    @property
    def tnum(self) -> tnum.Tnum:
        return (self.tv, self.tm)

    def __str__(self) -> str:
        return fmt(self)


UNKNOWN = Scalar(0, U64, S64_MIN, S64_MAX, 0, U64)


def const(v: int) -> Scalar:
    v &= U64
    return Scalar(v, v, s64(v), s64(v), v, 0)


ZERO = const(0)


def unsigned_range(lo: int, hi: int) -> Scalar:
    """Any value in [lo, hi] (unsigned)."""
    return norm(lo, hi, S64_MIN, S64_MAX, *tnum.UNKNOWN)  # type: ignore[return-value]


def signed_range(lo: int, hi: int) -> Scalar:
    """Any value in [lo, hi] (signed)."""
    return norm(0, U64, lo, hi, *tnum.UNKNOWN)  # type: ignore[return-value]


def of_size(size: int) -> Scalar:
    """Any zero-extended value of ``size`` bytes (what a load of that size gives)."""
    return unsigned_range(0, (1 << (8 * size)) - 1)


def of_size_signed(size: int) -> Scalar:
    """Any sign-extended value of ``size`` bytes (what a sign-extending load gives)."""
    bits = 8 * size
    return signed_range(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def norm(umin: int, umax: int, smin: int, smax: int, tv: int, tm: int) -> Scalar | None:
    """Make the three views agree with each other; None when they prove the set empty."""
    for _ in range(2):
        # known bits -> bounds
        if tv > umin:
            umin = tv
        if tv | tm < umax:
            umax = tv | tm
        lo = s64(tv | (tm & SIGN))           # sign bit set if unknown, other unknown bits clear
        hi = s64(tv | (tm & ~SIGN & U64))    # sign bit clear if unknown, other unknown bits set
        if lo > smin:
            smin = lo
        if hi < smax:
            smax = hi
        # a signed range on one side of zero is an unsigned range, and vice versa
        if smin >= 0 or smax < 0:
            umin = max(umin, smin & U64)
            umax = min(umax, smax & U64)
        if umax <= S64_MAX or umin > S64_MAX:
            smin = max(smin, s64(umin))
            smax = min(smax, s64(umax))
        if umin > umax or smin > smax:
            return None
        # bounds -> known bits
        tv, tm = tnum.intersect((tv, tm), tnum.from_range(umin, umax))
    if umin > umax or smin > smax:
        return None
    return Scalar(umin, umax, smin, smax, tv, tm)


def _mk(umin: int, umax: int, smin: int, smax: int, t: tnum.Tnum) -> Scalar:
    r = norm(umin, umax, smin, smax, t[0], t[1])
    # An empty result can only come from an infeasible input; keep the tnum's answer then.
    return r if r is not None else Scalar(0, U64, S64_MIN, S64_MAX, t[0], t[1])


def fmt(s: Scalar) -> str:
    """Kernel-log spelling: ``42``, ``-1`` or ``scalar(umax=255,var_off=(0x0; 0xff))``."""
    if s.is_const:
        return str(s64(s.tv))
    parts = []
    if s.smin != S64_MIN and s.smin != s.umin:
        parts.append(f"smin={s.smin}")
    if s.smax != S64_MAX and s.smax != s.umax:
        parts.append(f"smax={s.smax}")
    if s.umin != 0:
        parts.append(f"umin={s.umin}")
    if s.umax != U64:
        parts.append(f"umax={s.umax}")
    if s.tm != U64:
        parts.append(f"var_off={tnum.fmt(s.tnum)}")
    return f"scalar({','.join(parts)})"


# --- constant folding: the interpreter's own expressions --------------------------------------

_FOLD: dict[tuple[str, int], object] = {}


def _folder(op: str, bits: int):
    key = (op, bits)
    fn = _FOLD.get(key)
    if fn is None:
        fn = eval(f"lambda a, b: {semantics.alu_expr(op, bits)}",  # noqa: S307 - our templates
                  dict(semantics.ENV))
        _FOLD[key] = fn
    return fn


# --- ALU ---------------------------------------------------------------------------------------


def alu(op: str, a: Scalar, b: Scalar, bits: int = 64) -> Scalar:
    """dst ``op``= src for a ``bits``-wide ALU operation (``op`` is an OpSpec.op)."""
    if bits == 32:
        return _alu32(op, a, b)
    if a.is_const and b.is_const:
        return const(_folder(op, 64)(a.tv, b.tv))
    return _alu64(op, a, b)


def _alu64(op: str, a: Scalar, b: Scalar) -> Scalar:
    if op == "mov":
        return b
    if op == "add":
        return _add(a, b)
    if op == "sub":
        return _sub(a, b)
    if op == "mul":
        return _mul(a, b)
    if op == "and":
        t = tnum.and_(a.tnum, b.tnum)
        umax = min(a.umax, b.umax)
        if a.smin >= 0 or b.smin >= 0:
            # and with a non-negative value is non-negative and no larger than it
            hi = min(x.smax for x in (a, b) if x.smin >= 0)
            return _mk(t[0], umax, 0, hi, t)
        return _mk(t[0], umax, S64_MIN, S64_MAX, t)
    if op == "or":
        t = tnum.or_(a.tnum, b.tnum)
        return _mk(max(a.umin, b.umin), t[0] | t[1], S64_MIN, S64_MAX, t)
    if op == "xor":
        t = tnum.xor(a.tnum, b.tnum)
        return _mk(t[0], t[0] | t[1], S64_MIN, S64_MAX, t)
    if op in ("lsh", "rsh", "arsh"):
        if not b.is_const:
            return UNKNOWN
        return _shift(op, a, b.tv & 63)
    if op in ("div", "mod"):
        # unsigned: a / b <= a (and 0 when b == 0); a % b <= a (and a when b == 0)
        if op == "div" and b.is_const and b.tv:
            return _mk(a.umin // b.tv, a.umax // b.tv, S64_MIN, S64_MAX, tnum.UNKNOWN)
        return _mk(0, a.umax, S64_MIN, S64_MAX, tnum.UNKNOWN)
    return UNKNOWN  # sdiv, smod of non-constants


def _add(a: Scalar, b: Scalar) -> Scalar:
    t = tnum.add(a.tnum, b.tnum)
    umin, umax = a.umin + b.umin, a.umax + b.umax
    if umax > U64:
        if umin > U64:
            umin, umax = umin - (1 << 64), umax - (1 << 64)
        else:
            umin, umax = 0, U64
    smin, smax = a.smin + b.smin, a.smax + b.smax
    smin, smax = _wrap_signed(smin, smax)
    return _mk(umin, umax, smin, smax, t)


def _wrap_signed(smin: int, smax: int) -> tuple[int, int]:
    """A signed range computed exactly, brought back into s64: shifted whole when it lies
    entirely outside, unbounded when it straddles a wrap."""
    if smin > S64_MAX:
        return smin - (1 << 64), smax - (1 << 64)
    if smax < S64_MIN:
        return smin + (1 << 64), smax + (1 << 64)
    if smin < S64_MIN or smax > S64_MAX:
        return S64_MIN, S64_MAX
    return smin, smax


def _sub(a: Scalar, b: Scalar) -> Scalar:
    t = tnum.sub(a.tnum, b.tnum)
    umin, umax = a.umin - b.umax, a.umax - b.umin
    if umin < 0:
        if umax < 0:
            umin, umax = umin + (1 << 64), umax + (1 << 64)
        else:
            umin, umax = 0, U64
    smin, smax = a.smin - b.smax, a.smax - b.smin
    smin, smax = _wrap_signed(smin, smax)
    return _mk(umin, umax, smin, smax, t)


def _mul(a: Scalar, b: Scalar) -> Scalar:
    t = tnum.mul(a.tnum, b.tnum)
    umin, umax = a.umin * b.umin, a.umax * b.umax
    if umax > U64:
        umin, umax = 0, U64
    corners = [x * y for x in (a.smin, a.smax) for y in (b.smin, b.smax)]
    smin, smax = min(corners), max(corners)
    if smin < S64_MIN or smax > S64_MAX:
        smin, smax = S64_MIN, S64_MAX
    return _mk(umin, umax, smin, smax, t)


def _shift(op: str, a: Scalar, k: int) -> Scalar:
    if op == "lsh":
        t = tnum.lshift(a.tnum, k)
        if a.umax << k <= U64:
            return _mk(a.umin << k, a.umax << k, S64_MIN, S64_MAX, t)
        return _mk(0, U64, S64_MIN, S64_MAX, t)
    if op == "rsh":
        return _mk(a.umin >> k, a.umax >> k, S64_MIN, S64_MAX, tnum.rshift(a.tnum, k))
    return _mk(0, U64, a.smin >> k, a.smax >> k, tnum.arshift(a.tnum, k))


def neg(a: Scalar, bits: int = 64) -> Scalar:
    return alu("sub", ZERO, a, bits)


# --- 32-bit views ------------------------------------------------------------------------------


def low32(a: Scalar) -> Scalar:
    """The low 32 bits of ``a``, zero-extended: what an ALU32/JMP32 operation sees."""
    if a.umax <= U32:
        return a
    if a.smin >= S32_MIN and a.smax < 0:
        # small negative numbers: their low halves are one contiguous unsigned range
        return _mk(a.smin + (1 << 32), a.smax + (1 << 32), 0, U32, tnum.cast(a.tnum, 4))
    if (a.umax >> 32) == (a.umin >> 32):
        # same upper half throughout: the low halves form one range
        return _mk(a.umin & U32, a.umax & U32, 0, U32, tnum.cast(a.tnum, 4))
    return _mk(0, U32, 0, U32, tnum.cast(a.tnum, 4))


def trunc32(r: Scalar) -> Scalar:
    """A 64-bit result reduced to its zero-extended low 32 bits (how ALU32 results land)."""
    return low32(r)


def sext32(a32: Scalar) -> Scalar:
    """A zero-extended 32-bit view, sign-extended to 64 bits (for signed 32-bit comparisons)."""
    if a32.umax <= S32_MAX:
        return a32
    if a32.umin > S32_MAX:
        lo, hi = a32.umin - (1 << 32), a32.umax - (1 << 32)
        t = (a32.tv | HI32, a32.tm)
        return _mk(lo & U64, hi & U64, lo, hi, t)
    bit = 1 << 31
    if a32.tv & bit:
        t = (a32.tv | HI32, a32.tm)
    elif a32.tm & bit:
        t = (a32.tv, a32.tm | HI32)
    else:
        t = a32.tnum
    return _mk(0, U64, S32_MIN, S32_MAX, t)


def _alu32(op: str, a: Scalar, b: Scalar) -> Scalar:
    a, b = low32(a), low32(b)
    if a.is_const and b.is_const:
        return const(_folder(op, 32)(a.tv, b.tv))
    if op in ("add", "sub", "mul", "and", "or", "xor", "mov", "div", "mod"):
        return trunc32(_alu64(op, a, b))
    if op in ("lsh", "rsh"):
        if not b.is_const:
            return of_size(4)
        return trunc32(_shift(op, a, b.tv & 31))
    if op == "arsh":
        if not b.is_const:
            return of_size(4)
        return trunc32(_shift("arsh", sext32(a), b.tv & 31))
    return of_size(4)  # sdiv32, smod32 of non-constants


def movsx(a: Scalar, from_bits: int, to_bits: int) -> Scalar:
    """Sign-extend the low ``from_bits`` of ``a`` to ``to_bits`` (zero-extended beyond)."""
    if a.is_const:
        fn = eval(f"lambda b: {semantics.movsx_expr(from_bits, to_bits)}")  # noqa: S307
        return const(fn(a.tv))
    if a.umax < 1 << (from_bits - 1):
        return a  # already a small non-negative value: unchanged
    half = 1 << (from_bits - 1)
    r = signed_range(-half, half - 1)
    return r if to_bits == 64 else trunc32(r)


def byteswap(a: Scalar, op: str, bits: int) -> Scalar:
    """``le``/``be``/``bswap`` of ``bits`` (the whole register; kinds end and bswap)."""
    if a.is_const:
        fn = eval(f"lambda a: {semantics.end_expr(op, bits)}", dict(semantics.ENV))  # noqa: S307
        return const(fn(a.tv))
    if op == "le":
        return a if bits == 64 else alu("and", a, const((1 << bits) - 1))
    return UNKNOWN if bits == 64 else of_size(bits // 8)


# --- conditional jumps -------------------------------------------------------------------------

# The condition that holds on the fall-through edge when ``op`` does not jump.
NEGATE = {"jeq": "jne", "jne": "jeq", "jgt": "jle", "jle": "jgt", "jge": "jlt", "jlt": "jge",
          "jsgt": "jsle", "jsle": "jsgt", "jsge": "jslt", "jslt": "jsge"}
# a OP b  <=>  b SWAP[OP] a
SWAP = {"jeq": "jeq", "jne": "jne", "jgt": "jlt", "jlt": "jgt", "jge": "jle", "jle": "jge",
        "jsgt": "jslt", "jslt": "jsgt", "jsge": "jsle", "jsle": "jsge"}


def _views(op: str, a: Scalar, b: Scalar, bits: int) -> tuple[Scalar, Scalar]:
    if bits == 64:
        return a, b
    a32, b32 = low32(a), low32(b)
    if op.startswith("js"):
        return sext32(a32), sext32(b32)
    return a32, b32


def branch(op: str, a: Scalar, b: Scalar, bits: int = 64) -> bool | None:
    """Whether ``a op b`` is always true (True), always false (False), or either (None)."""
    a, b = _views(op, a, b, bits)
    if op == "jset":
        if a.tv & b.tv:
            return True
        if not ((a.tv | a.tm) & (b.tv | b.tm)):
            return False
        return None
    if op == "jeq" or op == "jne":
        eq = _eq(a, b)
        return eq if op == "jeq" or eq is None else not eq
    if op in ("jgt", "jge", "jlt", "jle"):
        if op in ("jlt", "jle"):
            op, a, b = SWAP[op], b, a
        if op == "jgt":
            return True if a.umin > b.umax else False if a.umax <= b.umin else None
        return True if a.umin >= b.umax else False if a.umax < b.umin else None
    if op in ("jslt", "jsle"):
        op, a, b = SWAP[op], b, a
    if op == "jsgt":
        return True if a.smin > b.smax else False if a.smax <= b.smin else None
    return True if a.smin >= b.smax else False if a.smax < b.smin else None


def _eq(a: Scalar, b: Scalar) -> bool | None:
    if a.is_const and b.is_const:
        return a.tv == b.tv
    if a.umin > b.umax or a.umax < b.umin or a.smin > b.smax or a.smax < b.smin:
        return False
    if (a.tv ^ b.tv) & ~(a.tm | b.tm) & U64:
        return False  # a bit both know differs
    return None


def refine(op: str, a: Scalar, b: Scalar, taken: bool,
           bits: int = 64) -> tuple[Scalar, Scalar] | None:
    """What ``a`` and ``b`` are on the edge where ``a op b`` is ``taken``; None if impossible."""
    if not taken:
        if op == "jset":
            return _refine_jset(a, b, False, bits)
        op = NEGATE[op]
    elif op == "jset":
        return _refine_jset(a, b, True, bits)
    if bits == 64:
        return _refine64(op, a, b)
    va, vb = _views(op, a, b, 32)
    r = _refine64(op, va, vb)
    if r is None:
        return None
    ra, rb = r
    if op.startswith("js"):
        ra, rb = trunc32(ra), trunc32(rb)
    na, nb = _merge32(a, ra), _merge32(b, rb)
    if na is None or nb is None:
        return None
    return na, nb


def _merge32(full: Scalar, r32: Scalar) -> Scalar | None:
    """``full`` with what was learnt about its low half (``r32``, zero-extended)."""
    if full.umax <= U32:
        return _meet(full, r32)
    t = tnum.intersect(full.tnum, (r32.tv, r32.tm | HI32))
    return norm(full.umin, full.umax, full.smin, full.smax, *t)


def _meet(a: Scalar, b: Scalar) -> Scalar | None:
    if (a.tv ^ b.tv) & ~(a.tm | b.tm) & U64:
        return None
    return norm(max(a.umin, b.umin), min(a.umax, b.umax), max(a.smin, b.smin),
                min(a.smax, b.smax), *tnum.intersect(a.tnum, b.tnum))


def _without(a: Scalar, v: int) -> Scalar | None:
    """``a`` minus the single value ``v`` (only the ends of its ranges can move)."""
    if a.is_const:
        return None if a.tv == v else a
    umin, umax, smin, smax = a.umin, a.umax, a.smin, a.smax
    if umin == v:
        umin += 1
    if umax == v:
        umax -= 1
    sv = s64(v)
    if smin == sv:
        smin += 1
    if smax == sv:
        smax -= 1
    return norm(umin, umax, smin, smax, a.tv, a.tm)


def _refine64(op: str, a: Scalar, b: Scalar) -> tuple[Scalar, Scalar] | None:
    if op == "jeq":
        m = _meet(a, b)
        return None if m is None else (m, m)
    if op == "jne":
        na, nb = a, b
        if b.is_const:
            na = _without(a, b.tv)
        if a.is_const:
            nb = _without(b, a.tv)
        return None if na is None or nb is None else (na, nb)
    if op in ("jlt", "jle", "jslt", "jsle"):
        r = _refine64(SWAP[op], b, a)
        return None if r is None else (r[1], r[0])
    if op == "jgt":   # a > b
        if a.umax == 0 or b.umin == U64:
            return None
        na = norm(max(a.umin, b.umin + 1), a.umax, a.smin, a.smax, a.tv, a.tm)
        nb = norm(b.umin, min(b.umax, a.umax - 1), b.smin, b.smax, b.tv, b.tm)
    elif op == "jge":  # a >= b
        na = norm(max(a.umin, b.umin), a.umax, a.smin, a.smax, a.tv, a.tm)
        nb = norm(b.umin, min(b.umax, a.umax), b.smin, b.smax, b.tv, b.tm)
    elif op == "jsgt":
        if a.smax == S64_MIN or b.smin == S64_MAX:
            return None
        na = norm(a.umin, a.umax, max(a.smin, b.smin + 1), a.smax, a.tv, a.tm)
        nb = norm(b.umin, b.umax, b.smin, min(b.smax, a.smax - 1), b.tv, b.tm)
    else:  # jsge
        na = norm(a.umin, a.umax, max(a.smin, b.smin), a.smax, a.tv, a.tm)
        nb = norm(b.umin, b.umax, b.smin, min(b.smax, a.smax), b.tv, b.tm)
    return None if na is None or nb is None else (na, nb)


def _refine_jset(a: Scalar, b: Scalar, taken: bool, bits: int) -> tuple[Scalar, Scalar] | None:
    if not b.is_const:
        return (a, b)
    k = b.tv & (U64 if bits == 64 else U32)
    if taken:
        if not ((a.tv | a.tm) & k):
            return None
        if k and not (k & (k - 1)):  # a single bit: it is set
            na = norm(a.umin, a.umax, a.smin, a.smax, a.tv | k, a.tm & ~k)
            return None if na is None else (na, b)
        return (a, b)
    if a.tv & k:
        return None
    na = norm(a.umin, a.umax, a.smin, a.smax, a.tv, a.tm & ~k & U64)
    return None if na is None else (na, b)


# --- comparison of states ----------------------------------------------------------------------


def within(old: Scalar, cur: Scalar) -> bool:
    """Whether every value ``cur`` allows is one ``old`` allows (``cur`` is no wider)."""
    return (old.umin <= cur.umin and cur.umax <= old.umax and old.smin <= cur.smin
            and cur.smax <= old.smax and tnum.contains(old.tnum, cur.tnum))
