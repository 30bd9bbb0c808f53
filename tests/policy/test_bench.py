"""The policy benchmark's workloads and report (what it measures, not how fast: speed claims live
in `sysdispatch bench policy`, never in tests)."""

from __future__ import annotations

import argparse
import json

from sysdispatch.policy import bench
from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.seccomp import actions


def test_event_stream_is_realistic_and_deterministic():
    s = bench.event_stream(2000, seed=3)
    assert s == bench.event_stream(2000, seed=3) and s != bench.event_stream(2000, seed=4)
    counts: dict[int, int] = {}
    for e in s:
        counts[e.nr] = counts.get(e.nr, 0) + 1
    assert max(counts, key=counts.get) == 0                   # read is the most common call
    assert len(counts) > 30
    lp = LoadedPolicy.from_file(bench.CONTAINER)
    rets = [lp.decide(e).ret for e in s]
    # a container policy lets an ordinary program run: almost everything is allowed
    assert sum(r == actions.ALLOW for r in rets) > 0.99 * len(rets)


def test_slots_policy_populates_what_it_says():
    for n in (10, 400):
        pol = bench.slots_policy(n)
        lp = LoadedPolicy(pol)
        slots = lp.compiled.slots[("syscalls", "x86_64")]
        assert len(slots) == n
        nr = sorted(slots)[-1]
        assert lp.decide(bench.SeccompData(nr)).ret == actions.ERRNO | (nr % 4095 + 1)


def test_bench_runs_every_cell(capsys):
    result = bench.bench_policy(rounds=1, min_time=0.001, events=50, engines=["interp"])
    cells = {(r["workload"], r["engine"], r["cache"]) for r in result["rows"]}
    assert cells == {(w, "interp", c) for w in ("container stream", "dispatch 10 slots",
                                                "dispatch 400 slots") for c in (False, True)}
    assert set(result["flatness"]) == {"interp", "interp cached"}
    text = bench.format_report(result)
    assert "400-slot vs 10-slot dispatch cost: interp x" in text and "not pinned" in text
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    args = parser.parse_args(["policy", "--rounds", "1", "--min-time", "0.001", "--events", "20",
                              "--engine", "interp", "--json"])
    assert args.func(args) == 0
    assert len(json.loads(capsys.readouterr().out)["rows"]) == 6
