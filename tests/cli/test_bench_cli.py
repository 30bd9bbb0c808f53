"""``sysdispatch bench``: the vm, policy and trace benchmarks are all reachable from the CLI, and
``bench vm`` measures both engines on the JIT's rows."""

from __future__ import annotations

import json

from sysdispatch.cli import build_parser, main
from sysdispatch.cli import bench as cli_bench
from sysdispatch.policy import bench as policy_bench
from sysdispatch.trace import bench as trace_bench


def test_bench_subcommands_are_registered():
    parse = build_parser().parse_args
    assert parse(["bench", "vm", "--rounds", "1"]).func is cli_bench.cmd_bench_vm
    args = parse(["bench", "policy", "--rounds", "2", "--min-time", "0.01"])
    assert args.func is policy_bench.cmd_bench_policy and args.rounds == 2
    args = parse(["bench", "trace", "--count", "9", "--rounds", "1"])
    assert args.func is trace_bench.cmd_bench_trace and args.count == 9


def test_bench_vm_runs_both_engines_with_the_jit_rows(capsys):
    assert main(["bench", "vm", "--rounds", "1", "--min-time", "0.005", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    engines = {r["engine"] for r in doc["rows"]}
    assert engines == {"interp", "jit"}
    names = {r["workload"] for r in doc["rows"]}
    assert any(n.startswith("dispatch") for n in names) and any(n.startswith("filter") for n in names)
    assert all(r["insns_per_s_median"] > 0 for r in doc["rows"])
    assert set(doc["dispatch_balance"]) == {"interp", "jit"} and doc["speedups"]


def test_bench_policy_runs_from_the_cli(capsys):
    assert main(["bench", "policy", "--rounds", "1", "--min-time", "0.005", "--events", "50",
                 "--engine", "interp"]) == 0
    out = capsys.readouterr().out
    assert "verdicts/s" in out and "dispatch 400 slots" in out
