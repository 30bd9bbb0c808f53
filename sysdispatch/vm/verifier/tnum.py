"""Tristate numbers: what the verifier knows about each bit of a 64-bit value.

A tnum is a pair ``(value, mask)``: bits set in ``mask`` are unknown, the other bits are known and
equal to the corresponding bits of ``value`` (``value & mask`` is always 0). The arithmetic below is
the standard abstract-domain arithmetic the kernel's verifier also uses (kernel/bpf/tnum.c documents
the same facts); every result over-approximates the set of concrete results, which is what makes the
verifier sound.

Tnums are plain ``(value, mask)`` tuples of unsigned ints: the verifier makes millions of them and a
tuple is the cheapest immutable pair Python has.
"""

from __future__ import annotations

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1

Tnum = tuple[int, int]

UNKNOWN: Tnum = (0, U64)
UNKNOWN32: Tnum = (0, U32)
ZERO: Tnum = (0, 0)


def const(v: int) -> Tnum:
    return (v & U64, 0)


def from_range(lo: int, hi: int) -> Tnum:
    """The smallest tnum holding every value of the unsigned range [lo, hi]."""
    chi = lo ^ hi
    bits = chi.bit_length()
    if bits > 63:
        return UNKNOWN
    delta = (1 << bits) - 1
    return (lo & ~delta & U64, delta)


def is_const(t: Tnum) -> bool:
    return t[1] == 0


def add(a: Tnum, b: Tnum) -> Tnum:
    sm = (a[1] + b[1]) & U64
    sv = (a[0] + b[0]) & U64
    sigma = (sm + sv) & U64
    mu = (sigma ^ sv) | a[1] | b[1]
    return (sv & ~mu & U64, mu)


def sub(a: Tnum, b: Tnum) -> Tnum:
    dv = (a[0] - b[0]) & U64
    alpha = (dv + a[1]) & U64
    beta = (dv - b[1]) & U64
    mu = (alpha ^ beta) | a[1] | b[1]
    return (dv & ~mu & U64, mu)


def and_(a: Tnum, b: Tnum) -> Tnum:
    alpha = a[0] | a[1]
    beta = b[0] | b[1]
    v = a[0] & b[0]
    return (v, alpha & beta & ~v & U64)


def or_(a: Tnum, b: Tnum) -> Tnum:
    v = a[0] | b[0]
    return (v, (a[1] | b[1]) & ~v & U64)


def xor(a: Tnum, b: Tnum) -> Tnum:
    mu = a[1] | b[1]
    return ((a[0] ^ b[0]) & ~mu & U64, mu)


def mul(a: Tnum, b: Tnum) -> Tnum:
    """Shift-and-add over the bits of ``a``: a known 1 bit adds ``b`` (its unknown bits stay
    unknown), an unknown bit may add ``b`` or not."""
    acc_v = (a[0] * b[0]) & U64
    acc_m: Tnum = ZERO
    av, am = a
    bv, bm = b
    while av or am:
        if av & 1:
            acc_m = add(acc_m, (0, bm))
        elif am & 1:
            acc_m = add(acc_m, (0, (bv | bm) & U64))
        av >>= 1
        am >>= 1
        bv = (bv << 1) & U64
        bm = (bm << 1) & U64
    return add((acc_v, 0), acc_m)


def lshift(a: Tnum, k: int) -> Tnum:
    return ((a[0] << k) & U64, (a[1] << k) & U64)


def rshift(a: Tnum, k: int) -> Tnum:
    return (a[0] >> k, a[1] >> k)


def arshift(a: Tnum, k: int, bits: int = 64) -> Tnum:
    """Arithmetic right shift of a ``bits``-wide tnum (the result is zero-extended to 64 bits)."""
    full = (1 << bits) - 1
    sign = 1 << (bits - 1)

    def sar(x: int) -> int:
        x &= full
        if x & sign:
            x -= 1 << bits
        return (x >> k) & full

    return (sar(a[0]), sar(a[1]))


def cast(a: Tnum, size: int) -> Tnum:
    """Keep the low ``size`` bytes (zero-extension of a truncated value)."""
    m = (1 << (size * 8)) - 1
    return (a[0] & m, a[1] & m)


def intersect(a: Tnum, b: Tnum) -> Tnum:
    """Bits known in either (the two must agree where both know them)."""
    v = a[0] | b[0]
    mu = a[1] & b[1]
    return (v & ~mu & U64, mu)


def contains(a: Tnum, b: Tnum) -> bool:
    """Whether every value ``b`` allows is one ``a`` allows."""
    if b[1] & ~a[1]:
        return False
    return (b[0] & ~a[1]) == a[0]


def fmt(t: Tnum) -> str:
    return f"(0x{t[0]:x}; 0x{t[1]:x})"
