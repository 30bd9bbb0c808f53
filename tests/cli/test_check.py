"""`sysdispatch check POLICY` and `sysdispatch disasm POLICY [--handler NAME]`, run as a user would
(the real CLI in a subprocess) for the shipped policies and for broken ones."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sysdispatch.vm.asm import assemble
from sysdispatch.vm.program import SECCOMP
from tests.conftest import REPO, need_root

FILTERS = REPO / "filters"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sysdispatch", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60)


def test_check_prints_the_program_table():
    r = cli("check", "filters/dispatch-demo.toml")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "table syscalls (index nr, 4/512 slots, empty: allow)" in out
    assert "table families (index args[0], 3/64 slots, empty: errno(97))" in out
    rows = {line.split()[1]: line.split() for line in out.splitlines()
            if line.startswith("  ") and line.split()[0].isdigit()}
    assert rows["openat"] == ["257", "openat", "openat_rules", "2", "18"]
    assert rows["AF_INET6"][:3] == ["10", "AF_INET6", "log"]
    assert out.rstrip().endswith("ok: 6 programs verified, 7 slots filled")


@pytest.mark.parametrize("name", ["container", "default", "fault-inject", "no-network",
                                  "readonly-fs"])
def test_check_shipped(name):
    r = cli("check", f"filters/{name}.toml")
    assert r.returncode == 0 and r.stderr == "" and "programs verified" in r.stdout, r.stderr


BROKEN = [
    ('[policy]\ndefault = "allow"\n[tables.syscalls.entries]\nopnat = "log"\n',
     "bad.toml:4:1: unknown syscall 'opnat'"),
    ('[policy]\ndefault = "allow\n', "bad.toml:2:17: Illegal character"),
    ('[policy]\ndefault = "allow"\n[tables.syscalls.entries]\nread = "h"\n[handlers.h]\n'
     'asm = """\nr0 = 0\nr0 = *(u64 *)(r1 + 80)\nexit\n"""\n',
     "bad.toml:8:1: handler 'h', pc 1: "),
    ('[policy]\ndefault = "allow"\n[tables.syscalls.entries]\nread = "h"\n[handlers.h]\n'
     'asm = """\nr0 = 0\nr0 += r5\nexit\n"""\n', "bad.toml:8:1: handler 'h', pc 1: "),
]


@pytest.mark.parametrize("text,expected", BROKEN)
def test_check_broken_policy_is_one_line(tmp_path, text, expected):
    (tmp_path / "bad.toml").write_text(text)
    r = subprocess.run([sys.executable, "-m", "sysdispatch", "check", "bad.toml"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"sysdispatch: {expected}"), r.stderr


def test_disasm_all_and_one_handler():
    r = cli("disasm", "filters/dispatch-demo.toml")
    assert r.returncode == 0, r.stderr
    for name in ("syscall_entry", "openat_rules", "socket_by_family", "no_kill_init", "log"):
        assert f"; {name}: " in r.stdout
    assert "bad_arch:" in r.stdout and "w0 = 327693  ; ERRNO(13)" in r.stdout
    one = cli("disasm", "filters/dispatch-demo.toml", "--handler", "openat_rules")
    assert one.returncode == 0 and one.stdout.count("; ") >= 1
    body = one.stdout.split("\n", 1)[1]
    assert "rule_1:" in body and "if r2 != 64 goto +2 <rule_1>" in body
    prog = assemble(body, prog_type=SECCOMP)                      # the listing re-assembles
    assert len(prog) == 18
    bad = cli("disasm", "filters/dispatch-demo.toml", "--handler", "nosuch")
    assert bad.returncode == 2 and "no handler 'nosuch'" in bad.stderr


# --- check --against-kernel: the emulator's verdicts against the kernel running the export ------

def test_check_against_kernel_agrees_on_container():
    need_root()  # the oracle traces a child it forks
    r = cli("check", "filters/container.toml", "--against-kernel", "--cases", "40")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "container: 40 invocations against the kernel (x86_64), 0 divergences\n"


def test_check_against_kernel_mock_broken_emulator_exits_1(capsys, monkeypatch):
    """The kernel is real; the emulator is replaced by one that allows everything, so the
    kernel's KILL/ERRNO verdicts must show as divergences and the exit status must be 1."""
    need_root()
    from sysdispatch.cli import main
    from sysdispatch.policy import against_kernel as ak
    from sysdispatch.seccomp import actions
    monkeypatch.setattr(ak, "emulator_decide",
                        lambda policy, engine="interp": lambda data: actions.ALLOW)
    rc = main(["check", str(FILTERS / "dispatch-demo.toml"), "--against-kernel",
               "--cases", "12"])
    out = capsys.readouterr().out
    head, *diffs = out.splitlines()
    assert rc == 1 and diffs and head.endswith(f", {len(diffs)} divergences")
    assert all("emulator ALLOW (observable as ALLOW), kernel " in d for d in diffs)


def test_check_against_kernel_refuses_what_libseccomp_cannot_express():
    r = cli("check", "filters/fault-inject.toml", "--against-kernel")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "handler 'third_open_fails'" in r.stderr, r.stderr
    assert r.stderr.startswith("sysdispatch: filters/fault-inject.toml:")


@pytest.mark.parametrize("args,message", [
    (["--cases", "3"], "--cases counts the invocations of --against-kernel"),
    (["--against-kernel", "--cases", "0"], "0 is not a positive number"),
    (["--against-kernel", "--cases", "x"], "'x' is not a number"),
])
def test_check_cases_misuse(args, message):
    r = cli("check", "filters/container.toml", *args)
    assert r.returncode == 2 and r.stdout == "" and message in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
