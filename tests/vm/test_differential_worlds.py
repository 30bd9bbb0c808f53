"""Interpreter vs JIT on random *worlds*: programs with maps, helpers, trace_printk, bpf-to-bpf
calls, tail calls, loops and faults, compared on everything a run can show.

A world is built from a seed: an ARRAY, a HASH and a PROG_ARRAY map, a few programs in the
PROG_ARRAY's slots, an entry program and the caller memory. It is built twice from the same seed
so each engine gets its own fresh maps, and a fixed :class:`Host` per run (same clock, ids and
random numbers). The two runs must agree on r0, steps, the chain of programs, the tail-call
count — or on the error's type, text and pc — and afterwards on every map's contents, the caller
memory and the trace_printk events. Runs are also cut short at a random instruction budget: the
side effects done before the budget ran out must be the same too, which holds the JIT to the
interpreter's step accounting exactly.

The generator is ours (progen makes verifier-valid straight-line bodies; these programs need not
pass a verifier, only terminate or hit the budget).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings, strategies as st

from sysdispatch.errors import SysdispatchError
from sysdispatch.vm import engine, progen
from sysdispatch.vm.helpers import Host
from sysdispatch.vm.isa import FP, PSEUDO_MAP_FD, SPECS, Insn, lddw, make
from sysdispatch.vm.maps import ArrayMap, HashMap, ProgArray
from sysdispatch.vm.program import (GET_CURRENT_PID_TGID, GET_PRANDOM_U32, KTIME_GET_NS,
                                    MAP_DELETE_ELEM, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, TAIL_CALL,
                                    TRACE_PRINTK, Program)

ARRAY, HASH, PROGS = 0, 1, 2   # map indexes in every program's map table
SAVED_CTX = -128               # where the entry program keeps r1 (progen uses fp-64.. and fp-512..)
KEY, VALUE, FMT = -136, -152, -192
MEM_SIZE = 32
FORMATS = (b"x=%d\0", b"%u %x %llx\0", b"[%5d|%-4x]\0", b"%c%c%%\0", b"pid %lu\0")
ALU_FORMS = [s for s in SPECS if s.kind in ("alu", "alu32") and not s.op.endswith(("div", "mod"))]


class _Layout:
    """Instructions with call placeholders, resolved once every subprogram has a place."""

    def __init__(self) -> None:
        self.items: list = []

    def add(self, *insns) -> None:
        self.items.extend(insns)

    def call(self, sub: int) -> None:
        self.items.append(("call", sub))

    def size(self) -> int:
        return len(self.items)


def _forget(*regs: int) -> list[Insn]:
    """Clear registers holding map addresses: each world's maps live at their own addresses,
    so a pointer folded into r0 would differ between the two worlds of one seed."""
    return [make("mov", r, imm=0, reg=False) for r in regs]


def _reg(rng: random.Random, avoid: tuple[int, ...] = ()) -> int:
    return rng.choice([r for r in range(10) if r not in avoid])


def _alu_op(rng: random.Random, avoid: tuple[int, ...]) -> Insn:
    spec = rng.choice(ALU_FORMS)
    dst = _reg(rng, avoid)
    if spec.reg:
        return make(spec.name, dst, _reg(rng), reg=True)
    return make(spec.name, dst, imm=rng.randrange(-300, 300), reg=False)


def _section(rng: random.Random, out: _Layout, nsubs: int, entry: bool) -> None:
    """One random piece of work appended to ``out``."""
    kind = rng.choice(("lookup", "update", "delete", "helper", "printk", "tail", "call",
                       "loop", "mem", "alu"))
    if kind == "lookup":
        out.add(make("stw", FP, off=KEY, imm=rng.choice((0, 1, 2, 3, 7, 100))),
                make("mov", 2, FP, reg=True), make("add", 2, imm=KEY, reg=False),
                *lddw(1, rng.choice((ARRAY, HASH)), PSEUDO_MAP_FD),
                make("call", imm=MAP_LOOKUP_ELEM),
                make("jeq", 0, imm=0, off=3, reg=False),
                make("ldxdw", 6, 0, off=0), make("add", 6, _reg(rng, (0, 1)), reg=True),
                make("stxdw", 0, 6, off=0), *_forget(0, 1))
    elif kind == "update":
        out.add(make("stw", FP, off=KEY, imm=rng.choice((0, 1, 2, 3, 7, 100))),
                make("stxdw", FP, _reg(rng), off=VALUE),
                make("mov", 2, FP, reg=True), make("add", 2, imm=KEY, reg=False),
                make("mov", 3, FP, reg=True), make("add", 3, imm=VALUE, reg=False),
                *lddw(1, rng.choice((ARRAY, HASH)), PSEUDO_MAP_FD),
                make("mov", 4, imm=rng.choice((0, 0, 1, 2, 5)), reg=False),
                make("call", imm=MAP_UPDATE_ELEM), make("xor", 7, 0, reg=True), *_forget(1))
    elif kind == "delete":
        out.add(make("stw", FP, off=KEY, imm=rng.choice((0, 1, 2, 3))),
                make("mov", 2, FP, reg=True), make("add", 2, imm=KEY, reg=False),
                *lddw(1, rng.choice((ARRAY, HASH)), PSEUDO_MAP_FD),
                make("call", imm=MAP_DELETE_ELEM), make("xor", 8, 0, reg=True), *_forget(1))
    elif kind == "helper":
        out.add(make("call", imm=rng.choice((KTIME_GET_NS, GET_PRANDOM_U32, GET_CURRENT_PID_TGID))),
                make("add", _reg(rng, (0,)), 0, reg=True))
    elif kind == "printk":
        fmt = rng.choice(FORMATS)
        padded = fmt + bytes(-len(fmt) % 8)
        for i in range(0, len(padded), 8):
            out.add(*lddw(0, int.from_bytes(padded[i:i + 8], "little")),
                    make("stxdw", FP, 0, off=FMT + i))
        out.add(make("mov", 1, FP, reg=True), make("add", 1, imm=FMT, reg=False),
                make("mov", 2, imm=len(fmt), reg=False),
                *(make("mov", r, _reg(rng), reg=True) for r in (3, 4, 5)),
                make("call", imm=TRACE_PRINTK), make("xor", 6, 0, reg=True))
    elif kind == "tail":
        index = (make("mov", 3, imm=rng.choice((0, 1, 2, 3, 4, 9, -1)), reg=False)
                 if rng.random() < 0.7 else make("mov32", 3, _reg(rng), reg=True))
        out.add(*lddw(2, PROGS, PSEUDO_MAP_FD), index, make("call", imm=TAIL_CALL), *_forget(2))
    elif kind == "call" and nsubs:
        out.call(rng.randrange(nsubs))
    elif kind == "loop":
        counter = rng.choice((6, 7, 8, 9))
        body = [_alu_op(rng, (counter,)) for _ in range(rng.randint(1, 5))]
        out.add(make("mov", counter, imm=rng.randint(1, 40), reg=False), *body,
                make("sub", counter, imm=1, reg=False),
                make("jne", counter, imm=0, off=-(len(body) + 2), reg=False))
    elif kind == "mem" and entry:
        # Caller memory through the saved ctx pointer; some offsets run off its end.
        off = rng.randrange(-4, MEM_SIZE + 4)
        size = rng.choice(("b", "h", "w", "dw"))
        out.add(make("ldxdw", 9, FP, off=SAVED_CTX))
        out.add(make(f"ldx{size}", _reg(rng, (9,)), 9, off=off) if rng.random() < 0.5
                else make(f"stx{size}", 9, _reg(rng, (9,)), off=off))
    else:
        out.add(*(_alu_op(rng, ()) for _ in range(rng.randint(1, 4))))


def _program(rng: random.Random, maps: list, name: str, entry: bool) -> Program:
    nsubs = rng.choice((0, 0, 1, 2))
    main = _Layout()
    if entry:
        main.add(make("stxdw", FP, 1, off=SAVED_CTX))
    main.add(*progen.random_program(rng, length=rng.randint(0, 25), fold=False)[:-1])
    for _ in range(rng.randint(1, 6)):
        _section(rng, main, nsubs, entry)
    main.add(*_fold(), make("exit"))
    subs = []
    for _ in range(nsubs):
        sub = _Layout()
        for _ in range(rng.randint(1, 3)):
            _section(rng, sub, nsubs, False)  # may call itself or others: depth faults too
        sub.add(make("exit"))
        subs.append(sub)
    return _link(main, subs, maps, name)


def _fold() -> list[Insn]:
    """r0 = (r0 * M ^ r1) * M ^ r2 ...: a difference in any register reaches r0."""
    out = []
    for r in range(1, 10):
        out += [make("mul", 0, imm=progen.FOLD_MULTIPLIER, reg=False), make("xor", 0, r, reg=True)]
    return out


def _link(main: _Layout, subs: list[_Layout], maps: list, name: str) -> Program:
    starts, pc = [], main.size()
    for sub in subs:
        starts.append(pc)
        pc += sub.size()
    insns: list[Insn] = []
    for layout in (main, *subs):
        for item in layout.items:
            if isinstance(item, tuple):
                insns.append(make("call_local", imm=starts[item[1]] - len(insns) - 1))
            else:
                insns.append(item)
    return Program.load(insns, maps=maps, name=name)


@dataclass
class World:
    entry: Program
    maps: list
    mem: bytearray


def build_world(seed: int) -> World:
    rng = random.Random(seed)
    maps = [ArrayMap(8, 4, name="array"), HashMap(4, 8, 3, name="hash"),
            ProgArray(4, name="progs")]
    for slot in range(4):
        if rng.random() < 0.7:
            maps[PROGS].update(slot, _program(rng, maps, f"slot{slot}", False))
    entry = _program(rng, maps, "entry", True)
    mem = bytearray(rng.getrandbits(8) for _ in range(MEM_SIZE))
    return World(entry, maps, mem)


def outcome(world: World, which: str, max_steps: int) -> dict:
    """Everything a run of ``world`` on engine ``which`` shows."""
    host = Host.fixed(seed=7)
    try:
        res = engine.run(world.entry, engine=which, mem=world.mem, host=host,
                         max_steps=max_steps)
        result = ("ok", res.r0, res.steps, [p.name for p in res.chain], res.tail_calls)
    except SysdispatchError as exc:
        result = ("error", type(exc).__name__, str(exc), exc.pc)
    array, hsh = world.maps[ARRAY], world.maps[HASH]
    return {"result": result, "array": [array.lookup(i) for i in range(4)],
            "hash": sorted(hsh.items()), "mem": bytes(world.mem), "events": list(host.events)}


def _compare(seed: int, max_steps: int = 100_000) -> dict:
    a = outcome(build_world(seed), "interp", max_steps)
    b = outcome(build_world(seed), "jit", max_steps)
    assert a == b, f"seed {seed}, max_steps {max_steps}"
    return a


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32))
def test_worlds_agree(seed):
    _compare(seed)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.floats(0, 1))
def test_worlds_agree_when_the_budget_runs_out(seed, fraction):
    full = outcome(build_world(seed), "interp", 100_000)
    steps = full["result"][2] if full["result"][0] == "ok" else 200
    _compare(seed, max_steps=int(steps * fraction))


def test_the_generator_reaches_every_feature():
    """The worlds are worth comparing: across seeds they take tail calls, call subprograms,
    print, change maps, fault and run out of budget."""
    seen = {"tail": 0, "calls": 0, "printk": 0, "maps": 0, "fault": 0, "ok": 0}
    for seed in range(120):
        world = build_world(seed)
        out = outcome(world, "jit", 100_000)
        r = out["result"]
        seen["ok" if r[0] == "ok" else "fault"] += 1
        if r[0] == "ok" and r[4]:
            seen["tail"] += 1
        seen["printk"] += bool(out["events"])
        seen["maps"] += any(v != bytes(8) for v in out["array"]) or bool(out["hash"])
        seen["calls"] += any(i.code == make("call_local").code and i.src == 1
                             for i in world.entry.insns)
    assert all(v >= 5 for v in seen.values()), seen
