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
from ..isa import MAX_CALL_FRAMES, NREGS
from ..memory import CTX_BASE, Memory, Region
from ..program import Program
from .compiler import ATTR, Fault, compiled_for, follow, innermost_frame, unwrap
from ..helpers import TailCall
from .compiler import _tail_from_traceback

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

    Same arguments, result and errors as :func:`sysdispatch.vm.interp.run`. The set-up and the
    release of the pooled run context are written out here: for a short program they are most
    of the run, and two function calls fewer are a fifth of it.
    """
    table = HELPERS if helpers is None else helpers
    prog = program if program.__class__ is Program else unwrap(program)
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
                region.writable = ptype.ctx_writable
                region.name = f"{ptype} ctx" if size else "mem"
                env.ctx_type = ptype
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
    # --- the run ---
    try:
        try:
            out = fn(env, memory, 0, max_steps, 0, 0, r1, r2, 0, 0, 0, 0, 0, 0, 0)
        except TailCall as tail:  # from a helper of a caller-given table
            out = _tail_from_traceback(tail)
        if out[0] is not None:
            out = follow(out, env, memory, 0)
        r0, left = out[2], out[1]
    except Unwind as unwind:
        r0 = unwind.value & M64
        left = getattr(unwind, "jit_left", None)  # set when it came from the slow path
        if left is None:
            left = innermost_frame(unwind.__traceback__).tb_frame.f_locals["left"]
    except Fault as fault:
        raise _locate(fault.exc, fault.__traceback__, fault.pc, env) from None
    except SysdispatchError as exc:
        raise _locate(exc, exc.__traceback__, None, env) from None
    chain = env.chain
    result = _tuple_new(RunResult, (r0, max_steps - left,
                                    (prog,) if chain is None else tuple(chain), env.tail_calls))
    # --- back to the pool: no stack, no caller memory kept alive, nothing half-mapped ---
    if data is not _UNUSUAL and len(_POOL) < _POOL_MAX:
        memory.stacks[0] = None  # its region stays in env.stack_views for the next run
        if memory.depth != 1:  # an unwind from inside a call left callee frames
            memory.depth = 1
            memory.stacks[:] = [None] * MAX_CALL_FRAMES
        if data is not None:
            region.buf = b""
            region.size = 0
            region.end = CTX_BASE
        memory.last = _NOWHERE
        env.chain = None
        _POOL.append(env)
    return result


def _locate(exc: SysdispatchError, tb, pc: int | None, env: RunEnv) -> SysdispatchError:
    """``exc`` with the program, pc and source location of the compiled code that raised it."""
    found = innermost_frame(tb)
    if found is None:  # raised outside compiled code (compiling a tail callee): as it is
        return exc
    g = found.tb_frame.f_globals
    program = g["PREF"]()
    if pc is None:
        pc = g["LINES"][found.tb_lineno - 1]
    if env.chain is not None or found.tb_frame.f_locals["depth"] > 0:
        exc.at(context=f"program '{program.name}'")
    return program.error(exc, pc)
