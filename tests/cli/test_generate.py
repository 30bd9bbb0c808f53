"""``sysdispatch generate`` end to end: record a real command twice with the tracer, generate a
policy from both traces (TOML and OCI), replay the traces through it (no denials), run the command
again under it (works), and run one that makes a syscall the traces do not show (denied)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import need_root

REPO = Path(__file__).resolve().parents[2]
WORK = "cat /etc/hostname > /dev/null; ls / > /dev/null"


def sd(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sysdispatch", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, list[Path]]:
    need_root()
    d = tmp_path_factory.mktemp("gen")
    traces = []
    for i in range(2):                      # two runs, merged
        t = d / f"run{i}.jsonl"
        r = sd("trace", "-q", "--record", str(t), "--", "/bin/sh", "-c", WORK, cwd=d)
        assert r.returncode == 0, r.stderr
        traces.append(t)
    return d, traces


def replay_actions(d: Path, traces: list[Path], policy: Path) -> dict:
    r = sd("replay", *map(str, traces), "--policy", str(policy), "--json", cwd=d)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)["summary"]["total"]["actions"]


@pytest.mark.parametrize("fmt, suffix", [("toml", ".toml"), ("oci", ".json")])
def test_generated_policy_replays_with_no_denials(recorded, fmt, suffix):
    d, traces = recorded
    out = d / f"least{suffix}"
    r = sd("generate", *map(str, traces), "-o", str(out), "--format", fmt, cwd=d)
    assert r.returncode == 0, r.stderr
    assert f"{out}: " in r.stderr and "syscalls allowed" in r.stderr
    acts = replay_actions(d, traces, out)
    assert set(acts) == {"allow"} and acts["allow"] > 50


def test_command_runs_under_it_and_unseen_syscalls_are_denied(recorded):
    d, traces = recorded
    out = d / "least-live.toml"
    assert sd("generate", *map(str, traces), "-o", str(out), cwd=d).returncode == 0
    r = sd("trace", "--policy", str(out), "--", "/bin/sh", "-c", WORK, cwd=d)
    assert r.returncode == 0, r.stderr
    assert "ERRNO" not in r.stderr                 # one stderr line per non-ALLOW verdict
    target = d / "made-by-mkdir"
    r = sd("trace", "--policy", str(out), "--", "/bin/sh", "-c", f"{WORK}; mkdir {target}",
           cwd=d)
    assert r.returncode != 0 and not target.exists()
    assert "mkdir" in r.stderr and "ERRNO(1)" in r.stderr.replace("EPERM", "1")


def test_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format":"nope"}\n')
    for argv in ([str(bad)], [str(tmp_path / "missing.jsonl")],
                 [str(REPO / "traces" / "file-heavy.jsonl"), "--args", "socket:x"]):
        r = sd("generate", *argv, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "Traceback" not in r.stderr
