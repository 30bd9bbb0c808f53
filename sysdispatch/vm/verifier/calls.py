"""Calls, exits and stack depth: the part of the walk that crosses function boundaries.

Helper calls are checked against the helper table (:data:`sysdispatch.vm.helpers.HELPERS`: each
argument's kind, the result's kind): the ctx pointer unmodified, a map of a type the helper takes,
keys and values pointing at initialised memory of the map's sizes, sized memory with a bounded
non-zero size, no pointer where a plain value is expected. After the call r1-r5 are unreadable
and r0 holds the result. A bpf-to-bpf call pushes a frame (at most eight), passes r1-r5 and gives
the callee its own stack; its exit returns r0 and restores the caller with r1-r5 clobbered and
r6-r9 as they were. The main function's exit needs a scalar r0.
"""

from __future__ import annotations

from ..isa import MAX_CALL_FRAMES, STACK_SIZE
from ..maps import MAP_PROG_ARRAY
from . import access, precision
from .access import Reject
from .state import CTX, MAP_PTR, MAP_VALUE, SCALAR, STACK, UNINIT, UNKNOWN, Frame, Reg, State

TAIL_CALL = 12
STACK_ROUND = 16     # the kernel rounds each frame's stack to this when adding up call chains


class Calls:
    """Mixed into :class:`~.check.Verifier` (uses its maps, cfg, helper table and counters)."""

    # --- helpers -----------------------------------------------------------------------------------

    def _helper(self, st: State, hid: int) -> None:
        Arg, Ret = self.Arg, self.Ret
        h = self.helpers_table.get(hid)
        fname = f"bpf_{h.name}#{hid}" if h is not None else f"#{hid}"
        if h is None or hid not in self.prog_type.helpers:
            raise Reject(f"program of this type cannot use helper {fname}")
        regs = st.cur.regs
        the_map, map_index = None, -1
        for i, kind in enumerate(h.args):
            r = i + 1
            reg = self._read(regs, r)
            if kind == Arg.CTX:
                if reg.kind != CTX:
                    raise Reject(f"R{r} type={reg.type_name} expected=ctx")
                if reg.off or not reg.s.is_const or reg.s.tv:
                    raise Reject(f"dereference of modified ctx ptr R{r} off={reg.off} disallowed")
            elif kind == Arg.MAP_PTR:
                if reg.kind != MAP_PTR:
                    raise Reject(f"R{r} type={reg.type_name} expected=map_ptr")
                the_map, map_index = self.maps[reg.map], reg.map
                is_prog_array = the_map.map_type == MAP_PROG_ARRAY
                if is_prog_array != (hid == TAIL_CALL):
                    raise Reject(f"cannot pass map_type {the_map.map_type} "
                                 f"into func {fname}")
            elif kind in (Arg.MAP_KEY, Arg.MAP_VALUE):
                size = the_map.key_size if kind == Arg.MAP_KEY else the_map.value_size
                access.readable(self, st, r, reg, size, "fp, map_value")
            elif kind == Arg.MEM:
                pass   # checked with its size, the next argument
            elif kind == Arg.CONST_SIZE:
                self._sized_mem(st, r - 1, regs[r - 1], r, reg)
            elif kind == Arg.SCALAR:
                if reg.is_ptr:
                    raise Reject(f"R{r} leaks addr into helper function")
        if hid == TAIL_CALL:
            if len(self.cfg.starts) > 1:
                raise Reject("mixing of tail_calls and bpf-to-bpf calls is not supported")
            self.tail_calls = True
        self.helpers_used.add(hid)
        for r in range(1, 6):
            regs[r] = UNINIT
        if h.ret == Ret.SCALAR:
            regs[0] = UNKNOWN
        elif h.ret == Ret.MAP_VALUE_OR_NULL:
            self.id_gen += 1
            regs[0] = Reg(MAP_VALUE, map=map_index, id=self.id_gen, null=True)
        else:
            regs[0] = UNINIT

    def _sized_mem(self, st: State, pr: int, ptr: Reg, sr: int, size: Reg) -> None:
        if size.kind != SCALAR:
            raise Reject(f"R{sr} type={size.type_name} expected=scalar")
        precision.mark(self, st, {(len(st.frames) - 1, sr)})
        s = size.s
        if s.smin < 0:
            raise Reject(f"R{sr} min value is negative, either use unsigned or 'var &= const'")
        if s.umax >= access.MAX_VAR_OFF:
            raise Reject(f"R{sr} unbounded memory access, use 'var &= const' or "
                         f"'if (var < const)'")
        if s.umin == 0:
            raise Reject(f"R{sr} invalid zero-sized read: u64=[{s.umin},{s.umax}]")
        access.readable(self, st, pr, ptr, s.umax, "fp, map_value")

    def _call(self, st: State, target: int) -> None:
        if len(st.frames) >= MAX_CALL_FRAMES:
            raise Reject(f"the call stack of {len(st.frames) + 1} frames is too deep !")
        caller = st.cur
        callee = Frame.entry(len(st.frames), st.pc, target)
        for r in range(1, 6):
            callee.regs[r] = caller.regs[r]
        st.frames.append(callee)
        self.calls.setdefault(caller.subprog, set()).add(target)
        self.max_frames = max(self.max_frames, len(st.frames))
        st.pc = target

    def _exit(self, st: State) -> bool:
        regs = st.cur.regs
        r0 = self._read(regs, 0)
        if len(st.frames) > 1:
            if r0.kind == STACK:
                raise Reject("cannot return stack pointer to the caller")
            callee = st.frames.pop()
            caller = st.cur
            caller.regs[0] = r0
            for r in range(1, 6):
                caller.regs[r] = UNINIT
            st.pc = callee.callsite + 1
            return False
        if r0.kind != SCALAR:
            raise Reject("R0 leaks addr as return value")
        return True

    # --- stack depth -----------------------------------------------------------------------------

    def note_depth(self, frame: Frame, nbytes: int) -> None:
        if nbytes > self.depths.get(frame.subprog, 0):
            self.depths[frame.subprog] = nbytes

    def _check_stack_depth(self) -> None:
        """Add up the frames of every call chain, each rounded up as the kernel's JIT does
        (check_max_stack_depth); ``combined_depth`` is the deepest chain's exact byte count."""
        rounded = lambda f: -(-self.depths.get(f, 0) // STACK_ROUND) * STACK_ROUND  # noqa: E731
        self.combined_depth = 0

        def walk(f: int, total: int, exact: int, chain: tuple[int, ...]) -> None:
            total += rounded(f)
            exact += self.depths.get(f, 0)
            if total > STACK_SIZE:
                raise self.fail(f"combined stack size of {len(chain)} calls is {total}. "
                                f"Too large", pc=f)
            self.combined_depth = max(self.combined_depth, exact)
            for g in sorted(self.calls.get(f, ())):
                if g not in chain:
                    walk(g, total, exact, chain + (g,))

        walk(0, 0, 0, (0,))
