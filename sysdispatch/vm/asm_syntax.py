"""How the two assembly syntaxes spell eBPF instructions, and the tokens they are made of.

The one place for spellings: the LLVM operator of each ``OpSpec.op`` (the assembler reads these
tables backwards, the disassembler prints them), the conformance-syntax mnemonics and operand
shapes, the helper names ``call`` accepts, and a tokenizer whose :class:`Cursor` reads registers,
numbers and offsets with errors that name the offending column. Which instruction forms exist is
not known here: that is ``isa.SPECS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

from ..errors import AsmError, Location
from . import isa
from .isa import NREGS, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, SPECS, SPEC_BY_NAME, OpSpec, signed32

# --- LLVM syntax: OpSpec.op -> operator ---------------------------------------------------------

ALU_OPERATORS = {
    "add": "+=", "sub": "-=", "mul": "*=", "div": "/=", "sdiv": "s/=", "mod": "%=", "smod": "s%=",
    "or": "|=", "and": "&=", "xor": "^=", "lsh": "<<=", "rsh": ">>=", "arsh": "s>>=", "mov": "=",
}
JMP_OPERATORS = {
    "jeq": "==", "jne": "!=", "jgt": ">", "jge": ">=", "jlt": "<", "jle": "<=",
    "jsgt": "s>", "jsge": "s>=", "jslt": "s<", "jsle": "s<=", "jset": "&",
}
# lock *(u64 *)(r10 - 8) += r1; the fetch forms are r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)
ATOMIC_OPERATORS = {"add": "+=", "or": "|=", "and": "&=", "xor": "^="}
ATOMIC_FETCH_PREFIX = "atomic_"                         # + "fetch_add", ...
XCHG_FUNCS = {8: "xchg_64", 4: "xchg32_32"}             # r1 = xchg_64(r10 - 8, r1)
CMPXCHG_FUNCS = {8: "cmpxchg_64", 4: "cmpxchg32_32"}    # r0 = cmpxchg_64(r10 - 8, r0, r1)
MAP_FORMS = {PSEUDO_MAP_FD: "map", PSEUDO_MAP_VALUE: "map_value"}   # r1 = map[NAME] ll
USIZES = {v: k for k, v in isa.SIZE_CTYPE.items()}                  # "u32" -> 4
SSIZES = {f"s{k * 8}": k for k in isa.SIZE_CTYPE if k != 8}         # "s16" -> 2

ALU_BY_OPERATOR = {v: k for k, v in ALU_OPERATORS.items() if k != "mov"}
JMP_BY_OPERATOR = {v: k for k, v in JMP_OPERATORS.items()}
ATOMIC_BY_OPERATOR = {v: k for k, v in ATOMIC_OPERATORS.items()}
FUNC_FORMS = ({f: ("xchg", s) for s, f in XCHG_FUNCS.items()}
              | {f: ("cmpxchg", s) for s, f in CMPXCHG_FUNCS.items()})
MAP_SOURCES = {v: k for k, v in MAP_FORMS.items()}

# One form per (kind, op, reg, size, 64-bit?): how the LLVM parser finds the OpSpec it means.
FORMS: dict[tuple[str, str, bool, int, bool], OpSpec] = {
    (s.kind, s.op, s.reg, s.size, s.is64): s for s in SPECS}
assert len(FORMS) == len(SPECS), "isa.SPECS has two forms the assembler cannot tell apart"

# --- conformance (ubpf) syntax ------------------------------------------------------------------

# The canonical names plus the spellings the suite and ubpf also use.
MNEMONICS: dict[str, tuple[OpSpec, ...]] = dict(SPEC_BY_NAME)
for _s in SPECS:
    if _s.is64 and _s.kind in ("alu", "neg", "atomic"):
        MNEMONICS.setdefault(f"{_s.name}64", SPEC_BY_NAME[_s.name])       # add64, lock_add64
    if _s.kind == "bswap":
        MNEMONICS.setdefault(f"swap{_s.size}", SPEC_BY_NAME[_s.name])     # RFC 9669's SWAP16
del _s

# Operand shapes per kind: the operand count and the wording of "takes N operands" come from here.
OPERANDS: dict[str, tuple[str, ...]] = {
    "alu": ("dst", "src|imm"), "alu32": ("dst", "src|imm"), "neg": ("dst",),
    "movsx": ("dst", "src"), "end": ("dst",), "bswap": ("dst",),
    "ja": ("target",), "ja32": ("target",),
    "jcc": ("dst", "src|imm", "target"), "jcc32": ("dst", "src|imm", "target"),
    "call": ("helper",), "local_call": ("target",), "callx": ("dst",), "exit": (),
    "lddw": ("dst", "imm64"), "ldx": ("dst", "[src+off]"), "ldxs": ("dst", "[src+off]"),
    "st": ("[dst+off]", "imm"), "stx": ("[dst+off]", "src"), "atomic": ("[dst+off]", "src"),
}
# Where a jump or call target goes: the 16-bit off or the 32-bit imm.
TARGET_FIELD = {"ja": "off", "jcc": "off", "jcc32": "off", "ja32": "imm", "local_call": "imm"}


def helper_ids() -> dict[str, int]:
    """Helper names -> ids, as ``call`` accepts them (``map_lookup_elem``, ``bpf_...``, upper case).

    The names come from the helper table in :mod:`sysdispatch.vm.helpers`, their one home.
    """
    from .helpers import HELPERS as table  # the helper table imports the loader, not us

    names: dict[str, int] = {}
    for hid, helper in table.items():
        base = helper.name.lower().removeprefix("bpf_")
        names[base] = names[f"bpf_{base}"] = hid
    return names


HELPERS = helper_ids()

# --- tokens -------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<op>s>>=|s/=|s%=|s<=|s>=|s<|s>|<<=|>>=|==|!=|<=|>=|\+=|-=|\*=|/=|%=|\|=|&=|\^=)
  | (?P<name>%?[A-Za-z_.$][\w.$]*)
  | (?P<num>\d\w*)
  | (?P<op1>[-+*/()\[\],=<>&:])
""", re.X)
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|0[bB][01]+|\d+")
_REGISTER = re.compile(r"%?([rw])(\d+)")
COMMENT = re.compile(r"//|[;#]")
# "  12:" pc prefix and/or the 8 or 16 raw bytes disassemble(with_bytes=True) prints
PC_PREFIX = re.compile(r"\s*(?:\d+:)?\s*(?:(?:[0-9a-fA-F]{2}\s+){8}){0,2}")
LABEL = re.compile(r"\s*([A-Za-z_.$][\w.$]*)\s*:")
NOTE = re.compile(r"\s<[^<>=]*>\s*$")    # "goto +3 <fail>": the target, printed for humans


@dataclass(frozen=True, slots=True)
class Tok:
    kind: str   # name | num | op
    text: str
    col: int    # 1-based


def tokens(line: str, start: int, end: int, loc: Location) -> list[Tok]:
    """The tokens of ``line[start:end]``; columns count from the start of ``line``."""
    toks = []
    pos = start
    while pos < end:
        m = _TOKEN.match(line, pos, end)
        if m is None:
            raise AsmError(f"unexpected character '{line[pos]}'",
                           loc=Location(loc.file, loc.line, pos + 1))
        kind = m.lastgroup
        if kind != "ws":
            text = m.group()
            if kind == "num" and not _NUMBER.fullmatch(text):
                raise AsmError(f"bad number '{text}'", loc=Location(loc.file, loc.line, pos + 1))
            toks.append(Tok("op" if kind == "op1" else kind, text, pos + 1))
        pos = m.end()
    return toks


def is_reg(tok: Tok | None) -> bool:
    return tok is not None and _REGISTER.fullmatch(tok.text) is not None


def found(t: Tok | None) -> str:
    return "end of line" if t is None else f"'{t.text}'"




class Cursor:
    """Tokens being read, with readers for the operands both syntaxes share.

    Every error points at the offending token's column (or just past the end of the line).
    """

    def __init__(self, toks: list[Tok], end_col: int, loc: Location) -> None:
        self.toks, self.i, self.end_col, self.loc = toks, 0, end_col, loc

    def error(self, message: str, tok: Tok | None = None) -> AsmError:
        col = tok.col if tok is not None else self.end_col
        return AsmError(message, loc=Location(self.loc.file, self.loc.line, col))

    def peek(self, k: int = 0) -> Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def at(self, *texts: str, k: int = 0) -> bool:
        t = self.peek(k)
        return t is not None and t.text in texts

    def take(self, what: str = "an operand") -> Tok:
        t = self.peek()
        if t is None:
            raise self.error(f"expected {what}, found end of line")
        self.i += 1
        return t

    def expect(self, text: str) -> Tok:
        t = self.peek()
        if t is None or t.text != text:
            raise self.error(f"expected '{text}', found {found(t)}", t)
        self.i += 1
        return t

    def done(self) -> None:
        t = self.peek()
        if t is not None:
            raise self.error(f"unexpected '{t.text}'", t)

    def reg(self, cls: str | None = None) -> tuple[int, str]:
        """A register ``rN``/``wN``/``%rN``; ``cls`` demands ``r`` (64-bit) or ``w`` (32-bit)."""
        t = self.take("a register")
        m = _REGISTER.fullmatch(t.text)
        if m is None:
            raise self.error(f"expected a register, found '{t.text}'", t)
        n = int(m.group(2))
        if n >= NREGS:
            raise self.error(f"invalid register '{t.text}' (r0..r{NREGS - 1})", t)
        if cls is not None and m.group(1) != cls:
            bits = 64 if cls == "r" else 32
            raise self.error(f"expected a {bits}-bit register {cls}{n}, found '{t.text}'", t)
        return n, m.group(1)

    def number(self, what: str) -> tuple[int, bool, Tok, str]:
        """(value, written in hex, first token, text as written) of ``[+-]number``."""
        first = self.peek()
        sign = 1
        if self.at("+", "-"):
            sign = -1 if self.take().text == "-" else 1
        t = self.peek()
        if t is None or t.kind != "num":
            raise self.error(f"expected {what}, found {found(t)}", t)
        self.take()
        if first is not t and first.col + len(first.text) != t.col:
            first = t      # "r1 + 8": point at the number, "-8": at its sign
        if len(t.text) > 40:   # also keeps int() clear of its limit on huge decimal strings
            raise self.error(f"number '{t.text[:20]}...' is too long", t)
        low = t.text.lower()
        value = int(low, 16 if low.startswith("0x") else 2 if low.startswith("0b") else 10)
        return sign * value, low.startswith("0x"), first, ("-" if sign < 0 else "") + t.text

    def imm32(self, what: str = "an immediate", *, strict_decimal: bool = False) -> int:
        """A 32-bit immediate, stored signed: -2**31 .. 2**32-1 (above 2**31-1: the bit pattern).

        With ``strict_decimal`` (the conformance syntax, as its own assembler and its negative
        test ``invalid_imm32_dec_range`` want) only hex may spell the bit pattern.
        """
        value, is_hex, tok, written = self.number(what)
        high = 0x7FFFFFFF if strict_decimal and not is_hex else 0xFFFFFFFF
        if not -0x80000000 <= value <= high:
            hint = (" (a decimal must fit in signed 32 bits; write hex for the bit pattern)"
                    if high < value <= 0xFFFFFFFF else "")
            raise self.error(f"immediate {written} out of range for 32 bits{hint}", tok)
        return signed32(value)

    def off16(self, what: str = "offset") -> int:
        value, _, tok, written = self.number(("an " if what[0] in "aeiou" else "a ") + what)
        if not -0x8000 <= value <= 0x7FFF:
            raise self.error(f"{what} {written} out of range for 16 bits", tok)
        return value

    def imm64(self) -> int:
        value, _, tok, written = self.number("a 64-bit immediate")
        if not -(1 << 63) <= value < 1 << 64:
            raise self.error(f"immediate {written} out of range for 64 bits", tok)
        return value


def map_names(maps: Any) -> list[str | None]:
    """The names ``map[NAME]`` may use: a mapping's keys, else each map's ``name`` attribute."""
    if isinstance(maps, Mapping):
        return list(maps)
    return [getattr(m, "name", None) for m in maps]
