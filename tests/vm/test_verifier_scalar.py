"""Soundness of the verifier's value tracking, against the interpreter's own semantics.

Hypothesis builds abstract scalars together with a concrete value each one allows (a witness),
pushes both through the same ALU operations and conditional jumps — the abstract side through
:mod:`sysdispatch.vm.verifier.scalar`, the concrete side through the expressions of
:mod:`sysdispatch.vm.semantics` the interpreter runs — and requires the witness to stay inside
the abstract value, and every decided branch to be the one the witness takes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sysdispatch.vm import semantics
from sysdispatch.vm.verifier import scalar as sc
from sysdispatch.vm.verifier import tnum

U64, U32 = sc.U64, sc.U32
ALU_OPS = sorted(semantics.ALU)
JCC_OPS = sorted(semantics.JCC)


def contains(a: sc.Scalar, x: int) -> bool:
    return (a.umin <= x <= a.umax and a.smin <= sc.s64(x) <= a.smax
            and tnum.contains((a.tv, a.tm), (x, 0)))


edge = st.sampled_from([0, 1, 2, 7, 8, 0xFF, 0x7FFF_FFFF, 0x8000_0000, U32, 1 << 32,
                        sc.S64_MAX, 1 << 63, U64, U64 - 1])
u64 = st.one_of(edge, st.integers(0, 255), st.integers(0, U64))


@st.composite
def abstract(draw):
    """(abstract scalar, a value it allows)."""
    x = draw(u64)
    kind = draw(st.sampled_from(["const", "urange", "srange", "tnum", "unknown", "size"]))
    if kind == "const":
        return sc.const(x), x
    # witnesses at the ends of ranges find off-by-one bounds
    if kind == "urange":
        lo = draw(st.one_of(st.just(x), st.integers(0, x)))
        hi = draw(st.one_of(st.just(x), st.integers(x, min(U64, x + 300)), st.integers(x, U64)))
        return sc.unsigned_range(lo, hi), x
    if kind == "srange":
        s = sc.s64(x)
        lo = draw(st.one_of(st.just(s), st.integers(max(sc.S64_MIN, s - 300), s),
                            st.integers(sc.S64_MIN, s)))
        hi = draw(st.one_of(st.just(s), st.integers(s, sc.S64_MAX)))
        return sc.signed_range(lo, hi), x
    if kind == "tnum":
        m = draw(u64)
        return sc.norm(0, U64, sc.S64_MIN, sc.S64_MAX, x & ~m, m), x
    if kind == "size":
        size = draw(st.sampled_from([1, 2, 4]))
        x &= (1 << (8 * size)) - 1
        return sc.of_size(size), x
    return sc.UNKNOWN, x


def concrete_alu(op: str, a: int, b: int, bits: int) -> int:
    mask = U64 if bits == 64 else U32
    return semantics.evaluate(semantics.alu_expr(op, bits), a=a & mask, b=b & mask)


@pytest.mark.parametrize("op", ALU_OPS)
@settings(max_examples=100, deadline=None)
@given(pa=abstract(), pb=abstract(), bits=st.sampled_from([64, 32]))
def test_alu_is_sound(pa, pb, op, bits):
    (a, x), (b, y) = pa, pb
    if op in ("lsh", "rsh", "arsh") and not b.is_const:
        b, y = sc.const(y), y   # as the walk sees them: a register amount is tracked if known
    r = sc.alu(op, a, b, bits)
    z = concrete_alu(op, x, y, bits)
    assert contains(r, z), f"{a} {op}{bits} {b}: {z:#x} not in {r}"


@settings(max_examples=600, deadline=None)
@given(abstract(), st.sampled_from([64, 32]))
def test_neg_and_byteswaps_are_sound(pa, bits):
    a, x = pa
    assert contains(sc.neg(a, bits), semantics.evaluate(semantics.neg_expr(bits),
                                                        a=x & (U64 if bits == 64 else U32)))
    for op in ("le", "be", "bswap"):
        for w in (16, 32, 64):
            z = semantics.evaluate(semantics.end_expr(op, w), a=x)
            assert contains(sc.byteswap(a, op, w), z), (op, w, a)
    for frm, to in ((8, 64), (16, 64), (32, 64), (8, 32), (16, 32)):
        z = semantics.evaluate(semantics.movsx_expr(frm, to), b=x)
        assert contains(sc.movsx(a, frm, to), z), (frm, to, a)


@pytest.mark.parametrize("op", JCC_OPS)
@settings(max_examples=100, deadline=None)
@given(pa=abstract(), pb=abstract(), bits=st.sampled_from([64, 32]))
def test_branches_are_sound(pa, pb, op, bits):
    (a, x), (b, y) = pa, pb
    mask = U64 if bits == 64 else U32
    taken = bool(semantics.evaluate(semantics.jcc_expr(op, bits), a=x & mask, b=y & mask))
    decided = sc.branch(op, a, b, bits)
    assert decided is None or decided == taken, f"{a} {op}{bits} {b} decided {decided}"
    refined = sc.refine(op, a, b, taken, bits)
    assert refined is not None, f"{a} {op}{bits} {b}: edge {taken} wrongly impossible"
    ra, rb = refined
    assert contains(ra, x) and contains(rb, y), f"{a} {op}{bits} {b} -> {ra}, {rb}"


@settings(max_examples=300, deadline=None)
@given(abstract(), abstract())
def test_within_means_every_value(pa, pb):
    (a, x), (b, _) = pa, pb
    if sc.within(b, a):
        assert contains(b, x)


def test_norm_detects_empty_sets():
    assert sc.norm(5, 4, 0, 10, 0, U64) is None
    assert sc.refine("jgt", sc.const(3), sc.const(3), True) is None
    assert sc.refine("jset", sc.const(4), sc.const(3), True) is None


def test_ranges_learnt_from_branches():
    x = sc.of_size(1)
    lo, _ = sc.refine("jgt", x, sc.const(10), True)
    assert (lo.umin, lo.umax) == (11, 255)
    hi, _ = sc.refine("jslt", sc.UNKNOWN, sc.const(0), False)
    assert (hi.smin, hi.umax) == (0, sc.S64_MAX)
    # a 32-bit compare bounds a value whose upper half is known zero
    w, _ = sc.refine("jle", sc.of_size(4), sc.const(7), True, 32)
    assert (w.umin, w.umax) == (0, 7)
