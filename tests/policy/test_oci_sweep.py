"""Docker's and Podman's profiles: imported, exported back, and compared with the original on a
full sweep (every syscall number of x86_64, i386 and x32, each condition's interesting argument
values, numbers past the tables, a foreign architecture).

Four verdicts must agree on every invocation:
  original  the JSON profile loaded straight into libseccomp (as runc does), exported as
            classic BPF and run by the project's classic interpreter (vm/cbpf.py);
  emulator  the imported policy model evaluated by the emulator;
  oci       the imported policy exported as OCI JSON, that JSON loaded into libseccomp;
  kernel    the imported policy exported through sysdispatch.policy.kernel (classic BPF).
"""

from __future__ import annotations

import json

import pytest

from bridge_helpers import ClassicFilter, emulator, libseccomp_filter, sweep_cases
from sysdispatch.policy import kernel, oci

CONFIGS = [
    ("moby-default.json", (), "6.1"),
    ("moby-default.json", ("CAP_SYS_ADMIN",), "4.4"),
    ("moby-default.json", ("CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_BPF", "CAP_PERFMON",
                           "CAP_SYS_NICE", "CAP_SYS_TIME"), "6.1"),
    ("podman-seccomp.json", (), "6.1"),
    ("podman-seccomp.json", ("CAP_AUDIT_WRITE", "CAP_BPF"), "5.10"),
    ("podman-seccomp.json", ("CAP_SYS_ADMIN", "CAP_AUDIT_WRITE", "CAP_SYS_CHROOT"), "6.1"),
]


@pytest.mark.parametrize("profile, caps, kver", CONFIGS)
def test_import_and_export_decide_like_the_original(shared_profiles, profile, caps, kver):
    path = shared_profiles / profile
    major, minor = (int(x) for x in kver.split("."))
    original = ClassicFilter(kernel.export_bpf(libseccomp_filter(path, caps=caps,
                                                                 kernel=(major, minor))))
    res = oci.import_profile(path, caps=caps, kernel=kver, arch="x86_64")
    pol = res.policy
    exported, warnings = oci.export_oci(pol)
    assert warnings == []
    reloaded = ClassicFilter(kernel.export_bpf(libseccomp_filter(json.loads(json.dumps(exported)))))
    ours = ClassicFilter(kernel.export_bpf(pol))
    decide = emulator(pol)
    n = 0
    bad = []
    verdicts = set()
    for data in sweep_cases(pol):
        n += 1
        want = original.ret(data)
        got = (decide(data), reloaded.ret(data), ours.ret(data))
        verdicts.add(want)
        if got != (want,) * 3:
            bad.append((data, hex(want), [hex(g) for g in got]))
    assert not bad, bad[:5]
    assert n > 1200
    # the sweep exercised more than one outcome: allow, the default errno, bad arch at least
    assert len(verdicts) >= 3, verdicts


def test_export_groups_syscalls_by_rule(shared_profiles):
    pol = oci.import_profile(shared_profiles / "moby-default.json", kernel="6.1").policy
    doc, _ = oci.export_oci(pol)
    assert doc["defaultAction"] == "SCMP_ACT_ERRNO" and doc["defaultErrnoRet"] == 1
    assert doc["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    first = doc["syscalls"][0]
    assert first["action"] == "SCMP_ACT_ALLOW" and "read" in first["names"] and "args" not in first
    socket = [e for e in doc["syscalls"] if e["names"] == ["socket"]]
    assert [(e["args"][0]["op"], e["args"][0]["value"]) for e in socket] == \
        [("SCMP_CMP_LT", 38), ("SCMP_CMP_EQ", 39), ("SCMP_CMP_GT", 40)]
    clone = [e for e in doc["syscalls"] if e["names"] == ["clone"]]
    assert clone[0]["args"] == [{"index": 0, "value": 0x7E020000, "valueTwo": 0,
                                 "op": "SCMP_CMP_MASKED_EQ"}]
    # the export imports again to the same policy
    again = oci.import_profile(doc, kernel="6.1").policy
    assert again.tables["syscalls"].by_arch == pol.tables["syscalls"].by_arch
