"""Applying a verdict at a stop, as the kernel's seccomp would.

The tracer calls :meth:`Enforcer.enforce` at a stop *before* the syscall runs: a
PTRACE_EVENT_SECCOMP stop (spawn mode) or a syscall-entry stop (attach mode). How each action is
emulated, and where the emulation differs from the kernel (kernel/seccomp.c, kernel/signal.c):

ALLOW, LOG
    Continue. (LOG's report is the tracer's event line.)
ERRNO(n)
    Skip the syscall with one SETREGS: ``orig_rax = -1`` (nothing runs), ``rax = -min(n, 4095)``.
TRAP(data)
    Skip the syscall with ``rax = nr`` (the kernel's syscall_rollback leaves the number there),
    send the thread SIGSYS with tgkill, and at its signal-delivery stop replace the siginfo
    (PTRACE_SETSIGINFO) with the one seccomp builds: si_code SYS_SECCOMP, si_errno = data,
    si_call_addr = the instruction pointer, si_syscall, si_arch. The kernel forces this signal
    (force_sig_seccomp): when SIGSYS is blocked or ignored it unblocks it *and resets its
    handler to SIG_DFL*, so the process dies. Emulated: the thread's mask is changed with
    PTRACE_SETSIGMASK, and a handler other than SIG_DFL is reset by making the thread call
    ``rt_sigaction(SIGSYS, {SIG_DFL})`` in place of the trapped syscall (below).
KILL_PROCESS (and any unknown action), KILL_THREAD of the last live thread
    The kernel forces a core-dumping SIGSYS with an immutable SIG_DFL handler: the whole process
    dies, its parent sees WTERMSIG == SIGSYS (shell status 159). Emulated: if SIGSYS has a
    handler or is ignored, the syscall is *replaced* by ``rt_sigaction(SIGSYS, &{SIG_DFL}, NULL,
    8)`` — the zeroed struct sigaction is written over the 32 bytes at the thread's stack
    pointer (always mapped) and put back at the syscall-exit stop; otherwise the syscall is
    skipped. Then SIGSYS is unblocked, sent, and given seccomp's siginfo at delivery, exactly as
    for TRAP: the default action of SIGSYS (core) ends the process. If the replacement fails
    (e.g. the tracee's own filter forbids rt_sigaction), the process is killed with SIGKILL
    and the tracer reports it as killed by SIGSYS. Limits: between the verdict and the
    signal's delivery other threads of the process keep running (every syscall they make is
    still dispatched); a core file appears where the kernel would write one (RLIMIT_CORE).
KILL_THREAD (other threads still alive)
    The kernel ends only that thread (do_exit(SIGSYS)). A tracer cannot make one thread die by
    a signal (every fatal signal ends the whole group), so the syscall is replaced by
    ``exit(0)``: only that thread ends, the others run on. The difference shows only in the
    thread's own exit code, which only a tracer (or, for a leader whose group ends without
    exit_group, the parent) can see.
TRACE(data), USER_NOTIF
    With an ``--on-trace`` hook (:mod:`.hooks`): run, skip with a value, or (TRACE) change the
    number and arguments — then, like the kernel after a tracer's change, the policy is asked
    about the changed call, and TRACE/USER_NOTIF then mean "run". Without a hook: skipped with
    -ENOSYS, as the kernel does with no tracer or no listener.

In audit mode nothing is changed: the verdict is only reported.

The syscalls used for emulation are made in the ABI of the stopped call: i386 numbers and
registers (ebx, ecx, ...) after ``int 0x80``, x86_64's otherwise (an x32 call is replaced by a
64-bit one, which works whether or not the kernel has x32 enabled).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import functools
import os
import signal
from typing import Callable

from ..seccomp import actions
from ..seccomp.arch import I386, X86_64
from ..seccomp.data import AUDIT_ARCH_I386, SeccompData
from ..vm.isa import signed32
from . import hooks as _hooks
from . import ptrace as pt

SIGSYS_BIT = 1 << (signal.SIGSYS - 1)
_U64 = 0xFFFFFFFFFFFFFFFF
_SIGACTION_BYTES = 32    # struct sigaction (64-bit: 8+8+8+8; i386's 20 bytes fit inside)
_SIGSET_BYTES = 8


@functools.lru_cache(maxsize=None)
def _abi(arch: int) -> tuple[int, int, tuple[str, ...]]:
    """(rt_sigaction nr, exit nr, argument registers) of the ABI a stopped call used (numbers
    from libseccomp's tables)."""
    table, regs = ((I386, pt.SYSCALL_ARG_REGS_I386) if arch == AUDIT_ARCH_I386
                   else (X86_64, pt.UserRegs.SYSCALL_ARGS))
    return table.syscall_number("rt_sigaction"), table.syscall_number("exit"), regs


def _make_tgkill() -> Callable[[int, int, int], None]:
    libc = ctypes.CDLL(None, use_errno=True)
    nr = X86_64.syscall_number("tgkill")

    def tgkill(tgid: int, tid: int, sig: int) -> None:
        """Send ``sig`` to one thread (os has no tgkill; signal.pthread_kill is for our own)."""
        if libc.syscall(nr, tgid, tid, sig) != 0:
            err = ctypes.get_errno()
            raise ProcessLookupError(err, os.strerror(err))
    return tgkill


tgkill = _make_tgkill()


def signal_state(tid: int) -> tuple[bool, bool, bool]:
    """(blocked in this thread, ignored, caught) for SIGSYS, from /proc/TID/status (all False
    when the thread is gone: its next ptrace call reports that)."""
    blocked = ignored = caught = False
    try:
        f = open(f"/proc/{tid}/status", "rb")
    except OSError:
        return blocked, ignored, caught
    with f:
        for line in f:
            key, _, value = line.partition(b":")
            if key in (b"SigBlk", b"SigIgn", b"SigCgt"):
                bit = bool(int(value.strip(), 16) & SIGSYS_BIT)
                if key == b"SigBlk":
                    blocked = bit
                elif key == b"SigIgn":
                    ignored = bit
                else:
                    caught = bit
    return blocked, ignored, caught


def live_threads(tgid: int) -> int:
    """Threads of ``tgid`` that have not exited (zombie leaders do not count)."""
    n = 0
    try:
        tids = os.listdir(f"/proc/{tgid}/task")
    except OSError:
        return 0
    for t in tids:
        try:
            with open(f"/proc/{tgid}/task/{t}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0]
        except OSError:
            continue
        if state not in (b"Z", b"X"):
            n += 1
    return n


class Enforcer:
    """Applies verdicts. ``decide(SeccompData) -> ret`` is asked again after a hook changed a
    call; ``report(text)`` takes one-line problems (a failing hook)."""

    def __init__(self, *, audit: bool = False, hook: _hooks.Hook | None = None,
                 decide: Callable[[SeccompData], int] | None = None,
                 report: Callable[[str], None] | None = None) -> None:
        self.audit = audit
        self.hook = hook
        self.decide = decide
        self.report = report or (lambda text: None)
        self.killed: set[int] = set()     # tgids ended with SIGKILL standing in for SIGSYS
        self._reported: set[str] = set()

    # The tracer's thread objects carry: tid, tgid, sigsys (a SigInfo to install at the next
    # SIGSYS delivery stop) and at_exit (a callable run at the next syscall-exit stop).

    def enforce(self, th, nr: int, arch: int, ip: int, args: tuple[int, ...], ret: int) -> bool:
        """Apply verdict ``ret`` to the syscall ``th`` is stopped at. True when the tracer must
        resume so that it sees the syscall-exit stop (th.at_exit is set)."""
        if self.audit:
            return False
        act = actions.action_of(ret)
        if act in (actions.ALLOW, actions.LOG):
            return False
        if act == actions.ERRNO:
            pt.skip_syscall(th.tid, -min(ret & actions.DATA, actions.MAX_ERRNO))
            return False
        if act in (actions.TRACE, actions.USER_NOTIF):
            return self._traced(th, nr, arch, ip, args, ret)
        siginfo = pt.SigInfo.sigsys(signed32(nr), arch, ip, ret & actions.DATA)
        if act == actions.TRAP:
            return self._force_sigsys(th, nr, arch, siginfo, kill=False)
        if act == actions.KILL_THREAD and live_threads(th.tgid) > 1:
            return self._end_thread(th, arch)
        return self._force_sigsys(th, nr, arch, siginfo, kill=True)

    # --- signals -----------------------------------------------------------------------------

    def _force_sigsys(self, th, nr: int, arch: int, siginfo: pt.SigInfo, *, kill: bool) -> bool:
        blocked, ignored, caught = signal_state(th.tid)
        reset = kill or blocked or ignored        # force_sig_info_to_task's rule
        if reset and (caught or ignored):
            return self._reset_then_signal(th, arch, siginfo, blocked)
        regs = pt.getregs(th.tid)
        regs.orig_rax = _U64
        regs.rax = nr & _U64                     # syscall_rollback: the number stays in rax
        pt.setregs(th.tid, regs)
        self._signal(th, siginfo, blocked)
        return False

    def _signal(self, th, siginfo: pt.SigInfo, blocked: bool) -> None:
        if blocked:
            pt.setsigmask(th.tid, pt.getsigmask(th.tid) & ~SIGSYS_BIT)
        th.sigsys = siginfo
        tgkill(th.tgid, th.tid, signal.SIGSYS)

    def _reset_then_signal(self, th, arch: int, siginfo: pt.SigInfo, blocked: bool) -> bool:
        """Replace the syscall by rt_sigaction(SIGSYS, {SIG_DFL}) and signal at its exit."""
        tid = th.tid
        sigaction_nr, _, arg_regs = _abi(arch)
        regs = pt.getregs(tid)
        sp = regs.rsp & (0xFFFFFFFF if arch == AUDIT_ARCH_I386 else _U64)
        try:
            saved = [pt.peekdata(tid, sp + off) for off in range(0, _SIGACTION_BYTES, 8)]
            for off in range(0, _SIGACTION_BYTES, 8):
                pt.pokedata(tid, sp + off, 0)
        except pt.PtraceError:
            return self._sigkill(th)
        regs.orig_rax = sigaction_nr
        for reg, value in zip(arg_regs, (signal.SIGSYS, sp, 0, _SIGSET_BYTES)):
            setattr(regs, reg, value)
        pt.setregs(tid, regs)

        def at_exit() -> None:
            for i, word in enumerate(saved):
                pt.pokedata(tid, sp + 8 * i, word)
            info = pt.get_syscall_info(tid)
            if info.op != pt.PTRACE_SYSCALL_INFO_EXIT or info.rval != 0:
                self._sigkill(th)
                return
            self._signal(th, siginfo, blocked)
        th.at_exit = at_exit
        return True

    def _sigkill(self, th) -> bool:
        self.killed.add(th.tgid)
        try:
            os.kill(th.tgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return False

    def _end_thread(self, th, arch: int) -> bool:
        _, exit_nr, arg_regs = _abi(arch)
        regs = pt.getregs(th.tid)
        regs.orig_rax = exit_nr
        setattr(regs, arg_regs[0], 0)
        pt.setregs(th.tid, regs)
        return False

    # --- TRACE and USER_NOTIF ------------------------------------------------------------------

    def _traced(self, th, nr: int, arch: int, ip: int, args: tuple[int, ...], ret: int) -> bool:
        act = actions.action_of(ret)
        kind = "trace" if act == actions.TRACE else "user_notif"
        if self.hook is None:
            pt.skip_syscall(th.tid, -_errno.ENOSYS)
            return False
        from .decode import syscall_name
        call = _hooks.TraceCall(th.tgid, th.tid, nr, syscall_name(arch, nr), arch, ip,
                                tuple(args), ret & 0xFFFFFFFF, kind)
        try:
            reply = _hooks.normalize(self.hook(call))
            if isinstance(reply, _hooks.Modify) and kind != "trace":
                raise TypeError("a USER_NOTIF listener cannot change a syscall (Modify)")
        except Exception as exc:  # the user's code: report once, then behave as with no hook
            msg = f"--on-trace hook failed: {type(exc).__name__}: {exc}"
            if msg not in self._reported:
                self._reported.add(msg)
                self.report(msg + " (the syscall fails with ENOSYS)")
            pt.skip_syscall(th.tid, -_errno.ENOSYS)
            return False
        if reply is None:
            return False
        if isinstance(reply, _hooks.Skip):
            pt.skip_syscall(th.tid, reply.value)
            return False
        return self._modify(th, nr, arch, ip, args, reply)

    def _modify(self, th, nr: int, arch: int, ip: int, args: tuple[int, ...],
                change: _hooks.Modify) -> bool:
        new_nr = nr if change.nr is None else change.nr
        new_args = tuple(args)
        if change.args is not None:
            new_args = tuple(change.args[:6]) + new_args[len(change.args[:6]):]
        regs = pt.getregs(th.tid)
        regs.orig_rax = new_nr & _U64
        for reg, value in zip(_abi(arch)[2], new_args):
            setattr(regs, reg, value & _U64)
        pt.setregs(th.tid, regs)
        if self.decide is None:
            return False
        ret = self.decide(SeccompData(signed32(new_nr), arch, ip, new_args))
        act = actions.action_of(ret)
        if act in (actions.TRACE, actions.USER_NOTIF):
            return False
        return self.enforce(th, new_nr, arch, ip, new_args, ret)


