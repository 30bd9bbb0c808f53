"""The JIT on its own terms: what it generates, how it caches, tail calls, frames, faults, set-up.

Behaviour equal to the interpreter is checked broadly in test_differential*.py; here each JIT
mechanism gets a direct test: the generated source holds nothing but instruction fields, it is
compiled once per program and shared between programs with equal instructions, tail calls run
in a trampoline (33 deep inside a tight recursion limit), bpf-to-bpf frames, the exact budget,
faults mapped back to pc and source line, and the pooled per-run set-up under threads.
"""

from __future__ import annotations

import errno
import inspect
import random
import sys
import threading

import pytest

from sysdispatch.errors import MapError, SysdispatchError, VmError
from sysdispatch.vm import engine, jit, progen
from sysdispatch.vm.asm import assemble
from sysdispatch.vm.conformance import CONFORMANCE_HELPERS
from sysdispatch.vm.helpers import HELPERS, Helper, Host, Printk
from sysdispatch.vm.isa import (FP, MAX_CALL_FRAMES, MAX_TAIL_CALL_CNT, PSEUDO_MAP_FD, Insn,
                                lddw, make)
from sysdispatch.vm.maps import ArrayMap, ProgArray
from sysdispatch.vm.program import SECCOMP, TAIL_CALL, TRACE_PRINTK, Program

ENGINES = ("interp", "jit")


def mov(dst, imm):
    return make("mov", dst, imm=imm, reg=False)


def both(program, **kw):
    """(interp result, jit result), each a RunResult or the raised error's (type, str, pc)."""
    out = []
    for which in ENGINES:
        try:
            out.append(engine.run(program, engine=which, **kw))
        except SysdispatchError as exc:
            out.append((type(exc).__name__, str(exc), exc.pc))
    return out


# --- generated source ----------------------------------------------------------------------------

def test_names_never_reach_the_generated_source():
    insns = progen.random_program(random.Random(1), length=60)
    evil = Program.load(insns, name='"; import os #')
    plain = Program.load(insns, name="x")
    a, b = jit.compile_program(evil), jit.compile_program(plain)
    assert a.source == b.source
    assert a.compiled.fn.__code__ is b.compiled.fn.__code__  # compiled once, shared
    assert "os" not in a.source.split()


def test_generated_source_has_no_string_literals():
    """Only integers from the instruction fields appear: no quote can be in the source."""
    table = ProgArray(4)
    array = ArrayMap(8, 1)
    sources = [jit.compile_program(Program.load(
        progen.random_program(random.Random(seed), length=80))).source for seed in range(20)]
    sources.append(jit.compile_program(Program.load(
        [*lddw(1, 1, PSEUDO_MAP_FD), *lddw(2, 0, PSEUDO_MAP_FD), mov(3, 0),
         make("call", imm=TAIL_CALL), *lddw(4, 1, 2), make("call", imm=TRACE_PRINTK),
         make("callx", 3), make("exit")], maps=[table, array])).source)
    for src in sources:
        assert "'" not in src and '"' not in src


def test_map_addresses_are_bound_not_written_into_the_source():
    a, b = ArrayMap(8, 1, name="a"), ArrayMap(8, 1, name="b")
    insns = [*lddw(0, 0, PSEUDO_MAP_FD), make("exit")]
    pa, pb = Program.load(insns, maps=[a]), Program.load(insns, maps=[b])
    assert jit.compile_program(pa).source == jit.compile_program(pb).source
    assert engine.run(pa, engine="jit").r0 == a.addr
    assert engine.run(pb, engine="jit").r0 == b.addr


def test_compiled_once_per_program_and_table():
    p = Program.load(progen.random_program(random.Random(5), length=30))
    first = jit.compile_program(p)
    assert jit.compile_program(p).compiled is first.compiled
    engine.run(p, engine="jit")
    assert jit.compile_program(p).compiled is first.compiled
    # another helper table binds other helpers: compiled again, for that table
    assert jit.compile_program(p, CONFORMANCE_HELPERS).compiled is not first.compiled


def test_single_predecessor_blocks_are_inline_and_joins_are_dispatched():
    """if/else diamonds: both arms inline under the test, the join point a root."""
    join = [make("add", 0, imm=10, reg=False), make("mul", 0, imm=3, reg=False),
            make("xor", 0, imm=5, reg=False), make("sub", 0, imm=1, reg=False),
            make("lsh", 0, imm=2, reg=False), make("exit")]  # too long to copy to each arm
    p = Program.load([make("ldxb", 1, 1, off=0), mov(0, 0),
                      make("jeq", 1, imm=0, off=2, reg=False), mov(0, 1), make("ja", off=1),
                      mov(0, 2), *join])
    gen = jit.compile_program(p).compiled.generated
    assert gen.roots == (0, 6)  # the entry and the join; the arms are inline
    for mem in (b"\0", b"\1"):
        a, b = both(p, mem=mem)
        assert a == b
    many = next(p for seed in range(40)
                if len((p := Program.load(progen.random_program(random.Random(seed),
                                                                length=150))).insns) > 150
                and len(jit.compile_program(p).compiled.generated.roots) > 8)
    assert "if blk < " in jit.compile_program(many).source  # the binary dispatch tree
    a, b = both(many)
    assert a == b


def test_deeply_nested_branches_stay_within_pythons_indentation_limit():
    """200 nested forward branches: inlining stops at a depth limit and dispatches instead."""
    n = 200
    insns = [make("ldxdw", 1, 1, off=0), mov(0, 0)]
    for i in range(n):  # if r1 > i goto next test (inline, one level deeper) else return i
        insns += [make("jgt", 1, imm=i, off=2, reg=False), mov(0, i), make("exit")]
    insns += [mov(0, -1), make("exit")]
    p = Program.load(insns)
    assert "blk = " in jit.compile_program(p).source  # some branches had to be dispatched
    for value in (0, 57, 199, 500):
        a, b = both(p, mem=value.to_bytes(8, "little"))
        assert a == b and b.r0 == (value if value < n else (1 << 64) - 1)


def test_a_thousand_tests_in_a_row():
    """A classic filter's shape: a long chain of 'if nr == K goto verdict' falling from one
    test to the next, the verdicts shared. Written without recursion per block."""
    n = 1000
    insns = [make("ldxw", 1, 1, off=0)]
    for i in range(n):  # even values -> verdict A, odd -> verdict B; both shared by all tests
        insns.append(make("jeq", 1, imm=i, off=n - i + 1 + (i % 2) * 2, reg=False))
    insns += [mov(0, -1), make("exit"), mov(0, 100), make("exit"), mov(0, 200), make("exit")]
    p = Program.load(insns)
    for value in (0, 1, 998, 999, 5000):
        a, b = both(p, mem=value.to_bytes(4, "little"))
        assert a == b and b.r0 == ((1 << 64) - 1 if value >= n else 100 + 100 * (value % 2))


def test_a_loop_with_many_blocks():
    """A backward jump over 40 small blocks, many times: counts and r0 agree."""
    body = []
    for i in range(40):  # 40 small blocks inside the loop
        body += [make("jeq", 2, imm=i, off=1, reg=False), make("add", 0, imm=i, reg=False)]
    insns = [mov(0, 0), mov(1, 25), mov(2, 0), *body, make("add", 2, imm=1, reg=False),
             make("sub", 1, imm=1, reg=False),
             make("jne", 1, imm=0, off=-(len(body) + 3), reg=False), make("exit")]
    p = Program.load(insns)
    a, b = both(p)
    assert a == b and b.steps > 25 * 80
    assert b.r0 == sum(sum(range(40)) - i for i in range(25) if i < 40)


# --- tail calls ----------------------------------------------------------------------------------

def _link(slot: int, table: ProgArray, name: str) -> Program:
    return Program.load([make("add", 9, imm=1, reg=False), *lddw(2, 0, PSEUDO_MAP_FD),
                         mov(3, slot), make("call", imm=TAIL_CALL), make("mov", 0, 9, reg=True),
                         make("exit")], maps=[table], name=name)


def test_a_33_deep_chain_uses_no_python_stack():
    table = ProgArray(64, name="chain")
    progs = [_link(i + 1, table, f"p{i}") for i in range(40)]
    for i, p in enumerate(progs):
        table.update(i, p)
    engine.run(progs[0], engine="jit")  # compile the links outside the tight limit
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 20)
    try:
        res = engine.run(progs[0], engine="jit")
    finally:
        sys.setrecursionlimit(old)
    assert res.r0 == MAX_TAIL_CALL_CNT + 1 == 34
    assert res.chain == tuple(progs[:34]) and res.tail_calls == 33


def test_the_callee_body_runs_on_the_callers_registers_and_stack():
    table = ProgArray(2)
    callee = Program.load([make("ldxdw", 0, FP, off=-8), make("add", 0, 7, reg=True),
                           make("exit")], name="callee")
    caller = Program.load([mov(7, 1000), *lddw(6, 0x1234_5678_9ABC), make("stxdw", FP, 6, off=-8),
                           *lddw(2, 0, PSEUDO_MAP_FD), mov(3, 1), make("call", imm=TAIL_CALL),
                           mov(0, -1), make("exit")], maps=[table], name="caller")
    table.update(1, callee)
    a, b = both(caller)
    assert a == b
    assert b.r0 == 0x1234_5678_9ABC + 1000 and b.chain == (caller, callee)


def test_a_tail_call_inside_a_bpf_to_bpf_call_replaces_the_callee_only():
    """The tail callee takes the subprogram's frame; its exit returns to the caller."""
    table = ProgArray(1)
    target = Program.load([make("mov", 0, 1, reg=True), make("add", 0, imm=5, reg=False),
                           make("exit")], name="target")
    table.update(0, target)
    main = Program.load([mov(6, 100), mov(1, 10), make("call_local", imm=3),
                         make("add", 0, 6, reg=True), make("exit"), make("exit"),
                         # subprogram: tail-call slot 0 (r1 = 10 passes through)
                         *lddw(2, 0, PSEUDO_MAP_FD), mov(3, 0), make("call", imm=TAIL_CALL),
                         mov(0, -1), make("exit")], maps=[table], name="main")
    a, b = both(main)
    assert a == b and b.r0 == 10 + 5 + 100 and b.chain == (main, target)


def test_tail_calls_from_other_helper_paths_keep_the_registers():
    """A caller-given tail_call helper and callx into tail_call raise TailCall instead of the
    inlined fast path: the trampoline recovers the live registers and agrees."""
    table = ProgArray(1)
    callee = Program.load([make("mov", 0, 8, reg=True), make("add", 0, 7, reg=True),
                           make("exit")], name="callee")
    table.update(0, callee)
    custom = dict(HELPERS)
    standard = HELPERS[TAIL_CALL]
    custom[TAIL_CALL] = Helper(TAIL_CALL, "tail_call", standard.args, standard.ret,
                               lambda env, *r: standard.impl(env, *r))
    via_call = Program.load([mov(7, 3), mov(8, 40), *lddw(2, 0, PSEUDO_MAP_FD), mov(3, 0),
                             make("call", imm=TAIL_CALL), make("exit")], maps=[table])
    a, b = both(via_call, helpers=custom)
    assert a == b and b.r0 == 43 and b.tail_calls == 1
    via_callx = Program.load([mov(7, 3), mov(8, 40), *lddw(2, 0, PSEUDO_MAP_FD), mov(3, 0),
                              mov(5, TAIL_CALL), make("callx", 5), make("exit")], maps=[table])
    a, b = both(via_callx)
    assert a == b and b.r0 == 43


def test_tail_call_counting_matches_the_interpreter_for_empty_and_out_of_range_slots():
    table = ProgArray(3)
    me = Program.load([make("add", 9, imm=1, reg=False), *lddw(2, 0, PSEUDO_MAP_FD),
                       make("mov", 3, 9, reg=True), make("and", 3, imm=3, reg=False),
                       make("call", imm=TAIL_CALL), make("mov", 0, 9, reg=True), make("exit")],
                      maps=[table], name="me")
    table.update(0, me)
    table.update(2, me)
    a, b = both(me)
    assert a == b and b.tail_calls >= 1


def test_prog_array_holds_jit_programs_or_interpreted_ones_never_both():
    """The kernel's 'jited' compatibility rule (bpf_prog_map_compatible): once a PROG_ARRAY
    holds a JIT-compiled program, an interpreted one is refused (EINVAL), and the reverse."""
    p = Program.load([mov(0, 1), make("exit")])
    q = Program.load([mov(0, 2), make("exit")])
    jitted = ProgArray(2)
    jitted.update(0, jit.compile_program(p))
    with pytest.raises(MapError) as info:
        jitted.update(1, q)
    assert info.value.errno == errno.EINVAL
    plain = ProgArray(2)
    plain.update(0, p)
    assert plain.update_prog(1, jit.compile_program(q)) == -errno.EINVAL
    jitted.update(1, jit.compile_program(q))  # another JIT program is fine
    entry = Program.load([*lddw(2, 0, PSEUDO_MAP_FD), mov(3, 1), make("call", imm=TAIL_CALL),
                          make("exit")], maps=[jitted])
    assert engine.run(entry, engine="jit").r0 == 2


# --- bpf-to-bpf calls ----------------------------------------------------------------------------

def test_calls_nest_until_the_frame_limit_with_the_interpreters_fault():
    # f(n): r1 -= 1; if r1 != 0 call f; r0 = r1 ... recursion depth given in r1
    insns = [make("call_local", imm=1), make("exit"),
             make("sub", 1, imm=1, reg=False), make("stxdw", FP, 1, off=-8),
             make("jeq", 1, imm=0, off=2, reg=False), make("call_local", imm=-4),
             make("ldxdw", 0, FP, off=-8), make("exit")]
    for depth, ok in ((MAX_CALL_FRAMES - 1, True), (MAX_CALL_FRAMES, False)):
        p = Program.load([mov(1, depth), mov(0, 0), *insns])
        a, b = both(p)
        assert a == b
        if ok:
            assert b.r0 == depth - 1
        else:
            assert b[0] == "VmError" and b[2] == 7 and "deeper than 8 frames" in b[1]


# --- step budget and faults ----------------------------------------------------------------------

LOOP = """\
r0 = 0
r1 = 100
loop:
r0 += r1
r2 = *(u64 *)(r10 - 8)
*(u64 *)(r10 - 8) = r0
r1 -= 1
if r1 != 0 goto loop
exit
"""


def test_the_budget_fails_at_the_interpreters_pc_with_its_side_effects():
    p = assemble(LOOP, filename="loop.s")
    full = engine.run(p, engine="jit")
    assert full == engine.run(p, engine="interp")
    for budget in range(0, full.steps + 1, 7):
        a, b = both(p, max_steps=budget)
        assert a == b


def test_budget_edges_around_calls_and_unwinds():
    """Budgets that end just before, at and after a bpf-to-bpf call and an unwinding helper:
    the compiled code hands over to the interpreter's closures there, with the same counts."""
    body = [mov(6, 1)] + [make("add", 6, imm=i, reg=False) for i in range(6)]
    p = Program.load([*body, mov(1, 3), make("call_local", imm=5), make("add", 0, 6, reg=True),
                      mov(1, 0), make("call", imm=5), mov(0, 99), make("exit"),
                      *body, make("mov", 0, 6, reg=True), make("exit")],
                     helpers=frozenset(CONFORMANCE_HELPERS))
    full = engine.run(p, engine="interp", helpers=CONFORMANCE_HELPERS)
    assert full.r0 == 0 and full.steps == 21  # the unwind ended it (9 + 9 in the callee + 3)
    for budget in range(full.steps + 2):
        a, b = both(p, helpers=CONFORMANCE_HELPERS, max_steps=budget)
        assert a == b, budget


def test_faults_name_pc_and_source_line():
    p = assemble("r0 = 0\nr2 = r1\nr0 = *(u32 *)(r2 + 60)\nexit\n", filename="f.s")
    for which in ENGINES:
        with pytest.raises(VmError) as info:
            engine.run(p, engine=which, mem=bytes(16))
        assert info.value.pc == 2 and info.value.loc.line == 3
        assert str(info.value).startswith("f.s:3:1: pc 2: read of 4 bytes")


def test_a_fault_in_a_tail_callee_names_that_program():
    table = ProgArray(1)
    bad = Program.load([mov(0, 0), make("ldxw", 0, 0, off=0), make("exit")], name="bad")
    table.update(0, bad)
    entry = Program.load([*lddw(2, 0, PSEUDO_MAP_FD), mov(3, 0), make("call", imm=TAIL_CALL),
                          make("exit")], maps=[table], name="entry")
    a, b = both(entry)
    assert a == b and b[2] == 1 and "program 'bad'" in b[1] and "null pointer" in b[1]


def test_stack_accesses_outside_the_frame_fault_like_the_interpreter():
    for off in (0, 8, -513, -520, 1000):
        p = Program.load([mov(0, 0), make("ldxdw", 0, FP, off=off), make("exit")])
        a, b = both(p)
        assert a == b and b[0] == "VmError" and b[2] == 1


def test_unaligned_and_byte_stack_accesses_agree():
    insns = [*lddw(1, 0x1122_3344_5566_7788), make("stxdw", FP, 1, off=-16),
             make("stxw", FP, 1, off=-6), make("stxh", FP, 1, off=-3),
             make("stb", FP, off=-1, imm=-1), make("ldxdw", 2, FP, off=-12),
             make("ldxw", 3, FP, off=-7), make("ldxh", 4, FP, off=-15),
             make("ldxsb", 5, FP, off=-1), make("ldxsh", 6, FP, off=-9),
             make("lock_fetch_add32", FP, 1, off=-10, imm=1), make("lock_xchg", FP, 2, off=-16)]
    fold = [x for r in range(1, 7) for x in (make("mul", 0, imm=31, reg=False),
                                              make("xor", 0, r, reg=True))]
    p = Program.load([mov(0, 0), *insns, *fold, make("ldxdw", 7, FP, off=-16),
                      make("add", 0, 7, reg=True), make("exit")])
    a, b = both(p)
    assert a == b


def test_every_frame_and_run_starts_with_a_zeroed_stack():
    """Run contexts and frames reuse their stack regions: a fresh frame must still read 0."""
    sub = [make("ldxdw", 0, FP, off=-8), make("stxdw", FP, 1, off=-8), make("exit")]
    p = Program.load([mov(1, 41), make("call_local", imm=6), make("mov", 6, 0, reg=True),
                      mov(1, 42), make("call_local", imm=3), make("add", 0, 6, reg=True),
                      make("exit"), *sub])
    for _ in range(3):
        a, b = both(p)
        assert a == b and b.r0 == 0
    top = Program.load([make("ldxdw", 0, FP, off=-8), mov(1, 7), make("stxdw", FP, 1, off=-8),
                        make("exit")])
    assert [engine.run(top, engine="jit").r0 for _ in range(3)] == [0, 0, 0]


def test_a_stack_made_on_touch_is_the_one_direct_accesses_use():
    """The writer stores through a copy of r10 (the memory makes the stack region on touch);
    its tail callee reads the same bytes at a constant offset from r10 (the direct path)."""
    table = ProgArray(1)
    reader = Program.load([make("ldxdw", 0, FP, off=-8), make("exit")], name="reader")
    table.update(0, reader)
    writer = Program.load([make("mov", 4, FP, reg=True), *lddw(5, 0xABCD_0123_4567),
                           make("stxdw", 4, 5, off=-8), *lddw(2, 0, PSEUDO_MAP_FD), mov(3, 0),
                           make("call", imm=TAIL_CALL), make("exit")], maps=[table], name="writer")
    for _ in range(2):
        a, b = both(writer)
        assert a == b and b.chain == (writer, reader) and b.r0 == 0xABCD_0123_4567


def test_write_to_the_seccomp_ctx_faults_and_pack_records_are_accepted():
    p = Program.load([mov(0, 7), make("stw", 1, off=0, imm=1), make("exit")], prog_type=SECCOMP)
    a, b = both(p, ctx=bytes(64))
    assert a == b and "read-only" in b[1]

    class Record:
        def pack(self):
            return (59).to_bytes(4, "little") + bytes(60)
    reader = Program.load([make("ldxw", 0, 1, off=0), make("exit")], prog_type=SECCOMP)
    assert engine.run(reader, Record(), engine="jit").r0 == 59
    a, b = both(reader, ctx=bytes(63))
    assert a == b and "64 bytes, got 63" in b[1]


def test_compile_errors_name_the_pc_like_the_interpreter():
    array = ArrayMap(8, 1)
    value = lddw(3, 0, 2)
    beyond = (value[0], Insn(0, imm=8))  # offset 8 of an 8-byte value
    p = Program.load([mov(0, 0), *beyond, make("exit")], maps=[array])
    a, b = both(p)
    assert a == b and b[0] == "EncodingError" and b[2] == 1


def test_a_write_to_r10_faults_where_it_runs_like_the_interpreter():
    for insn in (Insn(0xB7, 10, 0, 0, 1), Insn(0x61, 10, 1, 0, 0), Insn(0xDB, 10, 10, -8, 0xE1)):
        p = Program.load([mov(0, 0), insn, make("exit")])
        a, b = both(p, mem=bytearray(8))
        assert a == b and b[0] == "VmError" and b[2] == 1, (a, b)
        # behind a jump no run takes, the program runs on both engines
        dead = Program.load([mov(0, 0), make("jeq", 0, off=1, imm=0, reg=False), insn,
                             make("exit")])
        a, b = both(dead, mem=bytearray(8))
        assert a == b and b.r0 == 0 and b.steps == 3


def test_unwind_and_callx_of_the_conformance_helper():
    p = Program.load([mov(1, 7), make("call", imm=5), make("add", 0, imm=1, reg=False),
                      mov(1, 0), make("call", imm=5), mov(0, 99), make("exit")],
                     helpers=frozenset(CONFORMANCE_HELPERS))
    a, b = both(p, helpers=CONFORMANCE_HELPERS)
    assert a == b and b.r0 == 0 and b.steps == 5
    p = Program.load([mov(1, 7), mov(2, 5), make("callx", 2), make("exit")])
    a, b = both(p, helpers=CONFORMANCE_HELPERS)
    assert a == b and b.r0 == 7
    a, b = both(p)  # helper 5 is ktime_get_ns in the standard table: callx of 5 is allowed
    assert type(a) is type(b)


# --- per-run set-up ------------------------------------------------------------------------------

def test_caller_memory_is_used_in_place_and_events_reach_the_host():
    fmt = b"v=%d\0"
    p = Program.load([make("stw", 1, off=4, imm=77), *lddw(0, int.from_bytes(fmt, "little")),
                      make("stxdw", FP, 0, off=-8), make("mov", 1, FP, reg=True),
                      make("add", 1, imm=-8, reg=False), mov(2, len(fmt)), mov(3, -5),
                      make("call", imm=TRACE_PRINTK), make("exit")])
    mem = bytearray(8)
    host = Host.fixed()
    res = engine.run(p, engine="jit", mem=mem, host=host)
    assert mem[4] == 77 and host.events == [Printk("v=-5")] and res.r0 == 4


def test_concurrent_and_nested_runs_do_not_share_memory():
    """Pooled run contexts: threads and a helper that runs the JIT again get their own."""
    worker = Program.load([make("ldxdw", 0, 1, off=0), make("stxdw", FP, 0, off=-8),
                           make("ldxdw", 0, FP, off=-8), make("stxdw", 1, 0, off=8),
                           make("exit")])

    def nested(env, r1, r2, r3, r4, r5):
        return engine.run(worker, engine="jit", mem=r1.to_bytes(8, "little") + bytes(8)).r0

    table = dict(HELPERS)
    table[99] = Helper(99, "nested", (), HELPERS[5].ret, nested)
    outer = Program.load([mov(1, 1234), make("call", imm=99), make("stxdw", FP, 0, off=-8),
                          make("ldxdw", 0, FP, off=-8), make("exit")], helpers=frozenset({99}))
    assert engine.run(outer, engine="jit", helpers=table).r0 == 1234

    failures = []

    def hammer(seed):
        rng = random.Random(seed)
        for _ in range(300):
            v = rng.getrandbits(64)
            mem = bytearray(v.to_bytes(8, "little") + bytes(8))
            if engine.run(worker, engine="jit", mem=mem).r0 != v or mem[8:] != mem[:8]:
                failures.append(v)
    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_verified_programs_run_on_both_engines():
    from sysdispatch.vm.verifier import verify
    for seed in range(10):
        p = Program.load(progen.random_program(random.Random(seed), length=40))
        vp = verify(p)
        a, b = both(vp)
        assert a == b and b.chain == (p,)
        assert jit.compile_program(vp).program is p


def test_engine_choice():
    p = Program.load([mov(0, 5), make("exit")])
    compiled = jit.compile_program(p)
    assert compiled.engine == "jit" and compiled.program is p and compiled.name == p.name
    for which in ENGINES:
        assert engine.run(compiled, engine=which).r0 == 5
        assert engine.run(p, engine=which).chain == (p,)
    with pytest.raises(ValueError):
        engine.run(p, engine="llvm")
    with pytest.raises(VmError):
        engine.run(object(), engine="jit")
