"""The random program generator: its programs are valid, and the kernel's verifier agrees.

The path walk below is an independent check of the generator's promises (forward jumps only,
aligned stack accesses, loads only of bytes stored on every path, registers set before use); the
kernel test is the real proof that its programs are verifier-valid socket filters.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from sysdispatch.vm import kernel, progen
from sysdispatch.vm.isa import FP, STACK_SIZE, lddw_value
from sysdispatch.vm.program import Program, jump_target

SEEDS = range(300)


def _length(seed: int) -> int:
    return random.Random(seed ^ 0x5EED).randint(1, 120)


def _program(seed: int, **kw) -> list:
    kw.setdefault("length", _length(seed))
    return progen.random_program(random.Random(seed), **kw)


def _reads_writes(insn, spec) -> tuple[set[int], set[int]]:
    """Registers an instruction reads and writes (enough for the forms progen emits)."""
    kind = spec.kind
    if kind in ("alu", "alu32"):
        src = {insn.src} if spec.reg else set()
        return (src if spec.op == "mov" else src | {insn.dst}), {insn.dst}
    if kind in ("neg", "end", "bswap"):
        return {insn.dst}, {insn.dst}
    if kind == "movsx":
        return {insn.src}, {insn.dst}
    if kind in ("jcc", "jcc32"):
        return {insn.dst} | ({insn.src} if spec.reg else set()), set()
    if kind == "lddw":
        return set(), {insn.dst}
    if kind in ("ldx", "ldxs"):
        return {insn.src}, {insn.dst}
    if kind == "st":
        return {insn.dst}, set()
    if kind == "stx":
        return {insn.dst, insn.src}, set()
    if kind == "atomic":
        if spec.op == "cmpxchg":
            return {insn.dst, insn.src, 0}, {0}
        return {insn.dst, insn.src}, ({insn.src} if spec.op.startswith("fetch") or
                                      spec.op == "xchg" else set())
    if kind == "exit":
        return {0}, set()
    return set(), set()


def walk_paths(insns) -> int:
    """Follow every path; assert the generator's promises on each. Returns the paths' states."""
    prog = Program.load(insns)
    start = (0, frozenset({1, FP}), frozenset())  # at entry r1 = ctx and r10 = fp are set
    todo, seen = [start], set()
    while todo:
        state = todo.pop()
        if state in seen:
            continue
        seen.add(state)
        pc, regs, stored = state
        insn, spec = insns[pc], prog.specs[pc]
        assert spec is not None, f"pc {pc}: reached the second slot of an lddw"
        reads, writes = _reads_writes(insn, spec)
        assert reads <= regs, f"pc {pc}: {spec.name} reads unset r{sorted(reads - regs)}"
        assert FP not in writes, f"pc {pc}: {spec.name} writes r10"
        if spec.kind in ("ldx", "ldxs", "st", "stx", "atomic"):
            base = insn.src if spec.kind in ("ldx", "ldxs") else insn.dst
            assert base == FP, f"pc {pc}: memory access not relative to r10"
            assert -STACK_SIZE <= insn.off <= -spec.size and insn.off % spec.size == 0, \
                f"pc {pc}: stack access off {insn.off} size {spec.size} bad or unaligned"
            span = frozenset(range(insn.off, insn.off + spec.size))
            if spec.kind in ("st", "stx"):
                stored |= span
            else:
                assert span <= stored, f"pc {pc}: {spec.name} reads unstored stack {insn.off}"
        regs = regs | writes
        if spec.kind == "exit":
            assert pc == len(insns) - 1, f"pc {pc}: exit before the end"
            continue
        nxt = pc + (2 if spec.wide else 1)
        target = jump_target(pc, insn, spec)
        if target is not None:
            assert target > pc, f"pc {pc}: backward jump to {target}"
            todo.append((target, regs, stored))
        if spec.kind not in ("ja", "ja32"):
            assert nxt < len(insns), f"pc {pc}: falls off the end"
            todo.append((nxt, regs, stored))
    return len(seen)


def test_same_seed_same_program():
    assert _program(7) == _program(7)
    assert _program(7) != _program(8)


@pytest.mark.parametrize("seed", range(0, 300, 3))
def test_programs_keep_the_generators_promises(seed):
    insns = _program(seed)
    assert walk_paths(insns) > 0
    reached = set()  # every slot reachable in the control-flow graph (the kernel insists)
    prog = Program.load(insns)
    todo = [0]
    while todo:
        pc = todo.pop()
        if pc in reached:
            continue
        reached.add(pc)
        spec = prog.specs[pc]
        if spec.kind == "exit":
            continue
        target = jump_target(pc, insns[pc], spec)
        if target is not None:
            todo.append(target)
        if spec.kind not in ("ja", "ja32"):
            todo.append(pc + (2 if spec.wide else 1))
    assert reached == {pc for pc, s in enumerate(prog.specs) if s is not None}


def test_every_form_of_every_feature_appears():
    seen = set()
    for seed in SEEDS:
        prog = Program.load(_program(seed))
        seen.update(s for s in prog.specs if s is not None)
    missing = [f"{s.name}{'(x)' if s.reg else ''}" for s in progen.generated_specs()
               if s not in seen]
    assert not missing, f"forms never generated in {len(SEEDS)} programs: {missing}"


@pytest.mark.parametrize("features", [{"alu32", "jmp32"}, {"alu", "stack"}, {"alu", "jmp"},
                                      {"alu32", "end", "stack", "ldxs"}])
def test_features_limit_the_body(features):
    allowed = set(progen.generated_specs(features))
    for seed in range(40):
        insns = progen.random_program(random.Random(seed), length=30, features=features,
                                      fold=False)
        prog = Program.load(insns)
        # The set-up of r0-r9 (mov, mov32, lddw) always comes first: one slot per register,
        # two for an lddw.
        pc, regs = 0, 0
        while regs < progen.NREGS_USED:
            assert prog.specs[pc].kind in ("alu", "alu32", "lddw") and insns[pc].dst == regs
            pc += 2 if prog.specs[pc].wide else 1
            regs += 1
        body = [s for s in prog.specs[pc:-1] if s is not None]
        stray = {s.name for s in body if s not in allowed}
        assert not stray, f"seed {seed}: forms outside {sorted(features)}: {stray}"
        assert prog.specs[-1].kind == "exit"


def test_setup_uses_64_bit_values_and_immediates_obey_the_verifier():
    wide = False
    for seed in range(100):
        insns = _program(seed)
        prog = Program.load(insns)
        for pc, spec in enumerate(prog.specs):
            if spec is None:
                continue
            insn = insns[pc]
            if spec.kind == "lddw" and lddw_value(insn, insns[pc + 1]) >> 32 not in (0, 0xFFFFFFFF):
                wide = True
            if spec.kind in ("alu", "alu32") and not spec.reg:
                if spec.op in ("div", "mod", "sdiv", "smod"):
                    assert insn.imm != 0, f"seed {seed} pc {pc}: divide by immediate 0"
                if spec.op in ("lsh", "rsh", "arsh"):
                    assert 0 <= insn.imm < (64 if spec.is64 else 32), f"seed {seed} pc {pc}"
    assert wide, "no lddw with a value that needs all 64 bits"


@settings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 60))
def test_hypothesis_randoms_drive_the_generator(rng, length):
    # The form the interpreter-vs-JIT tests use: hypothesis' own Random, so programs shrink.
    assert walk_paths(progen.random_program(rng, length=length)) > 0


def test_unknown_feature_is_refused():
    with pytest.raises(ValueError, match="unknown progen features: floats"):
        progen.random_program(random.Random(0), features={"alu", "floats"})


# --- the kernel's verifier is the judge -------------------------------------------------------

needs_kernel = pytest.mark.skipif(not kernel.kernel_bpf_available(),
                                  reason="needs root and bpf() (BPF_PROG_LOAD) to ask the kernel")


@needs_kernel
def test_the_kernel_accepts_every_generated_program():
    refused = []
    for seed in SEEDS:
        insns = _program(seed)
        try:
            with kernel.load_program(insns, "socket_filter"):
                pass
        except kernel.KernelVerifierError as exc:
            refused.append(f"seed {seed}: {exc}")
    assert not refused, "\n".join(refused[:5])


@needs_kernel
@pytest.mark.parametrize("features", [{"alu32", "jmp32", "stack"},
                                      {"alu", "jmp", "gotol", "atomic", "stack"},
                                      {"alu", "alu32", "sdiv", "movsx", "bswap", "end"}])
def test_the_kernel_accepts_feature_subsets(features):
    for seed in range(30):
        insns = progen.random_program(random.Random(seed), length=60, features=features)
        with kernel.load_program(insns):
            pass


def test_the_path_walk_catches_a_load_of_unstored_stack():
    # The walk above is only evidence if it can fail: r0 = *(u64 *)(r10 - 8) with nothing stored.
    from sysdispatch.vm.isa import make
    bad = [make("mov", 0, imm=0, reg=False), make("ldxdw", 0, FP, off=-8), make("exit")]
    with pytest.raises(AssertionError, match="reads unstored stack -8"):
        walk_paths(bad)
    with pytest.raises(AssertionError, match="backward jump"):
        walk_paths([make("mov", 0, imm=0, reg=False), make("ja", off=-2), make("exit")])
