"""``sysdispatch demo``: the README's first command, end to end."""

from __future__ import annotations

import subprocess
import sys

from sysdispatch.cli import demo, main
from sysdispatch.seccomp.arch import X86_64
from sysdispatch.vm.interp import run


def test_demo_shows_each_dispatch_path(capsys):
    assert main(["demo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    text = "\n".join(lines)
    openat = X86_64.syscall_number("openat")
    assert f"syscall_entry -> tail_call syscalls[{openat}] -> openat -> ALLOW" in text
    assert f"syscall_entry -> tail_call syscalls[{openat}] -> openat -> ERRNO(13)" in text
    assert "-> ptrace -> LOG" in text and "-> execve -> ALLOW" in text
    getpid = X86_64.syscall_number("getpid")
    assert f"tail_call syscalls[{getpid}] (empty slot) -> default -> ALLOW" in text
    assert "tail_call syscalls[1000] (index >= 512) -> default -> ALLOW" in text
    assert "arch check failed -> KILL_PROCESS" in text
    assert lines[-1] == "8 syscalls dispatched, 5 tail calls taken"


def test_demo_paths_come_from_the_runs():
    # the handler a line names is the program the run entered, and its verdict the run's r0
    entry, table = demo.build_table()
    for s in demo.samples():
        res = run(entry, s.data)
        path = demo.describe_path(entry, table, s, res)
        if len(res.chain) > 1:
            assert f"-> {res.chain[-1].name} ->" in path
            assert table.get(s.data.nr) is res.chain[-1]
    # swap a handler live: the same sample now takes the new path
    ptrace = X86_64.syscall_number("ptrace")
    table.update(ptrace, demo.constant_handler("ptrace_denied", 0x00050001))
    sample = next(s for s in demo.samples() if s.label.startswith("ptrace"))
    res = run(entry, sample.data)
    assert demo.describe_path(entry, table, sample, res).endswith("-> ptrace_denied -> ERRNO(1)")


def test_demo_runs_as_a_command():
    done = subprocess.run([sys.executable, "-m", "sysdispatch", "demo"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    assert "tail calls taken" in done.stdout
