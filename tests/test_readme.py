"""The README stays true: its first two commands are what CI runs, and every command it shows runs.

"Runs" means what a reader would check by eye: no traceback, no usage error (exit 2), no death by
signal. Some commands show a policy refusing something, so a plain failure status (1) is fine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED

README = REPO / "README.md"


def _sh_blocks() -> list[list[str]]:
    text = README.read_text()
    return [block.strip("\n").splitlines() for block in re.findall(r"```sh\n(.*?)```", text, re.S)]


def _commands() -> list[str]:
    cmds = []
    for block in _sh_blocks()[1:]:
        for line in block:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            cmds.append(line)
    return cmds


def test_first_two_commands_install_then_trace_and_test():
    first, second = _sh_blocks()[0][:2]
    assert first.startswith("pip install -e . && sysdispatch trace")
    assert second.startswith("pip install -e '.[test]' && ")
    # .ci/run must run the README's test command verbatim.
    ci = (REPO / ".ci" / "run").read_text()
    assert f"\n{second}\n" in ci


def _strip_comment(line: str) -> str:
    """Drop a trailing comment (the README sets them off by two or more spaces)."""
    return re.sub(r"\s{2,}#.*$", "", line)


def _run(cmd: str, tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = f"{bindir}:{env.get('PATH', '')}"
    return subprocess.run(["bash", "-c", cmd], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=240, stdin=subprocess.DEVNULL)


def _needs(cmd: str) -> str | None:
    if "../shared" in cmd and not SHARED.is_dir():
        return "needs ../shared"
    privileged = ("trace", "filter dump", "run --kernel", "--against-kernel")
    if any(p in cmd for p in privileged) and os.geteuid() != 0:
        return "needs root (ptrace/seccomp)"
    return None


def test_first_command_runs():
    first = _sh_blocks()[0][0]
    cmd = first.split("&&", 1)[1].strip()
    if os.geteuid() != 0:
        pytest.skip("needs root (ptrace)")
    done = _run(cmd, None)
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "total" in out and "allow" in out and "policy default" in out


@pytest.mark.parametrize("cmd", _commands())
def test_readme_command_runs(cmd, tmp_path):
    reason = _needs(cmd)
    if reason:
        pytest.skip(reason)
    done = _run(_strip_comment(cmd), tmp_path)
    out = done.stdout + done.stderr
    assert "Traceback" not in out, out[-3000:]
    assert done.returncode in (0, 1), f"exit {done.returncode}: {out[-3000:]}"
