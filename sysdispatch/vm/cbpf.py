"""Classic BPF (``struct sock_filter``): decoding, the kernel's load-time checks, a direct
interpreter, and conversion to eBPF the way the kernel does it.

Facts come from include/uapi/linux/filter.h and net/core/filter.c (``bpf_check_classic``,
``check_load_and_stores``, ``bpf_convert_filter``); the code is our own. The classic encoding
shares its class, size and ALU/JMP operation bits with eBPF, so those values are read from
:mod:`.isa`; only what classic BPF adds (RET, MISC, the ABS/IND/LEN/MSH modes) is defined here.

Two things the kernel does are split across layers here:

* The generic checks and the interpreter/converter live in this module (the vm layer).
* seccomp rewrites ``ld [k]`` into the kernel-internal ``LDX|W|ABS`` form ("load a native
  32-bit word from the context") and ``ld len`` into ``ld #64`` (kernel/seccomp.c,
  ``seccomp_check_filter``). That rewriting is seccomp semantics (sysdispatch.seccomp.cfilter);
  this module only knows the internal form as :data:`LDX_ABS_W` (ctx word load) and runs or
  converts it like the kernel does.

Semantics match what the kernel *executes*, i.e. the converted eBPF program: A and X are 32-bit,
shifts by X use the low 5 bits (ALU32), division or modulo by X == 0 makes the program return 0.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

from ..errors import EncodingError, Location, SysdispatchError, VerifierError, VmError
from .isa import ALU_OPS, BPF_K, BPF_X, FP, JMP_OPS, MODE_IMM, MODE_MEM, SIZE_BITS, Cls, Insn, make, \
    signed32
from .program import GENERIC, Program, ProgType

# --- what classic BPF adds to the shared encoding (include/uapi/linux/filter.h) ---------------

RET = 0x06    # class: return (eBPF reuses 0x06 for JMP32)
MISC = 0x07   # class: register transfers (eBPF reuses 0x07 for ALU64)
ABS, IND, LEN, MSH = 0x20, 0x40, 0x80, 0xA0  # load modes besides IMM and MEM
RVAL_A = 0x10  # BPF_A: ret returns A
TAX, TXA = 0x00, 0x80  # MISC operations

MAXINSNS = 4096   # BPF_MAXINSNS
MEMWORDS = 16     # BPF_MEMWORDS: scratch memory M[0..15]
SKF_AD_OFF = 0xFFFFF000  # -0x1000: ancillary-data loads of socket filters start here

# The kernel-internal "load a 32-bit word of the context at offset k" (BPF_LDX|BPF_W|BPF_ABS),
# which seccomp substitutes for ``ld [k]``. Users cannot submit it (not in the whitelist).
LDX_ABS_W = Cls.LDX | SIZE_BITS[4] | ABS

# Registers of the converted program (include/linux/filter.h): A=r0, X=r7, ctx in r6, r2 scratch.
REG_A, REG_X, REG_CTX, REG_TMP, REG_ARG1 = 0, 7, 6, 2, 1

_SOCK_FILTER = struct.Struct("<HBBI")


@dataclass(frozen=True, slots=True)
class CInsn:
    """One ``struct sock_filter``: u16 code, u8 jt, u8 jf, u32 k."""

    code: int
    jt: int = 0
    jf: int = 0
    k: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.code <= 0xFFFF and 0 <= self.jt <= 0xFF and 0 <= self.jf <= 0xFF
                and 0 <= self.k <= 0xFFFFFFFF):
            raise EncodingError(f"sock_filter field out of range: {self!r}")

    def encode(self) -> bytes:
        return _SOCK_FILTER.pack(self.code, self.jt, self.jf, self.k)

    @property
    def op(self) -> "ClassicOp | None":
        return OPS.get(self.code)


@dataclass(frozen=True, slots=True)
class ClassicOp:
    """One classic instruction form.

    ``kind`` is what the interpreter and converter switch on; ``op`` is the ALU or jump
    operation name as spelled in :data:`isa.ALU_OPS` / :data:`isa.JMP_OPS`.
    """

    code: int
    name: str        # bpf_asm-style mnemonic, e.g. "ld", "jeq", "add", "ret"
    kind: str        # alu | neg | ld_abs | ld_ind | ld_len | ld_imm | ld_mem | ldx_len |
                     # ldx_imm | ldx_mem | ldx_msh | ctx_w | st | stx | tax | txa | ret | ja | jcc
    op: str = ""
    reg: bool = False  # operand is X rather than k
    size: int = 4      # bytes, for ld_abs / ld_ind


def _build_ops() -> dict[int, ClassicOp]:
    ops: dict[int, ClassicOp] = {}

    def add(o: ClassicOp) -> None:
        ops[o.code] = o

    for op in ("add", "sub", "mul", "div", "mod", "and", "or", "xor", "lsh", "rsh"):
        for reg in (False, True):
            add(ClassicOp(Cls.ALU | ALU_OPS[op] | (BPF_X if reg else BPF_K), op, "alu", op, reg))
    add(ClassicOp(Cls.ALU | ALU_OPS["neg"], "neg", "neg", "neg"))
    for size in (4, 2, 1):
        sfx = {4: "", 2: "h", 1: "b"}[size]
        add(ClassicOp(Cls.LD | SIZE_BITS[size] | ABS, f"ld{sfx}", "ld_abs", size=size))
        add(ClassicOp(Cls.LD | SIZE_BITS[size] | IND, f"ld{sfx}", "ld_ind", size=size))
    add(ClassicOp(Cls.LD | SIZE_BITS[4] | LEN, "ld", "ld_len"))
    add(ClassicOp(Cls.LD | MODE_IMM, "ld", "ld_imm"))
    add(ClassicOp(Cls.LD | MODE_MEM, "ld", "ld_mem"))
    add(ClassicOp(Cls.LDX | SIZE_BITS[4] | LEN, "ldx", "ldx_len"))
    add(ClassicOp(Cls.LDX | SIZE_BITS[1] | MSH, "ldxb", "ldx_msh", size=1))
    add(ClassicOp(Cls.LDX | MODE_IMM, "ldx", "ldx_imm"))
    add(ClassicOp(Cls.LDX | MODE_MEM, "ldx", "ldx_mem"))
    add(ClassicOp(Cls.ST, "st", "st"))
    add(ClassicOp(Cls.STX, "stx", "stx"))
    add(ClassicOp(MISC | TAX, "tax", "tax"))
    add(ClassicOp(MISC | TXA, "txa", "txa"))
    add(ClassicOp(RET | BPF_K, "ret", "ret"))
    add(ClassicOp(RET | RVAL_A, "ret", "ret", reg=True))
    add(ClassicOp(Cls.JMP | 0x00, "ja", "ja", "ja"))  # BPF_JA
    for op in ("jeq", "jgt", "jge", "jset"):
        for reg in (False, True):
            add(ClassicOp(Cls.JMP | JMP_OPS[op] | (BPF_X if reg else BPF_K), op, "jcc", op, reg))
    return ops


OPS: dict[int, ClassicOp] = _build_ops()
# The forms a user may submit (chk_code_allowed) are exactly OPS; LDX_ABS_W is kernel-internal.
CTX_W = ClassicOp(LDX_ABS_W, "ld", "ctx_w")
_RUNNABLE: dict[int, ClassicOp] = {**OPS, LDX_ABS_W: CTX_W}
JA = Cls.JMP | 0x00


def code_name(code: int) -> str:
    """A short readable name for an opcode, for error messages ("jeq x", "ldh [k]")."""
    o = _RUNNABLE.get(code)
    if o is None:
        return f"0x{code:02x}"
    if o.kind in ("alu", "jcc"):
        return f"{o.name} {'x' if o.reg else 'k'}"
    return {"ld_abs": f"{o.name} [k]", "ld_ind": f"{o.name} [x+k]", "ld_len": "ld len",
            "ld_imm": "ld #k", "ld_mem": "ld M[k]", "ldx_len": "ldx len", "ldx_imm": "ldx #k",
            "ldx_mem": "ldx M[k]", "ldx_msh": "ldxb 4*([k]&0xf)", "ctx_w": "ld ctx[k]",
            "ret": "ret a" if o.reg else "ret #k"}.get(o.kind, o.name)


# --- decoding --------------------------------------------------------------------------------


def decode(raw: bytes, *, filename: str | None = None) -> tuple[CInsn, ...]:
    """Split raw bytes (as ``seccomp_export_bpf`` writes them) into instructions.

    Only the length is checked here; :func:`check` does what the kernel checks at load time.
    """
    loc = Location(filename) if filename else None
    if len(raw) % 8:
        raise EncodingError(
            f"{len(raw)} bytes is not a whole number of 8-byte sock_filter instructions "
            f"(instruction {len(raw) // 8} is truncated)", loc=loc, pc=len(raw) // 8)
    return tuple(CInsn(*_SOCK_FILTER.unpack_from(raw, i)) for i in range(0, len(raw), 8))


def encode(insns: Sequence[CInsn]) -> bytes:
    return b"".join(i.encode() for i in insns)


# --- load-time checks (bpf_check_classic + check_load_and_stores) ------------------------------


def check(insns: Sequence[CInsn]) -> None:
    """Refuse what the kernel's ``bpf_check_classic`` refuses, naming the pc.

    Length 1..4096; every opcode in the whitelist; division or modulo by constant 0 and shifts
    by a constant >= 32 refused; M[k] with k < 16; jumps inside the program (classic jumps only
    go forward: their offsets are unsigned); the last instruction a return; and no scratch cell
    read on any path before it was written. Socket ancillary loads (``ld [SKF_AD_OFF + n]``)
    are refused as unsupported: nothing here runs socket filters on packets.
    """
    n = len(insns)
    if n == 0:
        raise VerifierError("filter has no instructions")
    if n > MAXINSNS:
        raise VerifierError(f"filter has {n} instructions, more than the kernel's limit of "
                            f"{MAXINSNS}", pc=MAXINSNS)
    for pc, ins in enumerate(insns):
        o = OPS.get(ins.code)
        if o is None:
            raise VerifierError(f"opcode 0x{ins.code:02x} is not a classic BPF instruction",
                                pc=pc)
        if o.kind == "alu" and not o.reg:
            if o.op in ("div", "mod") and ins.k == 0:
                raise VerifierError(f"{o.op} by constant 0", pc=pc)
            if o.op in ("lsh", "rsh") and ins.k >= 32:
                raise VerifierError(f"{o.op} by constant {ins.k} (must be < 32)", pc=pc)
        elif o.kind in ("ld_mem", "ldx_mem", "st", "stx") and ins.k >= MEMWORDS:
            raise VerifierError(f"scratch memory M[{ins.k}] out of range (M[0]..M[15])", pc=pc)
        elif o.kind == "ja" and ins.k >= n - pc - 1:
            raise VerifierError(_bad_ja(pc, ins.k, n), pc=pc)
        elif o.kind == "jcc":
            for name, off in (("jt", ins.jt), ("jf", ins.jf)):
                if pc + off + 1 >= n:
                    raise VerifierError(
                        f"{name} {off} jumps to {pc + off + 1}, past the end ({n} instructions)",
                        pc=pc)
        elif o.kind == "ld_abs" and ins.k >= SKF_AD_OFF:
            raise VerifierError(
                f"ancillary load [SKF_AD_OFF+{ins.k - SKF_AD_OFF}] is not supported", pc=pc)
    last = OPS[insns[-1].code]
    if last.kind != "ret":
        raise VerifierError(f"last instruction must be a return, is '{code_name(last.code)}'",
                            pc=n - 1)
    _check_scratch_reads(insns)


def _bad_ja(pc: int, k: int, n: int) -> str:
    if k >= 0x80000000:
        return (f"backward jump (offset {k - (1 << 32)}): classic BPF jumps only forward")
    return f"jump to {pc + k + 1} is out of range ({n} instructions)"


def _check_scratch_reads(insns: Sequence[CInsn]) -> None:
    """check_load_and_stores: per pc, the cells written on *every* path reaching it.

    Jumps are forward only, so one pass in pc order sees every edge into a pc before the pc.
    Like the kernel, straight-line flow after a jump or return carries the pessimistic "all
    written" state, and the per-target masks narrow it.
    """
    n = len(insns)
    masks = [0xFFFF] * n
    valid = 0
    for pc, ins in enumerate(insns):
        valid &= masks[pc]
        kind = OPS[ins.code].kind
        if kind in ("st", "stx"):
            valid |= 1 << ins.k
        elif kind in ("ld_mem", "ldx_mem"):
            if not valid & (1 << ins.k):
                raise VerifierError(f"M[{ins.k}] may be read before it is written", pc=pc)
        elif kind == "ja":
            masks[pc + 1 + ins.k] &= valid
            valid = 0xFFFF
        elif kind == "jcc":
            masks[pc + 1 + ins.jt] &= valid
            masks[pc + 1 + ins.jf] &= valid
            valid = 0xFFFF


# --- the direct interpreter --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClassicRun:
    """The result of one run: the return value, the pcs executed in order, and the context
    offsets loaded (what the filter looked at)."""

    ret: int
    path: tuple[int, ...]
    loads: frozenset[int]

    @property
    def return_pc(self) -> int:
        return self.path[-1]


_M32 = 0xFFFFFFFF

# Step kinds of a prepared program, numbered so the hot loop compares small ints; the most
# frequent in seccomp filters (context loads, jumps, returns) come first.
(_CTX_W, _JCC, _RET_K, _RET_A, _ALU_K, _ALU_X, _JA, _NEG, _LD_IMM, _LDX_IMM, _LD_MEM, _LDX_MEM,
 _ST, _STX, _TAX, _TXA, _LD_LEN, _LDX_LEN, _LD_PKT, _LD_IND, _LDX_MSH) = range(21)
_JEQ, _JGT, _JGE, _JSET = range(4)
_KIND_CODES = {"ctx_w": _CTX_W, "ja": _JA, "neg": _NEG, "ld_imm": _LD_IMM, "ldx_imm": _LDX_IMM,
               "ld_mem": _LD_MEM, "ldx_mem": _LDX_MEM, "st": _ST, "stx": _STX, "tax": _TAX,
               "txa": _TXA, "ld_len": _LD_LEN, "ldx_len": _LDX_LEN, "ld_abs": _LD_PKT,
               "ld_ind": _LD_IND, "ldx_msh": _LDX_MSH}
_JMP_CODES = {"jeq": _JEQ, "jgt": _JGT, "jge": _JGE, "jset": _JSET}


@dataclass(frozen=True, eq=False)
class Prepared:
    """A program decoded once for :func:`run`: one tuple (kind, op, operand is X, k, jt, jf,
    size) per instruction."""

    insns: tuple[CInsn, ...]
    steps: tuple[tuple[int, object, bool, int, int, int, int], ...]

    def __len__(self) -> int:
        return len(self.steps)


def prepare(insns: Sequence[CInsn]) -> Prepared:
    """Decode ``insns`` for repeated runs (VmError for an opcode that cannot run)."""
    steps = []
    for pc, ins in enumerate(insns):
        o = _RUNNABLE.get(ins.code)
        if o is None:
            raise VmError(f"opcode 0x{ins.code:02x} cannot run", pc=pc)
        if o.kind == "jcc":
            kind, op = _JCC, _JMP_CODES[o.op]
        elif o.kind == "alu":
            kind, op = (_ALU_X if o.reg else _ALU_K), o.op
        elif o.kind == "ret":
            kind, op = (_RET_A if o.reg else _RET_K), None
        else:
            kind, op = _KIND_CODES[o.kind], None
        steps.append((kind, op, o.reg, ins.k, ins.jt, ins.jf, o.size))
    return Prepared(tuple(insns), tuple(steps))


def run(program: Sequence[CInsn] | Prepared, ctx: bytes, *,
        max_steps: int = MAXINSNS) -> ClassicRun:
    """Run a checked program on ``ctx`` (the packet, or for seccomp the 64-byte seccomp_data).

    ``ld [k]`` (ld_abs) and friends read big-endian packet bytes, and a load past the end makes
    the program return 0, as for socket filters; the internal ctx word load reads native
    (little-endian) words. Raises :class:`VmError` only for programs that did not pass
    :func:`check` (e.g. reading past the context with the internal load). Pass a
    :class:`Prepared` program to skip decoding on every run.
    """
    steps = (program if isinstance(program, Prepared) else prepare(program)).steps
    a = x = 0
    mem = [0] * MEMWORDS
    path: list[int] = []
    append = path.append
    loads: set[int] = set()
    n = len(steps)
    pc = 0
    ctx_len = len(ctx)
    while True:
        if pc >= n or len(path) >= max_steps:
            raise VmError("fell off the end of the filter" if pc >= n else
                          f"more than {max_steps} steps", pc=pc)
        append(pc)
        kind, op, reg, k, jt, jf, size = steps[pc]
        if kind == _CTX_W:
            if k + 4 > ctx_len:
                raise VmError(f"load of 4 bytes at offset {k} past the {ctx_len}-byte context",
                              pc=pc)
            a = int.from_bytes(ctx[k:k + 4], "little")
            loads.add(k)
        elif kind == _JCC:
            v = x if reg else k
            if op == _JEQ:
                taken = a == v
            elif op == _JGT:
                taken = a > v
            elif op == _JGE:
                taken = a >= v
            else:
                taken = a & v
            pc += 1 + (jt if taken else jf)
            continue
        elif kind == _RET_K:
            return ClassicRun(k, tuple(path), frozenset(loads))
        elif kind == _RET_A:
            return ClassicRun(a, tuple(path), frozenset(loads))
        elif kind == _ALU_K or kind == _ALU_X:
            v = x if kind == _ALU_X else k
            if v == 0 and (op == "div" or op == "mod"):
                return ClassicRun(0, tuple(path), frozenset(loads))
            a = _alu(op, a, v)
        elif kind == _JA:
            pc += 1 + k
            continue
        elif kind == _NEG:
            a = -a & _M32
        elif kind == _LD_IMM:
            a = k
        elif kind == _LDX_IMM:
            x = k
        elif kind == _LD_MEM:
            a = mem[k]
        elif kind == _LDX_MEM:
            x = mem[k]
        elif kind == _ST:
            mem[k] = a
        elif kind == _STX:
            mem[k] = x
        elif kind == _TAX:
            x = a
        elif kind == _TXA:
            a = x
        elif kind == _LD_LEN:
            a = ctx_len
        elif kind == _LDX_LEN:
            x = ctx_len
        else:  # packet loads: _LD_PKT, _LD_IND, _LDX_MSH
            off = x + k if kind == _LD_IND else k
            off = ((off + 0x80000000) & _M32) - 0x80000000  # the helpers take an int offset
            if off < 0 or off + size > ctx_len:
                return ClassicRun(0, tuple(path), frozenset(loads))
            loads.add(off)
            val = int.from_bytes(ctx[off:off + size], "big")
            if kind == _LDX_MSH:
                x = (val & 0xF) << 2
            else:
                a = val
        pc += 1


def _alu(op: str, a: int, v: int) -> int:
    if op == "add":
        return (a + v) & _M32
    if op == "sub":
        return (a - v) & _M32
    if op == "mul":
        return (a * v) & _M32
    if op == "div":
        return a // v
    if op == "mod":
        return a % v
    if op == "and":
        return a & v
    if op == "or":
        return a | v
    if op == "xor":
        return a ^ v
    if op == "lsh":
        return (a << (v & 31)) & _M32  # ALU32 shifts use the low 5 bits of the amount
    if op == "rsh":
        return a >> (v & 31)
    raise ValueError(op)  # pragma: no cover


# --- conversion to eBPF (bpf_convert_filter) --------------------------------------------------


@dataclass(frozen=True)
class Converted:
    """A converted program and where each classic instruction starts in it."""

    program: Program
    addrs: tuple[int, ...]  # classic pc -> eBPF pc of its first instruction

    def classic_pc(self, ebpf_pc: int) -> int:
        """The classic instruction an eBPF pc belongs to (-1 for the prologue)."""
        lo, hi = -1, len(self.addrs) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.addrs[mid] <= ebpf_pc:
                lo = mid
            else:
                hi = mid - 1
        return lo


PROLOGUE_LEN = 3


def convert(insns: Sequence[CInsn], *, prog_type: ProgType = GENERIC, name: str = "classic",
            ) -> Converted:
    """Convert a checked classic program to an eBPF :class:`Program`, as the kernel does.

    Prologue ``w0 ^= w0; w7 ^= w7; r6 = r1``; A lives in r0, X in r7, M[k] at ``r10 - 4k - 4``.
    Division/modulo by X gets the kernel's guard (X == 0: return 0); ``ret #k`` becomes
    ``w0 = k; exit``; a conditional jump whose false branch is the next instruction maps to
    one jump, one whose true branch is next is inverted where eBPF has the inverse (jeq->jne,
    jgt->jle, jge->jlt), otherwise it becomes a jump plus ``ja``; a constant with the top bit
    set is first moved into w2 (eBPF immediates are sign-extended). Fields the kernel leaves as
    don't-care (src for constant forms, imm for register forms) are zero here so the result
    passes :meth:`Program.load`.

    Socket-data loads (``ld [k]`` on packets, ``ld [x+k]``, ``ldxb 4*([k]&0xf)``, ``len``)
    need the kernel's skb helpers and raise :class:`EncodingError`; seccomp filters contain
    none after seccomp's rewriting.
    """
    pieces: list[list[tuple[Insn, int | None]]] = []
    for pc, ins in enumerate(insns):
        try:
            pieces.append(_convert_one(pc, ins))
        except SysdispatchError as exc:
            raise exc.at(pc=pc)
    addrs: list[int] = []
    at = PROLOGUE_LEN
    for piece in pieces:
        addrs.append(at)
        at += len(piece)
    out: list[Insn] = [make("xor32", REG_A, REG_A, reg=True), make("xor32", REG_X, REG_X, reg=True),
                       make("mov", REG_CTX, REG_ARG1, reg=True)]
    for pc, piece in enumerate(pieces):
        for j, (insn, target) in enumerate(piece):
            if target is not None:
                here = addrs[pc] + j
                off = addrs[target] - here - 1
                if not -0x8000 <= off <= 0x7FFF:
                    raise EncodingError(f"converted jump offset {off} does not fit 16 bits", pc=pc)
                insn = Insn(insn.code, insn.dst, insn.src, off, insn.imm)
            out.append(insn)
    return Converted(Program.load(out, prog_type=prog_type, name=name), tuple(addrs))


_INVERSE = {"jeq": "jne", "jgt": "jle", "jge": "jlt"}




def _stack_off(k: int) -> int:
    return -(4 * k + 4)


def _convert_one(pc: int, ins: CInsn) -> list[tuple[Insn, int | None]]:
    """The eBPF instructions for one classic instruction; jumps carry their classic target."""
    o = _RUNNABLE.get(ins.code)
    if o is None:
        raise EncodingError(f"opcode 0x{ins.code:02x} is not a classic BPF instruction")
    k, kind = ins.k, o.kind
    if kind == "alu":
        out: list[tuple[Insn, int | None]] = []
        if o.reg and o.op in ("div", "mod"):
            out += [(make("mov32", REG_X, REG_X, reg=True), None),
                    (make("jne", REG_X, 0, 2, 0, reg=False), None),
                    (make("xor32", REG_A, REG_A, reg=True), None),
                    (make("exit"), None)]
        if o.reg:
            out.append((make(f"{o.op}32", REG_A, REG_X, reg=True), None))
        else:
            out.append((make(f"{o.op}32", REG_A, 0, 0, signed32(k), reg=False), None))
        return out
    if kind == "neg":
        return [(make("neg32", REG_A), None)]
    if kind == "ctx_w":
        if k > 0x7FFF:
            raise EncodingError(f"context offset {k} does not fit a 16-bit load offset")
        return [(make("ldxw", REG_A, REG_CTX, k), None)]
    if kind in ("ld_imm", "ldx_imm"):
        dst = REG_A if kind == "ld_imm" else REG_X
        return [(make("mov32", dst, 0, 0, signed32(k), reg=False), None)]
    if kind in ("ld_mem", "ldx_mem"):
        dst = REG_A if kind == "ld_mem" else REG_X
        return [(make("ldxw", dst, FP, _stack_off(k)), None)]
    if kind in ("st", "stx"):
        src = REG_A if kind == "st" else REG_X
        return [(make("stxw", FP, src, _stack_off(k)), None)]
    if kind == "tax":
        return [(make("mov", REG_X, REG_A, reg=True), None)]
    if kind == "txa":
        return [(make("mov", REG_A, REG_X, reg=True), None)]
    if kind == "ret":
        if o.reg:
            return [(make("exit"), None)]
        return [(make("mov32", REG_A, 0, 0, signed32(k), reg=False), None), (make("exit"), None)]
    if kind == "ja":
        return [(make("ja"), pc + 1 + k)]
    if kind == "jcc":
        return _convert_jump(pc, ins, o)
    raise EncodingError(f"'{code_name(ins.code)}' reads socket data and cannot be converted "
                        f"outside the kernel")


def _convert_jump(pc: int, ins: CInsn, o: ClassicOp) -> list[tuple[Insn, int | None]]:
    out: list[tuple[Insn, int | None]] = []
    if o.reg:
        src, imm, reg = REG_X, 0, True
    elif ins.k & 0x80000000:
        # eBPF would sign-extend the immediate to 64 bits; compare against a zero-extended w2.
        out.append((make("mov32", REG_TMP, 0, 0, signed32(ins.k), reg=False), None))
        src, imm, reg = REG_TMP, 0, True
    else:
        src, imm, reg = 0, ins.k, False
    t_true, t_false = pc + 1 + ins.jt, pc + 1 + ins.jf
    if ins.jf == 0:
        out.append((make(o.op, REG_A, src, 0, imm, reg=reg), t_true))
    elif ins.jt == 0 and o.op in _INVERSE:
        out.append((make(_INVERSE[o.op], REG_A, src, 0, imm, reg=reg), t_false))
    else:
        out.append((make(o.op, REG_A, src, 0, imm, reg=reg), t_true))
        out.append((make("ja"), t_false))
    return out
