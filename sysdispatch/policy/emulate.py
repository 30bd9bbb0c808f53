"""Emulating a policy file for ``sysdispatch emu POLICY.toml SYSCALL [ARG...]`` and ``--sweep``.

:func:`policy_emulator` turns a policy path into a :class:`PolicyEmulator`: a seccomp filter as
:mod:`sysdispatch.seccomp.stack` knows filters (so a policy stacks with classic and eBPF filters)
that also tells *how* it decided — the dispatch path, the tail calls, the handler::

    syscall_entry -> tail_call syscalls[257] -> openat_rules -> return ERRNO(13)

Importing this module registers the ``.toml`` suffix with :func:`sysdispatch.seccomp.stack.
register_loader`, so ``load_filter("x.toml")`` gives a PolicyEmulator.

The sweep runs every syscall libseccomp knows on the architecture (and every number a table
names) with all arguments 0, then, for the handler in that syscall's slot and each of its rules:
arguments that make the whole rule true, and each condition's own interesting values
(:meth:`Cond.interesting_values`) with the other conditions kept true; and each key of a table
the handler tail-calls into (with its neighbours and its value plus 2**32) in the argument the
table is indexed by.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PolicyError
from ..seccomp import actions
from ..seccomp import stack as _stack
from ..seccomp.data import SeccompData
from . import _arch, constants, layout
from .compile import ENTRY
from .loaded import Decision, LoadedPolicy
from .model import Act, Policy

U64 = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True, slots=True)
class SweepRow:
    data: SeccompData
    name: str | None          # the syscall's name on the swept architecture
    decision: Decision


class PolicyEmulator(_stack.Filter):
    """A policy loaded on the BPF machine, usable wherever a seccomp filter is."""

    kind = "policy"

    def __init__(self, loaded: LoadedPolicy, *, name: str = "policy") -> None:
        self.loaded = loaded
        self.policy: Policy = loaded.policy
        self.name = name

    # --- the Filter interface -------------------------------------------------------------------

    def __len__(self) -> int:
        """Instructions in all the policy's programs."""
        c = self.loaded.compiled
        return sum(len(c.program(n)) for n in [ENTRY, *c.handlers])

    def kernel_len(self) -> int:
        return len(self)

    def run(self, data: SeccompData) -> _stack.FilterRun:
        return _stack.FilterRun(self.decide(data).ret)

    def listing(self, arch: Any = None) -> list[str]:
        from ..vm.disasm import disassemble
        return disassemble(self.loaded.compiled.program(ENTRY)).splitlines()

    # --- dispatch -------------------------------------------------------------------------------

    def arch(self, name: str | None = None) -> str:
        """The policy architecture to emulate: ``name``, or the policy's first."""
        # An architecture the policy does not list is still emulated: its numbers resolve, and
        # the entry program answers bad_arch.
        return self.policy.arches[0] if name is None else _arch.canonical(name)

    def data(self, syscall: str | int, args=(), *, arch: str | None = None,
             ip: int = 0) -> SeccompData:
        """The seccomp_data of a call given by name or number, with arguments as integers or
        constant names (O_CREAT|O_TRUNC)."""
        a = self.arch(arch)
        nr = syscall if isinstance(syscall, int) else _arch.resolve_syscall(a, syscall)
        if len(args) > 6:
            raise PolicyError(f"a syscall has at most 6 arguments, got {len(args)}")
        values = tuple(_value(v, self.policy.arches) for v in args)
        return SeccompData(nr, _arch.audit_arch(a), ip, values)

    def decide(self, data: SeccompData) -> Decision:
        return self.loaded.decide(data)

    def call(self, syscall: str | int, args=(), *, arch: str | None = None, ip: int = 0) -> Decision:
        return self.decide(self.data(syscall, args, arch=arch, ip=ip))

    def report(self, data: SeccompData, decision: Decision) -> str:
        """What ``emu`` prints for one call."""
        name = self.syscall_name(data)
        args = ", ".join(hex(a) if a > 9 else str(a) for a in data.args)
        return (f"{name}({args})\n"
                f"  {decision.describe()}\n"
                f"  tail calls: {decision.tail_calls}\n"
                f"  verdict: {actions.describe(decision.ret)}\n")

    def to_json(self, data: SeccompData, decision: Decision) -> dict:
        return {"syscall": self.syscall_name(data), "nr": data.nr, "arch": f"0x{data.arch:08x}",
                "args": list(data.args), "path": list(decision.path),
                "tail_calls": decision.tail_calls, "handler": decision.handler,
                "ret": decision.ret, "verdict": actions.describe(decision.ret)}

    def syscall_name(self, data: SeccompData) -> str:
        arch = layout.arch_of(self.policy, data.arch & 0xFFFFFFFF, data.nr & 0xFFFFFFFF)
        name = _arch.syscall_name(arch, data.nr) if arch else None
        return name or f"syscall_{data.nr}"

    # --- sweep ----------------------------------------------------------------------------------

    def sweep(self, arch: str | None = None, *, ip: int = 0) -> list[SweepRow]:
        """Every syscall of ``arch`` with interesting arguments; see the module docstring."""
        a = self.arch(arch)
        audit = _arch.audit_arch(a)
        names = _arch.syscalls(a)
        table = self.policy.tables[self.policy.entry_table]
        numbers = sorted(set(names) | set(table.by_arch.get(a, {})))
        rows = []
        for nr in numbers:
            handler = table.by_arch.get(a, {}).get(nr)
            for args in self._arg_vectors(handler):
                data = SeccompData(nr, audit, ip, args)
                rows.append(SweepRow(data, names.get(nr), self.decide(data)))
        return rows

    def _arg_vectors(self, handler: str | None) -> list[tuple[int, ...]]:
        vectors = [(0,) * 6]
        if handler is None:
            return vectors
        seen_tables: set[str] = set()
        todo = [handler]
        done: set[str] = set()
        while todo:  # the handler, and handlers it may reach through tables
            h = self.policy.handlers[todo.pop()]
            if h.name in done:
                continue
            done.add(h.name)
            acts: list[Act] = [r.then for r in h.rules] + [self.policy.handler_default(h)]
            for rule in h.rules:
                base = _satisfying(rule.conds)
                vectors.append(base)
                for c in rule.conds:   # each condition's edges, the others kept true
                    for v in c.interesting_values():
                        vectors.append(base[:c.arg] + (v,) + base[c.arg + 1:])
            for act in acts:
                while act.tail_call is not None and act.tail_call not in seen_tables:
                    t = self.policy.tables[act.tail_call]
                    seen_tables.add(t.name)
                    for k, target in t.entries.items():
                        todo.append(target)
                        for v in (k, k - 1, k + 1, k | (1 << 32)):
                            vectors.append(_with_arg(t.arg, v & U64))
                    act = self.policy.table_default(t.name)
        return list(dict.fromkeys(vectors))

    def format_sweep(self, rows: list[SweepRow]) -> str:
        """One line per syscall whose verdict never changes, one per verdict otherwise; then
        the handlers the sweep reached."""
        out = []
        by_nr: dict[int, list[SweepRow]] = {}
        for r in rows:
            by_nr.setdefault(r.data.nr, []).append(r)
        for nr, group in by_nr.items():
            name = group[0].name or f"syscall_{nr}"
            verdicts: dict[int, SweepRow] = {}
            for r in group:
                verdicts.setdefault(r.decision.ret, r)
            for ret, r in verdicts.items():
                args = "" if len(verdicts) == 1 else \
                    " args=(" + ", ".join(hex(a) for a in r.data.args) + ")"
                out.append(f"{nr:>10}  {name:<22} {actions.describe(ret):<16} "
                           f"{r.decision.handler or '-'}{args}")
        reached = {r.decision.handler for r in rows if r.decision.handler}
        handlers = self.loaded.compiled.handlers
        never = sorted(set(handlers) - reached)
        out.append(f"handlers reached: {len(reached & set(handlers))}/{len(handlers)}"
                   + (f" (never: {', '.join(never)})" if never else ""))
        counts: dict[str, int] = {}
        for r in rows:
            counts[actions.describe(r.decision.ret)] = counts.get(
                actions.describe(r.decision.ret), 0) + 1
        out.append(f"{len(rows)} calls: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        return "\n".join(out) + "\n"

    def sweep_json(self, rows: list[SweepRow]) -> list[dict]:
        return [self.to_json(r.data, r.decision) for r in rows]


def _satisfying(conds) -> tuple[int, ...]:
    """Arguments that make every condition true where the conditions' own edge values can
    (0 for an argument no such value satisfies)."""
    args = [0] * 6
    for arg in {c.arg for c in conds}:
        on_arg = [c for c in conds if c.arg == arg]
        for v in sorted({v for c in on_arg for v in c.interesting_values()}):
            args[arg] = v
            if all(c.holds(args) for c in on_arg):
                break
        else:
            args[arg] = 0
    return tuple(args)


def _with_arg(i: int, v: int) -> tuple[int, ...]:
    args = [0] * 6
    args[i] = v & U64
    return tuple(args)


def _value(v: int | str, arches) -> int:
    if isinstance(v, int):
        return v & U64
    total = 0
    for term in v.split("|"):
        term = term.strip()
        try:
            total |= int(term, 0) & U64
        except ValueError:
            total |= constants.lookup(term, arches) & U64
    return total


def policy_emulator(path: str | Path, *, engine: str = "interp") -> PolicyEmulator:
    """The policy at ``path`` loaded for emulation (PolicyError on any mistake in it)."""
    return PolicyEmulator(LoadedPolicy.from_file(path, engine=engine), name=str(path))


def _load(path: Path, arch: Any) -> PolicyEmulator:
    return policy_emulator(path)


_stack.register_loader(".toml", _load)
