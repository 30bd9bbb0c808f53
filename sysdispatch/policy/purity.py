"""Static analysis for the verdict cache: does a program's result depend only on (arch, nr)?

A seccomp program whose every branch and whose r0 derive from constants, ``nr`` and ``arch``
(ctx bytes 0..7) — which reads no map except the PROG_ARRAYs it tail-calls through, and calls no
helper except ``tail_call`` with such an index — gives the same verdict for every call with the
same (arch, nr) as long as its jump tables stay the same. :func:`depends_only_on_arch_nr` proves
that by a forward abstract interpretation: each register is ``ctx`` (the unmodified ctx
pointer), ``clean`` (a scalar made of constants, nr and arch), ``table`` (a PROG_ARRAY pointer)
or ``dirty`` (anything else: an argument, the instruction pointer, memory, a helper result).
Generated programs only jump forward, so one pass in pc order, joining states where paths meet,
is exact; a backward jump or anything not understood answers False, which only costs the cache.
"""

from __future__ import annotations

import weakref

from ..vm.isa import CALL_HELPER, FP, NREGS, PSEUDO_IMM64, PSEUDO_MAP_FD
from ..vm.maps import ProgArray
from ..vm.program import TAIL_CALL, Program, jump_target

CTX, CLEAN, TABLE, DIRTY = "ctx", "clean", "table", "dirty"
_KNOWN_BYTES = 8   # nr (u32 at 0) and arch (u32 at 4)
_cache: "weakref.WeakKeyDictionary[Program, bool]" = weakref.WeakKeyDictionary()


def depends_only_on_arch_nr(program: Program) -> bool:
    """True when ``program``'s verdict is a function of (arch, nr) and its jump tables."""
    program = getattr(program, "program", program)   # a VerifiedProgram wraps its Program
    try:
        return _cache[program]
    except KeyError:
        pass
    result = _analyse(program)
    _cache[program] = result
    return result


def _join(a: tuple | None, b: tuple) -> tuple:
    if a is None:
        return b
    return tuple(x if x == y else DIRTY for x, y in zip(a, b))


def _analyse(program: Program) -> bool:
    insns, specs = program.insns, program.specs
    n = len(insns)
    state: list[tuple | None] = [None] * n
    start = [DIRTY] * NREGS
    start[1] = CTX
    state[0] = tuple(start)
    for pc in range(n):
        spec, insn = specs[pc], insns[pc]
        if spec is None or state[pc] is None:
            continue              # second slot of lddw, or unreachable
        r = list(state[pc])
        kind, d, s = spec.kind, insn.dst, insn.src
        nxt = pc + (2 if spec.wide else 1)
        if kind in ("alu", "alu32", "neg", "end", "bswap", "movsx"):
            if spec.op == "mov" and kind in ("alu", "alu32"):
                r[d] = (r[s] if r[s] != CTX or kind == "alu" else DIRTY) if spec.reg else CLEAN
            elif spec.reg:
                r[d] = CLEAN if r[d] == CLEAN and r[s] == CLEAN else DIRTY
            else:
                r[d] = CLEAN if r[d] == CLEAN else DIRTY
        elif kind in ("ldx", "ldxs"):
            inside = r[s] == CTX and insn.off >= 0 and insn.off + spec.size <= _KNOWN_BYTES
            r[d] = CLEAN if inside else DIRTY
        elif kind in ("st", "stx"):
            pass      # a later load from memory other than the ctx is dirty anyway
        elif kind == "lddw":
            if insn.src == PSEUDO_IMM64:
                r[d] = CLEAN
            elif insn.src == PSEUDO_MAP_FD and isinstance(program.maps[insn.imm], ProgArray):
                r[d] = TABLE
            else:
                return False      # a data map: its contents change between calls
        elif kind in ("jcc", "jcc32", "ja", "ja32"):
            if kind in ("jcc", "jcc32") and (r[d] != CLEAN or (spec.reg and r[s] != CLEAN)):
                return False
            target = jump_target(pc, insn, spec)
            if target <= pc:
                return False      # a loop: out of this analysis' depth
            state[target] = _join(state[target], tuple(r))
            if kind in ("ja", "ja32"):
                continue
        elif kind == "call" and insn.src == CALL_HELPER and insn.imm == TAIL_CALL:
            if (r[1], r[2], r[3]) != (CTX, TABLE, CLEAN):
                return False
            for i in (1, 2, 3, 4, 5):
                r[i] = DIRTY      # clobbered; r0 is untouched when the call falls through
        elif kind == "exit":
            if r[0] != CLEAN:
                return False
            continue
        else:
            return False          # other helpers, local calls, callx, atomics
        r[FP] = DIRTY
        if nxt < n:
            state[nxt] = _join(state[nxt], tuple(r))
    return True
