"""`sysdispatch trace --summary --json`: the summary as JSON for scripts, with the real counts."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, need_root


def test_summary_json_counts_a_known_program(tmp_path):
    need_root()
    out = tmp_path / "summary.json"
    prog = "import os\nfor _ in range(7): os.getppid()\n"
    done = subprocess.run(
        [sys.executable, "-m", "sysdispatch", "trace", "--summary", "--json", "-o", str(out), "--",
         sys.executable, "-I", "-S", "-c", prog],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())
    rows = {row["syscall"]: row for row in summary["syscalls"]}
    assert rows["getppid"]["calls"] == 7
    assert summary["policy"] == "default" and summary["total"]["calls"] == summary["events"]
