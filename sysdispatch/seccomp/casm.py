"""The assembler of the classic-filter text syntax (see :mod:`sysdispatch.seccomp.cfilter` for
the syntax and the disassembler it inverts).

Two passes: parse every line into a pending instruction (labels, ``goto`` targets and syscall
names still symbolic), link the jumps, then run the same path analysis the disassembler uses
(:func:`cfilter.analyse`) to learn each comparison's architecture and resolve syscall names on it.
That shared inference is what makes bytes -> text -> bytes exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import AsmError, Location, SysdispatchError
from ..vm import cbpf
from ..vm.cbpf import CInsn, OPS
from . import actions
from .arch import AUDIT_BY_SYMBOL, X86_64, Arch, by_name
from .cfilter import (_ALU_SYM, _FIELD_OFFSETS, OPS_BY_KIND, _used_fields, analyse, check,
                      resolve_syscall_symbol)
from .data import OFF_ARGS, OFF_IP

_PREFIX = re.compile(r"\s*\d+:\s*(?:0x[0-9a-fA-F]+\s+0x[0-9a-fA-F]+\s+0x[0-9a-fA-F]+\s+"
                     r"0x[0-9a-fA-F]+\s+)?")
_LABEL = re.compile(r"\s*([A-Za-z_.][\w.]*)\s*:(?!\S)")
_IDENT = re.compile(r"[A-Za-z_][\w]*(?::[A-Za-z_]\w*)?$")
_TARGET = re.compile(r"(\d+|[A-Za-z_.][\w.]*)$")
_IF = re.compile(r"if\s*\((?P<cond>.*)\)\s*goto\s+(?P<t>\S+)(?:\s+else\s+goto\s+(?P<f>\S+))?$")
_COND = re.compile(r"A\s*(?P<op>==|!=|>=|<=|>|<|&)\s*(?P<v>.+)$")
_NOTSET = re.compile(r"!\s*\(\s*A\s*&\s*(?P<v>.+?)\s*\)$")
_ALU = re.compile(r"A\s*(?P<op>\+|-|\*|/|%|&|\||\^|<<|>>)=\s*(?P<v>.+)$")
_ASSIGN = re.compile(r"(?P<dst>A|X|M\s*\[\s*(?P<m>[^\]]*)\])\s*=\s*(?P<rhs>.+)$")
_MEM = re.compile(r"M\s*\[\s*(?P<m>[^\]]*)\]$")
_ARG_FIELD = re.compile(r"args\s*\[\s*(\d+)\s*\](\s*>>\s*32)?$")
_IP_FIELD = re.compile(r"instruction_pointer(\s*>>\s*32)?$")

_EXTRA = re.compile(r"\{(?P<f>[^{}]*)\}\s*$")
_LIMITS = {"jt": 0xFF, "jf": 0xFF, "k": 0xFFFFFFFF}

_ALU_BY_SYM = {v: k for k, v in _ALU_SYM.items()}
# (classic op, text was the inverse form)
_CMP_BY_SYM = {"==": ("jeq", False), "!=": ("jeq", True), ">": ("jgt", False),
               "<=": ("jgt", True), ">=": ("jge", False), "<": ("jge", True), "&": ("jset", False)}


@dataclass
class _Pending:
    """An instruction being assembled: k may still be a syscall name."""

    code: int
    loc: Location
    jt: int | str = 0
    jf: int | str = 0
    k: int | str = 0
    k_loc: Location | None = None
    jt_loc: Location | None = None
    jf_loc: Location | None = None
    extra: dict[str, int] = field(default_factory=dict)  # unused fields given as {k=0x7}


class _Line:
    def __init__(self, text: str, filename: str | None, lineno: int, start: int) -> None:
        self.text, self.filename, self.lineno, self.start = text, filename, lineno, start

    def loc(self, fragment: str | None = None) -> Location:
        col = self.start
        if fragment:
            i = self.text.find(fragment, self.start - 1)
            if i >= 0:
                col = i + 1
        return Location(self.filename, self.lineno, col)

    def error(self, message: str, fragment: str | None = None) -> AsmError:
        return AsmError(message, loc=self.loc(fragment))


def assemble(text: str, *, filename: str | None = None, arch: Arch | None = None,
             default_arch: Arch = X86_64) -> tuple[CInsn, ...]:
    """Assemble filter text (see the module docstring) into instructions.

    Syscall names resolve on the architecture a path has tested for, else on ``arch``, else
    the text's ``.arch`` line, else ``default_arch``. Errors are :class:`AsmError` with
    file:line:col; the result has passed :func:`check`, whose errors carry the location of the
    offending line.
    """
    pend: list[_Pending] = []
    labels: dict[str, int] = {}
    text_arch: Arch | None = None
    for lineno, raw_line in enumerate(text.splitlines(), 1):
        body = raw_line.split("#", 1)[0].rstrip()
        if not body.strip():
            continue
        start = len(body) - len(body.lstrip()) + 1
        line = _Line(body, filename, lineno, start)
        stripped = body.strip()
        if stripped.startswith(".arch"):
            name = stripped[5:].strip()
            try:
                text_arch = by_name(name)
            except ValueError as exc:
                raise line.error(str(exc), name) from None
            continue
        m = _PREFIX.match(body)
        pos = m.end() if m and m.group(0).strip() else 0
        while True:
            lm = _LABEL.match(body, pos)
            if not lm or lm.group(1) in ("if",):
                break
            name = lm.group(1)
            if name in labels:
                raise line.error(f"duplicate label '{name}'", name)
            labels[name] = len(pend)
            pos = lm.end()
        stmt = body[pos:].strip()
        if not stmt:
            continue
        line.start = body.index(stmt, pos) + 1
        extra = _EXTRA.search(stmt)
        fields: dict[str, int] = {}
        if extra:
            fields = _parse_extra(extra.group("f"), line)
            stmt = stmt[:extra.start()].rstrip()
        p = _parse_statement(stmt, line)
        unused = set(fields) & set(_used_fields(OPS[p.code]))
        if unused:
            raise line.error(f"field {sorted(unused)[0]} is an operand of this instruction; "
                             f"only unused fields go in {{...}}", extra.group(0).strip())
        p.extra = fields
        pend.append(p)
    if not pend:
        raise AsmError("no instructions", loc=Location(filename) if filename else None)
    default = arch or text_arch or default_arch
    insns = _link(pend, labels)
    where = [p.loc for p in pend]
    try:
        cbpf.check(insns)  # structure first: the analysis assumes jumps stay inside
    except SysdispatchError as exc:
        if exc.pc is not None and 0 <= exc.pc < len(where):
            raise exc.at(loc=where[exc.pc])
        raise
    infos = analyse(insns)
    final = []
    for pc, (p, ins, info) in enumerate(zip(pend, insns, infos)):
        if isinstance(p.k, str):
            on = info.arch or default
            nr = resolve_syscall_symbol(p.k, on)
            if nr is None:
                raise AsmError(f"unknown syscall '{p.k}' on {_qual_arch(p.k, on)}", loc=p.k_loc)
            ins = CInsn(ins.code, ins.jt, ins.jf, nr & 0xFFFFFFFF)
        final.append(ins)
    try:
        check(final)
    except SysdispatchError as exc:
        if exc.pc is not None and 0 <= exc.pc < len(where):
            raise exc.at(loc=where[exc.pc])
        raise
    return tuple(final)


def _qual_arch(sym: str, arch: Arch) -> str:
    qual = sym.rpartition(":")[0]
    return qual or arch.name


def _link(pend: list[_Pending], labels: dict[str, int]) -> list[CInsn]:
    out = []
    for pc, p in enumerate(pend):
        jt, jf, k = p.jt, p.jf, p.k
        op = OPS[p.code]
        if op.kind == "ja":
            k, jt = _offset(pc, jt, labels, p.jt_loc, limit=None), 0
        elif op.kind == "jcc":
            jt = _offset(pc, jt, labels, p.jt_loc, limit=255)
            jf = _offset(pc, jf, labels, p.jf_loc, limit=255)
        fields = {"jt": jt, "jf": jf, "k": 0 if isinstance(k, str) else k, **p.extra}
        out.append(CInsn(p.code, fields["jt"], fields["jf"], fields["k"]))
    return out


def _offset(pc: int, target: int | str, labels: dict[str, int], loc: Location | None,
            limit: int | None) -> int:
    """``target`` is a relative offset already (int) or an absolute pc / label (str)."""
    if isinstance(target, int):
        return target
    if target.isdigit():
        dest = int(target, 10)
    elif target in labels:
        dest = labels[target]
    else:
        raise AsmError(f"undefined label '{target}'", loc=loc)
    off = dest - pc - 1
    if off < 0:
        raise AsmError(f"backward jump to {dest} from instruction {pc}: classic BPF jumps only "
                       f"forward", loc=loc)
    if limit is not None and off > limit:
        raise AsmError(f"conditional jump to {dest} is {off} instructions ahead, more than "
                       f"{limit}; jump to an unconditional 'goto' instead", loc=loc)
    return off


def _parse_statement(stmt: str, line: _Line) -> _Pending:
    loc = line.loc()
    m = _IF.match(stmt)
    if m:
        return _parse_if(m, line)
    if stmt.startswith("goto"):
        t = stmt[4:].strip()
        if not _TARGET.match(t):
            raise line.error(f"bad jump target '{t}'", t or None)
        return _Pending(cbpf.JA, loc, jt=t, jt_loc=line.loc(t))  # jt holds the target here
    if stmt.startswith("return"):
        v = stmt[6:].strip()
        if v == "A":
            return _Pending(cbpf.RET | cbpf.RVAL_A, loc)
        return _Pending(cbpf.RET, loc, k=_ret_value(v, line), k_loc=line.loc(v))
    m = _ALU.match(stmt)
    if m:
        op = _ALU_BY_SYM[m.group("op")]
        v = m.group("v").strip()
        reg = v == "X"
        code = _code("alu", op, reg)
        k = 0 if reg else _const(v, line, names=False)
        return _Pending(code, loc, k=k)
    m = _ASSIGN.match(stmt)
    if m:
        return _parse_assign(m, line)
    raise line.error(f"cannot parse '{stmt}'", stmt)


def _code(kind: str, op: str, reg: bool) -> int:
    for code, o in OPS.items():
        if o.kind == kind and o.op == op and o.reg == reg:
            return code
    raise KeyError((kind, op, reg))  # pragma: no cover - the table has every combination


def _parse_if(m: re.Match, line: _Line) -> _Pending:
    cond = m.group("cond").strip()
    t, f = m.group("t"), m.group("f")
    n = _NOTSET.match(cond)
    if n:
        name, inverse, v = "jset", True, n.group("v").strip()
    else:
        c = _COND.match(cond)
        if not c:
            raise line.error(f"bad condition '{cond}' (expected e.g. 'A == 0x1', 'A & X', "
                             f"'!(A & 0x4)')", cond)
        name, inverse = _CMP_BY_SYM[c.group("op")]
        v = c.group("v").strip()
    reg = v == "X"
    p = _Pending(_code("jcc", name, reg), line.loc())
    if not reg:
        p.k = _const(v, line, names=True)
        p.k_loc = line.loc(v)
    for tgt in (t, f):
        if tgt is not None and not _TARGET.match(tgt):
            raise line.error(f"bad jump target '{tgt}'", tgt)
    # The jump taken when the written condition holds, and the one taken otherwise.
    yes, yes_loc = t, line.loc(t)
    no, no_loc = (f, line.loc(f)) if f is not None else (0, None)
    if inverse:
        yes, yes_loc, no, no_loc = no, no_loc, yes, yes_loc
    p.jt, p.jt_loc, p.jf, p.jf_loc = yes, yes_loc, no, no_loc
    return p


def _parse_assign(m: re.Match, line: _Line) -> _Pending:
    dst, rhs = m.group("dst"), m.group("rhs").strip()
    loc = line.loc()
    if dst.startswith("M"):
        k = _mem_index(m.group("m"), line)
        if rhs not in ("A", "X"):
            raise line.error(f"M[{k}] can only be set from A or X, not '{rhs}'", rhs)
        return _Pending(OPS_BY_KIND["st" if rhs == "A" else "stx"], loc, k=k)
    mm = _MEM.match(rhs)
    if dst == "A":
        if rhs in _FIELD_OFFSETS or _ARG_FIELD.match(rhs) or _IP_FIELD.match(rhs):
            off = _field_offset(rhs, line)
            return _Pending(OPS_BY_KIND["ld_abs_w"], loc, k=off)
        if rhs == "X":
            return _Pending(OPS_BY_KIND["txa"], loc)
        if rhs == "len":
            return _Pending(OPS_BY_KIND["ld_len"], loc)
        if rhs == "-A":
            return _Pending(OPS_BY_KIND["neg"], loc)
        if mm:
            return _Pending(OPS_BY_KIND["ld_mem"], loc, k=_mem_index(mm.group("m"), line))
        return _Pending(OPS_BY_KIND["ld_imm"], loc, k=_const(rhs, line, names=False))
    if rhs == "A":
        return _Pending(OPS_BY_KIND["tax"], loc)
    if rhs == "len":
        return _Pending(OPS_BY_KIND["ldx_len"], loc)
    if mm:
        return _Pending(OPS_BY_KIND["ldx_mem"], loc, k=_mem_index(mm.group("m"), line))
    return _Pending(OPS_BY_KIND["ldx_imm"], loc, k=_const(rhs, line, names=False))


def _field_offset(rhs: str, line: _Line) -> int:
    norm = re.sub(r"\s+", " ", rhs.replace("[ ", "[").replace(" ]", "]"))
    m = _ARG_FIELD.match(rhs)
    if m:
        i = int(m.group(1))
        if i > 5:
            raise line.error(f"args[{i}]: a syscall has 6 arguments (args[0]..args[5])", rhs)
        return OFF_ARGS + 8 * i + (4 if m.group(2) else 0)
    m = _IP_FIELD.match(rhs)
    if m:
        return OFF_IP + (4 if m.group(1) else 0)
    return _FIELD_OFFSETS[norm]


def _parse_extra(text: str, line: _Line) -> dict[str, int]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = (x.strip() for x in part.partition("="))
        if not eq or name not in _LIMITS:
            raise line.error(f"bad field '{part}' (expected jt=, jf= or k=)", part)
        try:
            v = int(value, 0)
        except ValueError:
            raise line.error(f"bad value '{value}' for {name}", part) from None
        if not 0 <= v <= _LIMITS[name]:
            raise line.error(f"{name}={value} out of range", part)
        out[name] = v
    return out


def _mem_index(text: str, line: _Line) -> int:
    try:
        k = int(text.strip(), 0)
    except ValueError:
        raise line.error(f"bad scratch index '{text.strip()}'", text.strip()) from None
    if not 0 <= k < cbpf.MEMWORDS:
        raise line.error(f"scratch memory M[{k}] out of range (M[0]..M[15])", text.strip())
    return k


def _const(text: str, line: _Line, *, names: bool) -> int | str:
    """A 32-bit constant: a number (negative numbers wrap), an ARCH_* symbol, or — where a
    syscall number is meant (``names``) — a syscall name resolved later."""
    t = text.strip()
    try:
        v = int(t, 0)
    except ValueError:
        if t in AUDIT_BY_SYMBOL:
            return AUDIT_BY_SYMBOL[t]
        if names and _IDENT.match(t):
            qual = t.rpartition(":")[0]
            if qual:
                try:
                    by_name(qual)
                except ValueError as exc:
                    raise line.error(str(exc), t) from None
            return t
        raise line.error(f"bad constant '{t}'", t) from None
    if not -(1 << 31) <= v <= 0xFFFFFFFF:
        raise line.error(f"constant {t} does not fit in 32 bits", t)
    return v & 0xFFFFFFFF


def _ret_value(text: str, line: _Line) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        try:
            return actions.parse(text)
        except ValueError as exc:
            raise line.error(str(exc), text) from None
    if not 0 <= v <= 0xFFFFFFFF:
        raise line.error(f"return value {text} does not fit in 32 bits", text)
    return v
