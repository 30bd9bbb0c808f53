"""The dashboard's counters model: a tracer sink that only counts, and snapshots for the view.

:class:`DashModel` is called once per dispatched syscall (``model(event)``) from the tracer's
thread; it updates a few counters under one lock held for microseconds and never draws. The view
(dash/view.py, rich) runs in another thread and asks for :meth:`DashModel.snapshot`, an immutable
copy, so drawing never blocks the tracer and the tracer never waits for drawing. No rich here.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from ..seccomp import actions
from ..trace.events import Event
from ..trace.summary import column_of   # the summary's grouping of actions into columns

# Verdicts that refuse the call: what "sort by denials" and the denials panel count.
DENIALS = frozenset({"errno", "trap", "kill"})
SORT_KEYS = ("calls", "denials")
RATE_SECONDS = 60          # the sparkline's width in seconds
RECENT_DENIALS = 8


def tail_call_depth(path: tuple[str, ...]) -> int:
    """Tail calls that reached a program on the way to the verdict (``tail_call ...`` steps)."""
    return sum(1 for step in path if step.startswith("tail_call"))


def verdict_text(ret: int) -> str:
    """``ERRNO(EACCES)`` (the errno by name, as people read it), else ``actions.describe``."""
    if actions.action_of(ret) == actions.ERRNO:
        return f"ERRNO({actions.errno_name(ret & actions.DATA)})"
    return actions.describe(ret)


def args_text(ev: Event) -> str:
    """The decoded arguments when the tracer read any, else the raw words in hex."""
    if ev.decoded:
        return " ".join(f"{k}={v}" for k, v in ev.decoded.items())
    return ", ".join(hex(a) for a in ev.args)


@dataclass(frozen=True, slots=True)
class RowSnap:
    name: str
    nr: int
    calls: int
    handler: str
    depth: int
    verdicts: dict[str, int]
    last_args: str

    @property
    def denials(self) -> int:
        return sum(n for v, n in self.verdicts.items() if v in DENIALS)


@dataclass(frozen=True, slots=True)
class Denial:
    time: float
    pid: int
    name: str
    verdict: str
    handler: str
    args: str


@dataclass(frozen=True, slots=True)
class TableOccupancy:
    name: str          # the PROG_ARRAY's name (a per-arch nr table carries its arch)
    filled: int
    size: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    command: str
    policy: str
    mode: str
    elapsed: float
    events: int
    rate: float                          # syscalls per second over the last full second(s)
    processes: int
    threads: int
    alive_known: bool                    # False in replay: counts are "seen", not "alive"
    rows: tuple[RowSnap, ...]            # sorted by ``sort``
    sort: str
    denials: tuple[Denial, ...]          # newest first
    rates: tuple[int, ...]               # events per second, oldest first
    tables: tuple[TableOccupancy, ...]
    finished: bool = False


@dataclass
class _Row:
    name: str
    nr: int
    calls: int = 0
    handler: str = "default"
    depth: int = 0
    verdicts: dict = field(default_factory=dict)
    last: Event | None = None


def occupancy(policy) -> tuple[TableOccupancy, ...]:
    """Filled slots per jump table of a loaded policy (read live: slots may be swapped)."""
    if policy is None:
        return ()
    compiled = getattr(policy, "compiled", None)
    if compiled is None:
        return ()
    out = []
    for array in compiled.arrays.values():
        slots = list(array.slots)
        out.append(TableOccupancy(array.name, sum(s is not None for s in slots), len(slots)))
    return tuple(out)


class DashModel:
    """Counts per syscall, verdict, process; keeps the last denials and a per-second rate."""

    def __init__(self, policy=None, *, command: str = "", policy_name: str | None = None,
                 mode: str = "enforce", live: bool = True,
                 clock=time.monotonic) -> None:
        self.policy = policy
        self.command = command
        self.policy_name = policy_name or (policy.policy.name if policy is not None else "-")
        self.mode = mode
        self.live = live               # processes can be checked for being alive (/proc)
        self.sort = "calls"
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        self._rows: dict[tuple[int, int], _Row] = {}
        self._tids: dict[int, int] = {}         # tid -> tgid
        self._denials: deque[Event] = deque(maxlen=RECENT_DENIALS)
        self._per_second: deque[int] = deque(maxlen=RATE_SECONDS)
        self._second = 0                        # the event-time second _per_second[-1] counts
        self._events = 0
        self._finished = False
        self._columns: dict[int, str] = {}
        self._depths: dict[tuple[str, ...], int] = {}

    # --- the sink --------------------------------------------------------------------------

    def __call__(self, ev: Event) -> None:
        # per-verdict and per-path answers are remembered: a tracer repeats a few of each
        col = self._columns.get(ev.verdict)
        if col is None:
            col = self._columns[ev.verdict] = column_of(ev.verdict)
        depth = self._depths.get(ev.path)
        if depth is None:
            depth = self._depths[ev.path] = tail_call_depth(ev.path)
        sec = int(ev.time)
        with self._lock:
            row = self._rows.get((ev.arch, ev.nr))
            if row is None:
                row = self._rows[(ev.arch, ev.nr)] = _Row(ev.name, ev.nr)
            row.calls += 1
            row.handler = ev.handler
            row.depth = depth
            row.verdicts[col] = row.verdicts.get(col, 0) + 1
            row.last = ev                       # decoded lazily, at snapshot time
            self._tids[ev.tid] = ev.pid
            self._events += 1
            per = self._per_second
            if not per:
                self._second = sec
                per.append(0)
            while sec > self._second:           # seconds without events count as zeros
                self._second += 1
                per.append(0)
            per[-1] += 1
            if col in DENIALS:
                self._denials.append(ev)        # described at snapshot time, off the tracer

    def close(self) -> None:
        """The tracer calls it at the end: the header then says the run finished."""
        self._finished = True

    # --- the view's side ---------------------------------------------------------------------

    def toggle_sort(self) -> str:
        self.sort = SORT_KEYS[(SORT_KEYS.index(self.sort) + 1) % len(SORT_KEYS)]
        return self.sort

    def snapshot(self) -> Snapshot:
        with self._lock:   # copy the few mutable pieces; build everything else outside
            raw = [(r.name, r.nr, r.calls, r.handler, r.depth, dict(r.verdicts), r.last)
                   for r in self._rows.values()]
            tids = dict(self._tids)
            denied = list(self._denials)
            rates = tuple(self._per_second)
            events = self._events
        denials = tuple(Denial(ev.time, ev.pid, ev.name, verdict_text(ev.verdict), ev.handler,
                               args_text(ev)) for ev in reversed(denied))
        rows = [RowSnap(n, nr, c, h, d, v, args_text(last) if last is not None else "")
                for n, nr, c, h, d, v, last in raw]
        if self.sort == "denials":
            rows.sort(key=lambda r: (-r.denials, -r.calls, r.name))
        else:
            rows.sort(key=lambda r: (-r.calls, r.name))
        if self.live and not self._finished:
            alive = [t for t in tids if os.path.exists(f"/proc/{t}")]
            procs = len({tids[t] for t in alive})
            threads = len(alive)
        else:
            procs, threads = len(set(tids.values())), len(tids)
        # the current second is still filling: the rate is the last complete one when there is
        rate = float(rates[-2] if len(rates) >= 2 else (rates[-1] if rates else 0))
        return Snapshot(self.command, self.policy_name, self.mode, self._clock() - self._start,
                        events, rate, procs, threads, self.live and not self._finished,
                        tuple(rows), self.sort, denials, rates, occupancy(self.policy),
                        self._finished)
