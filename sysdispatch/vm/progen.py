"""Random valid BPF programs, for differential tests (kernel vs interpreter, interpreter vs JIT).

:func:`random_program` builds a program that the kernel's verifier accepts as a
``BPF_PROG_TYPE_SOCKET_FILTER`` and that terminates, so any two engines must agree on its r0.
Every instruction form comes from the opcode table (:data:`~sysdispatch.vm.isa.SPECS`); this
module only knows which operands keep a form valid:

* every register r0–r9 is set first (``mov``, ``mov32`` or a 64-bit ``lddw``), so nothing is read
  uninitialised — r1 starts as the ctx pointer and is overwritten, r10 is only used as the base
  of stack accesses;
* branches only go forward, and are nested blocks (``if c goto end; body; end:`` and
  ``if c goto else; then; goto end; else: ...; end:``) so that every slot is reachable: the
  kernel refuses unreachable instructions;
* stack accesses are aligned (the verifier insists for the stack) and loads read only bytes that
  every path has stored — uninitialised stack is garbage in the kernel (root may read it);
* immediate divisors are non-zero (the verifier refuses ``div`` by an immediate 0) but register
  divisors are anything: the kernel defines ``x / 0 = 0`` and ``x % 0 = x``;
* immediate shift amounts are below the width (the verifier refuses others) but register shift
  amounts are anything: the kernel masks them to 63 (31 for ALU32), as RFC 9669 says;
* the program ends with ``exit`` and r0 a scalar; by default r1–r9 are first folded into r0 so a
  difference in any register shows in the result.

The features are names for groups of forms (see :data:`ALL_FEATURES`) so an engine that lacks
some (say, the CPU v4 forms) can still be tested on the rest.

The generator draws only through ``rng``, so under hypothesis
``st.randoms(use_true_random=False).map(random_program)`` gives programs that shrink.

Keep programs to a few hundred slots when the kernel is to load them: with many branches on
values it knows, the verifier explores paths separately and a 1000-slot body can pass its
one-million-instruction budget (E2BIG).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from .isa import FP, SPECS, Insn, OpSpec, lddw

# What each feature name turns on. "sdiv", "movsx", "bswap", "ldxs" and "gotol" are the CPU v4
# additions (Linux 6.6).
ALL_FEATURES = frozenset({
    "alu",     # 64-bit ALU, incl. neg, div/mod, shifts
    "alu32",   # 32-bit ALU (results zero-extend)
    "end",     # le16/32/64, be16/32/64
    "lddw",    # 64-bit immediates in the body (the set-up always may use lddw)
    "jmp",     # 64-bit conditional jumps, K and X, and ja
    "jmp32",   # 32-bit conditional jumps
    "stack",   # st, stx, ldx on the stack
    "atomic",  # lock add/or/and/xor, fetch_*, xchg, cmpxchg on the stack
    "sdiv",    # signed div/mod (v4)
    "movsx",   # sign-extending moves (v4)
    "bswap",   # unconditional byte swaps (v4)
    "ldxs",    # sign-extending loads (v4)
    "gotol",   # ja32 with a 32-bit offset (v4)
})
DEFAULT_FEATURES = ALL_FEATURES

NREGS_USED = 10      # r0..r9; r10 is the frame pointer
MAX_DEPTH = 4        # nesting of branch blocks
STACK_TOP = 64       # most accesses go to fp-64..fp-1 so loads often find stored bytes
STACK_BOTTOM = 16    # a few go to the deepest bytes, fp-512..fp-497
STACK_SIZE = 512
FOLD_MULTIPLIER = -0x61C8864F  # 0x9E3779B1 as s32: odd, so r0 * it loses no information

_U64 = (1 << 64) - 1
_EDGE64 = (0, 1, 2, 3, 7, 31, 32, 63, 64, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF,
           0x80000000, 0xFFFFFFFF, 1 << 32, (1 << 63) - 1, 1 << 63, _U64, _U64 - 1)
_EDGE32 = (0, 1, -1, 2, -2, 3, 7, 31, 32, 63, 64, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF,
           0x7FFFFFFF, -0x80000000, -0x7FFFFFFF)


def required_features(spec: OpSpec) -> frozenset[str] | None:
    """The features that must all be on for ``spec`` to be generated; None: never generated."""
    kind, op = spec.kind, spec.op
    width = "alu" if spec.is64 else "alu32"
    if kind in ("alu", "alu32"):
        return frozenset({width, "sdiv"} if op in ("sdiv", "smod") else {width})
    if kind == "neg":
        return frozenset({width})
    if kind == "movsx":
        return frozenset({"movsx", width})
    if kind == "end":
        return frozenset({"end"})
    if kind == "bswap":
        return frozenset({"bswap"})
    if kind in ("ja", "jcc"):
        return frozenset({"jmp"})
    if kind == "jcc32":
        return frozenset({"jmp32"})
    if kind == "ja32":
        return frozenset({"gotol"})
    if kind == "lddw":
        return frozenset({"lddw"})
    if kind in ("ldx", "st", "stx"):
        return frozenset({"stack"})
    if kind == "ldxs":
        return frozenset({"stack", "ldxs"})
    if kind == "atomic":
        return frozenset({"stack", "atomic"})
    return None  # calls and exit: not part of random bodies


def generated_specs(features: Iterable[str] = DEFAULT_FEATURES) -> tuple[OpSpec, ...]:
    """Every form :func:`random_program` may emit in its body with ``features``."""
    on = frozenset(features)
    out = []
    for spec in SPECS:
        need = required_features(spec)
        if need is not None and need <= on:
            out.append(spec)
    return tuple(out)


def _insn(spec: OpSpec, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> Insn:
    """An instruction of form ``spec``; the table's fixed fields override the given ones."""
    fields = {"dst": dst, "src": src, "off": off, "imm": imm}
    fields.update(dict(spec.fixed))
    return Insn(spec.code, fields["dst"], fields["src"], fields["off"], fields["imm"])


def _spec(kind: str, op: str, *, reg: bool = False, is64: bool = True) -> OpSpec:
    """The one table entry with this kind, op, operand source and width."""
    return next(s for s in SPECS if s.kind == kind and s.op == op and s.reg == reg
                and s.is64 == is64)


class _Generator:
    def __init__(self, rng: random.Random, features: frozenset[str]) -> None:
        unknown = features - ALL_FEATURES
        if unknown:
            raise ValueError(f"unknown progen features: {', '.join(sorted(unknown))}")
        self.rng = rng
        self.features = features
        specs = generated_specs(features)
        self.compute = [s for s in specs if s.kind in ("alu", "alu32", "neg", "movsx", "end",
                                                       "bswap")]
        self.conds = [s for s in specs if s.kind in ("jcc", "jcc32")]
        self.gotos = [s for s in specs if s.kind in ("ja", "ja32")]
        self.stores = [s for s in specs if s.kind in ("st", "stx")]
        self.loads = [s for s in specs if s.kind in ("ldx", "ldxs")]
        self.atomics = [s for s in specs if s.kind == "atomic"]

    # --- operands ---

    def reg(self) -> int:
        return self.rng.randrange(NREGS_USED)

    def value64(self) -> int:
        r = self.rng.random()
        if r < 0.4:
            return self.rng.choice(_EDGE64)
        if r < 0.6:
            return self.rng.randrange(-16, 17) & _U64
        if r < 0.8:
            return self.rng.getrandbits(32)
        return self.rng.getrandbits(64)

    def imm32(self) -> int:
        r = self.rng.random()
        if r < 0.45:
            return self.rng.choice(_EDGE32)
        if r < 0.75:
            return self.rng.randrange(-16, 17)
        return self.rng.getrandbits(32) - (1 << 31)

    # --- set-up and epilogue ---

    def setup(self) -> list[Insn]:
        """Give r0..r9 each a value: 32-bit sign-extended, zero-extended, or full 64-bit."""
        out: list[Insn] = []
        for r in range(NREGS_USED):
            pick = self.rng.random()
            if pick < 0.4:
                out.extend(lddw(r, self.value64()))
            else:
                wide = pick < 0.75  # mov sign-extends imm; mov32 zero-extends it
                mov = _spec("alu" if wide else "alu32", "mov", is64=wide)
                out.append(_insn(mov, dst=r, imm=self.imm32()))
        return out

    def fold(self) -> list[Insn]:
        """r0 = (((r0 * M) ^ r1) * M ^ r2) ... : any register's difference reaches r0."""
        if "alu" not in self.features:
            return []
        mul, xor = _spec("alu", "mul"), _spec("alu", "xor", reg=True)
        out: list[Insn] = []
        for r in range(1, NREGS_USED):
            out += [_insn(mul, dst=0, imm=FOLD_MULTIPLIER), _insn(xor, dst=0, src=r)]
        return out

    # --- body ---

    def block(self, budget: int, init: set[int], depth: int) -> list[Insn]:
        """About ``budget`` slots of straight code and nested forward branches.

        ``init`` holds the stack offsets (negative, from r10) stored on every path so far; it is
        updated with what this block stores on every one of its own paths.
        """
        out: list[Insn] = []
        while len(out) < budget:
            left = budget - len(out)
            r = self.rng.random()
            if self.conds and depth < MAX_DEPTH and left >= 2 and r < 0.18:
                out += self.branch(left, init, depth)
            elif (self.stores or self.atomics) and r < 0.45:
                out += self.stack_op(init)
            elif "lddw" in self.features and r < 0.5 and left >= 2:
                out += lddw(self.reg(), self.value64())
            elif self.compute:
                out.append(self.compute_op())
            elif self.stores:
                out += self.stack_op(init)
            else:
                break  # nothing straight to emit with these features
        return out

    def compute_op(self) -> Insn:
        spec = self.rng.choice(self.compute)
        dst, src = self.reg(), self.reg()
        if spec.kind in ("neg", "end", "bswap"):
            return _insn(spec, dst=dst)
        if spec.kind == "movsx" or spec.reg:
            return _insn(spec, dst=dst, src=src)
        width = 64 if spec.is64 else 32
        if spec.op in ("lsh", "rsh", "arsh"):
            imm = self.rng.randrange(width)  # the verifier refuses a constant shift >= width
        else:
            imm = self.imm32()
            if spec.op in ("div", "mod", "sdiv", "smod") and imm == 0:
                imm = self.rng.choice((1, -1, 3, 0x7FFFFFFF, -0x80000000))  # imm 0: refused
        return _insn(spec, dst=dst, imm=imm)

    def condition(self, off: int) -> Insn:
        spec = self.rng.choice(self.conds)
        if spec.reg:
            return _insn(spec, dst=self.reg(), src=self.reg(), off=off)
        return _insn(spec, dst=self.reg(), off=off, imm=self.imm32())

    def branch(self, left: int, init: set[int], depth: int) -> list[Insn]:
        size = self.rng.randint(1, max(1, min(left - 1, 16)))
        if self.gotos and size >= 2 and self.rng.random() < 0.4:
            # if c goto else; then; goto end; else: ...; end:
            then_init, else_init = set(init), set(init)
            then = self.block(self.rng.randint(1, size - 1), then_init, depth + 1)
            other = self.block(max(1, size - len(then)), else_init, depth + 1)
            goto = self.rng.choice(self.gotos)
            jump = (_insn(goto, off=len(other)) if goto.kind == "ja"
                    else _insn(goto, imm=len(other)))
            init |= then_init & else_init
            return [self.condition(len(then) + 1), *then, jump, *other]
        body = self.block(size, set(init), depth + 1)  # stores here may not happen
        return [self.condition(len(body)), *body]

    def slot(self, size: int, init: set[int] | None = None) -> int | None:
        """An aligned stack offset for a ``size``-byte access; with ``init``, only one whose
        bytes are all stored (None when there is none)."""
        deep = self.rng.random() < 0.1
        lo, hi = (-STACK_SIZE, -STACK_SIZE + STACK_BOTTOM) if deep else (-STACK_TOP, 0)
        offs = range(lo, hi - size + 1, size)  # fp is 8-aligned: off % size == 0 aligns it
        if init is not None:
            offs = [o for o in offs if all(o + i in init for i in range(size))]
            if not offs:
                return None
        return self.rng.choice(offs)

    def stack_op(self, init: set[int]) -> list[Insn]:
        r = self.rng.random()
        if self.loads and r < 0.4:
            spec = self.rng.choice(self.loads)
            off = self.slot(spec.size, init)
            if off is not None:
                return [_insn(spec, dst=self.reg(), src=FP, off=off)]
        elif self.atomics and r < 0.6:
            spec = self.rng.choice(self.atomics)
            off = self.slot(spec.size, init)
            if off is not None:
                return [_insn(spec, dst=FP, src=self.reg(), off=off)]
        if not self.stores:
            return []
        spec = self.rng.choice(self.stores)
        off = self.slot(spec.size)
        init.update(off + i for i in range(spec.size))
        if spec.kind == "st":
            return [_insn(spec, dst=FP, off=off, imm=self.imm32())]
        return [_insn(spec, dst=FP, src=self.reg(), off=off)]


def random_program(rng: random.Random, *, length: int = 40,
                   features: Iterable[str] = DEFAULT_FEATURES,
                   fold: bool = True) -> list[Insn]:
    """A random program the kernel verifier accepts as a socket filter, and that terminates.

    ``length`` is the number of slots of the random body (roughly; a branch block may end a
    slot or two past it), between the set-up of r0–r9 and the epilogue: with ``fold``, r1–r9
    are folded into r0 (18 slots) before the final ``exit``.
    """
    gen = _Generator(rng, frozenset(features))
    body = gen.block(length, set(), 0)
    return [*gen.setup(), *body, *(gen.fold() if fold else ()), _insn(_spec("exit", "exit"))]
