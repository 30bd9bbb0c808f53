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
from sysdispatch.vm.conformance import CONFORMANCE_HELPERS, TestFileError, load_case, parse_test
from sysdispatch.vm.program import Program


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
        except (SysdispatchError, TestFileError):
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
        except TestFileError:
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


@pytest.mark.parametrize("features", [{"alu32", "jmp32"}, {"alu", "jmp", "stack", "atomic"},
                                      {"alu", "sdiv", "movsx", "bswap", "end", "ldxs", "stack"},
                                      {"alu", "jmp", "gotol", "lddw"}])
def test_feature_subsets_agree(features):
    for seed in range(25):
        program = Program.load(progen.random_program(random.Random(seed), length=60,
                                                     features=features | {"alu"}))
        assert _outcome(program, "interp", None) == _outcome(program, "jit", None)
