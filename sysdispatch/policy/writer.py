"""The policy model written back as a policy file (filters/*.toml), for people to read and edit.

The output is what :mod:`sysdispatch.policy.parse` reads back into the same policy: a comment
header, ``[policy]``, maps, the syscall table with its entries grouped (one group per action
literal, largest first, then the syscalls that have a handler of their own), other tables, then
the handlers in the order the table uses them.

A policy file names syscalls once for all its architectures (the reader resolves each name per
arch), so a model whose per-arch tables disagree about a syscall cannot be written; numbers that
have no name on an arch are written as numeric keys when that keeps every arch right. Anything
else raises :class:`PolicyError` naming the syscall.
"""

from __future__ import annotations

import errno as _errno
import json
import re

from ..errors import PolicyError
from ..seccomp import actions as A
from ..seccomp import arch as _sa
from .model import Act, Cond, Handler, Policy, Table

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def action_text(act: Act) -> str:
    """An action as a policy file writes it, errno values by name: ``errno(EPERM)``."""
    if act.ret is None:
        return f"tail_call({act.tail_call})"
    ret = act.ret & 0xFFFFFFFF
    kind, data = ret & A.ACTION_FULL, ret & A.DATA
    if kind not in A.NAMES:
        raise PolicyError(f"action {ret:#010x} has no name a policy file could use")
    name = A.NAMES[kind]
    if kind == A.ERRNO:
        return f"errno({_errno.errorcode.get(data, str(data))})"
    if kind in A.TAKES_DATA:
        return f"{name}({data})"
    return name


def _num(v: int) -> str:
    return str(v) if v < 0x10000 else f"{v:#x}"


def cond_text(c: Cond) -> str:
    lhs = f"args[{c.arg}]" if c.mask is None else f"args[{c.arg}] & {_num(c.mask)}"
    return f"{lhs} {c.op} {_num(c.value)}"


def _entries(policy: Policy, table: Table) -> dict[str, str]:
    """Key -> handler name for the nr table, checked to mean the same on every arch."""
    arches = [_sa.by_name(a) for a in policy.arches]
    out: dict[str, str] = {}
    numeric: dict[int, dict[str, str]] = {}
    for a in arches:
        for nr, h in table.by_arch.get(a.name, {}).items():
            name = a.syscall_name(nr)
            if name is None:
                numeric.setdefault(nr, {})[a.name] = h
                continue
            if name in out and out[name] != h:
                raise PolicyError(f"syscall '{name}' has handler '{out[name]}' on one "
                                  f"architecture and '{h}' on {a.name}: a policy file names "
                                  "a syscall once for all its architectures")
            out[name] = h
    for name, h in out.items():  # the reader puts a name on every arch that has it
        for a in arches:
            nr = a.syscall_number(name)
            if nr is not None and table.by_arch.get(a.name, {}).get(nr) != h:
                raise PolicyError(f"syscall '{name}' goes to '{h}' on some architectures but "
                                  f"not on {a.name}: a policy file names a syscall once for "
                                  "all its architectures")
    for nr, per_arch in sorted(numeric.items()):
        same_class = [a for a in arches if bool(nr & _sa.X32.nr_base) == bool(a.nr_base)]
        handlers = set(per_arch.values())
        if len(handlers) != 1 or set(per_arch) != {a.name for a in same_class}:
            raise PolicyError(f"syscall number {nr} has no name on {', '.join(per_arch)} and "
                              "a numeric key would apply to every architecture")
        out[str(nr) if nr < 0x10000 else f"{nr:#x}"] = handlers.pop()
    return out


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines).rstrip("\n") + "\n"


def write_policy(policy: Policy, *, header: list[str] | None = None) -> str:
    """The policy file text for ``policy``. ``header``: extra comment lines under the title."""
    out = _Out()
    title = f"# {policy.name}.toml"
    out(f"{title} — {policy.description}" if policy.description else title)
    for line in header or []:
        out(f"# {line}".rstrip())
    out()
    out("[policy]")
    out(f"name = {_str(policy.name)}")
    if policy.description:
        out(f"description = {_str(policy.description)}")
    out(f"arches = [{', '.join(_str(a) for a in policy.arches)}]")
    out(f"default = {_str(action_text(policy.default))}")
    out(f"bad_arch = {_str(action_text(Act(ret=policy.bad_arch)))}")
    for m in policy.maps.values():
        out()
        out(f"[maps.{_key(m.name)}]")
        out(f"type = {_str(m.type)}")
        out(f"key_size = {m.key_size}")
        out(f"value_size = {m.value_size}")
        out(f"max_entries = {m.max_entries}")

    used: list[str] = []
    entry = policy.tables[policy.entry_table]
    _table(out, policy, entry, _entries(policy, entry), used)
    for t in policy.tables.values():
        if t.name != policy.entry_table:
            keys = {str(k): h for k, h in sorted(t.entries.items())}
            _table(out, policy, t, keys, used)
    for name in list(dict.fromkeys(used)) + [h for h in policy.handlers if h not in used]:
        h = policy.handlers[name]
        if not h.synthetic:
            _handler(out, h)
    return out.text()


def _target(policy: Policy, hname: str) -> tuple[str, bool]:
    """What an entry says for handler ``hname``: (text, whether it is an action literal)."""
    h = policy.handlers.get(hname)
    if h is None:
        raise PolicyError(f"a table names handler '{hname}', which the policy does not define")
    if h.synthetic and h.default is not None and not h.rules:
        return action_text(h.default), True
    return hname, False


def _table(out: _Out, policy: Policy, t: Table, keys: dict[str, str], used: list[str]) -> None:
    out()
    out(f"[tables.{_key(t.name)}]")
    out(f"index = {_str(t.index)}")
    if t.default is not None:
        out(f"default = {_str(action_text(t.default))}")
    if t.size is not None:
        out(f"size = {t.size}")
    out(f"[tables.{_key(t.name)}.entries]")
    literal: dict[str, list[str]] = {}
    own: dict[str, list[str]] = {}
    for key, hname in keys.items():
        text, is_literal = _target(policy, hname)
        (literal if is_literal else own).setdefault(text, []).append(key)
    first = True
    for g, ks in sorted(literal.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if not first:
            out()
        first = False
        out(f"# {g} ({len(ks)})")
        for k in sorted(ks, key=_sort_key):
            out(f"{_key(k)} = {_str(g)}")
    if own:
        if not first:
            out()
        out("# with a handler of their own")
        for g, ks in sorted(own.items(), key=lambda kv: min(_sort_key(k) for k in kv[1])):
            for k in sorted(ks, key=_sort_key):
                out(f"{_key(k)} = {_str(g)}")
            used.append(g)


def _sort_key(k: str) -> tuple:
    return (1, int(k, 0), "") if k[:1].isdigit() else (0, 0, k)


def _handler(out: _Out, h: Handler) -> None:
    out()
    out(f"[handlers.{_key(h.name)}]")
    if h.description:
        out(f"description = {_str(h.description)}")
    if h.kind == "asm":
        if h.maps:
            out(f"maps = [{', '.join(_str(m) for m in h.maps)}]")
        text = h.asm or ""
        if "'''" in text:
            out(f"asm = {_str(text)}")
        else:
            out(f"asm = '''\n{text}'''" if text.endswith("\n") else f"asm = '''\n{text}\n'''")
        return
    if h.kind == "elf":
        out(f"elf = {_str(h.elf or '')}")
        if h.section:
            out(f"section = {_str(h.section)}")
        if h.maps:
            out(f"maps = [{', '.join(_str(m) for m in h.maps)}]")
        return
    if h.rules or h.default is None:  # no rules and no default: the policy default
        out("rules = [" if h.rules else "rules = []")
        for r in h.rules:
            when = ", ".join(_str(cond_text(c)) for c in r.conds)
            out(f"  {{ when = [{when}], action = {_str(action_text(r.then))} }},")
        if h.rules:
            out("]")
    if h.default is not None:
        out(f"default = {_str(action_text(h.default))}")
