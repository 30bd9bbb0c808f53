"""Reading the classic seccomp filters of processes: the ptrace side of ``sysdispatch filter dump``.

* :func:`dump_pid` — the filters a running process has now (PTRACE_SECCOMP_GET_FILTER), oldest
  first; the process is stopped for a moment and left running.
* :func:`dump_command` — run a command under ptrace, following every fork, vfork and clone, and
  collect each filter at the syscall-exit stop of the seccomp(SECCOMP_SET_MODE_FILTER) or
  prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER) call that installed it, read from the *task* that
  made the call.

Why per task: a filter belongs to a thread, not to a process. A thread that installs one without
SECCOMP_FILTER_FLAG_TSYNC changes only its own chain (its siblings keep theirs; threads created
later inherit their creator's), and PTRACE_SECCOMP_GET_FILTER reads the chain of the one task it
names (tests/trace/test_dump.py asks the kernel). A child's chain starts as a copy of its parent's;
the result attributes each filter to the process whose task *installed* it, so every filter is
listed once.

When the run ends: with a limit, after N filters in all (or when every traced task has exited);
without one, when every traced task has exited or once a process that installed filters has exec'd (its set is complete, as seccomp-tools takes it) and
every process still alive is such a process or one of their ancestors (a shell or launcher waiting
for it). Other live processes (a sibling that may still install one) keep the run going; a process
its waiting ancestor would fork only later is not waited for (``sh -c 'a; b'`` ends when ``a``
execs after its filters: give a limit to see ``b``'s). Then
every tracee is killed and reaped: nothing stopped, traced or zombie is left behind by us.

The loop waits with ``waitpid(-1, __WALL)``: a caller should have no other children whose exit it
wants to collect while :func:`dump_command` runs (the CLI has none).
"""

from __future__ import annotations

import errno as _errno
import os
import signal
from dataclasses import dataclass

from ..errors import TraceError
from ..seccomp import arch as _arch
from . import ptrace as pt

# include/uapi/linux/prctl.h and include/uapi/linux/seccomp.h
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3   # success returns a listener fd (> 0), not 0

_OPTIONS = (pt.PTRACE_O_TRACESYSGOOD | pt.PTRACE_O_TRACEEXEC | pt.PTRACE_O_EXITKILL
            | pt.PTRACE_O_TRACEFORK | pt.PTRACE_O_TRACEVFORK | pt.PTRACE_O_TRACECLONE)
_NEW_TASK_EVENTS = frozenset({pt.PTRACE_EVENT_FORK, pt.PTRACE_EVENT_VFORK,
                              pt.PTRACE_EVENT_CLONE})
_STOP_SIGNALS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})


def root_hint(exc: TraceError) -> TraceError:
    """``exc`` reworded when the kernel refused for lack of privilege."""
    if getattr(exc, "errno", None) in (_errno.EPERM, _errno.EACCES):
        return TraceError(f"reading seccomp filters needs root (CAP_SYS_ADMIN, and not being "
                          f"under seccomp yourself): {exc}")
    return exc


def dump_pid(pid: int) -> list[bytes]:
    """The filters of running process ``pid`` (its thread-group leader), oldest first."""
    try:
        pt.seize(pid)
    except TraceError as exc:
        if getattr(exc, "errno", None) == _errno.ESRCH:
            raise TraceError(f"no process {pid}") from None
        raise root_hint(exc) from None
    try:
        pt.interrupt(pid)
        while True:
            _, status = pt.wait(pid)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                raise TraceError(f"process {pid} exited before its filters could be read")
            if pt.event(status) == pt.PTRACE_EVENT_STOP:
                break
            # A signal arrived first: deliver it and keep waiting for our interrupt.
            pt.cont(pid, os.WSTOPSIG(status) if os.WSTOPSIG(status) != signal.SIGTRAP else 0)
        try:
            return pt.seccomp_filters(pid)
        except TraceError as exc:
            raise root_hint(exc) from None
    finally:
        try:
            pt.detach(pid)
        except TraceError:
            pass


def dump_command(cmd: list[str], *, limit: int = 0) -> dict[int, list[bytes]]:
    """Run ``cmd`` and its descendants under ptrace; the filters they install, by process:
    ``{pid: [raw filter, ...]}``, each list oldest first, the processes in the order they
    installed their first filter. ``limit`` > 0 stops after that many filters in all, and only
    then (or when all have exited): an exec after filters does not end the run."""
    if not cmd:
        raise TraceError("no command to run")
    r, w = os.pipe()  # carries an exec failure back from the child
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.set_inheritable(w, False)
            pt.traceme()
            os.kill(os.getpid(), signal.SIGSTOP)   # wait here until the options are set
            os.execvp(cmd[0], cmd)
        except OSError as exc:
            os.write(w, f"{cmd[0]}: {exc.strerror}".encode())
        finally:
            os._exit(127)
    os.close(w)
    run = _Run(pid, limit)
    try:
        _, status = pt.wait(pid)
        if os.WIFSTOPPED(status):
            pt.setoptions(pid, _OPTIONS)
            pt.syscall(pid)
            run.loop()
        else:
            run.tasks.clear()
    finally:
        run.kill_all()
        failure = os.read(r, 4096).decode(errors="replace")
        os.close(r)
    if failure:
        raise TraceError(failure)
    return run.filters


@dataclass(slots=True)
class _Task:
    """One traced thread: its process, and the install whose exit stop it is waiting for."""

    tgid: int
    install_flags: int | None = None   # set at the entry stop of a filter install


class _Run:
    """The state of one :func:`dump_command` run, kept per task (entry/exit stops of different
    tasks interleave) and per process (filters, exec'd-after-filters, parent)."""

    def __init__(self, pid: int, limit: int) -> None:
        self.first = pid
        self.limit = limit
        self.tasks: dict[int, _Task] = {pid: _Task(pid)}
        self.parent: dict[int, int] = {}            # tgid -> parent tgid, as first seen
        self.filters: dict[int, list[bytes]] = {}   # tgid -> filters it installed
        self.count = 0
        self.complete: set[int] = set()             # tgids that exec'd after installing
        self.announced: set[int] = set()            # new tasks whose initial SIGSTOP is due
        # Tasks already reaped: a new task can stop, run and exit before its creator's
        # fork/clone event is reported, and that late event must not bring it back.
        self.reaped: set[int] = set()

    # --- the loop ----------------------------------------------------------------------------

    def loop(self) -> None:
        while self.tasks:
            try:
                tid, status = pt.wait(-1)
            except ChildProcessError:
                return  # nothing left to wait for: every task has been reaped
            if not os.WIFSTOPPED(status):
                self.reaped.add(tid)
                task = self.tasks.pop(tid, None)
                if task is not None and self._process_gone(task.tgid) and self._settled():
                    return
                continue
            try:
                if self._stop(tid, status):
                    return
            except pt.PtraceError as exc:
                # Killed while stopped (a sibling thread's exit_group or exec, a SIGKILL): its
                # exit comes next.
                if exc.errno != _errno.ESRCH:
                    raise

    def _stop(self, tid: int, status: int) -> bool:
        """Handle one ptrace stop and resume the task; True when the run is over."""
        task = self.tasks.get(tid)
        sig = os.WSTOPSIG(status)
        if task is None:
            # A new task whose creator's fork/clone event has not been reported yet: its
            # first stop is the SIGSTOP every auto-attached task starts with.
            self._adopt(tid)
            self._resume(tid, 0 if sig in (signal.SIGSTOP, signal.SIGTRAP, pt.SYSCALL_STOP)
                         else sig)
            return False
        if sig == pt.SYSCALL_STOP:
            if self._syscall_stop(tid, task):
                return True
            self._resume(tid)
        elif sig == signal.SIGTRAP and pt.event(status):
            if self._event_stop(tid, task, pt.event(status)):
                return True
            self._resume(tid)
        elif sig == signal.SIGSTOP and tid in self.announced:
            self.announced.discard(tid)    # the initial stop of an announced new task
            self._resume(tid)
        else:
            self._resume(tid, self._signal_to_deliver(tid, sig))
        return False

    def _syscall_stop(self, tid: int, task: _Task) -> bool:
        """Handle a syscall-entry or -exit stop; True when the run is over."""
        info = pt.get_syscall_info(tid)
        if info.op == pt.PTRACE_SYSCALL_INFO_ENTRY:
            task.install_flags = _install_flags(info)
            return False
        if info.op != pt.PTRACE_SYSCALL_INFO_EXIT or task.install_flags is None:
            return False
        flags, task.install_flags = task.install_flags, None
        if not _install_succeeded(info.rval, flags):
            return False
        try:
            chain = pt.seccomp_filters(tid)
        except TraceError as exc:
            raise root_hint(exc) from None
        if not chain:
            return False
        # The call added one filter to this task's chain: the newest.
        self.filters.setdefault(task.tgid, []).append(chain[-1])
        self.count += 1
        return bool(self.limit) and self.count >= self.limit

    def _event_stop(self, tid: int, task: _Task, event: int) -> bool:
        """Handle a fork/vfork/clone or exec event stop; True when the run is over."""
        if event in _NEW_TASK_EVENTS:
            new = pt.geteventmsg(tid)
            # else its SIGSTOP came first and adopted it (and it may even have exited since)
            if new not in self.tasks and new not in self.reaped:
                self._adopt(new)
                self.announced.add(new)
            return False
        if event == pt.PTRACE_EVENT_EXEC:
            former = pt.geteventmsg(tid)
            if former != tid:   # a non-leader thread exec'd and took the leader's tid
                self.tasks.pop(former, None)
                self.announced.discard(former)
            task.install_flags = None
            if task.tgid in self.filters and not self.limit:
                self.complete.add(task.tgid)
                return self._settled()
        return False

    def _adopt(self, tid: int) -> None:
        self.reaped.discard(tid)   # a pid used again
        tgid, ppid = _ids(tid)
        self.tasks[tid] = _Task(tgid)
        if tgid not in self.parent and ppid is not None:
            self.parent[tgid] = ppid

    def _resume(self, tid: int, sig: int = 0) -> None:
        try:
            pt.syscall(tid, sig)
        except pt.PtraceError as exc:
            if exc.errno != _errno.ESRCH:   # killed meanwhile: its exit is reported next
                raise

    def _signal_to_deliver(self, tid: int, sig: int) -> int:
        """The signal a signal-delivery stop passes on: the one that came, except for a
        group-stop of a stop signal (GETSIGINFO fails with EINVAL there: already delivered)."""
        if sig in _STOP_SIGNALS:
            try:
                pt.getsiginfo(tid)
            except pt.PtraceError as exc:
                if exc.errno == _errno.EINVAL:
                    return 0
                raise
        return sig

    # --- when to stop --------------------------------------------------------------------------

    def _process_gone(self, tgid: int) -> bool:
        return all(t.tgid != tgid for t in self.tasks.values())

    def _settled(self) -> bool:
        """True once a process exec'd after installing filters and every live process is such a
        process or an ancestor of one."""
        if not self.complete:
            return False
        waiting = set()
        for tgid in self.complete:
            seen = {tgid}
            while (tgid := self.parent.get(tgid)) is not None and tgid not in seen:
                seen.add(tgid)
                waiting.add(tgid)
        return all(t.tgid in self.complete or t.tgid in waiting for t in self.tasks.values())

    # --- leaving ---------------------------------------------------------------------------------

    def kill_all(self) -> None:
        """Kill every tracee and reap it; then kill and reap any task still traced by us that
        the loop never saw (a child created as its parent was killed)."""
        for tgid in {t.tgid for t in self.tasks.values()}:
            _kill(tgid)
        while self.tasks:
            try:
                tid, status = pt.wait(-1)
            except ChildProcessError:
                break
            if os.WIFSTOPPED(status):
                if tid not in self.tasks:
                    self.tasks[tid] = _Task(tid)
                    _kill(tid)
                continue
            self.tasks.pop(tid, None)
        for tid in _traced_by_us():
            _kill(tid)
            try:
                while os.WIFSTOPPED(pt.wait(tid)[1]):
                    pass
            except ChildProcessError:
                pass
        try:   # our own child, if the loop never got to reap it
            os.waitpid(self.first, os.WNOHANG)
        except ChildProcessError:
            pass


# --- helpers ---------------------------------------------------------------------------------------


def _install_flags(info: pt.SyscallInfo) -> int | None:
    """The flags of a filter install at this syscall-entry stop (0 for prctl), or None when the
    call installs no filter."""
    arch = _arch.by_audit(info.arch)
    if arch is None:
        return None
    on = _arch.for_number(arch, info.nr)
    if info.nr == on.syscall_number("seccomp") and info.args[0] == SECCOMP_SET_MODE_FILTER:
        return info.args[1]
    if (info.nr == on.syscall_number("prctl") and info.args[0] == PR_SET_SECCOMP
            and info.args[1] == SECCOMP_MODE_FILTER):
        return 0
    return None


def _install_succeeded(rval: int, flags: int) -> bool:
    """Whether a filter install returned success: 0, or a listener fd with NEW_LISTENER. (With
    TSYNC a positive value is the tid of a thread that could not be synchronised: a failure.)"""
    return rval == 0 or (rval > 0 and bool(flags & SECCOMP_FILTER_FLAG_NEW_LISTENER))


def _ids(tid: int) -> tuple[int, int | None]:
    """(tgid, parent pid) of task ``tid`` from /proc (tgid = tid when it is already gone)."""
    tgid, ppid = tid, None
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    tgid = int(line.split()[1])
                elif line.startswith("PPid:"):
                    ppid = int(line.split()[1])
                    break
    except (OSError, ValueError):
        pass
    return tgid, ppid


def _kill(tid: int) -> None:
    try:
        os.kill(tid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _traced_by_us() -> list[int]:
    """Tasks whose tracer is this process (/proc/*/task/*/status TracerPid)."""
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            tids = os.listdir(f"/proc/{name}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{name}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("TracerPid:"):
                            if int(line.split()[1]) == me:
                                found.append(int(tid))
                            break
            except (OSError, ValueError):
                continue
    return found
