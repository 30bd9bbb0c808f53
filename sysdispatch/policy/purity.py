"""Static analysis for the verdict cache: which parts of seccomp_data can a program's verdict
depend on?

A seccomp program whose branches, r0 and tail-call indexes derive only from constants and the
ctx — which reads no map except the PROG_ARRAYs it tail-calls through and calls no helper except
``tail_call`` — is a function of the ctx words it loads (and of its jump tables). :func:`ctx_words`
finds those words (word i = ctx bytes 8i..8i+7: 0 is nr and arch, 1 the instruction pointer,
2..7 the arguments) by a forward abstract interpretation: each register is ``ctx`` (the
unmodified ctx pointer), ``value`` (a scalar computed from constants and ctx loads), ``table`` (a
PROG_ARRAY pointer) or ``dirty`` (anything else: memory, a helper result, an uninitialised or
clobbered register). Generated programs only jump forward, so one pass in pc order, joining
states where paths meet, is exact; a backward jump or anything not understood answers None
(not cacheable), which only costs the cache.
"""

from __future__ import annotations

import weakref

from ..vm.isa import CALL_HELPER, FP, NREGS, PSEUDO_IMM64, PSEUDO_MAP_FD
from ..vm.maps import ProgArray
from ..vm.program import TAIL_CALL, Program, jump_target

CTX, VALUE, TABLE, DIRTY = "ctx", "value", "table", "dirty"
NR_ARCH_WORD, IP_WORD = 0, 1
_cache: "weakref.WeakKeyDictionary[Program, frozenset[int] | None]" = weakref.WeakKeyDictionary()


def ctx_words(program: Program) -> frozenset[int] | None:
    """The ctx words ``program``'s verdict depends on, or None when it may depend on more
    (memory, maps, helpers) or the analysis cannot tell."""
    program = getattr(program, "program", program)   # a VerifiedProgram wraps its Program
    try:
        return _cache[program]
    except KeyError:
        pass
    result = _analyse(program)
    _cache[program] = result
    return result


def depends_only_on_arch_nr(program: Program) -> bool:
    """True when ``program``'s verdict is a function of (arch, nr) and its jump tables."""
    words = ctx_words(program)
    return words is not None and words <= {NR_ARCH_WORD}


def _join(a: tuple | None, b: tuple) -> tuple:
    if a is None:
        return b
    return tuple(x if x == y else DIRTY for x, y in zip(a, b))


def _analyse(program: Program) -> frozenset[int] | None:
    insns, specs = program.insns, program.specs
    n = len(insns)
    words: set[int] = set()
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
            if spec.op == "mov" and kind in ("alu", "alu32") and not spec.reg:
                r[d] = VALUE
            elif spec.op == "mov" and kind in ("alu", "alu32"):
                r[d] = r[s] if r[s] != CTX or kind == "alu" else DIRTY
            elif kind == "movsx":
                r[d] = VALUE if r[s] == VALUE else DIRTY
            elif spec.reg:
                r[d] = VALUE if r[d] == VALUE and r[s] == VALUE else DIRTY
            else:
                r[d] = VALUE if r[d] == VALUE else DIRTY
        elif kind in ("ldx", "ldxs"):
            off, size = insn.off, spec.size
            if r[s] == CTX and 0 <= off and off + size <= 64 and off % 8 + size <= 8:
                words.add(off // 8)
                r[d] = VALUE
            else:
                r[d] = DIRTY
        elif kind in ("st", "stx"):
            pass      # a later load from memory other than the ctx is dirty anyway
        elif kind == "lddw":
            if insn.src == PSEUDO_IMM64:
                r[d] = VALUE
            elif insn.src == PSEUDO_MAP_FD and isinstance(program.maps[insn.imm], ProgArray):
                r[d] = TABLE
            else:
                return None       # a data map: its contents change between calls
        elif kind in ("jcc", "jcc32", "ja", "ja32"):
            if kind in ("jcc", "jcc32") and (r[d] != VALUE or (spec.reg and r[s] != VALUE)):
                return None
            target = jump_target(pc, insn, spec)
            if target <= pc:
                return None       # a loop: out of this analysis' depth
            state[target] = _join(state[target], tuple(r))
            if kind in ("ja", "ja32"):
                continue
        elif kind == "call" and insn.src == CALL_HELPER and insn.imm == TAIL_CALL:
            if (r[1], r[2], r[3]) != (CTX, TABLE, VALUE):
                return None
            for i in (1, 2, 3, 4, 5):
                r[i] = DIRTY      # clobbered; r0 is untouched when the call falls through
        elif kind == "exit":
            if r[0] != VALUE:
                return None
            continue
        else:
            return None           # other helpers, local calls, callx, atomics
        r[FP] = DIRTY
        if nxt < n:
            state[nxt] = _join(state[nxt], tuple(r))
    return frozenset(words)
