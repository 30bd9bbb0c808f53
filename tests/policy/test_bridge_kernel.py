"""The bridge against the real kernel: the emulator's verdicts equal the kernel's on the
exported filters (against_kernel), and run_command runs real commands under real filters."""

from __future__ import annotations

from pathlib import Path

import pytest

from sysdispatch.policy import kernel, oci, parse
from sysdispatch.policy.against_kernel import against_kernel, emulator_decide, invocations
from sysdispatch.seccomp import actions as A
from sysdispatch.seccomp import oracle
from sysdispatch.seccomp.data import SeccompData

FILTERS = Path(__file__).resolve().parents[2] / "filters"
HEAD = '[policy]\nname = "t"\ndefault = "allow"\n'


@pytest.mark.parametrize("profile, caps", [("moby-default.json", ()),
                                           ("podman-seccomp.json", ("CAP_AUDIT_WRITE",))])
def test_docker_and_podman_decide_like_the_kernel(shared_profiles, profile, caps):
    pol = oci.import_profile(shared_profiles / profile, caps=caps, kernel="6.1",
                             arch="x86_64").policy
    report = against_kernel(pol, cases=120, seed=5)
    assert report.cases == 120
    assert report.ok, str(report)
    assert report.not_run == ("i386",)


@pytest.mark.parametrize("name", ["dispatch-demo", "container"])
def test_shipped_policies_decide_like_the_kernel(name):
    """Nested tables (dispatch-demo) and negated masks (container) exported through libseccomp."""
    report = against_kernel(parse.load(FILTERS / f"{name}.toml"), cases=80, seed=1)
    assert report.ok, str(report)


def test_against_kernel_sees_a_wrong_emulator():
    pol = parse.load(FILTERS / "dispatch-demo.toml")
    right = emulator_decide(pol)
    report = against_kernel(pol, cases=30, seed=2, decide=lambda d: A.ALLOW)
    wrong = [d for d in invocations(pol, 30, 2) if right(d) not in (A.ALLOW, A.LOG)]
    assert wrong and len(report.divergences) == len(wrong)
    assert "emulator ALLOW" in str(report.divergences[0])


def test_invocations_cover_every_conditional_slot_first():
    pol = parse.load(FILTERS / "dispatch-demo.toml")
    cases = invocations(pol, 12, seed=0)
    assert len(cases) == 12 and cases == invocations(pol, 12, seed=0)
    nrs = {d.nr for d in cases}
    assert {257, 41, 62} <= nrs   # openat, socket, kill: the handlers with conditions
    assert any(d.nr & 0x40000000 for d in cases)   # an x32 number (bad arch here)


def test_libseccomp_compares_only_the_low_word_on_x32():
    """A kernel fact the emulator does not share: libseccomp treats x32 as a 32-bit arch, so its
    filter ignores the upper half of an x32 argument the kernel passes in full. That is why
    against_kernel keeps x32 arguments below 2**32 (see its docstring)."""
    pol = parse.loads('[policy]\nname = "t"\ndefault = "errno(EPERM)"\narches = ["x86_64", "x32"]\n'
                      '[tables.syscalls.entries]\npersonality = "query_only"\n'
                      '[handlers.query_only]\nrules = [ { when = ["args[0] == 0"], '
                      'action = "allow" } ]\n')
    bpf = kernel.export_bpf(pol)
    x32_personality = 0x40000000 | 135
    assert oracle.kernel_outcome([bpf], x32_personality, [1 << 32]) == oracle.Outcome("allow")
    assert emulator_decide(pol)(SeccompData(x32_personality, args=(1 << 32,))) == A.ERRNO | 1
    # on x86_64 the whole word counts, in the kernel filter and in the emulator alike
    assert oracle.kernel_outcome([bpf], 135, [1 << 32]) == oracle.Outcome("errno", 1)


def test_run_command_denies_mkdir_with_eperm(tmp_path, capfd):
    pol = parse.loads(HEAD + '[tables.syscalls.entries]\nmkdir = "errno(EPERM)"\n'
                      'mkdirat = "errno(EPERM)"\n')
    target = tmp_path / "made"
    assert kernel.run_command(pol, ["mkdir", str(target)]) == 1
    assert "Operation not permitted" in capfd.readouterr().err
    assert not target.exists()
    assert kernel.run_command(pol, ["true"]) == 0


def test_run_command_kill_process_is_signal_exit(tmp_path):
    pol = parse.loads(HEAD + '[tables.syscalls.entries]\nmkdir = "kill_process"\n'
                      'mkdirat = "kill_process"\n')
    assert kernel.run_command(pol, ["mkdir", str(tmp_path / "x")]) == 128 + 31   # SIGSYS
    assert not (tmp_path / "x").exists()


def test_run_command_reports_a_missing_command(capfd):
    pol = parse.loads(HEAD)
    assert kernel.run_command(pol, ["/nonexistent/cmd"]) == 127
    assert "No such file or directory" in capfd.readouterr().err
