"""`sysdispatch check POLICY` and `sysdispatch disasm POLICY [--handler NAME]`, run as a user would
(the real CLI in a subprocess) for the shipped policies and for broken ones."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sysdispatch.vm.asm import assemble
from sysdispatch.vm.program import SECCOMP
from tests.conftest import REPO

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
