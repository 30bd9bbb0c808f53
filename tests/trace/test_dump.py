"""sysdispatch.trace.dump: filters installed across forks, vforks and threads of real processes,
read back and compared with the bytes each process installed; what the kernel does with a
thread's filter; and that a run leaves no traced or zombie process behind.

The tracees are small Python programs (ctypes prctl/seccomp calls in real processes and
pthreads): each writes "role pid" lines to a file, so the test knows which process is which."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sysdispatch.seccomp import actions
from sysdispatch.trace import dump

from tracer_helpers import ChildExitsFirst
from sysdispatch.trace import ptrace as pt

from tracer_helpers import GETPGID, GETPPID, MKDIR, classic_filter

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ptrace, seccomp)")

# Three different filters: a test can tell which process installed which.
F_PARENT = classic_filter({GETPPID: actions.ERRNO | 7})
F_CHILD = classic_filter({GETPGID: actions.ERRNO | 9})
F_THREAD = classic_filter({MKDIR: actions.ERRNO | 13})

TRACEE = textwrap.dedent("""\
    import ctypes, os, signal, sys, threading, time
    libc = ctypes.CDLL(None, use_errno=True)
    MODE, LOG = sys.argv[1], sys.argv[2]
    FILTERS = [bytes.fromhex(h) for h in sys.argv[3:]]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    def install(raw, tsync=False):
        buf = ctypes.create_string_buffer(raw, len(raw))
        prog = Prog(len(raw) // 8, ctypes.addressof(buf))
        if tsync:   # seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog)
            rc = libc.syscall(317, 1, 1, ctypes.byref(prog))
        else:       # prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)
            rc = libc.prctl(22, 2, ctypes.byref(prog), 0, 0)
        if rc != 0:
            raise OSError(ctypes.get_errno(), "installing a filter")

    def log(role):
        with open(LOG, "a") as f:
            f.write(f"{role} {os.getpid()} {threading.get_native_id()}\\n")

    def child(raw, then=None, wait=0):
        pid = os.fork()
        if pid == 0:
            time.sleep(wait)
            log("child")
            install(raw)
            if then:
                os.execv(then[0], then)
            os._exit(0)
        return pid

    log("parent")
    if MODE == "fork-child":              # only the child installs
        os.waitpid(child(FILTERS[0]), 0)
    elif MODE == "parent-first":          # parent, then its child
        install(FILTERS[0])
        os.waitpid(child(FILTERS[1]), 0)
    elif MODE == "child-first":           # the child, then its parent
        os.waitpid(child(FILTERS[1]), 0)
        install(FILTERS[0])
    elif MODE == "spawn":                 # a posix_spawn (vfork) child installs
        pid = os.posix_spawn(sys.executable, [sys.executable, __file__, "fork-none", LOG,
                                              *sys.argv[3:]], os.environ)
        os.waitpid(pid, 0)
    elif MODE == "fork-none":             # spawned by "spawn": install in this process
        install(FILTERS[0])
    elif MODE in ("thread", "hold", "hold-tsync"):
        ready = threading.Event()
        def work():
            log("thread")
            install(FILTERS[0], tsync=MODE == "hold-tsync")
            ready.set()
            if MODE != "thread":
                time.sleep(60)
        threading.Thread(target=work, daemon=True).start()
        ready.wait()
        if MODE != "thread":
            print("ready", flush=True)
            sys.stdin.read()
    elif MODE == "signal":                # installs only if SIGUSR1 reaches its handler
        got = []
        signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
        os.kill(os.getpid(), signal.SIGUSR1)
        if got:
            install(FILTERS[0])
    elif MODE == "exec-sleep":            # a child installs later than its sibling, which
        b = child(FILTERS[1], wait=0.3)   # installs and execs a long sleep: both are found
        a = child(FILTERS[0], ["/bin/sleep", "60"])
        os.waitpid(b, 0)
        os.waitpid(a, 0)
    elif MODE == "storm":                 # forks, vforks and threads; no filter at all
        pids = [os.posix_spawn("/bin/true", ["true"], os.environ) for _ in range(15)]
        for _ in range(15):
            pid = os.fork()
            if pid == 0:
                if os.fork() == 0:
                    os._exit(0)
                os._exit(0)
            pids.append(pid)
        threads = [threading.Thread(target=os.getppid) for _ in range(10)]
        for t in threads: t.start()
        for t in threads: t.join()
        for pid in pids:           # a child stopped by a signal we passed on is seen here
            while os.WIFSTOPPED(os.waitpid(pid, os.WUNTRACED)[1]):
                log("stopped")
                os.kill(pid, signal.SIGCONT)
        def spin():               # threads in and out of syscalls as the process exits:
            while True:           # their stops race with their death
                os.getppid()
        for _ in range(4):
            threading.Thread(target=spin, daemon=True).start()
        time.sleep(0.05)
        os._exit(0)
    """)


@pytest.fixture(scope="module")
def tracee(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dump") / "tracee.py"
    path.write_text(TRACEE)
    return path


def argv(tracee: Path, mode: str, log: Path, *filters: bytes) -> list[str]:
    return [sys.executable, str(tracee), mode, str(log), *(f.hex() for f in filters)]


def roles(log: Path) -> dict[str, list[tuple[int, int]]]:
    """role -> [(pid, tid), ...] as the tracee logged them."""
    out: dict[str, list[tuple[int, int]]] = {}
    for line in log.read_text().splitlines():
        role, pid, tid = line.split()
        out.setdefault(role, []).append((int(pid), int(tid)))
    return out


def pid_of(log: Path, role: str, i: int = 0) -> int:
    return roles(log)[role][i][0]


def leftovers() -> list[str]:
    """Processes that are our children or traced by us (none may remain after a dump)."""
    me, found = str(os.getpid()), []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == me or fields.get("TracerPid", "").strip() == me:
            found.append(f"{name} {fields.get('Name', '').strip()} {fields.get('State', '')}")
    return found


# --- what the kernel does: filters belong to threads -------------------------------------------


@pytest.mark.parametrize("mode", ["hold", "hold-tsync"])
def test_kernel_a_threads_filter_is_its_own_unless_tsync(tracee, tmp_path, mode):
    """PTRACE_SECCOMP_GET_FILTER reads one task's chain: a thread that installs a filter
    without TSYNC has it and its process's main thread does not; with TSYNC both have it."""
    log = tmp_path / "log"
    proc = subprocess.Popen(argv(tracee, mode, log, F_THREAD), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        (leader, thread), = roles(log)["thread"]
        assert thread != leader == proc.pid
        assert dump.dump_pid(thread) == [F_THREAD]
        assert dump.dump_pid(leader) == ([F_THREAD] if mode == "hold-tsync" else [])
    finally:
        proc.kill()
        proc.wait()


# --- dump_command across processes ------------------------------------------------------------


def test_a_forked_child_installs_and_its_parent_does_not(tracee, tmp_path):
    log = tmp_path / "log"
    found = dump.dump_command(argv(tracee, "fork-child", log, F_CHILD))
    child = pid_of(log, "child")
    assert child != pid_of(log, "parent")
    assert found == {child: [F_CHILD]}
    assert leftovers() == []


@pytest.mark.parametrize("mode", ["parent-first", "child-first"])
def test_parent_and_child_install_different_filters(tracee, tmp_path, mode):
    log = tmp_path / "log"
    found = dump.dump_command(argv(tracee, mode, log, F_PARENT, F_CHILD))
    parent, child = pid_of(log, "parent"), pid_of(log, "child")
    # each filter once, under the process that installed it (the child also runs under the
    # parent's filter in parent-first, inherited, not installed by it)
    assert found == {parent: [F_PARENT], child: [F_CHILD]}
    order = [parent, child] if mode == "parent-first" else [child, parent]
    assert list(found) == order
    assert leftovers() == []


def test_limit_counts_filters_of_all_processes(tracee, tmp_path):
    log = tmp_path / "log"
    found = dump.dump_command(argv(tracee, "parent-first", log, F_PARENT, F_CHILD), limit=1)
    assert found == {pid_of(log, "parent"): [F_PARENT]}
    assert leftovers() == []


def test_a_vfork_posix_spawn_child_installs(tracee, tmp_path):
    log = tmp_path / "log"
    found = dump.dump_command(argv(tracee, "spawn", log, F_CHILD))
    parents = roles(log)["parent"]     # the spawner, then the spawned program
    assert len(parents) == 2 and parents[0][0] != parents[1][0]
    assert found == {parents[1][0]: [F_CHILD]}


def test_a_thread_installs_without_tsync(tracee, tmp_path):
    """Read from the installing thread: its process's main thread has no filter."""
    log = tmp_path / "log"
    found = dump.dump_command(argv(tracee, "thread", log, F_THREAD))
    (pid, tid), = roles(log)["thread"]
    assert tid != pid
    assert found == {pid: [F_THREAD]}


def test_signals_reach_the_program(tracee, tmp_path):
    log = tmp_path / "log"
    found = dump.dump_command(argv(tracee, "signal", log, F_PARENT))
    assert found == {pid_of(log, "parent"): [F_PARENT]}


def test_exec_after_filters_ends_the_run_once_no_other_process_may_install(tracee, tmp_path):
    """One child execs a 60 s sleep after its filter: its set is complete, but its sibling
    (forked before) has still to install one, so the run goes on for it, then ends (the sleep
    and their waiting parent are killed) instead of waiting a minute."""
    log = tmp_path / "log"
    start = time.monotonic()
    found = dump.dump_command(argv(tracee, "exec-sleep", log, F_PARENT, F_CHILD))
    assert time.monotonic() - start < 20
    sleeper, late = pid_of(log, "child", 0), pid_of(log, "child", 1)
    assert found == {sleeper: [F_PARENT], late: [F_CHILD]}
    assert leftovers() == []


def test_a_fork_storm_without_filters_leaves_nothing_behind(tracee, tmp_path):
    log = tmp_path / "log"
    assert dump.dump_command(argv(tracee, "storm", log)) == {}
    assert "stopped" not in roles(log)
    assert leftovers() == []


def test_a_command_that_cannot_start():
    with pytest.raises(dump.TraceError, match="nosuch-cmd: No such file or directory"):
        dump.dump_command(["nosuch-cmd"])
    with pytest.raises(dump.TraceError, match="no command"):
        dump.dump_command([])
    assert leftovers() == []


class NewestFirst:
    """``pt.wait`` for dump's loop, reordered: it collects every stop that is ready and hands
    out the newest pid's first, so a new child's initial SIGSTOP comes before its parent's
    fork/clone event (the kernel may report them in either order; here that order is usual
    only under load). Counts how often that happened."""

    def __init__(self) -> None:
        self.queue: list[tuple[int, int]] = []
        self.seen: set[int] = set()
        self.child_first = 0
        self.real = pt.wait

    NEW_TASK = (pt.PTRACE_EVENT_FORK, pt.PTRACE_EVENT_VFORK, pt.PTRACE_EVENT_CLONE)

    def __call__(self, pid: int = -1, flags: int = pt.WALL) -> tuple[int, int]:
        if pid != -1:
            return self.real(pid, flags)
        if not self.queue:
            self.queue.append(self.real(-1, flags))
            if self.queue[0][1] >> 16 in self.NEW_TASK:
                time.sleep(0.005)   # let the new task reach its first stop too
            try:
                while (got := self.real(-1, flags | os.WNOHANG))[0]:
                    self.queue.append(got)
            except ChildProcessError:
                pass
            self.queue.sort(reverse=True)
        tid, status = self.queue.pop(0)
        if os.WIFSTOPPED(status) and status >> 16 in self.NEW_TASK:
            self.child_first += pt.geteventmsg(tid) in self.seen
        self.seen.add(tid)
        return tid, status


@pytest.mark.parametrize("mode", ["parent-first", "storm"])
def test_new_childs_stop_before_its_parents_event_reordered_wait(tracee, tmp_path, monkeypatch,
                                                                  mode):
    waiter = NewestFirst()
    monkeypatch.setattr(dump.pt, "wait", waiter)
    log = tmp_path / "log"
    found = dump.dump_command(argv(tracee, mode, log, F_PARENT, F_CHILD))
    assert waiter.child_first > 0
    if mode == "storm":
        assert found == {}
        assert "stopped" not in roles(log)   # no child ever saw its ptrace SIGSTOP
    else:
        assert found == {pid_of(log, "parent"): [F_PARENT], pid_of(log, "child"): [F_CHILD]}
    monkeypatch.undo()
    assert leftovers() == []


def test_a_task_killed_at_its_stop_is_not_an_error(tracee, tmp_path, monkeypatch):
    """A task can die between the wait that reports its stop and our ptrace request (a sibling's
    exit_group, a SIGKILL): the request fails with ESRCH, and the run goes on to the death."""
    real, killed = pt.wait, []

    def wait_and_kill(pid: int = -1, flags: int = pt.WALL) -> tuple[int, int]:
        tid, status = real(pid, flags)
        if pid == -1 and not killed and pt.is_syscall_stop(status):
            os.kill(tid, 9)
            killed.append(tid)
        return tid, status

    monkeypatch.setattr(dump.pt, "wait", wait_and_kill)
    log = tmp_path / "log"
    assert dump.dump_command(argv(tracee, "parent-first", log, F_PARENT, F_CHILD)) == {}
    assert killed
    monkeypatch.undo()
    assert leftovers() == []


def test_a_child_that_exits_before_its_parents_fork_event_is_not_waited_for(monkeypatch):
    """Its late fork event must not bring the reaped child back (the run would wait for it
    forever, or fail with ECHILD)."""
    waiter = ChildExitsFirst(pt.wait)
    monkeypatch.setattr(dump.pt, "wait", waiter)
    assert dump.dump_command(["sh", "-c", "(true); (true); true"]) == {}
    assert waiter.reordered > 0
    monkeypatch.undo()
    assert leftovers() == []
