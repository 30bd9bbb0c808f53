"""The verifier on its table of programs (tests/vm/verifier_cases/table.py), its errors, its log,
its result type, its budget, and the ``prog verify`` command."""

from __future__ import annotations

import copy
import inspect
import pickle
import subprocess
import sys

import pytest

from sysdispatch.errors import VerifierError
from sysdispatch.vm import isa
from sysdispatch.vm.asm import assemble
from sysdispatch.vm.program import PROG_TYPES, SECCOMP, Program, ProgType
from sysdispatch.vm.verifier import COMPLEXITY_LIMIT, VerifiedProgram, verify
from verifier_cases.table import ACCEPT, CASES, MAPS, REJECT, Case


def build(case: Case) -> Program:
    maps = {name: MAPS[name]() for name in case.maps}
    return assemble(case.text, filename=f"{case.name}.s", prog_type=PROG_TYPES[case.type],
                    maps=maps, name=case.name.replace(" ", "_"))


def run(case: Case, **kw) -> VerifiedProgram:
    if case.limit is not None:
        kw.setdefault("insn_limit", case.limit)
    return verify(build(case), mem_size=case.mem_size, **kw)


def test_table_is_big_enough():
    assert len(ACCEPT) >= 30 and len(REJECT) >= 60
    assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"


@pytest.mark.parametrize("case", ACCEPT, ids=str)
def test_accepted(case: Case):
    vp = run(case)
    assert isinstance(vp, VerifiedProgram)
    assert vp.insn_processed > 0


@pytest.mark.parametrize("case", REJECT, ids=str)
def test_rejected(case: Case):
    with pytest.raises(VerifierError) as info:
        run(case)
    err = info.value
    assert case.reject in err.message, f"wanted '{case.reject}', got: {err}"
    assert err.pc == case.pc, f"wanted pc {case.pc}, got: {err}"
    line = str(err)
    assert "\n" not in line
    assert line.startswith(f"{case.name}.s:"), line   # the source location of that pc


def test_error_names_file_line_pc_and_instruction():
    prog = assemble("r0 = 0\nr3 = r0\nr3 = *(u64 *)(r3 + 0)\nexit\n", filename="handlers.s")
    with pytest.raises(VerifierError) as info:
        verify(prog)
    assert str(info.value) == ("handlers.s:3:1: pc 2: r3 = *(u64 *)(r3 + 0): "
                               "R3 invalid mem access 'scalar'")


def test_error_without_source_still_names_pc_and_instruction():
    prog = Program.load([isa.make("mov", 0, 3, reg=True), isa.make("exit")])
    with pytest.raises(VerifierError) as info:
        verify(prog)
    assert str(info.value) == "pc 0: r0 = r3: R3 !read_ok"


# --- pruning and the budget ---------------------------------------------------------------------

def test_pruning_keeps_diamonds_linear():
    case = next(c for c in ACCEPT if c.name == "pruning keeps 24 diamonds linear")
    vp = run(case)
    # 24 diamonds of 4 instructions: without pruning ~2**24 paths would be walked
    assert vp.insn_processed < 24 * 4 * 4


def test_loop_is_walked_iteration_by_iteration():
    prog = assemble("r0 = 0\nr1 = 0\nL:\nr0 += r1\nr1 += 1\nif r1 < 100 goto L\nexit\n")
    vp = verify(prog)
    assert 300 <= vp.insn_processed <= 310   # 3 instructions per iteration, no pruning inside


def test_budget_is_the_kernels_million_by_default():
    # walking a million instructions takes seconds: check the default, and the budget itself
    # with a small one (the table's "loop that outlives the budget" case runs it)
    assert COMPLEXITY_LIMIT == 1_000_000
    assert inspect.signature(verify).parameters["insn_limit"].default == COMPLEXITY_LIMIT
    prog = assemble("r0 = 0\nL:\nr0 += 1\nif r0 != 0 goto L\nexit\n")
    with pytest.raises(VerifierError, match="BPF program is too large. Processed 30001 insn"):
        verify(prog, insn_limit=30_000)


def test_unknown_start_loop_is_refused_as_infinite():
    # r1 unknown: after "r1 += 1" it is still unknown, so the second iteration repeats the first
    prog = assemble("call 7\nr1 = r0\nL:\nr1 += 1\nif r1 != 0 goto L\nr0 = 0\nexit\n")
    with pytest.raises(VerifierError, match="infinite loop detected at insn 2"):
        verify(prog)


# --- program types and helpers ---------------------------------------------------------------

def test_helper_not_allowed_for_the_type():
    restricted = ProgType("restricted", 64, False, frozenset({1, 2, 3}))
    prog = Program.load([isa.make("call", imm=5), isa.make("exit")], prog_type=SECCOMP)
    with pytest.raises(VerifierError, match=r"program of this type cannot use helper "
                                            r"bpf_ktime_get_ns#5"):
        verify(prog, restricted)


def test_generic_memory_size_is_r2():
    prog = assemble("r0 = r2\nexit\n")
    assert verify(prog, mem_size=16).mem_size == 16
    # the walk knows r2: a branch on it is decided, so the bad load is never reached
    prog = assemble("if r2 == 16 goto +1\nr0 = *(u64 *)(r2 + 0)\nr0 = 0\nexit\n")
    verify(prog, mem_size=16)
    with pytest.raises(VerifierError, match="R2 invalid mem access 'scalar'"):
        verify(prog, mem_size=8)


def test_seccomp_has_no_memory_size():
    prog = assemble("r0 = 0\nexit\n", prog_type=SECCOMP)
    assert verify(prog).mem_size is None
    with pytest.raises(VerifierError, match="R2 !read_ok"):
        verify(assemble("r0 = r2\nexit\n", prog_type=SECCOMP))


# --- VerifiedProgram ----------------------------------------------------------------------------

def test_verified_program_facts():
    case = next(c for c in ACCEPT if c.name == "tail call from a seccomp program")
    vp = run(case)
    assert vp.tail_calls is True
    assert vp.helpers == frozenset({12})
    assert vp.prog_type is SECCOMP
    calls = next(c for c in ACCEPT if c.name == "callee writes the caller's stack")
    vp = run(calls)
    assert vp.stack_depth == 8 and vp.max_call_depth == 2 and not vp.tail_calls
    assert vp.frame_depths == {0: 8, 5: 0}


def test_dead_code_is_reported():
    case = next(c for c in ACCEPT if c.name == "dead write to the frame pointer is never walked")
    assert run(case).dead_code == frozenset({2})
    assert verify(assemble("r0 = 0\nexit\n")).dead_code == frozenset()


def test_verified_program_cannot_be_forged_or_changed():
    vp = verify(assemble("r0 = 0\nexit\n"))
    with pytest.raises(TypeError):
        VerifiedProgram(object(), program=vp.program)
    with pytest.raises(AttributeError):
        vp.program = assemble("r0 = 1\nexit\n")
    with pytest.raises(AttributeError):
        del vp.helpers
    with pytest.raises(TypeError):
        pickle.dumps(vp)
    assert copy.copy(vp) is vp and copy.deepcopy(vp) is vp
    with pytest.raises((TypeError, AttributeError)):
        vp.__dict__   # noqa: B018 - no instance dict to smuggle attributes into


def test_verify_wants_a_program():
    with pytest.raises(TypeError):
        verify([isa.make("exit")])


# --- the log ------------------------------------------------------------------------------------

def test_log_shows_states_like_the_kernel():
    case = next(c for c in REJECT if c.name == "map value used before its NULL check")
    with pytest.raises(VerifierError) as info:
        run(case, log=True)
    log = info.value.log
    assert log.startswith("0: R1=ctx() R2=0 R10=fp0\n")
    assert "call 7" in log and "R0_w=scalar()" in log
    assert "fp-8_w=scalar()" in log                       # the spilled random key
    assert "R0_w=map_value_or_null(id=1,ks=8,vs=16)" in log
    assert log.rstrip().endswith("R0 invalid mem access 'map_value_or_null'")


def test_log_on_success_shows_branches_and_pruning():
    case = next(c for c in ACCEPT if c.name == "pruning keeps 24 diamonds linear")
    log = run(case, log=True).log
    assert "from 3 to 6: " in log
    assert ": safe\n" in log
    assert log.rstrip().splitlines()[-1].startswith("processed ")
    assert verify(build(case)).log is None


# --- the command --------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sysdispatch", "prog", "verify", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_accepts_and_refuses(tmp_path):
    good = tmp_path / "good.s"
    good.write_text("r0 = *(u32 *)(r1 + 0)\nexit\n")
    out = _cli(str(good), "--type", "seccomp")
    assert out.returncode == 0, out.stderr
    assert "accepted (seccomp)" in out.stdout
    bad = tmp_path / "handler.s"
    bad.write_text("; bump a counter\n*(u32 *)(r10 - 4) = 0\nr1 = map[counts] ll\nr2 = r10\n"
                   "r2 += -4\ncall 1\nr3 = *(u64 *)(r0 + 0)\nr0 = 0\nexit\n")
    out = _cli(str(bad), "--map", "counts:array:4:8:4", "--log")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (f"sysdispatch: {bad}:7:1: pc 6: r3 = *(u64 *)(r0 + 0): "
                                  f"R0 invalid mem access 'map_value_or_null'")
    assert "5: (85) call 1" in out.stdout and "map_value_or_null" in out.stdout


def test_cli_bad_map_spec_is_one_line(tmp_path):
    f = tmp_path / "p.s"
    f.write_text("r0 = 0\nexit\n")
    out = _cli(str(f), "--map", "counts:queue:4:8:4")
    assert out.returncode == 2 and "unknown map type 'queue'" in out.stderr
    assert "Traceback" not in out.stderr
