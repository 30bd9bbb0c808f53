"""The real dashboard in a real terminal: ``sysdispatch trace --dashboard`` runs a C program that
makes exactly 7 getppid calls and one kill(1, 0) (denied by filters/dispatch-demo.toml) inside
tmux; the captured pane shows those counts, and the 's' key typed into the pane re-sorts the table
by denials."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROGRAM = r"""
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    for (int i = 0; i < 7; i++)
        syscall(SYS_getppid);   /* not glibc's getppid(): exactly one syscall each */
    kill(1, 0);                 /* no_kill_init: ERRNO(EPERM) */
    sleep(3);                   /* time to press a key */
    return 0;
}
"""
DONE = "TRACE-FINISHED"


def _has_dashboard() -> bool:
    help_text = subprocess.run([sys.executable, "-m", "sysdispatch", "trace", "--help"],
                               capture_output=True, text=True, cwd="/").stdout
    return "--dashboard" in help_text


def capture_dashboard(tmp_path: Path, argv: list[str], width: int = 160,
                      height: int = 60, keys: tuple[str, str] | None = None) -> str:
    """Run ``argv`` in a detached tmux pane of a private tmux server; the pane's text after it
    finished. ``keys`` (text, key): type key into the pane once text is on the screen."""
    sock = f"sysdispatch-dash-{os.getpid()}-{time.monotonic_ns()}"   # a fresh server each run
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
            if keys is not None and keys[0] in pane:
                subprocess.run(tmux + ["send-keys", keys[1]], check=True)
                keys = None
            time.sleep(0.2)
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)
        # kill-server leaves the socket file behind
        tmpdir = os.environ.get("TMUX_TMPDIR", "/tmp")
        Path(tmpdir, f"tmux-{os.getuid()}", sock).unlink(missing_ok=True)


def _program(tmp_path: Path) -> Path:
    if shutil.which("tmux") is None or shutil.which("gcc") is None:
        pytest.skip("needs tmux and gcc")
    if not _has_dashboard():
        pytest.skip("`sysdispatch trace --dashboard` is not registered yet "
                    "(see /work/notes/dash-integration.md)")
    src = tmp_path / "getppid7.c"
    src.write_text(PROGRAM.replace("sleep(3)", "sleep(3 * !getenv(\"NOSLEEP\"))")
                   .replace("#include <signal.h>", "#include <signal.h>\n#include <stdlib.h>"))
    exe = tmp_path / "getppid7"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(src)], check=True)
    return exe


def test_dashboard_plain_lines_when_stdout_is_a_pipe(tmp_path):
    exe = _program(tmp_path)
    demo = Path(__file__).resolve().parents[2] / "filters" / "dispatch-demo.toml"
    r = subprocess.run([sys.executable, "-m", "sysdispatch", "trace", "--policy", str(demo),
                        "--dashboard", "--", str(exe)], capture_output=True, text=True,
                       env={**os.environ, "NOSLEEP": "1"}, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    last = r.stdout.splitlines()[-1]
    assert "getppid=7" in last and "1 denied" in last and "\x1b[" not in r.stdout


def test_dashboard_in_tmux_shows_real_counts(tmp_path):
    exe = _program(tmp_path)
    demo = Path(__file__).resolve().parents[2] / "filters" / "dispatch-demo.toml"
    pane = capture_dashboard(tmp_path, [sys.executable, "-m", "sysdispatch", "trace", "--policy",
                                        str(demo), "--dashboard", "--", str(exe)],
                             keys=("no_kill_init", "s"))
    assert f"{DONE} 0" in pane, pane
    rows = [ln.split() for ln in pane.splitlines()
            if ln.split()[:1] in (["getppid"], ["kill"])]
    # syscall nr calls handler depth allow log errno ...
    assert ["getppid", "110", "7", "default", "0", "7", ".", "."] in [r[:8] for r in rows], pane
    assert ["kill", "62", "1", "no_kill_init", "1", ".", ".", "1"] in [r[:8] for r in rows], pane
    assert "by denials" in pane and rows[0][0] == "kill", pane    # the key re-sorted the table
    assert "ERRNO(EPERM)" in pane and "syscalls 4/512" in pane and "[finished]" in pane
