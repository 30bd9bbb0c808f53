"""Interpreter vs JIT: the conformance suite and random programs give identical results.

Every bpf_conformance file runs on both engines (read from ../shared, never copied); the JIT must
pass the suite by itself (the expected ``-- result``) and agree with the interpreter on r0, the
step count, the tail-call count, and on faults their type, text and pc. Random verifier-valid
programs from :mod:`sysdispatch.vm.progen` (every feature: ALU/ALU32, JMP/JMP32, lddw, stack,
atomics, the v4 forms) are compared the same way, in full and cut short at a random budget.
Programs with maps, helpers, calls and tail calls: test_differential_worlds.py.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from sysdispatch.errors import SysdispatchError
from sysdispatch.vm import engine, progen
from sysdispatch.vm import conformance
from sysdispatch.vm.conformance import CONFORMANCE_HELPERS, load_case, parse_test
from sysdispatch.vm.helpers import Host
from sysdispatch.vm.isa import lddw, make
from sysdispatch.vm.program import GET_CURRENT_PID_TGID, Program


def _outcome(program: Program, which: str, mem: bytes | None, **kw) -> tuple:
    buf = None if mem is None else bytearray(mem)
    try:
        res = engine.run(program, engine=which, mem=buf, **kw)
    except SysdispatchError as exc:
        return ("error", type(exc).__name__, str(exc), exc.pc, buf)
    return ("ok", res.r0, res.steps, res.tail_calls, buf)


def _cases(directory):
    for path in sorted(directory.glob("*.data")):
        try:
            case = parse_test(path)
            program = load_case(case)
        except SysdispatchError:  # conformance.TestFileError included
            continue  # rejected at load: no engine runs it
        yield path, case, program


def test_conformance_suite_on_both_engines(conformance_dir):
    checked = passed = 0
    for path, case, program in _cases(conformance_dir / "tests"):
        mem = case.mem()
        a = _outcome(program, "interp", mem, helpers=CONFORMANCE_HELPERS)
        b = _outcome(program, "jit", mem, helpers=CONFORMANCE_HELPERS)
        assert a == b, path.name
        checked += 1
        if case.expects_error:
            passed += b[0] == "error"
        else:
            passed += b[0] == "ok" and b[1] == case.result()
    assert checked == 313
    assert passed == checked  # the JIT passes the whole suite on its own


def test_negative_conformance_files_agree(conformance_dir):
    ran = 0
    for path, case, program in _cases(conformance_dir / "negative"):
        ran += 1
        mem = None
        try:
            mem = case.mem()
        except conformance.TestFileError:
            pass
        assert (_outcome(program, "interp", mem, helpers=CONFORMANCE_HELPERS)
                == _outcome(program, "jit", mem, helpers=CONFORMANCE_HELPERS)), path.name
    assert ran >= 1  # some negative files load and must fail (or pass) alike


def test_conformance_faults_name_the_same_pc_and_line(conformance_dir):
    """A fault on both engines: same message, same pc, same file:line of the assembly."""
    path = conformance_dir / "tests" / "prime.data"
    program = load_case(parse_test(path))
    errors = []
    for which in ("interp", "jit"):
        with pytest.raises(SysdispatchError) as info:
            engine.run(program, engine=which, helpers=CONFORMANCE_HELPERS, max_steps=100)
        errors.append(info.value)
    assert str(errors[0]) == str(errors[1])
    assert errors[0].pc == errors[1].pc and errors[1].loc is not None
    assert errors[1].loc.file == str(path) and errors[1].loc.line is not None


def _progen(seed: int, length: int) -> Program:
    return Program.load(progen.random_program(random.Random(seed), length=length),
                        name=f"progen{seed}")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**64), st.integers(0, 150))
def test_random_programs_agree(seed, length):
    program = _progen(seed, length)
    a = _outcome(program, "interp", None)
    assert a[0] == "ok"
    assert a == _outcome(program, "jit", None)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**64), st.integers(0, 80), st.floats(0, 1))
def test_random_programs_fail_at_the_same_pc_when_the_budget_runs_out(seed, length, fraction):
    program = _progen(seed, length)
    steps = _outcome(program, "interp", None)[2]
    budget = int(steps * fraction)
    a = _outcome(program, "interp", None, max_steps=budget)
    b = _outcome(program, "jit", None, max_steps=budget)
    assert a == b
    assert a[0] == ("ok" if budget == steps else "error")


# Producers set a register in ways that may or may not leave it below 2**32; consumers are the
# 32-bit operations whose result depends on whether the JIT masks the operand (mov32, 32-bit
# compares, division and right shifts, 4-byte stores): a wrong "fits in 32 bits" fact in the
# JIT's code generator shows here.
_PRODUCERS = (
    lambda r, o, rng: [make("ldx" + rng.choice(("b", "h", "w", "dw", "dw")), r, 10,
                            off=-8 * rng.randint(1, 4))],
    lambda r, o, rng: [make("mov", r, imm=rng.choice((5, -5, 0x7FFFFFFF)), reg=False)],
    lambda r, o, rng: [make("and", r, imm=rng.choice((0xFF, -16, -1)), reg=False)],
    lambda r, o, rng: [make("rsh", r, imm=rng.choice((8, 31, 32, 40)), reg=False)],
    lambda r, o, rng: [make("mov", r, o, reg=True)],
    lambda r, o, rng: [make("and", r, o, reg=True)],
    lambda r, o, rng: [make("add32", r, imm=rng.randint(-9, 9), reg=False)],
    lambda r, o, rng: [make(rng.choice(("le16", "le32", "le64", "be32", "bswap64")), r)],
    lambda r, o, rng: [make(rng.choice(("movsx832", "movsx1664", "movsx3264")), r, o, reg=True)],
    lambda r, o, rng: [make(rng.choice(("neg", "neg32")), r)],
    lambda r, o, rng: [*lddw(r, rng.choice((7, 1 << 32, (1 << 64) - 3)))],
    lambda r, o, rng: [make(rng.choice(("lock_fetch_add32", "lock_xchg", "lock_fetch_or")),
                            10, r, off=-8 * rng.randint(1, 4))],
    lambda r, o, rng: [make("lock_cmpxchg32", 10, o, off=-8)],
    # r0 made narrow, then a helper gives it a 64-bit value: the fact must not survive the call
    lambda r, o, rng: [make("mov32", 0, imm=5, reg=False), make("call", imm=GET_CURRENT_PID_TGID),
                       make("mov", r, 0, reg=True)],
)
_CONSUMERS = (
    lambda r, o, rng: [make("mov32", o, r, reg=True)],
    lambda r, o, rng: [make(rng.choice(("jeq32", "jgt32", "jsgt32", "jset32")), r, o, off=1,
                            reg=True), make("add", 0, imm=1, reg=False)],
    lambda r, o, rng: [make(rng.choice(("jeq32", "jslt32")), r, imm=rng.choice((5, -5)), off=1,
                            reg=False), make("add", 0, imm=2, reg=False)],
    lambda r, o, rng: [make(rng.choice(("div32", "mod32", "rsh32", "arsh32", "sdiv32")), o, r,
                            reg=True)],
    lambda r, o, rng: [make("stxw", 10, r, off=-4 * rng.randint(1, 8)),
                       make("ldxdw", o, 10, off=-8 * rng.randint(1, 4))],
    lambda r, o, rng: [make("lock_fetch_add32", 10, r, off=-16)],
)


def _narrowing_program(rng: random.Random) -> Program:
    insns = []
    for slot in range(1, 5):  # 64-bit values on the stack for the loads to find
        insns += [*lddw(1, rng.getrandbits(64)), make("stxdw", 10, 1, off=-8 * slot)]
    for r in range(10):
        insns += lddw(r, rng.getrandbits(64))
    for _ in range(rng.randint(1, 12)):
        r, o = rng.randrange(10), rng.randrange(10)
        insns += rng.choice(_PRODUCERS)(r, o, rng)
        for _ in range(rng.randint(1, 3)):
            insns += rng.choice(_CONSUMERS)(r, rng.randrange(10), rng)
    for r in range(1, 10):
        insns += [make("mul", 0, imm=progen.FOLD_MULTIPLIER, reg=False),
                  make("xor", 0, r, reg=True)]
    return Program.load([*insns, make("exit")])


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**64))
def test_32_bit_operands_agree_whatever_produced_them(seed):
    program = _narrowing_program(random.Random(seed))
    host = lambda: Host.fixed(seed=3)  # noqa: E731
    assert _outcome(program, "interp", None, host=host()) == \
        _outcome(program, "jit", None, host=host())


@pytest.mark.parametrize("features", [{"alu32", "jmp32"}, {"alu", "jmp", "stack", "atomic"},
                                      {"alu", "sdiv", "movsx", "bswap", "end", "ldxs", "stack"},
                                      {"alu", "jmp", "gotol", "lddw"}])
def test_feature_subsets_agree(features):
    for seed in range(25):
        program = Program.load(progen.random_program(random.Random(seed), length=60,
                                                     features=features | {"alu"}))
        assert _outcome(program, "interp", None) == _outcome(program, "jit", None)
