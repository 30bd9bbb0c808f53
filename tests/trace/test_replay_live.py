"""Real runs: ``sysdispatch trace --record`` on real processes, then replay. The same policy must
give the verdicts the live run gave (a stateful one included), ``--summary`` must print the table
of the recorded events, and a tracer killed outright must leave a readable trace."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest

from sysdispatch.cli import COMMANDS
from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.seccomp import actions
from sysdispatch.trace.record import TraceReader, read_events
from sysdispatch.trace.replay import replay
from sysdispatch.trace.summary import Summary, format_text

from record_helpers import DEFAULT_POLICY, FILTERS

pytestmark = pytest.mark.skipif(
    "trace" not in COMMANDS or importlib.util.find_spec("sysdispatch.trace.tracer") is None
    or os.geteuid() != 0, reason="needs the tracer ('sysdispatch trace') and root")


def trace(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sysdispatch", "trace", *argv],
                          capture_output=True, text=True, timeout=timeout)


def replay_all(path, policy) -> list:
    return list(replay([path], lambda: LoadedPolicy.from_file(policy)))


PY_PROGRAM = ("import socket, os\n"
              "for fam in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):\n"
              "    socket.socket(fam).close()\n"
              "try:\n    open('/tmp/sysdispatch-no-such-dir/x', 'w')\n"
              "except OSError as e:\n    print(e.errno)\n"
              "os.listdir('.')\n")


def test_live_verdicts_replay_exactly(tmp_path):
    """dispatch-demo, enforced: EACCES for a creating open, LOG for an INET6 socket; replay
    reproduces every verdict, handler and tail-call path."""
    rec = tmp_path / "py.jsonl"
    res = trace("--policy", str(FILTERS / "dispatch-demo.toml"), "--record", str(rec), "-q",
                "--", sys.executable, "-S", "-c", PY_PROGRAM)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "13"   # the policy's EACCES reached the program
    events = list(read_events(rec))
    verdicts = {actions.describe(e.verdict) for e in events}
    assert {"ALLOW", "LOG", "ERRNO(13)"} <= verdicts
    out = replay_all(rec, FILTERS / "dispatch-demo.toml")
    assert len(out) == len(events) > 50
    assert [r for r in out if r.changed] == []
    assert [r.as_event() for r in out] == events
    # and a different policy disagrees exactly where it should
    other = replay_all(rec, DEFAULT_POLICY)
    assert {r.event.verdict for r in other if r.changed} >= {actions.ERRNO | 13, actions.LOG}


def test_live_state_replays_exactly(tmp_path):
    """fault-inject fails the third openat of the whole run (a map counts them): the recorded
    EIO falls on the same event in replay."""
    rec = tmp_path / "fault.jsonl"
    script = "for f in /etc/hostname /etc/passwd /etc/hosts /etc/os-release; do " \
             "cat $f > /dev/null || echo failed $f; done"
    res = trace("--policy", str(FILTERS / "fault-inject.toml"), "--record", str(rec), "-q",
                "--", "/bin/sh", "-c", script)
    events = list(read_events(rec))
    eio = [i for i, e in enumerate(events) if e.verdict == actions.ERRNO | 5]
    assert len(eio) == 1 and events[eio[0]].name == "openat", res.stderr
    assert [i for i, e in enumerate(events) if e.name == "openat"][2] == eio[0]
    out = replay_all(rec, FILTERS / "fault-inject.toml")
    assert [r for r in out if r.changed] == []


def test_live_summary_is_the_table_of_the_recorded_events(tmp_path):
    rec = tmp_path / "sh.jsonl"
    res = trace("--record", str(rec), "--summary", "-q", "--", "/bin/sh", "-c",
                "ls / | sort | head -3 > /dev/null")
    assert res.returncode == 0, res.stderr
    with TraceReader(rec) as reader:
        summary = Summary(reader.header)
        for ev in reader:
            summary(ev)
    assert summary.events > 50 and len(summary.pids) >= 3     # sh, ls, sort, head
    assert res.stderr == format_text(summary)


def test_live_audit_mode_records_unenforced_verdicts(tmp_path):
    rec = tmp_path / "audit.jsonl"
    res = trace("--audit", "--policy", str(FILTERS / "readonly-fs.toml"), "--record", str(rec),
                "-q", "--", "/bin/sh", "-c", f"echo hi > {tmp_path}/made")
    assert res.returncode == 0 and (tmp_path / "made").read_text() == "hi\n"
    with TraceReader(rec) as reader:
        assert reader.header.mode == "audit"
        events = list(reader)
    assert not any(e.enforced for e in events)
    assert any(e.verdict == actions.ERRNO | 30 for e in events)     # EROFS, reported only
    assert [r for r in replay_all(rec, FILTERS / "readonly-fs.toml") if r.changed] == []


def test_killed_tracer_leaves_a_readable_trace(tmp_path):
    rec = tmp_path / "killed.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "sysdispatch", "trace", "--record", str(rec),
                             "-q", "--", "/bin/sh", "-c",
                             "while :; do cat /etc/hostname; done > /dev/null"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if rec.exists() and rec.stat().st_size > 200_000:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with TraceReader(rec, allow_truncated=True) as reader:
        events = list(reader)
    assert len(events) > 500
    assert {e.name for e in events} >= {"execve", "openat", "read", "write", "close"}
