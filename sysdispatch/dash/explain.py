"""``explain``: a policy's program table as a person wants to read it.

Tables with their slots (syscall names, argument values by their constant names), each handler
with its rules in words (``if args[2] has O_CREAT set -> ERRNO(EACCES)``) and the number of
instructions it compiled to, and, for one handler, its disassembly. Text only: the facts come
from the policy model and the compiled programs (policy/compile.py), nothing is re-derived.
"""

from __future__ import annotations

from ..errors import PolicyError
from ..policy import constants
from ..policy.compile import ENTRY, Compiled
from ..policy.model import Act, Cond, Handler, Policy, Table
from ..seccomp import arch as _arch
from ..vm.disasm import disassemble
from ..vm.isa import signed32
from .model import verdict_text

# Which constants name an argument's values, per (syscall, argument): enough for the calls
# policies constrain; other arguments are shown as numbers.
ARG_CONSTANTS: dict[tuple[str, int], str] = {
    ("open", 1): "O_", ("openat", 2): "O_", ("openat2", 2): "O_", ("creat", 1): "S_",
    ("socket", 0): "AF_", ("socket", 1): "SOCK_", ("socket", 2): "IPPROTO_",
    ("socketpair", 0): "AF_", ("mmap", 2): "PROT_", ("mmap", 3): "MAP_",
    ("mprotect", 2): "PROT_", ("pkey_mprotect", 2): "PROT_", ("clone", 0): "CLONE_",
    ("unshare", 0): "CLONE_", ("setns", 1): "CLONE_", ("mount", 3): "MS_",
    ("umount2", 1): "MNT_", ("prctl", 0): "PR_", ("ptrace", 0): "PTRACE_",
    ("seccomp", 0): "SECCOMP_", ("fcntl", 1): "F_", ("kill", 1): "SIG", ("tgkill", 2): "SIG",
    ("clock_gettime", 0): "CLOCK_", ("openat", 0): "AT_", ("newfstatat", 3): "AT_",
}


def action_words(act: Act) -> str:
    if act.tail_call is not None:
        return f"tail-call into table '{act.tail_call}'"
    return verdict_text(act.ret)


def _names_for(value: int, prefix: str) -> list[str]:
    """Constant names for ``value``, including those whose value depends on the arch (x86_64's
    value: the arch the explained policies are written for)."""
    return constants.names_for(value, prefix) + [
        k for k, per in constants.PER_ARCH.items()
        if k.startswith(prefix) and per.get(_arch.native().name) == value]


def _named(value: int, prefix: str | None) -> str:
    """``O_CREAT``, ``O_CREAT|O_EXCL`` (bits), or the number."""
    if prefix:
        exact = _names_for(value, prefix)
        if exact:
            return exact[0]
        if value and prefix in ("O_", "CLONE_", "PROT_", "MAP_", "MS_", "SOCK_"):
            bits = [_names_for(1 << b, prefix) for b in range(64) if value >> b & 1]
            if all(bits):
                return "|".join(b[0] for b in bits)
    return f"{value:#x}" if value > 9 else str(value)


def cond_words(c: Cond, prefix: str | None = None) -> str:
    a = f"args[{c.arg}]"
    if c.mask == 0xFFFFFFFF:          # an int argument: the upper half is not part of it
        signed = signed32(c.value)
        shown = _named(c.value, prefix) if signed >= 0 else f"{signed}"
        if signed < 0 and prefix and _names_for(signed, prefix):
            shown = _names_for(signed, prefix)[0]
        return f"(int){a} {c.op} {shown}"
    if c.mask is not None and c.op in ("==", "!="):
        m = _named(c.mask, prefix)
        if c.value == c.mask:
            return f"{a} has {m} set" if c.op == "==" else f"{a} lacks some of {m}"
        if c.value == 0 and c.op == "!=" and c.mask & (c.mask - 1) == 0:
            return f"{a} has {m} set"            # one bit: "any of" is "has"
        if c.value == 0:
            return f"{a} has none of {m}" if c.op == "==" else f"{a} has any of {m} set"
        return f"{a} & {m} {c.op} {_named(c.value, prefix)}"
    if c.mask is not None:
        return f"{a} & {_named(c.mask, prefix)} {c.op} {_named(c.value, prefix)}"
    return f"{a} {c.op} {_named(c.value, prefix)}"


def rule_lines(policy: Policy, h: Handler, syscall: str | None) -> list[str]:
    """One line per rule, then what happens otherwise."""
    def words(c: Cond) -> str:
        return cond_words(c, ARG_CONSTANTS.get((syscall, c.arg)) if syscall else None)
    out = []
    for r in h.rules:
        when = " and ".join(words(c) for c in r.conds) if r.conds else "always"
        out.append(f"if {when} -> {action_words(r.then)}")
    default = policy.handler_default(h)
    out.append(f"{'otherwise' if h.rules else 'always'} -> {action_words(default)}"
               + ("" if h.default is not None else " (the policy default)"))
    return out


def insn_count(compiled: Compiled, name: str) -> int:
    """Instructions as the machine counts them (an lddw takes two slots)."""
    return len(compiled.program(name).insns)


def _slot_list(policy: Policy, t: Table) -> list[tuple[str, str]]:
    """(key as a person reads it, handler name), sorted by key."""
    if t.index != "nr":
        return [(t.key_names.get(k) or _named(k, None), h) for k, h in sorted(t.entries.items())]
    rows: dict[str, tuple[str, str]] = {}
    for arch_name in policy.arches:
        a = _arch.by_name(arch_name)
        for nr, h in t.by_arch.get(arch_name, {}).items():
            name = a.syscall_name(nr) or f"syscall_{nr}"
            rows.setdefault(name, (name, h))   # the same syscall on every arch: listed once
    return sorted(rows.values())


def _users(policy: Policy) -> dict[str, str]:
    """handler -> the syscall whose slot leads to it, to pick constant names for arguments."""
    out: dict[str, str] = {}
    entry = policy.tables.get(policy.entry_table)
    if entry is not None:
        for key, h in _slot_list(policy, entry):
            out.setdefault(h, key)
    # handlers in an args table serve the syscall of the handler that tail-calls into it
    for name, hd in list(policy.handlers.items()):
        if name not in out:
            continue
        acts = [r.then for r in hd.rules] + ([hd.default] if hd.default else [])
        for act in acts:
            if act.tail_call in policy.tables:
                for _, h in _slot_list(policy, policy.tables[act.tail_call]):
                    out.setdefault(h, out[name])
    return out


def explain(policy: Policy, compiled: Compiled) -> str:
    users = _users(policy)
    lines = [f"policy {policy.name}" + (f" — {policy.description}" if policy.description else ""),
             f"  arches {', '.join(policy.arches)}; default {action_words(policy.default)}; "
             f"other arches {verdict_text(policy.bad_arch)}",
             f"  {ENTRY}: {insn_count(compiled, ENTRY)} insns; checks the arch, tail-calls into "
             f"'{policy.entry_table}' by syscall number", ""]
    for t in policy.tables.values():
        arrays = [a for (tname, _), a in compiled.arrays.items() if tname == t.name]
        occ = ", ".join(f"{a.name} {sum(s is not None for s in a.slots)}/{a.max_entries}"
                        for a in arrays)
        lines.append(f"table {t.name} (indexed by {t.index}; {occ}); empty slot -> "
                     f"{action_words(policy.table_default(t.name))}")
        for key, h in _slot_list(policy, t):
            hd = policy.handlers[h]
            target = action_words(hd.default) if hd.synthetic and hd.default is not None \
                else f"handler {h}"
            lines.append(f"  {key:<20} -> {target}")
        lines.append("")
    for h in policy.handlers.values():
        if h.synthetic:
            continue
        head = f"handler {h.name} ({h.kind}, {insn_count(compiled, h.name)} insns)"
        lines.append(head + (f": {h.description}" if h.description else ""))
        if h.kind == "rules":
            lines += [f"  {ln}" for ln in rule_lines(policy, h, users.get(h.name))]
        else:
            src = h.elf + (f" section {h.section}" if h.section else "") if h.kind == "elf" \
                else "inline assembly"
            lines.append(f"  {h.kind} program from {src}; see --handler {h.name}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def handler_disassembly(policy: Policy, compiled: Compiled, name: str) -> str:
    if name != ENTRY and name not in compiled.handlers:
        known = ", ".join([ENTRY, *(h for h in policy.handlers)])
        raise PolicyError(f"no handler '{name}' in policy '{policy.name}' (handlers: {known})")
    prog = compiled.program(name)
    return f"{name}: {len(prog.insns)} insns\n" + disassemble(prog)
