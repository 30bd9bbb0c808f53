"""bpf_tail_call exactly as kernel/bpf/core.c runs it, and PROG_ARRAY updates under concurrency.

The chain cases are also run by the kernel (BPF_PROG_TEST_RUN through vm.kernel) when root and
bpf() are available, and must give the same counts.
"""

from __future__ import annotations

import inspect
import sys
import threading

import pytest

from sysdispatch.errors import MapError, VmError
from sysdispatch.vm.interp import run
from sysdispatch.vm.isa import FP, MAX_TAIL_CALL_CNT, PSEUDO_MAP_FD, lddw, make
from sysdispatch.vm.maps import ArrayMap, ProgArray
from sysdispatch.vm.program import GENERIC, MAP_LOOKUP_ELEM, SECCOMP, TAIL_CALL, Program

U64 = (1 << 64) - 1


def mov(dst, imm):
    return make("mov", dst, imm=imm, reg=False)


def tail_call(table_index: int, slot) -> list:
    """tail_call(r1, maps[table_index], slot); slot an int or ('r', n)."""
    index = make("mov", 3, slot[1], reg=True) if isinstance(slot, tuple) else mov(3, slot)
    return [*lddw(2, table_index, PSEUDO_MAP_FD), index, make("call", imm=TAIL_CALL)]


def link(slot: int, table: ProgArray, name: str, prog_type=GENERIC) -> Program:
    """r9 += 1 (r9 survives tail calls: it counts the programs run), tail-call ``slot``, return
    r9 when the call falls through."""
    return Program.load([make("add", 9, imm=1, reg=False), *tail_call(0, slot),
                         make("mov", 0, 9, reg=True), make("exit")],
                        maps=[table], name=name, prog_type=prog_type)


def chain(n: int, slots: int = 64, first_slot: int = 1) -> tuple[list[Program], ProgArray]:
    table = ProgArray(slots, name="chain")
    progs = [link(first_slot if i == 0 else i + 1, table, f"p{i}") for i in range(n)]
    for i, p in enumerate(progs):
        table.update(i, p)
    return progs, table


def test_a_chain_stops_after_33_tail_calls_without_growing_the_python_stack():
    progs, _ = chain(40)
    old = sys.getrecursionlimit()
    # Leave a small margin over the current depth: a recursive tail call (34 frames) would fail.
    sys.setrecursionlimit(len(inspect.stack()) + 25)
    try:
        res = run(progs[0])
    finally:
        sys.setrecursionlimit(old)
    assert res.r0 == MAX_TAIL_CALL_CNT + 1 == 34
    assert res.chain == tuple(progs[:34])
    assert res.tail_calls == 33


def test_the_count_is_per_run():
    progs, _ = chain(40)
    assert [run(progs[0]).r0 for _ in range(3)] == [34, 34, 34]


def test_out_of_range_index_continues_after_the_call_with_r0_untouched():
    table = ProgArray(4)
    table.update(0, Program.load([mov(0, 7), make("exit")]))
    # r0 = 0x5a before the call; index 4 is past the end: no count, carry on, r0 still 0x5a
    p = Program.load([mov(0, 0x5A), *tail_call(0, 4), make("exit")], maps=[table])
    res = run(p)
    assert (res.r0, res.tail_calls, len(res.chain)) == (0x5A, 0, 1)


def test_the_index_is_a_u32():
    table = ProgArray(4)
    table.update(1, Program.load([mov(0, 11), make("exit")], name="one"))
    # 0x1_0000_0001 truncates to 1; -1 becomes 0xffffffff, out of range
    big = Program.load([*lddw(4, 0x1_0000_0001), mov(0, 0), *tail_call(0, ("r", 4)),
                        make("exit")], maps=[table])
    assert run(big).r0 == 11
    neg = Program.load([mov(0, 3), *tail_call(0, -1), make("exit")], maps=[table])
    assert (run(neg).r0, run(neg).tail_calls) == (3, 0)


def test_an_empty_slot_continues_but_uses_up_a_tail_call():
    table = ProgArray(4)
    target = Program.load([mov(0, 99), make("exit")], name="target")
    table.update(1, target)
    # 33 calls to the empty slot 0 (each counted), then slot 1: refused, the count is used up
    body = []
    for _ in range(MAX_TAIL_CALL_CNT):
        body += tail_call(0, 0)
    p = Program.load([mov(0, 5), *body, *tail_call(0, 1), make("exit")], maps=[table])
    res = run(p)
    assert (res.r0, res.tail_calls, len(res.chain)) == (5, 33, 1)
    # one call fewer: the last tail call is still allowed
    p = Program.load([mov(0, 5), *body[:-4], *tail_call(0, 1), make("exit")], maps=[table])
    res = run(p)
    assert (res.r0, res.tail_calls, res.chain[-1]) == (99, 33, target)


def test_the_callee_keeps_registers_and_the_stack_frame():
    table = ProgArray(2)
    # callee: r0 = stack[-8] + r6 + r1 (the ctx pointer, unchanged) - r1
    callee = Program.load([make("ldxdw", 0, FP, off=-8), make("add", 0, 6, reg=True),
                           make("add", 0, 1, reg=True), make("sub", 0, 1, reg=True),
                           make("exit")], name="callee")
    table.update(0, callee)
    caller = Program.load([make("stdw", FP, off=-8, imm=1000), mov(6, 20),
                           *tail_call(0, 0), mov(0, -1), make("exit")], maps=[table])
    assert run(caller, mem=bytes(8)).r0 == 1020


def test_a_tail_call_from_a_subprogram_returns_to_its_caller():
    table = ProgArray(1)
    table.update(0, Program.load([mov(0, 40), make("exit")], name="leaf"))
    # main: call f; r0 += 2; exit.  f: tail_call(slot 0) -> leaf returns 40 to main
    p = Program.load([make("call_local", imm=2), make("add", 0, imm=2, reg=False),
                      make("exit"), *tail_call(0, 0), mov(0, -1), make("exit")],
                     maps=[table], name="main")
    res = run(p)
    assert (res.r0, [q.name for q in res.chain]) == (42, ["main", "leaf"])


def test_faults_name_the_program_of_the_chain():
    table = ProgArray(1)
    table.update(0, Program.load([make("ldxdw", 0, 1, off=0), make("exit")], name="bad"))
    p = Program.load([*tail_call(0, 0), make("exit")], maps=[table], name="entry")
    with pytest.raises(VmError, match=r"program 'bad', pc 0: read of 8 bytes at 0x0"):
        run(p)


def test_tail_call_through_something_else_is_refused():
    m = ArrayMap(4, 1)
    p = Program.load([*tail_call(0, 0), make("exit")], maps=[m])
    with pytest.raises(VmError, match=r"pc 3: tail_call through array map"):
        run(p)


def test_program_type_owner():
    table = ProgArray(4)
    table.update(0, Program.load([mov(0, 0), make("exit")], prog_type=SECCOMP))
    with pytest.raises(MapError) as info:
        table.update(1, Program.load([mov(0, 0), make("exit")], prog_type=GENERIC))
    assert info.value.errno == 22  # EINVAL, as bpf_prog_map_compatible answers


# --- atomic slot updates while others dispatch ---------------------------------------------------

def test_slot_swaps_are_atomic_for_concurrent_dispatch():
    table = ProgArray(8)
    a = Program.load([mov(0, 0xA), make("exit")], name="a")
    b = Program.load([mov(0, 0xB), make("exit")], name="b")
    entry = Program.load([mov(0, 0xF), *tail_call(0, 3), make("exit")], maps=[table],
                         name="entry")
    table.update(3, a)
    stop = threading.Event()
    seen: dict[tuple, int] = {}
    errors: list[BaseException] = []

    def dispatch():
        try:
            while not stop.is_set():
                res = run(entry)
                key = (res.r0, tuple(p.name for p in res.chain))
                seen[key] = seen.get(key, 0) + 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def swap():
        i = 0
        while not stop.is_set():
            if i % 3 == 2:
                try:
                    table.delete(3)
                except MapError:
                    pass
            else:
                table.update(3, (a, b)[i % 2])
            i += 1

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, inside runs
    workers = [threading.Thread(target=dispatch) for _ in range(3)] + [threading.Thread(target=swap)]
    try:
        for t in workers:
            t.start()
        stop.wait(0.8)
    finally:
        stop.set()
        for t in workers:
            t.join()
        sys.setswitchinterval(old_interval)
    assert not errors
    # every dispatch entered the program it read, whole: r0 always matches the chain
    assert set(seen) <= {(0xA, ("entry", "a")), (0xB, ("entry", "b")), (0xF, ("entry",))}
    assert len(seen) == 3 and sum(seen.values()) > 100


# --- the kernel runs the same chains ---------------------------------------------------------------

COUNTER, PROGS = 0, 1


def counting_link(next_slot: int) -> list:
    """Add 1 to counter[0], tail-call ``next_slot``, on fall-through return the counter seen
    (the kernel's test run reports only r0, so the count travels through a map)."""
    return [
        make("mov", 6, 1, reg=True),
        make("stw", FP, off=-4, imm=0),
        make("mov", 2, FP, reg=True), make("add", 2, imm=-4, reg=False),
        *lddw(1, COUNTER, PSEUDO_MAP_FD),
        make("call", imm=MAP_LOOKUP_ELEM),
        make("mov", 7, imm=0, reg=False),
        make("jeq", 0, off=3, imm=0, reg=False),
        mov(1, 1), make("lock_add", 0, 1), make("ldxdw", 7, 0),
        make("mov", 1, 6, reg=True),
        *lddw(2, PROGS, PSEUDO_MAP_FD), mov(3, next_slot), make("call", imm=TAIL_CALL),
        make("mov", 0, 7, reg=True), make("exit"),
    ]


CASES = [
    pytest.param(40, 64, 1, id="chain-longer-than-the-limit"),
    pytest.param(34, 64, 1, id="chain-exactly-at-the-limit"),
    pytest.param(5, 64, 1, id="short-chain-ends-at-empty-slot"),
    pytest.param(1, 64, 1, id="empty-slot"),
    pytest.param(1, 4, 4, id="index-out-of-range"),
    pytest.param(1, 4, -1, id="index-negative-is-huge-u32"),
]


def our_chain(n: int, slots: int, first: int) -> tuple[int, int]:
    counter, progs = ArrayMap(8, 1), ProgArray(slots)
    loaded = [Program.load(counting_link(first if i == 0 else i + 1), maps=[counter, progs])
              for i in range(n)]
    for i, p in enumerate(loaded):
        progs.update(i, p)
    r0 = run(loaded[0], mem=bytes(14)).r0
    return r0, int.from_bytes(counter.lookup(0), "little")


@pytest.mark.parametrize("n, slots, first", CASES)
def test_chains_run_as_in_the_kernel(n, slots, first):
    ours = our_chain(n, slots, first)
    assert ours[0] == ours[1] == min(n, 34) if first in range(slots) else ours == (1, 1)
    kernel = pytest.importorskip("sysdispatch.vm.kernel")
    if not kernel.kernel_bpf_available():
        pytest.skip("needs root and bpf() to ask the kernel")
    with kernel.create_map("array", 4, 8, 1) as counter, \
            kernel.create_map("prog_array", 4, 4, slots) as progs:
        loaded = []
        try:
            for i in range(n):
                loaded.append(kernel.load_program(
                    counting_link(first if i == 0 else i + 1), maps=[counter, progs]))
                kernel.map_update(progs, i, loaded[-1])
            kr0 = kernel.test_run(loaded[0], bytes(kernel.ETH_HLEN))
        finally:
            for p in loaded:
                p.close()
        kcount = int.from_bytes(kernel.map_lookup(counter, 0), "little")
    assert ours == (kr0, kcount)
