"""The policy reader: a TOML policy file (filters/*.toml) to the model in :mod:`.model`.

Every mistake is a :class:`~sysdispatch.errors.PolicyError` naming ``file:line:col`` (positions
come from :mod:`.locate`, since tomllib keeps none) and saying what is wrong in one line.

The format
==========

``[policy]`` — ``name`` (default: the file's stem), ``description``, ``arches`` (libseccomp names:
``x86_64``, ``i386`` (alias ``x86``), ``x32``, ``aarch64``, ...; default ``["x86_64"]``),
``default`` (required: what an empty syscall slot does), ``bad_arch`` (for an architecture not
listed; default ``kill_process``; a return action, never a tail call).

``[maps.NAME]`` — ``type`` (``array`` | ``hash``), ``key_size`` (4 for arrays), ``value_size``,
``max_entries``. Maps are for asm handlers, which name them in ``maps = [...]`` and refer to them
as ``map[NAME]``.

``[tables.NAME]`` — a jump table (a PROG_ARRAY). ``index``: ``"nr"`` (the entry table: at most
one; ``index`` may be left out for a table named ``syscalls``) or ``"args[i]"`` (nested dispatch,
entered by a ``tail_call(NAME)`` action). ``default``: what an empty or out-of-range slot does
(default: the policy's ``default``). ``size``: max_entries, to leave room for live updates
(default: derived, see compile.py). ``[tables.NAME.entries]`` maps keys to a handler name or an
action literal (an action makes a one-line handler named by its canonical literal, e.g.
``errno(13)``). Keys of an ``nr`` table: a syscall name, resolved through libseccomp per
architecture (a name missing on some listed architectures is skipped there; missing on all is an
error), or a number as the kernel reports it in ``seccomp_data.nr`` (x32 numbers carry bit
0x40000000, so ``"0x40000101"`` is x32's openat and ``"257"`` x86_64's). Keys of an ``args``
table: a value as in conditions, below 65536 (a PROG_ARRAY is indexed, not hashed).

``[handlers.NAME]`` — exactly one kind: rules (``rules = [{ when = [COND, ...], action = ACT },
...]`` and/or ``default = ACT``: rules are tried in order, the conditions of a rule are ANDed,
the first rule that matches decides, else ``default``, else the policy's ``default``); ``asm``
(eBPF assembly, seccomp program type, LLVM syntax; ``maps = [...]``); ``elf`` + ``section`` (a
section of a BPF object file built with ``clang -O2 -target bpf -c``, the path relative to the
policy file; ``section`` defaults to the handler's name; maps come from the object's ``maps``
section, see elf.py). ``description`` is free
text. A handler may not be named like an action literal (``log``, ``errno(1)``, ...).

Conditions: ``args[N] OP VALUE`` or ``args[N] & MASK OP VALUE``, N in 0..5, OP one of
``== != < <= > >=``, compared as unsigned 64-bit numbers. VALUE and MASK: integers (decimal,
``0x`` hex, ``0o`` octal, ``0b`` binary; a negative number means its 64-bit two's complement,
e.g. ``-100`` is 0xffffffffffffff9c — note that a 32-bit ``int`` argument such as ``AT_FDCWD``
usually arrives zero-extended, 0xffffff9c), symbolic constants (constants.py), and ``A|B|...``.

Actions: ``allow``, ``log``, ``errno(EACCES)`` / ``errno(13)``, ``trap(N)``, ``trace(N)``,
``kill_thread``, ``kill_process``, ``user_notif``, ``tail_call(TABLE)`` (TABLE an ``args`` table).
"""

from __future__ import annotations

import importlib.resources
import re
import tomllib
from pathlib import Path as FsPath
from typing import Any

from ..errors import Location, PolicyError
from ..seccomp import actions
from . import _arch, constants
from .locate import Locator
from .model import OPS, Act, Cond, Handler, MapDecl, Policy, Rule, Table

U64 = 0xFFFFFFFFFFFFFFFF
MAX_ARG_KEY = 65536

_COND = re.compile(r"^\s*args\s*\[\s*(?P<arg>[^\]]*?)\s*\]\s*(?:&\s*(?P<mask>[^=!<>]*?)\s*)?"
                   r"(?P<op>==|!=|<=|>=|<|>)\s*(?P<value>.*?)\s*$")
_TAIL = re.compile(r"^\s*tail_call\s*\(\s*(?P<table>[^)\s]*)\s*\)\s*$")
_ARG_INDEX = re.compile(r"^args\[([0-5])\]$")
_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")

_SECTIONS = ("policy", "maps", "tables", "handlers")
_POLICY_KEYS = ("name", "description", "arches", "default", "bad_arch")
_MAP_KEYS = ("type", "key_size", "value_size", "max_entries")
_TABLE_KEYS = ("index", "entries", "default", "size", "description")
_HANDLER_KEYS = ("description", "rules", "default", "asm", "maps", "elf", "section")
_RULE_KEYS = ("when", "action", "description")


def default_path() -> FsPath:
    """Where the embedded default policy is: sysdispatch/data/default.toml, inside the package
    (filters/default.toml is a symbolic link to it: one copy)."""
    return FsPath(str(importlib.resources.files("sysdispatch") / "data" / "default.toml"))


def load_default() -> Policy:
    """The embedded default policy: allow everything, log the dangerous syscalls."""
    return load(default_path())


def load(path: str | FsPath) -> Policy:
    """Read the policy file at ``path``."""
    path = FsPath(path)
    return loads(path.read_text(encoding="utf-8"), filename=str(path))


def loads(text: str, filename: str = "<policy>") -> Policy:
    """Read a policy from ``text``; ``filename`` is used in messages and for relative paths."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_POS.search(msg)
        loc = Location(filename, int(m[1]), int(m[2])) if m else Location(filename)
        raise PolicyError(_TOML_POS.sub("", msg).rstrip(), loc=loc) from None
    return _Reader(doc, Locator(text, filename), filename).policy()


class _Reader:
    def __init__(self, doc: dict, locator: Locator, filename: str) -> None:
        self.doc, self.at, self.filename = doc, locator, filename
        self.arches: tuple[str, ...] = ("x86_64",)

    # --- errors ---------------------------------------------------------------------------------

    def fail(self, path: tuple, message: str, *, key: bool = False) -> PolicyError:
        return PolicyError(message, loc=self.at.key(path) if key else self.at.value(path))

    def check_keys(self, table: dict, path: tuple, allowed: tuple[str, ...], what: str) -> None:
        for k in table:
            if k not in allowed:
                raise self.fail(path + (k,), f"unknown key '{k}' in {what} (expected one of: "
                                f"{', '.join(allowed)})", key=True)

    def typed(self, table: dict, path: tuple, key: str, kind: type | tuple, what: str,
              default: Any = None, required: bool = False) -> Any:
        if key not in table:
            if required:
                raise self.fail(path, f"{_where(path)} needs '{key}' ({what})", key=True)
            return default
        value = table[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(path + (key,), f"'{key}' must be {what}, not {_tname(value)}")
        return value

    # --- the document ---------------------------------------------------------------------------

    def policy(self) -> Policy:
        doc = self.doc
        self.check_keys(doc, (), _SECTIONS, "the policy file")
        for s in _SECTIONS:
            if s in doc and not isinstance(doc[s], dict):
                raise self.fail((s,), f"'{s}' must be a table ([{s}]), not {_tname(doc[s])}")
        if "policy" not in doc:
            raise PolicyError("missing [policy] section", loc=Location(self.filename, 1, 1))
        head = doc["policy"]
        p = ("policy",)
        self.check_keys(head, p, _POLICY_KEYS, "[policy]")
        name = self.typed(head, p, "name", str, "a string", FsPath(self.filename).stem)
        description = self.typed(head, p, "description", str, "a string", "")
        arches = self.typed(head, p, "arches", list, "a list of architecture names", ["x86_64"])
        if not arches:
            raise self.fail(p + ("arches",), "'arches' lists no architecture")
        seen: list[str] = []
        for i, a in enumerate(arches):
            if not isinstance(a, str):
                raise self.fail(p + ("arches", i), f"architecture must be a string, not {_tname(a)}")
            try:
                a = _arch.canonical(a)
            except PolicyError as exc:
                raise exc.at(loc=self.at.value(p + ("arches", i))) from None
            if a in seen:
                raise self.fail(p + ("arches", i), f"architecture '{a}' listed twice")
            seen.append(a)
        self.arches = tuple(seen)
        default_text = self.typed(head, p, "default", str, "an action", required=True)
        bad_arch_text = self.typed(head, p, "bad_arch", str, "an action", "kill_process")
        bad_arch = self.action(bad_arch_text, p + ("bad_arch",))
        if bad_arch.ret is None:
            raise self.fail(p + ("bad_arch",), "'bad_arch' must return an action, not tail-call")

        maps = {n: self.map_decl(n, m) for n, m in doc.get("maps", {}).items()}
        raw_tables = doc.get("tables", {})
        # Maps and tables are both maps to a program (``map[NAME]`` in assembly): one namespace.
        for section, names in (("maps", maps), ("tables", raw_tables)):
            for n in names:
                if not n.isidentifier():
                    raise self.fail((section, n), f"'{n}' is not a valid {section[:-1]} name "
                                    f"(letters, digits and _)", key=True)
                if section == "tables" and n in maps:
                    raise self.fail((section, n), f"table '{n}' has the name of a map", key=True)
        for n, t in raw_tables.items():
            if not isinstance(t, dict):
                raise self.fail(("tables", n), f"table '{n}' must be a table, not {_tname(t)}")
        indexes = {n: self.table_index(n, t) for n, t in raw_tables.items()}
        self.indexes = indexes
        default = self.action(default_text, p + ("default",))
        handlers: dict[str, Handler] = {}
        for n, h in doc.get("handlers", {}).items():
            handlers[n] = self.handler(n, h, maps)
        tables: dict[str, Table] = {}
        for n, t in raw_tables.items():
            tables[n] = self.table(n, t, indexes[n], handlers)
        nr_tables = [n for n, ix in indexes.items() if ix == "nr"]
        if len(nr_tables) > 1:
            first = self.at.key(("tables", nr_tables[0]))
            raise self.fail(("tables", nr_tables[1]),
                            f"table '{nr_tables[1]}': only one table may be indexed by nr (the "
                            f"entry table '{nr_tables[0]}' at {first.line}:{first.col})", key=True)
        entry = nr_tables[0] if nr_tables else "syscalls"
        if not nr_tables:
            tables[entry] = Table(entry, "nr", by_arch={a: {} for a in self.arches},
                                  loc=Location(self.filename, 1, 1))
        pol = Policy(name=name, arches=self.arches, default=default, bad_arch=bad_arch.ret,
                     tables=tables, handlers=handlers, maps=maps, entry_table=entry,
                     description=description, path=self.filename)
        self.check_table_defaults(pol)
        return pol

    def map_decl(self, name: str, m: Any) -> MapDecl:
        path = ("maps", name)
        if not isinstance(m, dict):
            raise self.fail(path, f"map '{name}' must be a table, not {_tname(m)}")
        self.check_keys(m, path, _MAP_KEYS, f"[maps.{name}]")
        kind = self.typed(m, path, "type", str, "'array' or 'hash'", required=True)
        if kind not in ("array", "hash"):
            raise self.fail(path + ("type",), f"map type must be 'array' or 'hash', not '{kind}'")
        sizes = {}
        for k in ("key_size", "value_size", "max_entries"):
            v = self.typed(m, path, k, int, "a positive integer", required=True)
            if v <= 0 or v > 1 << 24:
                raise self.fail(path + (k,), f"'{k}' must be 1..{1 << 24}, not {v}")
            sizes[k] = v
        if kind == "array" and sizes["key_size"] != 4:
            raise self.fail(path + ("key_size",), "an array map's key_size must be 4 (a u32 index)")
        return MapDecl(name, kind, sizes["key_size"], sizes["value_size"], sizes["max_entries"],
                       loc=self.at.key(path))

    def table_index(self, name: str, t: dict) -> str:
        path = ("tables", name)
        if "index" not in t and name == "syscalls":
            return "nr"
        index = self.typed(t, path, "index", str, '"nr" or "args[N]"', required=True)
        compact = index.replace(" ", "")
        if compact == "nr":
            return "nr"
        m = _ARG_INDEX.match(compact)
        if not m:
            raise self.fail(path + ("index",), f"table index must be \"nr\" or \"args[0]\" .. "
                            f"\"args[5]\", not '{index}'")
        return f"args[{m[1]}]"

    # --- actions and values ---------------------------------------------------------------------

    def action(self, text: str, path: tuple) -> Act:
        loc = self.at.value(path)
        m = _TAIL.match(text)
        if m:
            table = m["table"]
            ix = getattr(self, "indexes", {}).get(table)
            if ix is None:
                known = ", ".join(n for n, i in getattr(self, "indexes", {}).items() if i != "nr")
                raise PolicyError(f"tail_call to unknown table '{table}'"
                                  + (f" (args tables: {known})" if known else ""), loc=loc)
            if ix == "nr":
                raise PolicyError(f"tail_call({table}): the nr table is entered only by "
                                  f"syscall_entry; tail-call an args table", loc=loc)
            return Act(tail_call=table, loc=loc)
        try:
            return Act(ret=actions.parse(text), loc=loc)
        except ValueError as exc:
            raise PolicyError(str(exc), loc=loc) from None

    def number(self, text: str, path: tuple, offset: int, *, key: bool = False) -> int:
        """A VALUE: integers and constants joined by '|'. ``offset``: where ``text`` starts
        inside the string at ``path`` — or inside the key of ``path`` when ``key`` (for the
        column of a bad term)."""
        inside = self.at.key_inside if key else self.at.inside
        total = 0
        pos = 0
        for term in text.split("|"):
            lead = len(term) - len(term.lstrip())
            word = term.strip()
            col = offset + pos + lead
            pos += len(term) + 1
            if not word:
                raise PolicyError(f"empty term in '{text.strip()}'", loc=inside(path, col))
            try:
                v = int(word, 0)
            except ValueError:
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", word):
                    raise PolicyError(f"'{word}' is neither a number nor a constant name",
                                      loc=inside(path, col)) from None
                try:
                    v = constants.lookup(word, self.arches)
                except PolicyError as exc:
                    raise exc.at(loc=inside(path, col)) from None
            if not -(1 << 63) <= v <= U64:
                raise PolicyError(f"{word} does not fit in 64 bits", loc=inside(path, col))
            total |= v & U64
        return total

    def cond(self, text: Any, path: tuple) -> Cond:
        if not isinstance(text, str):
            raise self.fail(path, f"a condition must be a string, not {_tname(text)}")
        m = _COND.match(text)
        if not m:
            raise PolicyError(f"cannot read condition '{text}': expected 'args[N] OP VALUE' or "
                              f"'args[N] & MASK OP VALUE' with OP one of {' '.join(OPS)}",
                              loc=self.at.value(path))
        arg = m["arg"]
        if not arg.isdigit() or int(arg) > 5:
            raise PolicyError(f"argument index must be 0..5, not '{arg}'",
                              loc=self.at.inside(path, m.start("arg")))
        if not m["value"]:
            raise PolicyError(f"condition '{text}' has no value after '{m['op']}'",
                              loc=self.at.inside(path, m.end("op")))
        mask = None
        if m["mask"] is not None:
            mask = self.number(m["mask"], path, m.start("mask"))
        value = self.number(m["value"], path, m.start("value"))
        return Cond(int(arg), m["op"], value, mask, loc=self.at.value(path))

    # --- handlers -------------------------------------------------------------------------------

    def handler(self, name: str, h: Any, maps: dict[str, MapDecl]) -> Handler:
        path = ("handlers", name)
        where = self.at.key(path)
        if not isinstance(h, dict):
            raise self.fail(path, f"handler '{name}' must be a table, not {_tname(h)}")
        if _is_action_literal(name):
            raise self.fail(path, f"handler name '{name}' is an action literal; choose another",
                            key=True)
        self.check_keys(h, path, _HANDLER_KEYS, f"[handlers.{name}]")
        description = self.typed(h, path, "description", str, "a string", "")
        kinds = [k for k in ("asm", "elf") if k in h]
        if "rules" in h or "default" in h:
            kinds.insert(0, "rules")
        if not kinds:
            raise self.fail(path, f"handler '{name}' has none of rules, default, asm, elf", key=True)
        if len(kinds) > 1:
            k = kinds[1] if kinds[1] in h else kinds[0]
            raise self.fail(path + (k,), f"handler '{name}' mixes {' and '.join(kinds)}: a handler "
                            f"is exactly one kind", key=True)
        kind = kinds[0]
        used = tuple(self.typed(h, path, "maps", list, "a list of map names", []))
        for i, mname in enumerate(used):
            if mname not in maps:
                raise self.fail(path + ("maps", i), f"handler '{name}' uses undeclared map "
                                f"'{mname}' (declare it in [maps.{mname}])")
        if used and kind == "rules":
            raise self.fail(path + ("maps",), f"handler '{name}': only asm handlers use maps",
                            key=True)
        if "section" in h and kind != "elf":
            raise self.fail(path + ("section",), "'section' belongs to an elf handler", key=True)
        if kind == "asm":
            text = self.typed(h, path, "asm", str, "assembly text")
            return Handler(name, "asm", asm=text, maps=used, description=description, loc=where,
                           asm_origin=self.at.string_origin(path + ("asm",)))
        if kind == "elf":
            elf = self.typed(h, path, "elf", str, "a path to an object file")
            section = self.typed(h, path, "section", str, "a section name", name)
            return Handler(name, "elf", elf=elf, section=section, maps=used,
                           description=description, loc=where)
        rules = []
        for i, r in enumerate(self.typed(h, path, "rules", list, "a list of rules", [])):
            rules.append(self.rule(r, path + ("rules", i), name))
        default = None
        if "default" in h:
            default = self.action(self.typed(h, path, "default", str, "an action"),
                                  path + ("default",))
        return Handler(name, "rules", rules=tuple(rules), default=default,
                       description=description, loc=where)

    def rule(self, r: Any, path: tuple, handler: str) -> Rule:
        if not isinstance(r, dict):
            raise self.fail(path, f"a rule must be a table {{ when = [...], action = \"...\" }}, "
                            f"not {_tname(r)}")
        self.check_keys(r, path, _RULE_KEYS, f"a rule of handler '{handler}'")
        action = self.typed(r, path, "action", str, "an action", required=True)
        when = r.get("when", [])
        if isinstance(when, str):
            conds = (self.cond(when, path + ("when",)),)
        elif isinstance(when, list):
            conds = tuple(self.cond(c, path + ("when", i)) for i, c in enumerate(when))
        else:
            raise self.fail(path + ("when",), f"'when' must be a list of conditions, not "
                            f"{_tname(when)}")
        return Rule(conds, self.action(action, path + ("action",)), loc=self.at.value(path))

    # --- tables ---------------------------------------------------------------------------------

    def table(self, name: str, t: dict, index: str, handlers: dict[str, Handler]) -> Table:
        path = ("tables", name)
        self.check_keys(t, path, _TABLE_KEYS, f"[tables.{name}]")
        default = None
        if "default" in t:
            default = self.action(self.typed(t, path, "default", str, "an action"),
                                  path + ("default",))
        size = self.typed(t, path, "size", int, "a positive integer")
        if size is not None and not 0 < size <= MAX_ARG_KEY * 16:
            raise self.fail(path + ("size",), f"table size must be 1..{MAX_ARG_KEY * 16}")
        raw = self.typed(t, path, "entries", dict, "a table of entries", {})
        loc = self.at.key(path)
        if index == "nr":
            by_arch: dict[str, dict[int, str]] = {a: {} for a in self.arches}
            first: dict[tuple[str, int], str] = {}
            for key, value in raw.items():
                epath = path + ("entries", key)
                target = self.target(value, epath, handlers)
                for arch, nr in self.syscall_key(key, epath):
                    if (arch, nr) in first:
                        raise self.fail(epath, f"'{first[arch, nr]}' and '{key}' are the same "
                                        f"syscall ({nr} on {arch})", key=True)
                    first[arch, nr] = key
                    by_arch[arch][nr] = target
            table = Table(name, "nr", by_arch=by_arch, default=default, size=size, loc=loc)
        else:
            entries: dict[int, str] = {}
            keyname: dict[int, str] = {}
            for key, value in raw.items():
                epath = path + ("entries", key)
                k = self.number(key, epath, 0, key=True)
                if k >= MAX_ARG_KEY:
                    raise self.fail(epath, f"key {key} ({k:#x}) too large: keys of an args table "
                                    f"must be below {MAX_ARG_KEY}", key=True)
                if k in entries:
                    raise self.fail(epath, f"'{keyname[k]}' and '{key}' are the same key ({k})",
                                    key=True)
                keyname[k] = key
                entries[k] = self.target(value, epath, handlers)
            table = Table(name, index, entries=entries, default=default, size=size, loc=loc,
                          key_names={k: n for k, n in keyname.items() if not _is_number(n)})
        if size is not None:
            if index == "nr":
                slots = [k - _arch.nr_bias(a) for a, m in table.by_arch.items() for k in m]
            else:
                slots = list(table.entries)
            if slots and max(slots) >= size:
                raise self.fail(path + ("size",), f"table size {size} is too small for slot "
                                f"{max(slots)}")
        return table

    def target(self, value: Any, path: tuple, handlers: dict[str, Handler]) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"an entry names a handler or an action, not {_tname(value)}")
        if value in handlers:
            return value
        try:
            act = self.action(value, path)
        except PolicyError as exc:
            if _TAIL.match(value) or _is_action_literal(value.split("(")[0]):
                raise
            raise PolicyError(f"'{value}' is neither a handler nor an action ({exc.message})",
                              loc=exc.loc) from None
        name = act.literal
        if name not in handlers:
            handlers[name] = Handler(name, "rules", default=act, loc=act.loc, synthetic=True)
        return name

    def syscall_key(self, key: str, path: tuple) -> list[tuple[str, int]]:
        """(arch, nr) pairs a key of an nr table stands for."""
        try:
            nr = int(key, 0)
        except ValueError:
            nr = None
        if nr is not None:
            if not 0 <= nr < 1 << 32:
                raise self.fail(path, f"syscall number {key} out of range", key=True)
            out = [(a, nr) for a in self.arches
                   if bool(nr & _arch.nr_bias("x32")) == bool(_arch.nr_bias(a))]
            if not out:
                raise self.fail(path, f"syscall number {key} belongs to none of the policy's "
                                f"architectures ({', '.join(self.arches)})", key=True)
            return out
        out = []
        for a in self.arches:
            n = _arch.syscall_number(a, key)
            if n is not None:
                out.append((a, n))
        if not out:
            raise self.fail(path, f"unknown syscall '{key}' (not a syscall on "
                            f"{', '.join(self.arches)})", key=True)
        return out

    def check_table_defaults(self, pol: Policy) -> None:
        check_default_chains(pol)


def check_default_chains(pol: Policy) -> None:
    """A table's default (or, for a table without one, the policy's) may tail-call another
    table; such chains must end, or the code after a failed tail call would never be done."""
    for start in pol.tables:
        seen = [start]
        act = pol.table_default(start)
        while act.tail_call is not None:
            if act.tail_call in seen:
                circle = seen[seen.index(act.tail_call):] + [act.tail_call]
                raise PolicyError(f"table defaults tail-call in a circle: {' -> '.join(circle)}",
                                  loc=act.loc)
            seen.append(act.tail_call)
            act = pol.table_default(act.tail_call)


def _is_number(text: str) -> bool:
    try:
        int(text, 0)
        return True
    except ValueError:
        return False


def _is_action_literal(text: str) -> bool:
    if _TAIL.match(text):
        return True
    try:
        actions.parse(text)
        return True
    except ValueError:
        return False


def _where(path: tuple) -> str:
    return f"[{'.'.join(str(p) for p in path)}]" if path else "the policy file"


def _tname(value: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)
