"""The policy compiler: model -> eBPF programs (seccomp type), PROG_ARRAY jump tables and maps.

* **Handlers from rules.** ``r6 = r1`` (the ctx survives helper calls in r6), then each rule in
  order: its conditions (each a matcher rendering itself, :meth:`Cond.to_bpf`: a 64-bit load of
  the argument, an optional mask, one inverted unsigned compare that jumps to the next rule), then
  its action; after the last rule the handler's default. An action returns (``w0 = ret; exit``) or
  tail-calls (below). A handler that only returns is two instructions.
* **Tail calls into args tables.** ``r3 = args[i]``; ``if r3 >= max_entries goto fall`` — the
  kernel truncates the index to u32 before its own range check, so a 64-bit value such as
  ``2**32 + 1`` would alias slot 1; the unsigned 64-bit guard rules that out —; ``r1 = r6``;
  ``r2 = map[table]``; ``call tail_call``; ``fall:`` the table's default (which may tail-call on).
* **The entry program** ``syscall_entry``: load ``arch``; for each listed architecture compare
  (32-bit) and jump to its block, else return ``bad_arch``. For AUDIT_ARCH_X86_64 the x32 bit in
  ``nr`` chooses between the x86_64 and x32 blocks (a call of an ABI the policy does not list is a
  bad arch, as libseccomp decides). A block tail-calls into its own table with the syscall number
  (x32: less its bit) as index and falls through to the entry table's default.
* **Asm handlers** are assembled (seccomp type) with the policy's maps and args tables visible as
  ``map[NAME]``; their errors name the policy file's line. **ELF handlers**: see elf.py.

Every program is verified (sysdispatch.vm.verifier) when the verifier is available; a refusal
is a PolicyError ``file:line:col: handler 'x': pc N: ...``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Location, PolicyError, SysdispatchError
from ..seccomp.data import AUDIT_ARCH_X86_64, OFF_ARCH, OFF_NR, X32_SYSCALL_BIT
from ..vm import isa
from ..vm.maps import Map, ProgArray, create_map
from ..vm.program import SECCOMP, TAIL_CALL, Program
from . import _arch, emit, layout
from .emit import CTX, INDEX, SCRATCH, TABLE, Goto, Label
from .layout import ENTRY
from .model import Act, Handler, Policy

try:  # the verifier is being written in parallel: verify when it is there
    from ..vm.verifier import verify as _vm_verify  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the checkout
    _vm_verify = None


@dataclass(eq=False)
class Compiled:
    """A policy turned into programs and maps, with every slot filled."""

    policy: Policy
    entry: Any                                   # the syscall_entry program (verified if possible)
    handlers: dict[str, Any]                     # handler name -> program
    arrays: dict[tuple[str, str | None], ProgArray]  # (table, arch or None) -> PROG_ARRAY
    maps: dict[str, Map]                         # the policy's own maps
    slots: dict[tuple[str, str | None], dict[int, str]] = field(default_factory=dict)

    def array(self, table: str, arch: str | None = None) -> ProgArray:
        key = (table, arch if self.policy.tables[table].index == "nr" else None)
        return self.arrays[key]

    def program(self, name: str) -> Program:
        """The loaded Program of a handler (or of ``syscall_entry``), verified or not."""
        p = self.entry if name == ENTRY else self.handlers[name]
        return getattr(p, "program", p)


def compile_policy(policy: Policy, *, verify: bool = True) -> Compiled:
    """Build every program, array and map of ``policy`` and fill the jump tables."""
    from .parse import check_default_chains
    check_default_chains(policy)   # models built in Python skip the reader's checks
    maps = {name: create_map(m.type, m.key_size, m.value_size, m.max_entries, name)
            for name, m in policy.maps.items()}
    arrays: dict[tuple[str, str | None], ProgArray] = {}
    for t in policy.tables.values():
        for arch in (policy.arches if t.index == "nr" else (None,)):
            name = layout.array_name(policy, t.name, arch)
            if arch is not None and (name in policy.tables or name in policy.maps) \
                    and name != t.name:
                raise PolicyError(f"table '{name}' has the name of the {arch} part of table "
                                  f"'{t.name}'", loc=policy.tables.get(name, t).loc)
            arrays[(t.name, arch)] = ProgArray(layout.slot_count(t, arch), name)
    gen = _Generator(policy, arrays, maps)
    handlers = {name: gen.finish(gen.handler(h), verify) for name, h in policy.handlers.items()}
    entry = gen.finish(gen.entry(), verify)
    out = Compiled(policy, entry, handlers, arrays, maps)
    for t in policy.tables.values():
        if t.index == "nr":
            for arch in policy.arches:
                slots = {layout.slot_index(arch, nr): h for nr, h in t.by_arch.get(arch, {}).items()}
                out.slots[(t.name, arch)] = slots
        else:
            out.slots[(t.name, None)] = dict(t.entries)
    for (table, arch), slots in out.slots.items():
        for index, h in slots.items():
            put_slot(arrays[(table, arch)], index, handlers[h])
    return out


def put_slot(array: ProgArray, index: int, program: Any) -> None:
    """Store a verified handler in a PROG_ARRAY slot — one list item, atomic."""
    array.update(index, program)


def verify_program(program: Program, context: str | None = None) -> Any:
    """The verifier's VerifiedProgram for ``program`` (the program itself while no verifier
    exists); a refusal becomes a PolicyError naming the program's source line."""
    if _vm_verify is None:
        return program
    try:
        return _vm_verify(program, SECCOMP)
    except SysdispatchError as exc:
        err = PolicyError(exc.message, loc=exc.loc, pc=exc.pc, context=exc.context or context)
        raise err from None


class _Built:
    def __init__(self, name: str, items: list, maps: list, loc: Location | None,
                 context: str) -> None:
        self.name, self.items, self.maps, self.loc, self.context = name, items, maps, loc, context
        self.program: Program | None = None


class _Generator:
    def __init__(self, policy: Policy, arrays: dict, maps: dict[str, Map]) -> None:
        self.policy, self.arrays, self.maps = policy, arrays, maps
        self.elf_maps: dict[tuple[str, str], Map] = {}   # maps made from objects' maps sections
        self._labels = 0

    def label(self, stem: str) -> str:
        self._labels += 1
        return f"{stem}_{self._labels}"

    # --- pieces ---------------------------------------------------------------------------------

    def map_ref(self, maps: list, m: Map) -> int:
        for i, x in enumerate(maps):
            if x is m:
                return i
        maps.append(m)
        return len(maps) - 1

    def tail_call(self, maps: list, array: ProgArray) -> list:
        """``bpf_tail_call(ctx, &array, r3)``: the index is already in r3, the ctx comes from r6."""
        ref = self.map_ref(maps, array)
        return ([isa.make("mov", 1, CTX, reg=True)]
                + list(isa.lddw(TABLE, ref, isa.PSEUDO_MAP_FD))
                + [isa.make("call", imm=TAIL_CALL)])

    def act(self, act: Act, maps: list) -> list:
        """The code of an action: return, or tail-call and on fall-through the table's default
        (repeatedly: a table default may tail-call on)."""
        items: list = []
        while act.ret is None:
            table = self.policy.tables[act.tail_call]
            array = self.arrays[(table.name, None)]
            fall = self.label(f"fall_{table.name}")
            items += [isa.make("ldxdw", INDEX, CTX, emit.arg_offset(table.arg))]
            items += emit.jump("jge", INDEX, array.max_entries, fall)
            items += self.tail_call(maps, array)
            items.append(Label(fall))
            act = self.policy.table_default(table.name)
        return items + emit.ret(act.ret)

    # --- programs -------------------------------------------------------------------------------

    def handler(self, h: Handler) -> _Built:
        context = f"handler '{h.name}'"
        if h.kind == "asm":
            return self.asm_handler(h, context)
        if h.kind == "elf":
            return self.elf_handler(h, context)
        maps: list = []
        default = self.policy.handler_default(h)
        if not h.rules and default.ret is not None:
            return _Built(h.name, [h.loc] + emit.ret(default.ret), maps, h.loc, context)
        items: list = [h.loc, isa.make("mov", CTX, 1, reg=True)]
        for i, rule in enumerate(h.rules):
            nxt = f"rule_{i + 1}" if i + 1 < len(h.rules) else "default"
            items.append(Label(f"rule_{i}"))
            for cond in rule.conds:
                items += [cond.loc or rule.loc] + cond.to_bpf(nxt)
            items += [rule.then.loc or rule.loc] + self.act(rule.then, maps)
            if not rule.conds:
                # Always matches: what follows could never run (and the verifier refuses
                # unreachable code), so it is left out.
                return _Built(h.name, items, maps, h.loc, context)
        items += [Label("default"), default.loc or h.loc] + self.act(default, maps)
        return _Built(h.name, items, maps, h.loc, context)

    def asm_handler(self, h: Handler, context: str) -> _Built:
        from ..vm.asm import assemble
        visible: dict[str, Any] = {n: self.maps[n] for n in h.maps}
        visible.update({t.name: self.arrays[(t.name, None)]
                        for t in self.policy.tables.values() if t.index != "nr"})
        try:
            prog = assemble(h.asm or "", filename=None, prog_type=SECCOMP, maps=visible, name=h.name)
        except SysdispatchError as exc:
            loc = self.asm_location(h, exc.loc)
            raise PolicyError(exc.message, loc=loc, pc=exc.pc, context=context) from None
        source = tuple(self.asm_location(h, s) for s in (prog.source or ()))
        built = _Built(h.name, [], [], h.loc, context)
        built.program = Program.load(prog.insns, prog_type=SECCOMP, maps=prog.maps, name=h.name,
                                     source=source or None, labels=prog.labels)
        return built

    def elf_handler(self, h: Handler, context: str) -> _Built:
        from .elf import load_handler
        path = Path(h.elf or "")
        if not path.is_absolute():
            path = Path(self.policy.path or ".").parent / path
        tables = {t.name: self.arrays[(t.name, None)]
                  for t in self.policy.tables.values() if t.index != "nr"}
        try:
            insns, maps = load_handler(path, h.section or h.name, name=h.name,
                                       policy_maps=self.maps, declared=self.policy.maps,
                                       listed=h.maps, tables=tables, shared=self.elf_maps)
            prog = Program.load(insns, prog_type=SECCOMP, maps=maps, name=h.name,
                                source=[h.loc] * len(insns))
        except SysdispatchError as exc:
            raise PolicyError(exc.message, loc=h.loc, pc=exc.pc, context=context) from None
        for m in maps:   # the object's own maps become visible as the policy's, by name
            if m not in tables.values():
                self.maps.setdefault(m.name, m)
        built = _Built(h.name, [], [], h.loc, context)
        built.program = prog
        return built

    def asm_location(self, h: Handler, loc: Location | None) -> Location:
        """A location inside a handler's asm text, as a location in the policy file."""
        if loc is None or loc.line is None or h.asm_origin is None:
            return h.loc or Location(self.policy.path)
        line0, col0 = h.asm_origin
        line = line0 + loc.line - 1
        col = (col0 + loc.col - 1 if loc.line == 1 else loc.col) if loc.col else None
        return Location(self.policy.path, line, col)

    def entry(self) -> _Built:
        pol = self.policy
        table = pol.tables[pol.entry_table]
        maps: list = []
        loc = table.loc
        items: list = [loc, isa.make("mov", CTX, 1, reg=True),
                       isa.make("ldxw", 2, CTX, OFF_ARCH)]
        blocks: dict[int, list[str]] = {}
        for a in pol.arches:
            blocks.setdefault(_arch.audit_arch(a), []).append(a)
        for audit, arches in blocks.items():
            items += emit.jump("jeq", 2, audit, f"audit_{audit:08x}", wide=False)
        items.append(Goto(isa.make("ja"), "bad_arch"))   # (at the end: jumps only go forward)
        for a in pol.arches:
            self.map_ref(maps, self.arrays[(table.name, a)])   # map order = program order
        default = self.act(pol.table_default(table.name), maps)
        for audit, arches in blocks.items():
            items += [Label(f"audit_{audit:08x}"), isa.make("ldxw", INDEX, CTX, OFF_NR)]
            order = [a for a in arches if a != "x32"] + [a for a in arches if a == "x32"]
            if audit == AUDIT_ARCH_X86_64:
                items += self.x32_split("x86_64" in arches, "x32" in arches)
            for a in order:
                items.append(Label(f"nr_{a}"))
                if a == "x32":
                    items.append(isa.make("sub32", INDEX, imm=X32_SYSCALL_BIT, reg=False))
                items += self.tail_call(maps, self.arrays[(table.name, a)])
                items += [Label(f"empty_{a}")] + self.renamed(default)
        items += [Label("bad_arch")] + emit.ret(pol.bad_arch)
        return _Built(ENTRY, items, maps, loc, f"program '{ENTRY}'")

    def x32_split(self, x86_64: bool, x32: bool) -> list:
        """Send an AUDIT_ARCH_X86_64 call to the x86_64 or the x32 block by the x32 bit of nr
        (r3), or to bad_arch when the policy lacks that ABI. nr -1 counts as x86_64 (see
        layout.arch_of)."""
        minus_one = emit.jump("jeq", INDEX, layout.NR_NONE, "nr_x86_64" if x86_64 else "bad_arch",
                              wide=False)
        if x86_64:
            bit_set = "nr_x32" if x32 else "bad_arch"
            return minus_one + [Goto(isa.make("jset", INDEX, imm=X32_SYSCALL_BIT, reg=False),
                                     bit_set)]
        return minus_one + [isa.make("mov", SCRATCH, INDEX, reg=True),
                            isa.make("and", SCRATCH, imm=X32_SYSCALL_BIT, reg=False)] + \
            emit.jump("jeq", SCRATCH, 0, "bad_arch")

    def renamed(self, items: list) -> list:
        """A copy of generated code with fresh labels (the entry repeats its default per arch)."""
        names = {it.name: self.label(it.name.rsplit("_", 1)[0]) for it in items
                 if isinstance(it, Label)}
        out = []
        for it in items:
            if isinstance(it, Label):
                out.append(Label(names[it.name]))
            elif isinstance(it, Goto) and it.target in names:
                out.append(Goto(it.insn, names[it.target]))
            else:
                out.append(it)
        return out

    def finish(self, built: _Built, verify: bool) -> Any:
        prog = built.program
        if prog is None:
            linked = emit.link(built.items)
            prog = Program.load(linked.insns, prog_type=SECCOMP, maps=built.maps,
                                name=built.name, source=linked.source, labels=linked.labels)
        return verify_program(prog, built.context) if verify else prog
