"""``sysdispatch explain``: tables, slots and rules in words; ``--handler`` disassembly; errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sysdispatch.cli import main
from sysdispatch.policy.compile import compile_policy
from sysdispatch.policy.parse import load
from sysdispatch.seccomp import actions

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "filters" / "dispatch-demo.toml"

FORMS = """
[policy]
name = "forms"
arches = ["x86_64"]
default = "allow"
bad_arch = "kill_process"

[tables.syscalls]
index = "nr"
[tables.syscalls.entries]
openat = "open_forms"
mmap = "mmap_forms"
getpid = "counted"

[handlers.open_forms]
rules = [
  { when = ["args[2] & O_CREAT == 0"], action = "allow" },
  { when = ["args[2] & 0xc0 == 0xc0"], action = "errno(EEXIST)" },
  { when = ["args[0] & 0xffffffff == 0xffffff9c"], action = "log" },
]
default = "kill_process"

[handlers.mmap_forms]
rules = [{ when = ["args[2] & PROT_EXEC != 0", "args[1] > 4096"], action = "trap(7)" }]

[handlers.counted]
asm = '''
w0 = 0x7fff0000
exit
'''
"""


def run(argv, capsys) -> tuple[int, str, str]:
    status = main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


def test_demo_tables_slots_and_rules(capsys):
    status, out, _ = run(["explain", str(DEMO)], capsys)
    assert status == 0
    compiled = compile_policy(load(DEMO))
    for name in ("syscall_entry", "openat_rules", "socket_by_family", "no_kill_init"):
        n = len(compiled.program(name).insns)
        assert f"{name}: {n} insns" in out or f"{name} (rules, {n} insns)" in out
    filled = sum(s is not None for s in compiled.array("syscalls", "x86_64").slots)
    assert filled == 4 and "syscalls 4/512" in out and "families 3/64" in out
    assert "  socket               -> handler socket_by_family" in out
    assert "  ptrace               -> LOG" in out
    assert "  AF_INET6             -> LOG" in out
    assert "empty slot -> ERRNO(EAFNOSUPPORT)" in out
    assert "if args[2] has O_CREAT set -> ERRNO(EACCES)" in out
    assert "if (int)args[0] == AT_FDCWD and args[2] has O_DIRECTORY set -> LOG" in out
    assert "always -> tail-call into table 'families'" in out
    assert "if args[0] == 1 -> ERRNO(EPERM)" in out


def test_condition_forms_in_words(tmp_path, capsys):
    p = tmp_path / "forms.toml"
    p.write_text(FORMS)
    status, out, _ = run(["explain", str(p)], capsys)
    assert status == 0
    assert "if args[2] has none of O_CREAT -> ALLOW" in out
    assert "if args[2] has O_CREAT|O_EXCL set -> ERRNO(EEXIST)" in out
    assert "if (int)args[0] == AT_FDCWD -> LOG" in out
    assert "otherwise -> KILL_PROCESS" in out
    assert "if args[2] has PROT_EXEC set and args[1] > 0x1000 -> TRAP(7)" in out
    assert "otherwise -> ALLOW (the policy default)" in out
    assert "handler counted (asm, 2 insns)" in out and "see --handler counted" in out


def test_handler_disassembly(capsys):
    status, out, _ = run(["explain", str(DEMO), "--handler", "openat_rules"], capsys)
    assert status == 0
    assert out.splitlines()[0] == "openat_rules: 18 insns"
    errno_eacces = actions.ERRNO | 13
    assert f"w0 = {errno_eacces}" in out          # the rule's action, as the program returns it
    assert "r2 &= 64" in out                      # O_CREAT's mask
    assert "r4 = 0xffffff9c ll" in out            # AT_FDCWD as a 32-bit int, via lddw
    status, out, _ = run(["explain", str(DEMO), "--handler", "syscall_entry"], capsys)
    assert status == 0 and "call 12" in out      # helper 12: bpf_tail_call


@pytest.mark.parametrize("argv, message", [
    (["--handler", "nope"], "no handler 'nope' in policy 'dispatch-demo'"),
])
def test_unknown_handler_is_one_line(argv, message):
    r = subprocess.run([sys.executable, "-m", "sysdispatch", "explain", str(DEMO), *argv],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_policy_names_file_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text(FORMS.replace('"args[1] > 4096"', '"args[9] > 4096"'))
    r = subprocess.run([sys.executable, "-m", "sysdispatch", "explain", str(p)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{p}:" in r.stderr and r.stderr.count("\n") == 1


def test_oci_profile(shared_profiles, capsys):
    profile = sorted(shared_profiles.glob("*.json"))[0]
    status, out, _ = run(["explain", str(profile)], capsys)
    assert status == 0 and "table syscalls (indexed by nr;" in out
    assert "-> ALLOW" in out
