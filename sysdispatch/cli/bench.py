"""``sysdispatch bench vm``: how fast the engines run programs, measured side by side; the
``bench`` command, where ``bench policy`` and ``bench trace`` (from their layers) register too.

Each *workload* is a list of (program, run arguments); each *engine* runs a program and returns
a :class:`~sysdispatch.vm.interp.RunResult` (whose ``steps`` count the instructions executed).
Every round measures every workload on every engine in turn, in one process, so a noisy
neighbour slows them alike; the table shows the median over rounds and the spread
((max - min) / median) so a reader can see how much to trust a difference. Whether the process
was pinned to a CPU is printed with the results.

Other engines (a JIT) add themselves to :data:`ENGINES`, other rows to :data:`WORKLOADS` — e.g.
the cost of one dispatch through a 10-slot versus a 400-slot table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import SysdispatchError
from ..vm import jit, jit_bench
from ..vm.interp import RunResult, run
from ..vm.isa import FP, PSEUDO_MAP_FD, lddw, make
from ..vm.maps import ProgArray
from ..vm.program import TAIL_CALL, Program

# An engine: run(program, **kwargs) -> RunResult
Engine = Callable[..., RunResult]
ENGINES: dict[str, Engine] = {"interp": run, "jit": jit.run}

SHARED_CONFORMANCE = Path(__file__).resolve().parents[3] / "shared" / "conformance" / \
    "bpf_conformance" / "tests"


@dataclass
class Workload:
    name: str
    cases: list[tuple[Program, dict[str, Any]]]
    note: str = ""


@dataclass
class Measurement:
    insns: int
    runs: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.insns / self.seconds

    @property
    def us_per_run(self) -> float:
        return 1e6 * self.seconds / self.runs


def conformance_workload(directory: Path = SHARED_CONFORMANCE) -> Workload | str:
    """Every program of the conformance suite with its memory; a reason string if unavailable."""
    from ..vm.conformance import CONFORMANCE_HELPERS, load_case, parse_test
    if not directory.is_dir():
        return f"conformance programs: {directory} not found (../shared is missing)"
    cases = []
    for path in sorted(directory.glob("*.data")):
        try:
            case = parse_test(path)
            program = load_case(case)
            mem = case.mem()
        except SysdispatchError as exc:
            return f"conformance programs: {path.name}: {exc}"
        cases.append((program, {"mem": mem, "helpers": CONFORMANCE_HELPERS}))
    return Workload(f"conformance ({len(cases)} programs)", cases, "each run once per pass")


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


def _jit_bench_row(build: Callable[[], "jit_bench.Workload"]) -> Callable[[], Workload]:
    def row() -> Workload:
        w = build()
        return Workload(w.name, w.cases, w.note)
    return row


# Workload builders, in table order: each returns a Workload or a reason it cannot run here.
# The JIT's rows: one dispatch (syscall_entry -> tail call -> handler) through a 300-slot
# table and with 10 vs 400 handlers (which must cost the same), a filter, long programs.
WORKLOADS: list[Callable[[], Workload | str]] = [
    conformance_workload, tail_chain_workload, *map(_jit_bench_row, jit_bench.BUILDERS)]


def measure(engine: Engine, workload: Workload, min_time: float) -> Measurement:
    """Run every case of ``workload`` in passes until ``min_time`` seconds have gone by."""
    insns = runs = 0
    clock = time.perf_counter
    start = clock()
    while True:
        for program, kwargs in workload.cases:
            insns += engine(program, **kwargs).steps
        runs += len(workload.cases)
        elapsed = clock() - start
        if elapsed >= min_time:
            return Measurement(insns, runs, elapsed)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks", description=__doc__.split("\n\n")[0])
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    what = p.add_subparsers(dest="bench", metavar="WHAT")
    vm = what.add_parser("vm", help="instructions per second of the engines",
                         description="Instructions per second on the conformance programs and a "
                                     "33-deep tail-call chain, engines side by side.")
    vm.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    vm.add_argument("--min-time", type=float, default=0.3, metavar="SECONDS",
                    help="minimum time per measurement (default 0.3)")
    vm.add_argument("--engine", action="append", choices=sorted(ENGINES),
                    help="engine to measure (repeatable; default all)")
    vm.add_argument("--cpu", type=int, metavar="N", help="pin this process to CPU N first")
    vm.add_argument("--json", action="store_true", help="print the results as JSON")
    vm.set_defaults(func=cmd_bench_vm)
    # the other layers' benchmarks register their own sub-commands (cli may import every layer)
    from ..trace.bench import register as register_trace_bench
    register_trace_bench(what)
    from ..policy.bench import register as register_policy_bench
    register_policy_bench(what)


def _affinity() -> str:
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return "unknown"
    return ",".join(map(str, cpus))


def cmd_bench_vm(args: argparse.Namespace) -> int:
    if args.rounds < 1 or args.min_time <= 0:
        raise SysdispatchError("--rounds must be >= 1 and --min-time > 0")
    pinned = False
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
        pinned = True
    engines = args.engine or sorted(ENGINES)
    workloads: list[Workload] = []
    skipped: list[str] = []
    for build in WORKLOADS:
        w = build()
        (workloads.append if isinstance(w, Workload) else skipped.append)(w)
    # warm-up: compile every program once per engine, outside the measurements
    for w in workloads:
        for e in engines:
            for program, kwargs in w.cases:
                ENGINES[e](program, **kwargs)
    samples: dict[tuple[str, str], list[Measurement]] = {
        (w.name, e): [] for w in workloads for e in engines}
    for _ in range(args.rounds):
        for w in workloads:
            for e in engines:
                samples[(w.name, e)].append(measure(ENGINES[e], w, args.min_time))
    rows = []
    for w in workloads:
        for e in engines:
            ms = samples[(w.name, e)]
            rates = [m.rate for m in ms]
            med = statistics.median(rates)
            rows.append({
                "workload": w.name, "engine": e, "note": w.note,
                "insns_per_run": ms[0].insns / ms[0].runs,
                "us_per_run": statistics.median(m.us_per_run for m in ms),
                "insns_per_s_median": med, "insns_per_s_min": min(rates),
                "insns_per_s_max": max(rates),
                "spread": (max(rates) - min(rates)) / med if med else 0.0,
            })
    header = (f"python {platform.python_version()}, {args.rounds} rounds x {args.min_time:g} s, "
              + (f"pinned to CPU {args.cpu}" if pinned else f"not pinned (CPUs {_affinity()})"))
    notes = jit_bench.summary(rows)
    if args.json:
        print(json.dumps({"setup": header, "rows": rows, "skipped": skipped,
                          "speedups": jit_bench.speedups(rows),
                          "dispatch_balance": {e: jit_bench.dispatch_balance(rows, e)
                                               for e in engines}}, indent=2))
        return 0
    print(header)
    for reason in skipped:
        print(f"skipped: {reason}")
    name_w = max([len(r["workload"]) for r in rows] + [8])
    print(f"{'workload':<{name_w}}  {'engine':<8} {'insns/run':>9} {'us/run':>9} "
          f"{'Minsn/s':>8}  {'min..max':>13}  {'spread':>6}")
    for r in rows:
        print(f"{r['workload']:<{name_w}}  {r['engine']:<8} {r['insns_per_run']:>9.1f} "
              f"{r['us_per_run']:>9.2f} {r['insns_per_s_median'] / 1e6:>8.2f}  "
              f"{r['insns_per_s_min'] / 1e6:>6.2f}..{r['insns_per_s_max'] / 1e6:<6.2f} "
              f"{100 * r['spread']:>6.1f}%")
    for line in notes:
        print(line)
    return 0
