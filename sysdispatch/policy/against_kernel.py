"""The emulator's verdicts checked against the kernel running the same policy.

:func:`against_kernel` exports the policy through libseccomp (:mod:`.kernel`), then, for each
test invocation, asks the kernel oracle (:mod:`sysdispatch.seccomp.oracle`: a forked child
installs a sentinel TRACE filter and the exported filter, makes the syscall, and a ptrace tracer
reads what seccomp did — the syscall itself never runs) and compares with what the emulator
decides for the same ``seccomp_data``, mapped through the oracle's :func:`observable` (which
folds together what the method cannot tell apart, e.g. ALLOW and LOG).

Invocations: first the interesting ones (every syscall slot with conditions, with each
condition's edge values — v-1, v, v+1, mask bits — in its argument; a syscall of each
unconditional handler; an empty slot; a number past the table; x32 numbers), then random
syscall numbers with random 64-bit arguments, up to ``cases``. Only the machine's own
architecture can be exercised (syscalls of x86_64, and x32 numbers, which reach seccomp as
x86_64 with bit 30 set); i386 calls would need ``int 0x80`` and are not run.

x32 arguments are kept below 2**32: libseccomp treats x32 as a 32-bit arch and compares only
the low word of an argument, while the kernel passes x32 arguments as full 64-bit registers and
the emulator compares all 64 bits. So an x32 call with upper argument bits set can be decided
differently by a libseccomp filter (Docker's included) than by the policy it came from — a
limit of libseccomp, shown by tests/policy/test_bridge_kernel.py, not checked here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from ..seccomp import actions
from ..seccomp import arch as _sa
from ..seccomp.data import SeccompData
from . import kernel, scmp_arch
from .model import Cond, Policy

U64 = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True, slots=True)
class Divergence:
    data: SeccompData
    emulator: int          # the emulator's seccomp return value
    expected: object       # oracle.Outcome the emulator's verdict predicts
    kernel: object         # oracle.Outcome the kernel showed

    def __str__(self) -> str:
        arch = _sa.for_number(_sa.by_audit(self.data.arch) or _sa.X86_64, self.data.nr)
        name = arch.syscall_name(self.data.nr) or str(self.data.nr)
        args = ", ".join(f"{a:#x}" for a in self.data.args)
        return (f"{name}({args}) on {arch.name}: emulator {actions.describe(self.emulator)} "
                f"(observable as {self.expected}), kernel {self.kernel}")


@dataclass
class Report:
    policy: str
    cases: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    arches: tuple[str, ...] = ()
    not_run: tuple[str, ...] = ()   # policy arches the oracle cannot exercise here

    @property
    def ok(self) -> bool:
        return not self.divergences

    def __str__(self) -> str:
        head = (f"{self.policy}: {self.cases} invocations against the kernel "
                f"({', '.join(self.arches)}), {len(self.divergences)} divergences")
        if self.not_run:
            head += f"; not runnable here: {', '.join(self.not_run)}"
        return "\n".join([head] + [f"  {d}" for d in self.divergences])


def emulator_decide(policy: Policy, engine: str = "interp") -> Callable[[SeccompData], int]:
    """The emulator's verdict: the compiled policy (entry program, jump tables, handler programs)
    run on the BPF machine by :class:`~sysdispatch.policy.loaded.LoadedPolicy`."""
    from .loaded import LoadedPolicy
    loaded = LoadedPolicy(policy, engine=engine)
    return lambda data: loaded.decide(data).ret


def _conds(policy: Policy, hname: str, seen: set[str]) -> list[Cond]:
    """Every condition a handler may test, following tail calls into args tables."""
    if hname in seen or hname not in policy.handlers:
        return []
    seen.add(hname)
    h = policy.handlers[hname]
    out: list[Cond] = []
    acts = [r.then for r in h.rules] + [h.default or policy.default]
    for r in h.rules:
        out.extend(r.conds)
    for act in acts:
        while act is not None and act.tail_call is not None:
            t = policy.tables[act.tail_call]
            if t.arg is None or act.tail_call in seen:
                break
            seen.add(act.tail_call)
            out.extend(Cond(t.arg, "==", k) for k in t.entries)
            for h2 in t.entries.values():
                out.extend(_conds(policy, h2, seen))
            act = t.default
    return out


def invocations(policy: Policy, cases: int, seed: int = 0) -> list[SeccompData]:
    """The test invocations, interesting ones first, ``cases`` in all (deterministic)."""
    rng = random.Random(seed)
    native = _sa.native()
    runnable = [a for a in (native, _sa.X32) if a is native or a.name in policy.arches]
    if native is _sa.X86_64 and _sa.X32 not in runnable:
        runnable.append(_sa.X32)  # x32 numbers reach an x86_64-only filter too: bad_arch there
    entry = policy.tables[policy.entry_table]
    groups: list[list[SeccompData]] = []   # one per (slot, condition): interleaved below
    for a in runnable:
        slots = entry.by_arch.get(a.name, {})
        by_handler: dict[str, list[int]] = {}
        for nr, h in sorted(slots.items()):
            by_handler.setdefault(h, []).append(nr)
        for h, nrs in by_handler.items():
            conds = _conds(policy, h, set())
            if not conds:
                groups.append([SeccompData(rng.choice(nrs), native.audit, args=_rand_args(rng))])
                continue
            for nr in nrs:
                for c in conds:
                    group = []
                    for v in c.interesting_values():
                        args = list(_rand_args(rng, small=True))
                        args[c.arg] = v
                        group.append(SeccompData(nr, native.audit, args=tuple(args)))
                    rng.shuffle(group)
                    groups.append(group)
        empty = [nr for nr in a.table if nr not in slots]
        extra = [SeccompData(a.nr_base + 1000, native.audit), SeccompData(-1, native.audit)]
        if empty:
            extra.append(SeccompData(rng.choice(empty), native.audit))
        groups.append(extra)
    # round robin over the groups, so that a small budget still touches every slot and condition
    out: list[SeccompData] = []
    depth = 0
    while len(out) < cases and any(depth < len(g) for g in groups):
        out += [g[depth] for g in groups if depth < len(g)]
        depth += 1
    out = out[:cases]
    numbers = [nr for a in runnable for nr in a.table]
    while len(out) < cases:
        out.append(SeccompData(rng.choice(numbers), native.audit, args=_rand_args(rng)))
    return [_fit(d) for d in out]


def _fit(d: SeccompData) -> SeccompData:
    """Arguments cut to what libseccomp compares on the call's arch (see the docstring)."""
    arch = _sa.for_number(_sa.native(), d.nr)
    dmax = scmp_arch.arg_max(arch.name)
    if dmax == U64:
        return d
    return SeccompData(d.nr, d.arch, d.instruction_pointer, tuple(a & dmax for a in d.args))


def _rand_args(rng: random.Random, small: bool = False) -> tuple[int, ...]:
    if small:
        return tuple(rng.choice((0, 1, 2, 0xFFFFFFFF)) for _ in range(6))
    return tuple(rng.choice((0, rng.getrandbits(8), rng.getrandbits(32), rng.getrandbits(64)))
                 for _ in range(6))


def against_kernel(policy: Policy, cases: int = 200, seed: int = 0, *,
                   decide: Callable[[SeccompData], int] | None = None) -> Report:
    """Compare the emulator with the kernel on ``cases`` invocations. ``decide`` gives the
    emulator's return value for a seccomp_data (default: the compiled policy on the
    interpreter, :func:`emulator_decide`)."""
    from ..seccomp import oracle  # needs the ptrace layer: imported only when checking

    bpf = kernel.export_bpf(policy)  # first: a policy the kernel cannot run is refused here
    decide = decide or emulator_decide(policy)
    native = _sa.native()
    report = Report(policy.name, arches=tuple(a for a in (native.name, "x32")
                                              if a == native.name or a in policy.arches),
                    not_run=tuple(a for a in policy.arches
                                  if a not in (native.name, "x32")))
    for data in invocations(policy, cases, seed):
        ret = decide(data)
        expected = oracle.predict([ret])
        got = oracle.kernel_outcome([bpf], data.nr, data.args)
        report.cases += 1
        if got != expected:
            report.divergences.append(Divergence(data, ret, expected, got))
    return report
