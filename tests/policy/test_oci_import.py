"""OCI/Docker profile import: architectures, includes/excludes, rule shapes, and errors that name
the JSON path. Verdict equality with libseccomp on the shipped profiles is in test_oci_sweep.py."""

from __future__ import annotations

import json

import pytest

from bridge_helpers import ClassicFilter, libseccomp_filter, sweep_cases, emulator
from sysdispatch.errors import PolicyError
from sysdispatch.policy import kernel, oci
from sysdispatch.seccomp import actions as A
from sysdispatch.seccomp import arch as sarch


def _slot(pol, arch, name):
    nr = sarch.by_name(arch).syscall_number(name)
    return pol.tables["syscalls"].by_arch[arch].get(nr)


def test_moby_arches_defaults_and_skipped_names(shared_profiles):
    res = oci.import_profile(shared_profiles / "moby-default.json", kernel="6.1", arch="x86_64")
    pol = res.policy
    assert pol.arches == ("x86_64", "i386", "x32")           # archMap sub-architectures
    assert pol.default.ret == A.ERRNO | 1                     # defaultErrnoRet
    assert pol.bad_arch == A.KILL_THREAD                      # libseccomp's default
    assert pol.handlers[_slot(pol, "x86_64", "read")].default.ret == A.ALLOW
    assert pol.handlers[_slot(pol, "x86_64", "clone3")].default.ret == A.ERRNO | 38
    # names listed for other arches/kernels are skipped per arch, not errors
    assert "_llseek" in res.skipped["x86_64"] and "_llseek" not in res.skipped.get("i386", [])
    assert _slot(pol, "i386", "_llseek") is not None
    assert res.skipped_count > 100


def test_caps_and_min_kernel_decide_entries(shared_profiles):
    path = shared_profiles / "moby-default.json"
    plain = oci.import_profile(path, kernel="6.1").policy
    admin = oci.import_profile(path, kernel="6.1", caps=("CAP_SYS_ADMIN",)).policy
    old = oci.import_profile(path, kernel="4.4").policy
    # without CAP_SYS_ADMIN clone is allowed only without namespace flags (a masked rule)
    clone = plain.handlers[_slot(plain, "x86_64", "clone")]
    assert [str(c) for r in clone.rules for c in r.conds] == ["args[0] & 0x7e020000 == 0"]
    # with it, the unconditional entry wins (as in libseccomp) and clone3 is allowed
    assert admin.handlers[_slot(admin, "x86_64", "clone")].default.ret == A.ALLOW
    assert admin.handlers[_slot(admin, "x86_64", "clone3")].default.ret == A.ALLOW
    assert _slot(plain, "x86_64", "bpf") is None and _slot(admin, "x86_64", "bpf") is not None
    # ptrace needs minKernel 4.8
    assert _slot(plain, "x86_64", "ptrace") is not None and _slot(old, "x86_64", "ptrace") is None
    # "SYS_ADMIN" without the prefix means the same cap
    short = oci.import_profile(path, kernel="6.1", caps=("sys_admin",)).policy
    assert _slot(short, "x86_64", "bpf") is not None


def test_arch_option_picks_the_archmap_entry(shared_profiles):
    pol = oci.import_profile(shared_profiles / "moby-default.json", kernel="6.1",
                             arch="aarch64").policy
    assert pol.arches == ("aarch64", "arm")
    # arch-specific includes are decided for the target: arch_prctl is amd64/x32 only
    assert _slot(pol, "aarch64", "arch_prctl") is None
    x86 = oci.import_profile(shared_profiles / "moby-default.json", kernel="6.1").policy
    assert _slot(x86, "x86_64", "arch_prctl") is not None


def _small(tmp_path, syscalls, **top):
    doc = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
           "syscalls": syscalls, **top}
    p = tmp_path / "p.json"
    p.write_text(json.dumps(doc))
    return p, doc


def _same_as_libseccomp(path, pol):
    orig = ClassicFilter(kernel.export_bpf(libseccomp_filter(path)))
    decide = emulator(pol)
    cases = list(sweep_cases(pol))
    bad = [(d, orig.ret(d), decide(d)) for d in cases if orig.ret(d) != decide(d)]
    assert not bad, bad[:5]
    return len(cases)


def test_rule_shapes_follow_libseccomp(tmp_path):
    """An unconditional entry overrides conditional ones whatever the order; the first of two
    unconditional entries wins; entries with the default action are left out; several entries
    for one syscall are ORed in profile order."""
    path, _ = _small(tmp_path, [
        {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5,
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
        {"names": ["write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["read"], "action": "SCMP_ACT_LOG"},
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["close"], "action": "SCMP_ACT_ERRNO"},           # the default: left out
        {"names": ["openat"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 2, "value": 0o100, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["openat"], "action": "SCMP_ACT_TRACE", "errnoRet": 7,
         "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_GE"},
                  {"index": 1, "value": 10, "op": "SCMP_CMP_LT"}]},
        {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS",
         "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_NE"}]},
    ])
    res = oci.import_profile(path, kernel="6.1")
    pol = res.policy
    assert pol.handlers[_slot(pol, "x86_64", "write")].default.ret == A.ALLOW
    assert pol.handlers[_slot(pol, "x86_64", "read")].default.ret == A.LOG
    assert _slot(pol, "x86_64", "close") is None
    assert any("default action" in w for w in res.warnings)
    openat = pol.handlers[_slot(pol, "x86_64", "openat")]
    assert [r.then.ret for r in openat.rules] == [A.ALLOW, A.TRACE | 7]
    assert openat.rules[0].conds[0].mask == 0o100
    assert _same_as_libseccomp(path, pol) > 300


def test_i386_socket_calls_also_go_through_socketcall(tmp_path):
    """libseccomp puts a rule for socket on i386 both on socket(359) and on
    socketcall(args[0] == SYS_SOCKET), replacing any args[0] comparison: so must the import."""
    path, _ = _small(tmp_path, [
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                  {"index": 2, "value": 0, "op": "SCMP_CMP_EQ"}]},
        {"names": ["shmget"], "action": "SCMP_ACT_ALLOW"},
    ], architectures=["SCMP_ARCH_X86"])
    pol = oci.import_profile(path, kernel="6.1").policy
    assert pol.arches == ("x86_64", "i386")
    socketcall = pol.handlers[_slot(pol, "i386", "socketcall")]
    assert [str(c) for c in socketcall.rules[0].conds] == ["args[0] == 1", "args[2] == 0"]
    ipc = pol.handlers[_slot(pol, "i386", "ipc")]
    assert [(c.arg, c.op, c.value) for c in ipc.rules[0].conds] == [(0, "==", 23)]  # SHMGET
    assert pol.handlers[_slot(pol, "i386", "socket")].rules[0].conds[0].value == 2
    _same_as_libseccomp(path, pol)


@pytest.mark.parametrize("mutate, where, what", [
    (lambda d: d["syscalls"][0]["args"][0].update(valu=1), "syscalls[0].args[0]",
     "unknown key 'valu'"),
    (lambda d: d["syscalls"][0]["args"][0].update(op="SCMP_CMP_FOO"), "syscalls[0].args[0].op",
     "unknown operator 'SCMP_CMP_FOO'"),
    (lambda d: d["syscalls"][0].update(action="SCMP_ACT_MAYBE"), "syscalls[0]",
     "unknown action 'SCMP_ACT_MAYBE'"),
    (lambda d: d["syscalls"][0]["args"][0].update(index=6), "syscalls[0].args[0].index",
     "expected an integer 0..5"),
    (lambda d: d["syscalls"][0].update(includes={"kernel": "4.8"}), "syscalls[0].includes",
     "unknown key 'kernel'"),
    (lambda d: d.update(architectures=["X86_64"]), "architectures[0]", "unknown architecture"),
    (lambda d: d.update(archMap=[]) or d.update(defaultErrnoRet=-1), "defaultAction.errnoRet",
     "expected an integer 0..65535"),
    (lambda d: d.update(seccomp=True), "profile", "unknown key 'seccomp'"),
])
def test_bad_profiles_name_the_json_path(tmp_path, mutate, where, what):
    doc = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
           "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}
    mutate(doc)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(PolicyError) as ei:
        oci.import_profile(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: {where}: ") and what in msg, msg
    assert "\n" not in msg


def test_not_json_names_line_and_column(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{\n  "defaultAction": "SCMP_ACT_ALLOW",\n  "syscalls": [,]\n}\n')
    with pytest.raises(PolicyError, match=r"broken\.json:3:16: not JSON"):
        oci.import_profile(p)


def test_same_index_conditions_are_anded_with_a_warning(tmp_path):
    path, _ = _small(tmp_path, [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_GT"},
                  {"index": 0, "value": 5, "op": "SCMP_CMP_LT"}]}])
    res = oci.import_profile(path, kernel="6.1")
    assert any("runc would OR them" in w for w in res.warnings)
    read = res.policy.handlers[_slot(res.policy, "x86_64", "read")]
    assert len(read.rules) == 1 and len(read.rules[0].conds) == 2
