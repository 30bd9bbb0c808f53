"""Precision tracking: which scalars' values a verified path actually relied on.

Comparing scalars by range makes pruning miss often: two paths that reach a join with a counter
or a flag of different values look different even when nothing downstream cares about the value.
The kernel's answer (mark_chain_precision in kernel/bpf/verifier.c), which this module follows:
a scalar is *precise* only when its value decided something — it was added to a pointer (it sets
an address), it sized a helper's memory argument, or a conditional jump on it went one way only.
When that happens, the walk goes back through the instructions of the current path
(:class:`~.check.Checkpoint` keeps each stretch of history) to find the registers and stack slots
the value came from, and marks them in every checkpoint on the way. A completed checkpoint then
covers a new state if its *precise* scalars contain the new ones; its other scalars match any
scalar (their values never mattered for the safety of anything after them).

Items are ``(depth, reg)`` for a register of the frame at that call depth, and
``("s", depth, slot)`` for a scalar spilled in a stack slot.
"""

from __future__ import annotations

from .state import SCALAR

History = list  # of (pc, stack slot touched or None)


def backtrack(items: set, hist: History, depth: int, specs, insns) -> tuple[set, int]:
    """Walk ``hist`` backwards from call depth ``depth``; what ``items`` depended on before it,
    and the depth at its start."""
    for pc, slot in reversed(hist):
        if not items:
            break
        spec = specs[pc]
        kind = spec.kind
        if kind == "exit":      # we came back from a callee: going back enters it
            items = {_deeper(i, depth) for i in items}
            depth += 1
            continue
        if kind == "local_call":   # going back leaves the callee for its caller
            items = {(depth - 1, i[1]) for i in items
                     if i[0] == depth and 1 <= i[1] <= 5} | {
                i for i in items if (i[0] if i[0] != "s" else i[1]) < depth}
            depth -= 1
            continue
        insn = insns[pc]
        d = (depth, insn.dst)
        if kind in ("alu", "alu32"):
            if d in items:
                if spec.op == "mov":
                    items = items - {d}
                if spec.reg:
                    items = items | {(depth, insn.src)}
        elif kind == "movsx":
            if d in items:
                items = (items - {d}) | {(depth, insn.src)}
        elif kind == "lddw":
            items = items - {d}
        elif kind in ("ldx", "ldxs"):
            if d in items:
                items = items - {d}
                if slot is not None:
                    items = items | {("s", *slot)}
        elif kind in ("st", "stx"):
            if slot is not None and ("s", *slot) in items:
                items = items - {("s", *slot)}
                if kind == "stx":
                    items = items | {(depth, insn.src)}
        elif kind == "atomic":
            if spec.op == "cmpxchg":
                items = items - {(depth, 0)}
            elif spec.op == "xchg" or spec.op.startswith("fetch_"):
                items = items - {(depth, insn.src)}
            if slot is not None:
                items = items - {("s", *slot)}
        elif kind == "call":
            items = {i for i in items if not (i[0] == depth and 0 <= i[1] <= 5)}
    return items, depth


def _deeper(item: tuple, depth: int) -> tuple:
    """Across a callee's exit, backwards: the caller's r0 was the callee's r0."""
    if item == (depth, 0):
        return (depth + 1, 0)
    return item


def mark(v, st, items: set) -> None:
    """The scalars ``items`` (of the state ``st`` is in now) decide something: mark them and
    whatever they came from precise in every checkpoint of the path."""
    depth = len(st.frames) - 1
    items, depth = backtrack(set(items), st.hist, depth, v.specs, v.insns)
    cp = st.parent
    while cp is not None and items:
        frames = cp.state.frames
        keep = set()
        for it in items:
            if it[0] == "s":
                _, f, spi = it
                slot = frames[f].stack.get(spi) if f < len(frames) else None
                if slot is not None and slot.spill is not None and slot.spill.kind == SCALAR:
                    keep.add(it)
            else:
                f, r = it
                if f < len(frames) and frames[f].regs[r].kind == SCALAR:
                    keep.add(it)
        if keep <= cp.precise:
            return          # already marked: so is everything it came from, further back
        cp.precise |= keep
        items, depth = backtrack(keep, cp.hist, depth, v.specs, v.insns)
        cp = cp.parent
