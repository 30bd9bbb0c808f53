"""Classic BPF: decoding, bpf_check_classic (asked of the kernel through SO_ATTACH_FILTER), and the
direct interpreter's semantics."""

from __future__ import annotations

import ctypes
import errno
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysdispatch.errors import EncodingError, VerifierError, VmError
from sysdispatch.vm import cbpf
from sysdispatch.vm.cbpf import OPS, CInsn

SO_ATTACH_FILTER = 26  # include/uapi/asm-generic/socket.h


def code(kind: str, op: str = "", reg: bool = False, size: int = 4) -> int:
    for c, o in OPS.items():
        if o.kind == kind and o.op == op and o.reg == reg and (o.size == size or kind not in
                                                                  ("ld_abs", "ld_ind")):
            return c
    raise KeyError((kind, op, reg, size))


LD_IMM, LDX_IMM = code("ld_imm"), code("ldx_imm")
LD_MEM, LDX_MEM, ST, STX = code("ld_mem"), code("ldx_mem"), code("st"), code("stx")
RET_K, RET_A = code("ret"), code("ret", reg=True)
JA, TAX, TXA, NEG = code("ja", "ja"), code("tax"), code("txa"), code("neg", "neg")
LD_W, LD_H, LD_B = (code("ld_abs", size=s) for s in (4, 2, 1))
LD_IND_B, MSH, LD_LEN = code("ld_ind", size=1), code("ldx_msh"), code("ld_len")


def alu(op: str, reg: bool = False) -> int:
    return code("alu", op, reg)


def jmp(op: str, reg: bool = False) -> int:
    return code("jcc", op, reg)


def kernel_socket_check(insns: list[CInsn]) -> int:
    """0 if the kernel attaches ``insns`` as a socket filter, else its errno. Socket filters go
    through bpf_check_classic and nothing seccomp-specific."""
    raw = cbpf.encode(insns)
    buf = ctypes.create_string_buffer(raw, max(len(raw), 1))
    fprog = struct.pack("=H6xQ", len(insns), ctypes.addressof(buf))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        except OSError as exc:
            return exc.errno
    return 0


def our_check(insns: list[CInsn]) -> int:
    try:
        cbpf.check(insns)
    except VerifierError:
        return errno.EINVAL
    return 0


# --- decoding ------------------------------------------------------------------------------------


def test_decode_round_trips_and_refuses_partial_instructions():
    insns = [CInsn(LD_W, 0, 0, 4), CInsn(jmp("jeq"), 0, 1, 0xC000003E), CInsn(RET_K, 0, 0, 0)]
    raw = cbpf.encode(insns)
    assert cbpf.decode(raw) == tuple(insns)
    with pytest.raises(EncodingError) as exc:
        cbpf.decode(raw + b"\x06\x00", filename="f.bpf")
    msg = str(exc.value)
    assert msg.startswith("f.bpf: pc 3: ") and "26 bytes" in msg and "\n" not in msg


# --- bpf_check_classic, one rule at a time (each also asked of the kernel) ----------------------

OK = CInsn(RET_K, 0, 0, 0x7FFF0000)

BAD = {
    "empty": ([], "no instructions"),
    "unknown opcode": ([CInsn(0xC4), OK], "opcode 0xc4"),
    "ebpf-only opcode": ([CInsn(0xBF, 0, 0, 1), OK], "opcode 0xbf"),
    "div by constant 0": ([CInsn(alu("div"), 0, 0, 0), OK], "div by constant 0"),
    "mod by constant 0": ([CInsn(alu("mod"), 0, 0, 0), OK], "mod by constant 0"),
    "shift by 32": ([CInsn(alu("lsh"), 0, 0, 32), OK], "lsh by constant 32"),
    "scratch index 16": ([CInsn(ST, 0, 0, 16), OK], "M[16]"),
    "ja past the end": ([CInsn(JA, 0, 0, 1), OK], "out of range"),
    "ja backwards": ([OK, CInsn(JA, 0, 0, 0xFFFFFFFF), OK], "backward jump"),
    "jt past the end": ([CInsn(jmp("jeq"), 1, 0, 0), OK], "jt 1 jumps to 2"),
    "jf past the end": ([CInsn(jmp("jgt"), 0, 5, 0), OK], "jf 5 jumps to 6"),
    "no final return": ([CInsn(LD_IMM, 0, 0, 1)], "last instruction must be a return"),
    "read before write": ([CInsn(LD_MEM, 0, 0, 3), OK], "M[3] may be read"),
    # Unreachable code is still checked straight through: the kernel carries the state across
    # a return.
    "unreachable read after ret": ([OK, CInsn(LD_MEM, 0, 0, 1), OK], "M[1] may be read"),
    # M[0] is written on the jt path only: the join at pc 3 may read it unwritten.
    "written on one path": ([CInsn(jmp("jeq"), 0, 1, 7), CInsn(ST, 0, 0, 0),
                             CInsn(LDX_MEM, 0, 0, 0), OK], "M[0] may be read"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_check_refuses_like_the_kernel(name):
    insns, words = BAD[name]
    with pytest.raises(VerifierError) as exc:
        cbpf.check(insns)
    assert words in str(exc.value)
    assert exc.value.pc is not None or name == "empty"
    assert kernel_socket_check(insns) == errno.EINVAL


def test_check_refuses_more_than_4096_instructions():
    insns = [CInsn(LD_IMM, 0, 0, 0)] * 4096 + [OK]
    with pytest.raises(VerifierError, match="more than the kernel's limit of 4096"):
        cbpf.check(insns)
    assert kernel_socket_check(insns) == errno.EINVAL


GOOD = {
    "written on both paths": [CInsn(jmp("jeq"), 0, 2, 7), CInsn(ST, 0, 0, 0), CInsn(JA, 0, 0, 1),
                              CInsn(STX, 0, 0, 0), CInsn(LDX_MEM, 0, 0, 0), OK],
    "unreachable code after ret": [CInsn(ST, 0, 0, 1), OK, CInsn(LD_MEM, 0, 0, 1), OK],
    "every packet load": [CInsn(LD_H, 0, 0, 2), CInsn(LD_B, 0, 0, 1), CInsn(LD_IND_B, 0, 0, 0),
                          CInsn(MSH, 0, 0, 0), CInsn(LD_LEN), CInsn(RET_A)],
    "shift by 31, div by 1": [CInsn(alu("rsh"), 0, 0, 31), CInsn(alu("div"), 0, 0, 1), OK],
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_check_accepts_like_the_kernel(name):
    cbpf.check(GOOD[name])
    assert kernel_socket_check(GOOD[name]) == 0


@st.composite
def rough_programs(draw):
    """Short programs of mostly valid forms with small, often out-of-range fields: exercises
    every rule, the scratch-memory path analysis above all."""
    n = draw(st.integers(1, 10))
    codes = sorted(OPS) + [0xC4, 0x07]
    out = []
    for pc in range(n):
        c = draw(st.sampled_from(codes))
        o = OPS.get(c)
        if o is not None and o.kind in ("ld_mem", "ldx_mem", "st", "stx"):
            k = draw(st.integers(0, 4) | st.just(16))
        elif o is not None and o.kind == "ld_abs":
            k = draw(st.integers(0, 64))  # far below the ancillary range
        elif o is not None and o.kind == "alu":
            k = draw(st.integers(0, 3) | st.integers(30, 33))
        elif o is not None and o.kind == "ja":
            k = draw(st.integers(0, n) | st.just(0xFFFFFFFF))
        else:
            k = draw(st.integers(0, 0xFFFFFFFF))
        out.append(CInsn(c, draw(st.integers(0, n - pc)), draw(st.integers(0, n - pc)), k))
    if draw(st.booleans()):
        out.append(CInsn(draw(st.sampled_from([RET_K, RET_A])), 0, 0, 0))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rough_programs())
def test_check_agrees_with_the_kernel_on_random_programs(insns):
    assert our_check(insns) == kernel_socket_check(insns), cbpf.encode(insns).hex()


# --- the interpreter -------------------------------------------------------------------------------


def run(insns, ctx=b""):
    cbpf.check(insns)
    return cbpf.run(insns, ctx)


def test_alu_is_32_bit_and_wraps():
    r = run([CInsn(LD_IMM, 0, 0, 0xFFFFFFFF), CInsn(alu("add"), 0, 0, 2), CInsn(RET_A)])
    assert r.ret == 1
    r = run([CInsn(LD_IMM, 0, 0, 0x10000), CInsn(alu("mul"), 0, 0, 0x10000), CInsn(RET_A)])
    assert r.ret == 0
    r = run([CInsn(LD_IMM, 0, 0, 5), CInsn(NEG), CInsn(RET_A)])
    assert r.ret == 0xFFFFFFFB


def test_division_by_x_zero_returns_zero_from_the_program():
    r = run([CInsn(LD_IMM, 0, 0, 9), CInsn(alu("div", True)), CInsn(RET_K, 0, 0, 77)])
    assert (r.ret, r.path) == (0, (0, 1))
    r = run([CInsn(LD_IMM, 0, 0, 9), CInsn(LDX_IMM, 0, 0, 4), CInsn(alu("mod", True)),
             CInsn(RET_A)])
    assert r.ret == 1


def test_shift_by_x_uses_the_low_five_bits():
    # As the converted eBPF (ALU32) executes it: 1 << 33 == 1 << 1.
    r = run([CInsn(LD_IMM, 0, 0, 1), CInsn(LDX_IMM, 0, 0, 33), CInsn(alu("lsh", True)),
             CInsn(RET_A)])
    assert r.ret == 2


def test_jumps_compare_unsigned_and_jset_tests_bits():
    prog = [CInsn(LD_IMM, 0, 0, 0x80000000), CInsn(jmp("jgt"), 0, 1, 1),
            CInsn(RET_K, 0, 0, 1), CInsn(jmp("jset"), 1, 0, 0x80000000), CInsn(RET_K, 0, 0, 2),
            CInsn(RET_K, 0, 0, 3)]
    r = run(prog)
    assert (r.ret, r.path) == (1, (0, 1, 2))


def test_scratch_memory_and_transfers():
    # A=5 M15=5 X=5 A=10 M2=10 A=5 X=10 A=-5 M4=10 M5=-5 A=10 X=-5 A=15
    r = run([CInsn(LD_IMM, 0, 0, 5), CInsn(ST, 0, 0, 15), CInsn(TAX), CInsn(alu("add", True)),
             CInsn(ST, 0, 0, 2), CInsn(LD_MEM, 0, 0, 15), CInsn(LDX_MEM, 0, 0, 2),
             CInsn(alu("sub", True)), CInsn(STX, 0, 0, 4), CInsn(ST, 0, 0, 5),
             CInsn(LD_MEM, 0, 0, 4), CInsn(LDX_MEM, 0, 0, 5), CInsn(alu("sub", True)),
             CInsn(RET_A)])
    assert r.ret == 15
    r = run([CInsn(LDX_IMM, 0, 0, 3), CInsn(TXA), CInsn(RET_A)])
    assert r.ret == 3


def test_packet_loads_are_big_endian_and_out_of_range_returns_zero():
    pkt = bytes(range(1, 17))
    assert run([CInsn(LD_W, 0, 0, 0), CInsn(RET_A)], pkt).ret == 0x01020304
    assert run([CInsn(LD_H, 0, 0, 14), CInsn(RET_A)], pkt).ret == 0x0F10
    assert run([CInsn(LD_H, 0, 0, 15), CInsn(RET_K, 0, 0, 9)], pkt).ret == 0
    assert run([CInsn(LDX_IMM, 0, 0, 3), CInsn(LD_IND_B, 0, 0, 2), CInsn(RET_A)], pkt).ret == 6
    assert run([CInsn(MSH, 0, 0, 0), CInsn(TXA), CInsn(RET_A)], pkt).ret == 4 * (1 & 0xF)
    assert run([CInsn(LD_LEN), CInsn(RET_A)], pkt).ret == 16
    r = run([CInsn(LD_B, 0, 0, 3), CInsn(RET_A)], pkt)
    assert r.loads == frozenset({3})


def test_the_internal_context_load_reads_native_words():
    ctx = struct.pack("<iI", 59, 0xC000003E) + bytes(56)
    r = cbpf.run([CInsn(cbpf.LDX_ABS_W, 0, 0, 4), CInsn(RET_A)], ctx)
    assert r.ret == 0xC000003E and r.loads == frozenset({4})
    with pytest.raises(VmError, match="past the 64-byte context"):
        cbpf.run([CInsn(cbpf.LDX_ABS_W, 0, 0, 64), CInsn(RET_A)], ctx)
