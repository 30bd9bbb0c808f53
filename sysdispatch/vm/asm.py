"""The eBPF assembler: program text in two syntaxes -> a loaded :class:`Program`.

Two syntaxes, chosen per line, may be mixed in one file:

* LLVM / kernel syntax, as ``llvm-objdump -d`` and bpftool print it: ``r0 = *(u32 *)(r1 + 0)``,
  ``if r2 == 59 goto +3``, ``lock *(u64 *)(r10 - 8) += r1``, ``r1 = map[conns] ll``.
* The bpf_conformance (ubpf) syntax: ``ldxw %r0, [%r1+4]``, ``jeq %r1, 59, +3``,
  ``lock fetch add32 [%r10-8], %r1``: the ``OpSpec.name`` mnemonics of :mod:`~sysdispatch.vm.isa`
  plus the aliases ``add64``..., ``swap16``... and the spaced ``lock`` forms.

Both accept labels (``name:`` alone or before an instruction), comments (``;``, ``#``, ``//``),
and what :func:`~sysdispatch.vm.disasm.disassemble` adds around an instruction (the ``N:`` pc, raw
bytes, the ``<target>`` note), so a disassembly re-assembles to the same bytes. Which forms exist
comes from ``isa.SPECS``, how each syntax spells them from :mod:`~sysdispatch.vm.asm_syntax`.
Every error is an :class:`AsmError` naming ``file:line:col`` of the offending token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import AsmError, EncodingError, Location
from . import isa
from .asm_syntax import (ATOMIC_BY_OPERATOR, ATOMIC_FETCH_PREFIX, ATOMIC_OPERATORS,
                         ALU_BY_OPERATOR, COMMENT, FORMS, FUNC_FORMS, HELPERS, JMP_BY_OPERATOR,
                         LABEL, MAP_SOURCES, MNEMONICS, NOTE, OPERANDS, PC_PREFIX, SSIZES,
                         TARGET_FIELD, USIZES, Cursor, Tok, found, is_reg, map_names, tokens)
from .isa import PSEUDO_IMM64, Insn, OpSpec, signed32
from .program import GENERIC, Program, ProgType


@dataclass(slots=True)
class _Ref:
    """A label used as a jump or call target, resolved once every label is known."""

    index: int   # which parsed instruction
    field: str   # "off" or "imm"
    name: str
    tok: Tok


@dataclass
class Assembly:
    """What :func:`parse` found: slots, their source locations, labels, and the maps referenced."""

    insns: list[Insn] = field(default_factory=list)
    source: list[Location] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)   # pc -> first label naming it
    maps: tuple[Any, ...] = ()


# --- the assembler ------------------------------------------------------------------------------


class _Assembler:
    def __init__(self, filename: str | None, maps: Mapping[str, Any] | Sequence[Any]) -> None:
        self.filename = filename
        self.maps = tuple(maps.values() if isinstance(maps, Mapping) else maps)
        self.map_names = map_names(maps)
        self.out = Assembly(maps=self.maps)
        self.label_pc: dict[str, tuple[int, int]] = {}   # name -> (pc, line)
        self.refs: list[_Ref] = []
        self.pending: list[tuple[OpSpec, dict[str, int]]] = []  # per instruction, before fixups
        self.first_exit: int | None = None

    # --- driver ---

    def run(self, text: str) -> Assembly:
        pcs: list[int] = []
        pc = 0
        for lineno, line in enumerate(text.splitlines(), 1):
            loc = Location(self.filename, lineno, 1)
            m = COMMENT.search(line)
            end = m.start() if m else len(line)
            note = NOTE.search(line, 0, end)
            if note:
                end = note.start()
            pos = 0
            m = PC_PREFIX.match(line, 0, end)
            if m:
                pos = m.end()
            while (m := LABEL.match(line, pos, end)) is not None:
                self._define(m.group(1), pc, Location(self.filename, lineno, m.start(1) + 1))
                pos = m.end()
            toks = tokens(line, pos, end, loc)
            if not toks:
                continue
            loc = Location(self.filename, lineno, toks[0].col)
            cur = Cursor(toks, end + 1, loc)
            spec, fields = self._insn(cur, len(self.pending))
            cur.done()
            if spec.kind == "exit" and self.first_exit is None:
                self.first_exit = pc
            self.pending.append((spec, fields))
            pcs.append(pc)
            width = 2 if spec.wide else 1
            self.out.source.extend([loc] * width)
            pc += width
        if not self.pending:
            raise AsmError("no instructions", loc=Location(self.filename))
        self._resolve(pcs)
        for (spec, fields), at in zip(self.pending, pcs):
            try:
                self.out.insns.extend(_encode(spec, fields))
            except EncodingError as exc:   # pre-checked ranges make this a bug, but say where
                raise AsmError(exc.message, loc=self.out.source[at]) from None
        return self.out

    def _define(self, name: str, pc: int, loc: Location) -> None:
        if name in self.label_pc:
            first = self.label_pc[name][1]
            raise AsmError(f"duplicate label '{name}' (first defined at line {first})", loc=loc)
        self.label_pc[name] = (pc, loc.line or 0)
        self.out.labels.setdefault(pc, name)

    def _resolve(self, pcs: list[int]) -> None:
        loc = Location(self.filename)
        for ref in self.refs:
            if ref.name in self.label_pc:
                target = self.label_pc[ref.name][0]
            elif ref.name == "exit" and self.first_exit is not None:
                target = self.first_exit   # the conformance suite's implicit label
            else:
                helper = " (nor a helper name)" if self.pending[ref.index][0].kind == "local_call" \
                    else ""
                raise AsmError(f"undefined label '{ref.name}'{helper}",
                               loc=Location(loc.file, self.out.source[pcs[ref.index]].line,
                                            ref.tok.col))
            delta = target - pcs[ref.index] - 1
            bits = 16 if ref.field == "off" else 32
            if not -(1 << bits - 1) <= delta < 1 << bits - 1:
                where = self.out.source[pcs[ref.index]]
                raise AsmError(f"label '{ref.name}' is {delta} slots away, out of range for the "
                               f"{bits}-bit {'offset' if bits == 16 else 'immediate'}",
                               loc=Location(where.file, where.line, ref.tok.col))
            self.pending[ref.index][1][ref.field] = delta

    # --- one instruction, either syntax ---

    def _insn(self, c: Cursor, index: int) -> tuple[OpSpec, dict[str, int]]:
        first = c.peek()
        word = first.text.lower()
        if word == "exit":
            c.take()
            return FORMS["exit", "exit", False, 0, True], {}
        if word in ("call", "callx"):
            return self._call(c, index)
        if word == "lock" and not c.at("*", k=1):
            return self._conformance_lock(c, index)
        if word in ("if", "goto", "gotol", "lock") or first.text == "*" or is_reg(first):
            return self._llvm(c, index)
        return self._conformance(c, index)

    def _call(self, c: Cursor, index: int) -> tuple[OpSpec, dict[str, int]]:
        word = c.take().text.lower()
        t = c.peek()
        if t is None:
            raise c.error(f"'{word}' needs a target: a helper id or name, a register or a label")
        if word == "callx" or is_reg(t):
            return FORMS["callx", "callx", True, 0, True], {"dst": c.reg()[0]}
        local = FORMS["local_call", "call", False, 0, True]
        if t.text == "local" and c.peek(1) is not None:          # conformance: call local f
            c.take()
            return local, self._target(c, index, "imm")
        if t.text == "pc" and c.at("+", "-", k=1):              # bpftool: call pc+3
            c.take()
            return local, self._target(c, index, "imm")
        if t.kind == "name" and t.text.lower() not in HELPERS:
            return local, self._target(c, index, "imm")
        return FORMS["call", "call", False, 0, True], {"imm": self._helper(c)}

    def _helper(self, c: Cursor) -> int:
        t = c.peek()
        if t is not None and t.kind == "name":
            c.take()
            if t.text.lower() not in HELPERS:
                raise c.error(f"unknown helper '{t.text}'", t)
            return HELPERS[t.text.lower()]
        return c.imm32("helper id")

    # --- conformance syntax ---

    def _conformance_lock(self, c: Cursor, index: int) -> tuple[OpSpec, dict[str, int]]:
        lock = c.take()
        words = []
        while (t := c.peek()) is not None and t.kind == "name":
            words.append(c.take().text.lower())
        if not words:
            raise c.error("'lock' needs an operation, e.g. 'lock add [%r10-8], %r1'", c.peek())
        shown = " ".join(["lock"] + words)
        return self._operands(c, index, "lock_" + "_".join(words), lock, shown)

    def _conformance(self, c: Cursor, index: int) -> tuple[OpSpec, dict[str, int]]:
        t = c.take()
        return self._operands(c, index, t.text.lower(), t, t.text)

    def _operands(self, c: Cursor, index: int, mnemonic: str, at: Tok,
                  shown: str) -> tuple[OpSpec, dict[str, int]]:
        forms = MNEMONICS.get(mnemonic)
        if forms is None:
            raise c.error(f"unknown mnemonic '{shown}'", at)
        spec = forms[0]
        shapes = OPERANDS[spec.kind]
        groups = _split_commas(c)
        if len(groups) != len(shapes):
            raise c.error(f"'{shown}' takes {len(shapes)} operand{'s' * (len(shapes) != 1)}"
                          f"{' (' + ', '.join(shapes) + ')' if shapes else ''}, got {len(groups)}",
                          at)
        fields: dict[str, int] = {}
        for shape, group in zip(shapes, groups):
            g = Cursor(group, group[-1].col + len(group[-1].text), c.loc)
            if shape in ("dst", "src"):
                fields[shape] = g.reg("r")[0]
            elif shape == "src|imm":
                if is_reg(g.peek()):
                    spec = next(s for s in forms if s.reg)
                    fields["src"] = g.reg("r")[0]
                else:
                    spec = next(s for s in forms if not s.reg)
                    fields["imm"] = g.imm32(strict_decimal=True)
            elif shape == "target":
                fields.update(self._target(g, index, TARGET_FIELD[spec.kind]))
            elif shape == "helper":
                fields["imm"] = self._helper(g)
            elif shape == "imm":
                fields["imm"] = g.imm32(strict_decimal=True)
            elif shape == "imm64":
                fields.update(self._lddw_value(g))
            else:                                   # "[src+off]" / "[dst+off]"
                base, off = self._bracket_mem(g)
                fields["src" if shape.startswith("[src") else "dst"] = base
                fields["off"] = off
            g.done()
        return spec, fields

    def _bracket_mem(self, c: Cursor) -> tuple[int, int]:
        t = c.peek()
        if not c.at("["):
            raise c.error(f"expected a memory operand [%rN+off], found {found(t)}", t)
        c.take()
        reg = c.reg("r")[0]
        off = 0
        if c.at("+", "-"):
            off = c.off16()
        c.expect("]")
        return reg, off

    # --- LLVM syntax ---

    def _llvm(self, c: Cursor, index: int) -> tuple[OpSpec, dict[str, int]]:
        t = c.peek()
        if t.text in ("goto", "gotol"):
            c.take()
            kind = "ja" if t.text == "goto" else "ja32"
            spec = FORMS[kind, "ja", False, 0, kind == "ja"]
            return spec, self._target(c, index, TARGET_FIELD[kind])
        if t.text == "if":
            return self._llvm_if(c, index)
        if t.text == "lock":
            c.take()
            size, base, off = self._deref(c)
            op_tok = c.take("an operator")
            op = ATOMIC_BY_OPERATOR.get(op_tok.text)
            if op is None:
                raise c.error(f"unknown atomic operator '{op_tok.text}' "
                              f"(expected one of {' '.join(ATOMIC_OPERATORS.values())})", op_tok)
            return self._atomic(c, op, size, t), {"dst": base, "off": off, "src": c.reg()[0]}
        if t.text == "*":
            size, base, off = self._deref(c)
            c.expect("=")
            if is_reg(c.peek()):
                return FORMS["stx", "stx", False, size, False], {
                    "dst": base, "off": off, "src": c.reg()[0]}
            return FORMS["st", "st", False, size, False], {
                "dst": base, "off": off, "imm": c.imm32()}
        dst, cls = c.reg()
        op_tok = c.take("an operator")
        if op_tok.text == "=":
            return self._llvm_assign(c, dst, cls, op_tok)
        op = ALU_BY_OPERATOR.get(op_tok.text)
        if op is None:
            raise c.error(f"unknown operator '{op_tok.text}'", op_tok)
        return self._alu(c, op, dst, cls)

    def _alu(self, c: Cursor, op: str, dst: int, cls: str) -> tuple[OpSpec, dict[str, int]]:
        kind, is64 = ("alu", True) if cls == "r" else ("alu32", False)
        t = c.peek()
        if is_reg(t):
            return FORMS[kind, op, True, 0, is64], {"dst": dst, "src": c.reg(cls)[0]}
        return FORMS[kind, op, False, 0, is64], {"dst": dst, "imm": c.imm32()}

    def _llvm_assign(self, c: Cursor, dst: int, cls: str,
                     eq: Tok) -> tuple[OpSpec, dict[str, int]]:
        t = c.peek()
        if t is None:
            raise c.error("expected a value after '='")
        if t.text == "*":                                       # r0 = *(u32 *)(r1 + 4)
            signed, size, base, off = self._deref(c, allow_signed=True)
            kind = "ldxs" if signed else "ldx"
            return FORMS[kind, kind, False, size, False], {"dst": dst, "src": base, "off": off}
        if t.text == "-" and is_reg(c.peek(1)):   # r0 = -r0
            c.take()
            self._same_reg(c, dst, cls)
            return FORMS["neg", "neg", False, 0, cls == "r"], {"dst": dst}
        if t.text == "(":                                       # r0 = (s8)r1
            c.take()
            w = c.take("a cast like (s8)")
            bits = {"s8": 8, "s16": 16, "s32": 32}.get(w.text)
            spec = FORMS.get(("movsx", "movsx", True, bits or 0, cls == "r"))
            if spec is None:
                raise c.error(f"no sign-extending move from '{w.text}' to a "
                              f"{64 if cls == 'r' else 32}-bit register", w)
            c.expect(")")
            return spec, {"dst": dst, "src": c.reg(cls)[0]}
        if t.kind == "name" and (m := re.fullmatch(r"(be|le|bswap)(16|32|64)", t.text)):
            c.take()                                            # r0 = be16 r0
            self._same_reg(c, dst, None)
            kind = "bswap" if m.group(1) == "bswap" else "end"
            return FORMS[kind, m.group(1), False, int(m.group(2)), kind == "bswap"], {"dst": dst}
        if t.kind == "name" and t.text.startswith(ATOMIC_FETCH_PREFIX + "fetch_"):
            return self._llvm_fetch(c, dst, cls)
        if t.kind == "name" and t.text in FUNC_FORMS:
            return self._llvm_xchg(c, dst, cls)
        if t.kind == "name" and t.text in MAP_SOURCES or (
                t.kind == "num" or t.text in ("-", "+")) and c.toks[-1].text == "ll":
            if cls != "r":
                raise c.error("a 64-bit load ('ll') needs a 64-bit register rN", eq)
            fields = self._lddw_value(c)
            c.expect("ll")
            fields["dst"] = dst
            return FORMS["lddw", "lddw", False, 8, False], fields
        return self._alu(c, "mov", dst, cls)

    def _llvm_fetch(self, c: Cursor, dst: int, cls: str) -> tuple[OpSpec, dict[str, int]]:
        t = c.take()
        op = t.text.removeprefix(ATOMIC_FETCH_PREFIX)           # fetch_add, ...
        c.expect("(")
        c.expect("(")
        size_tok = c.take("a type like u64")
        size = USIZES.get(size_tok.text)
        c.expect("*")
        c.expect(")")
        base, off = self._paren_mem(c)
        c.expect(",")
        self._same_reg(c, dst, cls)
        c.expect(")")
        return self._atomic(c, op, size, size_tok), {"dst": base, "off": off, "src": dst}

    def _llvm_xchg(self, c: Cursor, dst: int, cls: str) -> tuple[OpSpec, dict[str, int]]:
        t = c.take()
        op, size = FUNC_FORMS[t.text]
        c.expect("(")
        base = c.reg("r")[0]
        off = c.off16() if c.at("+", "-") else 0
        c.expect(",")
        if op == "cmpxchg":
            if dst != 0:
                raise c.error("cmpxchg compares with and returns in r0", t)
            self._same_reg(c, 0, cls)
            c.expect(",")
            src = c.reg()[0]
        else:
            self._same_reg(c, dst, cls)
            src = dst
        c.expect(")")
        return self._atomic(c, op, size, t), {"dst": base, "off": off, "src": src}

    def _atomic(self, c: Cursor, op: str, size: int | None, at: Tok) -> OpSpec:
        spec = FORMS.get(("atomic", op, True, size or 0, False))
        if spec is None:
            raise c.error(f"no atomic '{op}' on {size or '?'}-byte memory", at)
        return spec

    def _llvm_if(self, c: Cursor, index: int) -> tuple[OpSpec, dict[str, int]]:
        c.take()
        dst, cls = c.reg()
        op_tok = c.take("a comparison")
        op = JMP_BY_OPERATOR.get(op_tok.text)
        if op is None:
            raise c.error(f"unknown comparison '{op_tok.text}'", op_tok)
        kind = "jcc" if cls == "r" else "jcc32"
        t = c.peek()
        if is_reg(t):
            spec, fields = FORMS[kind, op, True, 0, cls == "r"], {"src": c.reg(cls)[0]}
        else:
            spec, fields = FORMS[kind, op, False, 0, cls == "r"], {"imm": c.imm32()}
        c.expect("goto")
        fields["dst"] = dst
        fields.update(self._target(c, index, "off"))
        return spec, fields

    def _deref(self, c: Cursor, allow_signed: bool = False):
        """``*(u32 *)(r1 + 4)`` -> (size, base, off); with allow_signed also ``(s16 *)``."""
        c.expect("*")
        c.expect("(")
        t = c.take("a type like u32")
        signed = allow_signed and t.text in SSIZES
        size = (SSIZES if signed else USIZES).get(t.text)
        if size is None:
            raise c.error(f"unknown memory type '{t.text}' (expected u8, u16, u32, u64"
                          f"{', s8, s16, s32' if allow_signed else ''})", t)
        c.expect("*")
        c.expect(")")
        base, off = self._paren_mem(c)
        return (signed, size, base, off) if allow_signed else (size, base, off)

    def _paren_mem(self, c: Cursor) -> tuple[int, int]:
        c.expect("(")
        base = c.reg("r")[0]
        off = c.off16() if c.at("+", "-") else 0
        c.expect(")")
        return base, off

    def _same_reg(self, c: Cursor, want: int, cls: str | None) -> None:
        t = c.peek()
        reg, _ = c.reg(cls)
        if reg != want:
            raise c.error(f"this form needs the same register on both sides, found '{t.text}'", t)

    # --- operands shared by both syntaxes ---

    def _target(self, c: Cursor, index: int, fld: str) -> dict[str, int]:
        """A jump/call target: ``+N``/``-N``/``N`` slots after the next, or a label."""
        t = c.peek()
        if t is not None and t.kind == "name":
            c.take()
            self.refs.append(_Ref(index, fld, t.text, t))
            return {fld: 0}
        if fld == "off":
            return {fld: c.off16("jump offset")}
        value, _, tok, written = c.number("a jump target (+N, -N or a label)")
        if not -0x80000000 <= value <= 0x7FFFFFFF:
            raise c.error(f"jump target {written} out of range for 32 bits", tok)
        return {fld: value}

    def _lddw_value(self, c: Cursor) -> dict[str, int]:
        """The 64-bit operand of lddw: a number, or ``map[NAME]`` / ``map_value[NAME] + N``."""
        t = c.peek()
        if t is not None and t.text in MAP_SOURCES:
            c.take()
            c.expect("[")
            idx = self._map_index(c)
            c.expect("]")
            extra = 0
            if c.at("+", "-"):
                extra = c.imm32("an offset into the map value")
            return {"src": MAP_SOURCES[t.text], "imm": idx, "imm2": extra}
        value, _, tok, written = c.number("a 64-bit immediate")
        if not -(1 << 63) <= value < 1 << 64:
            raise c.error(f"immediate {written} out of range for 64 bits", tok)
        return {"src": PSEUDO_IMM64, "imm64": value}

    def _map_index(self, c: Cursor) -> int:
        t = c.peek()
        if t is not None and t.kind == "name":
            c.take()
            if t.text not in self.map_names:
                known = ", ".join(n for n in self.map_names if n) or "none"
                raise c.error(f"unknown map '{t.text}' (maps: {known})", t)
            return self.map_names.index(t.text)
        value, _, tok, _ = c.number("a map name or index")
        if not 0 <= value < len(self.maps):
            raise c.error(f"no map {value}: the program has {len(self.maps)} map"
                          f"{'s' * (len(self.maps) != 1)}", tok)
        return value


def _split_commas(c: Cursor) -> list[list[Tok]]:
    rest = c.toks[c.i:]
    c.i = len(c.toks)
    if not rest:
        return []
    groups: list[list[Tok]] = [[]]
    for t in rest:
        if t.text == ",":
            groups.append([])
        else:
            groups[-1].append(t)
    commas = [t for t in rest if t.text == ","]
    for i, g in enumerate(groups):
        if not g:   # point at the comma before the missing operand (after it, for the first)
            raise c.error("empty operand", commas[max(i - 1, 0)])
    return groups


def _encode(spec: OpSpec, fields: dict[str, int]) -> tuple[Insn, ...]:
    """The slot(s) of one instruction: the parsed fields plus the spec's fixed ones."""
    f = {"dst": 0, "src": 0, "off": 0, "imm": 0} | {k: v for k, v in fields.items()
                                                    if k in isa.FIELDS}
    f.update(dict(spec.fixed))
    if spec.wide:
        if "imm64" in fields:
            return isa.lddw(f["dst"], fields["imm64"], f["src"])
        return (Insn(spec.code, f["dst"], f["src"], 0, f["imm"]),
                Insn(0, 0, 0, 0, signed32(fields.get("imm2", 0))))
    return (Insn(spec.code, f["dst"], f["src"], f["off"], f["imm"]),)


# --- public API ---------------------------------------------------------------------------------


def parse(text: str, *, filename: str | None = None,
          maps: Mapping[str, Any] | Sequence[Any] = (), origin: tuple[int, int] = (1, 1),
          ) -> Assembly:
    """Assemble ``text`` into slots without the load-time checks of :meth:`Program.load`.

    For tools and tests that want the bytes of single instructions (any helper id, any jump
    offset); programs should come from :func:`assemble`.
    """
    line, col = origin   # text embedded in a bigger file: shift so locations are that file's
    return _Assembler(filename, maps).run("\n" * (line - 1) + " " * (col - 1) + text)


def assemble(text: str, *, filename: str | None = None, prog_type: ProgType = GENERIC,
             maps: Mapping[str, Any] | Sequence[Any] = (), helpers: frozenset[int] | None = None,
             name: str = "prog", origin: tuple[int, int] = (1, 1)) -> Program:
    """Assemble ``text`` and load it: a :class:`Program` whose errors point into ``text``.

    ``maps`` is a sequence (``map[0]``, or ``map[NAME]`` for maps with a ``name``) or a mapping
    from name to map (``map[NAME]``); ``helpers`` overrides the program type's helper whitelist.
    ``origin`` is the (line, column) where ``text`` starts in ``filename``, for text embedded in
    another file (a policy's asm handler): locations then count in that file.
    """
    out = parse(text, filename=filename, maps=maps, origin=origin)
    return Program.load(out.insns, prog_type=prog_type, maps=out.maps, name=name,
                        source=out.source, labels=out.labels, helpers=helpers)
