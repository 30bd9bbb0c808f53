"""Shared pieces of the tracer tests: C programs built on demand, policies written from a table,
the same program run under a real kernel filter, in-process traced runs and CLI runs."""

from __future__ import annotations

import atexit
import io
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.seccomp import actions
from sysdispatch.seccomp.data import AUDIT_ARCH_X86_64, OFF_ARCH, OFF_NR
from sysdispatch.trace import ptrace as pt
from sysdispatch.trace.prefilter import Loader
from sysdispatch.trace.tracer import Tracer
from sysdispatch.vm.cbpf import OPS, RET, CInsn, encode

C_DIR = Path(__file__).parent / "c"
_BUILT: dict[str, str] = {}
_BUILD_DIR = tempfile.mkdtemp(prefix="sysdispatch-trace-tests-")
atexit.register(shutil.rmtree, _BUILD_DIR, True)

needs_root_gcc = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("gcc") is None,
                                    reason="needs root (ptrace, seccomp) and gcc")

# x86_64 syscall numbers the tests use (checked against libseccomp in test_tracer).
GETPPID, GETPID, GETPGID, MKDIR = 110, 39, 121, 83


def cprog(name: str) -> str:
    """The path of tests/trace/c/NAME.c, compiled once per test session."""
    if name not in _BUILT:
        out = os.path.join(_BUILD_DIR, name)
        subprocess.run(["gcc", "-O2", "-pthread", "-o", out, str(C_DIR / f"{name}.c")],
                       check=True, capture_output=True)
        _BUILT[name] = out
    return _BUILT[name]


def policy_file(tmp_path: Path, entries: dict[str, str], *, default: str = "allow",
                bad_arch: str = "kill_process", arches=("x86_64", "i386", "x32"),
                extra: str = "") -> Path:
    """A policy whose syscall table maps names (or numbers) to action literals/handlers."""
    lines = [f'"{k}" = "{v}"' for k, v in entries.items()]
    text = textwrap.dedent(f"""\
        [policy]
        name = "test"
        arches = [{", ".join(f'"{a}"' for a in arches)}]
        default = "{default}"
        bad_arch = "{bad_arch}"
        [tables.syscalls]
        index = "nr"
        [tables.syscalls.entries]
        """) + "\n".join(lines) + "\n" + extra
    path = tmp_path / f"policy-{abs(hash(text))}.toml"
    path.write_text(text)
    return path


def classic_filter(rets: dict[int, int], default: int = actions.ALLOW) -> bytes:
    """A kernel filter for x86_64: ``nr -> ret`` for the listed numbers, ``default`` else (any
    other arch: default too)."""
    ld = next(c for c, o in OPS.items() if o.kind == "ld_abs" and o.size == 4)
    jeq = next(c for c, o in OPS.items() if o.kind == "jcc" and o.op == "jeq" and not o.reg)
    insns = [CInsn(ld, 0, 0, OFF_ARCH), CInsn(jeq, 0, 2 * len(rets) + 1, AUDIT_ARCH_X86_64),
             CInsn(ld, 0, 0, OFF_NR)]
    for i, (nr, ret) in enumerate(rets.items()):
        insns += [CInsn(jeq, 0, 1, nr), CInsn(RET, 0, 0, ret)]
    insns.append(CInsn(RET, 0, 0, default))
    return encode(insns)


@dataclass
class Run:
    status: int            # shell-style: exit code or 128 + signal
    stdout: str
    events: list = field(default_factory=list)
    lines: str = ""        # the tracer's event lines
    tracer: Tracer | None = None


def shell_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def run_kernel(programs: list[bytes], argv: list[str], timeout: float = 30) -> Run:
    """``argv`` under real kernel filters (oldest first), no tracer: the reference."""
    loader = Loader(programs)
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                         preexec_fn=loader.install)
    return Run(shell_status(res.returncode), res.stdout)


def run_native(argv: list[str], timeout: float = 30) -> Run:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return Run(shell_status(res.returncode), res.stdout)


def run_traced(policy: Path | LoadedPolicy, argv: list[str], **kw) -> Run:
    """``argv`` under the tracer, in this process; stdout captured through a file."""
    loaded = policy if isinstance(policy, LoadedPolicy) else LoadedPolicy.from_file(policy)
    events: list = []
    sinks = list(kw.pop("sinks", ()))
    if kw.pop("record", False):
        sinks.append(_ListSink(events))
    lines = io.StringIO()
    tracer = Tracer(loaded, out=lines, sinks=sinks, **kw)
    with tempfile.TemporaryFile("w+") as out:
        status = tracer.spawn(argv, stdout=out.fileno())
        out.seek(0)
        text = out.read()
    return Run(status, text, events, lines.getvalue(), tracer)


class _ListSink:
    def __init__(self, events: list) -> None:
        self.events = events

    def __call__(self, ev) -> None:
        self.events.append(ev)

    def close(self) -> None:
        pass


def cli(*argv: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """``sysdispatch trace ARGV`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "sysdispatch", "trace", *argv],
                          capture_output=True, text=True, timeout=timeout, **kw)


class ChildExitsFirst:
    """``pt.wait`` for dump's loop that holds back a fork/vfork/clone event until the new task
    has been reported as exited: the kernel may report a short-lived child's whole life before
    its creator's event. Counts how often it held one back."""

    NEW_TASK = (pt.PTRACE_EVENT_FORK, pt.PTRACE_EVENT_VFORK, pt.PTRACE_EVENT_CLONE)

    def __init__(self, real) -> None:
        self.real = real     # the wait being wrapped: (pid, flags) -> (tid, status)
        self.held: list[tuple[int, int, int]] = []   # (child, parent tid, status)
        self.ready: list[tuple[int, int]] = []
        self.exited: set[int] = set()
        self.reordered = 0

    def __call__(self, pid: int = -1, flags: int = pt.WALL) -> tuple[int, int]:
        if pid != -1:
            return self.real(pid, flags)
        while not self.ready:
            try:
                tid, status = self.real(-1, flags)
            except ChildProcessError:
                if not self.held:
                    raise
                child, tid, status = self.held.pop(0)   # let it through after all
                return tid, status
            if os.WIFSTOPPED(status) and status >> 16 in self.NEW_TASK:
                self.held.append((pt.geteventmsg(tid), tid, status))
                continue
            if not os.WIFSTOPPED(status):
                self.exited.add(tid)
            self.ready.append((tid, status))
            for entry in [h for h in self.held if h[0] in self.exited]:
                self.held.remove(entry)
                self.ready.append(entry[1:])
                self.reordered += 1
        return self.ready.pop(0)
