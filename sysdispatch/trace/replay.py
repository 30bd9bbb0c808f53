"""Replay: run recorded syscalls through a policy again, without ptrace.

Every recorded event carries the ``struct seccomp_data`` the policy saw live (nr, arch, ip,
args). :func:`replay` feeds them, in recorded order, to a policy's ``decide`` and pairs each
recorded event with the new decision — and with a second policy's decision for ``--diff``.

Order and freshness matter for policies with state: a handler that counts calls in a map (like
filters/fault-inject.toml) decides differently on the third openat than on the first. So each
trace file gets freshly loaded policies, fed events in file order, exactly as the live run fed
one policy; then the same policy gives the same verdicts as the live run.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol

from ..seccomp import actions
from ..seccomp.data import SeccompData
from .events import Event, Header
from .record import TraceReader


class DecisionLike(Protocol):
    ret: int
    path: tuple[str, ...]
    handler: str | None


class PolicyLike(Protocol):
    def decide(self, data: SeccompData) -> DecisionLike: ...


@dataclass(frozen=True, slots=True)
class Replayed:
    """One recorded event and what the replayed policies decided for it."""

    trace: str                    # the trace file
    line: int                     # the event's line in it
    event: Event                  # as recorded
    decision: DecisionLike        # the policy's decision now
    other: DecisionLike | None    # the --diff policy's, when given

    @property
    def changed(self) -> bool:
        """Whether this event is listed: the two policies disagree (with --diff), or the policy
        disagrees with the recorded verdict."""
        theirs = self.other.ret if self.other is not None else self.event.verdict
        return (self.decision.ret & 0xFFFFFFFF) != (theirs & 0xFFFFFFFF)

    def as_event(self, decision: DecisionLike | None = None) -> Event:
        """The recorded event with a replayed decision in place of the recorded one."""
        return decided(self.event, decision or self.decision)


def decided(ev: Event, decision: DecisionLike) -> Event:
    return dataclasses.replace(ev, verdict=decision.ret & 0xFFFFFFFF,
                               handler=decision.handler or "default", path=tuple(decision.path))


# Progress is reported by time, not per event: a clock read every PROGRESS_CHECK events keeps the
# cost per event near zero, and at most one report per PROGRESS_INTERVAL keeps a terminal calm.
PROGRESS_CHECK = 512
PROGRESS_INTERVAL = 0.1

ProgressHook = Callable[[str, int, int], None]   # (trace path, bytes read, file size)


def replay(traces: Iterable[str | os.PathLike], load_policy: Callable[[], PolicyLike], *,
           load_other: Callable[[], PolicyLike] | None = None, allow_truncated: bool = False,
           on_trace: Callable[[TraceReader], None] | None = None,
           on_progress: ProgressHook | None = None) -> Iterator[Replayed]:
    """Replay every event of every trace, in order. ``load_policy`` (and ``load_other``) are
    called once per trace for a fresh policy; ``on_trace`` sees each opened reader (its header
    before the events, its ``truncated`` note after them). ``on_progress(path, done, size)`` is
    called when a trace is opened, at most every PROGRESS_INTERVAL seconds while it is read
    (``done``: bytes read), and once at its end with ``done == size``."""
    for path in traces:
        with TraceReader(path, allow_truncated=allow_truncated) as reader:
            policy = load_policy()
            other = load_other() if load_other is not None else None
            if on_trace is not None:
                on_trace(reader)
            size = reader.size
            if on_progress is not None:
                on_progress(reader.path, reader.bytes_read, size)
            last = time.monotonic()
            for n, ev in enumerate(reader, 1):
                data = ev.seccomp_data()
                yield Replayed(reader.path, reader.line, ev, policy.decide(data),
                               other.decide(data) if other is not None else None)
                if on_progress is not None and n % PROGRESS_CHECK == 0:
                    now = time.monotonic()
                    if now - last >= PROGRESS_INTERVAL:
                        last = now
                        on_progress(reader.path, reader.bytes_read, size)
            if on_progress is not None:
                on_progress(reader.path, size, size)




# --- describing events for people ---------------------------------------------------------------

def call_text(ev: Event) -> str:
    """``openat(0xffffff9c, 0x7ffd1000, 0x0, 0x0, 0x0, 0x0) pathname="/etc/passwd"``."""
    text = f"{ev.name}({', '.join(hex(a) for a in ev.args)})"
    if ev.decoded:
        text += " " + " ".join(f"{k}={v!r}" for k, v in ev.decoded.items())
    return text


def verdict_text(ret: int, handler: str | None) -> str:
    return f"{actions.describe(ret)} [{handler or 'default'}]"


def difference_json(r: Replayed, first: str, second: str) -> dict[str, Any]:
    """One listed event: where it is, the call, and both sides' verdicts."""
    ev = r.event
    if r.other is not None:
        a, b = (r.decision.ret, r.decision.handler, r.decision.path), \
               (r.other.ret, r.other.handler, r.other.path)
    else:
        a, b = (ev.verdict, ev.handler, ev.path), \
               (r.decision.ret, r.decision.handler, r.decision.path)
    return {
        "trace": r.trace, "line": r.line, "time": ev.time, "pid": ev.pid, "tid": ev.tid,
        "syscall": ev.name, "nr": ev.nr, "arch": ev.arch, "args": list(ev.args),
        "decoded": ev.decoded,
        first: {"verdict": a[0] & 0xFFFFFFFF, "verdict_text": actions.describe(a[0]),
                "handler": a[1] or "default", "path": list(a[2])},
        second: {"verdict": b[0] & 0xFFFFFFFF, "verdict_text": actions.describe(b[0]),
                 "handler": b[1] or "default", "path": list(b[2])},
    }


def header_json(header: Header, path: str) -> dict[str, Any]:
    return {"trace": path, "policy": header.policy, "policy_hash": header.policy_hash,
            "command": list(header.command), "start_time": header.start_time,
            "mode": header.mode, "arch": header.arch}
