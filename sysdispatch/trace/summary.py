"""The ``--summary`` table: calls per syscall, like ``strace -c``, with verdict columns and the
handlers that fired.

:class:`Summary` is a tracer sink (``summary(event)``, ``summary.close()``) that only counts, so
it costs about a microsecond per event and its memory grows with the number of distinct
syscalls, not of events. It is fed alike by a live tracer and by replay.

The table model (:meth:`Summary.columns`, :meth:`Summary.cells`) is the one source of the
layout: :func:`format_text` prints it as aligned text, :mod:`sysdispatch.dash.summary` as a rich
table, and :meth:`Summary.to_json` gives every count for ``--json``. There are no time columns:
events are reported at syscall entry, so how long a syscall took is not known.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..seccomp import actions
from ..seccomp import arch as _arch
from .events import Event, Header

# Verdict columns, most permissive first: (column title, actions counted in it). Unknown actions
# count as kills, as the kernel enforces them (actions.action_of).
VERDICT_COLUMNS: tuple[tuple[str, frozenset[int]], ...] = (
    ("allow", frozenset({actions.ALLOW})),
    ("log", frozenset({actions.LOG})),
    ("trace", frozenset({actions.TRACE})),
    ("notif", frozenset({actions.USER_NOTIF})),
    ("errno", frozenset({actions.ERRNO})),
    ("trap", frozenset({actions.TRAP})),
    ("kill", frozenset({actions.KILL_THREAD, actions.KILL_PROCESS})),
)
_COLUMN_OF = {act: title for title, acts in VERDICT_COLUMNS for act in acts}
ALWAYS_SHOWN = ("allow",)


def column_of(verdict: int) -> str:
    """The verdict column (``allow``, ``errno``, ...) a raw seccomp return value counts in."""
    return _COLUMN_OF[actions.action_of(verdict)]


def arch_label(audit: int, nr: int) -> str:
    """``x86_64``, ``i386``, ``x32`` (an x86_64 number with the x32 bit), or the hex value."""
    a = _arch.by_audit(audit & 0xFFFFFFFF)
    if a is None:
        return f"arch {audit & 0xFFFFFFFF:#010x}"
    return _arch.for_number(a, nr).name


@dataclass
class Row:
    """The counts for one syscall (one (arch, nr)), or the total."""

    name: str
    arch: int
    nr: int
    calls: int = 0
    reported_only: int = 0                                       # enforced=False (audit mode)
    verdicts: Counter = field(default_factory=Counter)           # raw verdict -> calls
    handlers: Counter = field(default_factory=Counter)           # handler name -> calls

    def column_counts(self) -> Counter:
        out: Counter = Counter()
        for ret, n in self.verdicts.items():
            out[column_of(ret)] += n
        return out


class Summary:
    """Counts of dispatched syscalls by syscall, verdict and handler."""

    reads_decoded = False   # counts only: the tracer need not read paths from the tracee for it

    def __init__(self, header: Header | None = None) -> None:
        self.header = header
        self.rows_by_key: dict[tuple[int, int], Row] = {}
        self.pids: set[int] = set()
        self.tids: set[int] = set()
        self.first_time: float | None = None
        self.last_time = 0.0
        self.events = 0

    def __call__(self, ev: Event) -> None:
        key = (ev.arch, ev.nr)
        row = self.rows_by_key.get(key)
        if row is None:
            row = self.rows_by_key[key] = Row(ev.name, ev.arch, ev.nr)
        row.calls += 1
        row.verdicts[ev.verdict] += 1
        row.handlers[ev.handler] += 1
        if not ev.enforced:
            row.reported_only += 1
        self.pids.add(ev.pid)
        self.tids.add(ev.tid)
        if self.first_time is None:
            self.first_time = ev.time
        self.last_time = ev.time
        self.events += 1

    def close(self) -> None:
        """Nothing to release: the tracer calls it on every sink."""

    # --- the table model ----------------------------------------------------------------------

    def rows(self) -> list[Row]:
        """Most called first; ties by name."""
        return sorted(self.rows_by_key.values(), key=lambda r: (-r.calls, r.name, r.arch, r.nr))

    def total(self) -> Row:
        t = Row("total", 0, -1)
        for r in self.rows_by_key.values():
            t.calls += r.calls
            t.reported_only += r.reported_only
            t.verdicts.update(r.verdicts)
            t.handlers.update(r.handlers)
        return t

    def native_arch(self) -> str | None:
        return self.header.arch if self.header else None

    def syscall_label(self, row: Row) -> str:
        """The syscall's name, with its architecture when it is not the trace's own."""
        label = arch_label(row.arch, row.nr)
        native = self.native_arch() or _arch.native().name
        return row.name if label == native else f"{row.name} ({label})"

    def columns(self) -> list[str]:
        """Titles, left to right: verdict columns no event needed are left out."""
        used = self.total().column_counts()
        verdicts = [t for t, _ in VERDICT_COLUMNS if t in ALWAYS_SHOWN or used[t]]
        audit = ["reported"] if any(r.reported_only for r in self.rows_by_key.values()) else []
        return ["% calls", "calls", *verdicts, *audit, "syscall", "handlers"]

    def cells(self) -> tuple[list[list[str]], list[str]]:
        """The body rows and the total row, as text cells in :meth:`columns` order."""
        titles = self.columns()
        total = self.total()
        body = [self._cells(r, titles, total.calls, self.syscall_label(r)) for r in self.rows()]
        return body, self._cells(total, titles, total.calls, "total")

    @staticmethod
    def _cells(row: Row, titles: list[str], all_calls: int, label: str) -> list[str]:
        counts = row.column_counts()
        out = []
        for t in titles:
            if t == "% calls":
                out.append(f"{100 * row.calls / all_calls:.2f}" if all_calls else "0.00")
            elif t == "calls":
                out.append(str(row.calls))
            elif t == "reported":
                out.append(str(row.reported_only))
            elif t == "syscall":
                out.append(label)
            elif t == "handlers":
                out.append(handlers_text(row.handlers) if label != "total" else
                           f"{len(row.handlers)} handlers")
            else:
                out.append(str(counts[t]))
        return out

    def footer(self) -> str:
        span = (self.last_time - self.first_time) if self.first_time is not None else 0.0
        parts = [f"{self.events} syscalls in {span:.3f} s",
                 f"{len(self.pids)} process{'es' if len(self.pids) != 1 else ''}",
                 f"{len(self.tids)} thread{'s' if len(self.tids) != 1 else ''}"]
        if self.header:
            parts.append(f"policy {self.header.policy} ({self.header.mode})")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        def row_json(r: Row) -> dict[str, Any]:
            return {
                "syscall": r.name, "arch": arch_label(r.arch, r.nr), "nr": r.nr,
                "calls": r.calls, "reported_only": r.reported_only,
                "actions": dict(sorted(r.column_counts().items())),
                "verdicts": {actions.describe(v): n for v, n in sorted(r.verdicts.items())},
                "handlers": dict(r.handlers.most_common()),
            }
        total = row_json(self.total())
        for k in ("syscall", "arch", "nr"):
            del total[k]
        return {
            "policy": self.header.policy if self.header else None,
            "mode": self.header.mode if self.header else None,
            "events": self.events, "processes": len(self.pids), "threads": len(self.tids),
            "seconds": (self.last_time - self.first_time) if self.first_time is not None else 0.0,
            "total": total,
            "syscalls": [row_json(r) for r in self.rows()],
        }


def handlers_text(handlers: Counter) -> str:
    """``openat_rules``, or ``openat_rules 12, default 3`` when more than one fired."""
    if len(handlers) == 1:
        return next(iter(handlers))
    return ", ".join(f"{h} {n}" for h, n in handlers.most_common())


_RIGHT = frozenset({"% calls", "calls", "reported", *(t for t, _ in VERDICT_COLUMNS)})


def format_text(summary: Summary) -> str:
    """The table as plain text, aligned like ``strace -c``."""
    titles = summary.columns()
    body, total = summary.cells()
    widths = [max(len(t), *(len(r[i]) for r in body + [total])) for i, t in enumerate(titles)]
    widths[-1] = len(titles[-1])  # the last column is not padded

    def line(cells: list[str]) -> str:
        return " ".join(c.rjust(w) if t in _RIGHT else c.ljust(w)
                        for c, w, t in zip(cells, widths, titles)).rstrip()

    rule = " ".join("-" * max(w, len(t)) for w, t in zip(widths, titles))
    out = [line(titles), rule, *map(line, body), rule, line(total), summary.footer()]
    return "\n".join(out) + "\n"
