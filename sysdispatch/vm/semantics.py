"""What each eBPF instruction computes (RFC 9669), written down once.

Every engine reads these tables: the interpreter compiles each expression into a small closure at
import, a JIT can paste the same text into the Python source it generates. The tables are keyed by
``OpSpec.kind`` and ``OpSpec.op`` from :mod:`sysdispatch.vm.isa`; nothing here re-lists opcodes.

Conventions every expression relies on:

* a register holds an *unsigned* Python int, ``0 <= v < 2**64``; ``a`` is the destination operand
  and ``b`` the source operand, both already reduced to the operation's width (``& 0xffffffff``
  for ALU32/JMP32) by the engine — see :func:`operand`;
* an immediate is a signed 32-bit field: 64-bit operations sign-extend it (``imm & M64``), 32-bit
  ones take its low 32 bits (``imm & M32``);
* the placeholders ``{M}`` (width mask), ``{S}`` (sign bit), ``{SH}`` (shift-amount mask) are
  replaced by literal numbers by :func:`alu_expr` and friends, so compiled code sees constants;
* functions the expressions call (the byte swaps' pack/unpack) live in :data:`ENV`, the
  namespace every compiled expression must be evaluated in.

The traps these tables exist to get right (each has a test in tests/vm/test_interp_semantics.py):
division by zero gives 0 and modulo by zero leaves the dividend (for ALU32 its low 32 bits); signed
division truncates toward zero and ``INT_MIN / -1`` wraps to ``INT_MIN``; shift amounts are masked
to 63 (31); ALU32 results zero-extend; ``le16`` truncates; ``cmpxchg`` compares with r0 and always
loads the old value into r0.
"""

from __future__ import annotations

import struct

M64 = 0xFFFF_FFFF_FFFF_FFFF
M32 = 0xFFFF_FFFF
S64 = 1 << 63
S32 = 1 << 31

# Constants substituted into the templates, per operand width in bits.
WIDTH = {
    64: {"M": M64, "S": S64, "SH": 63},
    32: {"M": M32, "S": S32, "SH": 31},
}


def _signed(v: int, sign: int) -> int:
    return (v ^ sign) - sign


# Reference definitions, written plainly: the ALU templates below compute signed division and
# remainder inline, and tests/vm/test_interp_semantics.py checks them against these.
def sdiv(a: int, b: int, bits: int) -> int:
    """Signed ``bits``-wide division, truncating toward zero; ``x / 0 = 0``; INT_MIN / -1 wraps."""
    if not b:
        return 0
    sign = 1 << (bits - 1)
    sa, sb = _signed(a, sign), _signed(b, sign)
    q = abs(sa) // abs(sb)
    return (-q if (sa < 0) != (sb < 0) else q) & ((1 << bits) - 1)


def smod(a: int, b: int, bits: int) -> int:
    """Signed ``bits``-wide remainder with the sign of the dividend; ``x % 0 = x``."""
    if not b:
        return a
    sign = 1 << (bits - 1)
    sa, sb = _signed(a, sign), _signed(b, sign)
    r = abs(sa) % abs(sb)
    return (-r if sa < 0 else r) & ((1 << bits) - 1)


def bswap(v: int, nbytes: int) -> int:
    """Reverse the low ``nbytes`` bytes of ``v`` (the upper bytes are dropped)."""
    return int.from_bytes((v & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little"), "big")


# A byte swap of n bytes as two C calls: pack little-endian, unpack big-endian (half the cost of
# calling bswap, whose result it equals; tests/vm/test_interp_semantics.py checks both).
_SWAP = {n: (struct.Struct("<" + c).pack, struct.Struct(">" + c).unpack)
         for n, c in ((2, "H"), (4, "I"), (8, "Q"))}

# Names compiled expressions may call.
ENV = {**{f"lepack{n}": pack for n, (pack, _) in _SWAP.items()},
       **{f"beunpack{n}": unpack for n, (_, unpack) in _SWAP.items()}}

# --- ALU (kinds alu and alu32): the new value of dst ------------------------------------------

ALU = {
    "add": "(a + b) & {M}",
    "sub": "(a - b) & {M}",
    "mul": "(a * b) & {M}",
    "div": "(a // b if b else 0)",
    # Signed: magnitudes divided (truncating toward zero), negated when the signs differ; the
    # same results as sdiv() above (tests compare them), with no function call.
    "sdiv": "((abs((a ^ {S}) - {S}) // abs((b ^ {S}) - {S}) * (-1 if (a ^ b) & {S} else 1))"
            " & {M} if b else 0)",
    "mod": "(a % b if b else a)",
    # the remainder takes the dividend's sign (smod() above)
    "smod": "((abs((a ^ {S}) - {S}) % abs((b ^ {S}) - {S}) * (-1 if a & {S} else 1)) & {M}"
            " if b else a)",
    "or": "(a | b)",
    "and": "(a & b)",
    "xor": "(a ^ b)",
    "lsh": "((a << (b & {SH})) & {M})",
    "rsh": "(a >> (b & {SH}))",
    # Arithmetic shift: make a signed, shift (Python's >> on negatives is arithmetic), re-mask.
    "arsh": "((((a ^ {S}) - {S}) >> (b & {SH})) & {M})",
    "mov": "b",
}

# kind neg: -dst at the instruction's width
NEG = "((-a) & {M})"

# --- jumps (kinds jcc and jcc32): the condition -----------------------------------------------
# Signed comparisons flip the sign bit: for unsigned a, b of one width, signed(a) < signed(b)
# exactly when (a ^ S) < (b ^ S).

JCC = {
    "jeq": "a == b",
    "jne": "a != b",
    "jgt": "a > b",
    "jge": "a >= b",
    "jlt": "a < b",
    "jle": "a <= b",
    "jset": "a & b",
    "jsgt": "(a ^ {S}) > (b ^ {S})",
    "jsge": "(a ^ {S}) >= (b ^ {S})",
    "jslt": "(a ^ {S}) < (b ^ {S})",
    "jsle": "(a ^ {S}) <= (b ^ {S})",
}

# --- atomics (kind atomic): new memory value from old ``m`` and src operand ``b`` ---------------
# The second element says which register receives the old value: None (no fetch), "src" (the
# fetch forms and xchg) or "r0" (cmpxchg, which compares m with r0 — named ``c`` here — and
# always loads the old value into r0). 32-bit atomics zero-extend the fetched value.

ATOMIC = {
    "add": ("(m + b) & {M}", None),
    "or": ("m | b", None),
    "and": ("m & b", None),
    "xor": ("m ^ b", None),
    "fetch_add": ("(m + b) & {M}", "src"),
    "fetch_or": ("m | b", "src"),
    "fetch_and": ("m & b", "src"),
    "fetch_xor": ("m ^ b", "src"),
    "xchg": ("b", "src"),
    "cmpxchg": ("(b if m == c else m)", "r0"),
}


def _fill(template: str, bits: int) -> str:
    consts = WIDTH[bits]
    return (template.replace("{M}", str(consts["M"])).replace("{S}", str(consts["S"]))
            .replace("{SH}", str(consts["SH"])))


def width(spec) -> int:
    """Operand width in bits of an ALU, jump or atomic form (64 or 32)."""
    if spec.kind == "atomic":
        return 8 * spec.size
    return 64 if spec.is64 else 32


def alu_expr(op: str, bits: int) -> str:
    """The new dst of ALU operation ``op`` over ``a``, ``b`` at ``bits`` width."""
    return _fill(ALU[op], bits)


def neg_expr(bits: int) -> str:
    return _fill(NEG, bits)


def jcc_expr(op: str, bits: int) -> str:
    """The branch condition of jump ``op`` over ``a``, ``b`` at ``bits`` width."""
    return _fill(JCC[op], bits)


def atomic_expr(op: str, bits: int) -> tuple[str, str | None]:
    """(new memory value over ``m``, ``b``, ``c``; which register gets the old value)."""
    expr, fetch_into = ATOMIC[op]
    return _fill(expr, bits), fetch_into


def movsx_expr(from_bits: int, to_bits: int) -> str:
    """Sign-extend the low ``from_bits`` of ``b`` to ``to_bits`` (zero-extended beyond)."""
    sign = 1 << (from_bits - 1)
    return f"((((b & {(1 << from_bits) - 1}) ^ {sign}) - {sign}) & {(1 << to_bits) - 1})"


def ldxs_expr(size: int) -> str:
    """Sign-extend a loaded ``size``-byte value ``v`` to 64 bits (BPF_MEMSX)."""
    sign = 1 << (8 * size - 1)
    return f"(((v ^ {sign}) - {sign}) & {M64})"


def end_expr(op: str, bits: int) -> str:
    """Byte-order conversion of the whole register ``a`` (kinds end and bswap).

    This machine is little-endian like every target here: ``le`` only truncates to ``bits`` (and
    zero-extends), ``be`` and ``bswap`` reverse the low ``bits // 8`` bytes.
    """
    if op == "le":
        return "a" if bits == 64 else f"(a & {(1 << bits) - 1})"
    n = bits // 8
    return f"beunpack{n}(lepack{n}(a & {(1 << bits) - 1}))[0]"


def operand(imm: int, bits: int) -> int:
    """An immediate as the unsigned operand of a ``bits``-wide operation (sign-extended for 64)."""
    return imm & (M64 if bits == 64 else M32)


def evaluate(expr: str, **values: int):
    """Evaluate one expression with the given operands (for tests and one-off uses)."""
    return eval(expr, dict(ENV), values)  # noqa: S307 - our own templates, never user text
