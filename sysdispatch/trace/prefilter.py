"""The kernel prefilter: a real seccomp filter, built with libseccomp, that decides which syscalls
of a spawned command stop in the tracer at all.

A ptrace stop costs tens of microseconds; most programs spend most of their syscalls on calls a
policy allows whatever their arguments (``read``, ``write``, ``mmap`` ... under a default-allow
policy). The prefilter returns ``SECCOMP_RET_ALLOW`` for those and ``SECCOMP_RET_TRACE(0)`` for
every syscall the policy must decide, so the tracer sees one PTRACE_EVENT_SECCOMP stop per
*dispatched* syscall and none for the rest.

A syscall is **statically allowed** on an architecture when the policy's verdict is ALLOW for
every argument value: its slot in the entry table is empty and the table default allows, or its
handler allows on every path — a rules handler whose rules, default and the tables it tail-calls
into all end in ``allow``; an asm handler only when the purity analysis
(:func:`sysdispatch.policy.purity.depends_only_on_arch_nr`) proves that its verdict depends on
nothing but (arch, nr) and that verdict is ALLOW. ``log`` is never static: it must be reported.
Anything not proven is dispatched (the safe side: one more stop, never a verdict skipped).

Arches: this host's kernel produces x86_64, i386 (``int 0x80``) and x32 (bit 0x40000000) calls.
Each of those the policy lists gets a single-arch libseccomp filter of its own (the tables are
per arch); they are merged into one. A call of an arch the policy does not list, or one
libseccomp cannot place, takes the BADARCH action, TRACE, so the policy's ``bad_arch`` decides.
Rules are added by name; on i386, libseccomp routes a rule for a socket or SysV-IPC call to the
``socketcall``/``ipc`` multiplexer too, so those names never get an ALLOW rule there. Syscall
number -1 (what a tracer's skip leaves) passes libseccomp's arch checks to the default action,
as it reaches the policy's empty-slot default (policy.layout: nr -1 is x86_64's, in no table).

Modes where every syscall must be seen (``--all``, ``--record``, ``--summary``, ``--audit``,
``--dashboard``)
use :func:`trace_all`: TRACE for everything. Live slot swaps (LoadedPolicy.set_slot) cannot
change a filter already in the kernel: a slot that becomes non-static after the command
started is only seen for syscalls the prefilter already traces.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field

import pyseccomp

from ..errors import TraceError
from ..policy import scmp_arch
from ..policy.loaded import LoadedPolicy
from ..policy.model import Act, Handler, Policy
from ..policy.purity import depends_only_on_arch_nr
from ..seccomp import actions
from ..seccomp import arch as _sa
from ..seccomp.data import SeccompData

# The arches an x86_64 kernel can hand a seccomp filter.
HOST_ARCHES = ("x86_64", "i386", "x32")

_PR_SET_NO_NEW_PRIVS = 38


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


def _named(arch: str, nrs: set[int]) -> dict[int, str] | None:
    """Names for ``nrs`` on ``arch`` (None when one has none: libseccomp places rules by name)."""
    table = _sa.by_name(arch).table
    out = {}
    for nr in nrs:
        if nr not in table:
            return None
        out[nr] = table[nr]
    return out


def _arch_filter(arch: str, default: int, rules: dict[int, str], rule_action: int):
    f = pyseccomp.SyscallFilter(default)
    f.set_attr(pyseccomp.Attr.ACT_BADARCH, actions.TRACE)
    native = _sa.native().name
    if arch != native:
        f.add_arch(scmp_arch.token(arch))
        f.remove_arch(scmp_arch.token(native))
    for nr, name in sorted(rules.items()):
        f.add_rule(rule_action, name)
    return f


def build(loaded: LoadedPolicy) -> "pyseccomp.SyscallFilter":
    """The prefilter for ``loaded``'s policy (see the module docstring)."""
    policy = loaded.policy
    plans = [plan(loaded, a) for a in HOST_ARCHES if a in policy.arches]
    if not plans:
        return trace_all()
    # libseccomp merges only filters with one default action: ALLOW when every arch can say
    # "trace these few by name, allow the rest" and that is the shorter list, else TRACE.
    named = {p.arch: _named(p.arch, p.dispatched) for p in plans}
    allow_default = all(p.empty_slot_allows and named[p.arch] is not None for p in plans) and \
        sum(len(p.dispatched) for p in plans) <= sum(len(p.allowed) for p in plans)
    merged = None
    for p in plans:
        if allow_default:
            f = _arch_filter(p.arch, actions.ALLOW, named[p.arch], actions.TRACE)
        else:
            allowed = {nr: n for nr, n in _sa.by_name(p.arch).table.items()
                       if nr in p.allowed
                       and not (p.arch == "i386" and scmp_arch.multiplexer(p.arch, n))}
            f = _arch_filter(p.arch, actions.TRACE, allowed, actions.ALLOW)
        if merged is None:
            merged = f
        else:
            merged.merge(f)
    return merged


def trace_all() -> "pyseccomp.SyscallFilter":
    """A filter that sends every syscall of every arch to the tracer."""
    f = pyseccomp.SyscallFilter(actions.TRACE)
    f.set_attr(pyseccomp.Attr.ACT_BADARCH, actions.TRACE)
    return f


def export(f: "pyseccomp.SyscallFilter") -> bytes:
    """The classic BPF program libseccomp loads for ``f``."""
    from ..seccomp.cfilter import export_libseccomp
    return export_libseccomp(f)


def programs(loaded: LoadedPolicy | None, *, dispatch_all: bool) -> list[bytes]:
    """The classic programs to install, oldest first: everything traced with ``dispatch_all``
    (or no policy), else :func:`build`'s filter (everything traced if libseccomp refuses a
    rule: one stop too many is safe, a guess is not)."""
    if dispatch_all or loaded is None:
        return [export(trace_all())]
    try:
        return [export(build(loaded))]
    except OSError:
        return [export(trace_all())]


class Loader:
    """Installs prefilter programs in the calling process (the forked child, before exec).

    The programs are exported in the parent, so the child only makes system calls:
    prctl(PR_SET_NO_NEW_PRIVS) and seccomp(SECCOMP_SET_MODE_FILTER) per program."""

    SECCOMP_SET_MODE_FILTER = 1

    class _Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    def __init__(self, programs: list[bytes]) -> None:
        self._bufs, self._progs = [], []
        for program in programs:
            if not program or len(program) % 8:
                raise TraceError(f"prefilter: bad classic program ({len(program)} bytes)")
            buf = ctypes.create_string_buffer(program, len(program))
            self._bufs.append(buf)
            self._progs.append(self._Fprog(len(program) // 8, ctypes.addressof(buf)))
        libc = ctypes.CDLL(None, use_errno=True)
        self._prctl = libc.prctl
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._nr = _sa.native().syscall_number("seccomp")

    def install(self) -> None:
        """In the child: no_new_privs, then the filters. Raises OSError on failure."""
        if self._prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
        for prog in self._progs:
            if self._syscall(ctypes.c_long(self._nr), ctypes.c_long(self.SECCOMP_SET_MODE_FILTER),
                             ctypes.c_long(0), ctypes.c_void_p(ctypes.addressof(prog))) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"seccomp(SET_MODE_FILTER): {os.strerror(err)}")
