"""JIT code generation: one Python function per program, from the instruction fields alone.

:func:`generate` turns a loaded program into the source of one function ``F``::

    def F(env, mem, depth, left, blk, r0, r1, ..., r9):

Registers are local variables; ``r10`` is the frame's stack top; ``stk`` its stack buffer and
``s2``/``s4``/``s8`` views of it as arrays of words (fetched at entry when some access uses the
stack directly; otherwise the stack is made on first touch, as in the interpreter). The code of
each instruction comes from :mod:`.emit`; this module lays out the control flow.

Control flow is structured where the program allows it, and a state machine elsewhere:

* a basic block with a single predecessor is written *inline* where that predecessor jumps to
  it or falls into it — a conditional jump becomes ``if cond:`` with the target's code inside and
  the fall-through's code after it — so most jumps cost no dispatch at all;
* a tiny block that ends the program (``r0 = K; exit``: the verdict leaves of a filter) is
  written inline at every jump to it;
* every other block — a join point, a loop head, the entry, a bpf-to-bpf call target — is a
  *root*: ``while True:`` around a balanced binary tree of ``if blk < PC:`` tests picks the root
  whose pc is in ``blk``; jumping to a root is ``blk = PC; continue``, O(log roots).

Register facts travel into inlined blocks: a register known to hold less than 2**32 (after an
ALU32 operation or a 32-bit load) is used by 32-bit operations without its mask.

Step accounting is the interpreter's, exactly, at almost no cost: ``left`` is the remaining
instruction budget. Every position in inlined code is reached by one path from its root, so the
instructions executed on the way are a compile-time constant; ``left`` is only updated where
control leaves (``return None, left - 7, ...``, ``left -= 3; blk = 40; continue``, before a
call). Each root's code — and the code after a bpf-to-bpf call — starts with one test that its
longest path fits in the budget; when it may not, ``SLOW`` runs the rest of the frame on the
interpreter's closures one counted step at a time, so the budget runs out at the interpreter's pc
after the interpreter's side effects.

A chain of ``jeq`` tests on one register to one target (libseccomp's shape) is one dict lookup
(``J<pc>``: value -> index of the first test it matches), its steps ``index + 1`` on a hit and
the whole chain on a miss.

A program with no loop whose only call is ``tail_call`` and whose memory accesses are constant
offsets from the ctx pointer or ``r10`` also gets a *lean* function ``L`` in the same source
(see :mod:`.lean`): the same layout with no budget checks, the ctx read from the caller's bytes,
and exits that return the run's result.

The source depends only on instruction fields (opcodes, registers, offsets, immediates, pcs) and
on one engine choice (whether ``tail_call`` takes the fast path): names, maps and helper
implementations are bound per program in the function's globals (``K<pc>`` for map addresses,
``H<id>`` for helpers, ``PREF`` a weak reference to the program, ``LINES`` the line -> pc table),
so two programs with the same instructions share one compiled code object.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import EncodingError
from .. import semantics as sem
from ..isa import MAX_TAIL_CALL_CNT, PSEUDO_MAP_FD, Insn
from ..memory import CTX_BASE
from ..program import TAIL_CALL, Program, jump_target
from .emit import condition, lit, narrowed, reg, stack_offset, statement
from .lean import analyse_lean, write_lean

PARAMS = "env, mem, depth, left, blk"
ARGS = "env, mem, depth, left"
REGS = ", ".join(f"r{i}" for i in range(10))
REGS_UPTO5 = ", ".join(f"r{i}" for i in range(6))
# Inlined code nests one level per conditional jump; past this depth a block is dispatched
# instead (Python allows 100 levels of indentation; the root tree adds about log2(roots)).
MAX_INLINE_DEPTH = 48
# A block ending the program with at most this many instructions is copied to each jump to it.
TINY_EXIT = 4
# A chain of at least this many jeq tests on one register becomes a dict lookup.
JUMP_TABLE_MIN = 8


@dataclass(frozen=True)
class Generated:
    """The source of one program's function and what must be bound to run it.

    ``lines[i]`` is the pc that source line ``i + 1`` belongs to (``-1``: none); ``map_consts``
    the pcs whose ``lddw`` loads a map address or map value address (bound as ``K<pc>``);
    ``helper_ids`` the helper ids called directly (bound as ``H<id>``); ``tail_maps`` the pcs of
    ``lddw r2, map`` whose map a following ``tail_call`` uses as it is (bound as ``M<pc>``: its
    slots are read inline); ``roots`` the pcs dispatched by ``blk``;
    ``jump_tables`` (pc, {value: index}) of each chain of ``jeq`` tests written as a lookup
    (bound as ``J<pc>``).
    """

    source: str
    lines: tuple[int, ...]
    map_consts: tuple[int, ...]
    helper_ids: tuple[int, ...]
    tail_maps: tuple[int, ...] = ()
    roots: tuple[int, ...] = ()
    # the lean function L (see .lean), when the program is lean: the longest path it may take,
    # and whether it reads the ctx directly (then it needs r1 to be the ctx pointer at entry)
    lean_longest: int | None = None
    lean_ctx: bool = False
    lean_stores: bool = False  # whether it stores into the ctx
    jump_tables: tuple[tuple[int, dict[int, int]], ...] = ()


@dataclass(frozen=True)
class Block:
    """A basic block ``[start, end)``; ``term`` how it ends: ``jcc`` (to ``target``, else on
    to ``end``), ``ja`` (to ``target``), ``exit``, ``fall`` (on to ``end``) or ``off`` (the
    pseudo-block past the last instruction, which faults)."""

    start: int
    end: int
    term: str
    target: int | None
    count: int  # instructions (lddw is one)

    def successors(self) -> tuple[int, ...]:
        if self.term == "jcc":
            return (self.target,) if self.target == self.end else (self.target, self.end)
        if self.term == "ja":
            return (self.target,)
        if self.term == "fall":
            return (self.end,)
        return ()


def _width(spec) -> int:
    return 2 if spec.wide else 1


def _can_fall_off(program: Program) -> bool:
    last = max(pc for pc, s in enumerate(program.specs) if s is not None)
    return program.specs[last].kind not in ("exit", "ja", "ja32")


def analyse(program: Program) -> tuple[dict[int, Block], set[int], set[int]]:
    """(blocks by start pc, entry pcs, pcs control can reach other than from the instruction
    before: block starts and the instructions after calls)."""
    insns, specs = program.insns, program.specs
    n = len(insns)
    leaders, entries, after_calls = {0}, {0}, set()
    for pc, (insn, spec) in enumerate(zip(insns, specs)):
        if spec is None:
            continue
        nxt = pc + _width(spec)
        target = jump_target(pc, insn, spec)
        if spec.kind == "local_call":
            entries.add(target)
        elif target is not None:
            leaders.add(target)
        if spec.kind in ("ja", "ja32", "jcc", "jcc32", "exit") and nxt < n:
            leaders.add(nxt)
        if spec.kind in ("call", "local_call", "callx") and nxt < n:
            after_calls.add(nxt)
    leaders |= entries
    if _can_fall_off(program):
        leaders.add(n)
    starts = sorted(leaders)
    blocks: dict[int, Block] = {}
    for start, end in zip(starts, starts[1:] + [n]):
        if start == n:
            blocks[n] = Block(n, n, "off", None, 1)
            continue
        pc, last, count = start, start, 0
        while pc < end:
            last, count = pc, count + 1
            pc += _width(specs[pc])
        kind = specs[last].kind
        term = {"jcc": "jcc", "jcc32": "jcc", "ja": "ja", "ja32": "ja", "exit": "exit"}.get(
            kind, "fall")
        target = jump_target(last, insns[last], specs[last]) if term in ("jcc", "ja") else None
        blocks[start] = Block(start, end, term, target, count)
    return blocks, entries, after_calls | set(starts)


class _Region:
    """What one budget check covers: a root's code up to where control leaves it, or the code
    after a bpf-to-bpf call. ``longest`` is its longest path in instructions."""

    __slots__ = ("lines", "index", "ind", "pc", "longest", "checked")

    def __init__(self, lines: list, ind: int, pc: int, checked: bool = True) -> None:
        self.lines, self.index, self.ind, self.pc, self.longest = lines, len(lines), ind, pc, 0
        self.checked = checked
        lines.append(None)  # the check, written once the longest path is known

    def close(self) -> None:
        if not self.checked:  # a lean function: its entry checked the whole program's budget
            return
        self.lines[self.index] = (
            self.ind, f"if left < {self.longest}: return SLOW(F, {ARGS}, {self.pc}, {REGS})",
            self.pc)


class _Path:
    """Counting along one path of inlined code: its region, the instructions since the region's
    check (``steps``) and those not yet taken off ``left`` (``pending``). Copied at branches."""

    __slots__ = ("region", "steps", "pending")

    def __init__(self, region: _Region, steps: int = 0, pending: int = 0) -> None:
        self.region, self.steps, self.pending = region, steps, pending

    def copy(self) -> "_Path":
        return _Path(self.region, self.steps, self.pending)

    def step(self) -> None:
        self.steps += 1
        self.pending += 1

    def leave(self) -> None:
        """Control may leave the region here: its check must cover the path so far."""
        self.region.longest = max(self.region.longest, self.steps)

    def left(self) -> str:
        return f"left - {self.pending}" if self.pending else "left"

    def flush(self, emit) -> None:
        """Take the instructions counted so far off ``left`` (before anything that reads it)."""
        if self.pending:
            emit(f"left -= {self.pending}")
            self.pending = 0


class _Layout:
    """Decides which blocks are roots and writes each root's code with its inlined blocks.

    Along every path through inlined code the number of instructions executed is a constant of
    the code position, so steps are counted at compile time (:class:`_Path`): ``left`` is
    updated only where control leaves (exit, dispatch, calls, tail calls), and each region starts
    with one check that its longest path fits in the budget. When it may not, ``SLOW`` runs the
    rest of the frame on the interpreter's closures, step by step (compiler.slow_frame): the
    budget runs out at the interpreter's pc, after the interpreter's side effects.
    """

    def __init__(self, program: Program, fast_tail: bool,
                 lean: dict[int, frozenset[int]] | None = None) -> None:
        self.program = program
        self.blocks, self.entries, self.leaders = analyse(program)
        self.preds = self._predecessors()
        self.roots = {b for b in self.preds if b in self.entries or not self._inlinable(b)}
        self.fast_tail = fast_tail
        self.tail_sites = _tail_map_sites(program, self.leaders) if fast_tail else {}
        # lean mode (see .lean): registers holding the ctx pointer before each pc
        self.lean = lean
        self.lean_ctx = False
        self.lean_stack = lean is not None and _direct_stack(program)
        self.map_consts: list[int] = []
        self.jump_tables: dict[int, dict[int, int]] = {}  # first test's pc -> value -> index
        self.helper_ids: set[int] = set()
        self.regions: list[_Region] = []

    def _predecessors(self) -> dict[int, int]:
        """Edges into each block reachable from an entry (only those blocks are written)."""
        preds = {e: 0 for e in self.entries}
        todo = sorted(self.entries)
        while todo:
            for succ in self.blocks[todo.pop()].successors():
                if succ not in preds:
                    preds[succ] = 0
                    todo.append(succ)
                preds[succ] += 1
        return preds

    def _tiny_exit(self, start: int) -> bool:
        b = self.blocks[start]
        return b.term in ("exit", "off") and b.count <= TINY_EXIT

    def _inlinable(self, start: int) -> bool:
        return self.preds[start] == 1 or self._tiny_exit(start)

    def _inlined(self, to: int, ind: int) -> bool:
        return to not in self.roots and ind < MAX_INLINE_DEPTH

    # --- writing -----------------------------------------------------------------------------

    def write_roots(self) -> dict[int, list[tuple[int, str, int]]]:
        """{root pc: its lines (indent, text, pc)}; roots forced by the depth limit included."""
        out: dict[int, list] = {}
        todo = sorted(self.roots)
        while todo:
            root = todo.pop(0)
            lines: list = []
            path = _Path(self._region(lines, 0, root))
            forced = self._block(lines, self.blocks[root], 0, set(), path)
            out[root] = lines
            for pc in sorted(forced - self.roots):
                self.roots.add(pc)
                todo.append(pc)
        for region in self.regions:
            region.close()
        return out

    def _region(self, lines: list, ind: int, pc: int) -> _Region:
        region = _Region(lines, ind, pc, self.lean is None)
        self.regions.append(region)
        return region

    def _block(self, lines: list, b: Block, ind: int, narrow: set[int], path: _Path) -> set[int]:
        """Write block ``b`` at indent ``ind``, and the blocks it falls or jumps into at the same
        indent (a loop, not recursion: a filter can chain a thousand of them); a conditional
        jump's target is written one level deeper, by recursion bounded by
        :data:`MAX_INLINE_DEPTH`. Returns the blocks that had to become roots."""
        narrow = set(narrow)
        forced: set[int] = set()
        while True:
            nxt = self._body(lines, b, ind, narrow, forced, path)
            if nxt is None:
                return forced
            to, pc = nxt
            if not self._inlined(to, ind):
                forced |= self._dispatch(lines, to, ind, pc, path)
                return forced
            b = self.blocks[to]

    def _body(self, lines: list, b: Block, ind: int, narrow: set[int], forced: set[int],
              path: _Path) -> tuple[int, int] | None:
        """The code of block ``b`` itself; returns where control goes on at the same indent
        (block, pc of the transfer), or None when every path has left."""
        program, specs, insns = self.program, self.program.specs, self.program.insns
        if b.term == "off":
            path.step()
            path.leave()
            lines.append((ind, "RAN_OFF()", b.start))
            return None
        pc = b.start
        while pc < b.end:
            spec, insn = specs[pc], insns[pc]
            kind = spec.kind
            path.step()
            if kind in ("jcc", "jcc32"):
                chain = self._jeq_chain(b, pc, insn, spec, ind)
                if chain is not None:
                    return self._jump_table(lines, chain, ind, narrow, forced, path)
                if b.target != b.end:  # a jump to the next pc needs no test
                    lines.append((ind, f"if {condition(insn, spec, narrow)}:", pc))
                    forced |= self._edge(lines, b.target, ind + 1, narrow, pc, path.copy())
                return b.end, b.end
            if kind in ("ja", "ja32"):
                return b.target, pc
            emit = _emitter(lines, ind, pc)
            if kind == "exit":
                path.leave()
                if self.lean is None:
                    emit(f"return None, {path.left()}, {REGS_UPTO5}")
                else:  # the run's result itself; the stack goes back to the pool
                    if self.lean_stack:
                        emit("SP(sv)")
                    used = f"ms - left + {path.pending}" if path.pending else "ms - left"
                    emit(f"return TN(RR, (r0, {used}, ch, tc))")
                return None
            if kind in ("call", "callx", "local_call"):
                if self.lean is None:
                    self._call(emit, lines, ind, pc, insn, spec, path)
                else:
                    self._lean_tail(emit, pc, path)
            else:
                ctx = None
                if self.lean is not None:
                    ctx = (self.lean[pc], program.prog_type.ctx_size)
                try:
                    if statement(emit, program, pc, insn, spec, narrow, self.map_consts, ctx):
                        self.lean_ctx = True
                except ValueError as exc:
                    raise EncodingError(str(exc), pc=pc) from None
            narrowed(narrow, program, pc, insn, spec)
            pc += _width(spec)
        return b.end, b.end  # falls on

    def _call(self, emit, lines: list, ind: int, pc: int, insn: Insn, spec, path: _Path) -> None:
        path.flush(emit)  # a callee, an unwind or a tail call reads left
        if spec.kind == "local_call":
            path.leave()
            emit(f"t, left, {REGS_UPTO5} = CALL(F, {ARGS}, {jump_target(pc, insn, spec)}, {REGS})")
            path.region = self._region(lines, ind, pc + 1)  # the callee used an unknown budget
            path.steps = 0
        elif spec.kind == "callx":
            emit(f"v = CALLX(env, {insn.dst}, r{insn.dst}, r1, r2, r3, r4, r5)")
            emit(f"if v is not None: r0 = v & {hex(sem.M64)}")
        elif insn.imm == TAIL_CALL and self.fast_tail:
            path.leave()
            site = self.tail_sites.get(pc)
            if site is None:
                emit("t = TAIL(env, r2, r3)")
                emit("if t is not None:")
                emit(f"return t, left, {REGS}", 1)
            else:  # the map is known: tail_call_into's checks written out (as in _lean_tail)
                emit(f"i = r3 & {hex(sem.M32)}")
                emit(f"t = M{site}.slots")
                emit(f"if i < len(t) and env.tail_calls < {MAX_TAIL_CALL_CNT}:")
                emit("env.tail_calls += 1", 1)
                emit("t = t[i]", 1)
                emit("if t is not None:", 1)
                emit(f"return t, left, {REGS}", 2)
        else:
            self.helper_ids.add(insn.imm)
            emit(f"v = H{insn.imm}(env, r1, r2, r3, r4, r5)")
            emit(f"if v is not None: r0 = v & {hex(sem.M64)}")

    def _jeq_chain(self, b: Block, pc: int, insn: Insn, spec, ind: int) -> list | None:
        """The tests of a chain ``if rX == K1 goto T; if rX == K2 goto T; ...`` (libseccomp's
        shape) that starts with block ``b``'s jump, when it is long enough for a table: each
        further test a block of its own that only the test before falls into, on the same
        register and width, to the same target."""
        if spec.op != "jeq" or spec.reg or b.target == b.end or not self._inlined(b.target, ind):
            return None
        tests = [(pc, insn, spec)]
        nxt = b.end
        while nxt not in self.roots and nxt in self.blocks:
            nb = self.blocks[nxt]
            if nb.count != 1 or nb.term != "jcc" or nb.target != b.target:
                break
            t_insn, t_spec = self.program.insns[nxt], self.program.specs[nxt]
            if (t_spec.kind, t_spec.op, t_spec.reg, t_insn.dst) != \
                    (spec.kind, spec.op, spec.reg, insn.dst):
                break  # (the same OpSpec is not enough: the register must be the same too)
            tests.append((nxt, t_insn, t_spec))
            nxt = nb.end
        return tests if len(tests) >= JUMP_TABLE_MIN else None

    def _jump_table(self, lines: list, tests: list, ind: int, narrow: set[int],
                    forced: set[int], path: _Path) -> tuple[int, int]:
        """A chain of ``jeq`` tests as one dict lookup: ``J<pc>`` maps each value to the index
        ``k`` of the first test it matches; the steps taken are ``k + 1`` on a hit and all the
        tests on a miss, exactly as the chain would count them."""
        first, insn, spec = tests[0]
        bits = sem.width(spec)
        table: dict[int, int] = {}
        for k, (_, t_insn, _) in enumerate(tests):
            table.setdefault(sem.operand(t_insn.imm, bits), k)
        self.jump_tables[first] = table
        more = len(tests) - 1  # the first test is already counted
        lines.append((ind, f"k = J{first}.get({reg(insn.dst, bits, narrow)})", first))
        lines.append((ind, "if k is not None:", first))
        lines.append((ind + 1, f"left -= k + {path.pending}" if path.pending else "left -= k",
                      first))
        hit = _Path(path.region, path.steps + more, 0)  # the longest hit, for budget checks
        forced |= self._edge(lines, jump_target(first, insn, spec), ind + 1, narrow, first, hit)
        path.steps += more
        path.pending += more
        end = tests[-1][0] + 1
        return end, end

    def _lean_tail(self, emit, pc: int, path: _Path) -> None:
        """``tail_call`` in a lean function: the checks of helpers.tail_call_into (the kernel's:
        index in range, count below the limit, count += 1, slot not empty) on the known map,
        the count in the local ``tc``; then the
        callee gets the run's state (runtime.tail_go: a leaf callee runs at once, anything else
        goes back to the trampoline)."""
        path.flush(emit)
        path.leave()
        site = self.tail_sites[pc]
        emit(f"i = r3 & {hex(sem.M32)}")
        emit(f"t = M{site}.slots")
        emit(f"if i < len(t) and tc < {MAX_TAIL_CALL_CNT}:")
        emit("tc += 1", 1)
        emit("t = t[i]", 1)
        emit("if t is not None:", 1)
        # runtime.tail_go's common case written out: a leaf of this program's type (PT) that
        # reads the ctx through r1
        emit("p = t if t.__class__ is PROG else UNWRAP(t)", 2)
        emit("f = p.__dict__.get(LEAN)", 2)
        emit(f"if f and f.leaf is PT and left >= f.longest and r1 == {lit(CTX_BASE)}:", 2)
        emit("return f.fn(ch + (p,), ms, left, cb, n, r1, r2, tc, sv, hs, "
             "r0, r3, r4, r5, r6, r7, r8, r9)", 3)
        emit(f"return TGO(t, ch, tc, ms, left, cb, n, sv, hs, {REGS})", 2)

    def _edge(self, lines: list, to: int, ind: int, narrow: set[int], pc: int,
              path: _Path) -> set[int]:
        """Control goes to block ``to``: its code inline, or a dispatch to it as a root."""
        if self._inlined(to, ind):
            return self._block(lines, self.blocks[to], ind, narrow, path)
        return self._dispatch(lines, to, ind, pc, path)

    def _dispatch(self, lines: list, to: int, ind: int, pc: int, path: _Path) -> set[int]:
        path.leave()
        emit = _emitter(lines, ind, pc)
        path.flush(emit)
        emit(f"blk = {to}")
        emit("continue")
        return set() if to in self.roots else {to}


def _emitter(lines: list, ind: int, pc: int):
    def emit(line: str, extra: int = 0) -> None:
        lines.append((ind + extra, line, pc))
    return emit


def generate(program: Program, *, fast_tail: bool) -> Generated:
    """The source of ``F`` for ``program`` (see the module docstring).

    ``fast_tail``: the helper table's ``tail_call`` is the standard one, so ``call 12`` becomes
    ``TAIL(env, r2, r3)`` returning the callee or None (or, with the map known, the kernel's
    checks on ``M<pc>.slots`` written out), and
    ``F`` returns the callee to the trampoline with the live registers. Raises
    :class:`EncodingError` (with the pc) only for an opcode kind this generator does not know.
    """
    layout = _Layout(program, fast_tail)
    bodies = layout.write_roots()
    roots = sorted(bodies)
    head = [(0, f"def F({PARAMS}, {REGS}):", -1),
            (1, "r10 = TOPS[depth]" if _uses_r10(program) else "r10 = None", -1)]
    if _direct_stack(program):  # frame_stack's first test inline: a tail callee's frame is set
        head.append((1, "sv = env.stack_views[depth]", -1))
        head.append((1, "if sv is not None and sv[0] is mem.stacks[depth]: "
                        "stk, s8, s4, s2 = sv[1]", -1))
        head.append((1, "else: stk, s8, s4, s2 = STACK(env, mem, depth)", -1))
    head.append((1, "while True:", -1))
    lines = head
    _tree(lines, roots, bodies, 2)
    lean_longest, lean_ctx, lean_stores = None, False, False
    facts = analyse_lean(program, layout.blocks, layout.tail_sites, _writes)
    tables = dict(layout.jump_tables)
    if facts is not None:
        lean_ctx = write_lean(lines, program, fast_tail, facts[0], tables)
        lean_longest = facts[1]
        lean_stores = any(spec is not None and spec.kind in ("st", "stx")
                          and insn.dst in facts[0].get(pc, ())
                          for pc, (insn, spec) in enumerate(zip(program.insns, program.specs)))
    text = "\n".join("    " * ind + line for ind, line, _ in lines) + "\n"
    return Generated(text, tuple(pc for _, _, pc in lines), tuple(layout.map_consts),
                     tuple(sorted(layout.helper_ids)),
                     tuple(sorted(set(layout.tail_sites.values()))), tuple(roots),
                     lean_longest, lean_ctx, lean_stores, tuple(sorted(tables.items())))


def _tree(lines: list, roots: list[int], bodies: dict[int, list], ind: int) -> None:
    """A balanced decision tree over ``roots`` on ``blk``; every body ends by leaving."""
    if len(roots) <= 3:
        for root in roots[:-1]:
            lines.append((ind, f"if blk == {root}:", -1))
            lines.extend((ind + 1 + i, text, pc) for i, text, pc in bodies[root])
        lines.extend((ind + i, text, pc) for i, text, pc in bodies[roots[-1]])
        return
    mid = len(roots) // 2
    lines.append((ind, f"if blk < {roots[mid]}:", -1))
    _tree(lines, roots[:mid], bodies, ind + 1)
    _tree(lines, roots[mid:], bodies, ind)


def _direct_stack(program: Program) -> bool:
    """Whether some load, store or atomic addresses the stack as a constant offset from r10."""
    for insn, spec in zip(program.insns, program.specs):
        if spec is None:
            continue
        if spec.kind in ("ldx", "ldxs") and stack_offset(insn.src, insn.off, spec.size) is not None:
            return True
        if spec.kind in ("st", "stx", "atomic") and \
                stack_offset(insn.dst, insn.off, spec.size) is not None:
            return True
    return False


def _uses_r10(program: Program) -> bool:
    for insn, spec in zip(program.insns, program.specs):
        if spec is None or spec.kind == "lddw":
            continue
        if ("dst" not in spec.zero and insn.dst == 10) or \
                ("src" not in spec.zero and spec.kind not in ("call", "local_call")
                 and insn.src == 10):
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


def _tail_map_sites(program: Program, joins: set[int]) -> dict[int, int]:
    """{pc of ``call tail_call``: pc of the ``lddw r2, map`` whose value r2 still holds}, for
    calls after such a load, with no join and no write of r2 in between."""
    sites: dict[int, int] = {}
    source: int | None = None
    for pc, (insn, spec) in enumerate(zip(program.insns, program.specs)):
        if spec is None:
            continue
        if pc in joins:
            source = None  # control may arrive here from elsewhere
        if spec.kind == "call" and insn.imm == TAIL_CALL and source is not None:
            sites[pc] = source
        if spec.kind == "lddw" and insn.dst == 2:
            source = pc if insn.src == PSEUDO_MAP_FD else None
        elif 2 in _writes(insn, spec):
            source = None
    return sites
