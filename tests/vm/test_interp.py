"""The interpreter's machine: ctx and memory, faults, bpf-to-bpf frames, budget, bad input."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sysdispatch.errors import EncodingError, SysdispatchError, VmError
from sysdispatch.vm import isa
from sysdispatch.vm.asm import assemble
from sysdispatch.vm.interp import RunResult, compile_program, run
from sysdispatch.vm.isa import FP, MAX_CALL_FRAMES, STACK_SIZE, Insn, lddw, make
from sysdispatch.vm.memory import CTX_BASE, STACK_STRIDE
from sysdispatch.vm.program import SECCOMP, Program

U64 = (1 << 64) - 1


def mov(dst, imm):
    return make("mov", dst, imm=imm, reg=False)


def prog(*insns, **kw) -> Program:
    flat = []
    for i in insns:
        flat.extend(i if isinstance(i, (tuple, list)) else (i,))
    return Program.load(flat, **kw)


EXIT = make("exit")


# --- results, ctx and memory -------------------------------------------------------------------

def test_result_counts_steps_and_names_the_program():
    p = prog(mov(0, 1), mov(1, 2), make("add", 0, 1, reg=True), EXIT, name="adder")
    res = run(p)
    assert isinstance(res, RunResult)
    assert (res.r0, res.steps, res.chain, res.tail_calls) == (3, 4, (p,), 0)
    assert "adder" in repr(res)


def test_generic_program_gets_address_and_length_of_its_memory():
    p = prog(make("mov", 0, 2, reg=True), make("stxdw", 1, 1, off=0), EXIT)
    mem = bytearray(24)
    assert run(p, mem=mem).r0 == 24
    # the bytearray is the memory itself: the program's store is visible, holding r1
    assert int.from_bytes(mem[:8], "little") == CTX_BASE
    data = bytes(24)
    run(p, ctx=data)
    assert data == bytes(24)  # bytes are copied, never written


def test_no_memory_means_null_r1_and_zero_r2():
    assert run(prog(make("mov", 0, 1, reg=True), make("add", 0, 2, reg=True), EXIT)).r0 == 0
    with pytest.raises(VmError, match=r"pc 0: read of 1 bytes at 0x0: null pointer"):
        run(prog(make("ldxb", 0, 1), EXIT))


def test_both_ctx_and_mem_is_refused():
    with pytest.raises(VmError, match="give ctx or mem, not both"):
        run(prog(mov(0, 0), EXIT), ctx=b"a", mem=b"b")


def test_seccomp_ctx_is_64_read_only_bytes():
    data = bytes(range(64))
    p = prog(make("ldxdw", 0, 1, off=56), EXIT, prog_type=SECCOMP)
    assert run(p, data).r0 == int.from_bytes(data[56:], "little")
    with pytest.raises(VmError, match=r"pc 0: read of 8 bytes at 0x[0-9a-f]+ outside seccomp ctx"):
        run(prog(make("ldxdw", 0, 1, off=57), EXIT, prog_type=SECCOMP), data)
    with pytest.raises(VmError, match=r"pc 0: write of 4 bytes at .* into read-only seccomp ctx"):
        run(prog(make("stw", 1, off=0, imm=1), mov(0, 0), EXIT, prog_type=SECCOMP), data)
    with pytest.raises(VmError, match="ctx is 64 bytes, got 10"):
        run(p, bytes(10))
    with pytest.raises(VmError, match="not caller memory"):
        run(p, mem=bytes(64))


def test_ctx_may_be_a_record_with_pack():
    class Record:
        def pack(self):
            return (7).to_bytes(4, "little") + bytes(60)
    assert run(prog(make("ldxw", 0, 1), EXIT, prog_type=SECCOMP), Record()).r0 == 7


# --- faults name the pc, never a Python error ---------------------------------------------------

FAULTS = [
    ("one byte past the end", [make("ldxw", 0, 1, off=5)], 8,
     r"pc 0: read of 4 bytes at 0x[0-9a-f]+ outside mem .*offset 5"),
    ("before the start", [make("ldxb", 0, 1, off=-1)], 8, r"pc 0: read of 1 bytes .* offset -1"),
    ("below the stack", [make("ldxdw", 0, FP, off=-STACK_SIZE - 8)], 0,
     r"pc 0: read of 8 bytes .* outside stack of frame 0"),
    ("at the stack top", [make("stdw", FP, off=0, imm=1)], 0,
     r"pc 0: write of 8 bytes .* outside stack of frame 0"),
    ("garbage pointer", [*lddw(2, 0x1234_5678_9ABC), make("ldxb", 0, 2)], 0,
     r"pc 2: read of 1 bytes at 0x123456789abc outside any region"),
    ("wrapped pointer", [mov(2, -1), make("ldxb", 0, 2, off=1)], 0,
     r"pc 1: read of 1 bytes at 0x10000000000000000|pc 1: read of 1 bytes at 0x0"),
    ("atomic outside", [mov(2, 1), make("lock_add", 1, 2, off=8)], 8,
     r"pc 1: write of 8 bytes .* outside mem"),
]


@pytest.mark.parametrize("insns, memsize, message", [pytest.param(i, m, e, id=n)
                                                     for n, i, m, e in FAULTS])
def test_faults_are_vm_errors_naming_the_pc(insns, memsize, message):
    p = prog(*insns, mov(0, 0), EXIT)
    with pytest.raises(VmError) as info:
        run(p, mem=bytearray(memsize) if memsize else None)
    text = str(info.value)
    assert re.search(message, text), text
    assert "\n" not in text


def test_faults_in_assembled_programs_name_the_source_line():
    p = assemble("mov %r0, 0\nldxw %r0, [%r1+100]\nexit\n", filename="t.s")
    with pytest.raises(VmError) as info:
        run(p, mem=bytes(4))
    assert str(info.value).startswith("t.s:2:")
    assert "pc 1" in str(info.value)


def test_instruction_budget():
    loop = prog(mov(0, 0), make("add", 0, imm=1, reg=False), make("ja", off=-2), EXIT)
    with pytest.raises(VmError, match=r"pc \d: instruction budget of 1000 steps used up"):
        run(loop, max_steps=1000)
    counted = prog(mov(0, 0), make("add", 0, imm=1, reg=False),
                   make("jne", 0, off=-2, imm=10, reg=False), EXIT)
    res = run(counted, max_steps=1 + 2 * 10 + 1)  # exactly enough
    assert (res.r0, res.steps) == (10, 22)
    with pytest.raises(VmError, match="budget of 21"):
        run(counted, max_steps=21)


def test_running_past_the_last_instruction():
    with pytest.raises(VmError, match=r"pc 2: execution ran past the last instruction"):
        run(prog(mov(0, 0), mov(1, 1)))


@pytest.mark.parametrize("insn, message", [
    (Insn(0xB7, 11, 0, 0, 1), "invalid register r11"),             # mov r11, 1
    (Insn(0xBF, 0, 12, 0, 0), "invalid register r12"),             # mov r0, r12
    (Insn(0x61, 0, 15, 0, 0), "invalid register r15"),             # ldxw r0, [r15]
])
def test_programs_no_engine_can_run_are_refused_naming_the_pc(insn, message):
    # registers above r10 are refused by the loader already
    with pytest.raises(EncodingError, match=rf"pc 1: .*{message}"):
        run(Program.load([mov(0, 0), insn, EXIT]))


@pytest.mark.parametrize("insn", [
    Insn(0xB7, FP, 0, 0, 1),            # mov r10, 1
    Insn(0x61, FP, 1, 0, 0),            # ldxw r10, [r1]
    Insn(0xDB, FP, FP, -8, 0xE1),       # xchg into r10
    Insn(0xBF, FP, 1, 8, 0),            # movsx8 r10, r1
])
def test_a_write_to_r10_faults_when_it_runs_not_before(insn):
    with pytest.raises(VmError, match=r"pc 1: '\w+' writes r10, the read-only frame pointer"):
        run(Program.load([mov(0, 0), insn, EXIT]), mem=bytearray(8))
    # on a path no run takes (the verifier accepts such a program, as the kernel does) it is
    # never reached: the program runs
    dead = Program.load([mov(0, 0), make("jeq", 0, off=1, imm=0, reg=False), insn, EXIT])
    assert run(dead, mem=bytearray(8)).r0 == 0


def test_compiled_code_is_cached_on_the_program():
    p = prog(mov(0, 1), EXIT)
    assert compile_program(p) is compile_program(p)


# --- bpf-to-bpf calls ---------------------------------------------------------------------------

def test_local_call_frames():
    # main: r6..r9 = 6..9, stack[-8] = 0x55, r1..r5 = 1..5; call f; check everything survived
    # f: sums r1..r5 into r0, clobbers r6..r9, writes its own stack, returns its r10 in memory
    main = [
        *[mov(i, i) for i in range(1, 10)],
        make("stdw", FP, off=-8, imm=0x55),
        make("call_local", imm=10),                     # pc 10 -> f at pc 21
        make("ldxdw", 1, FP, off=-8),
        make("jne", 1, off=6, imm=0x55, reg=False),     # caller's stack untouched
        make("jne", 6, off=5, imm=6, reg=False),
        make("jne", 7, off=4, imm=7, reg=False),
        make("jne", 8, off=3, imm=8, reg=False),
        make("jne", 9, off=2, imm=9, reg=False),
        make("jne", 0, off=1, imm=15, reg=False),
        EXIT,
        mov(0, -1), EXIT,
    ]
    f = [
        mov(0, 0), *[make("add", 0, i, reg=True) for i in range(1, 6)],
        *[mov(i, 0) for i in range(6, 10)],
        make("stdw", FP, off=-8, imm=0x77),
        EXIT,
    ]
    p = prog(*main, *f)
    assert len(main) == 21
    assert run(p).r0 == 15


def test_callee_gets_its_own_stack():
    # f returns its r10; main subtracts its own: the frames' stacks are distinct regions
    p = prog(make("call_local", imm=2), make("sub", 0, FP, reg=True), EXIT,
             make("mov", 0, FP, reg=True), EXIT)
    assert run(p).r0 == STACK_STRIDE


def recursion(n: int) -> Program:
    """r1 = n; call f. f(n): if n == 0 return 0; return f(n - 1) + 1."""
    return prog(
        mov(1, n), make("call_local", imm=1), EXIT,
        make("jne", 1, off=2, imm=0, reg=False), mov(0, 0), EXIT,   # pc 3: f
        make("sub", 1, imm=1, reg=False),
        make("call_local", imm=-5),                                 # pc 7: f(n - 1)
        make("add", 0, imm=1, reg=False),
        EXIT,
    )


def test_call_depth_is_limited_to_eight_frames():
    # main plus f(n), ..., f(0): n + 2 frames
    assert run(recursion(MAX_CALL_FRAMES - 2)).r0 == MAX_CALL_FRAMES - 2
    with pytest.raises(VmError, match=r"pc 7: call nested deeper than 8 frames"):
        run(recursion(MAX_CALL_FRAMES - 1))


def test_callx_calls_the_helper_whose_id_is_in_the_register():
    from sysdispatch.vm.helpers import Host
    host = Host.fixed(pid=5, tgid=6)
    p = prog(mov(2, 14), make("callx", 2), EXIT)  # 14 = get_current_pid_tgid
    assert run(p, host=host).r0 == (6 << 32) | 5
    with pytest.raises(VmError, match=r"pc 1: callx: r2 = 999 is not a helper id"):
        run(prog(mov(2, 999), make("callx", 2), EXIT))


# --- robustness: whatever the bytes, only one-line SysdispatchErrors ----------------------------

slot = st.builds(Insn, code=st.sampled_from(sorted({s.code for s in isa.SPECS}) + [0x00, 0xFF]),
                 dst=st.integers(0, 15), src=st.integers(0, 15),
                 off=st.integers(-4, 4) | st.integers(-0x8000, 0x7FFF),
                 imm=st.integers(-8, 8) | st.integers(-0x8000_0000, 0x7FFF_FFFF))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(insns=st.lists(slot, min_size=1, max_size=12), mem=st.binary(max_size=16))
def test_random_programs_raise_only_sysdispatch_errors(insns, mem):
    try:
        p = Program.load(insns + [EXIT])
        run(p, mem=bytearray(mem), max_steps=200)
    except SysdispatchError as exc:
        assert "\n" not in str(exc)
