"""The bpf_conformance suite's ``.data`` files: reading them and running them on an engine.

A test file has sections introduced by ``-- NAME`` lines (``#`` starts a comment):

* ``-- asm``: the program in the suite's (uBPF) assembly syntax;
* ``-- raw``: the program as instructions, one per line, either one ``0x…`` 64-bit little-endian
  word or 8 hex bytes; it overrides ``-- asm``;
* ``-- mem``: hex bytes given to the program (r1 = their address, r2 = their length);
* ``-- result``: the expected r0, compared on all 64 bits;
* ``-- error``: loading (or running) must fail; the text is the suite's reference runtime's
  message, which ours need not match;
* ``-- c`` and ``-- no register offset``: notes, ignored.

The suite's helper 5 returns its r1, and a 0 returned by it ends the program with r0 = 0
(:data:`CONFORMANCE_HELPERS`). Every outcome is one :class:`Outcome`; a file the runner cannot
make sense of (no program, no expected result, bad hex) fails with a one-line reason rather than
raising. Engines are looked up by name in :data:`ENGINES`, so another engine can join the runner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ..errors import Location, SysdispatchError
from .helpers import Arg, Helper, Ret, Unwind
from .interp import run
from .program import Program

KNOWN_SECTIONS = ("asm", "raw", "mem", "result", "error", "c", "no register offset")


def _unwind_helper(env, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    if r1 == 0:
        raise Unwind(0)
    return r1


# The suite's helpers: only id 5, "return r1, and end the program when it is 0".
CONFORMANCE_HELPERS: dict[int, Helper] = {
    5: Helper(5, "unwind", (Arg.SCALAR,), Ret.SCALAR, _unwind_helper,
              "returns r1; a 0 ends the program with r0 = 0"),
}

# An engine runs a loaded program on the test's memory and returns r0 (raising on a fault).
Engine = Callable[[Program, "bytes | None"], int]


def _interp_engine(program: Program, mem: bytes | None) -> int:
    return run(program, mem=None if mem is None else bytearray(mem),
               helpers=CONFORMANCE_HELPERS).r0


def _jit_engine(program: Program, mem: bytes | None) -> int:
    from . import jit
    return jit.run(program, mem=None if mem is None else bytearray(mem),
                   helpers=CONFORMANCE_HELPERS).r0


def _both_engine(program: Program, mem: bytes | None) -> int:
    """Both engines; they must agree on r0, or on the fault (its text and pc)."""
    results: list = []
    for engine in (_interp_engine, _jit_engine):
        try:
            results.append(engine(program, mem))
        except SysdispatchError as exc:
            results.append(exc)
    seen = [(type(r).__name__, str(r), r.pc) if isinstance(r, SysdispatchError) else r
            for r in results]
    if seen[0] != seen[1]:
        raise SysdispatchError(f"engines disagree: interp {seen[0]}, jit {seen[1]}")
    if isinstance(results[1], SysdispatchError):
        raise results[1]
    return results[1]


ENGINES: dict[str, Engine] = {"interp": _interp_engine, "jit": _jit_engine, "both": _both_engine}


class TestFileError(SysdispatchError):
    """A test file that does not follow the format (reported as a failure, never raised out)."""


@dataclass
class TestCase:
    """One parsed ``.data`` file. Line numbers are 1-based, for error locations."""

    __test__ = False  # not a pytest class, despite its name

    path: Path
    sections: dict[str, str]
    first_line: dict[str, int]

    @property
    def expects_error(self) -> bool:
        return "error" in self.sections

    def asm_text(self) -> str | None:
        """The ``-- asm`` section, padded with empty lines so line numbers match the file."""
        if "asm" not in self.sections:
            return None
        return "\n" * (self.first_line["asm"] - 1) + self.sections["asm"]

    def _lines(self, name: str) -> Iterable[tuple[int, str]]:
        for i, line in enumerate(self.sections.get(name, "").splitlines()):
            text = line.split("#", 1)[0].strip()
            if text:
                yield self.first_line[name] + i, text

    def _fail(self, line: int, message: str) -> TestFileError:
        return TestFileError(f"line {line}: {message}")

    def raw(self) -> bytes | None:
        if "raw" not in self.sections:
            return None
        out = bytearray()
        for line, text in self._lines("raw"):
            words = text.split()
            try:
                if len(words) == 1 and words[0].lower().startswith("0x"):
                    out += int(words[0], 16).to_bytes(8, "little")
                elif len(words) == 8:
                    out += bytes(int(w, 16) for w in words)
                else:
                    raise ValueError
            except (ValueError, OverflowError):
                raise self._fail(line, "raw instruction must be one 0x… 64-bit word or 8 hex "
                                       f"bytes, got '{text}'") from None
        return bytes(out)

    def mem(self) -> bytes | None:
        if "mem" not in self.sections:
            return None
        out = bytearray()
        for line, text in self._lines("mem"):
            try:
                out += bytes.fromhex(text)
            except ValueError:
                raise self._fail(line, f"bad hex in -- mem: '{text}'") from None
        return bytes(out)

    def result(self) -> int | None:
        lines = list(self._lines("result"))
        if not lines:
            return None
        line, text = lines[0]
        try:
            return int(text, 0) & 0xFFFF_FFFF_FFFF_FFFF
        except ValueError:
            raise self._fail(line, f"bad -- result value '{text}'") from None


def parse_test(path: Path | str, text: str | None = None) -> TestCase:
    path = Path(path)
    if text is None:
        text = path.read_text(errors="replace")
    sections: dict[str, str] = {}
    first: dict[str, int] = {}
    current: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        m = re.match(r"--\s+(.*?)\s*$", line)
        if m:
            current = m.group(1)
            if current not in KNOWN_SECTIONS:
                raise TestFileError(f"line {number}: unknown section '-- {current}'")
            sections.setdefault(current, "")
            first.setdefault(current, number + 1)
            continue
        if current is not None:
            sections[current] += line + "\n"
    return TestCase(path, sections, first)


@dataclass(frozen=True)
class Outcome:
    path: Path
    passed: bool
    reason: str = ""


def load_case(case: TestCase) -> Program:
    """The program of ``case`` (raw overrides asm), loaded with the suite's helper ids."""
    helpers = frozenset(CONFORMANCE_HELPERS)
    raw = case.raw()
    if raw is not None:
        if not raw:
            raise TestFileError("empty -- raw section")
        return Program.from_bytes(raw, helpers=helpers, name=case.path.stem)
    asm = case.asm_text()
    if asm is None or not asm.strip():
        raise TestFileError("no program (neither -- asm nor -- raw)")
    from .asm import assemble  # the assembler is only needed for files with -- asm
    return assemble(asm, filename=str(case.path), helpers=helpers, name=case.path.stem)


def run_case(path: Path | str, engine: str = "interp") -> Outcome:
    """Run one test file; never raises for anything wrong with the file or the program."""
    path = Path(path)
    run_engine = ENGINES[engine]
    try:
        case = parse_test(path)
        try:
            program = load_case(case)
        except TestFileError:
            raise
        except SysdispatchError as exc:
            if case.expects_error:
                return Outcome(path, True, f"rejected as expected: {exc}")
            return Outcome(path, False, f"load failed: {_here(exc, path)}")
        if not case.expects_error and "result" not in case.sections:
            raise TestFileError("no -- result section")
        expected = case.result()
        mem = case.mem()
        try:
            r0 = run_engine(program, mem)
        except SysdispatchError as exc:
            if case.expects_error:
                return Outcome(path, True, f"failed as expected: {exc}")
            return Outcome(path, False, f"run failed: {_here(exc, path)}")
        if case.expects_error:
            return Outcome(path, False, f"expected an error, but the program loaded and returned "
                                        f"0x{r0:x}")
        if expected is None:
            return Outcome(path, False, "empty -- result section")
        if r0 != expected:
            return Outcome(path, False, f"r0 = 0x{r0:x}, expected 0x{expected:x}")
        return Outcome(path, True)
    except TestFileError as exc:
        return Outcome(path, False, _one_line(exc))
    except OSError as exc:
        return Outcome(path, False, f"cannot read: {exc.strerror or exc}")
    except RecursionError:  # absurdly nested input: still one line, never a traceback
        return Outcome(path, False, "input too deeply nested")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _here(exc: SysdispatchError, path: Path) -> str:
    """The error's line without the file name the runner already prints first."""
    if exc.loc is not None and exc.loc.file == str(path):
        exc.loc = Location(None, exc.loc.line, exc.loc.col)
        if exc.loc.line is not None:
            return f"line {_one_line(exc)}"
    return _one_line(exc)


def collect(paths: Iterable[Path | str]) -> list[Path]:
    """Test files: each directory's ``*.data`` files (sorted), each file named directly."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.glob("*.data")))
        else:
            out.append(p)
    return out


def run_paths(paths: Iterable[Path | str], engine: str = "interp") -> list[Outcome]:
    return [run_case(p, engine) for p in collect(paths)]


def summary(outcomes: list[Outcome]) -> str:
    passed = sum(o.passed for o in outcomes)
    return f"{passed} passed, {len(outcomes) - passed} failed"
