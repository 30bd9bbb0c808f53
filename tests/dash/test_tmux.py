"""The real dashboard in a real terminal: ``sysdispatch trace --dashboard`` runs a C program that
makes exactly 7 getppid calls inside tmux; the captured pane shows that count in the table."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROGRAM = r"""
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    for (int i = 0; i < 7; i++)
        syscall(SYS_getppid);   /* not glibc's getppid(): exactly one syscall each */
    return 0;
}
"""
DONE = "TRACE-FINISHED"


def _has_dashboard() -> bool:
    help_text = subprocess.run([sys.executable, "-m", "sysdispatch", "trace", "--help"],
                               capture_output=True, text=True, cwd="/").stdout
    return "--dashboard" in help_text


def capture_dashboard(tmp_path: Path, argv: list[str], width: int = 160,
                      height: int = 60) -> str:
    """Run ``argv`` in a detached tmux pane of a private tmux server; the pane's text after it
    finished."""
    sock = f"sysdispatch-dash-{os.getpid()}"
    script = tmp_path / "run.sh"
    script.write_text(f"cd {tmp_path}\n{' '.join(argv)}\necho {DONE} $?\nsleep 60\n")
    tmux = ["tmux", "-L", sock]
    subprocess.run(tmux + ["new-session", "-d", "-x", str(width), "-y", str(height),
                           f"sh {script}"], check=True, env={**os.environ, "TERM": "xterm"})
    try:
        deadline = time.monotonic() + 30
        while True:
            pane = subprocess.run(tmux + ["capture-pane", "-p"], capture_output=True,
                                  text=True).stdout
            if DONE in pane or time.monotonic() > deadline:
                return pane
            time.sleep(0.2)
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)


def test_dashboard_in_tmux_shows_real_counts(tmp_path):
    if shutil.which("tmux") is None or shutil.which("gcc") is None:
        pytest.skip("needs tmux and gcc")
    if not _has_dashboard():
        pytest.skip("`sysdispatch trace --dashboard` is not registered yet "
                    "(see /work/notes/dash-integration.md)")
    src = tmp_path / "getppid7.c"
    src.write_text(PROGRAM)
    exe = tmp_path / "getppid7"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(src)], check=True)
    pane = capture_dashboard(tmp_path, [sys.executable, "-m", "sysdispatch", "trace",
                                        "--dashboard", "--", str(exe)])
    assert f"{DONE} 0" in pane, pane
    rows = [ln.split() for ln in pane.splitlines() if ln.split()[:1] == ["getppid"]]
    assert rows, pane
    # syscall nr calls handler depth allow ...
    assert rows[-1][:6] == ["getppid", "110", "7", "default", "0", "7"], pane
    assert "jump tables" in pane and "[finished]" in pane
