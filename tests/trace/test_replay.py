"""Replay: recorded seccomp_data decided again gives the recorded verdicts for the same policy
(state included), and --diff lists exactly the events two policies decide differently."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sysdispatch.cli import main
from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.seccomp import actions
from sysdispatch.trace.replay import replay
from sysdispatch.trace.record import read_events

from record_helpers import (AT_FDCWD, DEFAULT_POLICY, FILTERS, WORKLOAD, decide_events,
                            header_for, record)

DEMO = FILTERS / "dispatch-demo.toml"
FAULT = FILTERS / "fault-inject.toml"


def _trace(tmp_path, policy_path, calls, name="t.jsonl", **kw):
    events = decide_events(LoadedPolicy.from_file(policy_path), calls, **kw)
    return record(tmp_path / name, header_for(policy_path), events), events


def test_same_policy_gives_the_recorded_verdicts(tmp_path):
    path, events = _trace(tmp_path, DEMO, WORKLOAD * 3)
    out = list(replay([path], lambda: LoadedPolicy.from_file(DEMO)))
    assert [r.event for r in out] == events
    assert [r.line for r in out] == list(range(2, len(events) + 2))
    assert not any(r.changed for r in out)
    assert [r.as_event() for r in out] == events   # verdict, handler and path alike
    # the workload exercises more than one verdict, so agreement is not trivial
    assert {e.verdict for e in events} >= {actions.ALLOW, actions.LOG, actions.ERRNO | 13,
                                           actions.ERRNO | 1, actions.ERRNO | 97}


def test_state_replays_in_order_with_a_fresh_policy_per_trace(tmp_path):
    """fault-inject fails the 3rd openat (a map counts them): replayed in order, each trace with
    a fresh policy, the same event fails; one policy shared across traces would fail none of the
    second trace's openats, and replaying out of order moves the failure."""
    calls = [("openat", (AT_FDCWD, 0x1000 * i, 0, 0, 0, 0)) if i % 2 else
             ("read", (3, 0, 1, 0, 0, 0)) for i in range(16)]
    path, events = _trace(tmp_path, FAULT, calls)
    eio = [i for i, e in enumerate(events) if e.verdict == actions.ERRNO | 5]
    assert len(eio) == 1 and events[eio[0]].name == "openat"
    copy = record(tmp_path / "copy.jsonl", header_for(FAULT), events)
    out = list(replay([path, copy], lambda: LoadedPolicy.from_file(FAULT)))
    assert not any(r.changed for r in out)
    assert [i for i, r in enumerate(out) if r.decision.ret == actions.ERRNO | 5] == \
        [eio[0], len(events) + eio[0]]
    shared = LoadedPolicy.from_file(FAULT)
    stale = list(replay([path, copy], lambda: shared))
    assert sum(r.changed for r in stale) == 1      # the second trace's 3rd openat is allowed now
    reversed_trace = record(tmp_path / "rev.jsonl", header_for(FAULT), events[::-1])
    assert any(r.changed for r in replay([reversed_trace], lambda: LoadedPolicy.from_file(FAULT)))


def test_diff_lists_exactly_the_events_decided_differently(tmp_path):
    path, events = _trace(tmp_path, DEFAULT_POLICY, WORKLOAD * 2)
    # Expected answers from the reference evaluator (the model, no BPF), replay through BPF.
    ref_a = LoadedPolicy.from_file(DEFAULT_POLICY, engine="reference")
    ref_b = LoadedPolicy.from_file(DEMO, engine="reference")
    expected = [i for i, e in enumerate(events)
                if ref_a.decide(e.seccomp_data()).ret != ref_b.decide(e.seccomp_data()).ret]
    out = list(replay([path], lambda: LoadedPolicy.from_file(DEFAULT_POLICY),
                      load_other=lambda: LoadedPolicy.from_file(DEMO)))
    got = [i for i, r in enumerate(out) if r.changed]
    assert got == expected and 0 < len(got) < len(events)


def test_cli_replay_text(tmp_path, capsys):
    path, events = _trace(tmp_path, DEMO, WORKLOAD)
    assert main(["replay", str(path), "--policy", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert "(the policy it was recorded with)" in out
    assert f"0 of {len(events)} events decided differently" in out
    assert "socket" in out and "allow 2, log 1, socket_by_family 1" in out  # the per-syscall table
    # default allows what dispatch-demo refused or logged: each such event is listed, exit 1
    ref = LoadedPolicy.from_file(DEFAULT_POLICY, engine="reference")
    expected = [i for i, e in enumerate(events) if ref.decide(e.seccomp_data()).ret != e.verdict]
    refused = [i for i, e in enumerate(events) if actions.action_of(e.verdict) == actions.ERRNO]
    assert set(refused) < set(expected)
    assert main(["replay", str(path), "--policy", "default"]) == 1
    out = capsys.readouterr().out
    listed = [ln for ln in out.splitlines() if ln.startswith(f"{path}:")]
    assert [int(ln.split(":")[1]) - 2 for ln in listed] == expected
    assert "recorded ERRNO(13) [openat_rules], replayed ALLOW [default]" in listed[0]
    assert f"{len(expected)} of {len(events)} events decided differently by default" in out


def test_cli_replay_diff_json(tmp_path, capsys):
    path, events = _trace(tmp_path, DEFAULT_POLICY, WORKLOAD)
    second = record(tmp_path / "second.jsonl", header_for(DEFAULT_POLICY), events)
    rc = main(["replay", str(path), str(second), "--policy", "default", "--diff", str(DEMO),
               "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1 and doc["events"] == 2 * len(events)
    assert [t["trace"] for t in doc["traces"]] == [str(path), str(second)]
    assert doc["policy"]["name"] == "default" and doc["diff"]["name"] == "dispatch-demo"
    assert doc["differences"] == len(doc["listed"]) > 0
    first = doc["listed"][0]
    assert first["default"]["verdict_text"] == "ALLOW"
    assert first[str(DEMO)]["verdict_text"] != "ALLOW"
    assert doc["summary"]["events"] == 2 * len(events)
    # a policy against itself: nothing listed, exit 0
    assert main(["replay", str(path), "--policy", str(DEMO), "--diff", str(DEMO), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["listed"] == []


def test_cli_bad_policy_is_one_line_exit_2(tmp_path):
    path, _ = _trace(tmp_path, DEMO, WORKLOAD[:2])
    bad = tmp_path / "bad.toml"
    bad.write_text('[policy]\nname = "x"\narches = ["x86_64"]\ndefault = "allwo"\n')
    res = subprocess.run([sys.executable, "-m", "sysdispatch", "replay", str(path), "--policy",
                          str(bad)], capture_output=True, text=True)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith(f"sysdispatch: {bad}:4:") and res.stderr.count("\n") == 1


@pytest.mark.parametrize("engine", ["interp", "reference"])
def test_engines_agree_on_replay(tmp_path, engine, capsys):
    path, events = _trace(tmp_path, DEMO, WORKLOAD)
    assert main(["replay", str(path), "--policy", str(DEMO), "--engine", engine, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["total"]["calls"] == len(list(read_events(path)))
