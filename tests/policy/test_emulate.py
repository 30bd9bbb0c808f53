"""policy_emulator: what `sysdispatch emu POLICY.toml SYSCALL [ARG...]` (and --sweep) builds on."""

from __future__ import annotations

import json

import pytest

from sysdispatch.errors import PolicyError
from sysdispatch.policy.emulate import PolicyEmulator, policy_emulator
from sysdispatch.seccomp import actions as A
from sysdispatch.seccomp.data import SeccompData
from sysdispatch.seccomp.stack import ClassicFilter, FilterStack, load_filter
from sysdispatch.vm import cbpf
from tests.conftest import REPO

DEMO = REPO / "filters" / "dispatch-demo.toml"


def test_one_call_path_tail_calls_and_verdict():
    emu = policy_emulator(DEMO)
    data = emu.data("openat", ["AT_FDCWD", 0, "O_CREAT|O_WRONLY"])
    assert data.nr == 257 and data.args[0] == 2**64 - 100 and data.args[2] == 0o101
    d = emu.decide(data)
    assert d.describe() == ("syscall_entry -> tail_call syscalls[257] -> openat_rules -> "
                            "return ERRNO(13)")
    text = emu.report(data, d)
    assert "tail calls: 1" in text and "verdict: ERRNO(13)" in text and text.startswith("openat(")
    js = emu.to_json(data, d)
    assert json.loads(json.dumps(js)) == js
    assert js["path"] == list(d.path) and js["ret"] == A.ERRNO | 13 and js["tail_calls"] == 1
    assert emu.call("socket", [10]).tail_calls == 2
    assert emu.call("41", ["AF_UNIX"]).ret == A.ALLOW
    with pytest.raises(PolicyError, match="unknown syscall 'opnat' on x86_64"):
        emu.data("opnat")
    with pytest.raises(PolicyError, match="unknown constant 'AF_INTE'"):
        emu.data("socket", ["AF_INTE"])
    # an architecture the policy does not list: its numbers, and the bad_arch verdict
    assert emu.call("ptrace", arch="i386").ret == A.KILL_PROCESS


def test_sweep_covers_every_syscall_and_the_edges():
    emu = policy_emulator(DEMO)
    rows = emu.sweep()
    numbers = {r.data.nr for r in rows}
    assert {0, 41, 101, 257, 456} <= numbers and len(numbers) > 350
    openat = [r for r in rows if r.data.nr == 257]
    verdicts = {r.decision.ret for r in openat}
    assert verdicts == {A.ALLOW, A.ERRNO | 13, A.LOG}          # every rule is reached
    families = {r.data.args[0]: r.decision.ret for r in rows if r.data.nr == 41}
    assert families[1] == families[2] == A.ALLOW and families[10] == A.LOG
    assert families[(1 << 32) | 2] == A.ERRNO | 97             # the guard, seen by the sweep
    text = emu.format_sweep(rows)
    assert "handlers reached: 5/5" in text
    assert text.count("   257  openat ") == 3                  # one line per distinct verdict
    assert len(emu.sweep_json(rows)) == len(rows)


def test_policy_is_a_filter_that_stacks():
    emu = load_filter(DEMO)                                     # the .toml loader
    assert isinstance(emu, PolicyEmulator) and len(emu) > 20
    # a classic filter returning ERRNO(5) for everything: the stack keeps the stricter verdict
    classic = ClassicFilter([cbpf.CInsn(0x06, 0, 0, A.ERRNO | 5)], name="errno5")
    stack = FilterStack([emu, classic])
    assert stack.evaluate(SeccompData(39)).ret == A.ERRNO | 5
    assert stack.evaluate(SeccompData(39, 0x1234)).ret == A.KILL_PROCESS   # the policy's bad_arch
    assert emu.run(SeccompData(101)).ret == A.LOG
    assert emu.listing()[0].strip().startswith("0:")
