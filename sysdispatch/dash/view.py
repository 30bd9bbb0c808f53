"""The dashboard's rich renderables, drawn from a :class:`~sysdispatch.dash.model.Snapshot`.

Nothing here touches the tracer: :func:`render` takes a snapshot (an immutable copy the model
made) and returns one renderable — the header line, the per-syscall table, and three panels (jump
table occupancy, recent denials, a rate sparkline). :func:`plain_line` is the one-line form used
when stdout is not a terminal.
"""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .model import Snapshot

# Colours say how severe an action is (the summary table uses the same ones).
STYLE = {"allow": "green", "log": "cyan", "trace": "blue", "notif": "blue",
         "errno": "yellow", "trap": "magenta", "kill": "bold red"}
SHOWN_VERDICTS = ("allow", "log", "errno", "trap", "trace", "kill")
MAX_ROWS = 20
COMMAND_WIDTH = 50     # the header is one line: a long or multi-line command is shortened
_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: tuple[int, ...] | list[int], width: int) -> str:
    """The last ``width`` values as bar characters scaled to the largest (empty: blank)."""
    vals = list(values)[-width:]
    top = max(vals, default=0)
    if top <= 0:
        return " " * len(vals)
    return "".join(_BARS[min(len(_BARS) - 1, v * len(_BARS) // (top + 1))] if v else " "
                   for v in vals)


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def short_command(command: str, width: int = COMMAND_WIDTH) -> str:
    one = " ".join(command.split())
    return one if len(one) <= width else one[:width - 1] + "…"


def header_text(s: Snapshot) -> Text:
    """Two lines: what runs under which policy; then processes, time, rate and totals."""
    who = "alive" if s.alive_known else "seen"
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append("sysdispatch ", style="bold")
    t.append(short_command(s.command) or "-", style="bold cyan")
    t.append(f"  policy {s.policy} ({s.mode})\n")
    t.append(f"{s.processes} proc/{s.threads} thr {who}  {_elapsed(s.elapsed)}  "
             f"{s.rate:.0f} syscalls/s  {s.events} total")
    if s.finished:
        t.append("  [finished]", style="dim")
    return t


def syscall_table(s: Snapshot, max_rows: int = MAX_ROWS) -> Table:
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False,
                  title=f"syscalls (by {s.sort}; 's' toggles)", title_justify="left")
    table.add_column("syscall", no_wrap=True)
    table.add_column("nr", justify="right")
    table.add_column("calls", justify="right")
    table.add_column("handler", no_wrap=True)
    table.add_column("depth", justify="right")
    for v in SHOWN_VERDICTS:
        table.add_column(v, justify="right", style=STYLE[v])
    table.add_column("last args", no_wrap=True, overflow="ellipsis", ratio=1)
    for r in s.rows[:max_rows]:
        counts = [str(r.verdicts.get(v, 0)) if r.verdicts.get(v) else "." for v in SHOWN_VERDICTS]
        table.add_row(r.name, str(r.nr), str(r.calls), r.handler, str(r.depth), *counts,
                      r.last_args)
    hidden = len(s.rows) - max_rows
    if hidden > 0:
        table.caption = f"... {hidden} more syscalls"
    return table


def tables_panel(s: Snapshot) -> Panel:
    t = Table.grid(padding=(0, 1))
    for occ in s.tables:
        t.add_row(occ.name, f"{occ.filled}/{occ.size}")
    return Panel(t if s.tables else Text("-"), title="jump tables", box=box.ROUNDED)


def denials_panel(s: Snapshot) -> Panel:
    t = Table.grid(padding=(0, 1))
    for d in s.denials:
        t.add_row(f"{d.time:.3f}", d.name, Text(d.verdict, style=STYLE["errno"]),
                  Text(d.args, overflow="ellipsis", no_wrap=True))
    return Panel(t if s.denials else Text("none"), title="recent denials", box=box.ROUNDED)


def rate_panel(s: Snapshot, width: int = 30) -> Panel:
    peak = max(s.rates, default=0)
    return Panel(Text(f"{sparkline(s.rates, width)}\npeak {peak}/s"), title="syscalls/s",
                 box=box.ROUNDED)


def render(s: Snapshot) -> Group:
    panels = Table.grid(expand=True, padding=(0, 1))
    panels.add_column(ratio=1)
    panels.add_column(ratio=3)
    panels.add_column(ratio=1)
    panels.add_row(tables_panel(s), denials_panel(s), rate_panel(s))
    return Group(header_text(s), syscall_table(s), panels)


def plain_line(s: Snapshot) -> str:
    """One line for a pipe or a file: totals and the busiest syscalls."""
    denied = sum(r.denials for r in s.rows)
    top = " ".join(f"{r.name}={r.calls}" for r in s.rows[:5])
    return (f"[{_elapsed(s.elapsed)}] {s.events} syscalls ({s.rate:.0f}/s), {denied} denied, "
            f"{s.processes} proc/{s.threads} thr; {top}")

