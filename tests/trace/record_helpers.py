"""Events made the way the tracer makes them — a policy decides each syscall — for the record,
replay and summary tests (until a live tracer feeds them; see test_replay_live.py)."""

from __future__ import annotations

import time
from pathlib import Path

from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.seccomp import arch as _arch
from sysdispatch.seccomp.data import SeccompData
from sysdispatch.trace.events import Event, Header
from sysdispatch.trace.record import Recorder, policy_file_hash

REPO = Path(__file__).resolve().parents[2]
FILTERS = REPO / "filters"
DEFAULT_POLICY = REPO / "sysdispatch" / "data" / "default.toml"
X86_64 = _arch.X86_64
AT_FDCWD = 0xFFFFFFFFFFFFFF9C   # -100 as the tracee's 64-bit register holds it
O_CREAT, O_DIRECTORY = 0o100, 0o200000


def decide_events(policy: LoadedPolicy, calls, *, pid: int = 4242, arch=X86_64,
                  start: float = 0.0, step: float = 0.001) -> list[Event]:
    """One Event per (syscall name or number, args[, tid]) in ``calls``, decided by ``policy``
    in order, as a tracer would report them."""
    out = []
    for i, call in enumerate(calls):
        name, args, tid = (tuple(call) + (pid,))[:3]
        nr = name if isinstance(name, int) else arch.syscall_number(name)
        label = arch.syscall_name(nr) or f"syscall_{nr}"
        data = SeccompData(nr, arch.audit, 0x401000 + i, tuple(args))
        d = policy.decide(data)
        out.append(Event(round(start + i * step, 6), pid, tid, nr, label, arch.audit,
                         data.instruction_pointer, data.args, d.ret, d.handler or "default", d.path,
                         decoded={"call": str(i)} if i % 3 == 0 else {}))
    return out


def header_for(policy_path: Path, command=("synthetic",), mode: str = "enforce") -> Header:
    return Header("x86_64", policy_path.stem, policy_file_hash(policy_path), tuple(command),
                  time.time(), mode)


def record(path: Path, header: Header, events) -> Path:
    with Recorder(path, header) as rec:
        for ev in events:
            rec(ev)
    return path


# A small mixed workload: file opens (some creating, some directories), reads, a socket of each
# family, kills, and a ptrace.
WORKLOAD = [
    ("openat", (AT_FDCWD, 0x7FFD0000, 0, 0, 0, 0)),
    ("openat", (AT_FDCWD, 0x7FFD0100, O_CREAT | 1, 0o644, 0, 0)),
    ("read", (3, 0x7FFD2000, 4096, 0, 0, 0)),
    ("openat", (AT_FDCWD, 0x7FFD0200, O_DIRECTORY, 0, 0, 0)),
    ("socket", (1, 1, 0, 0, 0, 0)),
    ("socket", (2, 1, 0, 0, 0, 0)),
    ("socket", (10, 2, 0, 0, 0, 0)),
    ("socket", (16, 3, 0, 0, 0, 0)),
    ("kill", (1, 9, 0, 0, 0, 0)),
    ("kill", (4243, 15, 0, 0, 0, 0)),
    ("ptrace", (0, 0, 0, 0, 0, 0)),
    ("openat", (3, 0x7FFD0300, 0, 0, 0, 0)),
    ("read", (3, 0x7FFD2000, 4096, 0, 0, 0)),
    ("write", (1, 0x7FFD3000, 12, 0, 0, 0)),
]
