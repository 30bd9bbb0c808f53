"""``bench trace``: the runs really happen (dd must copy N bytes), ratios pair runs of one round,
and the sparse policy has handlers only for syscalls dd rarely makes. No speed is asserted here:
figures come from the benchmark itself."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics

import pytest

from sysdispatch.errors import TraceError
from sysdispatch.policy import loads
from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.seccomp import actions
from sysdispatch.seccomp.data import SeccompData
from sysdispatch.seccomp import arch as _arch
from sysdispatch.trace import bench

needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")


def _run(capsys, *argv: str) -> dict:
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    args = parser.parse_args(["trace", *argv])
    assert args.func(args) == 0
    return json.loads(capsys.readouterr().out) if "--json" in argv else {}


@needs_strace
def test_native_and_strace_pinned_json(capsys):
    doc = _run(capsys, "--count", "3000", "--rounds", "2", "--variants", "strace,native",
               "--cpu", "0", "--json")
    assert doc["setup"]["pinned"] == "taskset -c 0"
    assert doc["setup"]["commands"]["strace"][:5] == ["taskset", "-c", "0", "strace", "-f"]
    assert list(doc["times"]) == ["native", "strace"]
    runs = doc["runs"]
    assert sorted((r["variant"], r["round"]) for r in runs) == \
        [("native", 0), ("native", 1), ("strace", 0), ("strace", 1)]
    # round 1 starts with the other variant (interleaving)
    assert runs[0]["variant"] != runs[2]["variant"]
    by = {(r["variant"], r["round"]): r["seconds"] for r in runs}
    (ratio,) = doc["ratios"]
    assert ratio["name"] == "strace / native" and ratio["goal"] is None
    assert ratio["median"] == pytest.approx(statistics.median(
        [by[("strace", i)] / by[("native", i)] for i in (0, 1)]))


def test_text_output(capsys):
    _run(capsys, "--count", "100", "--rounds", "2", "--variants", "native")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("dd if=/dev/zero of=/dev/null bs=1 count=100, 2 interleaved "
                               "rounds, not pinned")
    assert lines[1].split() == ["variant", "median", "s", "min..max", "s", "spread", "us/byte"]
    assert lines[2].split()[0] == "native" and len(lines) == 3  # no ratio without a pair


def test_analyse_pairs_by_round():
    runs = [bench.Run("native", 0, 1.0), bench.Run("full", 0, 2.0), bench.Run("strace", 0, 6.0),
            bench.Run("native", 1, 2.0), bench.Run("full", 1, 4.0), bench.Run("strace", 1, 5.0),
            bench.Run("sparse", 0, 1.3), bench.Run("sparse", 1, 2.4)]
    res = bench.analyse(runs, ["native", "strace", "full", "sparse"], 1000)
    ratios = {r["name"]: r for r in res["ratios"]}
    assert ratios["full / strace"]["median"] == pytest.approx((2 / 6 + 4 / 5) / 2)
    assert ratios["full / strace"]["met"] is True
    assert ratios["sparse / native"]["median"] == pytest.approx((1.3 + 1.2) / 2)
    assert ratios["sparse / native"]["met"] is False
    assert res["times"]["strace"]["spread"] == pytest.approx(1 / 5.5)


def test_runs_that_do_not_do_the_work_are_errors():
    with pytest.raises(TraceError, match="variant 'x': dd did not report 10 records"):
        bench.run_once("x", bench.workload(5), 10)
    with pytest.raises(TraceError, match="variant 'y' exited with status 1: .*"):
        bench.run_once("y", ["dd", "if=/nonexistent"], 1)
    with pytest.raises(TraceError, match="unknown variant 'ptrace'"):
        _run(None, "--variants", "native,ptrace")


def test_sparse_policy_handles_only_rare_syscalls():
    pol = LoadedPolicy(loads(bench.SPARSE_POLICY, "bench-sparse.toml"))
    x86 = _arch.X86_64
    for name in ("read", "write", "close", "fstat", "lseek"):  # dd's copy loop and the like
        d = pol.decide(SeccompData(x86.syscall_number(name), x86.audit))
        assert d.ret == actions.ALLOW and d.handler is None
    creat = pol.decide(SeccompData(x86.syscall_number("openat"), x86.audit,
                                   args=(0, 0, 0o101, 0, 0, 0)))
    assert creat.ret == actions.LOG and creat.handler == "openat_rules"


@pytest.mark.skipif(importlib.util.find_spec("sysdispatch.trace.tracer") is None,
                    reason="needs the tracer")
def test_tracer_variants_run_the_workload(capsys):
    """full and sparse really run dd under sysdispatch trace, kernel under the same policy as a
    plain seccomp filter (dd's record count is checked by run_once); the sparse policy's file is
    written for the run and used by both."""
    doc = _run(capsys, "--count", "500", "--rounds", "1", "--variants", "sparse,full,kernel",
               "--json")
    cmds = doc["setup"]["commands"]
    assert cmds["full"][-8:] == ["trace", "--all", "--", *bench.workload(500)]
    assert cmds["sparse"][-9:] == ["trace", "--policy", cmds["sparse"][-7], "--",
                                   *bench.workload(500)]
    assert cmds["sparse"][-7].endswith("bench-sparse.toml")
    assert cmds["kernel"][-9:] == ["run", "--kernel", cmds["sparse"][-7], "--",
                                   *bench.workload(500)]
    assert [r["variant"] for r in doc["runs"]] == ["kernel", "full", "sparse"]
    assert [r["name"] for r in doc["ratios"]] == ["sparse / kernel"]
    assert all(r["seconds"] > 0 for r in doc["runs"])


def test_registered_as_bench_trace(capsys):
    from sysdispatch.cli import build_parser
    args = build_parser().parse_args(["bench", "trace", "--count", "7", "--rounds", "1",
                                      "--variants", "native"])
    assert args.func is bench.cmd_bench_trace and args.count == 7


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_floor_loader_installs_one_filter_then_execs(tmp_path):
    """The floor variant's loader puts the command under a seccomp filter (mode 2, one filter)
    and nothing else: the command's own output and status come through."""
    import subprocess
    loader = bench.build_floor_loader(str(tmp_path))
    out = subprocess.run([loader, "grep", "-E", "^(Seccomp|Seccomp_filters|NoNewPrivs):",
                          "/proc/self/status"], capture_output=True, text=True, check=True)
    fields = dict(line.split(":\t") for line in out.stdout.splitlines())
    assert fields == {"NoNewPrivs": "1", "Seccomp": "2", "Seccomp_filters": "1"}
    assert subprocess.run([loader, "sh", "-c", "exit 7"]).returncode == 7
    assert subprocess.run([loader]).returncode == 125  # nothing to run: refused, not exec'd


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_floor_variant_runs_the_workload(capsys):
    doc = _run(capsys, "--count", "300", "--rounds", "1", "--variants", "floor,native", "--json")
    assert doc["setup"]["commands"]["floor"][1:] == bench.workload(300)
    assert [r["name"] for r in doc["ratios"]] == ["floor / native"]


def test_byte_compile_leaves_bytecode_for_the_package():
    import importlib.util
    import os
    import sysdispatch.trace.bench as module
    bench.byte_compile()
    pyc = importlib.util.cache_from_source(module.__file__)
    assert os.path.getmtime(pyc) >= os.path.getmtime(module.__file__)
