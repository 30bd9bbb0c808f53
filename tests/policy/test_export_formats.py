"""Writing policies out: the TOML writer (read back by policy-core's parser), the OCI JSON
profile and the Security Profiles Operator SeccompProfile (YAML)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sysdispatch.errors import PolicyError
from sysdispatch.policy import oci, parse, spo, writer
from sysdispatch.policy.model import Act, Handler, Policy, Table
from sysdispatch.seccomp import actions as A

FILTERS = Path(__file__).resolve().parents[2] / "filters"


@pytest.mark.parametrize("name", ["container", "default", "dispatch-demo", "fault-inject",
                                  "no-network", "readonly-fs"])
def test_writer_round_trips_the_shipped_policies(name):
    """Nested tables, asm handlers with maps, masks, symbolic values: all come back the same."""
    pol = parse.load(FILTERS / f"{name}.toml")
    text = writer.write_policy(pol)
    assert text.startswith(f"# {pol.name}.toml")
    assert parse.loads(text, filename=str(FILTERS / f"{name}.toml")) == pol


@pytest.mark.parametrize("profile", ["moby-default.json", "podman-seccomp.json"])
def test_imported_profiles_write_readable_policy_files(shared_profiles, profile):
    res = oci.import_profile(shared_profiles / profile, kernel="6.1", arch="x86_64")
    text = writer.write_policy(res.policy, header=["imported for a test"])
    back = parse.loads(text, filename=res.policy.path)
    assert back == res.policy
    lines = text.splitlines()
    assert lines[0].startswith(f"# {res.policy.name}.toml — Imported from {profile}")
    assert lines[1] == "# imported for a test"
    # grouped: the largest action group first, with its count; own handlers after the groups
    first_group = next(ln for ln in lines if ln.startswith("# allow ("))
    assert int(first_group.split("(")[1].split(")")[0]) > 300
    assert lines.index("# with a handler of their own") > lines.index(first_group)
    assert 'personality = "personality"' in lines and "[handlers.personality]" in lines
    assert '  { when = ["args[0] == 0xffffffff"], action = "allow" },' in lines


def test_writer_refuses_per_arch_differences_it_cannot_say():
    pol = Policy("p", ("x86_64", "i386"), Act(ret=A.ALLOW), A.KILL_PROCESS,
                 {"syscalls": Table("syscalls", "nr", by_arch={"x86_64": {0: "deny"},
                                                                "i386": {}})},
                 {"deny": Handler("deny", default=Act(ret=A.ERRNO | 1))})
    with pytest.raises(PolicyError, match="syscall 'read' goes to 'deny' on some architectures "
                       "but not on i386"):
        writer.write_policy(pol)


def test_oci_export_refuses_what_a_profile_cannot_carry():
    pol = parse.loads('[policy]\nname = "t"\ndefault = "allow"\n[tables.syscalls.entries]\n'
                      'read = "kill_thread"\nwrite = "trace(7)"\n')
    doc, warnings = oci.export_oci(pol)
    assert warnings == ["bad_arch KILL_PROCESS cannot be said in an OCI profile (runtimes use "
                        "KILL_THREAD)"]
    assert {e["action"]: e.get("errnoRet") for e in doc["syscalls"]} == \
        {"SCMP_ACT_KILL_THREAD": None, "SCMP_ACT_TRACE": 7}
    trap = parse.loads('[policy]\nname = "t"\ndefault = "allow"\n[tables.syscalls.entries]\n'
                       'read = "trap(3)"\n', filename="trap.toml")
    with pytest.raises(PolicyError, match=r"handler 'trap\(3\)': TRAP\(3\): libseccomp loads trap "
                       "without data"):
        oci.export_oci(trap)


def test_oci_export_warns_about_bad_arch():
    pol = parse.loads('[policy]\nname = "t"\ndefault = "allow"\nbad_arch = "errno(EPERM)"\n'
                      '[tables.syscalls.entries]\nread = "log"\n')
    doc, warnings = oci.export_oci(pol)
    assert doc == {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                   "syscalls": [{"names": ["read"], "action": "SCMP_ACT_LOG"}]}
    assert any("bad_arch ERRNO(1) cannot be said" in w for w in warnings)


def test_spo_yaml_parses_back_to_the_oci_spec(shared_profiles):
    yaml = pytest.importorskip("yaml")
    pol = oci.import_profile(shared_profiles / "podman-seccomp.json", kernel="6.1").policy
    pol = dataclasses.replace(pol, name="Podman_Default: test", description='say "hi": #1')
    text, warnings = spo.dumps(pol)
    doc = yaml.safe_load(text)
    assert doc["apiVersion"] == "security-profiles-operator.x-k8s.io/v1beta1"
    assert doc["kind"] == "SeccompProfile"
    assert doc["metadata"] == {"name": "podman-default-test",
                               "annotations": {"description": 'say "hi": #1'}}
    spec, _ = oci.export_oci(pol)
    assert spec.pop("defaultErrnoRet") == 38
    assert doc["spec"] == json.loads(json.dumps(spec))
    # the CRD has no defaultErrnoRet: Podman's ENOSYS default is lost, and we say so
    assert any("ERRNO(38) becomes ERRNO(EPERM)" in w for w in warnings)


def test_spo_yaml_quotes_what_yaml_would_misread():
    out = spo.to_yaml({"a": ["yes", "no", "on", "1x", "plain-name.x", "", "a: b"], "b": {},
                       "c": [], "d": 7})
    assert out.splitlines()[1:] == [
        "a:", '- "yes"', '- "no"', '- "on"', '- "1x"', "- plain-name.x", '- ""', '- "a: b"',
        "b: {}", "c: []", "d: 7"]
