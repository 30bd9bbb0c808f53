"""Policy generation from the shipped real traces: replaying them through the generated policy
denies nothing; calls and argument values the traces do not show are denied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sysdispatch.errors import PolicyError, TraceError
from sysdispatch.policy.generate import generate, parse_args_spec, to_oci, to_toml
from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.policy.parse import loads
from sysdispatch.seccomp import actions
from sysdispatch.seccomp.data import AUDIT_ARCH_X86_64, SeccompData
from sysdispatch.trace.record import read_events

REPO = Path(__file__).resolve().parents[2]
TRACES = sorted((REPO / "traces").glob("*.jsonl"))
SOCKETS = REPO / "traces" / "python-sockets.jsonl"
EPERM = actions.ERRNO | 1
AF_UNIX, AF_INET, AF_INET6, AF_PACKET = 1, 2, 10, 17


def decide(policy: LoadedPolicy, nr: int, args=(0,) * 6) -> int:
    return policy.decide(SeccompData(nr, AUDIT_ARCH_X86_64, 0, tuple(args))).ret


@pytest.fixture(scope="module")
def merged():
    assert len(TRACES) >= 2, "the shipped traces are missing"
    gen = generate(TRACES, name="merged", args={"socket": 0})
    return gen, LoadedPolicy(loads(to_toml(gen)))


def test_replay_of_the_traces_denies_nothing(merged):
    gen, policy = merged
    n = 0
    for path in TRACES:
        for ev in read_events(path):
            got = decide(policy, ev.nr, ev.args)
            assert got == actions.ALLOW, \
                f"{path.name}: {ev.name}{ev.args} -> {actions.describe(got)}"
            n += 1
    assert n == gen.events > 1000


def test_what_the_traces_do_not_show_is_denied(merged):
    gen, policy = merged
    seen = {ev.nr for p in TRACES for ev in read_events(p)}
    for nr in (101, 165, 169, 246, 321):        # ptrace, mount, reboot, kexec_load, bpf
        assert nr not in seen
        assert decide(policy, nr) == EPERM
    # socket: the families the traces show are allowed, another is not
    for fam in (AF_UNIX, AF_INET, AF_INET6):
        assert decide(policy, 41, (fam, 1, 0, 0, 0, 0)) == actions.ALLOW
    assert decide(policy, 41, (AF_PACKET, 3, 0, 0, 0, 0)) == EPERM


def test_merging_allows_the_union():
    one = {ev.nr for ev in read_events(SOCKETS)}
    others = {ev.nr for p in TRACES if p != SOCKETS for ev in read_events(p)}
    only_other = sorted(others - one)
    assert only_other, "the traces should differ"
    alone = LoadedPolicy(generate([SOCKETS], name="one").policy)
    both = LoadedPolicy(generate(TRACES, name="all").policy)
    for nr in only_other:
        assert decide(alone, nr) == EPERM and decide(both, nr) == actions.ALLOW


def test_denied_when_recorded_are_counted_and_allowed():
    gen = generate([SOCKETS], name="s")
    recorded_denials = [ev for ev in read_events(SOCKETS)
                        if actions.action_of(ev.verdict) == actions.ERRNO]
    assert gen.denied_when_recorded == len(recorded_denials) == 2


def test_default_action_and_args_spec():
    gen = generate([SOCKETS], name="k", default="kill_process")
    assert decide(LoadedPolicy(gen.policy), 101) == actions.KILL_PROCESS
    assert parse_args_spec("socket, ioctl:1,clone") == {"socket": 0, "ioctl": 1, "clone": 0}
    with pytest.raises(PolicyError, match="0..5"):
        parse_args_spec("socket:6")
    with pytest.raises(PolicyError, match="--default"):
        generate([SOCKETS], name="x", default="nonsense")


def test_oci_profile_has_the_rules(merged):
    gen, _ = merged
    text, _warnings = to_oci(gen)
    doc = json.loads(text)
    assert doc["defaultAction"] == "SCMP_ACT_ERRNO"
    socket_rules = [e for e in doc["syscalls"] if "socket" in e["names"]]
    values = sorted(a["value"] for e in socket_rules for a in e.get("args", []))
    assert values == [AF_UNIX, AF_INET, AF_INET6]


def test_empty_trace_is_an_error(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text(SOCKETS.read_text().splitlines()[0] + "\n")
    with pytest.raises(TraceError, match="no events"):
        generate([p], name="e")
