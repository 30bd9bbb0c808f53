"""`sysdispatch replay --dashboard` feeds the replayed events to the dashboard (plain lines off a tty)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_replay_dashboard_counts_the_replayed_events():
    done = subprocess.run(
        [sys.executable, "-m", "sysdispatch", "replay", "traces/python-sockets.jsonl",
         "--policy", "filters/no-network.toml", "--dashboard"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("[")]
    assert lines, done.stdout + done.stderr
    # the trace holds 392 events, two sockets denied by no-network
    assert "392 syscalls" in lines[-1] and "2 denied" in lines[-1], lines[-1]
