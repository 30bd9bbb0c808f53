"""The kernel as oracle: install real filters in a real process and observe what seccomp does.

Method (x86_64, root not required but ptrace must be allowed):

1. Fork. The child asks to be traced and stops itself (SIGSTOP) so the tracer can set
   ``PTRACE_O_TRACESECCOMP | PTRACE_O_EXITKILL | PTRACE_O_TRACESYSGOOD`` before any filter
   exists (a RET_TRACE filter with no tracer would make syscalls fail with ENOSYS).
2. The child sets NO_NEW_PRIVS and installs, with the seccomp() syscall, first a *sentinel*
   filter returning ``TRACE(sentinel)`` for the syscall under test (ALLOW otherwise), then the
   filters under test, oldest first; then it makes the syscall with the chosen 64-bit args.
3. The tracer follows every syscall stop (PTRACE_SYSCALL). It reads each install's result at
   its exit stop, checks that the very next syscall is the one under test (anything else in
   between would itself be subject to the filters: that is an :class:`OracleError`, never a
   silent wrong answer), and reads the verdict:

   * a PTRACE_EVENT_SECCOMP stop: the data says which TRACE won. The sentinel's data means
     the filters under test returned ALLOW or LOG (TRACE beats both and the newest filter wins
     a tie, so a TRACE from a filter under test always shows its own data). The syscall is
     skipped (orig_rax = -1) and never runs, whatever it is.
   * the syscall's exit stop followed by a SIGSYS signal-delivery stop: TRAP, with the data in
     ``si_errno``; followed by death by SIGSYS: KILL_THREAD / KILL_PROCESS (a single-threaded
     process dies either way); followed by anything else: ERRNO, the return value is -errno.

Stacking has a catch the kernel imposes: each filter under test also judges the seccomp() calls
that install the newer ones, so every filter but the newest must allow seccomp() (else the outcome
is ``refused`` with that filter's errno, or the child dies while installing: an OracleError).

What the method cannot tell apart (so :func:`observable` maps both sides onto one value):
ALLOW vs LOG; TRACE(sentinel) vs ALLOW; KILL_THREAD vs KILL_PROCESS vs an unknown action;
USER_NOTIF with no listener vs ERRNO(ENOSYS); ERRNO(n > 4095) vs ERRNO(4095) (the kernel caps
it: that is the point). An action above TRACE that is not ALLOW/LOG (an unknown 0x7ffe0000)
also hides behind the sentinel: test those without a sentinel (``sentinel=None``; the syscall
then really runs when allowed, so pick a harmless one whose result is positive, e.g. getppid).

This module sits in the seccomp layer because it answers seccomp questions; it needs the ptrace
layer, which it imports lazily (the only upward import of the seccomp layer, on purpose).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import signal
from dataclasses import dataclass
from typing import Sequence

from ..errors import SysdispatchError
from ..vm.cbpf import CInsn, LDX_ABS_W, RET, decode, encode, OPS
from ..vm.isa import signed32
from . import actions
from .arch import X86_64
from .data import OFF_NR

SECCOMP_SET_MODE_FILTER = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
DEFAULT_SENTINEL = 0xFFFF


class OracleError(SysdispatchError):
    """The oracle could not observe a verdict (the child did something unexpected)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the kernel did, as far as the method can see.

    ``kind``: ``allow`` (ALLOW/LOG), ``trace`` (value: data), ``errno`` (value: errno),
    ``trap`` (value: data), ``kill``, ``refused`` (the filter at index ``value >> 16`` of the
    filters under test was refused at install with errno ``value & 0xffff``), ``installed``.
    """

    kind: str
    value: int = 0

    def __str__(self) -> str:
        if self.kind in ("trace", "trap"):
            return f"{self.kind.upper()}({self.value})"
        if self.kind == "errno":
            return f"ERRNO({self.value})"
        if self.kind == "refused":
            return (f"filter {self.value >> 16} refused: "
                    f"{_errno.errorcode.get(self.value & 0xFFFF, self.value & 0xFFFF)}")
        return self.kind.upper()


def observable(ret: int, *, sentinel: int | None = DEFAULT_SENTINEL) -> Outcome:
    """The outcome the oracle reports when the combined verdict (sentinel included) is ``ret``."""
    ret &= 0xFFFFFFFF
    act, data = actions.action_of(ret), ret & actions.DATA
    if act in (actions.ALLOW, actions.LOG):
        return Outcome("allow")
    if act == actions.TRACE:
        return Outcome("allow") if data == sentinel else Outcome("trace", data)
    if act == actions.ERRNO:
        return Outcome("errno", min(data, actions.MAX_ERRNO))
    if act == actions.USER_NOTIF:
        return Outcome("errno", _errno.ENOSYS)  # no listener
    if act == actions.TRAP:
        return Outcome("trap", data)
    return Outcome("kill")


def predict(rets: Sequence[int], *, sentinel: int | None = DEFAULT_SENTINEL) -> Outcome:
    """What the oracle should observe when the filters under test return ``rets`` (oldest
    first): the sentinel is the oldest filter, then the kernel's precedence."""
    stack = ([actions.TRACE | sentinel] if sentinel is not None else []) + list(rets)
    return observable(actions.combine(stack), sentinel=sentinel)


def sentinel_filter(nr: int, data: int) -> bytes:
    """``if (A == nr) return TRACE(data); return ALLOW`` as raw classic instructions."""
    ld = next(c for c, o in OPS.items() if o.kind == "ld_abs" and o.size == 4)
    jeq = next(c for c, o in OPS.items() if o.kind == "jcc" and o.op == "jeq" and not o.reg)
    assert LDX_ABS_W != ld  # the user form, not the kernel-internal one
    return encode([CInsn(ld, 0, 0, OFF_NR), CInsn(jeq, 0, 1, nr & 0xFFFFFFFF),
                   CInsn(RET, 0, 0, actions.TRACE | data), CInsn(RET, 0, 0, actions.ALLOW)])


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _s64(v: int) -> int:
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >> 63 else v


def _s32(nr: int) -> int:
    """The syscall number as the kernel holds it: a signed 32-bit int (syscall_get_nr() is an
    int, so ptrace reports 0xffffffff as -1; the sentinel compares the same 32 bits)."""
    if not -(1 << 31) <= nr < (1 << 32):
        raise OracleError(f"syscall number {nr:#x} does not fit in 32 bits")
    return signed32(nr)


def kernel_outcome(filters: Sequence[bytes], nr: int | None, args: Sequence[int] = (), *,
                   sentinel: int | None = DEFAULT_SENTINEL) -> Outcome:
    """Install ``filters`` (raw classic bytes, oldest first) in a fresh child and make syscall
    ``nr`` with ``args`` (up to six 64-bit values). ``nr=None`` only installs (the outcome is
    ``installed`` or ``refused``). ``nr`` is the 32-bit ``seccomp_data.nr``, signed (-1) or
    unsigned (0xffffffff) alike. See the module docstring for the method."""
    from ..trace import ptrace as pt  # the seccomp layer's one upward import, see docstring

    if nr is not None:
        nr = _s32(nr)

    sys_seccomp = X86_64.syscall_number("seccomp")
    args = tuple(args) + (0,) * (6 - len(args))
    bufs = []
    progs = []
    installs = ([sentinel_filter(nr, sentinel)] if sentinel is not None and nr is not None
                else []) + list(filters)
    for raw in installs:
        if len(raw) % 8 or not raw:
            decode(raw)  # raises the usual one-line error
        buf = ctypes.create_string_buffer(raw, len(raw))
        bufs.append(buf)
        progs.append(_SockFprog(len(raw) // 8, ctypes.addressof(buf)))
    libc = ctypes.CDLL(None, use_errno=True)
    sc = libc.syscall
    sc.restype = ctypes.c_long
    sc.argtypes = [ctypes.c_long] * 7
    prctl = libc.prctl
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    prog_addrs = [ctypes.addressof(p) for p in progs]
    call_args = [_s64(a) for a in args[:6]]
    first_test_index = len(installs) - len(filters)

    pid = os.fork()
    if pid == 0:  # the child: no Python-level work after the filters are in place
        try:
            prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # a SIGSYS kill must not leave a core file
            pt.traceme()
            os.kill(os.getpid(), signal.SIGSTOP)
            prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            for addr in prog_addrs:
                sc(sys_seccomp, SECCOMP_SET_MODE_FILTER, 0, addr, 0, 0, 0)
            if nr is not None:
                sc(nr, *call_args)
        finally:
            os._exit(0)
    try:
        return _observe(pt, pid, sys_seccomp, len(installs), first_test_index, nr, args,
                        sentinel)
    finally:
        _reap(pid)


def _observe(pt, pid: int, sys_seccomp: int, n_installs: int, first_test: int,
             nr: int | None, args: tuple[int, ...], sentinel: int | None) -> Outcome:
    _, status = pt.wait(pid)
    if not (os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP):
        raise OracleError(f"child did not stop itself (wait status 0x{status:x})")
    pt.setoptions(pid, pt.PTRACE_O_TRACESYSGOOD | pt.PTRACE_O_TRACESECCOMP | pt.PTRACE_O_EXITKILL)
    pt.syscall(pid)
    installed = 0
    in_install = armed = False
    exit_rval: int | None = None  # the test syscall's result, once its exit stop was seen
    while True:
        _, status = pt.wait(pid)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            if exit_rval is not None and os.WIFSIGNALED(status) \
                    and os.WTERMSIG(status) == signal.SIGSYS:
                return Outcome("kill")
            if exit_rval is not None:
                return _returned(exit_rval)
            how = (f"exited with {os.WEXITSTATUS(status)}" if os.WIFEXITED(status)
                   else f"was killed by signal {os.WTERMSIG(status)}")
            if in_install and installed > 0:
                how += (f" while installing filter {installed - first_test} (does an older "
                        f"filter not allow seccomp()?)")
            raise OracleError(f"child {how} before the test syscall completed")
        sig = os.WSTOPSIG(status)
        if exit_rval is not None:
            # The stop after the test syscall's exit: a SIGSYS now is seccomp's TRAP; anything
            # else (the next syscall) means the syscall simply failed with -errno.
            if sig == signal.SIGSYS:
                return Outcome("trap", pt.getsiginfo(pid).errno)
            return _returned(exit_rval)
        if sig == pt.SYSCALL_STOP:
            info = pt.get_syscall_info(pid)
            if info.op == pt.PTRACE_SYSCALL_INFO_ENTRY:
                if installed < n_installs:
                    in_install = (info.nr == sys_seccomp
                                  and info.args[0] == SECCOMP_SET_MODE_FILTER)
                elif nr is None:
                    return Outcome("installed")
                elif armed:
                    raise OracleError(f"unexpected syscall {info.nr} after the test syscall")
                elif info.nr != nr or tuple(info.args) != tuple(a & (2**64 - 1) for a in args):
                    raise OracleError(
                        f"the child made syscall {info.nr} between installing the filters and "
                        f"the test syscall {nr}; its verdict would be misread")
                else:
                    armed = True
            elif info.op == pt.PTRACE_SYSCALL_INFO_EXIT:
                if armed:
                    exit_rval = info.rval
                elif in_install:
                    in_install = False
                    if info.rval < 0:
                        index = installed - first_test
                        if index < 0:
                            raise OracleError(f"the sentinel filter was refused: "
                                              f"{os.strerror(-info.rval)}")
                        return Outcome("refused", (index << 16) | -info.rval)
                    installed += 1
                    if installed == n_installs and nr is None:
                        return Outcome("installed")
            pt.syscall(pid)
        elif pt.is_event_stop(status, pt.PTRACE_EVENT_SECCOMP):
            data = pt.geteventmsg(pid)
            if armed:
                pt.skip_syscall(pid, -_errno.ENOSYS)
                return Outcome("allow") if data == sentinel else Outcome("trace", data)
            pt.syscall(pid)  # the sentinel caught one of the child's own syscalls: let it run
        else:
            pt.syscall(pid, sig)  # pass other signals on


def _returned(rval: int) -> Outcome:
    """A syscall that came back: -errno, or (only without a sentinel, when the syscall really
    ran) a positive result. Without a sentinel, test with a syscall whose success value is
    positive (getppid), so that running is told apart from ERRNO(0)."""
    return Outcome("allow") if rval > 0 else Outcome("errno", -rval)


def _reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            _, status = os.waitpid(pid, 0x40000000)
        except ChildProcessError:
            return
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            return


def kernel_accepts(raw: bytes) -> Outcome:
    """Install one filter and report ``installed`` or ``refused`` (errno in the low 16 bits)."""
    return kernel_outcome([raw], None)
