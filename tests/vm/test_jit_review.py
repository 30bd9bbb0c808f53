"""An adversarial review of the JIT's lean path and jeq jump tables, as differential tests.

Each test is a suspicion about vm/jit (lean.py, codegen's jump tables, runtime's lean path)
turned into a comparison with the interpreter: r0, steps, chain, tail-call count, caller bytes
and errors (class, message, pc). The first three pinned real bugs (see each docstring); the rest
passed and stay as regression tests.
"""

from __future__ import annotations

import random

import pytest

from sysdispatch.errors import SysdispatchError
from sysdispatch.vm import engine, jit
from sysdispatch.vm.isa import FP, MAX_TAIL_CALL_CNT, PSEUDO_MAP_FD, Insn, lddw, make
from sysdispatch.vm.jit.compiler import LEAN
from sysdispatch.vm.maps import ArrayMap, ProgArray
from sysdispatch.vm.program import GENERIC, SECCOMP, TAIL_CALL, Program

U64 = 2**64 - 1


def mov(dst, imm):
    return make("mov", dst, imm=imm, reg=False)


def outcome(program, which, **kw):
    """A RunResult, or the error as (class name, message, pc); any other exception escapes."""
    try:
        return engine.run(program, engine=which, **kw)
    except SysdispatchError as exc:
        return (type(exc).__name__, str(exc), exc.pc)


def agree(program, **kw):
    """The interpreter's outcome, after checking the JIT's is the same."""
    a, b = outcome(program, "interp", **kw), outcome(program, "jit", **kw)
    assert a == b
    return a


def is_lean(program) -> bool:
    jit.compile_program(program)
    return bool(program.__dict__[LEAN])


def tail(slot, map_index=0):
    return [mov(3, slot), *lddw(2, map_index, PSEUDO_MAP_FD), make("call", imm=TAIL_CALL)]


def entry(table, prog_type, name="entry"):
    return Program.load([*tail(0), mov(0, 99), make("exit")], maps=[table], prog_type=prog_type,
                        name=name)


# --- bugs found ----------------------------------------------------------------------------------

@pytest.mark.parametrize("lean", [True, False])
def test_a_jeq_chain_that_changes_register_is_not_one_table(lean):
    """Bug: a chain ``if r0 == K`` then ``if r3 == K ...`` (the same OpSpec, jeq imm) was one
    lookup on r0, so r3's tests were never made (wrong verdict and steps)."""
    values = [11, 12, 13, 14, 15, 16, 17, 18, 19]
    insns = [make("ldxdw", 0, 1, off=0), make("ldxdw", 3, 1, off=8)]
    insns += [make("jeq", 0 if i == 0 else 3, imm=v, off=len(values) - i + 1, reg=False)
              for i, v in enumerate(values)]
    insns = ([] if lean else [make("call", imm=7)]) + insns  # a helper call: the general path
    insns += [mov(0, 1), make("exit"), mov(0, 2), make("exit")]
    p = Program.load(insns)
    assert is_lean(p) == lean
    for r0, r3 in [(11, 0), (12, 0), (0, 12), (0, 19), (19, 19), (0, 0)]:
        mem = r0.to_bytes(8, "little") + r3.to_bytes(8, "little")
        got = agree(p, mem=mem)
        assert got.r0 == (2 if r0 == 11 or r3 in values[1:] else 1), (r0, r3)
        for budget in (got.steps - 1, got.steps):
            agree(p, mem=mem, max_steps=budget)


@pytest.mark.parametrize("ctx_kind", [bytes, bytearray])
def test_a_seccomp_entrys_generic_callee_sees_the_read_only_seccomp_ctx(ctx_kind):
    """Bug: a lean generic callee of a seccomp entry stored into the read-only seccomp ctx (in a
    caller's bytearray even) and named the ctx 'mem' in its faults."""
    for body in ([make("stw", 1, off=0, imm=7), make("ldxw", 0, 1, off=0)],
                 [make("ldxw", 0, 1, off=100)], [make("ldxw", 0, 1, off=60)]):
        table = ProgArray(1)
        callee = Program.load(body + [make("exit")], name="callee")
        table.update(0, callee)
        e = entry(table, SECCOMP)
        assert is_lean(e) and is_lean(callee)
        ctx = ctx_kind(range(64))
        got = agree(e, ctx=ctx)
        assert ctx == ctx_kind(range(64))
        if body[0].imm == 7 and len(body) == 2:
            assert got[0] == "VmError" and "read-only seccomp ctx" in got[1]


@pytest.mark.parametrize("size", [0, 8, 20, 64, 100])
def test_a_generic_entrys_seccomp_callee_sees_caller_memory_of_any_size(size):
    """Bug: a lean seccomp callee read a generic entry's short memory as if it had 64 bytes
    (a struct.error escaped) and refused to store into the writable memory."""
    table = ProgArray(1)
    reader = Program.load([make("ldxw", 0, 1, off=16), make("ldxdw", 2, 1, off=56),
                           make("exit")], prog_type=SECCOMP, name="reader")
    table.update(0, reader)
    got = agree(entry(table, GENERIC), mem=bytes(range(size)))
    assert (got[0] == "VmError") == (size < 64)
    table = ProgArray(1)
    writer = Program.load([make("stw", 1, off=0, imm=1), mov(0, 5), make("exit")],
                          prog_type=SECCOMP, name="writer")
    table.update(0, writer)
    e = entry(table, GENERIC)
    bufs = [bytearray(size), bytearray(size)]
    outs = [outcome(e, which, mem=buf)
            for which, buf in zip(("interp", "jit"), bufs)]
    assert outs[0] == outs[1] and bufs[0] == bufs[1]
    assert (outs[1][0] == "VmError") == (size < 4)


def test_a_tail_callee_that_cannot_compile_is_named_as_the_interpreter_names_it():
    """Bug: past the first link the interpreter says "program 'B', pc 1"; the JIT said "pc 1"."""
    table = ProgArray(2)
    middle = Program.load([*tail(1), make("exit")], maps=[table], name="A")
    value = ArrayMap(8, 1)
    beyond = (lddw(3, 0, 2)[0], Insn(0, imm=8))  # lddw of offset 8 into an 8-byte map value
    bad = Program.load([mov(0, 1), *beyond, make("exit")], maps=[value], name="B")
    table.update(0, middle)
    table.update(1, bad)
    lean_entry = entry(table, GENERIC)
    helper_entry = Program.load([make("call", imm=7), *tail(0), make("exit")], maps=[table])
    for e in (lean_entry, helper_entry):
        got = agree(e)
        assert got[0] == "EncodingError" and got[2] == 1 and "program 'B'" in got[1]
    first = ProgArray(1)
    first.update(0, bad)
    got = agree(entry(first, GENERIC))  # first link: the interpreter names no program
    assert got[2] == 1 and "program" not in got[1]
    in_call = Program.load([make("call_local", imm=1), make("exit"), *tail(0), mov(0, 5),
                            make("exit")], maps=[first], name="caller")
    got = agree(in_call)  # inside a bpf-to-bpf call the interpreter names it
    assert "program 'B'" in got[1]
    # a write to r10 is a fault where it runs (not a compile error): named the same way
    table.update(1, Program.load([mov(0, 1), make("mov", 10, imm=0, reg=False), make("exit")],
                                 name="B"))
    for e in (lean_entry, helper_entry):
        assert agree(e) == ("VmError", "program 'B', pc 1: 'mov' writes r10, the read-only "
                                       "frame pointer", 1)


# --- suspicions that held up ---------------------------------------------------------------------

def test_the_stack_is_zero_for_each_run_after_runs_that_faulted_or_ran_out():
    p = Program.load([make("ldxdw", 0, FP, off=-8), make("stdw", FP, off=-8, imm=0x1234),
                      make("ldxw", 2, 1, off=0), make("exit")], name="st")
    assert is_lean(p)
    for _ in range(3):
        for mem, budget in [(bytes(8), 100), (bytes(2), 100), (None, 100), (bytes(8), 2),
                            (bytes(8), 3), (bytes(8), 4)]:
            got = agree(p, mem=mem, max_steps=budget)
            if hasattr(got, "r0"):  # a RunResult (errors are plain tuples)
                assert got.r0 == 0


def _stack_chain(table, *, reader_lean=True):
    """entry and writer add to stack words and tail-call on; reader sums them and leaves one."""
    reader = Program.load(([] if reader_lean else [make("call", imm=7)])
                          + [make("ldxdw", 0, FP, off=-8), make("ldxdw", 2, FP, off=-16),
                             make("lsh", 0, imm=8, reg=False), make("or", 0, 2, reg=True),
                             make("stdw", FP, off=-16, imm=5), make("exit")], name="reader")
    writer = Program.load([make("ldxdw", 4, FP, off=-8), make("add", 4, imm=7, reg=False),
                           make("stxdw", FP, 4, off=-8), *tail(1), mov(0, 99), make("exit")],
                          maps=[table], name="writer")
    table.update(0, writer)
    table.update(1, reader)
    return Program.load([make("ldxdw", 4, FP, off=-16), make("add", 4, imm=1, reg=False),
                         make("stxdw", FP, 4, off=-16), *tail(0), mov(0, 98), make("exit")],
                        maps=[table], name="entry")


@pytest.mark.parametrize("reader_lean", [True, False])
def test_the_frame_stack_is_kept_across_tail_calls_and_fresh_for_the_next_run(reader_lean):
    # The interpreter keeps the frame's stack across a tail call (as the kernel's interpreter
    # does: the callee runs in the same frame); the next run starts from a zero stack.
    e = _stack_chain(ProgArray(2), reader_lean=reader_lean)
    assert is_lean(e)
    full = agree(e)
    assert full.r0 & 0xFF == 1 and full.r0 >> 8 == 7 and len(full.chain) == 3
    for _ in range(2):
        for budget in range(full.steps + 2):
            agree(e, max_steps=budget)
        assert agree(e) == full


def test_a_slot_swapped_between_runs_is_seen_by_the_next_run():
    table = ProgArray(2)
    e = _stack_chain(table)
    lean_reader = table.get(1)
    helper_reader = Program.load([make("call", imm=7), mov(0, 3), make("exit")], name="h")
    plain = Program.load([mov(0, 4), make("exit")], name="plain")
    for callee in (lean_reader, helper_reader, plain, None, lean_reader):
        if callee is None:
            table.delete(1)
        else:
            table.update(1, callee)
        got = agree(e)
        assert got.chain[-1] is (callee or table.get(0))


def test_programs_sharing_code_keep_their_own_maps():
    tables = [ProgArray(1), ProgArray(1)]
    for i, t in enumerate(tables):
        t.update(0, Program.load([mov(0, i + 1), make("exit")], name=f"h{i}"))
    entries = [Program.load([*tail(0), mov(0, 9), make("exit")], maps=[t], name=f"e{i}")
               for i, t in enumerate(tables)]
    assert jit.compile_program(entries[0]).source == jit.compile_program(entries[1]).source
    for _ in range(2):
        assert [agree(e).r0 for e in entries] == [1, 2]
    tables[1].delete(0)
    assert [agree(e).r0 for e in entries] == [1, 9]


@pytest.mark.parametrize("helper_every", [0, 2, 3])
def test_the_tail_call_limit_and_budget_edges_across_lean_and_general_links(helper_every):
    """A program tail-calling itself: 34 runs, 33 calls; with a helper call in every n-th link
    (a slot of a second array) the chain alternates between lean and general links."""
    table = ProgArray(2)
    link = Program.load([make("add", 6, imm=1, reg=False), make("mov", 4, 6, reg=True),
                         make("mod", 4, imm=helper_every or 1, reg=False), mov(3, 0),
                         make("jne", 4, imm=0, off=1, reg=False), mov(3, 1),
                         *lddw(2, 0, PSEUDO_MAP_FD),
                         make("call", imm=TAIL_CALL), make("mov", 0, 6, reg=True),
                         make("exit")], maps=[table], name="link")
    helper = Program.load([make("call", imm=7), make("add", 6, imm=1, reg=False),
                           *tail(0), make("mov", 0, 6, reg=True), make("exit")],
                          maps=[table], name="helper")
    table.update(0, link)
    table.update(1, helper if helper_every else link)
    full = agree(link)
    assert full.tail_calls == MAX_TAIL_CALL_CNT and len(full.chain) == MAX_TAIL_CALL_CNT + 1
    for budget in (full.steps, full.steps - 1, full.steps - 9, 12, 11, 10, 0):
        agree(link, max_steps=budget)


def test_ctx_edges_signed_and_unaligned_loads_and_stores():
    sizes = {1: "b", 2: "h", 4: "w", 8: "dw"}
    for ptype, n in ((SECCOMP, 64), (GENERIC, 13)):
        for size, s in sizes.items():
            for off in (-1, 0, 1, 3, n - size - 1, n - size, n - size + 1, n):
                ops = [make("ldx" + s, 0, 1, off=off)]
                if size < 8:
                    ops.append(make("ldxs" + s, 2, 1, off=off))
                ops.append(make("stx" + s, 1, 0, off=off))
                for op in ops:
                    p = Program.load([mov(0, 0), op, make("exit")], prog_type=ptype)
                    assert is_lean(p)
                    data = bytes(range(0x80, 0x80 + n))
                    for kind in (bytes, bytearray):
                        key = "ctx" if ptype is SECCOMP else "mem"
                        bufs = [kind(data), kind(data)]  # one each: stores change them
                        outs = [outcome(p, which, **{key: buf})
                                for which, buf in zip(("interp", "jit"), bufs)]
                        assert outs[0] == outs[1] and bufs[0] == bufs[1], (ptype, op, kind)


def test_a_ctx_pointer_copied_then_r1_overwritten():
    p = Program.load([make("mov", 6, 1, reg=True), mov(1, 0), make("ldxw", 0, 6, off=4),
                      make("stw", 6, off=0, imm=3), make("ldxb", 2, 6, off=0),
                      make("add", 0, 2, reg=True), make("ldxw", 3, 1, off=0), make("exit")])
    got = agree(p, mem=bytearray(range(8)))  # r1 is no ctx pointer: not lean, and faults
    assert not is_lean(p) and got[0] == "VmError" and got[2] == 6 and "null pointer" in got[1]
    q = Program.load(list(p.insns[:-2]) + [make("exit")])
    assert is_lean(q)
    buf = bytearray(range(8))
    assert agree(q, mem=bytes(range(8))).r0 == 0x07060504 + 3
    assert jit.run(q, mem=buf).r0 == 0x07060504 + 3 and buf[0] == 3


# --- random jeq chains against the interpreter ---------------------------------------------------

_IMMS = [0, 1, -1, -2, 2**31 - 1, -2**31, 5, 7, 0x7FFF, -0x8000, 59, 60]


def _chains(rng: random.Random) -> tuple[list, list[int]]:
    """Runs of jeq/jeq32 tests to one of three verdicts, now and then switching width, register
    or target, with ALU writes, jumps into the middle of later code and plain jumps between."""
    body: list = [make("ldxdw", 0, 1, off=0), make("ldxdw", 3, 1, off=8)]
    tests: list = []
    for _ in range(rng.randrange(4, 12)):
        roll = rng.random()
        if roll < 0.6:
            target, op, reg = rng.choice("abc"), rng.choice(["jeq", "jeq32"]), rng.choice([0, 3])
            for _ in range(rng.randrange(6, 14)):
                if rng.random() < 0.08:
                    op = rng.choice(["jeq", "jeq32"])
                if rng.random() < 0.08:
                    reg = rng.choice([0, 3])
                imm = rng.choice(_IMMS + [rng.randrange(-2**31, 2**31)])
                tests.append(imm)
                body.append((op, reg, imm, target if rng.random() > 0.05 else "mid"))
        elif roll < 0.85:
            body.append(make(rng.choice(["add", "mov", "xor", "add32"]), rng.choice([0, 3]),
                             imm=rng.choice(_IMMS), reg=False))
        else:
            body.append(("ja",))
    n = len(body)
    verdict = {"a": n, "b": n + 2, "c": n + 4}
    insns = []
    for pc, item in enumerate(body):
        if isinstance(item, tuple) and item[0] == "ja":
            insns.append(make("ja", off=rng.randrange(0, n - pc + 5)))
        elif isinstance(item, tuple):
            op, reg, imm, target = item
            to = rng.randrange(pc + 1, n + 6) if target == "mid" else verdict[target]
            insns.append(make(op, reg, imm=imm, off=to - pc - 1, reg=False))
        else:
            insns.append(item)
    insns += [mov(0, 100), make("exit"), mov(0, 200), make("exit"),
              make("mov", 0, 3, reg=True), make("exit"), make("exit")]
    return insns, tests


def test_random_jeq_chains_agree_with_the_interpreter():
    tables = 0
    for seed in range(120):
        rng = random.Random(seed)
        insns, tests = _chains(rng)
        if seed % 3 == 0:  # a helper call first: not lean (jumps are relative: still valid)
            insns = [make("call", imm=7)] + insns
        p = Program.load(insns, prog_type=SECCOMP if seed % 2 else GENERIC)
        tables += ".get(" in jit.compile_program(p).source
        probes = set()
        for v in tests:
            probes.update(x & U64 for x in (v, v & 0xFFFF_FFFF, v & 0xFFFF_FFFF | 1 << 40, v + 1))
        probes = sorted(probes)
        for _ in range(8):
            data = b"".join(rng.choice(probes).to_bytes(8, "little") for _ in range(2))
            kw = {"ctx": data + bytes(48)} if seed % 2 else {"mem": data}
            budget = rng.choice([1_000_000, rng.randrange(0, 40)])
            assert outcome(p, "interp", max_steps=budget, **kw) == \
                outcome(p, "jit", max_steps=budget, **kw), seed
    assert tables >= 60



# --- random tail-call worlds across two program types ---------------------------------------------

def _link_body(rng: random.Random, ptype) -> list:
    """Straight-line ctx (r1 or its copy r6), stack and ALU work with forward jumps, one or two
    tail calls through either array, now and then a helper call (not lean) or r1 = 0."""
    sizes = {1: "b", 2: "h", 4: "w", 8: "dw"}
    body = [make("mov", 6, 1, reg=True)]
    for _ in range(rng.randrange(3, 10)):
        s, base, roll = sizes[rng.choice([1, 2, 4, 8])], rng.choice([1, 6]), rng.random()
        if roll < 0.3:
            body.append(make("ldx" + s, rng.choice([0, 2]), base, off=rng.randrange(-2, 66)))
        elif roll < 0.4 and ptype is GENERIC:
            body.append(make("stx" + s, base, 0, off=rng.randrange(-1, 20)))
        elif roll < 0.6:
            body += [make("ldxdw", 4, FP, off=-8), make("add", 4, imm=rng.randrange(1, 9),
                                                         reg=False),
                     make("stxdw", FP, 4, off=-8)]
        elif roll < 0.8:
            body.append(make(rng.choice(["add", "xor", "mul", "sdiv"]), 0, 2, reg=True))
        else:
            body.append(make("jgt", 0, imm=rng.randrange(0, 9), off=rng.randrange(0, 2),
                             reg=False))
    for _ in range(rng.randrange(1, 3)):
        body += [mov(3, rng.randrange(0, 5)), *lddw(2, rng.randrange(2), PSEUDO_MAP_FD),
                 make("call", imm=TAIL_CALL)]
    if rng.random() < 0.15:
        body.insert(1, mov(1, 0))
    if rng.random() < 0.2:
        body.insert(1, make("call", imm=14))  # get_current_pid_tgid: deterministic, not lean
    return body + [make("ldxdw", 5, FP, off=-8), make("add", 0, 5, reg=True), make("exit")]


def test_random_tail_call_worlds_across_two_program_types_agree():
    lean_entries = taken = 0
    for seed in range(150):
        rng = random.Random(seed)
        types = [rng.choice([SECCOMP, GENERIC]) for _ in range(2)]
        arrays = [ProgArray(4, name="a"), ProgArray(4, name="b")]
        for k, array in enumerate(arrays):
            for slot in range(4):
                if rng.random() < 0.8:
                    array.update(slot, Program.load(_link_body(rng, types[k]), maps=arrays,
                                                    prog_type=types[k], name=f"p{k}{slot}"))
        etype = rng.choice(types)
        e = Program.load(_link_body(rng, etype), maps=arrays, prog_type=etype, name="entry")
        lean_entries += is_lean(e)
        for _ in range(3):
            size = 64 if etype is SECCOMP else rng.choice([0, 8, 24, 64])
            data = bytes(rng.randrange(256) for _ in range(size))
            kind = rng.choice([bytes, bytearray])
            budget = rng.choice([100_000, rng.randrange(0, 80)])
            bufs = [kind(data), kind(data)]
            outs = [outcome(e, which, ctx=buf, max_steps=budget)
                    for which, buf in zip(("interp", "jit"), bufs)]
            assert outs[0] == outs[1] and bufs[0] == bufs[1], (seed, budget, size, kind)
            taken += hasattr(outs[0], "chain") and len(outs[0].chain) > 1
    assert lean_entries >= 40 and taken >= 30
