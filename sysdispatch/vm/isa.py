"""The eBPF instruction set (RFC 9669, CPU v4): the one opcode table.

Everything that needs to know what an instruction *is* reads :data:`SPECS` — the assembler, the
disassembler, the load-time checks, the interpreter, the verifier and the JIT. An instruction is a
small immutable :class:`Insn` holding the raw fields of one 8-byte slot; ``lddw`` takes two slots,
the second holding the upper 32 bits of the immediate.

:func:`spec_of` maps an instruction to its :class:`OpSpec` (the opcode byte alone is not enough:
``off`` tells ``div`` from ``sdiv`` and ``mov`` from ``movsx``, ``imm`` picks the atomic operation
and the byte-swap width, ``src`` tells helper calls from local calls).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from ..errors import EncodingError

# --- instruction classes, sources, sizes and modes -------------------------------------------


class Cls(IntEnum):
    LD = 0x00
    LDX = 0x01
    ST = 0x02
    STX = 0x03
    ALU = 0x04
    JMP = 0x05
    JMP32 = 0x06
    ALU64 = 0x07


BPF_K = 0x00  # operand is the immediate
BPF_X = 0x08  # operand is the source register

SIZE_BITS = {4: 0x00, 2: 0x08, 1: 0x10, 8: 0x18}  # BPF_W, BPF_H, BPF_B, BPF_DW
SIZE_SUFFIX = {1: "b", 2: "h", 4: "w", 8: "dw"}
SIZE_CTYPE = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}

MODE_IMM = 0x00
MODE_MEM = 0x60
MODE_MEMSX = 0x80
MODE_ATOMIC = 0xC0

# ALU operation codes (upper nibble of the opcode)
ALU_OPS = {
    "add": 0x00, "sub": 0x10, "mul": 0x20, "div": 0x30, "or": 0x40, "and": 0x50,
    "lsh": 0x60, "rsh": 0x70, "neg": 0x80, "mod": 0x90, "xor": 0xA0, "mov": 0xB0,
    "arsh": 0xC0, "end": 0xD0,
}
# Conditional jumps (upper nibble); ja, call and exit are special
JMP_OPS = {
    "jeq": 0x10, "jgt": 0x20, "jge": 0x30, "jset": 0x40, "jne": 0x50, "jsgt": 0x60,
    "jsge": 0x70, "jlt": 0xA0, "jle": 0xB0, "jslt": 0xC0, "jsle": 0xD0,
}
JA, CALL, EXIT = 0x00, 0x80, 0x90

# Atomic operations: the imm field of STX|ATOMIC
ATOMIC_OPS = {
    "add": 0x00, "or": 0x40, "and": 0x50, "xor": 0xA0,
    "fetch_add": 0x01, "fetch_or": 0x41, "fetch_and": 0x51, "fetch_xor": 0xA1,
    "xchg": 0xE1, "cmpxchg": 0xF1,
}

# lddw src values (kernel: BPF_PSEUDO_*)
PSEUDO_IMM64 = 0
PSEUDO_MAP_FD = 1      # imm = index of the map in the program's map table
PSEUDO_MAP_VALUE = 2   # imm = map index, second imm = offset into the (array) map's value
LDDW_SOURCES = (PSEUDO_IMM64, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE)

# call src values
CALL_HELPER = 0
CALL_LOCAL = 1  # BPF_PSEUDO_CALL: imm is the offset of the callee

NREGS = 11  # r0..r10
FP = 10     # r10, the read-only frame pointer
STACK_SIZE = 512
MAX_TAIL_CALL_CNT = 33
MAX_CALL_FRAMES = 8


# --- the table ---------------------------------------------------------------------------------

FIELDS = ("dst", "src", "off", "imm")


@dataclass(frozen=True, slots=True)
class OpSpec:
    """What one instruction form is.

    ``kind`` groups forms the engines treat alike; ``op`` is the operation inside the kind.
    ``fixed`` lists fields that must hold one exact value to select this form (e.g. ``off=1`` for
    sdiv); ``zero`` lists fields the RFC reserves, which must be zero.
    """

    name: str                 # canonical mnemonic, in the conformance (ubpf) spelling
    code: int                 # the opcode byte
    kind: str                 # alu | alu32 | neg | movsx | end | bswap | ja | ja32 | jcc | jcc32
                              # | call | local_call | callx | exit | lddw | ldx | ldxs | st | stx
                              # | atomic
    op: str = ""              # add, sub, ..., jeq, ..., le/be, fetch_add, ...
    reg: bool = False         # operand is a register (BPF_X) rather than imm (BPF_K)
    size: int = 0             # bytes moved by memory ops; bits for end/bswap/movsx
    fixed: tuple[tuple[str, int], ...] = ()
    zero: frozenset[str] = field(default_factory=frozenset)

    @property
    def is64(self) -> bool:
        """True for the ALU64 and JMP classes (64-bit operands), false for ALU and JMP32."""
        return (self.code & 7) in (Cls.ALU64, Cls.JMP)

    @property
    def wide(self) -> bool:
        """True for lddw, which takes two slots."""
        return self.kind == "lddw"


def _build() -> list[OpSpec]:
    specs: list[OpSpec] = []
    add = specs.append
    for cls, sfx, kind in ((Cls.ALU64, "", "alu"), (Cls.ALU, "32", "alu32")):
        for op, bits in ALU_OPS.items():
            if op == "end":
                continue
            if op == "neg":
                add(OpSpec(f"neg{sfx}", cls | bits, "neg", "neg", zero=frozenset({"src", "off", "imm"})))
                continue
            for reg in (False, True):
                code = cls | bits | (BPF_X if reg else BPF_K)
                unused = "imm" if reg else "src"
                add(OpSpec(f"{op}{sfx}", code, kind, op, reg, fixed=(("off", 0),),
                           zero=frozenset({unused})))
                if op in ("div", "mod"):
                    add(OpSpec(f"s{op}{sfx}", code, kind, f"s{op}", reg, fixed=(("off", 1),),
                               zero=frozenset({unused})))
            widths = (8, 16, 32) if cls == Cls.ALU64 else (8, 16)
            if op == "mov":
                for w in widths:
                    name = f"movsx{w}{64 if cls == Cls.ALU64 else 32}"
                    add(OpSpec(name, cls | bits | BPF_X, "movsx", "movsx", True, w,
                               fixed=(("off", w),), zero=frozenset({"imm"})))
    for w in (16, 32, 64):
        add(OpSpec(f"le{w}", Cls.ALU | ALU_OPS["end"] | BPF_K, "end", "le", size=w,
                   fixed=(("imm", w),), zero=frozenset({"src", "off"})))
        add(OpSpec(f"be{w}", Cls.ALU | ALU_OPS["end"] | BPF_X, "end", "be", size=w,
                   fixed=(("imm", w),), zero=frozenset({"src", "off"})))
        add(OpSpec(f"bswap{w}", Cls.ALU64 | ALU_OPS["end"] | BPF_K, "bswap", "bswap", size=w,
                   fixed=(("imm", w),), zero=frozenset({"src", "off"})))
    add(OpSpec("ja", Cls.JMP | JA, "ja", "ja", zero=frozenset({"dst", "src", "imm"})))
    add(OpSpec("ja32", Cls.JMP32 | JA, "ja32", "ja", zero=frozenset({"dst", "src", "off"})))
    for cls, sfx, kind in ((Cls.JMP, "", "jcc"), (Cls.JMP32, "32", "jcc32")):
        for op, bits in JMP_OPS.items():
            add(OpSpec(f"{op}{sfx}", cls | bits | BPF_K, kind, op, False, zero=frozenset({"src"})))
            add(OpSpec(f"{op}{sfx}", cls | bits | BPF_X, kind, op, True, zero=frozenset({"imm"})))
    add(OpSpec("call", Cls.JMP | CALL, "call", "call", fixed=(("src", CALL_HELPER),),
               zero=frozenset({"dst", "off"})))
    add(OpSpec("call_local", Cls.JMP | CALL, "local_call", "call", fixed=(("src", CALL_LOCAL),),
               zero=frozenset({"dst", "off"})))
    add(OpSpec("callx", Cls.JMP | CALL | BPF_X, "callx", "callx", True,
               zero=frozenset({"src", "off", "imm"})))
    add(OpSpec("exit", Cls.JMP | EXIT, "exit", "exit", zero=frozenset({"dst", "src", "off", "imm"})))
    add(OpSpec("lddw", Cls.LD | MODE_IMM | SIZE_BITS[8], "lddw", "lddw", size=8,
               zero=frozenset({"off"})))
    for size, bits in SIZE_BITS.items():
        s = SIZE_SUFFIX[size]
        add(OpSpec(f"ldx{s}", Cls.LDX | MODE_MEM | bits, "ldx", "ldx", size=size,
                   zero=frozenset({"imm"})))
        add(OpSpec(f"st{s}", Cls.ST | MODE_MEM | bits, "st", "st", size=size, zero=frozenset({"src"})))
        add(OpSpec(f"stx{s}", Cls.STX | MODE_MEM | bits, "stx", "stx", size=size,
                   zero=frozenset({"imm"})))
        if size != 8:
            add(OpSpec(f"ldxs{s}", Cls.LDX | MODE_MEMSX | bits, "ldxs", "ldxs", size=size,
                       zero=frozenset({"imm"})))
        if size in (4, 8):
            sfx = "32" if size == 4 else ""
            for op, imm in ATOMIC_OPS.items():
                add(OpSpec(f"lock_{op}{sfx}", Cls.STX | MODE_ATOMIC | bits, "atomic", op, True, size,
                           fixed=(("imm", imm),)))
    return specs


SPECS: tuple[OpSpec, ...] = tuple(_build())
SPEC_BY_NAME: dict[str, tuple[OpSpec, ...]] = {}
_BY_CODE: dict[int, list[OpSpec]] = {}
for _s in SPECS:
    SPEC_BY_NAME.setdefault(_s.name, ())
    SPEC_BY_NAME[_s.name] += (_s,)
    _BY_CODE.setdefault(_s.code, []).append(_s)
del _s


# --- instructions ------------------------------------------------------------------------------

_SLOT = struct.Struct("<BBhi")


def _s16(v: int) -> int:
    return ((v + 0x8000) & 0xFFFF) - 0x8000


def signed32(v: int) -> int:
    """The low 32 bits of ``v`` as a signed 32-bit int (the one place this is written)."""
    return ((v + 0x80000000) & 0xFFFFFFFF) - 0x80000000


@dataclass(frozen=True, slots=True)
class Insn:
    """One 8-byte instruction slot. ``off`` is a signed 16-bit, ``imm`` a signed 32-bit value."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.code <= 0xFF and 0 <= self.dst <= 15 and 0 <= self.src <= 15):
            raise EncodingError(f"instruction field out of range: {self!r}")
        if not (-0x8000 <= self.off <= 0x7FFF):
            raise EncodingError(f"offset {self.off} does not fit in 16 bits")
        if not (-0x80000000 <= self.imm <= 0x7FFFFFFF):
            raise EncodingError(f"immediate {self.imm} does not fit in 32 bits")

    def encode(self) -> bytes:
        return _SLOT.pack(self.code, (self.src << 4) | self.dst, self.off, self.imm)

    @classmethod
    def decode(cls, raw: bytes) -> "Insn":
        code, regs, off, imm = _SLOT.unpack(raw)
        return cls(code, regs & 0x0F, regs >> 4, off, imm)

    @property
    def spec(self) -> OpSpec:
        return spec_of(self)


def spec_of(insn: Insn) -> OpSpec:
    """The table entry for ``insn``; :class:`EncodingError` when no form matches."""
    candidates = _BY_CODE.get(insn.code)
    if not candidates:
        raise EncodingError(f"unknown opcode 0x{insn.code:02x}")
    for spec in candidates:
        if all(getattr(insn, f) == v for f, v in spec.fixed):
            for f in FIELDS:
                if f in spec.zero and getattr(insn, f) != 0:
                    raise EncodingError(
                        f"reserved field {f} of '{spec.name}' (opcode 0x{insn.code:02x}) is "
                        f"{getattr(insn, f)}, must be 0")
            return spec
    # Name the field that selected nothing, e.g. "off 2 is not valid for opcode 0x3f".
    f, _ = candidates[0].fixed[0] if candidates[0].fixed else ("imm", 0)
    return _raise_bad_selector(insn, f)


def _raise_bad_selector(insn: Insn, f: str) -> OpSpec:
    raise EncodingError(f"{f} {getattr(insn, f)} is not valid for opcode 0x{insn.code:02x}")


def make(name: str, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0, *,
         reg: bool | None = None) -> Insn:
    """Build an instruction from its canonical mnemonic (``reg`` picks the X/K form)."""
    forms = SPEC_BY_NAME.get(name)
    if not forms:
        raise EncodingError(f"unknown mnemonic '{name}'")
    spec = forms[0]
    if len(forms) > 1 and reg is not None:
        spec = next(s for s in forms if s.reg == reg)
    fields = {"dst": dst, "src": src, "off": off, "imm": imm}
    fields.update(dict(spec.fixed))
    return Insn(spec.code, fields["dst"], fields["src"], _s16(fields["off"]), signed32(fields["imm"]))


def encode_program(insns) -> bytes:
    return b"".join(i.encode() for i in insns)


def decode_program(raw: bytes) -> tuple[Insn, ...]:
    """Split raw little-endian bytes into slots. Only checks the length; see program.check."""
    if len(raw) % 8:
        raise EncodingError(
            f"program is {len(raw)} bytes, not a multiple of 8 (truncated instruction at pc "
            f"{len(raw) // 8})", pc=len(raw) // 8)
    return tuple(Insn.decode(raw[i:i + 8]) for i in range(0, len(raw), 8))


def lddw(dst: int, value: int, src: int = PSEUDO_IMM64) -> tuple[Insn, Insn]:
    """The two slots of ``lddw dst, value``."""
    value &= 0xFFFFFFFFFFFFFFFF
    return (Insn(Cls.LD | SIZE_BITS[8], dst, src, 0, signed32(value & 0xFFFFFFFF)),
            Insn(0, 0, 0, 0, signed32(value >> 32)))


def lddw_value(first: Insn, second: Insn) -> int:
    """The 64-bit immediate of an lddw pair (unsigned)."""
    return (first.imm & 0xFFFFFFFF) | ((second.imm & 0xFFFFFFFF) << 32)
