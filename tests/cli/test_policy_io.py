"""`sysdispatch import`, `export` and `run --kernel`: real files, real filters, real commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sysdispatch.cli import main
from sysdispatch.policy import parse
from sysdispatch.seccomp import cfilter

FILTERS = Path(__file__).resolve().parents[2] / "filters"


def test_import_writes_a_policy_file(shared_profiles, tmp_path, capsys):
    out = tmp_path / "docker.toml"
    code = main(["import", str(shared_profiles / "moby-default.json"), "-o", str(out),
                 "--caps", "CAP_SYS_ADMIN,CAP_SYS_PTRACE", "--kernel", "6.1", "--arch", "x86_64"])
    err = capsys.readouterr().err
    assert code == 0, err
    pol = parse.load(out)
    assert pol.name == "docker" and pol.arches == ("x86_64", "i386", "x32")
    text = out.read_text()
    assert "caps CAP_SYS_ADMIN,CAP_SYS_PTRACE, kernel 6.1" in text.splitlines()[1]
    assert 'clone = "allow"' in text          # CAP_SYS_ADMIN: the unconditional entry
    assert "names skipped (unknown to libseccomp on an arch)" in err


def test_import_errors_are_one_line_with_the_json_path(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 9, "op": "SCMP_CMP_EQ"}]}]}))
    assert main(["import", str(bad), "-o", str(tmp_path / "x.toml")]) == 2
    err = capsys.readouterr().err
    assert err == f"sysdispatch: {bad}: syscalls[0].args[0].index: expected an integer 0..5, got 9\n"
    assert not (tmp_path / "x.toml").exists()


def test_export_formats(tmp_path, capsys):
    policy = str(FILTERS / "dispatch-demo.toml")
    assert main(["export", policy, "--format", "oci", "-o", str(tmp_path / "p.json")]) == 0
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["defaultAction"] == "SCMP_ACT_ALLOW"
    assert any(e["names"] == ["socket"] for e in doc["syscalls"])

    assert main(["export", policy, "--format", "spo", "-o", str(tmp_path / "p.yaml")]) == 0
    assert "kind: SeccompProfile\n" in (tmp_path / "p.yaml").read_text()

    assert main(["export", policy, "--format", "bpf", "-o", str(tmp_path / "p.bpf")]) == 0
    raw = (tmp_path / "p.bpf").read_bytes()
    assert len(raw) % 8 == 0 and len(cfilter.load(raw)[1]) == len(raw) // 8

    capsys.readouterr()
    assert main(["export", policy, "--format", "pfc"]) == 0
    out = capsys.readouterr().out
    assert "filter for arch x86_64" in out and 'filter for syscall "openat"' in out


def test_export_refusal_names_the_handler(capsys):
    policy = FILTERS / "fault-inject.toml"
    assert main(["export", str(policy), "--format", "bpf", "-o", "/dev/null"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"sysdispatch: {policy}:") and \
        "handler 'third_open_fails': is eBPF assembly" in err


def test_export_accepts_an_oci_profile(shared_profiles, capsys):
    assert main(["export", str(shared_profiles / "moby-default.json"), "--format", "pfc"]) == 0
    assert 'filter for syscall "personality"' in capsys.readouterr().out


def _policy(tmp_path, entries):
    p = tmp_path / "deny.toml"
    p.write_text('# deny.toml — test policy\n[policy]\nname = "deny"\ndefault = "allow"\n'
                 '[tables.syscalls.entries]\n' + entries)
    return str(p)


def test_run_kernel_really_filters(tmp_path, capfd):
    policy = _policy(tmp_path, 'mkdir = "errno(EPERM)"\nmkdirat = "errno(EPERM)"\n')
    assert main(["run", "--kernel", policy, "--", "mkdir", str(tmp_path / "d")]) == 1
    assert "Operation not permitted" in capfd.readouterr().err
    assert not (tmp_path / "d").exists()
    assert main(["run", "--kernel", policy, "--", "sh", "-c", "exit 7"]) == 7


def test_run_kernel_kill_process_exits_159(tmp_path):
    policy = _policy(tmp_path, 'mkdir = "kill_process"\nmkdirat = "kill_process"\n')
    assert main(["run", "--kernel", policy, "--", "mkdir", str(tmp_path / "d")]) == 159


def test_run_kernel_needs_a_command(tmp_path, capsys):
    assert main(["run", "--kernel", _policy(tmp_path, "")]) == 2
    assert "no command given" in capsys.readouterr().err
