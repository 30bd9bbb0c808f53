"""The JIT's lean entries (vm/jit/lean.py): programs with no loop, no helper call and only
constant-offset ctx and stack accesses run on the caller's bytes with no run context.

Each test pins something the lean path could get wrong and compares with the interpreter: which
programs are lean, out-of-bounds ctx accesses (same error and pc), stores into caller memory, a
budget smaller than the longest path (the general path, same steps), tail calls between lean
programs and into programs that are not lean (registers, stack, count, chain), faults in a lean
tail callee.
"""

from __future__ import annotations

import random

import pytest

from sysdispatch.errors import SysdispatchError, VmError
from sysdispatch.vm import engine, jit, progen
from sysdispatch.vm.isa import FP, MAX_TAIL_CALL_CNT, PSEUDO_MAP_FD, lddw, make
from sysdispatch.vm.jit.compiler import LEAN
from sysdispatch.vm.maps import ProgArray
from sysdispatch.vm.program import SECCOMP, TAIL_CALL, Program


def mov(dst, imm):
    return make("mov", dst, imm=imm, reg=False)


def both(program, **kw):
    """(interp, jit): a RunResult or the error's (type, str, pc)."""
    out = []
    for which in ("interp", "jit"):
        try:
            out.append(engine.run(program, engine=which, **kw))
        except SysdispatchError as exc:
            out.append((type(exc).__name__, str(exc), exc.pc))
    return out


def is_lean(program) -> bool:
    jit.compile_program(program)
    return bool(program.__dict__[LEAN])


def test_which_programs_are_lean():
    ctx_copy = Program.load([make("mov", 6, 1, reg=True), make("ldxw", 0, 6, off=4),
                             make("exit")], prog_type=SECCOMP)
    back_to_exit = Program.load([mov(0, 1), make("ja", off=1), make("exit"),
                                 make("jeq", 0, imm=1, off=-2, reg=False), make("exit")])
    assert is_lean(ctx_copy) and is_lean(back_to_exit)
    loop = Program.load([mov(0, 3), make("sub", 0, imm=1, reg=False),
                         make("jne", 0, imm=0, off=-2, reg=False), make("exit")])
    helper = Program.load([make("call", imm=5), make("exit")])
    computed = Program.load([make("mov", 2, 1, reg=True), make("add", 2, imm=4, reg=False),
                             make("ldxw", 0, 2, off=0), make("exit")])
    r10_copy = Program.load([make("mov", 2, FP, reg=True), make("ldxdw", 0, 2, off=-8),
                             make("exit")])
    join_loses_ctx = Program.load([make("jeq", 2, imm=0, off=1, reg=False), mov(1, 0),
                                   make("ldxw", 0, 1, off=0), make("exit")])
    for p in (loop, helper, computed, r10_copy, join_loses_ctx):
        assert not is_lean(p)
    for p in (ctx_copy, back_to_exit, loop, computed, r10_copy, join_loses_ctx):
        a, b = both(p, mem=bytes(16)) if p.prog_type is not SECCOMP else both(p, ctx=bytes(64))
        assert a == b


@pytest.mark.parametrize("off,size", [(12, 4), (13, 4), (15, 1), (16, 1), (-1, 1), (-8, 8),
                                      (0, 8), (9, 8), (14, 2)])
def test_ctx_loads_out_of_bounds_fault_like_the_interpreter(off, size):
    name = {1: "ldxb", 2: "ldxh", 4: "ldxw", 8: "ldxdw"}[size]
    p = Program.load([mov(0, 0), make(name, 0, 1, off=off), make("exit")])
    assert is_lean(p)
    a, b = both(p, mem=bytes(range(16)))
    assert a == b
    inside = 0 <= off and off + size <= 16
    assert (b.r0 == int.from_bytes(bytes(range(16))[off:off + size], "little")) if inside \
        else (b[0] == "VmError" and b[2] == 1 and "read of" in b[1])


def test_seccomp_ctx_loads_past_its_64_bytes_and_stores_fault_at_their_pc():
    for insns in ([mov(0, 0), make("ldxdw", 0, 1, off=60), make("exit")],
                  [mov(0, 0), make("ldxw", 0, 1, off=-4), make("exit")],
                  [mov(0, 0), make("stw", 1, off=0, imm=1), make("exit")],
                  [mov(0, 0), make("stxb", 1, 0, off=3), make("exit")]):
        p = Program.load(insns, prog_type=SECCOMP)
        assert is_lean(p)
        a, b = both(p, ctx=bytes(64))
        assert a == b and b[0] == "VmError" and b[2] == 1


def test_a_generic_program_with_no_memory_faults_on_its_null_ctx():
    p = Program.load([make("ldxw", 0, 1, off=0), make("exit")])
    a, b = both(p)
    assert a == b and "null pointer" in b[1]


def test_stores_reach_caller_memory_in_place_and_bytes_are_not_changed():
    p = Program.load([make("stw", 1, off=4, imm=0x55), make("stxb", 1, 2, off=0),
                      make("ldxdw", 0, 1, off=0), make("exit")])
    assert is_lean(p)
    for which in ("interp", "jit"):
        buf = bytearray(8)
        r = engine.run(p, engine=which, mem=buf)
        assert buf == bytes([8, 0, 0, 0, 0x55, 0, 0, 0]) and r.r0 == int.from_bytes(buf, "little")
        frozen = bytes(8)
        assert engine.run(p, engine=which, mem=frozen).r0 == r.r0 and frozen == bytes(8)
    a, b = both(p, mem=bytearray(6))  # the stw at offset 4 runs past 6 bytes
    assert a == b and b[2] == 0


def test_a_budget_below_the_longest_path_runs_out_at_the_interpreters_pc():
    p = Program.load([mov(0, 0), *[make("add", 0, imm=1, reg=False) for _ in range(6)],
                      make("jeq", 0, imm=6, off=1, reg=False), make("exit"),
                      make("stdw", FP, off=-8, imm=3), make("ldxdw", 0, FP, off=-8),
                      make("exit")])
    assert is_lean(p)
    for budget in range(0, 13):
        a, b = both(p, max_steps=budget)
        assert a == b, budget
    assert both(p, max_steps=11)[1].steps == 11


def test_a_random_lean_program_agrees_with_the_interpreter():
    seen = 0
    for seed in range(60):
        p = Program.load(progen.random_program(random.Random(seed), length=40))
        if is_lean(p):
            seen += 1
        a, b = both(p, mem=bytearray(range(64)))
        assert a == b, seed
    assert seen >= 3


# --- tail calls ----------------------------------------------------------------------------------

def _link(slot, table, *, stack=True, lean=True):
    """Count into r9 (kept across tail calls) and the stack, then tail-call ``slot``."""
    body = [make("add", 9, imm=1, reg=False)]
    if stack:
        body += [make("ldxdw", 8, FP, off=-8), make("add", 8, imm=1, reg=False),
                 make("stxdw", FP, 8, off=-8)]
    if not lean:
        body += [make("call", imm=7)]  # get_prandom_u32: a helper call is not lean
    return Program.load(body + [*lddw(2, 0, PSEUDO_MAP_FD), mov(3, slot),
                                make("call", imm=TAIL_CALL), make("mov", 0, 9, reg=True),
                                make("lsh", 0, imm=8, reg=False), make("ldxdw", 8, FP, off=-8),
                                make("or", 0, 8, reg=True), make("exit")],
                        maps=[table], name=f"link{slot}")


@pytest.mark.parametrize("pattern", ["lean", "mixed", "nostack"])
def test_a_chain_of_tail_calls_keeps_registers_stack_count_and_chain(pattern):
    table = ProgArray(40)
    links = [_link(i + 1, table, stack=pattern != "nostack" or i % 2 == 0,
                   lean=pattern != "mixed" or i % 3 != 1) for i in range(40)]
    for i, p in enumerate(links):
        table.update(i, p)
    a, b = both(links[0])
    assert a == b and b.tail_calls == MAX_TAIL_CALL_CNT and len(b.chain) == 34
    assert b.r0 >> 8 == 34


def test_tail_calls_from_a_seccomp_entry_with_a_budget_that_ends_in_the_callee():
    table = ProgArray(4)
    handler = Program.load([make("ldxw", 0, 1, off=16), make("add", 0, imm=1, reg=False),
                            make("exit")], prog_type=SECCOMP, name="h")
    moved = Program.load([mov(1, 0), make("ldxw", 0, 1, off=16), make("exit")],
                         prog_type=SECCOMP, name="moved")  # r1 is not the ctx: null pointer
    table.update(1, handler)
    table.update(2, moved)
    entry = Program.load([make("mov", 6, 1, reg=True), make("ldxw", 3, 6, off=0),
                          *lddw(2, 0, PSEUDO_MAP_FD), make("call", imm=TAIL_CALL),
                          mov(0, 99), make("exit")], maps=[table], prog_type=SECCOMP)
    assert is_lean(entry) and is_lean(handler)
    ctx = (1).to_bytes(4, "little") + bytes(12) + (41).to_bytes(8, "little") + bytes(40)
    for budget in range(0, 10):
        a, b = both(entry, ctx=ctx, max_steps=budget)
        assert a == b, budget
    assert both(entry, ctx=ctx)[1].r0 == 42
    a, b = both(entry, ctx=(2).to_bytes(4, "little") + ctx[4:])
    assert a == b and b[2] == 1 and "program 'moved'" in b[1]
    a, b = both(entry, ctx=(3).to_bytes(4, "little") + ctx[4:])  # empty slot: falls through
    assert a == b and b.r0 == 99 and b.tail_calls == 1
    # the entry leaves r1 = 0: the lean handler, which reads through r1, must not read the ctx
    no_ctx = Program.load([make("ldxw", 3, 1, off=0), mov(1, 0), *lddw(2, 0, PSEUDO_MAP_FD),
                           make("call", imm=TAIL_CALL), mov(0, 99), make("exit")],
                          maps=[table], prog_type=SECCOMP)
    a, b = both(no_ctx, ctx=ctx)
    assert a == b and b[0] == "VmError" and "null pointer" in b[1] and "program 'h'" in b[1]


@pytest.mark.parametrize("callee_lean", [True, False])
def test_a_callee_stores_into_caller_bytes_the_reading_entry_did_not_copy(callee_lean):
    table = ProgArray(1)
    body = [make("stw", 1, off=0, imm=0x77)] + ([] if callee_lean else [make("call", imm=7)])
    writer = Program.load(body + [make("ldxw", 0, 1, off=0), make("exit")], name="writer")
    table.update(0, writer)
    entry = Program.load([make("ldxw", 6, 1, off=4), *lddw(2, 0, PSEUDO_MAP_FD), mov(3, 0),
                          make("call", imm=TAIL_CALL), make("exit")], maps=[table])
    assert is_lean(entry) and is_lean(writer) == callee_lean
    frozen = bytes(8)
    a, b = both(entry, mem=frozen)
    assert a == b and b.r0 == 0x77 and frozen == bytes(8)
    buf = bytearray(8)
    assert jit.run(entry, mem=buf).r0 == 0x77 and buf[0] == 0x77


def test_a_fault_in_a_lean_tail_callee_names_it():
    table = ProgArray(1)
    bad = Program.load([mov(0, 0), make("ldxw", 0, 1, off=100), make("exit")], name="bad")
    table.update(0, bad)
    entry = Program.load([*lddw(2, 0, PSEUDO_MAP_FD), mov(3, 0), make("call", imm=TAIL_CALL),
                          make("exit")], maps=[table], name="entry")
    assert is_lean(entry) and is_lean(bad)
    a, b = both(entry, mem=bytes(8))
    assert a == b and b[2] == 1 and "program 'bad'" in b[1]
    with pytest.raises(VmError):
        jit.run(entry, mem=bytes(8))


# --- chains of jeq tests as one lookup -----------------------------------------------------------

def _chain(values, *, wide=False, targets=None, reg=0):
    """``if rX == v goto T`` for each value, then a default; T's verdict depends on which
    target (``targets[i]`` picks one of two verdict blocks)."""
    n = len(values)
    targets = targets or [0] * n
    op = "jeq" if wide else "jeq32"
    insns = [make("ldxdw", reg, 1, off=0)]
    for i, v in enumerate(values):  # target 0: pc n+3; target 1: pc n+5
        to = n + 3 + 2 * targets[i]
        insns.append(make(op, reg, imm=v, off=to - (i + 1) - 1, reg=False))
    insns += [mov(0, 7), make("exit"), mov(0, 100), make("exit"), mov(0, 200), make("exit")]
    if reg != 0:
        insns[-6] = make("mov", 0, reg, reg=True)
    return Program.load(insns)


def _ctx(value):
    return (value & (2**64 - 1)).to_bytes(8, "little") + bytes(8)


def test_a_jeq_chain_is_one_lookup_with_the_chains_steps():
    values = [5, 9, 5, 70, 71, 72, 73, 74, 75, 76, 77]  # 5 twice: the first test wins
    p = _chain(values)
    assert "J1.get(" in jit.compile_program(p).source
    for probe in [5, 9, 77, 6, 0, 2**32 + 9, -1]:  # 2**32 + 9: jeq32 sees the low half only
        a, b = both(p, mem=_ctx(probe))
        assert a == b and b.r0 in (7, 100), probe
    assert both(p, mem=_ctx(70))[1].steps == 1 + 4 + 2


def test_a_64_bit_jeq_chain_compares_sign_extended_immediates():
    p = _chain([-1, -2, 3, 4, 5, 6, 7, 8, 9], wide=True)
    for probe in [-1, 2**32 - 1, -2, 9, 2**63]:
        a, b = both(p, mem=_ctx(probe))
        assert a == b, probe
    assert both(p, mem=_ctx(-1))[1].r0 == 100 and both(p, mem=_ctx(2**32 - 1))[1].r0 == 7


def test_chains_with_two_targets_split_and_agree():
    values = list(range(10, 34))
    p = _chain(values, targets=[i // 12 for i in range(len(values))], reg=3)
    source = jit.compile_program(p).source
    assert "J1.get((r3 & " in source and "J13.get((r3 & " in source
    for probe in [10, 21, 22, 33, 34]:
        a, b = both(p, mem=_ctx(probe))
        assert a == b, probe


def test_the_budget_runs_out_inside_a_chain_at_the_interpreters_pc():
    p = _chain(list(range(100, 120)))
    for budget in (0, 1, 2, 5, 12, 20, 21, 22, 23, 24):
        for probe in (104, 119, 1):
            a, b = both(p, mem=_ctx(probe), max_steps=budget)
            assert a == b, (budget, probe)


def test_a_tail_call_through_a_map_that_is_no_prog_array_fails_like_the_interpreter():
    from sysdispatch.vm.maps import ArrayMap
    array = ArrayMap(4, 8, name="arr")
    p = Program.load([*lddw(2, 0, PSEUDO_MAP_FD), mov(3, 0), make("call", imm=TAIL_CALL),
                      mov(0, 1), make("exit")], maps=[array])
    assert not is_lean(p)
    a, b = both(p)
    assert a == b and b[2] == 3 and "prog_array" in b[1]


# --- random lean-shaped programs against the interpreter -----------------------------------------

def _lean_shaped(rng: random.Random, n: int = 24) -> list:
    """Straight-line code with forward jumps, ctx accesses through r1 or a copy of it (r6) at
    offsets around the ctx's edges, stack accesses at r10 offsets, ALU on r0/r2-r5."""
    sizes = {1: "b", 2: "h", 4: "w", 8: "dw"}
    body = [make("mov", 6, 1, reg=True)]
    for _ in range(n):
        size = rng.choice([1, 2, 4, 8])
        base = rng.choice([1, 6])
        roll = rng.random()
        if roll < 0.3:
            body.append(make("ldx" + sizes[size], rng.choice([0, 2, 3]), base,
                             off=rng.randrange(-2, 20)))
        elif roll < 0.4:
            body.append(make("stx" + sizes[size], base, rng.choice([0, 2]),
                             off=rng.randrange(-1, 18)))
        elif roll < 0.5:
            off = -8 * rng.randrange(1, 4)
            body += [make("stdw", FP, off=off, imm=rng.randrange(-5, 5)),
                     make("ldx" + sizes[size], rng.choice([3, 4]), FP, off=off)]
        elif roll < 0.8:
            op = rng.choice(["add", "xor", "mul", "rsh", "sdiv", "smod", "add32", "sub32"])
            body.append(make(op, rng.choice([0, 2, 3, 4, 5]), rng.choice([0, 2, 3]), reg=True))
        else:
            body.append(make(rng.choice(["jeq", "jgt", "jset"]), rng.choice([0, 2, 3]),
                             imm=rng.randrange(0, 4), off=rng.randrange(0, 4), reg=False))
    return body + [make("exit")] * 4


def test_random_lean_shaped_programs_agree_with_the_interpreter():
    lean_seen = 0
    for seed in range(150):
        rng = random.Random(seed)
        p = Program.load(_lean_shaped(rng))
        lean_seen += is_lean(p)
        size = rng.choice([0, 4, 8, 16, 24])
        budget = rng.choice([1_000_000, rng.randrange(0, 30)])
        a, b = both(p, mem=bytes(range(size)), max_steps=budget)
        assert a == b, (seed, size, budget)
        bufs = [bytearray(range(size)) for _ in range(2)]  # one each: runs store into them
        out = []
        for which, buf in zip(("interp", "jit"), bufs):
            try:
                out.append(engine.run(p, engine=which, mem=buf, max_steps=budget))
            except SysdispatchError as exc:
                out.append((type(exc).__name__, str(exc), exc.pc))
        assert out[0] == out[1] and bufs[0] == bufs[1], (seed, size, budget)
        a, b = both(p, max_steps=budget)  # no memory at all: r1 = 0
        assert a == b, seed
    assert lean_seen >= 100


def test_a_lean_entry_passes_the_callers_host_to_a_callee_on_the_general_path():
    from sysdispatch.vm.helpers import Host
    table = ProgArray(1)
    clock = Program.load([make("call", imm=5), make("exit")], prog_type=SECCOMP, name="clock")
    table.update(0, clock)  # ktime_get_ns: reads the host's clock, so it is not lean
    entry = Program.load([mov(3, 0), *lddw(2, 0, PSEUDO_MAP_FD), make("call", imm=TAIL_CALL),
                          mov(0, 1), make("exit")], maps=[table], prog_type=SECCOMP)
    assert is_lean(entry) and not is_lean(clock)
    results = [engine.run(entry, engine=which, ctx=bytes(64), host=Host.fixed(now=5000))
               for which in ("interp", "jit")]
    assert results[0] == results[1] and results[1].r0 == 5000
