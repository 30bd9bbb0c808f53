"""``sysdispatch bench policy``: verdicts per second through a policy, engines side by side.

Two workloads, measured in one process, every round interleaving every (workload, engine,
cache) cell so a noisy neighbour slows them alike; the table shows the median over rounds and
the spread ((max - min) / median):

* **stream** — a synthetic but realistic event stream (until recorded traces exist): x86_64
  syscalls drawn with the frequencies a typical program shows under ``strace -c`` (reads and
  writes, opens and stats, memory, futexes, signals, polling; a few ioctl, clone, socket,
  execve), with plausible arguments (small fds, user-space pointers, real open flags), run
  through ``filters/container.toml``.
* **dispatch 10 / 400 slots** — the cost of one dispatch through an nr table with 10 or 400
  populated slots (each a two-instruction handler); table size must not matter (a PROG_ARRAY
  is indexed, not searched).

Each cell runs with the verdict cache off (every call runs the programs) and on (verdicts that
depend only on (arch, nr) come from the cache; see loaded.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import SysdispatchError
from ..seccomp import actions
from ..seccomp.data import AUDIT_ARCH_X86_64, SeccompData
from . import _arch
from .loaded import ENGINES, LoadedPolicy
from .model import Act, Handler, Policy, Table
from .parse import load

CONTAINER = Path(__file__).resolve().parents[2] / "filters" / "container.toml"
O_RDONLY, O_WRONLY, O_CREAT, O_TRUNC, O_CLOEXEC, O_DIRECTORY = 0, 1, 0o100, 0o1000, 0o2000000, \
    0o200000
STACK, HEAP = 0x7FFD_1234_5000, 0x5555_5555_9000

# (syscall, weight, argument makers): weights are per mille of a typical run's syscalls.
_MIX: list[tuple[str, int, tuple]] = [
    ("read", 190, ("fd", "ptr", 4096)), ("write", 110, ("fd", "ptr", 64)),
    ("openat", 55, (0xFFFFFF9C, "ptr", "oflags")), ("close", 55, ("fd",)),
    ("newfstatat", 50, ("fd", "ptr", "ptr", 0x1000)), ("fstat", 30, ("fd", "ptr")),
    ("lseek", 30, ("fd", 0, 1)), ("mmap", 55, (0, 8192, 3, 0x22, 0xFFFFFFFF, 0)),
    ("mprotect", 25, ("ptr", 4096, 1)), ("munmap", 15, ("ptr", 8192)), ("brk", 15, (0,)),
    ("futex", 50, ("ptr", 0x81, 1)), ("rt_sigaction", 20, (13, "ptr", 0, 8)),
    ("rt_sigprocmask", 30, (0, "ptr", "ptr", 8)), ("poll", 20, ("ptr", 2, 1000)),
    ("epoll_wait", 25, (4, "ptr", 64, -1)), ("recvfrom", 20, ("fd", "ptr", 65536, 0, 0, 0)),
    ("sendto", 15, ("fd", "ptr", 512, 0x4000, 0, 0)), ("getdents64", 12, ("fd", "ptr", 32768)),
    ("ioctl", 30, ("fd", "ioctl", "ptr")), ("fcntl", 20, ("fd", 1, 0)),
    ("pread64", 15, ("fd", "ptr", 4096, 0)), ("access", 8, ("ptr", 4)),
    ("readlink", 8, ("ptr", "ptr", 4096)), ("getrandom", 5, ("ptr", 16, 0)),
    ("clock_nanosleep", 8, (1, 0, "ptr", 0)), ("getpid", 10, ()), ("gettid", 5, ()),
    ("sched_yield", 5, ()), ("pipe2", 3, ("ptr", O_CLOEXEC)), ("dup2", 3, ("fd", "fd")),
    ("wait4", 3, (-1, "ptr", 0, 0)), ("socket", 3, ("family", 0x80801, 0)),
    ("clone", 3, (0x1200011, 0, 0, "ptr", 0)), ("execve", 1, ("ptr", "ptr", "ptr")),
    ("prctl", 2, (15, "ptr", 0, 0, 0)), ("exit_group", 1, (0,)), ("mount", 1, ("ptr", "ptr")),
]


def event_stream(n: int = 10_000, seed: int = 1) -> list[SeccompData]:
    """``n`` x86_64 syscalls with realistic frequencies and arguments (deterministic)."""
    rng = random.Random(seed)
    names = [m[0] for m in _MIX]
    weights = [m[1] for m in _MIX]
    makers = {m[0]: m[2] for m in _MIX}
    numbers = {name: _arch.syscall_number("x86_64", name) for name in names}

    def arg(kind) -> int:
        if isinstance(kind, int):
            return kind & 0xFFFFFFFFFFFFFFFF
        return {
            "fd": lambda: rng.choice((0, 1, 2, 3, 3, 4, 5, 7)),
            "ptr": lambda: rng.choice((STACK, HEAP)) + 16 * rng.randrange(256),
            "oflags": lambda: rng.choice((O_RDONLY | O_CLOEXEC, O_RDONLY | O_CLOEXEC |
                                          O_DIRECTORY, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC)),
            "ioctl": lambda: rng.choice((0x5401, 0x5401, 0x541B, 0x5413)),   # TCGETS, FIONREAD..
            "family": lambda: rng.choice((1, 1, 2, 10, 16)),
        }[kind]()

    out = []
    for name in rng.choices(names, weights, k=n):
        out.append(SeccompData(numbers[name], AUDIT_ARCH_X86_64, 0x7F00_0000_1000,
                               tuple(arg(k) for k in makers[name])))
    return out


def slots_policy(populated: int) -> Policy:
    """A policy whose nr table has ``populated`` slots (numbers 0 .. populated-1, whether
    libseccomp names them or not), each a one-line ERRNO handler."""
    numbers = range(populated)
    handlers = {f"h{nr}": Handler(f"h{nr}", default=Act(ret=actions.ERRNO | (nr % 4095 + 1)))
                for nr in numbers}
    table = Table("syscalls", "nr", by_arch={"x86_64": {nr: f"h{nr}" for nr in numbers}})
    return Policy(f"slots-{populated}", ("x86_64",), Act(ret=actions.ALLOW),
                  actions.KILL_PROCESS, {"syscalls": table}, handlers)


@dataclass
class Workload:
    name: str
    policy: Policy
    events: list[SeccompData]
    note: str


def workloads(events: int = 4000) -> list[Workload]:
    stream = event_stream(events)
    out = [Workload("container stream", load(CONTAINER), stream,
                    f"{events} events, {len({e.nr for e in stream})} distinct syscalls")]
    for populated in (10, 400):
        pol = slots_policy(populated)
        hit = sorted(pol.tables["syscalls"].by_arch["x86_64"])
        evs = [SeccompData(hit[i % len(hit)]) for i in range(events)]
        out.append(Workload(f"dispatch {populated} slots", pol, evs,
                            f"every call hits one of the {populated} populated slots"))
    return out


def _engines() -> list[str]:
    names = []
    for e in ENGINES:
        if e == "reference":
            continue
        try:
            LoadedPolicy(slots_policy(1), engine=e)
        except SysdispatchError:
            continue   # e.g. no JIT in this build
        names.append(e)
    return names


def measure(lp: LoadedPolicy, events: list[SeccompData], min_time: float) -> tuple[int, float]:
    decide = lp.decide
    clock = time.perf_counter
    n, start = 0, clock()
    while True:
        for e in events:
            decide(e)
        n += len(events)
        elapsed = clock() - start
        if elapsed >= min_time:
            return n, elapsed


def bench_policy(*, rounds: int = 5, min_time: float = 0.3, engines: list[str] | None = None,
                 events: int = 4000) -> dict:
    """Run the benchmark; a dict with the setup line and one row per cell."""
    engines = engines or _engines()
    loads = workloads(events)
    cells = {}
    for w in loads:
        for e in engines:
            for cache in (False, True):
                lp = LoadedPolicy(w.policy, engine=e, cache=cache)
                for ev in w.events[:200]:        # warm-up: compile, fill the cache
                    lp.decide(ev)
                cells[(w.name, e, cache)] = (lp, w, [])
    for _ in range(rounds):
        for lp, w, samples in cells.values():
            n, secs = measure(lp, w.events, min_time)
            samples.append(n / secs)
    rows = []
    for (name, e, cache), (lp, w, samples) in cells.items():
        med = statistics.median(samples)
        rows.append({"workload": name, "engine": e, "cache": cache, "note": w.note,
                     "verdicts_per_s": med, "us_per_verdict": 1e6 / med,
                     "min": min(samples), "max": max(samples),
                     "spread": (max(samples) - min(samples)) / med})
    try:
        cpus = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    except (AttributeError, OSError):
        cpus = "unknown"
    setup = (f"python {platform.python_version()}, {rounds} rounds x {min_time:g} s per cell, "
             f"not pinned (CPUs {cpus})")
    return {"setup": setup, "rows": rows, "flatness": _flatness(rows)}


def _flatness(rows: list[dict]) -> dict:
    """400-slot cost relative to 10-slot cost, per (engine, cache): 1.0 is perfectly flat."""
    by = {(r["workload"], r["engine"], r["cache"]): r["us_per_verdict"] for r in rows}
    out = {}
    for (w, e, c), us in by.items():
        if w == "dispatch 400 slots" and ("dispatch 10 slots", e, c) in by:
            out[f"{e}{' cached' if c else ''}"] = us / by[("dispatch 10 slots", e, c)]
    return out


def format_report(result: dict) -> str:
    rows = result["rows"]
    width = max(len(r["workload"]) for r in rows)
    out = [result["setup"],
           f"{'workload':<{width}}  {'engine':<7} {'cache':<5} {'verdicts/s':>11} {'us/verdict':>10}"
           f"  {'min..max (k/s)':>17}  {'spread':>6}"]
    for r in rows:
        out.append(f"{r['workload']:<{width}}  {r['engine']:<7} {'on' if r['cache'] else 'off':<5} "
                   f"{r['verdicts_per_s']:>11,.0f} {r['us_per_verdict']:>10.2f}  "
                   f"{r['min'] / 1e3:>8.0f}..{r['max'] / 1e3:<8.0f} {100 * r['spread']:>5.1f}%")
    flat = ", ".join(f"{k} x{v:.2f}" for k, v in result["flatness"].items())
    out.append(f"400-slot vs 10-slot dispatch cost: {flat}")
    return "\n".join(out) + "\n"


def register(what: argparse._SubParsersAction) -> None:
    """Add ``bench policy`` to the ``bench`` command's sub-commands."""
    p = what.add_parser("policy", help="verdicts per second through a policy",
                        description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--min-time", type=float, default=0.3, metavar="SECONDS",
                   help="minimum time per cell and round (default 0.3)")
    p.add_argument("--engine", action="append", choices=[e for e in ENGINES if e != "reference"],
                   help="engine to measure (repeatable; default all available)")
    p.add_argument("--events", type=int, default=4000, help="events per workload (default 4000)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_bench_policy)


def cmd_bench_policy(args: argparse.Namespace) -> int:
    if args.rounds < 1 or args.min_time <= 0 or args.events < 1:
        raise SysdispatchError("--rounds and --events must be >= 1 and --min-time > 0")
    result = bench_policy(rounds=args.rounds, min_time=args.min_time, engines=args.engine,
                          events=args.events)
    print(json.dumps(result, indent=2) if args.json else format_report(result), end="\n"
          if args.json else "")
    return 0
