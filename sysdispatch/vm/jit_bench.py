"""Benchmarks of the JIT against the interpreter: workloads, an interleaved timer, a summary.

``sysdispatch bench vm`` calls these (see cli/bench.py); ``python3 -m sysdispatch.vm.jit_bench``
runs them on their own. Workloads:

* the bpf_conformance programs (each run once per pass) — short programs, where per-run set-up
  weighs most;
* long random programs (progen, 300-slot bodies, every v4 form) — the steady instruction rate,
  bounded by the semantics' helper functions (signed division, byte swaps) both engines share;
* a libseccomp-shaped filter: a chain of 400 ``nr == K`` tests with shared verdicts;
* one *dispatch*: a seccomp-shaped ``syscall_entry`` (arch check, load nr, ``tail_call`` into a
  PROG_ARRAY indexed by nr, a default verdict when the slot is empty) and a small handler that
  checks an argument — through a 300-slot table, and through a 512-slot table holding 10 or
  400 handlers. A slot is one list index, so the cost must not depend on how many are filled.

Every round times every workload on every engine in turn in one process (a noisy neighbour slows
them alike); medians over rounds are reported with their spread. Speed claims live here, never
in tests.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import interp, jit, progen
from .isa import FP, PSEUDO_MAP_FD, lddw, make
from .maps import ProgArray
from .program import SECCOMP, TAIL_CALL, Program

Case = tuple[Program, dict[str, Any]]
ENGINES: dict[str, Callable] = {"interp": interp.run, "jit": jit.run}

# The dispatch programs only compare the ctx's fields with values the benchmark itself puts
# there: these are workload values, not claims about any architecture or action.
ARCH_TAG = 0xC000003E
VERDICT_DEFAULT, VERDICT_MATCH, VERDICT_OTHER, VERDICT_BAD_ARCH = 0x7FFF0000, 0x50001, 0x7FFF0001, 0
DISPATCH_SLOTS = 512
# Where ../shared (beside the checkout) keeps the bpf_conformance programs.
SHARED_CONFORMANCE = Path(__file__).resolve().parents[3] / "shared" / "conformance" / \
    "bpf_conformance" / "tests"


@dataclass
class Workload:
    name: str
    cases: list[Case]
    note: str = ""


# --- workloads ---------------------------------------------------------------------------------

def syscall_entry(table: ProgArray) -> Program:
    """Check arch, tail-call ``table[nr]``; the default verdict when that falls through."""
    return Program.load([
        make("mov", 6, 1, reg=True),
        make("ldxw", 0, 6, off=4),
        make("jne32", 0, imm=ARCH_TAG - (1 << 32), off=7, reg=False),
        make("ldxw", 3, 6, off=0),
        make("mov", 1, 6, reg=True),
        *lddw(2, 0, PSEUDO_MAP_FD),
        make("call", imm=TAIL_CALL),
        make("mov", 0, imm=VERDICT_DEFAULT, reg=False),
        make("exit"),
        make("mov", 0, imm=VERDICT_BAD_ARCH, reg=False),
        make("exit"),
    ], maps=[table], prog_type=SECCOMP, name="syscall_entry")


def handler(nr: int) -> Program:
    """A handler: its verdict depends on args[0] (the low and high halves, as filters do)."""
    return Program.load([
        make("ldxw", 2, 1, off=16),
        make("ldxw", 3, 1, off=20),
        make("jne", 3, imm=0, off=3, reg=False),
        make("jne", 2, imm=nr & 0xFFFF, off=2, reg=False),
        make("mov", 0, imm=VERDICT_MATCH, reg=False),
        make("exit"),
        make("mov", 0, imm=VERDICT_OTHER, reg=False),
        make("exit"),
    ], prog_type=SECCOMP, name=f"handler{nr}")


def seccomp_ctx(nr: int, arg0: int) -> bytes:
    """64 bytes shaped like struct seccomp_data: nr, arch, ip, args[6]."""
    return (nr.to_bytes(4, "little") + ARCH_TAG.to_bytes(4, "little") + bytes(8)
            + arg0.to_bytes(8, "little") + bytes(40))


def dispatch_workload(handlers: int, slots: int = DISPATCH_SLOTS) -> Workload:
    """``syscall_entry`` over a ``slots``-slot table with ``handlers`` handlers spread over it;
    the cases dispatch to every handler in turn (half of them matching args[0])."""
    table = ProgArray(slots, name="syscalls")
    rng = random.Random(handlers * 7919 + slots)
    nrs = sorted(rng.sample(range(slots), handlers))
    for nr in nrs:
        table.update(nr, handler(nr))
    entry = syscall_entry(table)
    cases = [(entry, {"ctx": seccomp_ctx(nr, nr if i % 2 else nr + 1)}) for i, nr in enumerate(nrs)]
    return Workload(f"dispatch, {handlers} handlers in {slots} slots", cases,
                    "one tail call per run")


def filter_chain_workload(tests: int = 400, values: int = 450) -> Workload:
    """A filter shaped like libseccomp's output for a large allow-list: check arch, load nr,
    then a chain of ``if nr == K goto allow`` tests, the verdicts shared by every test. The
    cases are nr values spread over ``values``: on average half the chain runs."""
    rng = random.Random(tests)
    allowed = sorted(rng.sample(range(values), tests))
    insns = [make("ldxw", 0, 1, off=4),
             make("jne32", 0, imm=ARCH_TAG - (1 << 32), off=len(allowed) + 5, reg=False),
             make("ldxw", 0, 1, off=0)]
    for i, nr in enumerate(allowed):  # to "allow": past the remaining tests and the default
        insns.append(make("jeq32", 0, imm=nr, off=len(allowed) - i + 1, reg=False))
    insns += [make("mov32", 0, imm=VERDICT_OTHER, reg=False), make("exit"),
              make("mov32", 0, imm=VERDICT_DEFAULT, reg=False), make("exit"),
              make("mov32", 0, imm=VERDICT_BAD_ARCH, reg=False), make("exit")]
    program = Program.load(insns, prog_type=SECCOMP, name="filter")
    cases = [(program, {"ctx": seccomp_ctx(nr, 0)}) for nr in range(0, values, 3)]
    return Workload(f"filter, chain of {tests} tests", cases, "libseccomp-shaped")


def long_programs_workload(count: int = 20, length: int = 300) -> Workload:
    """Random straight-line-and-branches programs: the steady instruction rate."""
    cases = [(Program.load(progen.random_program(random.Random(seed), length=length),
                           name=f"progen{seed}"), {}) for seed in range(count)]
    return Workload(f"random programs ({length}-slot bodies)", cases, "progen, all features")


def tail_chain_program(slot: int, table: ProgArray) -> Program:
    """One link: a little work (count into r9, which survives tail calls), then tail-call
    ``slot``; when the call falls through, return r9."""
    insns = [
        make("add", 9, imm=1, reg=False),
        make("mov", 8, 9, reg=True),
        make("lsh", 8, imm=3, reg=False),
        make("stxdw", FP, 8, off=-8),
        make("ldxdw", 7, FP, off=-8),
        *lddw(2, 0, PSEUDO_MAP_FD),
        make("mov", 3, imm=slot, reg=False),
        make("call", imm=TAIL_CALL),
        make("mov", 0, 9, reg=True),
        make("exit"),
    ]
    return Program.load(insns, maps=[table], name=f"link{slot - 1}")


def tail_chain_workload(links: int = 40) -> Workload:
    """``links`` programs, each tail-calling the next: the kernel's limit stops it at 34."""
    table = ProgArray(links + 1, name="chain")
    programs = [tail_chain_program(i + 1, table) for i in range(links)]
    for i, p in enumerate(programs):
        table.update(i, p)
    return Workload("tail-call chain (33 tail calls)", [(programs[0], {})],
                    "34 programs per run")


def conformance_workload(directory: Path = SHARED_CONFORMANCE) -> Workload | str:
    """Every program of the conformance suite in ``directory`` with its memory."""
    from ..errors import SysdispatchError
    from .conformance import CONFORMANCE_HELPERS, load_case, parse_test
    if not directory.is_dir():
        return f"conformance programs: {directory} not found (../shared is missing)"
    cases = []
    for path in sorted(directory.glob("*.data")):
        try:
            case = parse_test(path)
            cases.append((load_case(case), {"mem": case.mem(), "helpers": CONFORMANCE_HELPERS}))
        except SysdispatchError as exc:
            return f"conformance programs: {path.name}: {exc}"
    return Workload(f"conformance ({len(cases)} programs)", cases, "each run once per pass")


# The rows of ``sysdispatch bench vm``, as zero-argument builders (each returns a Workload or
# the reason it cannot run here): the conformance programs, a 33-deep tail-call chain, one
# dispatch through a 300-slot table, 10 vs 400 handlers in one table (the balance must stay
# within +-20 %), a long filter, long random programs.
BUILDERS: list[Callable[[], Workload | str]] = [
    conformance_workload,
    tail_chain_workload,
    lambda: dispatch_workload(300, 300),
    lambda: dispatch_workload(10),
    lambda: dispatch_workload(400),
    filter_chain_workload,
    long_programs_workload,
]


def workloads() -> tuple[list[Workload], list[str]]:
    """The workloads that can run here, and the reasons the others cannot."""
    built = [build() for build in BUILDERS]
    return ([w for w in built if isinstance(w, Workload)],
            [w for w in built if not isinstance(w, Workload)])


# --- timing --------------------------------------------------------------------------------------

@dataclass
class Sample:
    insns: int
    runs: int
    seconds: float

    @property
    def us_per_run(self) -> float:
        return 1e6 * self.seconds / self.runs

    @property
    def rate(self) -> float:
        return self.insns / self.seconds


def measure(run: Callable, cases: list[Case], min_time: float) -> Sample:
    """Run every case in passes until ``min_time`` seconds have gone by."""
    insns = runs = 0
    clock = time.perf_counter
    start = clock()
    while True:
        for program, kwargs in cases:
            insns += run(program, **kwargs).steps
        runs += len(cases)
        elapsed = clock() - start
        if elapsed >= min_time:
            return Sample(insns, runs, elapsed)


def compare(loads: list[Workload], *, rounds: int = 5, min_time: float = 0.3,
            engines: dict[str, Callable] = ENGINES) -> list[dict]:
    """Median figures per (workload, engine), rounds interleaved."""
    for w in loads:  # compile and warm every program outside the timings
        for run in engines.values():
            for program, kwargs in w.cases:
                run(program, **kwargs)
    samples: dict[tuple[str, str], list[Sample]] = {(w.name, e): [] for w in loads
                                                    for e in engines}
    for _ in range(rounds):
        for w in loads:
            for e, run in engines.items():
                samples[(w.name, e)].append(measure(run, w.cases, min_time))
    rows = []
    for w in loads:
        for e in engines:
            ss = samples[(w.name, e)]
            rates = [s.rate for s in ss]
            med = statistics.median(rates)
            rows.append({"workload": w.name, "engine": e, "note": w.note,
                         "insns_per_run": ss[0].insns / ss[0].runs,
                         "us_per_run": statistics.median(s.us_per_run for s in ss),
                         "insns_per_s_median": med, "insns_per_s_min": min(rates),
                         "insns_per_s_max": max(rates),
                         "spread": (max(rates) - min(rates)) / med if med else 0.0})
    return rows


def floor(loads: list[Workload], *, rounds: int = 3, min_time: float = 0.2) -> dict[str, tuple]:
    """Per workload, the best us/run of two engines that run nothing: one returns a result made
    once (the timing loop and the call with the case's keyword arguments), one makes a
    :class:`RunResult` per call as every engine must. No engine can go below the second, so
    ``interp us/run / floor`` bounds any engine's speed-up on that row."""
    made = interp.RunResult(0, 1, (), 0)
    new = tuple.__new__

    def call_only(program, ctx=None, *, host=None, mem=None, max_steps=0, helpers=None):
        return made

    def with_result(program, ctx=None, *, host=None, mem=None, max_steps=0, helpers=None):
        return new(interp.RunResult, (0, 1, (program,), 0))

    out = {}
    for w in loads:
        out[w.name] = tuple(min(measure(e, w.cases, min_time).us_per_run for _ in range(rounds))
                            for e in (call_only, with_result))
    return out


def dispatch_balance(rows: list[dict], engine: str = "jit") -> float | None:
    """(cost with 400 handlers) / (cost with 10) - 1 for ``engine``: should stay within ±20 %."""
    cost = {r["workload"]: r["us_per_run"] for r in rows if r["engine"] == engine}
    few = cost.get(f"dispatch, 10 handlers in {DISPATCH_SLOTS} slots")
    many = cost.get(f"dispatch, 400 handlers in {DISPATCH_SLOTS} slots")
    return None if not few or not many else many / few - 1


def speedups(rows: list[dict]) -> dict[str, float]:
    """Per workload: interpreter time per run / JIT time per run."""
    cost = {(r["workload"], r["engine"]): r["us_per_run"] for r in rows}
    return {w: cost[(w, "interp")] / cost[(w, "jit")] for (w, e) in cost
            if e == "jit" and (w, "interp") in cost and cost[(w, "jit")]}


def summary(rows: list[dict], floors: dict[str, tuple] | None = None) -> list[str]:
    """Lines to print under a table of ``rows`` (dicts with workload, engine, us_per_run), with
    the :func:`floor` of each workload when given."""
    lines = [f"jit vs interp, {w}: {x:.1f}x" for w, x in speedups(rows).items()]
    for e in ("interp", "jit"):
        bal = dispatch_balance(rows, e)
        if bal is not None:
            lines.append(f"{e}: dispatch with 400 handlers costs {100 * bal:+.1f} % vs 10 handlers")
    cost = {(r["workload"], r["engine"]): r["us_per_run"] for r in rows}
    for name, (call, result) in (floors or {}).items():
        if (name, "interp") in cost:
            lines.append(f"floor, {name}: {call:.2f} us/run calling, {result:.2f} with a result: "
                         f"at most {cost[(name, 'interp')] / result:.1f}x the interpreter")
    return lines


def main() -> None:
    """``python3 -m sysdispatch.vm.jit_bench`` (ROUNDS, MIN_TIME from the environment): the
    rows of ``sysdispatch bench vm`` as plain lines."""
    loads, skipped = workloads()
    rounds, min_time = int(os.environ.get("ROUNDS", 5)), float(os.environ.get("MIN_TIME", 0.3))
    rows = compare(loads, rounds=rounds, min_time=min_time)
    print(f"python {platform.python_version()}, {rounds} rounds x {min_time:g} s")
    for reason in skipped:
        print(f"skipped: {reason}")
    for r in rows:
        print(f"{r['workload']:<38} {r['engine']:<6} {r['insns_per_run']:>8.1f} insns "
              f"{r['us_per_run']:>9.2f} us/run {r['insns_per_s_median'] / 1e6:>7.2f} Minsn/s "
              f"spread {100 * r['spread']:>5.1f} %")
    for line in summary(rows, floor(loads)):
        print(line)


if __name__ == "__main__":
    main()
