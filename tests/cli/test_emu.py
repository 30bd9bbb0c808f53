"""`sysdispatch emu`: one syscall with the executed path marked, --json, stacks, eBPF filters,
other architectures, and --sweep with coverage — verdicts checked against the kernel."""

from __future__ import annotations

import json
import re

import pyseccomp
import pytest

from sysdispatch.cli import main
from sysdispatch.seccomp import arch, cfilter, oracle
from sysdispatch.vm import cbpf

from conftest import REPO, need_root
from classic_samples import FILTER_TEXT

TEXT = FILTER_TEXT
X86 = arch.X86_64


@pytest.fixture
def filt(tmp_path):
    raw = cbpf.encode(cfilter.assemble(TEXT))
    p = tmp_path / "f.bpf"
    p.write_bytes(raw)
    return p


def emu(capsys, *argv):
    rc = main(["emu", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def marked(out: str) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"^> (\d{4}):", out, re.M)]


def test_one_syscall_marks_the_path_and_names_the_return(filt, capsys):
    rc, out, _ = emu(capsys, filt, "openat", 0, 0, 2)
    assert rc == 0
    assert out.startswith(f"openat (nr {X86.syscall_number('openat')}, x86_64) args "
                          "[0x0, 0x0, 0x2, 0x0, 0x0, 0x0]")
    assert marked(out) == [0, 1, 2, 3, 4, 5, 6, 8]
    assert "\nreturn ERRNO(13) at 0008\n" in out
    assert out.rstrip().endswith("verdict: ERRNO(13): fails with -EACCES (13)")
    # the kernel, given the same filter and call, does the same
    nr = X86.syscall_number("openat")
    assert oracle.kernel_outcome([filt.read_bytes()], nr, (0, 0, 2)) == oracle.Outcome("errno", 13)
    rc, out, _ = emu(capsys, filt, "openat", 0, 0, 4)
    assert "\nreturn ALLOW at 0007\n" in out
    assert oracle.kernel_outcome([filt.read_bytes()], nr, (0, 0, 4)) == oracle.Outcome("allow")


def test_json(filt, capsys):
    need_root()
    rc, out, _ = emu(capsys, filt, "--json", "ptrace", "-1")
    doc = json.loads(out)
    assert doc["args"][0] == 2**64 - 1 and doc["nr"] == X86.syscall_number("ptrace")
    f = doc["filters"][0]
    assert (f["path"], f["return_pc"], f["verdict"]) == ([0, 1, 2, 3, 9], 9, "KILL_PROCESS")
    assert (doc["verdict"], doc["effect"]) == ("KILL_PROCESS", "process killed by SIGSYS")
    assert oracle.kernel_outcome([filt.read_bytes()], doc["nr"], doc["args"]).kind == "kill"


def test_stacked_filters_and_the_winner(filt, tmp_path, capsys):
    other = tmp_path / "g.asm"
    other.write_text("A = sys_number\nif (A == openat) goto t\nreturn ALLOW\nt: return TRAP(7)\n")
    rc, out, _ = emu(capsys, filt, other, "openat", 0, 0, 1)
    assert "# filter 0: " in out and "# filter 1: " in out
    assert "return ERRNO(13) at 0008" in out and "return TRAP(7) at 0003" in out
    assert "verdict: TRAP(7) (from filter 1): SIGSYS raised (si_errno 7)" in out
    raws = [filt.read_bytes(), cbpf.encode(cfilter.assemble(other.read_text()))]
    # the newer filter must let seccomp() through for the stack to be installable: it does
    assert oracle.kernel_outcome(raws, X86.syscall_number("openat"), (0, 0, 1)) == \
        oracle.Outcome("trap", 7)


def test_ebpf_filter(tmp_path, capsys):
    prog = tmp_path / "p.s"
    prog.write_text("r2 = *(u32 *)(r1 + 0)\nif r2 == 110 goto deny\nw0 = 0x7fff0000\nexit\n"
                    "deny:\nw0 = 0x50001\nexit\n")
    rc, out, _ = emu(capsys, prog, "getppid")
    assert rc == 0 and "verdict: ERRNO(1)" in out and X86.syscall_number("getppid") == 110
    rc, out, _ = emu(capsys, prog, "getpid")
    assert "verdict: ALLOW" in out


def test_other_architectures(filt, capsys):
    rc, out, _ = emu(capsys, "--arch", "i386", filt, "socket")
    assert out.startswith(f"socket (nr {arch.I386.syscall_number('socket')}, i386)")
    assert "return KILL_PROCESS at 0009" in out and marked(out) == [0, 1, 9]
    rc, out, _ = emu(capsys, "--arch", "x32", "--json", filt, "read")
    doc = json.loads(out)
    assert doc["nr"] == arch.X32.syscall_number("read") == 0x40000000
    assert doc["verdict"] == "ALLOW"


def export(f) -> bytes:
    import tempfile
    with tempfile.TemporaryFile() as t:
        f.export_bpf(t)
        t.seek(0)
        return t.read()


def test_sweep_verdicts_agree_with_the_kernel(tmp_path, capsys):
    need_root()
    f = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    f.add_rule(pyseccomp.ERRNO(1), "execve")
    f.add_rule(pyseccomp.KILL_PROCESS, "ptrace")
    f.add_rule(pyseccomp.ERRNO(13), "openat", pyseccomp.Arg(2, pyseccomp.MASKED_EQ, 3, 1))
    f.add_rule(pyseccomp.TRACE(7), "ioctl", pyseccomp.Arg(1, pyseccomp.GT, 0x1_2345_6789))
    raw = export(f)
    p = tmp_path / "lib.bpf"
    p.write_bytes(raw)
    rc, out, _ = emu(capsys, "--json", "--sweep", "--converted", p)
    doc = json.loads(out)
    assert doc["syscalls"] == len(X86.table) and doc["runs"] > doc["syscalls"]
    rows = {r["verdict"]: r for r in doc["verdicts"]}
    assert set(rows) == {"ALLOW", "ERRNO(1)", "ERRNO(13)", "KILL_PROCESS", "TRACE(7)"}
    # openat and ioctl count under ALLOW too (with zero arguments) and again under their rule
    assert rows["ALLOW"]["count"] == len(X86.table) - 2
    assert rows["TRACE(7)"]["cases"] == ["ioctl[args[1]=0x12345678a]"]
    # every case the sweep reports, the kernel reproduces
    for r in doc["verdicts"]:
        for case in r["cases"][:3]:
            m = re.fullmatch(r"(\w+)(?:\[args\[(\d)\]=(0x[0-9a-f]+)\])?", case)
            args = [0] * 6
            if m.group(2):
                args[int(m.group(2))] = int(m.group(3), 16)
            got = oracle.kernel_outcome([raw], X86.syscall_number(m.group(1)), args)
            assert got == oracle.predict([r["ret"]]), case


def test_sweep_text_and_coverage(tmp_path, capsys):
    p = tmp_path / "dead.asm"
    p.write_text("A = sys_number\nif (A == execve) goto deny\ngoto ok\nA = 0x1\n"
                 "ok: return ALLOW\ndeny: return ERRNO(1)\n")
    rc, out, _ = emu(capsys, p, "--sweep")
    assert rc == 0
    assert re.search(r"^ERRNO\(1\)\s+1  execve$", out, re.M)
    assert f"coverage {p}: 5/6 instructions (83.3%); never executed: 0003" in out


BAD = [
    (["{f}", "nosuchcall"], "unknown syscall 'nosuchcall' on x86_64 (and no filter file "
                            "'nosuchcall')"),
    (["{f}", "read", "1", "2", "3", "4", "5", "6", "7"], "at most 6 arguments, got 7"),
    (["{f}", "read", "12q"], "argument 0 '12q' is not a number"),
    (["{f}", "read", "0x10000000000000000"], "argument 0 0x10000000000000000 does not fit"),
    (["{f}"], "no syscall given (or use --sweep)"),
    (["missing.bpf", "read"], "missing.bpf: no such filter file"),
    (["--sweep", "{f}", "read"], "--sweep takes no syscall"),
    (["--arch", "vax", "{f}", "read"], "unknown architecture 'vax'"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[m[:25] for _, m in BAD])
def test_bad_command_lines(filt, capsys, argv, message):
    rc, out, err = emu(capsys, *[a.format(f=filt) for a in argv])
    assert rc == 2 and out == ""
    assert err.startswith("sysdispatch: ") and message in err and err.count("\n") == 1, err


# --- a policy file alone: the dispatch path through the program table --------------------------

DEMO = REPO / "filters" / "dispatch-demo.toml"


def demo_kernel(nr: int, args) -> oracle.Outcome:
    """What the kernel does with the demo policy exported through libseccomp."""
    from sysdispatch.policy import kernel
    from sysdispatch.policy.parse import load
    return oracle.kernel_outcome([kernel.export_bpf(load(DEMO))], nr, args)


def test_policy_call_shows_the_dispatch_path(capsys):
    rc, out, _ = emu(capsys, DEMO, "openat", 0, 0, "0x40")   # O_CREAT in args[2]
    assert rc == 0
    assert out.splitlines() == [
        "openat(0, 0, 0x40, 0, 0, 0)",
        "  syscall_entry -> tail_call syscalls[257] -> openat_rules -> return ERRNO(13)",
        "  tail calls: 1",
        "  verdict: ERRNO(13)"]
    # the same call without O_CREAT passes the rule; constant names work as arguments
    rc, out, _ = emu(capsys, DEMO, "openat", 0, 0, "O_RDONLY")
    assert "openat_rules -> return ALLOW" in out and "verdict: ALLOW" in out
    rc, out, _ = emu(capsys, DEMO, "openat", -100, 0, "O_DIRECTORY|O_CLOEXEC")
    assert "verdict: LOG" in out
    # a syscall with no slot falls through the table to the default
    rc, out, _ = emu(capsys, DEMO, "getpid")
    assert out.splitlines()[1:] == ["  syscall_entry -> return ALLOW", "  tail calls: 0",
                                    "  verdict: ALLOW"]


@pytest.mark.parametrize("family,path,tail_calls,verdict", [
    (2, "tail_call families[2] -> allow -> return ALLOW", 2, "ALLOW"),        # AF_INET
    (10, "tail_call families[10] -> log -> return LOG", 2, "LOG"),            # AF_INET6
    (99, "socket_by_family -> return ERRNO(97)", 1, "ERRNO(97)"),             # empty: default
])
def test_policy_nested_table(capsys, family, path, tail_calls, verdict):
    rc, out, _ = emu(capsys, DEMO, "socket", family, 1, 0)
    lines = out.splitlines()
    assert lines[1].startswith("  syscall_entry -> tail_call syscalls[41] -> socket_by_family")
    assert lines[1].endswith(path)
    assert lines[2:] == [f"  tail calls: {tail_calls}", f"  verdict: {verdict}"]


def test_policy_json_agrees_with_the_kernel(capsys):
    need_root()
    rc, out, _ = emu(capsys, DEMO, "--json", "openat", 0, 0, "O_CREAT")
    doc = json.loads(out)
    assert doc["path"] == ["syscall_entry", "tail_call syscalls[257]", "openat_rules"]
    assert (doc["nr"], doc["args"][2], doc["tail_calls"]) == (257, 0x40, 1)
    assert (doc["handler"], doc["verdict"]) == ("openat_rules", "ERRNO(13)")
    assert demo_kernel(doc["nr"], doc["args"]) == oracle.predict([doc["ret"]])
    doc = json.loads(emu(capsys, DEMO, "socket", 2, 1, 0, "--json")[1])
    assert doc["tail_calls"] == 2 and doc["verdict"] == "ALLOW"
    assert demo_kernel(doc["nr"], doc["args"]) == oracle.Outcome("allow")


def test_policy_sweep(capsys):
    rc, out, _ = emu(capsys, DEMO, "--sweep")
    assert rc == 0
    lines = out.splitlines()
    # openat decides by its arguments: one line per verdict, with arguments that give it
    openat = [ln for ln in lines if ln.split()[1:2] == ["openat"]]
    assert {ln.split()[2] for ln in openat} == {"ALLOW", "ERRNO(13)", "LOG"}
    assert "handlers reached: 5/5" in lines
    rows = json.loads(emu(capsys, DEMO, "--sweep", "--json")[1])
    assert lines[-1].startswith(f"{len(rows)} calls: ")
    socket = {r["verdict"] for r in rows if r["syscall"] == "socket"}
    assert socket == {"ALLOW", "LOG", "ERRNO(97)"}
    # another architecture than the policy's: every call is bad_arch
    rc, out, _ = emu(capsys, DEMO, "--sweep", "--arch", "i386")
    last = out.splitlines()[-1].split()
    assert last[1:3] == ["calls:", "KILL_PROCESS"] and last[0] == last[3]


def test_policy_stacked_with_a_filter_is_one_more_filter(filt, capsys):
    rc, out, _ = emu(capsys, filt, DEMO, "openat", 0, 0, 4)
    assert f"# filter 1: {DEMO} (" in out and "policy)" in out
    assert "verdict: ALLOW (from filter 1)" in out   # the newer filter wins a tie
    rc, out, _ = emu(capsys, filt, DEMO, "kill", 1, 9)
    assert "verdict: ERRNO(1) (from filter 1)" in out


POLICY_BAD = [
    (["openat", 0, 0, "O_NOPE"], "unknown constant 'O_NOPE'"),
    (["nosuchcall"], "unknown syscall 'nosuchcall' on x86_64"),
    (["openat", "0x10000000000000000"], "argument 0 0x10000000000000000 does not fit"),
    (["read", 1, 2, 3, 4, 5, 6, 7], "at most 6 arguments, got 7"),
    (["--sweep", "read"], "--sweep takes no syscall"),
    ([], "no syscall given"),
]


@pytest.mark.parametrize("argv,message", POLICY_BAD, ids=[m[:25] for _, m in POLICY_BAD])
def test_policy_bad_command_lines(capsys, argv, message):
    rc, out, err = emu(capsys, DEMO, *argv)
    assert rc == 2 and out == ""
    assert err.startswith("sysdispatch: ") and message in err and err.count("\n") == 1, err
