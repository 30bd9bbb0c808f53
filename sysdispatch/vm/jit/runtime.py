"""Running JIT-compiled programs: cheap per-run set-up, the top-level trampoline, fault mapping.

Per-run set-up is most of the cost of a short program, so the run's memory, helper environment
and ctx region come from a pool and are reset in place (the caller's ctx bytes, no stack yet, an
empty tail-call count) instead of being built anew; a context goes back to the pool only after a
run that ended normally. Its frames' stack regions and their word views stay with it
(compiler.frame_stack). Unusual arguments (a ctx record with
``pack()``, wrong sizes, both ctx and mem) take the interpreter's own set-up path, which also
raises its errors.

Faults carry no pc when raised; :func:`run` finds the innermost compiled function in the
traceback and maps its line to the pc (every generated line records its pc), so a fault names
the same program, pc and source location as the interpreter's.
"""

from __future__ import annotations

from typing import Any

from ...errors import SysdispatchError
from ..helpers import HELPERS, Env, Helper, Host, Unwind
from ..interp import DEFAULT_MAX_STEPS, RunResult, _setup
from ..isa import MAX_CALL_FRAMES, NREGS, STACK_SIZE
from ..memory import CTX_BASE, Memory, Region
from ..program import Program
from . import compiler
from .compiler import (ATTR, LEAN, Fault, compiled_for, follow, frame_stack, innermost_frame,
                       unwrap, _tail_from_traceback)
from ..helpers import TailCall

M64 = 0xFFFF_FFFF_FFFF_FFFF
_NOWHERE = Memory().last  # the memory module's "no region yet" marker


class _Quiet(list):
    """An event list nobody can read (the default host's): appending is a no-op."""

    def append(self, item: Any) -> None:
        pass


# With no host given, every run may share one: nobody can observe its events, and its clock,
# ids and random numbers are the defaults a fresh Host would have.
_DEFAULT_HOST = Host(events=_Quiet())


class RunEnv(Env):
    """A run's helper environment plus what the trampolines and the pool need."""

    # call, next: where the interpreter's closures leave a local call's target and a tail
    # call's callee (compiler.slow_frame runs them)
    __slots__ = ("entry", "chain", "table", "max_steps", "ctx_region", "ctx_type",
                 "stack_views", "call", "next")

    def __init__(self, mem: Memory, host: Host) -> None:
        super().__init__(mem, host)
        self.stack_views: list = [None] * MAX_CALL_FRAMES  # see compiler.frame_stack
        self.ctx_region = Region(CTX_BASE, b"", False, "mem")  # mapped per run
        self.ctx_type = None  # the program type ctx_region's name and mode are set for
        self.chain = None     # the programs run, made by the first tail call


_POOL: list[RunEnv] = []
_POOL_MAX = 64


def _slow_env(program: Program, ctx: Any, mem: Any) -> tuple[RunEnv, int, int]:
    """The interpreter's set-up (and its errors) for input the pooled path does not take."""
    memory = Memory()
    r: list = [0] * NREGS
    _setup(program, ctx, mem, memory, r)
    return RunEnv(memory, _DEFAULT_HOST), r[1], r[2]


_tuple_new = tuple.__new__  # RunResult is a NamedTuple: skip its Python-level __new__
_UNUSUAL = object()         # input the pooled set-up leaves to the interpreter's


def run(program: Any, ctx: Any = None, *, host: Host | None = None, mem: Any = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        helpers: dict[int, Helper] | None = None) -> RunResult:
    """Run ``program`` (Program, verified program or :class:`JitProgram`) compiled.

    Same arguments, result and errors as :func:`sysdispatch.vm.interp.run`. A lean program
    (see :mod:`.lean`) whose budget covers its longest path runs its lean function on the
    caller's bytes, with nothing set up; any other takes the pooled set-up. Both are written out
    here: for a short program they are most of the run, and a function call fewer is a tenth.
    """
    prog = program if program.__class__ is Program else unwrap(program)
    try:
        lean = prog._jit_lean  # compiler.LEAN: an attribute read is the cheapest lookup
    except AttributeError:  # never compiled: compiling decides whether it is lean
        compiled_for(prog, HELPERS if helpers is None else helpers)
        lean = prog._jit_lean
    if lean and max_steps >= lean.longest and (lean.any_table or helpers is None):
        # the caller's bytes as they are, unless the program stores into a writable ctx
        # (bytes are copied then, as the interpreter's set-up does)
        size = lean.size
        if size:  # a fixed ctx: r1 only
            data = lean.zero if ctx is None else ctx
            cls = data.__class__
            if mem is None and (cls is bytes or cls is bytearray) and len(data) == size:
                if lean.copy and cls is bytes:
                    data = bytearray(data)
                try:
                    out = lean.fn((prog,), max_steps, max_steps, data, 0, CTX_BASE, 0, 0, None,
                                  host)
                    return out if out.__class__ is RunResult else lean_follow(out)
                except (_Located, SysdispatchError) as exc:
                    raise _lean_error(exc) from None
        else:  # caller memory: r1 = its address, r2 = its length
            data = mem if ctx is None else ctx if mem is None else _UNUSUAL
            cls = data.__class__
            if cls is bytes or cls is bytearray:
                if lean.copy and cls is bytes:
                    data = bytearray(data)
                n = len(data)
                r1 = CTX_BASE
            elif data is None and not lean.ctx:
                n = r1 = 0
            else:
                n = -1
            if n >= 0:
                try:
                    out = lean.fn((prog,), max_steps, max_steps, data, n, r1, n, 0, None, host)
                    return out if out.__class__ is RunResult else lean_follow(out)
                except (_Located, SysdispatchError) as exc:
                    raise _lean_error(exc) from None
    return _pooled(prog, ctx, host, mem, max_steps, HELPERS if helpers is None else helpers)


def _lean_error(exc: Exception) -> SysdispatchError:
    """The error a lean run raised, with its program and pc."""
    if isinstance(exc, _Located):  # located on the general path already
        return exc.exc
    return _locate(exc, exc.__traceback__, None, None)


def _pooled(prog: Program, ctx: Any, host: Host | None, mem: Any, max_steps: int,
            table: dict[int, Helper]) -> RunResult:
    """A run on the pooled set-up (or the interpreter's, for unusual arguments)."""
    ptype = prog.prog_type
    # --- the ctx or caller memory, as the interpreter's _setup maps it ---
    size = ptype.ctx_size
    if size:  # a fixed ctx (seccomp_data): r1 only
        data = _UNUSUAL if mem is not None else bytes(size) if ctx is None else ctx
    elif ctx is None:  # generic: caller memory in ctx or mem; r1 = address, r2 = length
        data = mem
    else:
        data = ctx if mem is None else _UNUSUAL
    cls = data.__class__
    if cls is bytes or cls is bytearray:
        if ptype.ctx_writable:
            if cls is bytes:
                data = bytearray(data)  # bytes are copied; a bytearray is used in place
        elif cls is bytearray:
            data = bytes(data)
        n = len(data)
        if size and n != size:
            data = _UNUSUAL
    elif data is not None:
        data = _UNUSUAL
    if data is _UNUSUAL:
        env, r1, r2 = _slow_env(prog, ctx, mem)
        memory = env.mem
    else:
        try:
            env = _POOL.pop()
        except IndexError:
            env = RunEnv(Memory(), _DEFAULT_HOST)
        memory = env.mem
        if data is None:
            memory.local = []
            r1 = r2 = 0
        else:
            region = env.ctx_region
            if env.ctx_type is not ptype:
                _retype(env, ptype)
            region.buf = data
            region.size = n
            region.end = CTX_BASE + n
            memory.local = [region]
            memory.last = region  # most programs touch their ctx first: on the fast path
            r1, r2 = CTX_BASE, 0 if size else n
    env.host = _DEFAULT_HOST if host is None else host
    env.tail_calls = 0
    env.table = table
    env.max_steps = max_steps
    env.entry = prog
    c = prog.__dict__.get(ATTR)
    fn = c.fn if c is not None and c.table is table else compiled_for(prog, table).fn
    r0, left = _drive(env, memory, fn, max_steps, (0, r1, r2, 0, 0, 0, 0, 0, 0, 0), 0)
    chain = env.chain
    result = _tuple_new(RunResult, (r0, max_steps - left,
                                    (prog,) if chain is None else tuple(chain), env.tail_calls))
    if data is not _UNUSUAL:
        _release(env, memory)
    return result


def _retype(env: RunEnv, ptype) -> None:
    """Set the pooled ctx region's mode and name for ``ptype`` (kept while runs are of one type)."""
    env.ctx_region.writable = ptype.ctx_writable
    env.ctx_region.name = ptype.ctx_region
    env.ctx_type = ptype


def _release(env: RunEnv, memory: Memory) -> None:
    """Back to the pool: no stack, no caller memory kept alive, nothing half-mapped."""
    if len(_POOL) < _POOL_MAX:
        memory.stacks[0] = None  # its region stays in env.stack_views for the next run
        if memory.depth != 1:  # an unwind from inside a call left callee frames
            memory.depth = 1
            memory.stacks[:] = [None] * MAX_CALL_FRAMES
        region = env.ctx_region
        region.buf = b""
        region.size = 0
        region.end = CTX_BASE
        memory.last = _NOWHERE
        env.chain = None
        _POOL.append(env)


def _drive(env: RunEnv, memory: Memory, fn, left: int, regs: tuple, blk: int) -> tuple[int, int]:
    """Run frame 0 from ``fn`` (the entry's compiled function, entered at ``blk``) through
    every tail call to the exit: (r0, budget left); faults raised with their program and pc."""
    try:
        try:
            out = fn(env, memory, 0, left, blk, *regs)
        except TailCall as tail:  # from a helper of a caller-given table
            out = _tail_from_traceback(tail)
        if out[0] is not None:
            out = follow(out, env, memory, 0)
        return out[2], out[1]
    except Unwind as unwind:
        left = getattr(unwind, "jit_left", None)  # set when it came from the slow path
        if left is None:
            left = innermost_frame(unwind.__traceback__).tb_frame.f_locals["left"]
        return unwind.value & M64, left
    except Fault as fault:
        raise _locate(fault.exc, fault.__traceback__, fault.pc, env) from None
    except SysdispatchError as exc:
        raise _locate(exc, exc.__traceback__, None, env) from None


# --- what lean functions call ------------------------------------------------------------------

class _Located(Exception):
    """A fault already given its program and pc, on its way out through a lean function."""

    def __init__(self, exc: SysdispatchError) -> None:
        super().__init__(exc)
        self.exc = exc


def _ctx_memory(ptype, cb) -> Memory:
    """A Memory holding the ctx bytes ``cb`` as the interpreter's set-up maps them."""
    memory = Memory()
    if cb is not None:
        memory.local.append(Region(CTX_BASE, cb, ptype.ctx_writable, ptype.ctx_region))
    return memory


def _ctx_load(ptype, cb, addr: int, size: int) -> int:
    """A lean function's ctx load outside the ctx: the interpreter's fault (or value)."""
    return _ctx_memory(ptype, cb).load(addr, size)


def _ctx_store(ptype, cb, addr: int, size: int, value: int) -> None:
    """A lean function's ctx store it cannot make directly: the interpreter's fault (or store)."""
    _ctx_memory(ptype, cb).store(addr, size, value)


_STACKS: list[tuple] = []  # zeroed on the way out of the pool; see lean functions' exits
_ZERO_STACK = bytes(STACK_SIZE)


def _lean_stack() -> tuple:
    """A zeroed frame stack and its word views (buffer, 8-, 4-, 2-byte) for a lean run."""
    try:
        sv = _STACKS.pop()
    except IndexError:
        buf = bytearray(STACK_SIZE)
        mv = memoryview(buf)
        return (buf, mv.cast("Q"), mv.cast("I"), mv.cast("H"))
    sv[0][:] = _ZERO_STACK
    return sv


def _stack_back(sv: tuple) -> None:
    if len(_STACKS) < _POOL_MAX:
        _STACKS.append(sv)


class LeanTail(tuple):
    """A lean function's taken tail call: (callee, chain so far, tail-call count, max_steps,
    budget left, ctx bytes, their length, stack views or None, host or None, r0, ..., r9)."""

    __slots__ = ()


def tail_go(callee: Any, ch: tuple, tc: int, ms: int, left: int, cb: Any, n: int, sv: Any,
            hs: Host | None, r0: int, r1: int, r2: int, r3: int, r4: int, r5: int, r6: int, r7: int, r8: int,
            r9: int) -> RunResult | LeanTail:
    """A lean function's taken tail call: a leaf callee that fits runs at once (it makes no
    further call, so the Python stack grows by two frames at most); anything else returns to
    the trampoline as a :class:`LeanTail`."""
    prog = callee if callee.__class__ is Program else unwrap(callee)
    lean = prog.__dict__.get(LEAN)
    if lean and lean.any_table and left >= lean.longest and (r1 == CTX_BASE or not lean.ctx) \
            and lean.ptype is ch[0].prog_type:
        if lean.copy and cb.__class__ is bytes:
            cb = bytearray(cb)  # the caller stored nothing; this callee does
        return lean.fn(ch + (prog,), ms, left, cb, n, r1, r2, tc, sv, hs, r0, r3, r4, r5, r6,
                       r7, r8, r9)
    return _tuple_new(LeanTail, (callee, ch, tc, ms, left, cb, n, sv, hs,
                                 r0, r1, r2, r3, r4, r5, r6, r7, r8, r9))


def lean_follow(out: LeanTail) -> RunResult:
    """The lean trampoline: enter the tail callee's lean function when it is a leaf that fits
    (budget, r1 the ctx pointer), with no deeper Python stack, else go on on the general path
    (:func:`promote`)."""
    while True:
        callee, ch, tc, ms, left, cb, n, sv, hs, r0, r1, r2, r3, r4, r5, r6, r7, r8, r9 = out
        prog = callee if callee.__class__ is Program else unwrap(callee)
        ch = ch + (prog,)
        lean = prog.__dict__.get(LEAN)
        if lean is None:
            try:
                compiled_for(prog, HELPERS)
            except SysdispatchError as exc:  # as on the general path: not located in the caller
                if len(ch) > 2:  # the interpreter names the callee once the chain has begun
                    exc.at(context=f"program '{prog.name}'")
                raise _Located(exc) from None
            lean = prog.__dict__[LEAN]
        # Only a leaf (a callee that calls nothing: a handler) runs lean: a long chain runs
        # faster on the general trampoline, whose run context is made once.
        # A callee of another type than the entry sees the entry's ctx as the entry's type
        # maps it (its lean code assumes its own type's): only the general path does that.
        if not (lean and lean.any_table and left >= lean.longest
                and (r1 == CTX_BASE or not lean.ctx) and lean.ptype is ch[0].prog_type):
            # This entry leads to chains (or callees lean code cannot run): later runs of it
            # take the general path from the start, where a chain costs least.
            ch[0].__dict__[LEAN] = False
            return promote(prog, ch, tc, ms, left, cb, n, sv, hs,
                           (r0, r1, r2, r3, r4, r5, r6, r7, r8, r9))
        if lean.copy and cb.__class__ is bytes:
            cb = bytearray(cb)  # the callers stored nothing; this callee does
        out = lean.fn(ch, ms, left, cb, n, r1, r2, tc, sv, hs, r0, r3, r4, r5, r6, r7, r8, r9)
        if out.__class__ is RunResult:
            return out


def promote(prog: Program, ch: tuple, tc: int, ms: int, left: int, cb: Any, n: int, sv: Any,
            hs: Host | None, regs: tuple) -> RunResult:
    """Go on with ``prog`` (the last of ``ch``, just tail-called) on the general path: the lean
    run's state — ctx bytes, frame stack, tail-call count, budget — moved into a pooled run
    context."""
    entry = ch[0]
    ptype = entry.prog_type
    try:
        env = _POOL.pop()
    except IndexError:
        env = RunEnv(Memory(), _DEFAULT_HOST)
    memory = env.mem
    if cb is None:
        memory.local = []
    else:
        if ptype.ctx_writable and cb.__class__ is bytes:
            cb = bytearray(cb)  # the lean entry stored nothing; what follows may
        region = env.ctx_region
        if env.ctx_type is not ptype:
            _retype(env, ptype)
        region.buf = cb
        region.size = n = len(cb)  # (n is 0 for a fixed ctx: lean code knows its size)
        region.end = CTX_BASE + n
        memory.local = [region]
    if sv is not None:  # the frame's stack so far, copied into the context's own
        frame_stack(env, memory, 0)[0][:] = sv[0]
        _stack_back(sv)
    env.host = _DEFAULT_HOST if hs is None else hs
    env.tail_calls = tc
    env.table = HELPERS
    env.max_steps = ms
    env.entry = entry
    env.chain = list(ch)
    try:
        fn = compiled_for(prog, HELPERS).fn
        r0, left = _drive(env, memory, fn, left, regs, 0)
    except SysdispatchError as exc:
        raise _Located(exc) from None
    result = _tuple_new(RunResult, (r0, ms - left, tuple(env.chain), env.tail_calls))
    _release(env, memory)
    return result


compiler.LEAN_NS.update(CF=_ctx_load, CS=_ctx_store)
compiler._BASE_NS.update(STK=_lean_stack, SP=_stack_back, TN=_tuple_new, RR=RunResult,
                         TGO=tail_go)


def _locate(exc: SysdispatchError, tb, pc: int | None, env: RunEnv | None) -> SysdispatchError:
    """``exc`` with the program, pc and source location of the compiled code that raised it."""
    found = innermost_frame(tb)
    if found is None:  # raised outside compiled code (compiling a tail callee): as it is
        return exc
    g = found.tb_frame.f_globals
    program = g["PREF"]()
    if pc is None:
        pc = g["LINES"][found.tb_lineno - 1]
    local = found.tb_frame.f_locals
    if (env is not None and env.chain is not None) or local.get("depth", 0) > 0 \
            or len(local.get("ch", ())) > 1:
        exc.at(context=f"program '{program.name}'")
    return program.error(exc, pc)
