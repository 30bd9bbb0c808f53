"""JIT compilation and the trampolines the compiled functions run under.

:func:`compile_program` checks a program as the interpreter's compile step does (same errors, same
pcs), generates its source (:mod:`.codegen`), compiles it — once per distinct source: programs
with the same instructions share the code object — and binds it to the program in a namespace of
its own: map addresses, helper implementations, the runtime functions below. The result is cached
per (program, helper table) for as long as the program lives.

Control leaves a compiled function ``F`` only by returning a tuple:

* ``(None, left, r0, ..., r5)`` — ``exit``;
* ``(callee, left, r0, ..., r9)`` — a tail call: :func:`follow` (the trampoline) looks up the
  callee's compiled function and enters its body with the live registers, the same frame (stack,
  ``r10``, call depth) and the remaining budget. Nothing of the run's set-up is redone and the
  Python stack does not grow, however long the chain. (A tail call raised as
  :class:`~sysdispatch.vm.helpers.TailCall` — by ``callx`` or a caller-given helper table — is
  turned into the same tuple from the raising function's frame.)

A bpf-to-bpf call is a Python call: :func:`local_call` opens the callee's frame (its own stack)
and runs :func:`frame` on ``F`` entered at the callee's pc, so r6-r9 and r10 stay in the caller's
locals for free, and a tail call made inside the callee replaces the callee in that frame, as in
the interpreter. At most :data:`~sysdispatch.vm.isa.MAX_CALL_FRAMES` frames: a bounded Python
depth.
"""

from __future__ import annotations

import functools
import threading
import weakref
from types import CodeType
from typing import Any, Callable

from ...errors import EncodingError, SysdispatchError, VmError
from .. import semantics as sem
from ..helpers import HELPERS, Helper, TailCall, Unwind, tail_call_target
from ..interp import EXIT as INTERP_EXIT, TAIL as INTERP_TAIL
from ..interp import _check_regs, _lddw_value, compile_program as interp_compile, \
    writes_fp_message
from ..isa import MAX_CALL_FRAMES, PSEUDO_IMM64, STACK_SIZE, Insn, spec_of
from ..maps import ProgArray
from ..memory import PACK, UNPACK, Memory
from ..program import TAIL_CALL, Program
from .codegen import Generated, generate

FILENAME = "<sysdispatch-jit>"  # marks compiled functions' frames in tracebacks


class Fault(Exception):
    """A fault whose pc the raiser knows better than the traceback does (budget slow path)."""

    def __init__(self, exc: SysdispatchError, pc: int) -> None:
        super().__init__(exc)
        self.exc = exc
        self.pc = pc


# --- what compiled code calls --------------------------------------------------------------------

_ZERO_STACK = bytes(STACK_SIZE)


def frame_stack(env, mem, depth: int) -> tuple:
    """(buffer, 8-, 4-, 2-byte word views) of call frame ``depth``'s stack, made if needed.

    Word views cost more to make than a short run takes, so each run context keeps its frames'
    regions and views: a frame entered afresh gets the context's region for that depth back,
    zeroed — what :meth:`Memory.stack` would make — and a region the memory made on its own (a
    helper touched the stack first) gets views once.
    """
    region = mem.stacks[depth]
    cached = env.stack_views[depth]
    if cached is not None:
        if cached[0] is region:
            return cached[1]
        if region is None:
            region = cached[0]
            region.buf[:] = _ZERO_STACK
            mem.stacks[depth] = region
            mem.local.append(region)
            return cached[1]
    if region is None:
        region = mem.stack(depth)
    buf = region.buf
    views = (buf, memoryview(buf).cast("Q"), memoryview(buf).cast("I"), memoryview(buf).cast("H"))
    env.stack_views[depth] = (region, views)
    return views


def local_call(fn: Callable, env, mem, depth: int, left: int, blk: int,
               r0: int, r1: int, r2: int, r3: int, r4: int, r5: int, r6: int, r7: int, r8: int,
               r9: int) -> tuple:
    """``call local``: a new frame with its own stack; returns the callee's exit tuple."""
    depth += 1
    if depth >= MAX_CALL_FRAMES:
        raise VmError(f"call nested deeper than {MAX_CALL_FRAMES} frames")
    mem.push_frame()
    out = frame(fn, env, mem, depth, left, blk, r0, r1, r2, r3, r4, r5, r6, r7, r8, r9)
    mem.pop_frame()
    return out


def frame(fn: Callable, env, mem, depth: int, left: int, blk: int,
          r0: int, r1: int, r2: int, r3: int, r4: int, r5: int, r6: int, r7: int, r8: int,
          r9: int) -> tuple:
    """Run one call frame: ``fn`` from ``blk``, then each tail callee, until one exits."""
    try:
        out = fn(env, mem, depth, left, blk, r0, r1, r2, r3, r4, r5, r6, r7, r8, r9)
    except TailCall as tail:  # from a helper other than the inlined tail_call (e.g. callx)
        out = _tail_from_traceback(tail)
    if out[0] is None:
        return out
    return follow(out, env, mem, depth)


def follow(out: tuple, env, mem, depth: int) -> tuple:
    """The trampoline: ``out`` is a tail-call tuple; enter each callee's body in this frame,
    with the live registers and the remaining budget, until one exits."""
    table = env.table
    chain = env.chain
    if chain is None:
        env.chain = chain = [env.entry]
    while True:
        callee = out[0]
        if callee is None:
            return out
        prog = callee if callee.__class__ is Program else unwrap(callee)
        c = prog.__dict__.get(ATTR)
        if c is not None and c.table is table:
            fn = c.fn
        else:
            try:
                fn = compiled_for(prog, table).fn
            except SysdispatchError as exc:
                # the interpreter's context: the callee is named once the chain has begun or
                # inside a bpf-to-bpf call
                if len(chain) > 1 or depth > 0:
                    exc.at(context=f"program '{prog.name}'")
                raise
        chain.append(prog)
        _, left, r0, r1, r2, r3, r4, r5, r6, r7, r8, r9 = out
        try:
            out = fn(env, mem, depth, left, 0, r0, r1, r2, r3, r4, r5, r6, r7, r8, r9)
        except TailCall as tail:
            out = _tail_from_traceback(tail)


def innermost_frame(tb):
    """The innermost compiled function's frame in traceback ``tb`` (with its line), or None."""
    found = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == FILENAME:
            found = tb
        tb = tb.tb_next
    return found


def _tail_from_traceback(tail: TailCall) -> tuple:
    """The registers of the function a raising tail call left, as a tail-call tuple."""
    tb = innermost_frame(tail.__traceback__)
    loc = tb.tb_frame.f_locals
    return (tail.program, loc["left"], *(loc[f"r{i}"] for i in range(10)))


def slow_frame(pref: weakref.ref, fn: Callable, env, mem, depth: int, left: int, pc: int,
               *regs: int) -> tuple:
    """The rest of a frame, from ``pc``, on the interpreter's closures, one step at a time.

    Compiled code comes here when the budget may run out before its next check: each step is
    counted before it runs, exactly as the interpreter's loop counts, so the budget fault names
    the interpreter's pc and comes after the same side effects. Returns what ``F`` would:
    an exit or a tail-call tuple. A bpf-to-bpf call made from here runs compiled again.
    """
    code = interp_compile(pref(), env.table)
    r = [*regs, Memory.stack_top(depth), mem, env]
    while True:
        if left <= 0:
            raise Fault(VmError(f"instruction budget of {env.max_steps} steps used up "
                                "(an endless loop?)"), pc)
        left -= 1
        try:
            npc = code[pc](r)
        except TailCall as tail:  # a helper of a caller-given table
            return (tail.program, left, *r[:10])
        except Unwind as unwind:
            unwind.jit_left = left  # what run() reports as steps
            raise
        except SysdispatchError as exc:
            raise Fault(exc, pc) from None
        if npc >= 0:
            pc = npc
        elif npc == INTERP_EXIT:
            return (None, left, *r[:6])
        elif npc == INTERP_TAIL:
            return (env.next, left, *r[:10])
        else:  # a bpf-to-bpf call
            target, ret = env.call
            if depth + 1 >= MAX_CALL_FRAMES:
                raise Fault(VmError(f"call nested deeper than {MAX_CALL_FRAMES} frames"), pc)
            out = local_call(fn, env, mem, depth, left, target, *r[:10])
            left = out[1]
            r[0:6] = out[2:8]
            pc = ret


def _callx(table: dict[int, Helper], env, dst: int, value: int,
           r1: int, r2: int, r3: int, r4: int, r5: int):
    helper = table.get(value)
    if helper is None:
        raise VmError(f"callx: r{dst} = {value} is not a helper id")
    return helper.impl(env, r1, r2, r3, r4, r5)


class _NotProgArray:
    """What a tail call site's ``M<pc>`` is bound to when its map is no prog_array: reading
    its slots raises the helper's own error (tail_call_target's)."""

    __slots__ = ("addr",)

    def __init__(self, addr: int) -> None:
        self.addr = addr

    @property
    def slots(self):
        tail_call_target(None, self.addr, 0)  # raises: not a prog_array (or not a map)
        raise VmError("tail_call through a map that is not a prog_array")


def _ran_off() -> None:
    raise VmError("execution ran past the last instruction (no exit)")


def _writes_fp(code: int, off: int, imm: int) -> None:
    """An instruction that writes r10 ran (the interpreter's fault: see interp.writes_fp)."""
    raise VmError(writes_fp_message(spec_of(Insn(code, 0, 0, off, imm))))


def _missing_helper(hid: int) -> Callable:
    def missing(env, r1, r2, r3, r4, r5):
        raise VmError(f"helper {hid} is not available to this run")
    return missing


# --- compiling and caching -----------------------------------------------------------------------

# What lean functions call (runtime.py fills it: CF, CS; and STK, SP, TN, RR, TGO into _BASE_NS).
LEAN_NS: dict[str, Any] = {}
_BASE_NS: dict[str, Any] = dict(sem.ENV, CALL=local_call, RAN_OFF=_ran_off, FPW=_writes_fp,
                                STACK=frame_stack,
                                TOPS=tuple(Memory.stack_top(k) for k in range(MAX_CALL_FRAMES)))
for _size in (1, 2, 4, 8):
    _BASE_NS[f"U{_size}"] = UNPACK[_size]
    _BASE_NS[f"P{_size}"] = PACK[_size]


class Lean:
    """A lean program's entry (see :mod:`.lean`): ``fn`` the lean function ``L``, ``longest``
    the budget it needs, ``ctx`` whether it needs r1 to be the ctx pointer, ``any_table``
    whether it runs the same under every helper table and host (it calls nothing at all)."""

    __slots__ = ("fn", "longest", "ctx", "any_table", "size", "copy", "zero", "leaf", "ptype")

    def __init__(self, fn: Callable, longest: int, ctx: bool, any_table: bool,
                 program: Program, stores: bool) -> None:
        self.fn, self.longest, self.ctx, self.any_table = fn, longest, ctx, any_table
        ptype = program.prog_type
        self.size = ptype.ctx_size
        # the caller's bytes are used as they are, but a program that stores into a writable
        # ctx gets a copy of bytes (a bytearray is used in place), as in the interpreter
        self.copy = stores and ptype.ctx_writable
        self.zero = bytes(self.size)  # the ctx of a run given none
        # a tail callee lean code may enter at once when r1 is the ctx pointer: it calls
        # nothing and stores nothing into the ctx (no copy to make). Held as its program type
        # (else None), tested as ``f.leaf is PT`` against the caller's: a callee of another type
        # reads and writes the entry's ctx as the entry's type maps it (size, writability,
        # region name), which only the general path does.
        self.ptype = ptype
        self.leaf = ptype if any_table and not self.copy else None


class Compiled:
    """One program's compiled function for one helper table (it refers to the program only
    weakly)."""

    __slots__ = ("fn", "table", "generated", "ref")

    def __init__(self, fn: Callable, table: dict, generated: Generated, ref: weakref.ref) -> None:
        self.fn = fn
        self.table = table
        self.generated = generated
        self.ref = ref


class JitProgram:
    """A program the JIT compiled: what a PROG_ARRAY holds when its owner is the JIT engine.

    ``program`` is the :class:`~sysdispatch.vm.program.Program` (``origin`` what was given: a
    Program or a verified program), ``source`` the generated Python source.
    """

    __slots__ = ("program", "origin", "compiled", "__weakref__")
    engine = "jit"

    def __init__(self, origin: Any, program: Program, compiled: Compiled) -> None:
        self.program = program
        self.origin = origin
        self.compiled = compiled

    @property
    def name(self) -> str:
        return self.program.name

    @property
    def prog_type(self):
        return self.program.prog_type

    @property
    def source(self) -> str:
        return self.compiled.generated.source

    def __len__(self) -> int:
        return len(self.program)

    def __repr__(self) -> str:
        return f"<JitProgram '{self.program.name}' insns={len(self.program)}>"


def unwrap(obj: Any) -> Program:
    """The Program inside a Program, a verified program or a :class:`JitProgram`."""
    while not isinstance(obj, Program):
        inner = getattr(obj, "program", None)
        if inner is None:
            raise VmError(f"not a program: {type(obj).__name__}")
        obj = inner
    return obj


# The compiled function is kept on the program itself (its __dict__, beside the interpreter's),
# with the helper table it was compiled for: it lives and dies with the program, and finding it
# is one dict lookup. The function refers to its program only weakly, so no cycle keeps either.
ATTR = "_jit_code"
# The program's Lean entry, or False when it is not lean: set by the first compile, whatever
# the table (a lean program with tail calls runs lean only under the standard table).
LEAN = "_jit_lean"
# source -> code object: programs with equal instructions (say, many identical handlers) share
# one compile. Bounded in entries, and only sources of a modest size are kept.
_CODE: dict[str, CodeType] = {}
_CODE_MAX = 4096
_CODE_MAX_SOURCE = 1 << 18
_LOCK = threading.Lock()


def compiled_for(program: Program, table: dict) -> Compiled:
    """Compile ``program`` for ``table`` (cached). Errors name the pc, as the interpreter's."""
    c = program.__dict__.get(ATTR)
    if c is not None and c.table is table:
        return c
    consts: dict[str, Any] = {}
    for pc, (insn, spec) in enumerate(zip(program.insns, program.specs)):
        if spec is None:
            continue
        try:
            _check_regs(insn, spec)
            if spec.kind == "lddw" and insn.src != PSEUDO_IMM64:
                consts[f"K{pc}"] = _lddw_value(program, pc)
        except SysdispatchError as exc:
            raise program.error(exc, pc) from None
    tail = table.get(TAIL_CALL)
    fast_tail = tail is not None and tail.impl is HELPERS[TAIL_CALL].impl
    try:
        generated = generate(program, fast_tail=fast_tail)
    except EncodingError as exc:
        raise program.error(exc, exc.pc if exc.pc is not None else 0) from None
    code = _CODE.get(generated.source)
    if code is None:
        code = compile(generated.source, FILENAME, "exec")
        if len(generated.source) <= _CODE_MAX_SOURCE:
            with _LOCK:
                if len(_CODE) >= _CODE_MAX:
                    _CODE.clear()
                _CODE[generated.source] = code
    ref = weakref.ref(program)
    ns = dict(_BASE_NS, **consts)
    ptype = program.prog_type
    ns["CF"] = functools.partial(LEAN_NS["CF"], ptype)
    ns["CS"] = functools.partial(LEAN_NS["CS"], ptype)
    for pc, table_ in generated.jump_tables:
        ns[f"J{pc}"] = table_
    for hid in generated.helper_ids:
        helper = table.get(hid)
        ns[f"H{hid}"] = helper.impl if helper is not None else _missing_helper(hid)
    lean_tails = True
    for pc in generated.tail_maps:
        m = program.maps[program.insns[pc].imm]
        if isinstance(m, ProgArray):
            ns[f"M{pc}"] = m  # the map is known: its slots are read with no lookup by address
        else:
            ns[f"M{pc}"] = _NotProgArray(consts[f"K{pc}"])
            lean_tails = False
    ns.update(PROG=Program, UNWRAP=unwrap, LEAN=LEAN, PT=program.prog_type)
    ns.update(PREF=ref, LINES=generated.lines, SLOW=functools.partial(slow_frame, ref),
              CALLX=functools.partial(_callx, table), TAIL=tail_call_target)
    exec(code, ns)  # noqa: S102 - source generated from instruction fields only
    c = Compiled(ns["F"], table, generated, ref)
    program.__dict__[ATTR] = c
    if LEAN not in program.__dict__ or (program.__dict__[LEAN] is False and fast_tail):
        lean: Lean | bool = False
        if generated.lean_longest is not None and lean_tails:
            lean = Lean(ns["L"], generated.lean_longest, generated.lean_ctx,
                        not generated.tail_maps and not generated.helper_ids, program,
                        generated.lean_stores)
        program.__dict__[LEAN] = lean
    return c


def compile_program(program: Any, helpers: dict[int, Helper] | None = None) -> JitProgram:
    """JIT-compile ``program`` (a Program or a verified program) for ``helpers`` (default:
    the standard table). Compiled once per program and table; raises :class:`EncodingError`
    naming the pc for what no engine can run (registers above r10, writes to r10, bad map
    references)."""
    table = HELPERS if helpers is None else helpers
    prog = unwrap(program)
    return JitProgram(program, prog, compiled_for(prog, table))
