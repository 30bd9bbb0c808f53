"""The static half of verification: functions, control flow, reachability, register liveness.

Before any path is walked the kernel checks the program's shape (``check_subprogs`` and
``check_cfg`` in kernel/bpf/verifier.c): a local call's target starts a function, no jump leaves
its function, each function ends in ``exit`` or ``goto``, every instruction is reachable from the
entry. :class:`Cfg` does the same, in the same order, with the kernel's messages, and also works
out which pcs are worth a pruning checkpoint (jump targets, and the instruction after a call or a
conditional jump) and which registers are live at each pc (read before being written on some
path), so state comparison can ignore the dead ones.
"""

from __future__ import annotations

from ...errors import VerifierError
from ..program import Program, jump_target

ARG_REGS = frozenset(range(1, 6))
CALLER_SAVED = frozenset(range(0, 6))
CALLEE_SAVED = frozenset(range(6, 10))


class Cfg:
    def __init__(self, prog: Program, helper_args) -> None:
        """``helper_args(id)`` gives how many argument registers a helper reads."""
        self.prog = prog
        self.n = n = len(prog.insns)
        insns, specs = prog.insns, prog.specs
        # pc -> (successors in the same function, called function start or None)
        self.succ: list[tuple[int, ...]] = [()] * n
        self.callee: list[int | None] = [None] * n
        starts = {0}
        for pc, spec in enumerate(specs):
            if spec is None:
                continue
            if spec.kind == "callx":   # RFC 9669 has it; the kernel does not
                raise VerifierError(f"unknown opcode {insns[pc].code:02x}", pc=pc)
            if spec.kind == "local_call":
                starts.add(jump_target(pc, insns[pc], spec))
        self.starts = sorted(starts)
        self.func_of = [0] * n
        bounds = self.starts + [n]
        for a, b in zip(bounds, bounds[1:]):
            for pc in range(a, b):
                self.func_of[pc] = a
        self._check_shape()
        self.prune = [False] * n
        self._walk()
        self.live_in = self._liveness(helper_args)

    # --- check_subprogs: jumps stay inside their function, functions end in exit/goto ----------

    def _check_shape(self) -> None:
        insns, specs, n = self.prog.insns, self.prog.specs, self.n
        bounds = self.starts + [n]
        for a, b in zip(bounds, bounds[1:]):
            for pc in range(a, b):
                spec = specs[pc]
                if spec is None or spec.kind == "local_call":
                    continue
                t = jump_target(pc, insns[pc], spec)
                if t is not None and not a <= t < b:
                    raise VerifierError(f"jump out of range from insn {pc} to {t}", pc=pc)
            last = b - 1
            if specs[last] is None:   # second slot of an lddw
                last -= 1
            if specs[last].kind not in ("exit", "ja", "ja32"):
                raise VerifierError("last insn is not an exit or jmp", pc=last)

    # --- check_cfg: every instruction reachable; prune points ----------------------------------

    def _walk(self) -> None:
        insns, specs, n = self.prog.insns, self.prog.specs, self.n
        succ, prune = self.succ, self.prune
        for pc, spec in enumerate(specs):
            if spec is None:
                continue
            kind = spec.kind
            nxt = pc + (2 if spec.wide else 1)
            if kind == "exit":
                succ[pc] = ()
            elif kind in ("ja", "ja32"):
                t = jump_target(pc, insns[pc], spec)
                succ[pc] = (t,)
                prune[t] = True
            elif kind in ("jcc", "jcc32"):
                t = jump_target(pc, insns[pc], spec)
                succ[pc] = (nxt, t)
                prune[t] = prune[nxt] = True
            elif kind in ("call", "local_call"):
                succ[pc] = (nxt,)
                prune[nxt] = True
                if kind == "local_call":
                    self.callee[pc] = t = jump_target(pc, insns[pc], spec)
                    prune[t] = True
            else:
                succ[pc] = (nxt,)
        # Reachability from the entry, entering functions through their calls.
        seen = [False] * n
        todo = [0]
        seen[0] = True
        while todo:
            pc = todo.pop()
            nexts = list(succ[pc])
            if self.callee[pc] is not None:
                nexts.append(self.callee[pc])
            for t in nexts:
                if not seen[t]:
                    seen[t] = True
                    todo.append(t)
        for pc in range(n):
            if specs[pc] is not None and not seen[pc]:
                raise VerifierError(f"unreachable insn {pc}", pc=pc)
        self.tail_calls = False

    # --- liveness --------------------------------------------------------------------------------

    def _liveness(self, helper_args) -> list[frozenset[int]]:
        """live_in[pc]: registers some path from pc (inside its function) reads before writing.
        r10 is left out: it never changes within a frame."""
        insns, specs, n = self.prog.insns, self.prog.specs, self.n
        use: list[frozenset[int]] = [frozenset()] * n
        defs: list[frozenset[int]] = [frozenset()] * n
        for pc, spec in enumerate(specs):
            if spec is None:
                continue
            i = insns[pc]
            k = spec.kind
            u: set[int] = set()
            d: set[int] = set()
            if k in ("alu", "alu32"):
                if spec.op == "mov":
                    if spec.reg:
                        u.add(i.src)
                else:
                    u.add(i.dst)
                    if spec.reg:
                        u.add(i.src)
                d.add(i.dst)
            elif k in ("neg", "end", "bswap"):
                u.add(i.dst)
                d.add(i.dst)
            elif k == "movsx":
                u.add(i.src)
                d.add(i.dst)
            elif k == "lddw":
                d.add(i.dst)
            elif k in ("ldx", "ldxs"):
                u.add(i.src)
                d.add(i.dst)
            elif k == "st":
                u.add(i.dst)
            elif k == "stx":
                u.update((i.dst, i.src))
            elif k == "atomic":
                u.update((i.dst, i.src))
                if spec.op == "cmpxchg":
                    u.add(0)
                    d.add(0)
                elif spec.op in ("xchg",) or spec.op.startswith("fetch_"):
                    d.add(i.src)
            elif k in ("jcc", "jcc32"):
                u.add(i.dst)
                if spec.reg:
                    u.add(i.src)
            elif k == "call":
                u.update(range(1, 1 + helper_args(i.imm)))
                d.update(CALLER_SAVED)
            elif k == "local_call":
                u.update(ARG_REGS)
                d.update(CALLER_SAVED)
            elif k == "exit":
                u.add(0)
            u.discard(10)
            d.discard(10)
            use[pc], defs[pc] = frozenset(u), frozenset(d)
        live: list[frozenset[int]] = [frozenset()] * n
        changed = True
        while changed:
            changed = False
            for pc in range(n - 1, -1, -1):
                if specs[pc] is None:
                    continue
                out: frozenset[int] = frozenset()
                for t in self.succ[pc]:
                    out |= live[t]
                new = use[pc] | (out - defs[pc])
                if new != live[pc]:
                    live[pc] = new
                    changed = True
        return live

    def live_after_return(self, callsite: int) -> frozenset[int]:
        """Registers of a suspended caller that matter: r6-r9 live where the call returns."""
        nxt = callsite + 1
        return self.live_in[nxt] & CALLEE_SAVED

