"""Dispatch events: what the tracer (or a replayed trace) reports for each dispatched syscall.

Everything right of the ptrace stop — enforcement reports, the recorder, replay, summaries, the
dashboard — consumes :class:`Event` values and must not know whether a live tracer or a trace file
produced them. ``decoded`` holds arguments read from the tracee for people (paths, flag names);
it is never fed to BPF programs: the policy sees only the ``struct seccomp_data`` fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..seccomp.data import SeccompData

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Header:
    """The first line of a trace file."""

    arch: str                      # e.g. "x86_64": the tracer's native arch
    policy: str                    # policy name
    policy_hash: str               # sha256 of the policy file's bytes (or of the embedded default)
    command: tuple[str, ...]
    start_time: float              # Unix time
    mode: str = "enforce"          # "enforce" | "audit"
    version: int = FORMAT_VERSION


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched syscall."""

    time: float                    # seconds since the trace started
    pid: int                       # thread group id
    tid: int
    nr: int                        # as in seccomp_data (x32 keeps its bit)
    name: str                      # syscall name for the arch, or "syscall_<nr>"
    arch: int                      # AUDIT_ARCH_*
    ip: int
    args: tuple[int, ...]          # six u64
    verdict: int                   # the 32-bit SECCOMP_RET_* value the policy returned
    handler: str = "default"       # the handler that decided, or "default"
    path: tuple[str, ...] = ()     # e.g. ("syscall_entry", "tail_call syscalls[257]", "openat_rules")
    enforced: bool = True          # False in audit mode (reported only)
    decoded: dict[str, str] = field(default_factory=dict)

    def seccomp_data(self) -> SeccompData:
        return SeccompData(self.nr, self.arch, self.ip, self.args)
