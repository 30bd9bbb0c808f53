"""The interpreter: runs a loaded :class:`~sysdispatch.vm.program.Program` on the BPF machine.

A program is compiled once into a list with one small closure per instruction slot (kept on the
program, see :func:`compile_program`): ``code[pc](regs)`` does the instruction's work on the
register list and returns the next pc, so the hot loop is ``pc = code[pc](regs)``. The closures
come from factories generated at import from the expression templates of
:mod:`sysdispatch.vm.semantics`, the one place the instruction semantics are written.

``regs`` is a plain list: r0..r10 as unsigned ints, then the run's
:class:`~sysdispatch.vm.memory.Memory` (slot 11) and helper :class:`~sysdispatch.vm.helpers.Env`
(slot 12), so memory and helper instructions find them without a second argument.

``exit``, a bpf-to-bpf call and a taken tail call return a negative pc; the loop handles them
with explicit frames, never by recursing, so a 33-deep tail-call chain or 8 nested calls use no
more Python stack than one program. Faults are exceptions and name the pc they happened at.

* bpf-to-bpf calls (``call local``): r1-r5 pass through, r6-r9 and r10 are saved and restored,
  the callee gets its own 512-byte stack, at most :data:`~sysdispatch.vm.isa.MAX_CALL_FRAMES`
  frames.
* ``callx`` calls the helper whose id is in its register, as the conformance suite (and uBPF)
  expect; the kernel has no callx.
* tail calls follow kernel/bpf/core.c (see :func:`sysdispatch.vm.helpers.tail_call_target`):
  the callee replaces the running program in the current frame and keeps the registers and the
  frame's stack; a call that falls through leaves r0 untouched.
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple

from ..errors import EncodingError, SysdispatchError, VmError
from . import semantics as sem
from .helpers import HELPERS, Env, Helper, Host, TailCall, Unwind, tail_call_target
from .isa import FP, MAX_CALL_FRAMES, NREGS, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, lddw_value
from .maps import ArrayMap, Map
from .memory import CTX_BASE, PACK, SIZE_MASK, UNPACK, Memory
from .program import TAIL_CALL, Program, jump_target

DEFAULT_MAX_STEPS = 1_000_000
M64 = sem.M64
MEM_SLOT, ENV_SLOT = NREGS, NREGS + 1  # where the run's Memory and Env sit in the register list


class RunResult(NamedTuple):
    """What a run produced.

    ``chain`` is the entry program followed by each program a tail call entered, in order.
    ``tail_calls`` is the kernel's tail-call counter at the end: every ``tail_call`` whose index
    was in range and whose count was not used up — an empty slot counts, as in the kernel —
    so ``len(chain) - 1 <= tail_calls <= 33``.
    """

    r0: int
    steps: int
    chain: tuple[Program, ...]
    tail_calls: int

    def __repr__(self) -> str:
        names = " -> ".join(p.name for p in self.chain)
        return (f"RunResult(r0=0x{self.r0:x}, steps={self.steps}, chain=[{names}], "
                f"tail_calls={self.tail_calls})")


# --- control signals ----------------------------------------------------------------------------
# Instructions that leave the straight line return a negative "pc" the loop dispatches on; what
# they need (the call target) waits in the run's Env. Cheaper than exceptions: one compare per
# instruction against ~400 ns for a raise.

EXIT, CALL, TAIL = -1, -2, -3


class _RunEnv(Env):
    """The helpers' Env plus where control instructions leave their operand for the loop."""

    __slots__ = ("call", "next")

    def __init__(self, mem: Memory, host: Host) -> None:
        super().__init__(mem, host)
        self.call: tuple[int, int] = (0, 0)   # (target pc, return pc) of a local call
        self.next: Program | None = None      # the program a tail call enters


# --- closure factories, generated once from the semantics tables ---------------------------------

_FACTORY_NS: dict[str, Any] = dict(sem.ENV, UNPACK=UNPACK, PACK=PACK, VmError=VmError)


def _factory(name: str, params: str, body: str) -> Callable:
    """Compile ``def name(params): def f(r): <body>; return f`` in the semantics namespace."""
    src = f"def {name}({params}):\n    def f(r):\n"
    src += "".join(f"        {line}\n" for line in body.strip("\n").splitlines())
    src += "    return f\n"
    ns = dict(_FACTORY_NS)
    exec(compile(src, f"<interp {name}>", "exec"), ns)  # noqa: S102 - our own templates
    return ns[name]


def _uses(expr: str, name: str) -> bool:
    return re.search(rf"\b{name}\b", expr) is not None


def _alu_body(expr: str, bits: int, reg: bool) -> str:
    mask = "" if bits == 64 else f" & {sem.M32}"
    lines = []
    if _uses(expr, "a"):
        lines.append(f"a = r[dst]{mask}")
    if reg:
        lines.append(f"b = r[src]{mask}")
    lines += [f"r[dst] = {expr}", "return nxt"]
    return "\n".join(lines)


_ALU: dict[tuple[str, int, bool], Callable] = {}
for _op in sem.ALU:
    for _bits in (64, 32):
        for _reg in (False, True):
            _ALU[(_op, _bits, _reg)] = _factory(
                f"alu{_bits}_{_op}_{'x' if _reg else 'k'}", "dst, src, b, nxt",
                _alu_body(sem.alu_expr(_op, _bits), _bits, _reg))
_NEG = {bits: _factory(f"neg{bits}", "dst, src, b, nxt", _alu_body(sem.neg_expr(bits), bits, False))
        for bits in (64, 32)}

_JCC: dict[tuple[str, int, bool], Callable] = {}
for _op in sem.JCC:
    for _bits in (64, 32):
        for _reg in (False, True):
            _mask = "" if _bits == 64 else f" & {sem.M32}"
            _JCC[(_op, _bits, _reg)] = _factory(
                f"jcc{_bits}_{_op}_{'x' if _reg else 'k'}", "dst, src, b, tgt, nxt",
                f"a = r[dst]{_mask}\n" + (f"b = r[src]{_mask}\n" if _reg else "")
                + f"return tgt if {sem.jcc_expr(_op, _bits)} else nxt")

# Loads and stores: try the region hit last (memory.last) inline, else the slow path that
# finds the region (or raises the fault).
_LDX = {}
for _size in (1, 2, 4, 8):
    for _signed in (False, True):
        if _signed and _size == 8:
            continue
        _conv = sem.ldxs_expr(_size) if _signed else "v"
        _LDX[(_size, _signed)] = _factory(
            f"ldx{'s' if _signed else ''}{_size}", "dst, src, off, nxt",
            f"""
addr = r[src] + off
m = r[{MEM_SLOT}]
g = m.last
o = addr - g.base
if 0 <= o and o + {_size} <= g.size:
    v = UNPACK[{_size}](g.buf, o)[0]
else:
    v = m.load(addr, {_size})
r[dst] = {_conv}
return nxt""")

_STORE_BODY = """
addr = r[dst] + off
m = r[{mem}]
g = m.last
o = addr - g.base
{value}
if 0 <= o and o + {size} <= g.size and g.writable:
    PACK[{size}](g.buf, o, v)
else:
    m.store(addr, {size}, v)
return nxt"""
_ST = {size: _factory(f"st{size}", "dst, src, off, v, nxt",
                      _STORE_BODY.format(mem=MEM_SLOT, size=size, value="pass"))
       for size in (1, 2, 4, 8)}
_STX = {size: _factory(f"stx{size}", "dst, src, off, v, nxt",
                       _STORE_BODY.format(mem=MEM_SLOT, size=size,
                                          value=f"v = r[src] & {SIZE_MASK[size]}"))
        for size in (1, 2, 4, 8)}

_ATOMIC = {}
for _op in sem.ATOMIC:
    for _size in (4, 8):
        _expr, _into = sem.atomic_expr(_op, 8 * _size)
        _mask = SIZE_MASK[_size]
        _pre = f"b = r[src] & {_mask}\n" + (f"c = r[0] & {_mask}\n" if _uses(_expr, "c") else "")
        _post = {None: "", "src": "r[src] = old\n", "r0": "r[0] = old\n"}[_into]
        _ATOMIC[(_op, _size)] = _factory(
            f"atomic{_size}_{_op}", "dst, src, off, nxt",
            _pre + f"old = r[{MEM_SLOT}].atomic(r[dst] + off, {_size}, lambda m: {_expr})\n"
            + _post + "return nxt")

del _op, _bits, _reg, _size, _signed, _conv, _mask, _expr, _into, _pre, _post

_MOVSX = {(frm, to): _factory(f"movsx{frm}_{to}", "dst, src, b, nxt",
                              f"b = r[src]\nr[dst] = {sem.movsx_expr(frm, to)}\nreturn nxt")
          for frm, to in ((8, 64), (16, 64), (32, 64), (8, 32), (16, 32))}
_END = {(op, bits): _factory(f"end_{op}{bits}", "dst, src, b, nxt",
                             f"a = r[dst]\nr[dst] = {sem.end_expr(op, bits)}\nreturn nxt")
        for op in ("le", "be") for bits in (16, 32, 64)}


def _mk_const(dst: int, value: int, nxt: int) -> Callable:
    def f(r):
        r[dst] = value
        return nxt
    return f


def _mk_ja(tgt: int) -> Callable:
    def f(r):
        return tgt
    return f


def _mk_exit() -> Callable:
    def f(r):
        return EXIT
    return f


def _mk_local_call(target: int, ret: int) -> Callable:
    where = (target, ret)

    def f(r):
        r[ENV_SLOT].call = where
        return CALL
    return f


def _mk_tail_call(nxt: int) -> Callable:
    # The kernel's checks live in helpers.tail_call_target; the interpreter only switches code.
    def f(r):
        env = r[ENV_SLOT]
        program = tail_call_target(env, r[2], r[3])
        if program is None:
            return nxt  # falls through; r0 untouched, as in the kernel's interpreter
        env.next = program
        return TAIL
    return f


def _mk_helper(helper: Helper, nxt: int) -> Callable:
    impl = helper.impl

    def f(r):
        v = impl(r[ENV_SLOT], r[1], r[2], r[3], r[4], r[5])
        if v is not None:
            r[0] = v & M64
        return nxt
    return f


def _mk_missing_helper(hid: int) -> Callable:
    def f(r):
        raise VmError(f"helper {hid} is not available to this run")
    return f


def _mk_callx(dst: int, table: dict[int, Helper], nxt: int) -> Callable:
    def f(r):
        helper = table.get(r[dst])
        if helper is None:
            raise VmError(f"callx: r{dst} = {r[dst]} is not a helper id")
        v = helper.impl(r[ENV_SLOT], r[1], r[2], r[3], r[4], r[5])
        if v is not None:
            r[0] = v & M64
        return nxt
    return f


def _mk_fault(message: str) -> Callable:
    def f(r):
        raise VmError(message)
    return f


# --- compiling a program ---------------------------------------------------------------------------

# Kinds whose dst field is a register the instruction writes.
_WRITES_DST = frozenset({"alu", "alu32", "neg", "movsx", "end", "bswap", "lddw", "ldx", "ldxs"})
# Kinds whose src field is a selector, not a register.
_SRC_NOT_REG = frozenset({"call", "local_call", "lddw"})


def _check_regs(insn, spec) -> None:
    if "dst" not in spec.zero and insn.dst > FP:
        raise EncodingError(f"invalid register r{insn.dst} in '{spec.name}'")
    if "src" not in spec.zero and spec.kind not in _SRC_NOT_REG and insn.src > FP:
        raise EncodingError(f"invalid register r{insn.src} in '{spec.name}'")


def writes_fp(insn, spec) -> bool:
    """Whether the instruction writes r10. Such an instruction faults when it runs, not when the
    program is compiled: the verifier (like the kernel's) accepts one on a path no run can
    take, and the program must then run."""
    return ((spec.kind in _WRITES_DST and insn.dst == FP)
            or (spec.kind == "atomic" and insn.src == FP and sem.ATOMIC[spec.op][1] == "src"))


def writes_fp_message(spec) -> str:
    return f"'{spec.name}' writes r10, the read-only frame pointer"


def _lddw_value(program: Program, pc: int) -> int:
    first, second = program.insns[pc], program.insns[pc + 1]
    if first.src not in (PSEUDO_MAP_FD, PSEUDO_MAP_VALUE):
        return lddw_value(first, second)
    m = program.maps[first.imm]
    if not isinstance(m, Map):
        raise EncodingError(f"lddw refers to map {first.imm}, which is a {type(m).__name__}, "
                            "not a vm map")
    if first.src == PSEUDO_MAP_FD:
        return m.addr
    # BPF_PSEUDO_MAP_VALUE: the address of the value of a one-element array, plus an offset
    # (kernel: array_map_direct_value_addr).
    off = second.imm & 0xFFFF_FFFF
    if not isinstance(m, ArrayMap) or m.max_entries != 1:
        raise EncodingError(f"lddw map value of map '{m.name}': only a one-element array has a "
                            "direct value address")
    if off >= m.value_size:
        raise EncodingError(f"lddw map value offset {off} is beyond the {m.value_size}-byte "
                            f"value of map '{m.name}'")
    return m.region_at(m.addr + m.stride).base + off


def _compile_one(program: Program, pc: int, table: dict[int, Helper]) -> Callable:
    insn, spec = program.insns[pc], program.specs[pc]
    kind, op = spec.kind, spec.op
    dst, src, off = insn.dst, insn.src, insn.off
    nxt = pc + 1
    _check_regs(insn, spec)
    if writes_fp(insn, spec):
        return _mk_fault(writes_fp_message(spec))
    if kind in ("alu", "alu32"):
        bits = sem.width(spec)
        return _ALU[(op, bits, spec.reg)](dst, src, sem.operand(insn.imm, bits), nxt)
    if kind in ("jcc", "jcc32"):
        bits = sem.width(spec)
        tgt = jump_target(pc, insn, spec)
        return _JCC[(op, bits, spec.reg)](dst, src, sem.operand(insn.imm, bits), tgt, nxt)
    if kind == "ldx" or kind == "ldxs":
        return _LDX[(spec.size, kind == "ldxs")](dst, src, off, nxt)
    if kind == "st":
        return _ST[spec.size](dst, src, off, insn.imm & SIZE_MASK[spec.size], nxt)
    if kind == "stx":
        return _STX[spec.size](dst, src, off, 0, nxt)
    if kind in ("ja", "ja32"):
        return _mk_ja(jump_target(pc, insn, spec))
    if kind == "lddw":
        return _mk_const(dst, _lddw_value(program, pc), pc + 2)
    if kind == "neg":
        return _NEG[sem.width(spec)](dst, src, 0, nxt)
    if kind == "movsx":
        return _MOVSX[(spec.size, sem.width(spec))](dst, src, 0, nxt)
    if kind in ("end", "bswap"):
        return _END[("le" if op == "le" else "be", spec.size)](dst, src, 0, nxt)
    if kind == "atomic":
        return _ATOMIC[(op, spec.size)](dst, src, off, nxt)
    if kind == "call":
        helper = table.get(insn.imm)
        if helper is not None and helper.impl is HELPERS[TAIL_CALL].impl:
            return _mk_tail_call(nxt)
        return _mk_helper(helper, nxt) if helper is not None else _mk_missing_helper(insn.imm)
    if kind == "local_call":
        return _mk_local_call(jump_target(pc, insn, spec), nxt)
    if kind == "callx":
        return _mk_callx(dst, table, nxt)
    if kind == "exit":
        return _mk_exit()
    raise EncodingError(f"no interpreter support for '{spec.name}'")  # a new OpSpec kind


# The compiled code is kept on the program itself (its __dict__, outside the dataclass fields),
# with the helper table it was compiled for: it lives and dies with the program, and finding it
# is one dict lookup.
_CACHE_ATTR = "_interp_code"


def compile_program(program: Program, helpers: dict[int, Helper] | None = None) -> list[Callable]:
    """The closures of ``program`` (cached): ``code[pc](regs) -> next pc``.

    Raises :class:`EncodingError` naming the pc for what the loader lets through but no engine
    can run: registers above r10, writes to r10, map references that are not vm maps.
    """
    table = HELPERS if helpers is None else helpers
    cached = program.__dict__.get(_CACHE_ATTR)
    if cached is not None and cached[0] is table:
        return cached[1]
    n = len(program)
    code: list[Callable] = []
    for pc in range(n):
        if program.specs[pc] is None:  # second slot of lddw: unreachable, the loader checked
            code.append(_mk_fault("execution reached the second slot of lddw"))
            continue
        try:
            code.append(_compile_one(program, pc, table))
        except SysdispatchError as exc:
            raise program.error(exc, pc) from None
    code.append(_mk_fault("execution ran past the last instruction (no exit)"))
    program.__dict__[_CACHE_ATTR] = (table, code)
    return code


# --- running -------------------------------------------------------------------------------------

def _as_bytes(data: Any) -> bytes | bytearray:
    if isinstance(data, (bytes, bytearray)):
        return data
    if isinstance(data, memoryview):
        return bytes(data)
    pack = getattr(data, "pack", None)  # e.g. a struct-like record (seccomp's SeccompData)
    if callable(pack):
        return pack()
    raise VmError(f"ctx must be bytes-like, got {type(data).__name__}")


def _setup(program: Program, ctx: Any, mem: Any, memory: Memory, r: list) -> None:
    ptype = program.prog_type
    if ptype.ctx_size == 0:
        # generic: caller-given memory, r1 = its address, r2 = its length
        if ctx is not None and mem is not None:
            raise VmError(f"a {ptype} program takes one memory area: give ctx or mem, not both")
        data = ctx if ctx is not None else mem
        if data is None:
            return  # r1 = r2 = 0: no memory
        data = _as_bytes(data)
        region = memory.map(CTX_BASE, data, writable=ptype.ctx_writable, name=ptype.ctx_region)
        r[1], r[2] = region.base, region.size
        return
    if mem is not None:
        raise VmError(f"a {ptype} program takes a {ptype.ctx_size}-byte ctx, not caller memory")
    data = bytes(ptype.ctx_size) if ctx is None else _as_bytes(ctx)
    if len(data) != ptype.ctx_size:
        raise VmError(f"a {ptype} ctx is {ptype.ctx_size} bytes, got {len(data)}")
    if not ptype.ctx_writable:
        data = bytes(data)
    region = memory.map(CTX_BASE, data, writable=ptype.ctx_writable, name=ptype.ctx_region)
    r[1] = region.base


def run(program: Program, ctx: Any = None, *, host: Host | None = None, mem: Any = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        helpers: dict[int, Helper] | None = None) -> RunResult:
    """Run ``program`` to its exit and return r0 and what happened on the way.

    For the generic type, ``ctx`` or ``mem`` is the caller's memory (a bytearray is used in place,
    so the caller sees the program's stores): r1 = its address, r2 = its length. For a type
    with a fixed ctx (seccomp: 64 read-only bytes) ``ctx`` holds it (bytes, or a record with
    ``pack()``) and r1 points to it. ``helpers`` replaces the helper table (the conformance
    suite's helper 5). Faults and an exhausted ``max_steps`` budget raise :class:`VmError` naming
    the pc and, when known, the source location.
    """
    table = HELPERS if helpers is None else helpers
    memory = Memory()
    env = _RunEnv(memory, host if host is not None else Host())
    r: list = [0] * NREGS + [memory, env]
    _setup(program, ctx, mem, memory, r)
    r[FP] = memory.stack_top(0)

    current = program
    code = compile_program(program, table)
    chain = [program]
    frames: list[tuple] = []  # callers: (code, program, return pc, r6, r7, r8, r9, r10)
    steps = 0
    pc = 0
    try:
        while True:
            try:
                for steps in range(steps + 1, max_steps + 1):
                    pc = code[pc](r)
                    if pc < 0:
                        break
                else:
                    raise VmError(f"instruction budget of {max_steps} steps used up "
                                  "(an endless loop?)")
            except TailCall as tail:  # raised by a helper from a caller-given table
                env.next = tail.program
                pc = TAIL
            if pc == EXIT:
                if not frames:
                    break
                memory.pop_frame()
                code, current, pc, r[6], r[7], r[8], r[9], r[10] = frames.pop()
            elif pc == TAIL:
                current = env.next
                if not isinstance(current, Program):  # a JIT-compiled or verified program
                    current = current.program
                code = compile_program(current, table)
                chain.append(current)
                pc = 0
            else:  # CALL
                target, ret = env.call
                depth = len(frames) + 1
                if depth >= MAX_CALL_FRAMES:
                    pc = ret - 1
                    raise VmError(f"call nested deeper than {MAX_CALL_FRAMES} frames")
                frames.append((code, current, ret, r[6], r[7], r[8], r[9], r[10]))
                r[FP] = memory.push_frame()
                pc = target
    except Unwind as unwind:
        r[0] = unwind.value & M64
    except SysdispatchError as exc:
        if len(chain) > 1 or frames:
            exc.at(context=f"program '{current.name}'")
        raise current.error(exc, pc) from None
    return RunResult(r[0], steps, tuple(chain), env.tail_calls)
