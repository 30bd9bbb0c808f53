"""Attach mode (``sysdispatch trace -p PID``) on real processes: the policy is enforced from the
next syscall on, in every thread and in threads and children created later; Ctrl-C detaches
and leaves the process running untraced; the process's own end is reported."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time


from tracer_helpers import GETPPID, cli, needs_root_gcc, policy_file

pytestmark = needs_root_gcc

# Prints "<who> <getppid() or -errno>" every 20 ms from the main thread; once GO exists, also
# from a new thread and a forked child.
TARGET = """\
import os, signal, sys, threading, time
go = sys.argv[1]
signal.signal(signal.SIGSYS, lambda s, f: sys.stdout.write("sigsys 31\\n"))
def ppid():
    try:
        return os.getppid()
    except OSError as e:
        return -e.errno
def say(who):   # one write per line: threads must not interleave inside a line
    sys.stdout.write(f"{who} {ppid()}\\n")
    sys.stdout.flush()
def loop(who):
    while True:
        say(who)
        time.sleep(0.02)
started = False
while True:
    say("main")
    if not started and os.path.exists(go):
        started = True
        threading.Thread(target=loop, args=("thread",), daemon=True).start()
        if os.fork() == 0:
            loop("child")
    time.sleep(0.02)
"""


class Target:
    def __init__(self, tmp_path) -> None:
        self.go = tmp_path / "go"
        self.out = tmp_path / "out.txt"
        self.proc = subprocess.Popen([sys.executable, "-S", "-c", TARGET, str(self.go)],
                                     stdout=open(self.out, "w"), start_new_session=True)

    def lines(self) -> list[tuple[str, int]]:
        out = []
        for line in self.out.read_text().splitlines():
            who, _, value = line.partition(" ")
            if value.lstrip("-").isdigit():
                out.append((who, int(value)))
        return out

    def wait_for(self, pred, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred(self.lines()):
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out; last lines: {self.lines()[-5:]}")

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def _tracer(pid: int, *extra: str, err=subprocess.DEVNULL) -> subprocess.Popen:
    """The tracer's event lines go to a file: a pipe nobody reads would fill up and stall the
    tracer, and with it the tracee (and the tracee's parent, who cannot reap it meanwhile)."""
    return subprocess.Popen([sys.executable, "-m", "sysdispatch", "trace", "-p", str(pid),
                             *extra], stderr=err)


def test_attach_enforces_follows_and_detaches(tmp_path):
    target = Target(tmp_path)
    pol = policy_file(tmp_path, {"getppid": "errno(EACCES)"})
    try:
        target.wait_for(lambda ls: len(ls) > 3)
        assert all(v > 0 for _, v in target.lines())          # untraced: the real parent
        err = tmp_path / "tracer.err"
        tracer = _tracer(target.proc.pid, "--policy", str(pol), err=open(err, "w"))
        target.wait_for(lambda ls: ("main", -errno.EACCES) in ls)
        target.go.touch()                                       # a new thread and a child
        target.wait_for(lambda ls: {("thread", -errno.EACCES), ("child", -errno.EACCES)}
                        <= set(ls))
        seen = len(target.lines())
        tracer.send_signal(signal.SIGINT)
        assert tracer.wait(timeout=20) == 0, err.read_text()
        assert "getppid() -> ERRNO(13) EACCES" in err.read_text()
        # detached: the next calls are untraced again, in every thread, and nothing is stopped
        target.wait_for(lambda ls: {w for w, v in ls[seen + 6:] if v > 0}
                        >= {"main", "thread", "child"})
        with open(f"/proc/{target.proc.pid}/stat") as f:
            assert f.read().rpartition(")")[2].split()[0] in "RS"
        assert target.proc.poll() is None
    finally:
        target.close()


def test_attached_process_end_is_reported(tmp_path):
    """The process ends by itself while traced (it waits until it sees its tracer)."""
    code = ("import sys, time\n"
            "while 'TracerPid:\\t0\\n' in open('/proc/self/status').read():\n"
            "    time.sleep(0.01)\n"
            "time.sleep(0.2)\n"
            "sys.exit(4)\n")
    proc = subprocess.Popen([sys.executable, "-S", "-c", code])
    err = tmp_path / "tracer.err"
    try:
        tracer = _tracer(proc.pid, err=open(err, "w"))
        assert tracer.wait(timeout=30) == 4, err.read_text()   # the process's own status
        assert proc.wait(timeout=20) == 4         # and its parent still gets it
    finally:
        proc.kill()


def test_attached_kill_verdict_kills_with_sigsys(tmp_path):
    target = Target(tmp_path)
    pol = policy_file(tmp_path, {"getppid": "kill_process"})
    try:
        target.wait_for(lambda ls: len(ls) > 2)
        tracer = _tracer(target.proc.pid, "--policy", str(pol))
        assert target.proc.wait(timeout=20) == -signal.SIGSYS
        assert tracer.wait(timeout=20) == 128 + signal.SIGSYS
    finally:
        target.close()


def test_attached_trap_runs_the_handler(tmp_path):
    """TRAP decided at a syscall-entry stop: the call is skipped with its number in rax (the
    kernel's rollback), SIGSYS reaches the program's handler, the program runs on."""
    target = Target(tmp_path)
    pol = policy_file(tmp_path, {"getppid": "trap(3)"})
    try:
        target.wait_for(lambda ls: len(ls) > 2)
        tracer = _tracer(target.proc.pid, "--policy", str(pol), "-q")
        target.wait_for(lambda ls: ("sigsys", 31) in ls and ("main", GETPPID) in ls)
        tracer.send_signal(signal.SIGINT)
        assert tracer.wait(timeout=20) == 0
        assert target.proc.poll() is None
    finally:
        target.close()


def test_attach_refuses_nonsense():
    res = cli("-p", "0")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
