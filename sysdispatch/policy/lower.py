"""Lowering a policy to what libseccomp and OCI profiles can say.

A policy is a program table: handlers run rules in order (first match wins), may tail-call into
nested tables, and fall back to defaults. libseccomp (and so every OCI/Docker profile, which
runtimes feed to libseccomp) knows something flatter: per architecture and syscall, a *set* of
rules, each an AND of comparisons, with at most ONE comparison per argument; when rules of
different actions overlap, the outcome depends on libseccomp's internal rule tree, and a rule
whose action equals the filter's default is refused. So the lowering:

1. flattens each syscall's handler, following tail calls into nested tables (an ``args[i]`` table
   becomes ``args[i] == key`` conditions; an ``nr`` table is looked up with the syscall's own
   number), into an ordered list of (conditions, action) pieces ending with an unconditional one;
2. makes pieces of different actions disjoint: piece j keeps only the inputs no earlier piece of
   another action matches (``c_j AND NOT c_i``, expanded to a disjunction of conjunctions); pieces
   with the filter's default action are then simply left out;
3. reduces every conjunction to at most one comparison per argument (intervals, exclusions and
   masks are combined; impossible ones vanish), splitting it into several rules when needed.

Anything that cannot be said this way — asm/ELF handlers, maps, masked comparisons other than
``==``, two constraints on one argument that no single comparison expresses, tail-call cycles —
raises :class:`PolicyError` naming the handler and its location.

On arches where libseccomp compares 32-bit arguments (x86, x32, arm, ...) the kernel export
lowers with 32-bit arguments: a comparison with a value above 2**32-1 is decided up front
(``args[0] == 2**32`` can never hold there), because libseccomp would silently truncate it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..errors import PolicyError
from ..seccomp import actions
from . import _arch, scmp_arch
from .model import Act, Cond, Policy

U64 = 0xFFFFFFFFFFFFFFFF
# Beyond this many rules for one syscall the expansion is not worth giving to libseccomp (whose
# whole filter must fit the kernel's 4096 classic instructions, at ~4-8 per comparison).
MAX_RULES_PER_SYSCALL = 128
MAX_ENUMERATED = 16             # a short interval a < x < b becomes this many == rules at most
MAX_TAIL_CALLS = 33             # the kernel's MAX_TAIL_CALL_CNT

_NEGATE = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", "<=": ">", ">": "<="}


@dataclass(frozen=True, order=True, slots=True)
class Cmp:
    """One libseccomp comparison: ``args[arg] op value``, or ``(args[arg] & mask) == value``
    when ``op`` is ``"&=="``."""

    arg: int
    op: str      # ==, !=, <, <=, >, >=, &==
    value: int
    mask: int = 0

    def __str__(self) -> str:
        if self.op == "&==":
            return f"args[{self.arg}] & {self.mask:#x} == {self.value:#x}"
        return f"args[{self.arg}] {self.op} {self.value:#x}" if self.value > 9 else \
            f"args[{self.arg}] {self.op} {self.value}"


@dataclass(frozen=True, slots=True)
class KRule:
    cmps: tuple[Cmp, ...]   # sorted by argument, at most one per argument
    ret: int                # SECCOMP_RET_* value


@dataclass(frozen=True, slots=True)
class SyscallRules:
    nr: int
    handler: str              # the handler the rules came from (for messages)
    rules: tuple[KRule, ...]  # none with the default action; different actions never overlap


@dataclass(frozen=True, slots=True)
class Lowered:
    policy: Policy
    default: int
    bad_arch: int
    arches: tuple[str, ...]
    by_arch: dict[str, dict[int, SyscallRules]]
    positive: bool = False    # lowered with positive comparisons only


class _Unexpressible(Exception):
    """A condition libseccomp cannot say; turned into a PolicyError naming the handler."""


# --- atoms: a Cond normalised for one argument domain ---------------------------------------

@dataclass(frozen=True, slots=True)
class _Atom:
    arg: int
    op: str          # ==, !=, <, <=, >, >=, &==, &!=, or "?<op>" for a masked op libseccomp lacks
    value: int
    mask: int = 0
    text: str = ""   # the condition as written, for messages


_TRUE, _FALSE = "true", "false"


def _atom(c: Cond, dmax: int) -> _Atom | str:
    """Normalise ``c`` for arguments in 0..dmax: an atom, or the constant _TRUE/_FALSE."""
    text = str(c)
    op, v = c.op, c.value
    if c.mask is not None:
        m = c.mask & dmax
        if m == 0:
            return _TRUE if _compare(0, op, v) else _FALSE
        if m != dmax:
            if op == "==":
                return _FALSE if v & ~m else _Atom(c.arg, "&==", v, m, text)
            if op == "!=":
                return _TRUE if v & ~m else _Atom(c.arg, "&!=", v, m, text)
            return _Atom(c.arg, "?" + op, v, m, text)
        # (x & all-ones) is x: fall through to a plain comparison
    if v > dmax:  # every argument is below v
        return _TRUE if op in ("!=", "<", "<=") else _FALSE
    return _Atom(c.arg, op, v, 0, text)


def _negate(a: _Atom) -> _Atom:
    if a.op.startswith("?"):
        return _Atom(a.arg, "?!" + a.op[1:], a.value, a.mask, f"not ({a.text})")
    if a.op == "&==":
        return _Atom(a.arg, "&!=", a.value, a.mask, a.text)
    if a.op == "&!=":
        return _Atom(a.arg, "&==", a.value, a.mask, a.text)
    return _Atom(a.arg, _NEGATE[a.op], a.value, 0, a.text)


def _compare(x: int, op: str, v: int) -> bool:
    return {"==": x == v, "!=": x != v, "<": x < v, "<=": x <= v, ">": x > v, ">=": x >= v}[op]


# --- one argument's constraints ---------------------------------------------------------------

class _ArgSet:
    """The values one argument may take under a conjunction of atoms."""

    __slots__ = ("lo", "hi", "ne", "meq", "mne", "opaque", "dmax")

    def __init__(self, dmax: int) -> None:
        self.lo, self.hi, self.dmax = 0, dmax, dmax
        self.ne: set[int] = set()
        self.meq: tuple[int, int] | None = None      # (mask, value), merged
        self.mne: list[tuple[int, int]] = []
        self.opaque: list[_Atom] = []

    def add(self, a: _Atom) -> bool:
        """Add an atom; False when the set became empty."""
        op, v = a.op, a.value
        if op == "==":
            self.lo, self.hi = max(self.lo, v), min(self.hi, v)
        elif op == "<":
            self.hi = min(self.hi, v - 1)
        elif op == "<=":
            self.hi = min(self.hi, v)
        elif op == ">":
            self.lo = max(self.lo, v + 1)
        elif op == ">=":
            self.lo = max(self.lo, v)
        elif op == "!=":
            self.ne.add(v)
        elif op == "&==":
            if not self._add_masked(a.mask, v):
                return False
        elif op == "&!=":
            if a.mask & (a.mask - 1) == 0:  # one bit: "bit != v" is "bit == the other value"
                return self._add_masked(a.mask, a.mask ^ v)
            self.mne.append((a.mask, v))
        else:
            self.opaque.append(a)
        return self.lo <= self.hi

    def _add_masked(self, m: int, v: int) -> bool:
        if self.meq is None:
            self.meq = (m, v)
            return True
        m0, v0 = self.meq
        both = m0 & m
        if (v0 & both) != (v & both):
            return False
        self.meq = (m0 | m, v0 | v)
        return True

    def _ok(self, x: int) -> bool:
        if x in self.ne or not self.lo <= x <= self.hi:
            return False
        if self.meq is not None and x & self.meq[0] != self.meq[1]:
            return False
        return all(x & m != v for m, v in self.mne)

    def satisfiable(self) -> bool:
        """False only when certainly empty (opaque atoms are assumed satisfiable)."""
        if self.lo > self.hi:
            return False
        if self.lo == self.hi:
            return self._ok(self.lo) or False
        if self.meq is None and not self.mne:
            return (self.hi - self.lo + 1) > len({x for x in self.ne if self.lo <= x <= self.hi})
        return True

    def express(self, arg: int, positive: bool = False) -> list[Cmp | None]:
        """Alternatives (ORed), each one comparison or None (no constraint). ``positive``: use
        only comparisons whose action sits on the true branch in libseccomp's tree (==, >, >=,
        masked ==), spelling != and < as ranges of masked equalities (see kernel.py)."""
        if self.opaque:
            a = self.opaque[0]
            raise _Unexpressible(f"condition '{a.text}' uses a masked comparison other than ==, "
                                 "which libseccomp cannot express")
        lo, hi, dmax = self.lo, self.hi, self.dmax
        while lo <= hi and lo in self.ne:
            lo += 1
        while hi >= lo and hi in self.ne:
            hi -= 1
        if lo > hi:
            return []
        ne = sorted(x for x in self.ne if lo < x < hi)
        if lo == hi:
            return [Cmp(arg, "==", lo)] if self._ok(lo) else []
        if self.meq is not None or self.mne:
            # masks with a range or exclusions: the range as aligned blocks (each a masked
            # equality), each block narrowed by the mask and with the excluded values cut out
            forbidden = self.mne + [(dmax, x) for x in ne]
            blocks = [(0, 0)] if (lo, hi) == (0, dmax) else _range_cubes(lo, hi, dmax)
            out: list[Cmp | None] = []
            for bm, bv in blocks:
                m0, v0 = self.meq or (0, 0)
                if (bv ^ v0) & bm & m0:
                    continue
                for m, v in _cube_cover((bm | m0, bv | v0), forbidden):
                    out.append(self._masked(arg, m, v))
                if len(out) > MAX_RULES_PER_SYSCALL:
                    raise _Unexpressible(f"needs more than {MAX_RULES_PER_SYSCALL} "
                                         "libseccomp rules")
            return out
        if not positive and (lo, hi) == (0, dmax) and len(ne) == 1:
            return [Cmp(arg, "!=", ne[0])]
        out = []
        start = lo
        for x in ne + [hi + 1]:
            if start <= x - 1:
                out.extend(self._interval(arg, start, x - 1, positive))
            start = x + 1
        return out

    def _masked(self, arg: int, m: int, v: int) -> Cmp | None:
        if m == 0:
            return None
        return Cmp(arg, "==", v) if m == self.dmax else Cmp(arg, "&==", v, m)

    def _interval(self, arg: int, a: int, b: int, positive: bool) -> list[Cmp | None]:
        if (a, b) == (0, self.dmax):
            return [None]
        if a == b:
            return [Cmp(arg, "==", a)]
        if b == self.dmax:
            return [Cmp(arg, ">", a - 1)]
        if a == 0 and not positive:
            return [Cmp(arg, "<", b + 1)]
        if b - a < MAX_ENUMERATED:
            return [Cmp(arg, "==", x) for x in range(a, b + 1)]
        return [self._masked(arg, m, v) for m, v in _range_cubes(a, b, self.dmax)]


def _range_cubes(a: int, b: int, dmax: int) -> list[tuple[int, int]]:
    """a..b as aligned power-of-two blocks, each a masked equality (mask, value)."""
    out = []
    while a <= b:
        size = a & -a if a else dmax + 1          # the largest block aligned at a
        while a + size - 1 > b:
            size >>= 1
        out.append((dmax & ~(size - 1), a))
        a += size
    return out


def _cube_cover(start: tuple[int, int],
                forbidden: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Disjoint masked-equality "cubes" (mask, value) covering the values that satisfy
    ``x & start_mask == start_value`` and none of ``x & m == v`` for (m, v) in ``forbidden``:
    libseccomp has no masked !=, but (x & m) != v is an OR of single-bit masked equalities, and
    fixing one bit at a time (a Shannon expansion) keeps the pieces few and disjoint."""
    out: list[tuple[int, int]] = []

    def walk(fm: int, fv: int, live: list[tuple[int, int]]) -> None:
        live = [(m, v) for m, v in live if (v ^ fv) & m & fm == 0]   # still reachable
        if not live:
            out.append((fm, fv))
            return
        if any(m & ~fm == 0 for m, _ in live):                        # wholly forbidden
            return
        if len(out) > MAX_RULES_PER_SYSCALL:
            raise _Unexpressible(f"needs more than {MAX_RULES_PER_SYSCALL} libseccomp rules")
        m0, v0 = live[0]
        bit = (m0 & ~fm) & -(m0 & ~fm)                                 # lowest unfixed bit
        walk(fm | bit, fv | (bit & ~v0), live)   # the branch that leaves live[0] first
        walk(fm | bit, fv | (bit & v0), live)

    walk(start[0], start[1] & start[0], list(forbidden))
    return out


def _simplify(term: list[_Atom], dmax: int) -> dict[int, _ArgSet] | None:
    sets: dict[int, _ArgSet] = {}
    for a in term:
        s = sets.setdefault(a.arg, _ArgSet(dmax))
        if not s.add(a):
            return None
    if not all(s.satisfiable() for s in sets.values()):
        return None
    return sets


def _express(sets: dict[int, _ArgSet], positive: bool) -> list[tuple[Cmp, ...]]:
    per_arg = [s.express(arg, positive) for arg, s in sorted(sets.items())]
    out = []
    for combo in itertools.product(*per_arg):
        out.append(tuple(c for c in combo if c is not None))
        if len(out) > MAX_RULES_PER_SYSCALL:
            raise _Unexpressible(f"needs more than {MAX_RULES_PER_SYSCALL} libseccomp rules")
    return out


# --- flattening handlers and tables -----------------------------------------------------------

Piece = tuple[tuple[Cond, ...], int, str]   # conditions, action, the handler that decided it


class _Flattener:
    def __init__(self, policy: Policy, arch: str, nr: int) -> None:
        self.p, self.arch, self.nr = policy, arch, nr

    def handler(self, name: str, stack: tuple[str, ...], via: str) -> list[Piece]:
        h = self.p.handlers.get(name)
        if h is None:
            raise PolicyError(f"{via} names handler '{name}', which the policy does not define")
        if h.kind != "rules":
            what = "eBPF assembly" if h.kind == "asm" else f"an ELF object ({h.elf})"
            raise PolicyError(f"is {what}: the kernel filter (libseccomp) can only express rule "
                              "handlers", loc=h.loc, context=f"handler '{name}'")
        if h.maps:
            raise PolicyError(f"uses maps ({', '.join(h.maps)}), which seccomp filters cannot",
                              loc=h.loc, context=f"handler '{name}'")
        out: list[Piece] = []
        try:
            for rule in h.rules:
                out.extend((rule.conds + c, r, o) for c, r, o in self.act(rule.then, stack, name))
            out.extend(self.act(h.default or self.p.default, stack, name))
        except PolicyError as exc:
            raise exc.at(loc=h.loc, context=f"handler '{name}'")
        return out

    def act(self, act: Act, stack: tuple[str, ...], owner: str) -> list[Piece]:
        if act.ret is not None:
            return [((), act.ret & 0xFFFFFFFF, owner)]
        tname = act.tail_call
        table = self.p.tables.get(tname)
        if table is None:
            raise PolicyError(f"tail_call({tname}) names no table of the policy", loc=act.loc)
        if tname in stack:
            raise PolicyError(f"tail_call({tname}) loops back into a table already on the path "
                              f"({' -> '.join(stack + (tname,))}); libseccomp cannot express "
                              "a loop that only the 33-tail-call limit ends", loc=act.loc)
        if len(stack) + 1 >= MAX_TAIL_CALLS:
            raise PolicyError("tail calls nest deeper than the kernel's 33", loc=act.loc)
        stack = stack + (tname,)
        fallback = table.default or self.p.default
        if table.index == "nr":
            slot = table.by_arch.get(self.arch, {}).get(self.nr)
            if slot is None:
                return self.act(fallback, stack, owner)
            return self.handler(slot, stack, f"table '{tname}'")
        arg = int(table.index[5:-1])
        out: list[Piece] = []
        for key, hname in sorted(table.entries.items()):
            if key > 0xFFFFFFFF or (table.size is not None and key >= table.size):
                continue  # a slot no tail call can reach (the index is a u32 below max_entries)
            cond = Cond(arg, "==", key)
            out.extend(((cond,) + c, r, o)
                       for c, r, o in self.handler(hname, stack, f"table '{tname}'"))
        out.extend(self.act(fallback, stack, owner))
        return out


def _disjoint(pieces: list[Piece], dmax: int) -> list[tuple[list[list[_Atom]], int, str]]:
    """For each piece, the conjunctions (as atom lists) it keeps once every earlier piece of a
    different action has been taken out."""
    norm: list[tuple[list[_Atom] | None, int, str]] = []
    for conds, ret, origin in pieces:
        atoms: list[_Atom] | None = []
        for c in conds:
            a = _atom(c, dmax)
            if a == _FALSE:
                atoms = None
                break
            if a != _TRUE:
                atoms.append(a)
        norm.append((atoms, ret, origin))
    out = []
    for j, (atoms_j, ret_j, origin_j) in enumerate(norm):
        if atoms_j is None:
            continue
        terms = [atoms_j] if _simplify(atoms_j, dmax) is not None else []
        for atoms_i, ret_i, _ in norm[:j]:
            if not terms:
                break
            if atoms_i is None or ret_i == ret_j:
                continue
            nxt = []
            for t in terms:
                if _simplify(t + atoms_i, dmax) is None:
                    nxt.append(t)          # already disjoint from piece i
                    continue
                # NOT(a1 and a2 and ...) as disjoint branches: not a1 | a1, not a2 | ...
                # (disjoint, so that later splitting does not repeat the same inputs)
                prefix: list[_Atom] = []
                for a in atoms_i:
                    cand = t + prefix + [_negate(a)]
                    if _simplify(cand, dmax) is not None:
                        nxt.append(cand)
                    prefix.append(a)
            terms = nxt
            if len(terms) > MAX_RULES_PER_SYSCALL:
                raise _Unexpressible(f"needs more than {MAX_RULES_PER_SYSCALL} libseccomp rules")
        if terms:
            out.append((terms, ret_j, origin_j))
    return out


def lower_slot(policy: Policy, arch: str, nr: int, handler: str, default: int,
               dmax: int, positive: bool = False) -> SyscallRules:
    """The libseccomp rules for syscall ``nr`` on ``arch``, whose entry slot holds ``handler``."""
    pieces = _Flattener(policy, arch, nr).handler(handler, (policy.entry_table,),
                                                  f"table '{policy.entry_table}'")
    h = policy.handlers[handler]
    try:
        rules: list[KRule] = []
        for terms, ret, origin in _disjoint(pieces, dmax):
            if ret == default:
                continue
            problem = action_problem(ret)
            if problem:
                raise PolicyError(problem, loc=policy.handlers[origin].loc,
                                  context=f"handler '{origin}'")
            for t in terms:
                sets = _simplify(t, dmax)
                if sets is not None:
                    rules.extend(KRule(cmps, ret) for cmps in _express(sets, positive))
                if len(rules) > MAX_RULES_PER_SYSCALL:
                    raise _Unexpressible(f"needs more than {MAX_RULES_PER_SYSCALL} "
                                         "libseccomp rules")
    except _Unexpressible as exc:
        raise PolicyError(f"{exc} (syscall {nr} on {arch})", loc=h.loc,
                          context=f"handler '{handler}'") from None
    return SyscallRules(nr, handler, _prune(rules))


def _prune(rules: list[KRule]) -> tuple[KRule, ...]:
    """Drop duplicates and rules implied by a more general rule of the same action."""
    uniq = list(dict.fromkeys(rules))
    keep = []
    for r in uniq:
        s = set(r.cmps)
        if any(o is not r and o.ret == r.ret and set(o.cmps) < s for o in uniq):
            continue
        keep.append(r)
    return tuple(keep)


def action_problem(ret: int) -> str | None:
    """Why libseccomp would refuse the action ``ret`` (its db_col_action_valid), or None."""
    ret &= 0xFFFFFFFF
    kind, data = ret & actions.ACTION_FULL, ret & actions.DATA
    if kind not in actions.NAMES:
        return f"{actions.describe(ret)}: not an action libseccomp can load"
    if kind == actions.ERRNO and data >= actions.MAX_ERRNO:
        return f"{actions.describe(ret)}: libseccomp loads errno values below {actions.MAX_ERRNO}"
    if data and kind not in (actions.ERRNO, actions.TRACE):
        return (f"{actions.describe(ret)}: libseccomp loads {actions.NAMES[kind]} without data"
                if kind in actions.TAKES_DATA else f"{ret:#010x}: {actions.NAMES[kind]} "
                "carries no data in libseccomp")
    return None


def _entry_default(policy: Policy) -> int:
    entry = policy.tables.get(policy.entry_table)
    act = (entry.default if entry is not None and entry.default is not None else policy.default)
    if act.ret is None:
        raise PolicyError(f"the default for syscalls without a slot is tail_call({act.tail_call}); "
                          "a kernel filter's default must be an action", loc=act.loc)
    return act.ret & 0xFFFFFFFF


def lower(policy: Policy, *, args32: bool = True, positive: bool = False) -> Lowered:
    """Lower ``policy`` for libseccomp. ``args32``: on arches where libseccomp compares 32-bit
    arguments, decide comparisons beyond 32 bits up front (the kernel export); False keeps
    64-bit arguments everywhere (an OCI profile, which the runtime lowers itself).
    ``positive``: only ==, >, >= and masked == (more rules; see kernel.py for why)."""
    entry = policy.tables.get(policy.entry_table)
    if entry is None or entry.index != "nr":
        raise PolicyError(f"the policy has no syscall table '{policy.entry_table}' indexed by nr")
    default = _entry_default(policy)
    for what, ret in (("the policy default", default), ("bad_arch", policy.bad_arch)):
        problem = action_problem(ret)
        if problem:
            raise PolicyError(f"{what}: {problem}", loc=policy.default.loc)
    by_arch: dict[str, dict[int, SyscallRules]] = {}
    for arch in policy.arches:
        if not _arch.known(arch):
            raise PolicyError(f"architecture '{arch}' is unknown to libseccomp")
        dmax = scmp_arch.arg_max(arch) if args32 else U64
        slots = {}
        for nr, hname in sorted(entry.by_arch.get(arch, {}).items()):
            sr = lower_slot(policy, arch, nr, hname, default, dmax, positive)
            if sr.rules:
                slots[nr] = sr
        by_arch[arch] = slots
        _check_multiplexers(arch, slots)
    return Lowered(policy, default, policy.bad_arch & 0xFFFFFFFF, tuple(policy.arches), by_arch,
                   positive)


def _check_multiplexers(arch: str, slots: dict[int, SyscallRules]) -> None:
    """On x86 (and other arches with socketcall/ipc) libseccomp adds every rule for a socket or
    SysV IPC call to the multiplexer as well, with ``args[0] == call`` in place of any args[0]
    comparison. That is only faithful when the multiplexer's own slot already says the same."""
    for nr, sr in slots.items():
        name = _arch.syscall_name(arch, nr)
        mux = scmp_arch.multiplexer(arch, name) if name else None
        if mux is None:
            continue
        mux_nr, call = mux
        own = slots.get(mux_nr)
        if own is not None and any(not r.cmps for r in own.rules):
            continue  # an unconditional rule there wins over anything libseccomp adds
        have = set(own.rules) if own else set()
        for r in sr.rules:
            muxed = KRule((Cmp(0, "==", call),) + tuple(c for c in r.cmps if c.arg != 0), r.ret)
            if muxed not in have:
                mux_name = _arch.syscall_name(arch, mux_nr)
                raise PolicyError(
                    f"on {arch} libseccomp also applies the rules of '{name}' to {mux_name}"
                    f"(args[0] == {call}), but the policy's {mux_name} slot does not have them "
                    f"(missing: {_describe(muxed)}); give {mux_name} those rules or drop {arch}",
                    context=f"handler '{sr.handler}'",
                    loc=None)


def _describe(r: KRule) -> str:
    conds = " && ".join(str(c) for c in r.cmps) or "always"
    return f"{conds} -> {actions.describe(r.ret)}"


def evaluate(rules: tuple[KRule, ...], args: tuple[int, ...], default: int) -> int:
    """What libseccomp's filter returns for these (mutually consistent) rules: the action of any
    matching rule, else ``default``. Used by tests and the explainer, not by the kernel path."""
    for r in rules:
        if all(_cmp_holds(c, args[c.arg]) for c in r.cmps):
            return r.ret
    return default


def _cmp_holds(c: Cmp, x: int) -> bool:
    if c.op == "&==":
        return x & c.mask == c.value
    return _compare(x, c.op, c.value)
