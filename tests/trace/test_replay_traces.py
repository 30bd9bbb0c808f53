"""The shipped traces (traces/*.jsonl, recorded with ``sysdispatch trace --record``): each reads
cleanly, names a policy we ship by its hash, replays to exactly its recorded verdicts, and is
described in traces/README.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.trace.record import TraceReader, policy_file_hash
from sysdispatch.trace.replay import replay
from sysdispatch.trace.summary import Summary

from record_helpers import DEFAULT_POLICY, FILTERS, REPO

TRACES = sorted((REPO / "traces").glob("*.jsonl"))


def policy_for(policy_hash: str) -> Path:
    known = {policy_file_hash(p): p for p in [DEFAULT_POLICY, *FILTERS.glob("*.toml")]}
    assert policy_hash in known, "the trace was recorded with a policy that is not shipped"
    return known[policy_hash]


def test_there_are_shipped_traces():
    assert len(TRACES) >= 3, "traces/ should hold a shell pipeline, a Python program and a " \
                             "file-heavy command"


@pytest.mark.parametrize("trace", TRACES, ids=[t.name for t in TRACES])
def test_shipped_trace_replays_to_its_recorded_verdicts(trace):
    with TraceReader(trace) as reader:
        header = reader.header
        summary = Summary(header)
        for ev in reader:
            summary(ev)
    assert summary.events > 20 and trace.stat().st_size < 1_000_000
    policy = policy_for(header.policy_hash)
    out = list(replay([trace], lambda: LoadedPolicy.from_file(policy)))
    assert len(out) == summary.events
    assert [r for r in out if r.changed] == []
    assert [r.as_event().path for r in out] == [r.event.path for r in out]
    assert trace.name in (REPO / "traces" / "README.md").read_text()
