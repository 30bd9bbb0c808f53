"""Running the dashboard: rich ``Live(get_renderable=...)`` on a terminal, plain lines elsewhere.

:func:`dashboard_sink` is what ``trace --dashboard`` and ``replay --dashboard`` plug in: a context
manager that yields the counters model (a tracer sink) and, while the block runs, redraws from
the model's snapshots several times a second in rich's own refresh thread. The tracer only calls
``model(event)``; it never waits for drawing. When stdout is not a terminal a small thread prints
one plain line per interval instead (and a last one at the end). NO_COLOR is honoured by rich's
Console. On a terminal, a key thread reads /dev/tty in cbreak mode (only when stdin is a tty, so
a pipe or a test harness is never read from): ``s`` toggles sorting by calls / by denials.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
from typing import Iterator

from rich.console import Console
from rich.live import Live

from .model import DashModel
from .view import plain_line, render

REFRESH_PER_SECOND = 4
PLAIN_INTERVAL = 1.0


def _command_text(command) -> str:
    return command if isinstance(command, str) else " ".join(command)


@contextlib.contextmanager
def dashboard_sink(policy, command, mode: str = "enforce", *, console: Console | None = None,
                   live: bool = True, interval: float = PLAIN_INTERVAL,
                   keys: bool = True) -> Iterator[DashModel]:
    """Yield a :class:`DashModel` sink while a dashboard draws it. ``policy`` is the
    LoadedPolicy (its jump tables' occupancy is shown); ``live`` False for replay (processes
    are "seen", not checked for being alive)."""
    model = DashModel(policy, command=_command_text(command), mode=mode, live=live)
    console = console or Console()
    if console.is_terminal:
        with Live(get_renderable=lambda: render(model.snapshot()), console=console,
                  refresh_per_second=REFRESH_PER_SECOND, redirect_stdout=False,
                  redirect_stderr=False), _keys(model, enabled=keys):
            try:
                yield model
            finally:
                model.close()    # the last frame Live draws on the way out says "finished"
        return
    stop = threading.Event()

    def lines() -> None:
        while not stop.wait(interval):
            console.print(plain_line(model.snapshot()), highlight=False, soft_wrap=True)

    th = threading.Thread(target=lines, name="dash-lines", daemon=True)
    th.start()
    try:
        yield model
    finally:
        stop.set()
        th.join()
        model.close()
        console.print(plain_line(model.snapshot()), highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _keys(model: DashModel, *, enabled: bool) -> Iterator[None]:
    """Read single keys from /dev/tty without blocking anyone: a daemon thread polls with a
    timeout; the terminal mode is restored on the way out."""
    if not enabled or not sys.stdin.isatty():
        yield
        return
    import termios
    import tty
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        yield
        return
    saved = termios.tcgetattr(fd)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    key = os.read(fd, 1)
                except OSError:
                    return
                if key in (b"s", b"S"):
                    model.toggle_sort()

    try:
        tty.setcbreak(fd)
        th = threading.Thread(target=read, name="dash-keys", daemon=True)
        th.start()
        try:
            yield
        finally:
            stop.set()
            th.join()
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        os.close(fd)
