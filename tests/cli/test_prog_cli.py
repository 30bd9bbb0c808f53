"""``sysdispatch prog``: run/asm/disasm/test, and bad input as one line with exit status 2.

Most cases call the CLI's main() in-process; the bad-input cases run the real command
(``python3 -m sysdispatch``) in a subprocess, as a user would, to see stderr and the status.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sysdispatch.cli import main
from sysdispatch.vm.isa import Insn, encode_program, lddw, make

ALLOW = 0x7FFF0000


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sysdispatch", *args], capture_output=True,
                          text=True, timeout=60)


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    p = tmp_path / name
    (p.write_bytes if isinstance(data, bytes) else p.write_text)(data)
    return p


def test_run_assembly_prints_r0_in_hex_and_decimal(tmp_path, capsys):
    src = write(tmp_path, "t.s", "mov %r0, %r2\nadd %r0, 0x100\nexit\n")
    assert main(["prog", "run", str(src), "--mem", "00 01 02"]) == 0
    out = capsys.readouterr().out
    assert "r0 = 0x103 (259)" in out and "steps: 3, tail calls: 0" in out


def test_run_raw_bin_with_json(tmp_path, capsys):
    raw = encode_program([*lddw(0, 0x1_0000_0002), make("exit")])
    src = write(tmp_path, "t.bin", raw)
    assert main(["prog", "run", str(src), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["r0"] == 0x1_0000_0002 and out["r0_hex"] == "0x100000002"
    assert out["chain"] == ["t"] and out["steps"] == 2


def test_run_seccomp_program_decodes_the_action(tmp_path, capsys):
    # ERRNO(args[2] & 0xfff) when nr is openat, else ALLOW
    src = write(tmp_path, "f.s", """
        ldxw %r2, [%r1+0]
        jne %r2, 257, allow
        ldxdw %r0, [%r1+32]
        and %r0, 0xfff
        or %r0, 0x50000
        exit
    allow:
        mov32 %r0, 0x7fff0000
        exit
    """)
    assert main(["prog", "run", str(src), "--type", "seccomp",
                 "--ctx", "nr=openat,arch=x86_64,args=1,2,13"]) == 0
    assert "action: ERRNO(13)" in capsys.readouterr().out
    assert main(["prog", "run", str(src), "--type", "seccomp", "--ctx", "nr=getpid",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["action"] == "ALLOW" and out["r0"] == ALLOW


def test_run_shows_trace_printk_lines(tmp_path, capsys):
    src = write(tmp_path, "p.s", """
        stw [%r10-8], 0x00216968
        mov %r1, %r10
        add %r1, -8
        mov %r2, 4
        call 6
        exit
    """)
    assert main(["prog", "run", str(src)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "trace_printk: hi!" and "r0 = 0x3 (3)" in out


def test_asm_then_disasm_round_trip(tmp_path, capsys):
    src = write(tmp_path, "t.s", "mov %r0, 7\nlsh %r0, 2\nexit\n")
    out_bin = tmp_path / "t.bin"
    assert main(["prog", "asm", str(src), "-o", str(out_bin)]) == 0
    assert out_bin.read_bytes() == encode_program([make("mov", 0, imm=7, reg=False),
                                                   make("lsh", 0, imm=2, reg=False),
                                                   make("exit")])
    capsys.readouterr()
    assert main(["prog", "disasm", str(out_bin)]) == 0
    text = capsys.readouterr().out
    assert "r0 = 7" in text and "r0 <<= 2" in text and "exit" in text
    # and what disasm printed assembles to the same bytes
    again = write(tmp_path, "again.s", text)
    assert main(["prog", "asm", str(again), "-o", str(tmp_path / "again.bin")]) == 0
    assert (tmp_path / "again.bin").read_bytes() == out_bin.read_bytes()


def test_prog_test_summary_and_status(tmp_path, capsys):
    write(tmp_path, "ok.data", "-- asm\nmov %r0, 1\nexit\n-- result\n0x1\n")
    assert main(["prog", "test", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == ["1 passed, 0 failed"]
    write(tmp_path, "bad.data", "-- asm\nmov %r0, 1\nexit\n-- result\n0x2\n")
    assert main(["prog", "test", str(tmp_path), "--engine", "interp"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{tmp_path / 'bad.data'}: r0 = 0x1, expected 0x2", "1 passed, 1 failed"]


@pytest.mark.parametrize("engine", ["interp", "jit", "both"])
def test_prog_test_on_the_suite(conformance_dir, engine):
    """The whole suite on each engine; ``both`` also fails a file whose engines disagree."""
    done = cli("prog", "test", str(conformance_dir / "tests"), "--engine", engine)
    assert done.returncode == 0, done.stdout[-2000:]
    assert done.stdout.splitlines() == ["313 passed, 0 failed"]
    neg = cli("prog", "test", str(conformance_dir / "negative"), "--engine", engine)
    assert neg.returncode == 1 and neg.stdout.splitlines()[-1] == "48 passed, 12 failed"
    assert "Traceback" not in neg.stdout + neg.stderr


def raw(*insns: Insn) -> bytes:
    return encode_program(insns)


EXIT = make("exit")
BAD_INPUT = [
    ("truncated.bin", raw(make("mov", 0, imm=1, reg=False), EXIT)[:-3],
     r"truncated.bin: pc 1: program is 13 bytes, not a multiple of 8"),
    ("unknown.bin", raw(Insn(0x06 | 0xF0, 0, 0, 0, 0), EXIT), r"unknown.bin: pc 0: unknown opcode"),
    ("reserved.bin", raw(Insn(0x95, 1, 0, 0, 0)),
     r"reserved.bin: pc 0: reserved field dst of 'exit'"),
    ("jump.bin", raw(make("ja", off=5), EXIT), r"jump.bin: pc 0: jump out of range"),
    ("lddw.bin", raw(lddw(0, 1)[0]), r"lddw.bin: pc 0: lddw without its second slot"),
    ("into.bin", raw(make("ja", off=1), *lddw(0, 1), EXIT),
     r"into.bin: pc 0: jump into the middle of lddw"),
    ("fault.bin", raw(make("ldxw", 0, 1), EXIT), r"fault.bin: pc 0: read of 4 bytes at 0x0"),
    ("loop.bin", raw(make("ja", off=-1), EXIT), r"pc 0: instruction budget of 50 steps"),
    ("bad.s", b"mov %r0, 1\nfrob %r1\n", r"bad.s:2:1: unknown mnemonic 'frob'"),
]


@pytest.mark.parametrize("name, data, message", BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_one_line_and_status_2(tmp_path, name, data, message):
    import re
    path = write(tmp_path, name, data)
    done = cli("prog", "run", str(path), "--max-steps", "50")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.parametrize("args, message", [
    (["--mem", "zz"], "--mem: not hex bytes"),
    (["--ctx", "nr=1"], "--ctx is for seccomp programs"),
    (["--type", "seccomp", "--ctx", "nr=nosuchcall"], "unknown syscall 'nosuchcall'"),
    (["--type", "seccomp", "--ctx", "nr=1,color=red"], "unknown field 'color'"),
    (["--type", "seccomp", "--ctx", "nr=1,arch=vax"], "unknown architecture 'vax'"),
    (["--type", "seccomp", "--mem", "00"], "--mem is for generic programs"),
])
def test_bad_options_are_one_line(tmp_path, capsys, args, message):
    src = write(tmp_path, "t.s", "mov %r0, 0\nexit\n")
    assert main(["prog", "run", str(src), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1


def test_missing_file_is_one_line(tmp_path, capsys):
    assert main(["prog", "run", str(tmp_path / "nope.s")]) == 2
    assert "nope.s: No such file or directory" in capsys.readouterr().err
