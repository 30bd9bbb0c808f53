"""`sysdispatch filter disasm` / `filter asm`, and bad filter files: one line naming the file
and pc, exit status 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sysdispatch.cli import main
from sysdispatch.vm import cbpf
from sysdispatch.vm.cbpf import OPS, CInsn

from classic_samples import FILTER_TEXT

ALLOW = CInsn(cbpf.RET, 0, 0, 0x7FFF0000)
LD_NR = CInsn(0x20, 0, 0, 0)

TEXT = FILTER_TEXT


def test_asm_then_disasm_then_asm_is_stable(tmp_path, capsys):
    (tmp_path / "f.asm").write_text(TEXT)
    assert main(["filter", "asm", str(tmp_path / "f.asm"), "-o", str(tmp_path / "f.bpf")]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'f.bpf'}: 10 instructions")
    raw = (tmp_path / "f.bpf").read_bytes()
    assert main(["filter", "disasm", str(tmp_path / "f.bpf")]) == 0
    text = capsys.readouterr().out
    assert " 0006: 0x45 0x01 0x00 0x00000003  if (A & 0x3) goto 0008" in text
    assert " 0003: 0x15 0x05 0x00 0x00000065  if (A == ptrace) goto 0009" in text
    (tmp_path / "g.asm").write_text(text)
    assert main(["filter", "asm", str(tmp_path / "g.asm"), "-o", str(tmp_path / "g.bpf")]) == 0
    assert (tmp_path / "g.bpf").read_bytes() == raw
    assert main(["filter", "disasm", "--arch", "i386", "--no-raw", str(tmp_path / "f.bpf")]) == 0
    out = capsys.readouterr().out
    # the path tested for x86_64, so its names are x86_64's whatever --arch says
    assert ".arch i386" in out and " 0003: if (A == ptrace) goto 0009" in out


def code(kind, op=""):
    return next(c for c, o in OPS.items() if o.kind == kind and o.op == op and not o.reg)


BAD_FILES = {
    "partial": (cbpf.encode([LD_NR, ALLOW]) + b"\x06\x00\x00",
                "{f}: pc 2: 19 bytes is not a whole number of 8-byte sock_filter instructions"),
    "seccomp refuses mod": (cbpf.encode([CInsn(code("alu", "mod"), 0, 0, 3), ALLOW]),
                            "{f}: pc 0: 'mod k' is not allowed in seccomp filters"),
    "backward jump": (cbpf.encode([LD_NR, CInsn(code("ja", "ja"), 0, 0, 0xFFFFFFFE), ALLOW]),
                      "{f}: pc 1: backward jump (offset -2): classic BPF jumps only forward"),
    "jump out of range": (cbpf.encode([LD_NR, CInsn(code("jcc", "jeq"), 0, 9, 1), ALLOW]),
                          "{f}: pc 1: jf 9 jumps to 11, past the end (3 instructions)"),
    "too long": (cbpf.encode([LD_NR] * 4096 + [ALLOW]),
                 "{f}: pc 4096: filter has 4097 instructions, more than the kernel's limit"),
    "unaligned load": (cbpf.encode([CInsn(0x20, 0, 0, 6), ALLOW]),
                       "{f}: pc 0: ld [6] is not 4-byte aligned"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_filter_files_give_one_line_and_status_2(name, tmp_path, capsys):
    raw, message = BAD_FILES[name]
    f = tmp_path / "bad.bpf"
    f.write_bytes(raw)
    for argv in (["filter", "disasm", str(f)], ["emu", str(f), "read"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"sysdispatch: {message.format(f=f)}"), err
        assert err.count("\n") == 1, err


def test_bad_text_gives_file_line_col(tmp_path, capsys):
    f = tmp_path / "bad.asm"
    f.write_text("A = sys_number\nif (A == nosuch) goto 3\nreturn ALLOW\nreturn ALLOW\n")
    assert main(["filter", "asm", str(f), "-o", str(tmp_path / "out.bpf")]) == 2
    assert capsys.readouterr().err == \
        f"sysdispatch: {f}:2:10: unknown syscall 'nosuch' on x86_64\n"
    assert not (tmp_path / "out.bpf").exists()


def test_no_traceback_from_the_real_command_line(tmp_path):
    f = tmp_path / "bad.bpf"
    f.write_bytes(b"\x00" * 13)
    r = subprocess.run([sys.executable, "-m", "sysdispatch", "filter", "disasm", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(f"sysdispatch: {f}: pc 1: 13 bytes") and r.stderr.count("\n") == 1
