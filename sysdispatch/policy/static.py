"""Which syscalls a policy allows whatever their arguments: the static-allow analysis.

A syscall is **statically allowed** on an architecture when the policy's verdict is ALLOW for
every argument value: its slot in the entry table is empty and the table default allows, or its
handler allows on every path — a rules handler whose rules, default and the tables it tail-calls
into all end in ``allow``; an asm handler only when the purity analysis
(:func:`sysdispatch.policy.purity.depends_only_on_arch_nr`) proves that its verdict depends on
nothing but (arch, nr) and that verdict is ALLOW. ``log`` is never static: it must be reported.
Anything not proven is dispatched (the safe side: one more stop, never a verdict skipped).

The tracer's kernel prefilter (:mod:`sysdispatch.trace.prefilter`) lets these run without a stop;
the tracer's own fast path skips dispatching them (:func:`static_allowed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..seccomp import actions
from ..seccomp import arch as _sa
from ..seccomp.data import SeccompData
from .loaded import LoadedPolicy
from .model import Act, Handler, Policy
from .purity import depends_only_on_arch_nr

# The arches an x86_64 kernel can hand a seccomp filter.
HOST_ARCHES = ("x86_64", "i386", "x32")


@dataclass
class ArchPlan:
    """The static-allow analysis of one architecture of a policy."""

    arch: str
    allowed: set[int] = field(default_factory=set)       # statically allowed numbers
    dispatched: set[int] = field(default_factory=set)    # numbers the tracer must decide
    empty_slot_allows: bool = False                      # numbers the policy does not list


def _act_allows(policy: Policy, act: Act, seen: set[str]) -> bool:
    if act.ret is not None:
        return act.ret & actions.ACTION_FULL == actions.ALLOW
    table = policy.tables[act.tail_call]
    if table.name in seen:
        return True        # a cycle: its exits are the ones checked on the first visit
    seen.add(table.name)
    return (all(_rules_allow(policy, policy.handlers[h], seen) for h in table.entries.values())
            and _act_allows(policy, policy.table_default(table.name), seen))


def _rules_allow(policy: Policy, handler: Handler, seen: set[str]) -> bool:
    if handler.kind != "rules":
        return False
    return (all(_act_allows(policy, r.then, seen) for r in handler.rules)
            and _act_allows(policy, policy.handler_default(handler), seen))


def _asm_allows(loaded: LoadedPolicy, arch: str, nr: int) -> bool:
    """An asm handler is static only when every program of its dispatch is pure (its verdict a
    function of (arch, nr)) and that verdict, run once, is ALLOW."""
    data = SeccompData(nr, _sa.by_name(arch).audit)
    decision = loaded.decide(data)
    if decision.ret & actions.ACTION_FULL != actions.ALLOW:
        return False
    return all(depends_only_on_arch_nr(loaded.compiled.program(name))
               for name in decision.path[::2])


def plan(loaded: LoadedPolicy, arch: str, *, asm: bool = True) -> ArchPlan:
    """Which syscalls of ``arch`` (one of the policy's) the policy allows whatever the
    arguments, and which it must decide. ``asm=False``: asm handlers are never static (only
    the model is trusted, not the purity analysis)."""
    policy = loaded.policy
    table = policy.tables[policy.entry_table]
    slots = table.by_arch.get(arch, {})
    out = ArchPlan(arch)
    out.empty_slot_allows = _act_allows(policy, policy.table_default(table.name), set())
    for nr in set(_sa.by_name(arch).table) | set(slots):
        name = slots.get(nr)
        if name is None:
            static = out.empty_slot_allows
        else:
            h = policy.handlers[name]
            static = (_rules_allow(policy, h, set()) if h.kind == "rules"
                      else asm and _asm_allows(loaded, arch, nr))
        (out.allowed if static else out.dispatched).add(nr)
    return out


def static_allowed(loaded: LoadedPolicy) -> frozenset[tuple[int, int]]:
    """(seccomp_data.arch, nr) pairs of this host's arches that the policy's model allows
    whatever the arguments — for the tracer's fast path (asm handlers left out)."""
    out = set()
    for name in HOST_ARCHES:
        if name in loaded.policy.arches:
            audit = _sa.by_name(name).audit
            out.update((audit, nr) for nr in plan(loaded, name, asm=False).allowed)
    return frozenset(out)
