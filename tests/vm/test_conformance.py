"""The bpf_conformance runner: the whole suite (read from ../shared), its negative tests, and the
file format on small files of our own."""

from __future__ import annotations

from pathlib import Path

import pytest

from sysdispatch.vm.conformance import collect, parse_test, run_case, run_paths, summary

# negative/ files the runner must fail, each for the reason shown (the rest are unused-* raw
# programs with reserved fields set, and assembly errors under "-- error": rejected as expected)
NEGATIVE_FAILURES = {
    "empty.data": "no program",
    "empty_instructions.data": "no program",
    "error.data": "expected an error, but the program loaded",
    "incorrect_return_value_high_bits.data": "r0 = 0x8877665544332211, expected 0x8977665544332211",
    "invalid_imm32_dec_range.data": "load failed: line 5:",
    "invalid_imm32_hex_range.data": "load failed: line 5:",
    "invalid_label.data": "undefined label",
    "invalid_mnemonic.data": "load failed: line 5:1",
    "invalid_offset.data": "load failed: line 4:",
    "invalid_offset_range.data": "load failed: line 5:",
    "invalid_operand_count.data": "load failed: line 4:1",
    "invalid_unknown_directive.data": "unknown section '-- Unknown directive'",
}


def test_the_whole_suite_passes(conformance_dir):
    outcomes = run_paths([conformance_dir / "tests"])
    failures = [f"{o.path.name}: {o.reason}" for o in outcomes if not o.passed]
    assert failures == []
    assert summary(outcomes) == "313 passed, 0 failed"


def test_engine_both_fails_a_file_the_engines_disagree_on_mock_jit(tmp_path, monkeypatch):
    """A JIT answering differently (mocked: the real one agrees on every file) fails the file
    under ``both`` with both answers, though each answer alone could pass."""
    from sysdispatch.vm import conformance
    case = tmp_path / "one.data"
    case.write_text("-- asm\nmov %r0, 1\nexit\n-- result\n0x1\n")
    assert run_case(case, engine="both").passed
    monkeypatch.setattr(conformance, "_jit_engine", lambda program, mem: 2)
    out = run_case(case, engine="both")
    assert not out.passed and "engines disagree: interp 1, jit 2" in out.reason


def test_negative_tests(conformance_dir):
    outcomes = run_paths([conformance_dir / "negative"])
    failed = {o.path.name: o.reason for o in outcomes if not o.passed}
    assert set(failed) == set(NEGATIVE_FAILURES)
    for name, reason in NEGATIVE_FAILURES.items():
        assert reason in failed[name], (name, failed[name])
        assert "\n" not in failed[name]
    passed = [o for o in outcomes if o.passed]
    assert all(o.path.name.startswith("unused-") or "rejected as expected" in o.reason
               for o in passed)
    assert summary(outcomes) == "48 passed, 12 failed"


def write(tmp_path: Path, text: str, name: str = "t.data") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_raw_words_and_bytes_and_raw_overrides_asm(tmp_path):
    both = write(tmp_path, "-- asm\nmov %r0, 1\nexit\n-- raw\n"
                           "0x00000007000000b7  # mov r0, 7\n"
                           "95 00 00 00 00 00 00 00\n-- result\n0x7\n")
    assert run_case(both).passed
    case = parse_test(both)
    assert case.raw()[:8] == bytes.fromhex("b700000007000000")


def test_memory_and_the_unwind_helper(tmp_path):
    # helper 5 returns r1; a 0 from it ends the program with r0 = 0
    p = write(tmp_path, "-- asm\nldxb %r1, [%r1+1]\ncall 5\nmov %r0, 9\nexit\n"
                        "-- mem\n01 00\n-- result\n0x0\n")
    assert run_case(p).passed
    p = write(tmp_path, "-- asm\nldxb %r1, [%r1]\ncall 5\nexit\n-- mem\n05\n-- result\n0x5\n")
    assert run_case(p).passed


@pytest.mark.parametrize("text, reason", [
    ("-- asm\nmov %r0, 1\nexit\n-- result\n0x2\n", "r0 = 0x1, expected 0x2"),
    ("-- asm\nmov %r0, 1\nexit\n", "no -- result section"),
    ("-- raw\nzz\n-- result\n0x0\n", "line 2: raw instruction must be"),
    ("-- raw\n0x95\n-- mem\n0g\n-- result\n0x0\n", "line 4: bad hex in -- mem"),
    ("-- asm\nmov %r0, 1\nexit\n-- result\nlots\n", "bad -- result value 'lots'"),
    ("-- asm\nldxw %r0, [%r1]\nexit\n-- result\n0x0\n", "run failed: line 2:1: pc 0: read of 4"),
    ("-- asm\nbogus %r0\nexit\n-- result\n0x0\n", "load failed: line 2:1: unknown mnemonic"),
    ("-- raw\n0x0000000000000000\n-- result\n0x0\n", "load failed: pc 0: unknown opcode 0x00"),
    ("-- raw\n\n-- result\n0x0\n", "empty -- raw section"),
    ("\x00\xff garbage\n", "no program"),
])
def test_bad_files_fail_with_one_line(tmp_path, text, reason):
    outcome = run_case(write(tmp_path, text))
    assert not outcome.passed
    assert reason in outcome.reason and "\n" not in outcome.reason


def test_expected_errors(tmp_path):
    # rejected at load, or faulting when run: both are the error the file expects
    assert run_case(write(tmp_path, "-- raw\n07 00 01 00 01 00 00 00\n0x95\n-- error\n")).passed
    assert run_case(write(tmp_path, "-- asm\nldxw %r0, [%r1]\nexit\n-- error\nany\n")).passed
    missing = run_case(tmp_path / "nope.data")
    assert not missing.passed and "cannot read" in missing.reason


def test_collect_takes_data_files_of_directories_and_named_files(tmp_path):
    a = write(tmp_path, "x", "b.data")
    write(tmp_path, "x", "a.data")
    write(tmp_path, "x", "run.sh")
    assert [p.name for p in collect([tmp_path])] == ["a.data", "b.data"]
    assert collect([a]) == [a]


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

LINES = st.sampled_from(["-- asm", "-- raw", "-- mem", "-- result", "-- error", "-- c", "# x",
                         "exit", "mov %r0, 1", "0x95", "95 00 00 00 00 00 00 00", "ff", "0x1",
                         "ldxb %r0, [%r1]", "call 5", "ja -1", "lddw %r0", "", "-- bogus"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(LINES | st.text(max_size=20), max_size=10))
def test_any_file_gives_an_outcome_never_an_exception(lines):
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.data"
        path.write_text("\n".join(lines), errors="surrogateescape")
        outcome = run_case(path)
    assert "\n" not in outcome.reason
