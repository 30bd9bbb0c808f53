"""``sysdispatch bench vm``: how fast the engines run programs, measured side by side; the
``bench`` command, where ``bench policy`` and ``bench trace`` (from their layers) register too.

The workloads, the timing and the floor live in :mod:`sysdispatch.vm.jit_bench`; this module
reads the options and prints. Every round measures every workload on every engine in turn, in
one process, so a noisy neighbour slows them alike; the table shows the median over rounds and
the spread ((max - min) / median) so a reader can see how much to trust a difference, then the
speed-ups, the dispatch balance (10 vs 400 handlers) and each row's *floor*: what the timing
loop and a result cost with no engine at all, which bounds any engine's speed-up on that row.
Whether the process was pinned to a CPU is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

from ..errors import SysdispatchError
from ..vm import jit_bench
from ..vm.jit_bench import ENGINES


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
    engines = {e: ENGINES[e] for e in (args.engine or sorted(ENGINES))}
    workloads, skipped = jit_bench.workloads()
    rows = jit_bench.compare(workloads, rounds=args.rounds, min_time=args.min_time,
                             engines=engines)
    # the floor is a minimum over a loop that does nothing else: a few short rounds find it
    floors = jit_bench.floor(workloads, rounds=min(args.rounds, 3),
                             min_time=min(args.min_time, 0.1))
    header = (f"python {platform.python_version()}, {args.rounds} rounds x {args.min_time:g} s, "
              + (f"pinned to CPU {args.cpu}" if pinned else f"not pinned (CPUs {_affinity()})"))
    if args.json:
        print(json.dumps({"setup": header, "rows": rows, "skipped": skipped,
                          "speedups": jit_bench.speedups(rows), "floor": floors,
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
    for line in jit_bench.summary(rows, floors):
        print(line)
    return 0
