"""A policy loaded on the BPF machine: decide a verdict per syscall, swap table slots live.

:class:`LoadedPolicy` holds a compiled policy (compile.py) and runs ``syscall_entry`` on a
:class:`~sysdispatch.seccomp.data.SeccompData` with the chosen engine: ``interp`` (the
interpreter), ``jit`` (sysdispatch.vm.jit, when present) — both run the real programs and tail
calls — or ``reference`` (the model evaluated directly, no BPF; rules handlers only).

Paths: the slot lists of the policy's PROG_ARRAYs note the reads a tail call makes while a
dispatch runs in the current thread, so ``Decision.path`` names each tail call exactly.

The verdict cache: purity.py tells which seccomp_data words a program's verdict can depend on
(None: it reads a data map, calls a helper other than tail_call, ...). For each (arch, nr) the
first call analyses every program the call can reach (the entry, the handler in its slot, and all
programs of the args tables reachable from there) and makes a plan: the verdict depends on
(arch, nr) only — it is remembered per (arch, nr) —, or also on some arguments — it is
remembered per (arch, nr, those arguments), e.g. ioctl's command —, or it cannot be cached (a
map-counting handler, anything reading the instruction pointer).
:meth:`set_slot` swaps a PROG_ARRAY slot — one list item, atomic under the GIL, so a dispatch in
another thread sees the old or the new handler — and then empties the cache. A dispatch that ran
while a swap happened never stores its result: the cache has a generation number, read before
the run and compared under the lock when storing.
"""

from __future__ import annotations

import operator
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import MapError, PolicyError
from ..seccomp import actions
from ..seccomp.data import SeccompData
from ..vm.helpers import Host
from ..vm.maps import ProgArray
from . import _arch, constants, layout, reference
from .compile import ENTRY, Compiled, compile_policy, put_slot
from .model import Handler, Policy
from .parse import load as load_policy
from .purity import IP_WORD, ctx_words

ENGINES = ("interp", "jit", "reference")
MAX_CACHED = 1 << 16   # argument-keyed cache entries kept before starting over


class _Keyed:
    """A cache plan: the verdict depends on (arch, nr) and the arguments ``args`` (indexes)."""

    __slots__ = ("indexes", "args")

    def __init__(self, indexes: list[int]) -> None:
        self.indexes = tuple(indexes)
        self.args = operator.itemgetter(*indexes)   # args tuple -> the key part


_UNPLANNED = object()
_ARCH_NR = object()   # the plan "depends on (arch, nr) only", until the first verdict is in


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict for one syscall and how it was reached."""

    ret: int                     # the 32-bit seccomp return value
    path: tuple[str, ...]        # ("syscall_entry", "tail_call syscalls[257]", "openat_rules")
    tail_calls: int              # tail calls that reached a program
    handler: str | None          # the last handler that ran (None: only syscall_entry)
    attempts: int = 0            # the kernel's tail-call counter (empty in-range slots count)
    cached: bool = False

    @property
    def verdict(self) -> actions.Verdict:
        return actions.Verdict(self.ret)

    def describe(self) -> str:
        """``syscall_entry -> tail_call syscalls[257] -> openat_rules -> return ERRNO(13)``."""
        return " -> ".join(self.path + (f"return {actions.describe(self.ret)}",))


def _engine(name: str) -> Callable:
    if name == "interp":
        from ..vm.interp import run
        return run
    if name == "jit":
        try:
            from ..vm.jit import run  # type: ignore[attr-defined]
        except ImportError:
            raise PolicyError("the JIT engine is not available in this build "
                              "(sysdispatch.vm.jit)") from None
        return run
    raise PolicyError(f"unknown engine '{name}' (choose from {', '.join(ENGINES)})")


class LoadedPolicy:
    """A compiled policy ready to dispatch. Build with :meth:`from_file` or from a model."""

    def __init__(self, policy: Policy, *, engine: str = "interp", cache: bool = True,
                 host: Host | None = None, verify: bool = True) -> None:
        if engine not in ENGINES:
            raise PolicyError(f"unknown engine '{engine}' (choose from {', '.join(ENGINES)})")
        self.policy = policy
        self.engine = engine
        self.compiled: Compiled = compile_policy(policy, verify=verify)
        self._run = None if engine == "reference" else _engine(engine)
        # The engines take the loaded Program (the verifier has checked it at compile time).
        self._entry = self.compiled.program(ENTRY)
        self._verify = verify
        self.host = host or Host()
        self.use_cache = cache and engine != "reference"
        self._plans: dict[tuple[int, int], Any] = {}   # (arch, nr) -> Decision | _Keyed | None
        self._cache: dict[tuple, Decision] = {}          # ((arch, nr), args) -> Decision
        self._generation = 0
        self._lock = threading.Lock()
        for array in self.compiled.arrays.values():
            array.slots = _ObservedSlots(array.slots, array.name)

    @classmethod
    def from_file(cls, path: str | Path, **kw: Any) -> "LoadedPolicy":
        return cls(load_policy(path), **kw)

    # --- dispatch -------------------------------------------------------------------------------

    def decide(self, data: SeccompData) -> Decision:
        """Run the policy for one syscall (or answer from the verdict cache)."""
        key = (data.arch & 0xFFFFFFFF, data.nr & 0xFFFFFFFF)
        if not self.use_cache:
            return self._dispatch(data)
        plan = self._plans.get(key, _UNPLANNED)
        if plan.__class__ is Decision:
            return plan                              # depends on (arch, nr) only
        generation = self._generation
        if plan is _UNPLANNED:
            plan = self._plan(key, generation)
        if plan.__class__ is _Keyed:
            full = (key, plan.args(data.args))
            hit = self._cache.get(full)
            if hit is not None:
                return hit
        decision = self._dispatch(data)
        if plan is None:
            return decision
        cached = Decision(decision.ret, decision.path, decision.tail_calls, decision.handler,
                          decision.attempts, cached=True)
        with self._lock:
            if self._generation != generation:
                return decision                      # a slot changed while this one ran
            if plan is _ARCH_NR:
                self._plans[key] = cached
            else:
                if len(self._cache) >= MAX_CACHED:
                    self._cache.clear()              # argument-keyed entries: keep it bounded
                self._cache[full] = cached
        return decision

    def _dispatch(self, data: SeccompData) -> Decision:
        if self._run is None:
            r = reference.evaluate(self.policy, data)
            return Decision(r.ret, r.path, r.tail_calls, r.handler, r.attempts)
        _reads.log = reads = []
        try:
            res = self._run(self._entry, ctx=data.pack(), host=self.host)
        finally:
            _reads.log = None
        chain = res.chain
        last = getattr(chain[-1], "program", chain[-1])
        return Decision(res.r0 & 0xFFFFFFFF, self._path(reads), len(chain) - 1,
                        last.name if len(chain) > 1 else None, res.tail_calls)

    def _plan(self, key: tuple[int, int], generation: int):
        """How calls with this (arch, nr) can be cached: _ARCH_NR (the verdict depends on
        nothing else), a _Keyed (it depends on these arguments too), or None (not at all).
        Every program such a call can reach is analysed: the entry, the handler in its nr
        slot, and everything in the jump tables reachable from there."""
        arch_value, nr = key
        arch = layout.arch_of(self.policy, arch_value, nr)
        programs = [self._entry]
        if arch is not None:
            table = self.compiled.arrays[(self.policy.entry_table, arch)]
            index = layout.slot_index(arch, nr)
            if index < table.max_entries and list.__getitem__(table.slots, index) is not None:
                programs.append(list.__getitem__(table.slots, index))
        nr_arrays = {id(a) for (t, a_), a in self.compiled.arrays.items() if a_ is not None}
        seen_arrays: set[int] = set()
        words: set[int] = set()
        i = 0
        while i < len(programs):
            p = getattr(programs[i], "program", programs[i])
            i += 1
            read = ctx_words(p)
            if read is None or IP_WORD in read:
                plan = None
                break
            words |= read
            for m in p.maps:
                if isinstance(m, ProgArray) and id(m) not in nr_arrays | seen_arrays:
                    seen_arrays.add(id(m))
                    programs += [q for q in list(m.slots) if q is not None]
        else:
            args = sorted(w - 2 for w in words if w >= 2)
            plan = _Keyed(args) if args else _ARCH_NR
        with self._lock:
            if self._generation == generation and plan is not _ARCH_NR:
                self._plans[key] = plan
        return plan

    def _path(self, reads: list) -> tuple[str, ...]:
        """The programs a dispatch ran, each after the tail call that reached it (every slot
        read of a tail call that found a program is one: a tail call never returns)."""
        path = [ENTRY]
        for array, index, program in reads:
            if program is not None:
                path += [f"tail_call {array}[{index}]", name_of(program)]
        return tuple(path)

    # --- live updates ---------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Bumped by every slot swap: a caller caching what the tables decide checks it."""
        return self._generation

    def set_slot(self, table: str, key: int | str, handler: str | None, *,
                 arch: str | None = None) -> None:
        """Point slot ``key`` of ``table`` at ``handler`` (a handler name or an action literal;
        None empties the slot), atomically. For an nr table ``key`` is a syscall name or number
        and the update applies to ``arch`` or to every architecture of the policy."""
        pol = self.policy
        if table not in pol.tables:
            raise PolicyError(f"no table '{table}' (tables: {', '.join(pol.tables)})")
        t = pol.tables[table]
        program = None if handler is None else self._handler_program(handler)
        targets: list[tuple[ProgArray, int, str | None]] = []
        if t.index == "nr":
            for a in ([_arch.canonical(arch)] if arch else pol.arches):
                if a not in pol.arches:
                    raise PolicyError(f"architecture '{a}' is not one of the policy's")
                nr = _syscall(a, key)
                if nr is not None:
                    targets.append((self.compiled.arrays[(table, a)], layout.slot_index(a, nr), a))
            if not targets:
                raise PolicyError(f"'{key}' is not a syscall on {', '.join(pol.arches)}")
        else:
            index = key if isinstance(key, int) else constants.lookup(key, pol.arches)
            targets.append((self.compiled.arrays[(table, None)], index, None))
        with self._lock:
            for array, index, a in targets:
                try:
                    if program is None:
                        if array.get(index) is not None:
                            array.delete(index)
                        self.compiled.slots[(table, a)].pop(index, None)
                    else:
                        put_slot(array, index, program)
                        self.compiled.slots[(table, a)][index] = name_of(program)
                except MapError as exc:
                    raise PolicyError(f"table '{array.name}' slot {index}: {exc.message}") from None
            self._generation += 1
            self._plans = {}
            self._cache = {}

    def _handler_program(self, name: str):
        if name in self.compiled.handlers:
            return self.compiled.handlers[name]
        # An action literal makes a one-line handler, as in a policy file.
        from .parse import _Reader  # the one place that reads action literals
        reader = _Reader({}, _NoLocator(), self.policy.path or "<policy>")
        reader.indexes = {n: t.index for n, t in self.policy.tables.items()}
        reader.arches = self.policy.arches
        try:
            act = reader.action(name, ())
        except PolicyError:
            raise PolicyError(f"'{name}' is neither a handler of the policy nor an action") from None
        h = Handler(act.literal, "rules", default=act, synthetic=True)
        from .compile import _Generator
        gen = _Generator(self.policy, self.compiled.arrays, self.compiled.maps)
        prog = gen.finish(gen.handler(h), self._verify)
        self.compiled.handlers[h.name] = prog
        self.policy.handlers[h.name] = h
        return prog


# The slot reads of the dispatch running in this thread (None when none runs): how decide()
# learns which tail call reached each program, exactly, whatever the engine.
_reads = threading.local()


class _ObservedSlots(list):
    """A PROG_ARRAY's slot list that notes each read a tail call makes during a dispatch.
    Reads and item stores stay single list operations, so slot swaps remain atomic."""

    __slots__ = ("array_name",)

    def __init__(self, slots: list, array_name: str) -> None:
        super().__init__(slots)
        self.array_name = array_name

    def __getitem__(self, index):
        program = list.__getitem__(self, index)
        log = getattr(_reads, "log", None)
        if log is not None:
            log.append((self.array_name, index, program))
        return program


def name_of(program: Any) -> str:
    return getattr(program, "program", program).name


class _NoLocator:
    """Locations for text that does not come from a file (live updates)."""

    def value(self, path):
        return None

    key = value


def _syscall(arch: str, key: int | str) -> int | None:
    """The number ``key`` stands for on ``arch``, or None when ``arch`` has no such syscall."""
    if isinstance(key, int):
        return key
    try:
        return _arch.resolve_syscall(arch, key)
    except PolicyError:
        return None
