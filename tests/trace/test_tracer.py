"""The tracer on real processes: statuses, the prefilter, following forks/threads/exec, the
three x86 ABIs, signals and group-stops, a tracee's own filter, Ctrl-C, and the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sysdispatch.seccomp import actions
from sysdispatch.seccomp.data import AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT
from sysdispatch.trace.record import read_events
from sysdispatch.trace.summary import Summary

from tracer_helpers import (GETPPID, classic_filter, cli, cprog, needs_root_gcc, policy_file,
                            run_kernel, run_native, run_traced)

pytestmark = needs_root_gcc
DEFAULT = Path(__file__).resolve().parents[2] / "sysdispatch" / "data" / "default.toml"


@pytest.mark.parametrize("script, status", [("exit 7", 7), ("kill -TERM $$", 143),
                                            ("kill -SYS $$", 159)])
def test_exit_status_is_the_commands(script, status):
    assert run_traced(DEFAULT, ["sh", "-c", script]).status == status


def test_prefilter_stops_only_for_dispatched_syscalls(tmp_path):
    """With a policy that decides only getppid, the program stops once; with dispatch_all, at
    every syscall (execve, the loader's mmaps, ...)."""
    pol = policy_file(tmp_path, {"getppid": "errno(13)"})
    argv = [cprog("sigsys"), "default", str(GETPPID)]
    sparse = run_traced(pol, argv)
    full = run_traced(pol, argv, dispatch_all=True)
    assert sparse.stdout == full.stdout == "ret=-13\nalive\n"
    assert sparse.tracer.dispatched == 1
    assert full.tracer.dispatched > 20


def test_pipeline_forks_and_execs_are_followed(tmp_path):
    """sh -c 'a | b': every process of the pipeline is traced, across fork and execve."""
    run = run_traced(DEFAULT, ["sh", "-c", "echo hello | tr a-z A-Z; /bin/true; exit 7"],
                     record=True)
    assert run.status == 7 and run.stdout == "HELLO\n"
    execs = {(e.pid, e.decoded.get("pathname")) for e in run.events if e.name == "execve"}
    assert {p for _, p in execs} >= {"/usr/bin/sh", "/usr/bin/tr", "/bin/true"}
    assert len({e.pid for e in run.events}) >= 3


def test_threads_are_followed(tmp_path):
    pol = policy_file(tmp_path, {"getppid": "errno(13)"})
    run = run_traced(pol, [cprog("threads"), "worker", str(GETPPID)], record=True)
    assert run.stdout == "worker calling\nworker survived\nmain joined\n"
    (ev,) = [e for e in run.events if e.name == "getppid"]
    assert ev.pid != ev.tid and ev.verdict == actions.ERRNO | 13


def test_three_abis_reach_the_policy(tmp_path):
    """getppid through `syscall`, `int 0x80` (i386 numbers, AUDIT_ARCH_I386) and x32 (bit
    0x40000000 kept): each ABI's own policy entry decides, as the kernel's filter does."""
    pol = policy_file(tmp_path, {"110": "errno(3)", "64": "errno(1)",
                                 f"{X32_SYSCALL_BIT | 110:#x}": "errno(2)"})
    argv = [cprog("abi"), "110", "64", f"{X32_SYSCALL_BIT | 110:#x}"]
    ref = run_kernel([classic_filter({110: actions.ERRNO | 3})], argv)   # x86_64 part only
    run = run_traced(pol, argv, record=True)
    assert run.stdout == "x86_64 -3\ni386 -1\nx32 -2\n"
    assert ref.stdout.splitlines()[0] == "x86_64 -3"
    got = [(e.arch, e.nr, e.name) for e in run.events if e.name == "getppid"]
    assert got == [(AUDIT_ARCH_X86_64, 110, "getppid"), (AUDIT_ARCH_I386, 64, "getppid"),
                   (AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 110, "getppid")]


def test_allowed_x32_behaves_as_untraced(tmp_path):
    """An allowed x32 call does what it does without the tracer (ENOSYS where the kernel has
    no x32 support)."""
    argv = [cprog("abi"), "110", "64", f"{X32_SYSCALL_BIT | 110:#x}"]
    native = run_native(argv)
    x32 = native.stdout.splitlines()[2]
    if x32 == "x32 -38":
        pytest.skip("this kernel has no x32 support (x32 syscalls are ENOSYS natively); "
                    "only the dispatch of x32 numbers is tested")
    run = run_traced(DEFAULT, argv, dispatch_all=True)
    assert run.stdout.splitlines()[2] == x32


def test_signals_are_delivered(tmp_path):
    code = ("import os, signal, sys\n"
            "signal.signal(signal.SIGUSR1, lambda s, f: print('got', s, flush=True))\n"
            "os.kill(os.getpid(), signal.SIGUSR1)\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "print('not reached')\n")
    run = run_traced(DEFAULT, [sys.executable, "-S", "-c", code])
    assert run.stdout == f"got {int(signal.SIGUSR1)}\n" and run.status == 128 + signal.SIGTERM


def test_group_stop_until_sigcont(tmp_path):
    """A traced process stopped by SIGSTOP stays stopped (PTRACE_LISTEN) until SIGCONT."""
    pidfile = tmp_path / "pid"
    code = ("import os, signal, sys, time\n"
            f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
            "os.kill(os.getpid(), signal.SIGSTOP)\n"
            "print('resumed', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-m", "sysdispatch", "trace", "--", sys.executable,
                             "-S", "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = _wait_for(lambda: int(pidfile.read_text()) if pidfile.exists()
                        and pidfile.read_text() else None)
        _wait_for(lambda: _state(pid) in "tT" or None)
        time.sleep(0.3)
        assert _state(pid) in "tT" and proc.poll() is None     # still stopped
        os.kill(pid, signal.SIGCONT)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert out == "resumed\n" and proc.returncode == 0


def test_own_filter_stacks_like_kernel(tmp_path):
    """A tracee installing its own filter: the kernel combines it with the prefilter (its
    ERRNOs beat TRACE), and the policy still decides what reaches the tracer."""
    getuid = 102
    argv = [cprog("own_filter")]
    kernel = run_kernel([classic_filter({GETPPID: actions.ERRNO | 3, getuid: actions.ERRNO | 6})],
                        argv)
    run = run_traced(policy_file(tmp_path, {"getppid": "errno(3)", "getuid": "errno(6)"}), argv)
    assert run.stdout == kernel.stdout == "installed\ngetpid -77\ngetuid -5\ngetppid -3\n"


def test_waits_for_processes_that_outlive_the_command():
    run = run_traced(DEFAULT, ["sh", "-c", "(sleep 0.3; echo late) & exit 5"])
    assert run.status == 5 and run.stdout == "late\n"


def test_ctrl_c_kills_everything_and_leaves_nothing():
    marker = f"{40 + os.getpid() % 1000}.{time.time_ns() % 997}"
    proc = subprocess.Popen([sys.executable, "-m", "sysdispatch", "trace", "--", "sh", "-c",
                             f"sleep {marker} & sleep {marker}; wait"])
    pids = _wait_for(lambda: _with_marker(marker) if len(_with_marker(marker)) == 2 else None)
    shell = {int(_stat(p)[1]) for p in pids}
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 130
    for pid in pids + list(shell):         # gone: neither stopped nor zombie
        assert not os.path.exists(f"/proc/{pid}")


def test_event_lines_and_output_options(tmp_path):
    target = tmp_path / "d"
    pol = policy_file(tmp_path, {"mkdir": "errno(EPERM)"})
    res = cli("--policy", str(pol), "--", "mkdir", str(target))
    assert res.returncode == 1 and not target.exists()
    assert f'mkdir("{target}", 0777) -> ERRNO(1) EPERM [errno(1)]' in res.stderr
    out = tmp_path / "events.txt"
    res = cli("--policy", str(pol), "-o", str(out), "--", "mkdir", str(target))
    assert "ERRNO(1)" not in res.stderr and "ERRNO(1) EPERM" in out.read_text()
    res = cli("--policy", str(pol), "-q", "--", "mkdir", str(target))
    assert "ERRNO" not in res.stderr and "Operation not permitted" in res.stderr
    res = cli("--policy", str(pol), "-v", "--", "mkdir", str(target))
    assert "-> ALLOW [default]" not in res.stderr        # the prefilter let the rest run
    res = cli("--policy", str(pol), "-v", "--all", "--", "mkdir", str(target))
    assert "execve(" in res.stderr and "-> ALLOW [default]" in res.stderr


def test_record_summary_and_hook_from_the_command_line(tmp_path):
    hook = tmp_path / "myhook.py"
    hook.write_text("from sysdispatch.trace.hooks import Skip\n"
                    "def on_trace(call):\n    return Skip(777)\n")
    pol = policy_file(tmp_path, {"getppid": "trace(3)"})
    rec = tmp_path / "t.jsonl"
    res = cli("--policy", str(pol), "--record", str(rec), "--summary", "--on-trace",
              f"{hook}:on_trace", "--", cprog("sigsys"), "default", str(GETPPID))
    assert res.returncode == 0 and res.stdout == "ret=777\nalive\n"
    events = list(read_events(rec))
    assert len(events) > 20 and [e.verdict for e in events if e.name == "getppid"] == \
        [actions.TRACE | 3]
    assert "getppid" in res.stderr and "calls" in res.stderr     # the summary table


class _CountsOnly(list):
    """A sink like the Summary: it never reads ``Event.decoded``."""

    reads_decoded = False

    def close(self) -> None:
        pass

    __call__ = list.append


def test_paths_are_read_from_the_tracee_only_for_someone_who_reads_them(tmp_path):
    """A sink that only counts gets no decoded paths (no memory read per syscall for it); a
    sink that reads them gets them, and so does a printed line whatever the sinks."""
    pol = policy_file(tmp_path, {"mkdir": "errno(EPERM)"})
    target = str(tmp_path / "d")
    blind = _CountsOnly()
    run = run_traced(pol, ["mkdir", target], sinks=[blind], dispatch_all=True)
    opens = [e for e in blind if e.name == "openat"]
    assert opens and all(e.decoded == {} for e in opens)
    assert f'mkdir("{target}", 0777) -> ERRNO(1) EPERM' in run.lines   # shown: decoded
    (mkdir,) = [e for e in blind if e.name == "mkdir"]
    assert mkdir.decoded == {"pathname": target, "mode": "0777"}
    seeing = run_traced(pol, ["mkdir", target], sinks=[_CountsOnly()], record=True)
    assert any(e.decoded.get("pathname") for e in seeing.events if e.name == "openat")
    assert Summary.reads_decoded is False


def test_cpu_pins_tracer_and_command():
    cpu = max(os.sched_getaffinity(0))
    res = cli("--cpu", str(cpu), "--", "grep", "Cpus_allowed_list", "/proc/self/status")
    assert res.returncode == 0 and res.stdout.split() == ["Cpus_allowed_list:", str(cpu)]


@pytest.mark.parametrize("argv, message", [
    ([], "no command"),
    (["-p", "1", "--", "true"], "either -p PID or a command"),
    (["--", "/nonexistent/prog"], "/nonexistent/prog"),
    (["--", "no-such-command-here"], "command not found"),
    (["-p", "999999999"], "no such process"),
    (["--policy", "/nonexistent.toml", "--", "true"], "/nonexistent.toml"),
    (["--on-trace", "nocolon", "--", "true"], "expected MODULE:FUNC"),
    (["--cpu", "100000", "--", "true"], "CPU 100000 is not available"),
    (["--on-trace", "no_such_module_x:f", "--", "true"], "cannot load"),
])
def test_bad_input_is_one_line_and_status_2(argv, message):
    res = cli(*argv)
    assert res.returncode == 2 if "nonexistent/prog" not in message else res.returncode == 127
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


# --- helpers -------------------------------------------------------------------------------------

def _wait_for(probe, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            got = probe()
        except (OSError, ValueError):
            got = None
        if got is not None:
            return got
        time.sleep(0.02)
    raise AssertionError("timed out")


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: state, ppid, ..."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()


def _state(pid: int) -> str:
    return _stat(pid)[0]


def _with_marker(marker: str) -> list[int]:
    """Processes running ``sleep MARKER``."""
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if f.read() == f"sleep\0{marker}\0".encode():
                        found.append(int(d))
            except OSError:
                pass
    return found


def test_live_slot_swap_beats_the_static_shortcut(tmp_path):
    """With --all, syscalls the policy allows whatever their arguments are let through without
    asking the policy — until a live slot swap changes the tables (the policy's generation)."""
    from sysdispatch.policy.loaded import LoadedPolicy
    from sysdispatch.seccomp.data import AUDIT_ARCH_X86_64 as X86
    from sysdispatch.trace.tracer import Tracer
    import tempfile
    loaded = LoadedPolicy.from_file(policy_file(tmp_path, {"mkdir": "errno(1)"}))
    tracer = Tracer(loaded, dispatch_all=True)
    assert (X86, GETPPID) in tracer._static
    loaded.set_slot("syscalls", "getppid", "errno(1)")
    with tempfile.TemporaryFile("w+") as out:
        assert tracer.spawn([cprog("sigsys"), "default", str(GETPPID)], stdout=out.fileno()) == 0
        out.seek(0)
        assert out.read() == "ret=-1\nalive\n"


def test_a_child_reaped_before_its_parents_fork_event_leaves_no_ghost(monkeypatch):
    """A late fork event of a child already reaped must not bring it back: the tracer would
    keep a ghost whose pid, once reused by an unrelated process, Ctrl-C would SIGKILL."""
    from sysdispatch.policy.loaded import LoadedPolicy
    from sysdispatch.policy.parse import default_path
    from sysdispatch.trace.tracer import Tracer
    from tracer_helpers import ChildExitsFirst
    waiter = ChildExitsFirst(os.waitpid)
    monkeypatch.setattr(os, "waitpid", waiter)   # the tracer's loop waits with os.waitpid
    tracer = Tracer(LoadedPolicy.from_file(default_path()), dispatch_all=True)
    assert tracer.spawn(["sh", "-c", "(true); (true); (exit 3)"]) == 3
    monkeypatch.undo()
    assert waiter.reordered > 0 and tracer.threads == {}
