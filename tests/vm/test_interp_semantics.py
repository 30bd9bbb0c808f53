"""The instruction semantics the interpreter gets from vm.semantics, one trap at a time.

Each case is a short program built with isa.make and the value RFC 9669 (and the kernel) defines
for it, worked out by hand in the comment. A few cases are also asked of the running kernel, and
a property test checks every ALU operation against a reference written here independently, with
C's rules spelled out (truncating division, masking shifts) rather than with semantics.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from sysdispatch.vm import semantics as sem
from sysdispatch.vm.interp import run
from sysdispatch.vm.isa import FP, lddw, make
from sysdispatch.vm.program import Program

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
INT64_MIN = 1 << 63
INT32_MIN = 1 << 31


def r0_of(*insns) -> int:
    flat = []
    for i in insns:
        flat.extend(i if isinstance(i, tuple) else (i,))
    return run(Program.load(flat + [make("exit")])).r0


def mov(dst, imm):
    return make("mov", dst, imm=imm, reg=False)


def alu(name, dst, operand):
    """``name dst, operand``: operand an int (imm form) or ('r', n) (register form)."""
    if isinstance(operand, tuple):
        return make(name, dst, operand[1], reg=True)
    return make(name, dst, imm=operand, reg=False)


R1 = ("r", 1)

CASES = [
    # division and modulo by zero: x / 0 = 0, x % 0 = x
    ("div64 by zero reg", [mov(0, 7), mov(1, 0), alu("div", 0, R1)], 0),
    ("mod64 by zero reg keeps dst", [*lddw(0, 0x1_2345_6789), mov(1, 0), alu("mod", 0, R1)],
     0x1_2345_6789),
    # ALU32 mod by 0 keeps only the low 32 bits of dst, upper half zeroed
    ("mod32 by zero zero-extends dst", [*lddw(0, 0xAAAA_BBBB_0000_0005), mov(1, 0),
                                        alu("mod32", 0, R1)], 5),
    ("div32 by zero is 0 and clears the upper half", [*lddw(0, 0xFFFF_0000_0000_0009), mov(1, 0),
                                                      alu("div32", 0, R1)], 0),
    ("sdiv64 by zero reg", [mov(0, -5), mov(1, 0), alu("sdiv", 0, R1)], 0),
    ("smod64 by zero reg keeps dst", [mov(0, -5), mov(1, 0), alu("smod", 0, R1)], (-5) & U64),
    ("smod32 by zero reg keeps low half", [mov(0, -5), mov(1, 0), alu("smod32", 0, R1)],
     (-5) & U32),
    # signed division truncates toward zero (Python's // floors: -7 // 2 == -4)
    ("sdiv64 -7 / 2 = -3", [mov(0, -7), alu("sdiv", 0, 2)], (-3) & U64),
    ("smod64 -7 % 2 = -1", [mov(0, -7), alu("smod", 0, 2)], (-1) & U64),
    ("smod64 7 % -2 = 1", [mov(0, 7), alu("smod", 0, -2)], 1),
    ("sdiv32 -7 / 2 = -3", [mov(0, -7), alu("sdiv32", 0, 2)], (-3) & U32),
    ("smod32 -7 % -2 = -1", [mov(0, -7), mov(1, -2), alu("smod32", 0, R1)], (-1) & U32),
    # INT_MIN / -1 wraps to INT_MIN, INT_MIN % -1 is 0
    ("sdiv64 INT_MIN / -1", [*lddw(0, INT64_MIN), alu("sdiv", 0, -1)], INT64_MIN),
    ("smod64 INT_MIN % -1", [*lddw(0, INT64_MIN), alu("smod", 0, -1)], 0),
    ("sdiv32 INT_MIN / -1", [mov(0, -INT32_MIN), alu("sdiv32", 0, -1)], INT32_MIN),
    ("smod32 INT_MIN % -1", [mov(0, -INT32_MIN), alu("smod32", 0, -1)], 0),
    # unsigned div of a negative-looking value is unsigned
    ("div64 unsigned", [mov(0, -2), alu("div", 0, 2)], ((1 << 64) - 2) // 2),
    ("div32 with imm -1 divides by 0xffffffff", [mov(0, -1), alu("div32", 0, -1)], 1),
    # shift amounts are masked: 63 for 64-bit, 31 for 32-bit operations
    ("lsh64 by 65 shifts by 1", [mov(0, 3), mov(1, 65), alu("lsh", 0, R1)], 6),
    ("lsh32 by 33 shifts by 1 and truncates", [*lddw(0, 0x1_8000_0001), mov(1, 33),
                                               alu("lsh32", 0, R1)], 2),
    ("rsh64 by 64 shifts by 0", [mov(0, -1), mov(1, 64), alu("rsh", 0, R1)], U64),
    ("rsh32 is logical on the low half", [mov(0, -1), alu("rsh32", 0, 4)], 0x0FFF_FFFF),
    ("arsh64 keeps the sign", [mov(0, -16), alu("arsh", 0, 2)], (-4) & U64),
    ("arsh64 by 127 is by 63", [mov(0, -16), mov(1, 127), alu("arsh", 0, R1)], U64),
    ("arsh32 uses bit 31 and zero-extends", [*lddw(0, 0x0000_0000_8000_0000), alu("arsh32", 0, 4)],
     0xF800_0000),
    # ALU32 results are zero-extended, 64-bit ops sign-extend the immediate
    ("add32 wraps and zero-extends", [mov(0, -1), alu("add32", 0, 1)], 0),
    ("mov32 -1 is 0xffffffff", [make("mov32", 0, imm=-1, reg=False)], U32),
    ("mov64 -1 is all ones", [mov(0, -1)], U64),
    ("add64 imm -1 sign-extends", [mov(0, 0), alu("add", 0, -1)], U64),
    ("and64 imm sign-extends 0x80000000", [mov(0, -1), alu("and", 0, -INT32_MIN)],
     0xFFFF_FFFF_8000_0000),
    ("or32 leaves the upper half zero", [mov(0, -1), alu("or32", 0, 0)], U32),
    ("mul64 wraps", [*lddw(0, 1 << 63), alu("mul", 0, 2)], 0),
    ("mul32 INT_MIN * -1", [mov(0, -INT32_MIN), alu("mul32", 0, -1)], INT32_MIN),
    ("sub64 borrow", [mov(0, 0), alu("sub", 0, 1)], U64),
    ("neg64 INT_MIN", [*lddw(0, INT64_MIN), make("neg", 0)], INT64_MIN),
    ("neg32 of 1 zero-extends", [mov(0, 1), make("neg32", 0)], U32),
    ("xor64", [mov(0, 0x0F0F), alu("xor", 0, 0x00FF)], 0x0FF0),
    # sign-extending moves
    ("movsx8 to 64", [mov(1, 0x80), make("movsx864", 0, 1)], (-128) & U64),
    ("movsx16 to 64", [mov(1, 0x7FFF), make("movsx1664", 0, 1)], 0x7FFF),
    ("movsx32 to 64", [make("mov32", 1, imm=-2, reg=False), make("movsx3264", 0, 1)], (-2) & U64),
    ("movsx8 to 32 zero-extends", [mov(1, 0xFF), make("movsx832", 0, 1)], U32),
    ("movsx16 to 32", [mov(1, 0x8000), make("movsx1632", 0, 1)], 0xFFFF_8000),
    # byte order: le truncates, be/bswap reverse the low bytes
    ("le16 truncates", [*lddw(0, 0x1122_3344_5566_7788), make("le16", 0, imm=16)], 0x7788),
    ("le32 truncates", [*lddw(0, 0x1122_3344_5566_7788), make("le32", 0, imm=32)], 0x5566_7788),
    ("le64 is identity", [*lddw(0, 0x1122_3344_5566_7788), make("le64", 0, imm=64)],
     0x1122_3344_5566_7788),
    ("be16 swaps and truncates", [*lddw(0, 0x1122_3344_5566_7788), make("be16", 0, imm=16)],
     0x8877),
    ("be32", [*lddw(0, 0x1122_3344_5566_7788), make("be32", 0, imm=32)], 0x8877_6655),
    ("be64", [*lddw(0, 0x1122_3344_5566_7788), make("be64", 0, imm=64)], 0x8877_6655_4433_2211),
    ("bswap16", [*lddw(0, 0x1122_3344_5566_7788), make("bswap16", 0, imm=16)], 0x8877),
    ("bswap64", [*lddw(0, 0x0102_0304_0506_0708), make("bswap64", 0, imm=64)],
     0x0807_0605_0403_0201),
]


@pytest.mark.parametrize("insns, want", [pytest.param(i, w, id=n) for n, i, w in CASES])
def test_alu_edge_cases(insns, want):
    assert r0_of(*insns) == want


def branch(cond_insn):
    """r0 = 1 if the jump is taken, else 0."""
    return [mov(0, 0), cond_insn, make("exit"), mov(0, 1)]


JUMPS = [
    # imm -1 sign-extends: unsigned it is the largest value, signed it is -1
    ("jgt 1 > -1 is false (unsigned)", [mov(1, 1), make("jgt", 1, off=1, imm=-1, reg=False)], 0),
    ("jsgt 1 > -1 is true (signed)", [mov(1, 1), make("jsgt", 1, off=1, imm=-1, reg=False)], 1),
    ("jslt -2 < -1", [mov(1, -2), make("jslt", 1, off=1, imm=-1, reg=False)], 1),
    ("jsge INT_MIN >= 0 is false", [*lddw(1, INT64_MIN), make("jsge", 1, off=1, imm=0, reg=False)],
     0),
    ("jset", [mov(1, 0b1010), make("jset", 1, off=1, imm=0b0010, reg=False)], 1),
    ("jset none", [mov(1, 0b1010), make("jset", 1, off=1, imm=0b0101, reg=False)], 0),
    # JMP32 compares only the low halves
    ("jeq32 ignores the upper half", [*lddw(1, 0xDEAD_0000_0000_0005),
                                      make("jeq32", 1, off=1, imm=5, reg=False)], 1),
    ("jeq64 sees the upper half", [*lddw(1, 0xDEAD_0000_0000_0005),
                                   make("jeq", 1, off=1, imm=5, reg=False)], 0),
    ("jsgt32 sign is bit 31", [*lddw(1, 0x0000_0000_8000_0000),
                               make("jsgt32", 1, off=1, imm=0, reg=False)], 0),
    ("jgt32 unsigned on the low half", [*lddw(1, 0x0000_0000_8000_0000),
                                        make("jgt32", 1, off=1, imm=0, reg=False)], 1),
    ("jne reg", [mov(1, 3), mov(2, 4), make("jne", 1, 2, off=1, reg=True)], 1),
    ("jle reg equal", [mov(1, 4), mov(2, 4), make("jle", 1, 2, off=1, reg=True)], 1),
]


@pytest.mark.parametrize("setup, want", [pytest.param(s, w, id=n) for n, s, w in JUMPS])
def test_conditional_jumps(setup, want):
    *pre, jump = setup
    assert r0_of(*pre, *branch(jump)) == want


def test_ja32_takes_a_32_bit_offset():
    # ja32 (gotol) keeps its offset in imm
    assert r0_of(mov(0, 1), make("ja32", imm=1), mov(0, 2)) == 1


# --- memory: sized loads, sign-extending loads, stores -----------------------------------------

def test_loads_and_stores_are_little_endian_and_sized():
    mem = bytearray(16)
    prog = Program.load([
        *lddw(2, 0x1122_3344_5566_7788),
        make("stxdw", 1, 2, off=0),
        make("stw", 1, off=8, imm=-2),          # imm sign-extends, then 4 bytes are stored
        make("sth", 1, off=12, imm=0x1_2345),   # only the low 2 bytes
        make("ldxh", 0, 1, off=2),              # 0x5566
        make("exit"),
    ])
    assert run(prog, mem=mem).r0 == 0x5566
    assert mem[:8] == (0x1122_3344_5566_7788).to_bytes(8, "little")
    assert mem[8:12] == b"\xfe\xff\xff\xff"
    assert mem[12:14] == b"\x45\x23" and mem[14:16] == b"\0\0"


@pytest.mark.parametrize("name, size, stored, want", [
    ("ldxsb", 1, 0x80, (-128) & U64),
    ("ldxsh", 2, 0x8001, (-0x7FFF) & U64),
    ("ldxsw", 4, 0xFFFF_FFFE, (-2) & U64),
    ("ldxsw", 4, 0x7FFF_FFFF, 0x7FFF_FFFF),
])
def test_sign_extending_loads(name, size, stored, want):
    prog = Program.load([make(name, 0, 1, off=0), make("exit")])
    assert run(prog, mem=stored.to_bytes(size, "little")).r0 == want


# --- atomics -------------------------------------------------------------------------------------

ATOMICS = [
    # (mnemonic, old memory, src operand, initial r0, want memory, want src after, want r0 after)
    ("lock_add", 5, 3, 0, 8, 3, 0),
    ("lock_or", 0b1100, 0b0011, 0, 0b1111, 0b0011, 0),
    ("lock_and", 0b1100, 0b0110, 0, 0b0100, 0b0110, 0),
    ("lock_xor", 0b1100, 0b0110, 0, 0b1010, 0b0110, 0),
    ("lock_fetch_add", 5, 3, 0, 8, 5, 0),
    ("lock_fetch_or", 0b1100, 0b0011, 0, 0b1111, 0b1100, 0),
    ("lock_fetch_and", 0b1100, 0b0110, 0, 0b0100, 0b1100, 0),
    ("lock_fetch_xor", 0b1100, 0b0110, 0, 0b1010, 0b1100, 0),
    ("lock_xchg", 7, 9, 0, 9, 7, 0),
    ("lock_cmpxchg", 7, 9, 7, 9, 9, 7),       # r0 == mem: store src, r0 = old
    ("lock_cmpxchg", 7, 9, 6, 7, 9, 7),       # r0 != mem: keep mem, r0 = old
    ("lock_add", U64, 1, 0, 0, 1, 0),         # wraps in 64 bits
    # 32-bit forms touch 4 bytes, fetch zero-extended
    ("lock_add32", 0xAAAA_AAAA_FFFF_FFFF, 1, 0, 0xAAAA_AAAA_0000_0000, 1, 0),
    ("lock_fetch_add32", 0xAAAA_AAAA_FFFF_FFFF, 1, 0, 0xAAAA_AAAA_0000_0000, U32, 0),
    ("lock_xchg32", 0x1111_1111_2222_2222, 0x9999_9999_3333_3333, 0,
     0x1111_1111_3333_3333, 0x2222_2222, 0),
    # cmpxchg32 compares the low half of r0 only and zero-extends the old value into r0
    ("lock_cmpxchg32", 0x1111_1111_2222_2222, 0x5, 0xFFFF_FFFF_2222_2222,
     0x1111_1111_0000_0005, 0x5, 0x2222_2222),
]


@pytest.mark.parametrize("name, old, operand, r0, mem_after, src_after, r0_after", ATOMICS)
def test_atomics(name, old, operand, r0, mem_after, src_after, r0_after):
    out = bytearray(24)  # r0, src and the memory word after the atomic, copied out
    prog = Program.load([
        make("mov", 6, 1, reg=True),
        *lddw(2, old), make("stxdw", FP, 2, off=-8),
        *lddw(1, operand), *lddw(0, r0),
        make(name, FP, 1, off=-8),
        make("stxdw", 6, 0, off=0), make("stxdw", 6, 1, off=8),
        make("ldxdw", 3, FP, off=-8), make("stxdw", 6, 3, off=16),
        make("exit"),
    ])
    run(prog, mem=out)
    got = [int.from_bytes(out[i:i + 8], "little") for i in (16, 8, 0)]
    assert got == [mem_after, src_after, r0_after]


# --- an independent reference for every ALU operation -------------------------------------------

def c_reference(op: str, a: int, b: int, bits: int) -> int:
    """C semantics written out directly (not via semantics.py)."""
    mask = (1 << bits) - 1
    a &= mask
    b &= mask

    def signed(v):
        return v - (1 << bits) if v >> (bits - 1) else v

    if op in ("add", "sub", "mul", "or", "and", "xor"):
        py = {"add": a + b, "sub": a - b, "mul": a * b, "or": a | b, "and": a & b, "xor": a ^ b}
        return py[op] & mask
    if op == "div":
        return a // b if b else 0
    if op == "mod":
        return a % b if b else a
    if op in ("sdiv", "smod"):
        if b == 0:
            return 0 if op == "sdiv" else a
        sa, sb = signed(a), signed(b)
        q = int(sa / sb) if abs(sa) < 2 ** 52 and abs(sb) < 2 ** 52 else None
        if q is None:  # exact truncating division without floats
            q = abs(sa) // abs(sb)
            q = q if (sa >= 0) == (sb >= 0) else -q
        return (q if op == "sdiv" else sa - sb * q) & mask
    if op in ("lsh", "rsh", "arsh"):
        n = b % bits
        if op == "lsh":
            return (a << n) & mask
        if op == "rsh":
            return a >> n
        return (signed(a) >> n) & mask
    if op == "mov":
        return b
    raise AssertionError(op)


ALU_OPS = sorted(sem.ALU)
values = st.one_of(st.integers(0, U64), st.sampled_from(
    [0, 1, 2, U64, U32, INT64_MIN, INT32_MIN, INT64_MIN - 1, INT32_MIN - 1, 63, 64, 31, 32]))


@settings(max_examples=300, deadline=None)
@given(op=st.sampled_from(ALU_OPS), bits=st.sampled_from([64, 32]), a=values, b=values)
def test_every_alu_op_matches_c_semantics(op, bits, a, b):
    name = op if bits == 64 else f"{op}32"
    prog = Program.load([*lddw(0, a), *lddw(1, b), make(name, 0, 1, reg=True), make("exit")])
    assert run(prog).r0 == c_reference(op, a, b, bits)


# --- the kernel agrees on the trickiest ones ---------------------------------------------------

KERNEL_CASES = [n for n, *_ in CASES if any(k in n for k in ("INT_MIN", "by zero", "-7", "masked",
                                                              "by 65", "by 33", "by 127", "arsh"))]


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_kernel_agrees(name):
    kernel = pytest.importorskip("sysdispatch.vm.kernel")
    if not kernel.kernel_bpf_available():
        pytest.skip("needs root and bpf()")
    insns, want = next((i, w) for n, i, w in CASES if n == name)
    flat = [x for i in insns for x in (i if isinstance(i, tuple) else (i,))]
    assert kernel.run_r0(flat + [make("exit")]) == want == r0_of(*insns)


def test_the_byte_swap_template_equals_the_reference_bswap():
    """end_expr's struct-based swap (what both engines run) against the plain definition."""
    import random as _random
    from sysdispatch.vm import semantics
    rng = _random.Random(7)
    values = [0, 1, 0xFF, 0x1234, 2**64 - 1, 2**63, *(rng.getrandbits(64) for _ in range(200))]
    for bits in (16, 32, 64):
        for op in ("be",):
            expr = semantics.end_expr(op, bits)
            for v in values:
                assert semantics.evaluate(expr, a=v) == semantics.bswap(v, bits // 8), (bits, v)


def test_the_signed_division_templates_equal_the_reference_functions():
    """The sdiv/smod expressions both engines run against the reference semantics.sdiv/smod."""
    import random as _random
    from sysdispatch.vm import semantics
    rng = _random.Random(11)
    for bits in (64, 32):
        mask, sign = (1 << bits) - 1, 1 << (bits - 1)
        edges = [0, 1, 2, 3, 7, mask, mask - 1, sign, sign - 1, sign + 1]
        values = edges + [rng.getrandbits(bits) for _ in range(150)] + \
            [rng.getrandbits(8) for _ in range(20)] + [mask - rng.getrandbits(8) for _ in range(20)]
        d, m = semantics.alu_expr("sdiv", bits), semantics.alu_expr("smod", bits)
        for a in values[::3] + edges:
            for b in values[::5] + edges:
                assert semantics.evaluate(d, a=a, b=b) == semantics.sdiv(a, b, bits), (bits, a, b)
                assert semantics.evaluate(m, a=a, b=b) == semantics.smod(a, b, bits), (bits, a, b)
