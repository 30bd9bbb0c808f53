"""The tracer: spawn or attach, one ``waitpid(-1, __WALL)`` loop, per-thread state.

Two ways in, with different stops:

**Spawn** (``sysdispatch trace -- CMD``). The forked child waits on a pipe until the tracer has
PTRACE_SEIZEd it with its options (TRACESECCOMP, EXITKILL, TRACESYSGOOD, TRACEFORK/VFORK/CLONE/
EXEC) — the pipe plays the part of the child's SIGSTOP: it keeps the child from installing a
RET_TRACE filter before a tracer can take its stops (RET_TRACE with no tracer is ENOSYS), and if
the tracer dies first the child reads EOF and exits instead of staying stopped. The child then
sets no_new_privs and installs the kernel prefilter (:mod:`.prefilter`): TRACE for the syscalls
the policy must decide, ALLOW for the ones it allows whatever the arguments (everything is
TRACE with ``--all`` and whenever every call is reported: --record, --summary, --audit). The
tracer PTRACE_CONTs and sees one PTRACE_EVENT_SECCOMP stop per dispatched syscall, *before* it
runs, and no exit stop. Children, threads and exec'd programs inherit filter and tracer.
EXITKILL: if sysdispatch dies, the kernel kills the tracees (a RET_TRACE filter left without a
tracer would make their syscalls fail). sysdispatch becomes a child subreaper, so orphaned
descendants are reaped here, and it returns the command's status: its exit code, or
128 + signal (159 when a policy killed it with SIGSYS).

**Attach** (``sysdispatch trace -p PID``). Every thread of PID (``/proc/PID/task``, re-read
until no new thread appears) is PTRACE_SEIZEd and PTRACE_INTERRUPTed. A running process cannot
be given a seccomp filter from outside, and one left behind would outlive the tracer, so there
is no prefilter: the tracer resumes with PTRACE_SYSCALL and decides at every syscall-*entry*
stop (which comes before the kernel's own seccomp filters run), skipping the exit stops — two
stops per syscall instead of one per *dispatched* syscall, and every syscall is dispatched.
No EXITKILL: Ctrl-C (SIGINT, SIGTERM, SIGHUP) interrupts and detaches every thread and leaves
the process running as before; the exit status is then 0, else the process's own.

Both: group-stops of SEIZEd tracees are PTRACE_EVENT_STOPs with the stopping signal, answered
with PTRACE_LISTEN (the tracee stays stopped until SIGCONT, like an untraced one); other signals
are delivered as they came. A new thread's first stop may arrive before its creator's clone
event: any unknown tid is adopted. Ctrl-C in spawn mode kills every tracee and reaps it, so no
stopped or zombie process remains; the status is 130.

Per stop: one PTRACE_GET_SYSCALL_INFO into a reused buffer, the policy's decision (its verdict
cache answers most; a syscall the policy allows whatever its arguments is not even asked about
while no slot changes), one resume; events (:class:`~sysdispatch.trace.events.Event`) are built
only when someone reads them.
"""

from __future__ import annotations

import errno as _errno
import os
import shutil
import signal
import time
from typing import Callable, Iterable, TextIO

from ..errors import TraceError
from ..policy.loaded import LoadedPolicy
from ..policy.static import static_allowed
from ..seccomp import actions
from ..seccomp.data import SeccompData
from . import decode as _decode
from . import prefilter as _prefilter
from . import ptrace as pt
from .enforce import Enforcer
from .events import Event

_SPAWN_OPTIONS = (pt.PTRACE_O_TRACESYSGOOD | pt.PTRACE_O_TRACEFORK | pt.PTRACE_O_TRACEVFORK
                  | pt.PTRACE_O_TRACECLONE | pt.PTRACE_O_TRACEEXEC | pt.PTRACE_O_TRACESECCOMP
                  | pt.PTRACE_O_EXITKILL)
_ATTACH_OPTIONS = (pt.PTRACE_O_TRACESYSGOOD | pt.PTRACE_O_TRACEFORK | pt.PTRACE_O_TRACEVFORK
                   | pt.PTRACE_O_TRACECLONE | pt.PTRACE_O_TRACEEXEC)
_STOP_SIGNALS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
_PR_SET_CHILD_SUBREAPER = 36
_ACTION = actions.ACTION_FULL
_ALLOW = actions.ALLOW
_SECCOMP_STATUS = ((pt.PTRACE_EVENT_SECCOMP << 8) | signal.SIGTRAP) << 8 | 0x7F
_SYSCALL_STATUS = pt.SYSCALL_STOP << 8 | 0x7F
_INFO_EXIT, _INFO_NONE = pt.PTRACE_SYSCALL_INFO_EXIT, pt.PTRACE_SYSCALL_INFO_NONE


def _generation(policy: LoadedPolicy) -> int | None:
    """The policy's table generation, bumped by every live slot swap (None for a policy object
    that has no live tables)."""
    return getattr(policy, "generation", None)

Sink = Callable[[Event], None]


class Thread:
    """What the tracer keeps per traced thread."""

    __slots__ = ("tid", "_tgid", "sigsys", "at_exit")

    def __init__(self, tid: int, tgid: int | None = None) -> None:
        self.tid = tid
        self._tgid = tgid
        self.sigsys: pt.SigInfo | None = None           # install at the next SIGSYS delivery
        self.at_exit: Callable[[], None] | None = None  # run at the next syscall-exit stop

    @property
    def tgid(self) -> int:
        if self._tgid is None:
            self._tgid = _read_tgid(self.tid)
        return self._tgid


def _read_tgid(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return tid


class Tracer:
    """Trace a command (:meth:`spawn`) or a running process (:meth:`attach`).

    ``policy``: the LoadedPolicy that decides. ``audit``: report, never enforce. ``sinks``:
    callables taking each Event (each has ``close()``), e.g. the Recorder or the Summary — with
    sinks every syscall is dispatched; a sink with ``reads_decoded = False`` gets events whose
    ``decoded`` is empty unless a line is printed. ``out``: a text stream for one line per event with a
    verdict other than ALLOW (every event with ``verbose``); None is quiet. ``dispatch_all``:
    stop at every syscall. ``hook``: the ``--on-trace`` function."""

    def __init__(self, policy: LoadedPolicy, *, audit: bool = False,
                 sinks: Iterable[Sink] = (), out: TextIO | None = None, verbose: bool = False,
                 dispatch_all: bool = False, hook=None, reap_orphans: bool = False) -> None:
        self.policy = policy
        self.audit = audit
        self.sinks = list(sinks)
        self.out = out
        self.verbose = verbose
        self.dispatch_all = dispatch_all or audit or bool(self.sinks)
        self.reap_orphans = reap_orphans
        self.enforcer = Enforcer(audit=audit, hook=hook, decide=lambda d: policy.decide(d).ret,
                                 report=self._problem)
        self.threads: dict[int, Thread] = {}
        # Reaped tids: a short-lived child can stop, run and exit before its creator's
        # fork/clone event is reported; that late event must not bring it back (a ghost whose
        # pid, reused by an unrelated process, Ctrl-C would then kill).
        self._reaped: set[int] = set()
        self.main_pid: int | None = None
        self.main_status: int | None = None
        self.attached = False
        self.start = time.monotonic()
        self.stops = 0          # every ptrace stop
        self.dispatched = 0     # syscalls the policy decided
        self._read = pt.StopInfo().read
        self._cont = pt.fast_call(pt.PTRACE_CONT)
        self._syscall = pt.fast_call(pt.PTRACE_SYSCALL)
        self._go = self._cont                 # the resume of a plain ALLOW (attach: SYSCALL)
        self._quiet_allow = not self.sinks and not verbose   # ALLOW needs no event
        # Reading the tracee's memory for paths costs a system call per path: done only for
        # sinks that read ``Event.decoded`` (a sink says it does not with reads_decoded = False).
        self._sinks_decode = any(getattr(s, "reads_decoded", True) for s in self.sinks)
        # Syscalls the policy allows whatever their arguments (policy.static.static_allowed): with
        # --all they still stop, but need no decision — while the policy's tables stay as they
        # were (a live slot swap bumps its generation; without one, no shortcut).
        self._static_generation = _generation(policy)
        self._static = (static_allowed(policy)
                        if self._static_generation is not None else frozenset())
        self._interrupted = False
        self._detaching = False

    # --- entry points ----------------------------------------------------------------------------

    def spawn(self, argv: list[str], env: dict[str, str] | None = None, *,
              stdout: int | None = None, stderr: int | None = None) -> int:
        """Run ``argv`` under the policy; returns its shell-style exit status. ``stdout`` and
        ``stderr``: file descriptors for the command (default: ours)."""
        if not argv:
            raise TraceError("no command to trace")
        path = argv[0] if os.sep in argv[0] else shutil.which(argv[0])
        if path is None:
            raise TraceError(f"{argv[0]}: command not found")
        loader = _prefilter.Loader(_prefilter.programs(self.policy,
                                                       dispatch_all=self.dispatch_all))
        env = dict(os.environ if env is None else env)
        if self.reap_orphans:
            import ctypes
            ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        if self.out is not None:
            self.out.flush()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: wait for the tracer, install the prefilter, exec
            code = 126
            try:
                os.close(w)
                if os.read(r, 1) == b"g":
                    os.close(r)
                    for fd, target in ((stdout, 1), (stderr, 2)):
                        if fd is not None:
                            os.dup2(fd, target)
                    loader.install()
                    os.execve(path, argv, env)
            except OSError as exc:
                code = 127 if exc.errno == _errno.ENOENT else 126
                try:
                    os.write(2, f"sysdispatch: {argv[0]}: {exc.strerror}\n".encode())
                except OSError:
                    pass
            finally:
                os._exit(code)
        os.close(r)
        try:
            pt.seize(pid, _SPAWN_OPTIONS)
        except BaseException:
            os.close(w)   # the child reads EOF and exits
            os.waitpid(pid, 0)
            raise
        self.main_pid = pid
        self.threads[pid] = Thread(pid, pid)
        self.start = time.monotonic()
        os.write(w, b"g")
        os.close(w)
        return self._run()

    def attach(self, pid: int) -> int:
        """Trace every thread of the running process ``pid`` until it exits or Ctrl-C."""
        self.attached = True
        self.dispatch_all = True
        self._go = self._syscall
        if not os.path.isdir(f"/proc/{pid}/task"):
            raise TraceError(f"-p {pid}: no such process")
        self.main_pid = pid
        try:
            while True:
                new = [int(t) for t in os.listdir(f"/proc/{pid}/task")
                       if int(t) not in self.threads]
                if not new:
                    break
                for tid in new:
                    try:
                        pt.seize(tid, _ATTACH_OPTIONS)
                        pt.interrupt(tid)
                    except pt.PtraceError as exc:
                        if exc.errno == _errno.ESRCH:
                            continue         # the thread ended meanwhile
                        raise TraceError(f"-p {pid}: cannot attach to thread {tid}: "
                                         f"{os.strerror(exc.errno)}") from None
                    self.threads[tid] = Thread(tid, pid)
        except BaseException:
            for tid in list(self.threads):
                self._detach_quietly(tid)
            raise
        return self._run()

    # --- the loop --------------------------------------------------------------------------------

    def _run(self) -> int:
        old = {s: signal.signal(s, self._on_signal)
               for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            self._loop()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            for sink in self.sinks:
                sink.close()
        if self._interrupted and not self.attached:
            return 128 + signal.SIGINT
        if self.main_status is None:
            return 0
        return self._exit_code(self.main_status)

    def _exit_code(self, status: int) -> int:
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status)
        sig = os.WTERMSIG(status)
        if sig == signal.SIGKILL and self.main_pid in self.enforcer.killed:
            sig = signal.SIGSYS    # the SIGKILL stood in for the kernel's SIGSYS
        return 128 + sig

    def _on_signal(self, signum, frame) -> None:
        """Ctrl-C, SIGTERM, SIGHUP: make sure the blocked waitpid returns — spawn mode kills
        the tracees (their deaths wake it), attach mode interrupts every thread (the stops
        wake it) — and let the loop, which checks the flag at every stop, wind up. Both are
        harmless to a stop being handled at this moment: a killed tracee's next ptrace call
        fails with ESRCH, an interrupt is one more stop."""
        if self._interrupted:
            return
        self._interrupted = True
        for th in list(self.threads.values()):
            try:
                if self.attached:
                    pt.interrupt(th.tid)
                elif th.tid == th.tgid:
                    os.kill(th.tid, signal.SIGKILL)
            except (pt.PtraceError, ProcessLookupError):
                pass

    def _loop(self) -> None:
        waitpid, WALL = os.waitpid, pt.WALL
        threads = self.threads
        seccomp_stop, syscall_stop = _SECCOMP_STATUS, _SYSCALL_STATUS
        dispatch = self._dispatch
        while True:
            if self._interrupted and not self._detaching:
                if not self.attached:
                    self._kill_all()
                    return
                self._detach_all()
            if self.attached and not threads:
                return
            try:
                tid, status = waitpid(-1, WALL)
            except ChildProcessError:
                return
            try:
                if status & 0xFFFFFF == seccomp_stop or status == syscall_stop:
                    th = threads.get(tid) or self._adopt(tid)
                    dispatch(th)
                else:
                    self._other_stop(tid, status)
            except (pt.PtraceError, ProcessLookupError) as exc:
                if exc.errno != _errno.ESRCH:   # the tracee was killed under us: its exit
                    raise                       # status follows; anything else is a bug
                if self._detaching:
                    threads.pop(tid, None)
            self.stops += 1

    def _adopt(self, tid: int) -> Thread:
        self._reaped.discard(tid)   # a pid used again
        th = self.threads[tid] = Thread(tid)
        return th

    def _resume(self, tid: int, sig: int = 0, exit_stop: bool = False) -> None:
        if self._detaching:
            th = self.threads.get(tid)
            if not exit_stop and (th is None or th.sigsys is None):
                pt.detach(tid, sig)   # Ctrl-C in attach mode: leave at the first quiet stop
                self.threads.pop(tid, None)
                return
        if self.attached or exit_stop:
            self._syscall(tid, 0, sig)
        else:
            self._cont(tid, 0, sig)

    def _dispatch(self, th: Thread) -> None:
        """A seccomp stop, or a syscall stop (attach mode; or the exit stop asked for)."""
        tid = th.tid
        info = self._read(tid)   # (op, arch, ip, sp, nr, args[6], ret_data)
        op = info[0]
        if op == _INFO_EXIT or op == _INFO_NONE:
            at_exit, th.at_exit = th.at_exit, None
            if at_exit is not None:
                at_exit()
            self._resume(tid)
            return
        self.dispatched += 1
        nr = info[4]
        if nr >> 63:
            nr -= 1 << 64
        arch, ip, args = info[1], info[2], info[5:11]
        if self._quiet_allow and (arch, nr) in self._static and not self._detaching \
                and self.policy.generation == self._static_generation:  # _static: it has one
            self._go(tid, 0, 0)       # allowed whatever the arguments: no need to ask
            return
        decision = self.policy.decide(SeccompData(nr, arch, ip, args))
        ret = decision.ret
        if ret & _ACTION == _ALLOW and self._quiet_allow and not self._detaching:
            self._go(tid, 0, 0)
            return
        self._emit(th, nr, arch, ip, args, decision)
        exit_stop = self.enforcer.enforce(th, nr, arch, ip, args, ret)
        self._resume(tid, 0, exit_stop)

    def _emit(self, th: Thread, nr: int, arch: int, ip: int, args: tuple[int, ...],
              decision) -> None:
        ret = decision.ret
        show = self.out is not None and (self.verbose or ret & _ACTION != _ALLOW)
        if not show and not self.sinks:
            return
        name = _decode.syscall_name(arch, nr)
        decoded = _decode.decode(th.tid, name, arch, args) if show or self._sinks_decode else {}
        ev = Event(time=time.monotonic() - self.start, pid=th.tgid, tid=th.tid, nr=nr,
                   name=name, arch=arch, ip=ip, args=args, verdict=ret,
                   handler=decision.handler or "default", path=decision.path,
                   enforced=not self.audit, decoded=decoded)
        for sink in self.sinks:
            sink(ev)
        if show:
            self.out.write(_decode.render(ev) + "\n")
            self.out.flush()

    def _other_stop(self, tid: int, status: int) -> None:
        threads = self.threads
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            threads.pop(tid, None)
            self._reaped.add(tid)
            if tid == self.main_pid:
                self.main_status = status
            return
        if not os.WIFSTOPPED(status):
            return
        th = threads.get(tid) or self._adopt(tid)
        sig = os.WSTOPSIG(status)
        event = pt.event(status)
        if sig == pt.SYSCALL_STOP:   # an exit stop asked for, reported with flags we ignore
            self._dispatch(th)
        elif event == pt.PTRACE_EVENT_STOP:
            if sig in _STOP_SIGNALS and not self._detaching:
                pt.listen(tid)       # group-stop: stay stopped until SIGCONT, as untraced
            elif sig in _STOP_SIGNALS:
                pt.detach(tid)       # detached in its group-stop: it stays stopped
                threads.pop(tid, None)
            else:
                self._resume(tid)    # a new tracee's first stop, or PTRACE_INTERRUPT's
        elif event and sig == signal.SIGTRAP:
            if event in (pt.PTRACE_EVENT_FORK, pt.PTRACE_EVENT_VFORK, pt.PTRACE_EVENT_CLONE):
                child = pt.geteventmsg(tid)
                if child not in threads and child not in self._reaped:
                    threads[child] = Thread(child, child if event != pt.PTRACE_EVENT_CLONE
                                            else None)
            elif event == pt.PTRACE_EVENT_EXEC:
                former = pt.geteventmsg(tid)
                if former != tid:    # a non-leader thread exec'd: it now has the leader's tid
                    threads.pop(former, None)
                threads[tid] = Thread(tid, tid)
            self._resume(tid)
        else:                        # signal-delivery stop: deliver as it came
            if sig == signal.SIGSYS and th.sigsys is not None:
                pt.setsiginfo(tid, th.sigsys)   # seccomp's siginfo for an emulated TRAP/KILL
                th.sigsys = None
            self._resume(tid, sig)

    # --- leaving -------------------------------------------------------------------------------

    def _kill_all(self) -> None:
        """Ctrl-C in spawn mode: kill every tracee and reap until nothing is left, so no
        stopped or zombie process remains (orphans come here: we are their subreaper)."""
        for tgid in {th.tgid for th in self.threads.values()}:
            try:
                os.kill(tgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                tid, status = os.waitpid(-1, pt.WALL)
            except ChildProcessError:
                return
            if os.WIFSTOPPED(status):   # a tracee not seen before (its fork event is queued)
                try:
                    os.kill(tid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                continue
            self.threads.pop(tid, None)
            if tid == self.main_pid:
                self.main_status = status

    def _detach_all(self) -> None:
        """Ctrl-C in attach mode: interrupt every thread; the loop then detaches each at its
        next stop (after delivering a signal it stopped for, or finishing an emulation it is in
        the middle of: a syscall-entry stop is still decided and enforced first)."""
        self._detaching = True
        for tid in list(self.threads):
            try:
                pt.interrupt(tid)
            except pt.PtraceError:
                self.threads.pop(tid, None)

    def _detach_quietly(self, tid: int) -> None:
        try:
            pt.interrupt(tid)
            os.waitpid(tid, pt.WALL)
            pt.detach(tid)
        except (pt.PtraceError, ChildProcessError):
            pass
        self.threads.pop(tid, None)

    def _problem(self, text: str) -> None:
        """A problem the user must hear about even with -q (a failing hook)."""
        import sys
        out = self.out if self.out is not None else sys.stderr
        out.write(f"sysdispatch: {text}\n")
        out.flush()
