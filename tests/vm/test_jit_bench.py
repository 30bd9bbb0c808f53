"""The JIT benchmarks measure what they say: their programs are right and agree on both engines,
and the summary computes speedups and the dispatch balance from whatever rows it is given.
(No timing is asserted here: speed claims live in ``sysdispatch bench vm``.)"""

from __future__ import annotations

from sysdispatch.vm import engine, jit_bench as jb


def test_every_workload_runs_alike_on_both_engines(conformance_dir):
    loads, skipped = jb.workloads()
    assert skipped == [] and any(w.name.startswith("conformance") for w in loads)
    for w in loads:
        for program, kwargs in w.cases[:40]:
            assert (engine.run(program, engine="interp", **kwargs)
                    == engine.run(program, engine="jit", **kwargs)), w.name


def test_a_dispatch_is_one_tail_call_into_the_handler_of_its_nr():
    w = jb.dispatch_workload(10)
    verdicts = set()
    for program, kwargs in w.cases:
        res = engine.run(program, engine="jit", **kwargs)
        nr = int.from_bytes(kwargs["ctx"][:4], "little")
        assert [p.name for p in res.chain] == ["syscall_entry", f"handler{nr}"]
        assert res.tail_calls == 1
        verdicts.add(res.r0)
    assert verdicts == {jb.VERDICT_MATCH, jb.VERDICT_OTHER}
    entry = w.cases[0][0]
    handled = {int.from_bytes(kw["ctx"][:4], "little") for _, kw in w.cases}
    empty = next(nr for nr in range(jb.DISPATCH_SLOTS) if nr not in handled)
    for nr, tail_calls in ((empty, 1), (jb.DISPATCH_SLOTS + 5, 0)):  # empty slot; out of range
        res = engine.run(entry, jb.seccomp_ctx(nr, 0), engine="jit")
        assert res.r0 == jb.VERDICT_DEFAULT and res.tail_calls == tail_calls
    bad_arch = bytearray(jb.seccomp_ctx(5, 0))
    bad_arch[4:8] = bytes(4)
    assert engine.run(entry, bytes(bad_arch), engine="jit").r0 == jb.VERDICT_BAD_ARCH


def test_the_filter_chain_gives_each_verdict():
    w = jb.filter_chain_workload(tests=50, values=60)
    results = {engine.run(p, engine="jit", **kw).r0 for p, kw in w.cases}
    assert results == {jb.VERDICT_DEFAULT, jb.VERDICT_OTHER}


def test_compare_and_summary():
    w = jb.dispatch_workload(10)
    few = jb.Workload(w.name, w.cases[:2])
    many = jb.dispatch_workload(400)
    many = jb.Workload(many.name, many.cases[:2])
    rows = jb.compare([few, many], rounds=1, min_time=0.001)
    assert {(r["workload"], r["engine"]) for r in rows} == {
        (few.name, "interp"), (few.name, "jit"), (many.name, "interp"), (many.name, "jit")}
    assert all(r["insns_per_run"] == 13 and r["us_per_run"] > 0 for r in rows)
    lines = jb.summary(rows, {few.name: (0.5, 1.0)})
    assert any(line.startswith(f"jit vs interp, {few.name}: ") for line in lines)
    interp_cost = next(r["us_per_run"] for r in rows
                       if r["workload"] == few.name and r["engine"] == "interp")
    assert f"floor, {few.name}: 0.50 us/run calling, 1.00 with a result: at most " \
        f"{interp_cost:.1f}x the interpreter" in lines
    assert any(line.startswith("jit: dispatch with 400 handlers costs ") for line in lines)
    fake = [{"workload": few.name, "engine": "jit", "us_per_run": 2.0},
            {"workload": many.name, "engine": "jit", "us_per_run": 2.5},
            {"workload": few.name, "engine": "interp", "us_per_run": 8.0}]
    assert jb.dispatch_balance(fake) == 0.25 and jb.speedups(fake) == {few.name: 4.0}


def test_the_floor_is_measured_per_workload_with_the_cases_own_arguments():
    w = jb.dispatch_workload(10)
    got = jb.floor([w], rounds=1, min_time=0.01)
    call, result = got[w.name]
    assert set(got) == {w.name} and 0 < call and 0 < result


def test_the_tail_chain_stops_at_the_kernels_limit():
    w = jb.tail_chain_workload()
    (program, kwargs), = w.cases
    for name in ("interp", "jit"):
        res = engine.run(program, engine=name, **kwargs)
        assert res.tail_calls == 33 and len(res.chain) == 34 and res.r0 == 34


def test_a_missing_conformance_directory_is_a_reason_not_an_error(tmp_path):
    assert "not found" in jb.conformance_workload(tmp_path / "nosuch")
