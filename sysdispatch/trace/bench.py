"""``sysdispatch bench trace``: what tracing costs, measured side by side against strace.

One syscall-heavy workload — ``dd if=/dev/zero of=/dev/null bs=1 count=N``, about 2N syscalls —
runs in each *variant*:

* ``native``: no tracer;
* ``floor``: no tracer and no Python: a small C loader (:data:`FLOOR_LOADER`, built with gcc)
  installs a one-instruction seccomp filter (``RET ALLOW``) and execs dd. It is the least *any*
  seccomp filter costs — every syscall takes the kernel's seccomp entry path — and so the floor
  under ``sparse``, whose prefilter must be a seccomp filter;
* ``kernel``: no tracer, but :data:`SPARSE_POLICY` as a real seccomp filter
  (``sysdispatch run --kernel``): ``floor`` plus sysdispatch's start-up and libseccomp's filter;
* ``strace``: ``strace -f -qq -o /dev/null`` (the yardstick);
* ``full``: ``sysdispatch trace --all`` with the default policy: every syscall stops and is
  dispatched through the policy's programs;
* ``sparse``: ``sysdispatch trace`` with :data:`SPARSE_POLICY`, whose handlers cover only
  syscalls dd makes a handful of times, so almost no syscall stops.

Rounds are interleaved (every round runs every variant, starting one further along each round,
so a drifting machine load hits all alike) and each round gives *paired* ratios — a variant's
time over native's and over strace's in the same round. The table shows the median and the
spread ((max - min) / median) of times and ratios. Each run must exit 0 and dd must report N
records copied, so a variant cannot win by not doing the work.

Before the first round the package's modules are byte-compiled (``compileall``), as an installed
package has them; otherwise, with ``PYTHONDONTWRITEBYTECODE`` set, every run of sysdispatch would
compile its sources again and the start-up measured would be an editable checkout's.

With ``--cpu C`` every command runs under ``taskset -c C``: tracer and tracee on one CPU (the
tracee inherits the affinity), which avoids cross-CPU wake-ups at every ptrace stop; compare
pinned with pinned only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import TraceError

VARIANTS = ("native", "floor", "kernel", "strace", "full", "sparse")
# (numerator, denominator) ratios shown, with the goal where there is one.
RATIOS: tuple[tuple[str, str, float | None], ...] = (
    ("strace", "native", None), ("full", "native", None), ("full", "strace", 0.6),
    ("sparse", "native", 1.15), ("floor", "native", None), ("kernel", "native", None),
    ("sparse", "floor", None), ("sparse", "kernel", None),
)

# The floor variant's loader: no_new_privs, a filter of one instruction (RET ALLOW), exec argv[1:].
FLOOR_LOADER = r"""
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct sock_filter insns[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
    struct sock_fprog prog = { 1, insns };
    if (argc < 2 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
        perror("floor loader");
        return 125;
    }
    execvp(argv[1], argv + 1);
    perror(argv[1]);
    return 127;
}
"""

SPARSE_POLICY = """\
# bench-sparse: handlers only for syscalls dd makes a few times (at start-up), so a tracer that
# stops only for syscalls with a handler lets the copy loop's read/write run untouched.
[policy]
name = "bench-sparse"
description = "handlers for rarely called syscalls only"
arches = ["x86_64"]
default = "allow"
bad_arch = "kill_process"

[tables.syscalls]
index = "nr"

[tables.syscalls.entries]
openat = "openat_rules"
execve = "log"
ptrace = "errno(EPERM)"
mount = "errno(EPERM)"

[handlers.openat_rules]
description = "log file creation"
rules = [{ when = ["args[2] & O_CREAT == O_CREAT"], action = "log" }]
default = "allow"
"""


@dataclass
class Run:
    variant: str
    round: int
    seconds: float


def workload(count: int) -> list[str]:
    return ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={count}"]


def build_floor_loader(directory: str) -> str:
    """Compile :data:`FLOOR_LOADER` into ``directory``; the executable's path."""
    src, exe = Path(directory) / "floor.c", Path(directory) / "floor"
    src.write_text(FLOOR_LOADER, encoding="utf-8")
    res = subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], capture_output=True, text=True)
    if res.returncode != 0:
        first = (res.stderr.strip().splitlines() or ["(no output)"])[0]
        raise TraceError(f"bench trace: building the floor loader failed: {first}")
    return str(exe)


def byte_compile() -> None:
    """Byte-compile the package (see the module docstring) so runs measure an installed start-up."""
    import compileall
    compileall.compile_dir(str(Path(__file__).resolve().parents[1]), quiet=2)


def commands(count: int, sparse_policy: str, cpu: int | None,
             floor_loader: str = "floor") -> dict[str, list[str]]:
    """The command line of every variant."""
    me = [sys.executable, "-m", "sysdispatch"]
    dd = workload(count)
    cmds = {
        "native": dd,
        "floor": [floor_loader, *dd],
        "kernel": [*me, "run", "--kernel", sparse_policy, "--", *dd],
        "strace": ["strace", "-f", "-qq", "-o", "/dev/null", *dd],
        "full": [*me, "trace", "--all", "--", *dd],
        "sparse": [*me, "trace", "--policy", sparse_policy, "--", *dd],
    }
    if cpu is not None:
        cmds = {k: ["taskset", "-c", str(cpu), *v] for k, v in cmds.items()}
    return cmds


def run_once(variant: str, cmd: list[str], count: int) -> float:
    """Wall time of one run; a failed run or a short copy is an error, not a data point."""
    start = time.perf_counter()
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    err = res.stderr.decode(errors="replace")
    if res.returncode != 0:
        last = err.strip().splitlines()[-1:] or ["(no output)"]
        raise TraceError(f"bench trace: variant '{variant}' exited with status "
                         f"{res.returncode}: {last[0]}")
    if not re.search(rf"^{count}\+0 records out$", err, re.M):
        raise TraceError(f"bench trace: variant '{variant}': dd did not report {count} records "
                         f"copied")
    return elapsed


def measure(variants: list[str], cmds: dict[str, list[str]], count: int,
            rounds: int) -> list[Run]:
    runs = []
    for r in range(rounds):
        k = r % len(variants)
        for v in variants[k:] + variants[:k]:
            runs.append(Run(v, r, run_once(v, cmds[v], count)))
    return runs


def _stats(values: list[float]) -> dict[str, float]:
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values),
            "spread": (max(values) - min(values)) / med if med else 0.0}


def analyse(runs: list[Run], variants: list[str], count: int) -> dict:
    by = {(r.variant, r.round): r.seconds for r in runs}
    rounds = sorted({r.round for r in runs})
    times = {v: _stats([by[(v, r)] for r in rounds]) for v in variants}
    for v in variants:
        times[v]["us_per_byte"] = 1e6 * times[v]["median"] / count
    ratios = []
    for num, den, goal in RATIOS:
        if num in variants and den in variants:
            st = _stats([by[(num, r)] / by[(den, r)] for r in rounds])
            st.update(name=f"{num} / {den}", goal=goal,
                      met=None if goal is None else st["median"] <= goal)
            ratios.append(st)
    return {"times": times, "ratios": ratios}


def register(what: argparse._SubParsersAction) -> None:
    """Add ``trace`` to ``sysdispatch bench``."""
    p = what.add_parser("trace", help="tracing overhead: native, kernel filter, strace, full "
                                      "and sparse dispatch",
                        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", "-n", type=int, default=50000, metavar="N",
                   help="bytes dd copies one at a time, ~2N syscalls (default 50000)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--cpu", type=int, metavar="C",
                   help="run tracer and tracee together under taskset -c C")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {','.join(VARIANTS)} (default all)")
    p.add_argument("--sparse-policy", metavar="P",
                   help="policy for the sparse and kernel variants (default: the built-in "
                        "bench-sparse)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_bench_trace)


def cmd_bench_trace(args: argparse.Namespace) -> int:
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise TraceError(f"bench trace: unknown variant '{(bad or [''])[0]}' "
                         f"(choose from {', '.join(VARIANTS)})")
    variants = [v for v in VARIANTS if v in variants]  # table order, no repeats
    if args.count < 1 or args.rounds < 1:
        raise TraceError("bench trace: --count and --rounds must be >= 1")
    for tool in ["dd"] + (["strace"] if "strace" in variants else []) + \
            (["gcc"] if "floor" in variants else []) + \
            (["taskset"] if args.cpu is not None else []):
        if shutil.which(tool) is None:
            raise TraceError(f"bench trace: '{tool}' is not installed")
    if args.cpu is not None and args.cpu not in os.sched_getaffinity(0):
        raise TraceError(f"bench trace: CPU {args.cpu} is not available to this process")
    with tempfile.TemporaryDirectory(prefix="sysdispatch-bench-") as tmp:
        sparse = args.sparse_policy
        if sparse is None:
            sparse = str(Path(tmp) / "bench-sparse.toml")
            Path(sparse).write_text(SPARSE_POLICY, encoding="utf-8")
        loader = build_floor_loader(tmp) if "floor" in variants else "floor"
        cmds = commands(args.count, sparse, args.cpu, loader)
        byte_compile()
        runs = measure(variants, cmds, args.count, args.rounds)
    result = analyse(runs, variants, args.count)
    setup = {
        "workload": " ".join(workload(args.count)), "rounds": args.rounds,
        "pinned": f"taskset -c {args.cpu}" if args.cpu is not None else None,
        "cpus": len(os.sched_getaffinity(0)), "load_average": os.getloadavg(),
        "python": platform.python_version(), "kernel": platform.release(),
        "commands": {v: cmds[v] for v in variants},
    }
    if args.json:
        print(json.dumps({"setup": setup, **result,
                          "runs": [r.__dict__ for r in runs]}, indent=2))
        return 0
    print(f"{setup['workload']}, {args.rounds} interleaved rounds, "
          + (f"pinned: {setup['pinned']} for tracer and tracee" if args.cpu is not None
             else f"not pinned ({setup['cpus']} CPUs)")
          + ", load average " + " ".join(f"{x:.2f}" for x in setup["load_average"]))
    print(f"{'variant':<8} {'median s':>9} {'min..max s':>17} {'spread':>7} {'us/byte':>8}")
    for v in variants:
        t = result["times"][v]
        span = f"{t['min']:.3f}..{t['max']:.3f}"
        print(f"{v:<8} {t['median']:>9.3f} {span:>17} {100 * t['spread']:>6.1f}% "
              f"{t['us_per_byte']:>8.2f}")
    if result["ratios"]:
        print(f"\n{'paired ratio':<16} {'median':>8} {'min..max':>17} {'spread':>7}  goal")
    for r in result["ratios"]:
        goal = "" if r["goal"] is None else \
            f"<= {r['goal']:g}: {'met' if r['met'] else 'NOT met'}"
        span = f"{r['min']:.3f}..{r['max']:.3f}"
        print(f"{r['name']:<16} {r['median']:>8.3f} {span:>17} {100 * r['spread']:>6.1f}%  "
              f"{goal}".rstrip())
    return 0
