"""dashboard_sink: plain periodic lines when stdout is not a terminal, rich Live on one."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from sysdispatch.dash.live import dashboard_sink

from dash_helpers import demo_policy, event  # noqa: F401  (the demo fixture)


def test_plain_lines_when_not_a_terminal(demo):
    out = io.StringIO()
    console = Console(file=out, width=200)
    assert not console.is_terminal
    with dashboard_sink(demo, ["demo", "cmd"], console=console, interval=0.05) as sink:
        for i in range(7):
            sink(event(demo, "getppid", t=i * 0.01))
        time.sleep(0.2)                      # a few periodic lines while running
        sink(event(demo, "kill", (1, 9), t=0.5))
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3
    assert "7 syscalls" in lines[0] and "getppid=7" in lines[0]
    assert "8 syscalls" in lines[-1] and "1 denied" in lines[-1]   # the final line
    assert "\x1b[" not in out.getvalue()


def test_live_on_a_terminal_draws_the_table(demo, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = io.StringIO()
    console = Console(file=out, width=150, force_terminal=True, color_system="standard")
    with dashboard_sink(demo, "demo", console=console, keys=False) as sink:
        for _ in range(7):
            sink(event(demo, "getppid"))
    text = out.getvalue()
    assert "getppid" in text and "\x1b[" in text          # drawn, with colours
    assert "jump tables" in text and "syscalls 4/512" in text
    assert "[finished]" in text     # the last frame, drawn after the block closed the model


def test_no_color_is_honoured(demo, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    console = Console(file=out, width=150, force_terminal=True)
    with dashboard_sink(demo, "demo", console=console, keys=False) as sink:
        sink(event(demo, "kill", (1, 9)))
    text = out.getvalue()
    assert "no_kill_init" in text
    # no foreground colour codes (cursor moves and bold/italic remain)
    assert not re.search(r"\x1b\[(?:\d+;)*3[0-7](?:;\d+)*m", text)
