"""The kernel prefilter: a real seccomp filter, built with libseccomp, that decides which syscalls
of a spawned command stop in the tracer at all.

A ptrace stop costs tens of microseconds; most programs spend most of their syscalls on calls a
policy allows whatever their arguments (``read``, ``write``, ``mmap`` ... under a default-allow
policy). The prefilter returns ``SECCOMP_RET_ALLOW`` for those and ``SECCOMP_RET_TRACE(0)`` for
every syscall the policy must decide, so the tracer sees one PTRACE_EVENT_SECCOMP stop per
*dispatched* syscall and none for the rest.

Which syscalls are *statically allowed* (ALLOW whatever the arguments) is the policy layer's
analysis, :mod:`sysdispatch.policy.static`; this module turns its plan into libseccomp rules.

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

import pyseccomp

from ..errors import TraceError
from ..policy import scmp_arch
from ..policy.loaded import LoadedPolicy
from ..policy.static import HOST_ARCHES, plan
from ..seccomp import actions
from ..seccomp import arch as _sa

_PR_SET_NO_NEW_PRIVS = 38


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
