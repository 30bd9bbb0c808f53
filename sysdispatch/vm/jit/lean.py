"""Lean entries: which programs can run with no per-run memory, helper environment or budget checks.

A *lean* program is one whose whole run is known at compile time to need nothing from the
machinery :mod:`.runtime` pools — from the instruction fields alone:

* it has no loop, so its longest path is a constant: when the budget
  covers it (checked once, at entry) no budget check is needed inside;
* it calls nothing but ``tail_call`` through a map named by the instruction before (the
  dispatcher's shape), so no helper needs an :class:`~sysdispatch.vm.helpers.Env`;
* every load and store addresses either the frame's stack at a constant offset from ``r10``
  (``r10`` is used for nothing else) or the ctx at a constant offset from a register that holds
  the ctx pointer on every path (``r1`` at entry, or a copy of it): so the ctx is read from the
  caller's bytes directly and the stack is a plain buffer, with no :class:`Memory` at all.

Its *lean function* ``L`` (see :mod:`.codegen`) returns the :class:`RunResult` itself. An access
outside the ctx goes through a real :class:`Memory` holding the ctx (``CF``/``CS`` in the
function's globals), which raises the interpreter's error; a tail call into a program that is
not lean, or that the budget does not cover, continues on the general path (``runtime.promote``).
"""

from __future__ import annotations

from ..interp import writes_fp
from ..isa import FP
from ..program import TAIL_CALL, Program
from .emit import stack_offset


def _mov_copy(insn, spec) -> bool:
    return spec.kind == "alu" and spec.op == "mov" and spec.reg and insn.off == 0


def _reads_r10_otherwise(insn, spec) -> bool:
    """Whether the instruction reads r10 other than as the base of a direct stack access
    (whose offset the caller checks); a program that writes r10 is never lean."""
    kind = spec.kind
    if kind in ("ldx", "ldxs", "st"):
        return False
    if kind in ("stx", "atomic"):
        return insn.src == FP
    if kind in ("call", "local_call", "lddw"):
        return False  # their src field is a pseudo value, not a register
    return (("dst" not in spec.zero and insn.dst == FP)
            or ("src" not in spec.zero and insn.src == FP))


def analyse_lean(program: Program, blocks: dict, tail_sites: dict[int, int],
                 writes) -> tuple[dict[int, frozenset[int]], int] | None:
    """(registers holding the ctx pointer before each pc, longest path in instructions) when
    ``program`` is lean, else None. ``blocks`` from :func:`.codegen.analyse`; ``tail_sites``
    the tail calls whose map is known; ``writes(insn, spec)`` the registers an insn may write."""
    insns, specs = program.insns, program.specs
    for pc, (insn, spec) in enumerate(zip(insns, specs)):  # reachable or not: the layout
        if spec is None:                                    # writes every call target
            continue
        if (spec.kind in ("callx", "local_call") or _reads_r10_otherwise(insn, spec)
                or writes_fp(insn, spec)):
            return None
        if spec.kind == "call" and (insn.imm != TAIL_CALL or pc not in tail_sites):
            return None
    order = _topological(blocks)
    if order is None:
        return None  # a loop: the longest path is unbounded
    facts_in: dict[int, frozenset[int]] = {0: frozenset({1})}
    at: dict[int, frozenset[int]] = {}
    for start in order:
        b = blocks[start]
        facts = set(facts_in[start])
        if b.term == "off":
            continue
        pc = start
        while pc < b.end:
            insn, spec = insns[pc], specs[pc]
            at[pc] = frozenset(facts)
            kind = spec.kind
            if kind in ("ldx", "ldxs"):
                if insn.src == FP:
                    if stack_offset(FP, insn.off, spec.size) is None:
                        return None
                elif insn.src not in facts:
                    return None
            elif kind in ("st", "stx", "atomic"):
                if insn.dst == FP:
                    if stack_offset(FP, insn.off, spec.size) is None:
                        return None
                elif kind == "atomic" or insn.dst not in facts:
                    return None
            if _mov_copy(insn, spec) and insn.src in facts:
                facts.add(insn.dst)
            else:
                facts.difference_update(writes(insn, spec))
            pc += 2 if spec.wide else 1
        for succ in b.successors():
            prev = facts_in.get(succ)
            facts_in[succ] = frozenset(facts) if prev is None else prev & facts
    return at, _longest(blocks, order)


def _topological(blocks: dict) -> list[int] | None:
    """The blocks reachable from pc 0, each before its successors; None when they form a loop."""
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    post: list[int] = []
    stack = [(0, iter(blocks[0].successors()))]
    state[0] = 1
    while stack:
        start, succs = stack[-1]
        for succ in succs:
            seen = state.get(succ)
            if seen == 1:
                return None
            if seen is None:
                state[succ] = 1
                stack.append((succ, iter(blocks[succ].successors())))
                break
        else:
            stack.pop()
            state[start] = 2
            post.append(start)
    return post[::-1]


def _longest(blocks: dict, order: list[int]) -> int:
    """The most instructions any path from the entry executes (no loops)."""
    longest: dict[int, int] = {}
    for start in reversed(order):
        b = blocks[start]
        longest[start] = b.count + max((longest[s] for s in b.successors()), default=0)
    return longest[0]


# L's parameters: the run's chain so far, max_steps, the budget left, the ctx bytes and their
# length, the tail-call count, the frame's stack (buffer and word views, or None: not made yet),
# the caller's host (None: the default; for a tail callee that goes on on the general path) and the
# registers, r1 and r2 first (what an entry from runtime.run sets).
LEAN_PARAMS = ("ch, ms, left, cb, n, r1, r2, tc=0, sv=None, hs=None, "
               + ", ".join(f"r{i}=0" for i in (0, 3, 4, 5, 6, 7, 8, 9)))


def write_lean(lines: list, program: Program, fast_tail: bool,
               facts: dict[int, frozenset[int]], tables: dict) -> bool:
    """Append the lean function ``L`` to ``lines`` (laid out by codegen's :class:`_Layout` in
    lean mode); returns whether it reads the ctx directly."""
    from .codegen import _direct_stack, _Layout, _tree  # codegen imports this module
    layout = _Layout(program, fast_tail, facts)
    bodies = layout.write_roots()
    tables.update(layout.jump_tables)
    for body in bodies.values():
        body[:] = [line for line in body if line is not None]
    lines.append((0, f"def L({LEAN_PARAMS}):", -1))
    if _direct_stack(program):
        lines.append((1, "if sv is None: sv = STK()", -1))
        lines.append((1, "stk, s8, s4, s2 = sv", -1))
    roots = sorted(bodies)
    if len(roots) > 1:
        lines.append((1, "blk = 0", -1))
        lines.append((1, "while True:", -1))
        _tree(lines, roots, bodies, 2)
    else:
        _tree(lines, roots, bodies, 1)
    return layout.lean_ctx
