"""Classic -> eBPF conversion (bpf_convert_filter): the shapes the kernel emits, and every
converted program giving the direct classic interpreter's answer on the eBPF machine."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sysdispatch.errors import EncodingError
from sysdispatch.vm import cbpf, interp
from sysdispatch.vm.cbpf import CInsn, LDX_ABS_W
from sysdispatch.vm.isa import make
from sysdispatch.vm.program import SECCOMP

from test_cbpf import (JA, LD_IMM, LD_MEM, LD_W, LDX_IMM, LDX_MEM, NEG, RET_A, RET_K, ST, STX,
                       TAX, TXA, alu, jmp)

PROLOGUE = [make("xor32", 0, 0, reg=True), make("xor32", 7, 7, reg=True), make("mov", 6, 1, reg=True)]


def body(classic):
    conv = cbpf.convert(classic, prog_type=SECCOMP)
    assert list(conv.program.insns[:3]) == PROLOGUE
    return list(conv.program.insns[3:]), conv


def test_ret_k_becomes_mov_and_exit_and_ret_a_exit():
    got, conv = body([CInsn(RET_K, 0, 0, 0x7FFF0000)])
    assert got == [make("mov32", 0, 0, 0, 0x7FFF0000, reg=False), make("exit")]
    got, _ = body([CInsn(RET_A)])
    assert got == [make("exit")]


def test_ctx_loads_scratch_and_transfers():
    got, _ = body([CInsn(LDX_ABS_W, 0, 0, 20), CInsn(ST, 0, 0, 3), CInsn(LDX_MEM, 0, 0, 3),
                   CInsn(STX, 0, 0, 0), CInsn(LD_MEM, 0, 0, 0), CInsn(TAX), CInsn(TXA),
                   CInsn(LDX_IMM, 0, 0, 9), CInsn(RET_A)])
    assert got == [make("ldxw", 0, 6, 20), make("stxw", 10, 0, -16), make("ldxw", 7, 10, -16),
                   make("stxw", 10, 7, -4), make("ldxw", 0, 10, -4), make("mov", 7, 0, reg=True),
                   make("mov", 0, 7, reg=True), make("mov32", 7, 0, 0, 9, reg=False),
                   make("exit")]


def test_division_by_x_gets_the_kernels_zero_guard():
    got, _ = body([CInsn(alu("div", True)), CInsn(RET_A)])
    assert got == [make("mov32", 7, 7, reg=True), make("jne", 7, 0, 2, 0, reg=False),
                   make("xor32", 0, 0, reg=True), make("exit"), make("div32", 0, 7, reg=True),
                   make("exit")]
    got, _ = body([CInsn(alu("mod"), 0, 0, 0x80000001), CInsn(NEG), CInsn(RET_A)])
    assert got == [make("mod32", 0, 0, 0, -0x7FFFFFFF, reg=False), make("neg32", 0), make("exit")]


def test_conditional_jumps_single_inverted_or_split():
    ret = CInsn(RET_K, 0, 0, 1)
    # false branch next: one jump to the true target
    got, conv = body([CInsn(jmp("jeq"), 1, 0, 5), ret, ret])
    assert got[0] == make("jeq", 0, 0, 2, 5, reg=False)  # over ret's two insns
    # true branch next: jeq -> jne, jgt -> jle, jge -> jlt to the false target
    for op, inv in (("jeq", "jne"), ("jgt", "jle"), ("jge", "jlt")):
        got, _ = body([CInsn(jmp(op), 0, 1, 5), ret, ret])
        assert got[0] == make(inv, 0, 0, 2, 5, reg=False)
    # jset has no inverse: jset to the true target, then ja to the false one
    got, _ = body([CInsn(jmp("jset"), 0, 1, 5), ret, ret])
    assert got[:2] == [make("jset", 0, 0, 1, 5, reg=False), make("ja", 0, 0, 2)]
    # both branches elsewhere: jump + ja
    got, _ = body([CInsn(jmp("jgt", True), 1, 2, 0), ret, ret, ret])
    assert got[:2] == [make("jgt", 0, 7, 3, reg=True), make("ja", 0, 0, 4)]


def test_constants_with_the_top_bit_go_through_w2():
    got, _ = body([CInsn(jmp("jeq"), 0, 1, 0xFFFFFFFF), CInsn(RET_K), CInsn(RET_K)])
    assert got[:2] == [make("mov32", 2, 0, 0, -1, reg=False), make("jne", 0, 2, 2, reg=True)]


def test_addrs_map_classic_pcs_to_ebpf():
    classic = [CInsn(alu("div", True)), CInsn(JA, 0, 0, 0), CInsn(RET_A)]
    _, conv = body(classic)
    assert conv.addrs == (3, 8, 9)
    assert [conv.classic_pc(pc) for pc in range(10)] == [-1, -1, -1, 0, 0, 0, 0, 0, 1, 2]


def test_socket_data_loads_cannot_be_converted():
    with pytest.raises(EncodingError, match="pc 1: .*reads socket data"):
        cbpf.convert([CInsn(LD_IMM), CInsn(LD_W, 0, 0, 0), CInsn(RET_A)])


# --- differential: converted on the eBPF machine == direct ----------------------------------------

_ALU_OPS = ["add", "sub", "mul", "div", "mod", "and", "or", "xor", "lsh", "rsh"]
_JMP_OPS = ["jeq", "jgt", "jge", "jset"]
# A small pool shared by constants and context words, so that comparisons often meet equality
# (where jgt/jge and their inverses differ), plus any 32-bit value now and then.
_POOL = [0, 1, 2, 3, 31, 32, 59, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xC000003E]
_K = st.sampled_from(_POOL) | st.sampled_from(_POOL) | st.integers(0, 0xFFFFFFFF)


@st.composite
def programs(draw):
    """Valid programs by construction: M[0..3] written first, forward jumps inside the body,
    nonzero constant divisors, constant shifts < 32; ends in ret A."""
    out = [CInsn(LD_IMM, 0, 0, draw(_K))] + [CInsn(ST, 0, 0, i) for i in range(4)]
    n = draw(st.integers(1, 24))
    end = len(out) + n  # index of the final ret
    for pc in range(len(out), end):
        kind = draw(st.sampled_from(["alu", "alu", "ctx", "ctx", "jcc", "jcc", "ja", "imm", "mem",
                                     "neg", "tax", "txa", "ret"]))
        if kind == "alu":
            op, reg = draw(st.sampled_from(_ALU_OPS)), draw(st.booleans())
            k = 0
            if not reg:
                k = draw(st.integers(0, 31)) if op in ("lsh", "rsh") else draw(_K)
                k = k or (1 if op in ("div", "mod") else 0)
            out.append(CInsn(alu(op, reg), 0, 0, k))
        elif kind == "ctx":
            out.append(CInsn(LDX_ABS_W, 0, 0, 4 * draw(st.integers(0, 15))))
        elif kind == "jcc":
            room = min(end - pc - 1, 255)
            off = st.just(0) | st.integers(0, room)  # jt or jf 0 picks the kernel's special forms
            out.append(CInsn(jmp(draw(st.sampled_from(_JMP_OPS)), draw(st.booleans())),
                             draw(off), draw(off), draw(_K)))
        elif kind == "ja":
            out.append(CInsn(JA, 0, 0, draw(st.integers(0, end - pc - 1))))
        elif kind == "imm":
            out.append(CInsn(draw(st.sampled_from([LD_IMM, LDX_IMM])), 0, 0, draw(_K)))
        elif kind == "mem":
            c = draw(st.sampled_from([LD_MEM, LDX_MEM, ST, STX]))
            out.append(CInsn(c, 0, 0, draw(st.integers(0, 3))))
        elif kind == "ret":
            out.append(CInsn(draw(st.sampled_from([RET_A, RET_K])), 0, 0, draw(_K)))
        else:
            out.append(CInsn({"neg": NEG, "tax": TAX, "txa": TXA}[kind]))
    out.append(CInsn(RET_A))
    return out


def _ctx(seed: int) -> bytes:
    rnd = random.Random(seed)
    return struct.pack("<16I", *(rnd.choice(_POOL + [rnd.getrandbits(32)]) for _ in range(16)))


@settings(max_examples=250, deadline=None)
@given(programs(), st.integers(0, 2**32))
def test_converted_programs_agree_with_the_direct_interpreter(classic, seed):
    ctx = _ctx(seed)
    direct = cbpf.run(classic, ctx)
    conv = cbpf.convert(classic, prog_type=SECCOMP)
    assert interp.run(conv.program, ctx=ctx).r0 == direct.ret


@pytest.mark.parametrize("op", _JMP_OPS)
@pytest.mark.parametrize("reg", [False, True])
def test_every_jump_shape_agrees_at_below_equal_and_above(op, reg):
    """Each jump in each shape the converter distinguishes (false next, true next, neither,
    both next), with constants below and above 2**31, for A just below, at and above K."""
    for jt, jf in ((1, 0), (0, 1), (1, 2), (0, 0)):
        for k in (5, 0x80000005):
            classic = [CInsn(LDX_ABS_W, 0, 0, 0), CInsn(LDX_IMM, 0, 0, k),
                       CInsn(jmp(op, reg), jt, jf, k), CInsn(RET_K, 0, 0, 10),
                       CInsn(RET_K, 0, 0, 11), CInsn(RET_K, 0, 0, 12)]
            conv = cbpf.convert(classic, prog_type=SECCOMP)
            for a in (k - 1, k, k + 1, k ^ 0xFFFFFFFF):
                ctx = struct.pack("<I", a & 0xFFFFFFFF) + bytes(60)
                want = cbpf.run(classic, ctx).ret
                assert interp.run(conv.program, ctx=ctx).r0 == want, (op, reg, jt, jf, k, a)
