"""The path walk: every path of the program, instruction by instruction, like the kernel's do_check.

The walk starts at pc 0 with r1 = ctx (and, for the generic type, r2 = the memory's length) and
follows one path at a time; at a conditional jump whose outcome is not known it queues the
jump-taken state and goes on with the fall-through, so paths are explored depth first. Each
instruction is checked against the abstract state (:mod:`.state`) and updates it.

Paths are cut short at checkpoints ("pruning", kernel is_state_visited): at jump targets and after
calls, a state is compared with the states already fully explored from that pc; if one of them
covers it (:func:`.state.subsumes`), everything that can happen from here has been checked. A state
that is still being explored (an ancestor on the current path: a loop head) cannot vouch for the
current one; if it is *equal* to it the loop made no progress and can never end ("infinite loop
detected"). Bounded loops simply get walked iteration by iteration until they end or the budget of
:data:`COMPLEXITY_LIMIT` processed instructions (the kernel's BPF_COMPLEXITY_LIMIT_INSNS) runs out.
"""

from __future__ import annotations

from ...errors import VerifierError
from .. import disasm
from ..isa import FP, NREGS, PSEUDO_IMM64, PSEUDO_MAP_FD, lddw_value
from ..maps import MAP_ARRAY
from ..program import Program, ProgType, jump_target
from . import access, precision
from . import scalar as sc
from .access import Reject
from .calls import Calls
from .cfg import Cfg
from .result import _TOKEN, VerifiedProgram
from .state import (CTX, MAP_PTR, MAP_VALUE, NOT_INIT, SCALAR, SLOT, STACK, UNKNOWN,
                    Frame, Reg, State, exact_key, fmt_frame, fmt_slot, quick_key, scalar,
                    subsumes)


# the kernel's operator spellings in its messages (bpf_alu_string)
ALU_STR = {"add": "+=", "sub": "-=", "mul": "*=", "div": "/=", "sdiv": "/=", "or": "|=",
           "and": "&=", "lsh": "<<=", "rsh": ">>=", "neg": "neg", "mod": "%=", "smod": "%=",
           "xor": "^=", "mov": "=", "arsh": "s>>="}


class Checkpoint:
    """A state recorded at a prune point, and how many paths from it are still unexplored."""

    __slots__ = ("state", "pc", "parent", "branches", "hits", "misses", "key", "hist",
                 "precise")

    def __init__(self, state: State, key: tuple, parent: "Checkpoint | None", hist) -> None:
        self.state = state
        self.pc = state.pc
        self.key = key
        self.parent = parent
        self.branches = 1
        self.hits = self.misses = 0
        self.hist = hist          # the instructions from ``parent`` to here
        self.precise: set = set()  # scalars whose values mattered after this point


class Verifier(Calls):
    def __init__(self, prog: Program, prog_type: ProgType, mem_size: int | None, log: bool,
                 limit: int) -> None:
        from ..helpers import Arg, HELPERS, Ret   # lazily: helpers -> maps may import us
        self.Arg, self.Ret, self.helpers_table = Arg, Ret, HELPERS
        self.prog, self.prog_type = prog, prog_type
        self.insns, self.specs, self.maps = prog.insns, prog.specs, prog.maps
        self.ctx_size = prog_type.ctx_size
        self.mem_size = (mem_size or 0) if not self.ctx_size else None
        self.limit = limit
        self.log: list[str] | None = [] if log else None
        self.explored: dict[int, list[Checkpoint]] = {}
        self.in_progress: dict[int, dict[tuple, list[Checkpoint]]] = {}
        self.insn_processed = self.jmps_processed = 0
        self.prev_insn = self.prev_jmps = 0
        self.total_states = self.peak_states = self.cur_states = 0
        self.id_gen = 0
        self.depths: dict[int, int] = {}
        self.calls: dict[int, set[int]] = {}   # function start -> functions it calls
        self.max_frames = 1
        self.helpers_used: set[int] = set()
        self.tail_calls = False
        self.pc = 0
        self.slot = None   # the stack slot the current instruction spilled or filled
        self.visited = bytearray(len(prog.insns))
        self.pending: list[tuple[State, int]] = []   # jump-taken states still to walk
        try:
            self.cfg = Cfg(prog, self._helper_nargs)
        except VerifierError as exc:   # the shape is wrong: say where, as for any refusal
            raise self.fail(exc.message, exc.pc) from None

    def _helper_nargs(self, hid: int) -> int:
        h = self.helpers_table.get(hid)
        return len(h.args) if h is not None else 5

    # --- driver ----------------------------------------------------------------------------------

    def run(self) -> VerifiedProgram:
        st = State([Frame.entry(0, -1, 0)], 0)
        regs = st.cur.regs
        regs[1] = Reg(CTX)
        if self.mem_size is not None:
            regs[2] = scalar(sc.const(self.mem_size))
        self._say(f"0: {fmt_frame(st.cur, self.maps)}")
        while True:
            self._walk(st)
            if not self.pending:
                break
            st, frm = self.pending.pop()
            self._say(f"from {frm} to {st.pc}: {fmt_frame(st.cur, self.maps)}")
        self._check_stack_depth()
        self._say(f"processed {self.insn_processed} insns (limit {self.limit}) "
                  f"max_states_per_insn {max((len(v) for v in self.explored.values()), default=0)} "
                  f"total_states {self.total_states} peak_states {self.peak_states}")
        depths = {f: self.depths.get(f, 0) for f in self.cfg.starts}
        return VerifiedProgram(
            _TOKEN, program=self.prog, prog_type=self.prog_type, mem_size=self.mem_size,
            stack_depth=self.combined_depth, frame_depths=depths, max_call_depth=self.max_frames,
            helpers=frozenset(self.helpers_used), tail_calls=self.tail_calls,
            insn_processed=self.insn_processed,
            dead_code=frozenset(pc for pc, spec in enumerate(self.specs)
                                if spec is not None and not self.visited[pc]),
            log="\n".join(self.log) + "\n" if self.log is not None else None)

    def fail(self, msg: str, pc: int | None = None) -> VerifierError:
        pc = self.pc if pc is None else pc
        text = f"{self._text(pc)}: {msg}"
        self._say(msg)
        err = self.prog.error(VerifierError(text), pc)
        err.log = "\n".join(self.log) + "\n" if self.log is not None else None
        return err

    def _text(self, pc: int) -> str:
        insn = self.insns[pc]
        second = self.insns[pc + 1] if self.specs[pc].wide else None
        try:
            return disasm.format_insn(pc, insn, second, labels=self.prog.labels, maps=self.maps)
        except Exception:   # a disassembler gap must not hide the verifier's message
            return self.specs[pc].name

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log.append(line)

    # --- one path --------------------------------------------------------------------------------

    def _walk(self, st: State) -> None:
        """Follow ``st`` until its path ends (exit of the main function, or pruned)."""
        specs, cfg, visited = self.specs, self.cfg, self.visited
        while True:
            pc = self.pc = st.pc
            self.insn_processed += 1
            if self.insn_processed > self.limit:
                raise self.fail(f"BPF program is too large. Processed {self.insn_processed} insn")
            if cfg.prune[pc] and self._visited(st):
                self._say(f"{pc}: safe")
                self._finish(st)
                return
            spec = specs[pc]
            visited[pc] = 1
            self.slot = None
            before = ([(list(f.regs), dict(f.stack)) for f in st.frames]
                      if self.log is not None else None)
            try:
                done = self._step(st, pc, spec)
            except Reject as exc:
                if self.log is not None:
                    self._say(f"{pc}: ({self.insns[pc].code:02x}) {self._text(pc)}")
                raise self.fail(str(exc)) from None
            st.hist.append((pc, self.slot))
            if self.log is not None:
                self._log_insn(pc, st, before)
            if done:
                self._finish(st)
                return

    def _log_insn(self, pc: int, st: State, before) -> None:
        """``pc: (code) insn ; R0_w=... fp-8_w=...``: what the instruction changed."""
        line = f"{pc}: ({self.insns[pc].code:02x}) {self._text(pc)}"
        if len(before) == len(st.frames):
            f = st.cur
            regs, stack = before[-1]
            changed = [i for i in range(NREGS) if f.regs[i] != regs[i]]
            items = [fmt_frame(f, self.maps, changed, changed)] if changed else []
            for spi in sorted(f.stack):
                if f.stack[spi] != stack.get(spi):
                    items.append(fmt_slot(-(spi + 1) * SLOT, f.stack[spi], self.maps,
                                          f.frameno).replace("=", "_w=", 1))
            if items:
                line = f"{line:<36} ; {' '.join(items)}"
        elif len(before) < len(st.frames):   # a bpf-to-bpf call (the kernel logs both frames)
            line += (f"\ncaller:\n {fmt_frame(st.frames[-2], self.maps)}"
                     f"\ncallee:\n {fmt_frame(st.cur, self.maps)}")
        else:
            line += (f"\nreturning from callee:\nto caller at {st.pc}:\n "
                     f"{fmt_frame(st.cur, self.maps)}")
        self._say(line)

    def _finish(self, st: State) -> None:
        """A path ended: checkpoints whose every path is now explored become usable."""
        cp = st.parent
        while cp is not None:
            cp.branches -= 1
            if cp.branches:
                break
            bucket = self.in_progress[cp.pc]
            bucket[cp.key].remove(cp)
            if not bucket[cp.key]:
                del bucket[cp.key]
            self.explored.setdefault(cp.pc, []).append(cp)
            cp = cp.parent

    def _branch(self, st: State, target: int, pending) -> State:
        other = st.copy()
        other.pc = target
        if st.parent is not None:
            st.parent.branches += 1
        pending.append((other, st.pc))
        return other

    # --- pruning (kernel is_state_visited) -------------------------------------------------------

    def _live(self, st: State, depth: int) -> frozenset[int]:
        if depth == len(st.frames) - 1:
            return self.cfg.live_in[st.pc]
        return self.cfg.live_after_return(st.frames[depth + 1].callsite)

    def _visited(self, st: State) -> bool:
        pc = st.pc
        done = self.explored.get(pc)
        if done:
            for cp in list(done):
                if subsumes(cp.state, st, self._live, cp.precise):
                    cp.hits += 1
                    # this path is safe because its precise scalars are within cp's: so
                    # they matter here too (kernel propagate_precision)
                    precision.mark(self, st, cp.precise)
                    return True
                cp.misses += 1
                if cp.misses > cp.hits * 3 + 3:   # rarely useful: stop comparing with it
                    done.remove(cp)
                    self.cur_states -= 1
        # A loop with no progress: an equal state is still open on this very path. Compare
        # the live registers of the current frame first (cheap), whole states only if they match.
        key = quick_key(st, self._live)
        open_ = self.in_progress.setdefault(pc, {})
        same = open_.get(key)
        if same:
            full = exact_key(st, self._live)
            if any(exact_key(cp.state, self._live) == full for cp in same):
                raise self.fail(f"infinite loop detected at insn {pc}")
        if self.jmps_processed - self.prev_jmps >= 2 and self.insn_processed - self.prev_insn >= 8:
            self.prev_jmps, self.prev_insn = self.jmps_processed, self.insn_processed
            snap = st.copy()
            cp = Checkpoint(snap, key, st.parent, st.hist)
            snap.parent, snap.hist = None, []
            open_.setdefault(key, []).append(cp)
            st.parent, st.hist = cp, []
            self.total_states += 1
            self.cur_states += 1
            self.peak_states = max(self.peak_states, self.cur_states)
        return False

    # --- instructions ----------------------------------------------------------------------------

    def _step(self, st: State, pc: int, spec) -> bool:
        """Check and apply the instruction at ``pc``; True when the path ends here."""
        insn = self.insns[pc]
        kind = spec.kind
        regs = st.cur.regs
        if kind in ("alu", "alu32", "neg", "end", "bswap", "movsx"):
            self._alu(st, insn, spec)
            st.pc = pc + 1
        elif kind == "lddw":
            self._lddw(regs, insn, pc)
            st.pc = pc + 2
        elif kind in ("ldx", "ldxs"):
            self._read(regs, insn.src)
            self._write_check(insn.dst)
            regs[insn.dst] = access.load(self, st, insn.src, insn.off, spec.size, kind == "ldxs")
            st.pc = pc + 1
        elif kind == "st":
            self._read(regs, insn.dst)
            access.store(self, st, insn.dst, insn.off, spec.size, None, insn.imm, -1)
            st.pc = pc + 1
        elif kind == "stx":
            self._read(regs, insn.src)
            self._read(regs, insn.dst)
            access.store(self, st, insn.dst, insn.off, spec.size, regs[insn.src], 0, insn.src)
            st.pc = pc + 1
        elif kind == "atomic":
            self._atomic(st, regs, insn, spec)
            st.pc = pc + 1
        elif kind in ("ja", "ja32"):
            self.jmps_processed += 1
            st.pc = jump_target(pc, insn, spec)
        elif kind in ("jcc", "jcc32"):
            self.jmps_processed += 1
            self._cond(st, insn, spec)
        elif kind == "call":
            self._helper(st, insn.imm)
            st.pc = pc + 1
        elif kind == "local_call":
            self._call(st, jump_target(pc, insn, spec))
        elif kind == "exit":
            return self._exit(st)
        else:
            raise Reject(f"unknown insn class {kind}")
        return False

    def _read(self, regs: list[Reg], r: int) -> Reg:
        reg = regs[r]
        if reg.kind == NOT_INIT:
            raise Reject(f"R{r} !read_ok")
        return reg

    def _write_check(self, r: int) -> None:
        if r == FP:
            raise Reject("frame pointer is read only")

    def _lddw(self, regs: list[Reg], insn, pc: int) -> None:
        self._write_check(insn.dst)
        if insn.src == PSEUDO_IMM64:
            regs[insn.dst] = scalar(sc.const(lddw_value(insn, self.insns[pc + 1])))
            return
        m = self.maps[insn.imm]
        if not all(isinstance(getattr(m, f, None), int)
                   for f in ("map_type", "key_size", "value_size", "max_entries")):
            raise Reject(f"lddw refers to map {insn.imm}, which is not a map ({type(m).__name__})")
        if insn.src == PSEUDO_MAP_FD:
            regs[insn.dst] = Reg(MAP_PTR, map=insn.imm)
            return
        off = self.insns[pc + 1].imm
        if m.map_type != MAP_ARRAY:   # only arrays have values at fixed addresses
            raise Reject("no direct value access support for this map type")
        if not 0 <= off < m.value_size or m.max_entries != 1:
            # the kernel gives one message for both; only a 1-entry array has "the" value
            why = "" if m.max_entries == 1 else " (direct value access needs max_entries 1)"
            raise Reject(f"invalid access to map value pointer, value_size={m.value_size} "
                         f"off={off}{why}")
        regs[insn.dst] = Reg(MAP_VALUE, off=off, map=insn.imm)

    # --- ALU -------------------------------------------------------------------------------------

    def _alu(self, st: State, insn, spec) -> None:
        regs = st.cur.regs
        kind, op, d = spec.kind, spec.op, insn.dst
        bits = 64 if spec.is64 else 32
        if kind in ("neg", "end", "bswap"):
            dst = self._read(regs, d)
            self._write_check(d)
            if dst.is_ptr:
                raise Reject(f"R{d} pointer arithmetic prohibited")
            if kind == "neg":
                regs[d] = scalar(sc.neg(dst.s, bits))
            else:
                regs[d] = scalar(sc.byteswap(dst.s, op, spec.size))
            return
        if kind == "movsx":
            src = self._read(regs, insn.src)
            self._write_check(d)
            if src.is_ptr:
                raise Reject(f"R{insn.src} sign-extension part of pointer")
            regs[d] = scalar(sc.movsx(src.s, spec.size, bits))
            return
        if spec.reg:
            src = self._read(regs, insn.src)
        else:
            imm = insn.imm & (sc.U64 if bits == 64 else sc.U32)
            src = scalar(sc.const(imm))
            if op in ("div", "mod", "sdiv", "smod") and insn.imm == 0:
                raise Reject("div by zero")
            if op in ("lsh", "rsh", "arsh") and not 0 <= insn.imm < bits:
                raise Reject(f"invalid shift {insn.imm}")
        if op == "mov":
            self._write_check(d)
            if bits == 32 and src.is_ptr:
                raise Reject(f"R{insn.src} partial copy of pointer")
            regs[d] = src if bits == 64 else scalar(sc.trunc32(src.s))
            return
        dst = self._read(regs, d)
        self._write_check(d)
        if dst.kind == SCALAR and src.kind == SCALAR:
            regs[d] = scalar(sc.alu(op, dst.s, src.s, bits))
        elif dst.is_ptr and src.is_ptr:
            regs[d] = self._ptr_ptr(op, bits, d, dst, src)
        elif dst.is_ptr:
            if spec.reg:   # the offset's value sets an address: it must be exact
                precision.mark(self, st, {(len(st.frames) - 1, insn.src)})
            regs[d] = self._ptr_alu(op, bits, d, dst, src.s, True)
        else:
            precision.mark(self, st, {(len(st.frames) - 1, d)})
            regs[d] = self._ptr_alu(op, bits, d, src, dst.s, False)

    def _ptr_ptr(self, op: str, bits: int, d: int, a: Reg, b: Reg) -> Reg:
        if (op != "sub" or bits != 64 or a.kind != b.kind or a.map != b.map or a.null or b.null
                or a.frame != b.frame):
            raise Reject(f"R{d} pointer {ALU_STR[op]} pointer prohibited")
        if a.s.is_const and b.s.is_const:
            return scalar(sc.const(a.off + a.s.tv - b.off - b.s.tv))
        return UNKNOWN

    def _ptr_alu(self, op: str, bits: int, d: int, ptr: Reg, off: sc.Scalar,
                 ptr_is_dst: bool) -> Reg:
        """ptr ``op`` scalar (kernel adjust_ptr_min_max_vals)."""
        tname = ptr.type_name
        if bits != 64:
            raise Reject(f"R{d} 32-bit pointer arithmetic prohibited")
        if ptr.null:
            raise Reject(f"R{d} pointer arithmetic on {tname} prohibited, null-check it first")
        if ptr.kind == MAP_PTR:
            if op == "add" and off == sc.ZERO:
                return ptr
            raise Reject(f"R{d} pointer arithmetic on {tname} prohibited")
        if op == "sub":
            if not ptr_is_dst:
                raise Reject(f"R{d} tried to subtract pointer from scalar")
            if ptr.kind == STACK:
                raise Reject(f"R{d} subtraction from stack pointer prohibited")
        elif op in ("and", "or", "xor"):
            raise Reject(f"R{d} bitwise operator {ALU_STR[op]} on pointer prohibited")
        elif op != "add":
            raise Reject(f"R{d} pointer arithmetic with {ALU_STR[op]} operator prohibited")
        lim = access.MAX_VAR_OFF
        if off.is_const:
            c = sc.s64(off.tv)
            if not -lim < c < lim:
                raise Reject(f"math between {tname} pointer and {c} is not allowed")
            new_off = ptr.off + c if op == "add" else ptr.off - c
            if not -lim < new_off < lim:
                raise Reject(f"{tname} pointer offset {new_off} is not allowed")
            return ptr._replace(off=new_off)
        if off.smin == sc.S64_MIN:
            raise Reject(f"math between {tname} pointer and register with unbounded min value "
                         f"is not allowed")
        if not -lim < off.smin < lim:
            raise Reject(f"value {off.smin} makes {tname} pointer be out of bounds")
        var = sc.alu(op, ptr.s, off)
        return ptr._replace(s=var)

    # --- atomics ---------------------------------------------------------------------------------

    def _atomic(self, st: State, regs: list[Reg], insn, spec) -> None:
        src = self._read(regs, insn.src)
        self._read(regs, insn.dst)
        if spec.op == "cmpxchg":
            r0 = self._read(regs, 0)
            if r0.is_ptr:
                raise Reject("R0 leaks addr into mem")
        if src.is_ptr:
            raise Reject(f"R{insn.src} leaks addr into mem")
        access.atomic(self, st, insn.dst, insn.off, spec.size, insn.src)
        old = scalar(sc.of_size(spec.size))
        if spec.op == "cmpxchg":
            regs[0] = old
        elif spec.op == "xchg" or spec.op.startswith("fetch_"):
            regs[insn.src] = old

    # --- conditional jumps -----------------------------------------------------------------------

    def _cond(self, st: State, insn, spec) -> None:
        regs = st.cur.regs
        pc = st.pc
        op, bits = spec.op, (64 if spec.is64 else 32)
        target = jump_target(pc, insn, spec)
        a = self._read(regs, insn.dst)
        b = self._read(regs, insn.src) if spec.reg else scalar(
            sc.const(insn.imm & (sc.U64 if bits == 64 else sc.U32)))
        if a.kind == SCALAR and b.kind == SCALAR:
            taken = sc.branch(op, a.s, b.s, bits)
            if taken is None:
                yes = sc.refine(op, a.s, b.s, True, bits)
                no = sc.refine(op, a.s, b.s, False, bits)
                taken = False if yes is None else True if no is None else None
            else:
                yes = no = None
            if taken is not None:   # one way only: the operands' values decided the path
                depth = len(st.frames) - 1
                precision.mark(self, st, {(depth, insn.dst)} | (
                    {(depth, insn.src)} if spec.reg else set()))
            if taken is None:
                other = self._branch(st, target, self.pending)
                self._apply(other, insn, spec.reg, yes)
                self._apply(st, insn, spec.reg, no)
                st.pc = pc + 1
            elif taken:
                if yes is not None:
                    self._apply(st, insn, spec.reg, yes)
                st.pc = target
            else:
                if no is not None:
                    self._apply(st, insn, spec.reg, no)
                st.pc = pc + 1
            return
        # pointers: only "if rX ==/!= 0" (immediate 0, 64-bit) NULL-checks a map_value_or_null
        # or decides a non-NULL pointer, as in the kernel; other comparisons go both ways.
        if not spec.reg and bits == 64 and op in ("jeq", "jne") and insn.imm == 0 and a.is_ptr:
            if a.null:
                nxt = self._branch(st, target, self.pending)
                eq_state, ne_state = (nxt, st) if op == "jeq" else (st, nxt)
                self._mark_null(eq_state, a.id, True)
                self._mark_null(ne_state, a.id, False)
                st.pc = pc + 1
                return
            st.pc = target if op == "jne" else pc + 1
            return
        self._branch(st, target, self.pending)
        st.pc = pc + 1

    def _apply(self, st: State, insn, reg_form: bool, pair) -> None:
        if pair is None:
            return
        regs = st.cur.regs
        regs[insn.dst] = scalar(pair[0])
        if reg_form:
            regs[insn.src] = scalar(pair[1])

    def _mark_null(self, st: State, rid: int, is_null: bool) -> None:
        for reg, put, where in list(st.all_regs()):
            if reg.null and reg.id == rid:
                put(where, scalar(sc.ZERO) if is_null else reg._replace(null=False, id=0))
