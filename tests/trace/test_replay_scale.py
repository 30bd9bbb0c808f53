"""Replay at scale: a progress bar driven by bytes read, --jobs gives the same report as one
process, and memory stays flat however long the trace."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest

from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.trace.record import Recorder
from sysdispatch.trace.replay import PROGRESS_CHECK, replay

from record_helpers import FILTERS, REPO, WORKLOAD, decide_events, header_for

DEMO = FILTERS / "dispatch-demo.toml"
TRACES = sorted((REPO / "traces").glob("*.jsonl"))


def _synthetic(path, n: int):
    """A trace of ``n`` events: the mixed workload decided once, repeated with fresh times and
    instruction pointers (so no two lines are alike)."""
    base = decide_events(LoadedPolicy.from_file(DEMO), WORKLOAD)
    with Recorder(path, header_for(DEMO), flush_every=4096) as rec:
        for i in range(n):
            ev = base[i % len(base)]
            rec(dataclasses.replace(ev, time=i * 1e-6, ip=0x401000 + i))
    return path


def _cli(*argv, check_rc=None):
    res = subprocess.run([sys.executable, "-m", "sysdispatch", "replay", *map(str, argv)],
                         capture_output=True, text=True, cwd=REPO)
    if check_rc is not None:
        assert res.returncode == check_rc, res.stderr
    return res


# --- progress --------------------------------------------------------------------------------

def test_progress_hook_is_rate_limited_and_ends_at_the_file_size(tmp_path):
    path = _synthetic(tmp_path / "t.jsonl", 20 * PROGRESS_CHECK)
    calls = []
    n = sum(1 for _ in replay([path], lambda: LoadedPolicy.from_file(DEMO),
                              on_progress=lambda *a: calls.append(a)))
    assert n == 20 * PROGRESS_CHECK
    size = path.stat().st_size
    done = [c[1] for c in calls]
    assert all(c[0] == str(path) and c[2] == size for c in calls)
    assert done == sorted(done) and done[-1] == size and done[0] < size
    # by time, never per event: at most one report per check (plus the first and last)
    assert len(calls) <= 20 + 2


def test_progress_flag_draws_the_bar_on_stderr(tmp_path):
    path = _synthetic(tmp_path / "big-one.jsonl", 3000)
    res = _cli(path, "--policy", DEMO, "--progress", check_rc=0)
    assert "100%" in res.stderr and "big-one.jsonl" in res.stderr
    assert "100%" not in res.stdout          # the report on stdout is untouched
    # off a terminal, by default: no bar at all, and --no-progress is the same report
    quiet = _cli(path, "--policy", DEMO, check_rc=0)
    assert quiet.stderr == "" and quiet.stdout == res.stdout
    assert _cli(path, "--policy", DEMO, "--no-progress", check_rc=0).stderr == ""


# --- --jobs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [(), ("--diff", DEMO), ("--json",), ("--diff", DEMO, "--json")],
                         ids=["recorded", "diff", "json", "diff-json"])
def test_jobs_gives_the_same_report_as_one_process(extra):
    assert len(TRACES) >= 2
    one = _cli(*TRACES, "--policy", "default", *extra, "--jobs", "1")
    two = _cli(*TRACES, "--policy", "default", *extra, "--jobs", "2")
    assert one.returncode == two.returncode == 1, one.stderr + two.stderr  # something listed
    assert two.stdout == one.stdout and two.stderr == one.stderr
    # the report covers every trace, in file order
    if "--json" not in extra:
        heads = [ln.split()[1] for ln in one.stdout.splitlines() if ln.startswith("trace ")]
        assert heads == [str(t) for t in TRACES]


def test_jobs_with_stateful_policy_replays_each_trace_fresh(tmp_path):
    """fault-inject counts openats in a map: each worker must give each trace fresh policies,
    so a policy replayed against its own recording agrees everywhere, with any number of jobs."""
    fault = FILTERS / "fault-inject.toml"
    events = decide_events(LoadedPolicy.from_file(fault), WORKLOAD * 4)
    paths = []
    for i in range(3):
        with Recorder(tmp_path / f"f{i}.jsonl", header_for(fault)) as rec:
            for ev in events:
                rec(ev)
        paths.append(tmp_path / f"f{i}.jsonl")
    one = _cli(*paths, "--policy", fault, "--jobs", "1", check_rc=0)
    two = _cli(*paths, "--policy", fault, "--jobs", "2", check_rc=0)
    assert two.stdout == one.stdout
    assert f"0 of {3 * len(events)} events decided differently" in two.stdout


def test_jobs_and_dashboard_refused_in_one_line():
    res = _cli(*TRACES, "--policy", "default", "--jobs", "2", "--dashboard", check_rc=2)
    assert res.stdout == "" and res.stderr.count("\n") == 1
    assert "--jobs" in res.stderr and "--dashboard" in res.stderr


def test_jobs_bad_trace_is_one_line_exit_2_after_the_good_ones(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    res = _cli(TRACES[0], bad, "--policy", "default", "--jobs", "2", check_rc=2)
    assert res.stderr.count("\n") == 1 and res.stderr.startswith(f"sysdispatch: {bad}:1")
    assert res.stdout.startswith(f"trace {TRACES[0]} ")     # the file before it was reported
    assert _cli(TRACES[0], "--policy", "default", "--jobs", "x", check_rc=2).stderr.count("\n") == 1


# --- constant memory -------------------------------------------------------------------------

_PEAK = textwrap.dedent("""
    import os, resource, sys
    from sysdispatch.cli import main
    sys.stdout = open(os.devnull, "w")
    rc = main(["replay", sys.argv[1], "--policy", sys.argv[2], "--no-progress"])
    print(rc, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
""")


def _peak_kib(path) -> int:
    res = subprocess.run([sys.executable, "-c", _PEAK, str(path), str(DEMO)],
                         capture_output=True, text=True, cwd=REPO)
    rc, peak = res.stderr.split()[-2:]
    assert rc == "0", res.stderr
    return int(peak)


def test_peak_memory_does_not_grow_with_the_trace(tmp_path):
    small = _synthetic(tmp_path / "small.jsonl", 2_000)
    large = _synthetic(tmp_path / "large.jsonl", 200_000)
    assert large.stat().st_size > 50 * small.stat().st_size
    small_peak, large_peak = _peak_kib(small), _peak_kib(large)
    # a replay that kept its events would need hundreds of MB for 200k (~1 KiB each in Python)
    assert large_peak - small_peak < 4 * 1024, (small_peak, large_peak)
