"""JIT code generation: one Python function per program, from the instruction fields alone.

:func:`generate` turns a loaded program into the source of one function ``F``::

    def F(env, mem, depth, left, blk, r0, r1, ..., r9):

Registers are local variables; ``r10`` is the frame's stack top; ``stk`` its stack buffer and
``s2``/``s4``/``s8`` views of it as arrays of words (fetched at entry when some access uses the
stack directly, otherwise the stack is made on first touch as in the interpreter). The body is a state machine over basic blocks: ``while True:``
around a chain of ``if blk <= PC:`` tests in program order, one per basic block, where ``blk``
is the pc of the block to run. Falling through needs no code (``blk`` stays below the next block's
pc); a forward jump sets ``blk`` to its target and lets the chain skip the blocks in between; a
backward jump sets ``blk`` and ``continue`` s. Long programs get a second level of ``if blk <
END:`` groups so a far jump skips a group in one test. A bpf-to-bpf call enters the same function
with ``blk`` at the callee's first pc.

Instruction semantics are never spelled here: ALU, jump, byte-order, sign-extension and atomic
operations paste the expression templates of :mod:`sysdispatch.vm.semantics` with ``a``/``b``/
``c``/``m``/``v`` replaced by register names or literals. Loads and stores go through the run's
:class:`~sysdispatch.vm.memory.Memory` with the interpreter's fast path (its last region hit)
inline, so faults are the interpreter's; an access at a constant offset from ``r10`` that lies
inside the 512-byte frame indexes the stack buffer directly (``r10`` is never written: the
compile step refuses such programs, as the interpreter does).

Step accounting is the interpreter's, exactly: ``left`` is the remaining instruction budget and
each *segment* (a basic block, also cut after every call so a callee or a tail call sees the
caller's steps as the interpreter counts them) subtracts its length on entry. When the budget
does not cover the whole segment, ``BUDGET`` runs the part that fits on the interpreter's
closures and raises the budget fault at the same pc the interpreter would.

The source depends only on instruction fields (opcodes, registers, offsets, immediates, pcs) and
on one engine choice (whether ``tail_call`` takes the fast path): names, maps and helper
implementations are bound per program in the function's globals (``K<pc>`` for map addresses,
``H<id>`` for helpers, ``PREF`` a weak reference to the program, ``LINES`` the line -> pc table),
so two programs with the same instructions share one compiled code object.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from ...errors import EncodingError
from .. import semantics as sem
from ..isa import FP, PSEUDO_IMM64, PSEUDO_MAP_FD, STACK_SIZE, Insn, lddw_value
from ..memory import SIZE_MASK
from ..program import TAIL_CALL, Program, jump_target

M64 = sem.M64
# Above this many basic blocks the chain is grouped; groups hold about sqrt(blocks) blocks.
GROUP_FROM = 16
# The function's parameters after the registers' common prefix; r0..r9 follow.
PARAMS = "env, mem, depth, left, blk"
REGS = ", ".join(f"r{i}" for i in range(10))
REGS_UPTO5 = ", ".join(f"r{i}" for i in range(6))


@dataclass(frozen=True)
class Generated:
    """The source of one program's function and what must be bound to run it.

    ``lines[i]`` is the pc that source line ``i + 1`` belongs to (``-1``: none); ``map_consts``
    the pcs whose ``lddw`` loads a map address or map value address (bound as ``K<pc>``);
    ``helper_ids`` the helper ids called directly (bound as ``H<id>``); ``tail_maps`` the pcs of
    ``lddw r2, map`` whose map a following ``tail_call`` uses as it is (bound as ``M<pc>``, with
    ``TM<pc>`` the tail-call function that takes it).
    """

    source: str
    lines: tuple[int, ...]
    map_consts: tuple[int, ...]
    helper_ids: tuple[int, ...]
    tail_maps: tuple[int, ...] = ()


_NAME = re.compile(r"\b([abcmv])\b")


def paste(template: str, **names: str) -> str:
    """``template`` with its placeholders ``a``, ``b``, ``c``, ``m``, ``v`` replaced."""
    return _NAME.sub(lambda mt: names.get(mt.group(1), mt.group(1)), template)


def _reg(n: int, bits: int = 64) -> str:
    return f"r{n}" if bits == 64 else f"(r{n} & {sem.M32})"


def _lit(v: int) -> str:
    return str(v) if v < 4096 else hex(v)


class _Emitter:
    """Collects source lines with the pc each one belongs to."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.pcs: list[int] = []

    def add(self, indent: int, line: str, pc: int = -1) -> None:
        self.text.append("    " * indent + line)
        self.pcs.append(pc)


def _calls(spec) -> bool:
    return spec.kind in ("call", "local_call", "callx")


def _ends_block(spec) -> bool:
    return spec.kind in ("ja", "ja32", "jcc", "jcc32", "exit")


def analyse(program: Program) -> tuple[list[int], list[int]]:
    """(pcs that start a basic block, pcs that start a step-accounting segment), sorted."""
    insns, specs = program.insns, program.specs
    n = len(insns)
    blocks = {0}
    segments = {0}
    for pc, (insn, spec) in enumerate(zip(insns, specs)):
        if spec is None:
            continue
        nxt = pc + (2 if spec.wide else 1)
        target = jump_target(pc, insn, spec)
        if target is not None:
            blocks.add(target)
        if _ends_block(spec) and nxt < n:
            blocks.add(nxt)
        if _calls(spec) and nxt < n:
            segments.add(nxt)
    if _can_fall_off(program):
        blocks.add(n)  # a pseudo-block that faults like the interpreter's slot past the end
    blocks = {b for b in blocks if b <= n}
    segments = {s for s in segments if s <= n} | blocks
    return sorted(blocks), sorted(segments)


def generate(program: Program, *, fast_tail: bool) -> Generated:
    """The source of ``F`` for ``program`` (see the module docstring).

    ``fast_tail``: the helper table's ``tail_call`` is the standard one, so ``call 12`` becomes
    ``TAIL(env, r2, r3)`` returning the callee (or None), and ``F`` returns it to the trampoline
    with the live registers. Raises :class:`EncodingError` (pc attached by the caller) only for
    an opcode kind this generator does not know.
    """
    insns, specs = program.insns, program.specs
    n = len(insns)
    blocks, segments = analyse(program)
    out = _Emitter()
    out.add(0, f"def F({PARAMS}, {REGS}):")
    if _uses_r10(program):
        out.add(1, "r10 = TOPS[depth]")
    else:  # only the budget's slow path wants it
        out.add(1, "r10 = None")
    tail_sites = _tail_map_sites(program, segments) if fast_tail else {}
    if _direct_stack(program):  # the frame's stack exists from here on (else made on touch)
        out.add(1, "stk, s8, s4, s2 = STACK(env, mem, depth)")
    out.add(1, "while True:")
    grouped = len(blocks) > GROUP_FROM
    size = max(4, int(len(blocks) ** 0.5)) if grouped else len(blocks)
    groups = [blocks[i:i + size] for i in range(0, len(blocks), size)]
    map_consts: list[int] = []
    helper_ids: set[int] = set()
    seg_set = set(segments)
    for gi, group in enumerate(groups):
        base = 2
        if grouped:
            end = groups[gi + 1][0] if gi + 1 < len(groups) else n + 1
            out.add(2, f"if blk < {end}:", group[0])
            base = 3
        for bi, start in enumerate(group):
            stop = _next_block(blocks, start, n)
            out.add(base, f"if blk <= {start}:", start)
            ind = base + 1
            if start == n:  # only reached by running past the last instruction
                _segment_head(out, ind, n, 1)
                out.add(ind, "RAN_OFF()", n)
                continue
            pc = start
            while pc < stop:
                if pc in seg_set:
                    _segment_head(out, ind, pc, _steps(program, pc, seg_set, stop))
                spec = specs[pc]
                _emit_insn(out, ind, program, pc, start, insns[pc], spec, fast_tail,
                           map_consts, helper_ids, tail_sites.get(pc))
                pc += 2 if spec.wide else 1
    text = "\n".join(out.text) + "\n"
    return Generated(text, tuple(out.pcs), tuple(map_consts), tuple(sorted(helper_ids)),
                     tuple(sorted(set(tail_sites.values()))))


def _next_block(blocks: list[int], start: int, n: int) -> int:
    for b in blocks:
        if b > start:
            return b
    return n


def _direct_stack(program: Program) -> bool:
    """Whether some load, store or atomic addresses the stack as a constant offset from r10."""
    for insn, spec in zip(program.insns, program.specs):
        if spec is None:
            continue
        if spec.kind in ("ldx", "ldxs") and _stack_off(insn.src, insn.off, spec.size) is not None:
            return True
        if spec.kind in ("st", "stx", "atomic") and \
                _stack_off(insn.dst, insn.off, spec.size) is not None:
            return True
    return False


def _uses_r10(program: Program) -> bool:
    for insn, spec in zip(program.insns, program.specs):
        if spec is None or spec.kind == "lddw":
            continue
        if ("dst" not in spec.zero and insn.dst == FP) or \
                ("src" not in spec.zero and spec.kind not in ("call", "local_call")
                 and insn.src == FP):
            return True
    return False


def _writes(insn: Insn, spec) -> tuple[int, ...]:
    """Registers an instruction may write (calls: r0-r5, as a callee may change them)."""
    kind = spec.kind
    if kind in ("alu", "alu32", "neg", "movsx", "end", "bswap", "lddw", "ldx", "ldxs"):
        return (insn.dst,)
    if kind == "atomic":
        into = sem.ATOMIC[spec.op][1]
        return (insn.src,) if into == "src" else (0,) if into == "r0" else ()
    if kind in ("call", "local_call", "callx"):
        return (0, 1, 2, 3, 4, 5)
    return ()


def _tail_map_sites(program: Program, segments: list[int]) -> dict[int, int]:
    """{pc of ``call tail_call``: pc of the ``lddw r2, map`` whose value r2 still holds}, for
    calls whose segment loads r2 that way and does not change it before the call."""
    sites: dict[int, int] = {}
    starts = set(segments)
    source: int | None = None
    for pc, (insn, spec) in enumerate(zip(program.insns, program.specs)):
        if spec is None:
            continue
        if pc in starts:
            source = None  # control may arrive here from elsewhere
        if spec.kind == "call" and insn.imm == TAIL_CALL and source is not None:
            sites[pc] = source
        if spec.kind == "lddw" and insn.dst == 2:
            source = pc if insn.src == PSEUDO_MAP_FD else None
        elif 2 in _writes(insn, spec):
            source = None
    return sites


def _can_fall_off(program: Program) -> bool:
    last = max(pc for pc, s in enumerate(program.specs) if s is not None)
    return program.specs[last].kind not in ("exit", "ja", "ja32")


def _steps(program: Program, pc: int, seg_set: set[int], stop: int) -> int:
    """Instructions (not slots) from ``pc`` to the next segment start or ``stop``."""
    count = 0
    while pc < stop:
        count += 1
        pc += 2 if program.specs[pc].wide else 1
        if pc in seg_set:
            break
    return count


def _segment_head(out: _Emitter, ind: int, pc: int, count: int) -> None:
    out.add(ind, f"left -= {count}", pc)
    out.add(ind, f"if left < 0: BUDGET(env, mem, {pc}, left + {count}, {REGS}, depth)", pc)


def _jump(out: _Emitter, ind: int, pc: int, target: int, block_start: int) -> None:
    out.add(ind, f"blk = {target}", pc)
    if target <= block_start:  # backward (or to this block): back to the top of the chain
        out.add(ind, "continue", pc)


def _emit_insn(out: _Emitter, ind: int, program: Program, pc: int, block: int, insn: Insn,
               spec, fast_tail: bool, map_consts: list[int], helper_ids: set[int],
               tail_map: int | None) -> None:
    kind, op = spec.kind, spec.op
    dst, src, off = insn.dst, insn.src, insn.off
    emit = lambda line, i=ind: out.add(i, line, pc)  # noqa: E731 - a short local alias
    if kind in ("alu", "alu32", "neg"):
        bits = sem.width(spec)
        expr = sem.neg_expr(bits) if kind == "neg" else sem.alu_expr(op, bits)
        b = _reg(src, bits) if spec.reg else _lit(sem.operand(insn.imm, bits))
        emit(f"r{dst} = {paste(expr, a=_reg(dst, bits), b=b)}")
    elif kind in ("jcc", "jcc32"):
        bits = sem.width(spec)
        b = _reg(src, bits) if spec.reg else _lit(sem.operand(insn.imm, bits))
        emit(f"if {paste(sem.jcc_expr(op, bits), a=_reg(dst, bits), b=b)}:")
        _jump(out, ind + 1, pc, jump_target(pc, insn, spec), block)
    elif kind in ("ja", "ja32"):
        target = jump_target(pc, insn, spec)
        if target != pc + 1:
            _jump(out, ind, pc, target, block)
    elif kind == "lddw":
        if insn.src == PSEUDO_IMM64:
            emit(f"r{dst} = {_lit(lddw_value(insn, program.insns[pc + 1]))}")
        else:
            map_consts.append(pc)
            emit(f"r{dst} = K{pc}")
    elif kind == "movsx":
        emit(f"r{dst} = {paste(sem.movsx_expr(spec.size, sem.width(spec)), b=f'r{src}')}")
    elif kind in ("end", "bswap"):
        emit(f"r{dst} = {paste(sem.end_expr('le' if op == 'le' else 'be', spec.size), a=f'r{dst}')}")
    elif kind in ("ldx", "ldxs"):
        _load(emit, ind, dst, src, off, spec.size, kind == "ldxs")
    elif kind in ("st", "stx"):
        value = (_lit(insn.imm & SIZE_MASK[spec.size]) if kind == "st"
                 else f"r{src}" if spec.size == 8 else f"(r{src} & {_lit(SIZE_MASK[spec.size])})")
        _store(emit, ind, dst, off, spec.size, value)
    elif kind == "atomic":
        _atomic(emit, ind, dst, src, off, spec.size, op)
    elif kind == "call":
        if insn.imm == TAIL_CALL and fast_tail:
            # r2 still holds what `lddw r2, map` loaded: the map itself, checked when bound
            emit(f"t = TM{tail_map}(env, M{tail_map}, r3)" if tail_map is not None
                 else "t = TAIL(env, r2, r3)")
            emit("if t is not None:")
            emit(f"return t, left, {REGS}", ind + 1)
        else:
            helper_ids.add(insn.imm)
            emit(f"v = H{insn.imm}(env, r1, r2, r3, r4, r5)")
            emit(f"if v is not None: r0 = v & {hex(M64)}")
    elif kind == "local_call":
        target = jump_target(pc, insn, spec)
        emit(f"t, left, {REGS_UPTO5} = CALL(F, env, mem, depth, left, {target}, {REGS})")
    elif kind == "callx":
        emit(f"v = CALLX(env, {dst}, r{dst}, r1, r2, r3, r4, r5)")
        emit(f"if v is not None: r0 = v & {hex(M64)}")
    elif kind == "exit":
        emit(f"return None, left, {REGS_UPTO5}")
    else:
        raise EncodingError(f"no JIT support for '{spec.name}'", pc=pc)


def _stack_off(base: int, off: int, size: int) -> int | None:
    """Offset into the frame's stack buffer for ``r10 + off``, when fully inside it."""
    if base != FP:
        return None
    o = STACK_SIZE + off
    return o if 0 <= o and o + size <= STACK_SIZE else None


# Word views of the stack are in the machine's byte order: usable only where it is BPF's.
WORD_VIEWS = sys.byteorder == "little"


def _stack_item(so: int, size: int) -> str | None:
    """The stack as an array of ``size``-byte words (``stk`` itself for bytes): an aligned
    access is one index, much cheaper than struct."""
    if size == 1:
        return f"stk[{so}]"
    return f"s{size}[{so // size}]" if WORD_VIEWS and so % size == 0 else None


def _load(emit, ind: int, dst: int, src: int, off: int, size: int, signed: bool) -> None:
    conv = (lambda e: paste(sem.ldxs_expr(size), v=e)) if signed else (lambda e: e)
    so = _stack_off(src, off, size)
    if so is not None:
        item = _stack_item(so, size) or f"U{size}(stk, {so})[0]"
        emit(f"r{dst} = {conv(item)}")
        return
    addr = f"r{src} + {off}" if off else f"r{src}"
    emit("g = mem.last")
    emit(f"o = {addr} - g.base")
    emit(f"if 0 <= o <= g.size - {size}:")
    emit(f"r{dst} = {conv(f'U{size}(g.buf, o)[0]')}", ind + 1)
    emit("else:")
    emit(f"r{dst} = {conv(f'mem.load({addr}, {size})')}", ind + 1)


def _store(emit, ind: int, dst: int, off: int, size: int, value: str) -> None:
    so = _stack_off(dst, off, size)
    if so is not None:
        item = _stack_item(so, size)
        emit(f"{item} = {value}" if item else f"P{size}(stk, {so}, {value})")
        return
    addr = f"r{dst} + {off}" if off else f"r{dst}"
    emit("g = mem.last")
    emit(f"o = {addr} - g.base")
    emit(f"if 0 <= o <= g.size - {size} and g.writable:")
    emit(f"P{size}(g.buf, o, {value})", ind + 1)
    emit("else:")
    emit(f"mem.store({addr}, {size}, {value})", ind + 1)


def _atomic(emit, ind: int, dst: int, src: int, off: int, size: int, op: str) -> None:
    expr, into = sem.atomic_expr(op, 8 * size)
    mask = _lit(SIZE_MASK[size])
    b = f"(r{src} & {mask})" if size == 4 else f"r{src}"
    c = f"(r0 & {mask})" if size == 4 else "r0"
    fetch = {None: "", "src": f"r{src} = ", "r0": "r0 = "}[into]
    so = _stack_off(dst, off, size)
    if so is not None:
        # The frame's stack belongs to this run alone: no other thread can interleave.
        item = _stack_item(so, size)
        new = paste(expr, m="om", b=b, c=c)
        emit(f"om = {item or f'U{size}(stk, {so})[0]'}")
        emit(f"{item} = {new}" if item else f"P{size}(stk, {so}, {new})")
        if fetch:
            emit(f"{fetch}om")
        return
    addr = f"r{dst} + {off}" if off else f"r{dst}"
    uses_c = "c" in _NAME.findall(expr)
    params = f"m, b={b}" + (f", c={c}" if uses_c else "")
    emit(f"{fetch}mem.atomic({addr}, {size}, lambda {params}: {expr})")
