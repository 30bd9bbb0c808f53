"""The ``--summary`` table as a rich renderable (for a terminal and for the dashboard).

The layout — which columns, which rows, what text in each cell — is
:class:`sysdispatch.trace.summary.Summary`'s; this module only draws it.
"""

from __future__ import annotations

from rich import box
from rich.table import Table

from ..trace.summary import Summary, VERDICT_COLUMNS

# Verdict columns drawn in a colour that says how severe the action is.
_STYLE = {"allow": "green", "log": "cyan", "trace": "blue", "notif": "blue",
          "errno": "yellow", "trap": "magenta", "kill": "bold red", "reported": "dim"}
_NUMERIC = {"% calls", "calls", "reported", *(t for t, _ in VERDICT_COLUMNS)}


def summary_table(summary: Summary, *, title: str | None = None) -> Table:
    """A rich Table of ``summary``: one row per syscall, the total as its footer."""
    titles = summary.columns()
    body, total = summary.cells()
    table = Table(title=title, caption=summary.footer(), box=box.SIMPLE_HEAD, show_footer=True,
                  caption_justify="left")
    for t, foot in zip(titles, total):
        table.add_column(t, footer=foot, justify="right" if t in _NUMERIC else "left",
                         style=_STYLE.get(t), no_wrap=t != "handlers")
    for cells in body:
        table.add_row(*cells)
    return table
