"""``sysdispatch emu``: run seccomp filters on one syscall, or sweep every syscall of an arch.

    sysdispatch emu FILTER... [--arch A] SYSCALL [ARG...]
    sysdispatch emu FILTER... [--arch A] --sweep

FILTERs are files, oldest first (stacked like the kernel stacks them); the first item that is
not a file is the syscall (a name of the architecture, or a number), then up to six arguments
(decimal, 0x hex, negative numbers wrap to 64 bits). A FILTER is a raw classic filter, classic
text (``.asm``), or a seccomp-type eBPF program (``.s`` assembly, ``.bin`` raw); see
:func:`sysdispatch.seccomp.stack.load_filter` for adding kinds.

One syscall: the disassembly with the executed instructions marked ``>``, each filter's return
and the combined verdict. ``--sweep``: every syscall number libseccomp knows on the arch, and for
the arguments a filter reads, the values it compares them against (+-1); prints the verdicts and
each classic filter's instruction coverage.

A policy file (``.toml``, see filters/) given alone is emulated as a whole program table: one
call prints its dispatch path (``syscall_entry -> tail_call syscalls[257] -> openat_rules ->
return ERRNO(13)``) and tail-call count; arguments may also be constant names (``O_CREAT|O_EXCL``);
``--arch`` defaults to the policy's first architecture. ``--sweep`` runs every syscall with the
argument values the policy's rules and tables compare against. Stacked with other filters, a
policy is one more filter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field

from ..errors import SysdispatchError
from ..policy.emulate import PolicyEmulator  # importing it lets load_filter read .toml policies
from ..seccomp import actions
from ..seccomp import arch as _arch
from ..seccomp.cfilter import arg_constants, field_name, ret_text
from ..seccomp.data import SeccompData
from ..seccomp.stack import ClassicFilter, FilterStack, effect, load_filter

MASK64 = (1 << 64) - 1


class EmuError(SysdispatchError):
    """A bad emu command line (unknown syscall, bad argument)."""


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default=None, help="syscall table and seccomp_data.arch "
                   "(default: native; x86_64, i386, x32, aarch64, ...)")
    p.add_argument("--ip", default=None, help="seccomp_data.instruction_pointer (default 0)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--sweep", action="store_true",
                   help="every syscall of the arch, and interesting argument values")
    p.add_argument("--converted", action="store_true",
                   help="also run classic filters converted to eBPF and require equal results")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emu", help="run seccomp filters on a syscall (or --sweep all)",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    # Everything after the first positional is collected as is and parsed again below, so that
    # options may come anywhere (`emu f.bpf --json read -1`) and negative arguments stay numbers.
    p.add_argument("items", nargs=argparse.REMAINDER, metavar="FILTER... SYSCALL [ARG...]")
    _options(p)
    p.set_defaults(func=_main)


class _InnerParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line through the CLI's error path
        raise EmuError(message)


def _reparse(args: argparse.Namespace) -> argparse.Namespace:
    inner = _InnerParser(prog="sysdispatch emu", add_help=False)
    _options(inner)
    inner.add_argument("items", nargs="*")
    more = inner.parse_intermixed_args(args.items)
    for name in ("json", "sweep", "converted"):
        setattr(more, name, getattr(more, name) or getattr(args, name))
    for name in ("arch", "ip"):
        if getattr(more, name) is None:
            setattr(more, name, getattr(args, name))
    more.ip = more.ip or "0"
    return more


def _int64(text: str, what: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise EmuError(f"{what} '{text}' is not a number") from None
    if not -(1 << 63) <= v <= MASK64:
        raise EmuError(f"{what} {text} does not fit in 64 bits")
    return v & MASK64


def _split(items: list[str]) -> tuple[list[str], list[str]]:
    files = []
    for i, item in enumerate(items):
        if os.path.isfile(item):
            files.append(item)
            continue
        if not files:
            raise EmuError(f"{item}: no such filter file")
        return files, items[i:]
    return files, []


def _main(args: argparse.Namespace) -> int:
    args = _reparse(args)
    if not args.items:
        raise EmuError("no filter given")
    try:
        arch = _arch.by_name(args.arch) if args.arch else _arch.native()
    except ValueError as exc:
        raise EmuError(str(exc)) from None
    files, rest = _split(args.items)
    stack = FilterStack([load_filter(f, arch=arch) for f in files])
    ip = _int64(args.ip, "--ip")
    if len(stack) == 1 and isinstance(stack.filters[0], PolicyEmulator):
        return _policy(stack.filters[0], rest, ip, args)
    if args.sweep:
        if rest:
            raise EmuError(f"--sweep takes no syscall ('{rest[0]}' is not a filter file)")
        return _sweep(stack, arch, ip, args)
    if not rest:
        raise EmuError("no syscall given (or use --sweep)")
    try:
        nr = arch.resolve(rest[0])
    except ValueError as exc:
        raise EmuError(f"{exc} (and no filter file '{rest[0]}')") from None
    if len(rest) > 7:
        raise EmuError(f"a syscall has at most 6 arguments, got {len(rest) - 1}")
    sargs = tuple(_int64(a, f"argument {i}") for i, a in enumerate(rest[1:]))
    data = SeccompData(nr, arch.audit, ip, sargs)
    return _one(stack, arch, data, args)


def _policy(f: PolicyEmulator, rest: list[str], ip: int, args) -> int:
    """A policy alone: its own report of the dispatch path, or its own sweep."""
    arch = f.arch(args.arch)  # None: the policy's first architecture
    if args.sweep:
        if rest:
            raise EmuError(f"--sweep takes no syscall ('{rest[0]}' is not a filter file)")
        rows = f.sweep(arch, ip=ip)
        if args.json:
            json.dump(f.sweep_json(rows), sys.stdout, indent=2)
            print()
        else:
            print(f.format_sweep(rows), end="")
        return 0
    if not rest:
        raise EmuError("no syscall given (or use --sweep)")
    if len(rest) > 7:
        raise EmuError(f"a syscall has at most 6 arguments, got {len(rest) - 1}")
    data = f.data(rest[0], [_policy_arg(a, i) for i, a in enumerate(rest[1:])], arch=arch, ip=ip)
    decision = f.decide(data)
    if args.json:
        json.dump(f.to_json(data, decision), sys.stdout, indent=2)
        print()
    else:
        print(f.report(data, decision), end="")
    return 0


def _policy_arg(text: str, i: int) -> int | str:
    """A number (checked like any emu argument), else left to the policy's constant names."""
    try:
        int(text, 0)
    except ValueError:
        return text
    return _int64(text, f"argument {i}")


def _check_converted(stack: FilterStack, data: SeccompData, runs) -> None:
    for f, r in zip(stack.filters, runs):
        if isinstance(f, ClassicFilter):
            got = f.run_converted(data)
            if got != r.ret:
                raise EmuError(f"{f.name}: converted eBPF returned 0x{got:08x}, the classic "
                               f"interpreter 0x{r.ret:08x} (nr {data.nr})")


def _one(stack: FilterStack, arch: _arch.Arch, data: SeccompData, args) -> int:
    result = stack.evaluate(data)
    if args.converted:
        _check_converted(stack, data, result.runs)
    eff = effect(result.ret)
    name = _arch.for_number(arch, data.nr).syscall_name(data.nr)
    if args.json:
        out = {
            "arch": arch.name, "syscall": name, "nr": data.nr, "args": list(data.args),
            "instruction_pointer": data.instruction_pointer,
            "filters": [{"file": f.name, "kind": f.kind, "ret": r.ret,
                         "verdict": actions.describe(r.ret),
                         "path": list(r.path) if r.path is not None else None,
                         "return_pc": r.return_pc}
                        for f, r in zip(stack.filters, result.runs)],
            "ret": result.ret, "verdict": actions.describe(result.ret),
            "winner": result.winner, "effect": str(eff),
        }
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    shown = ", ".join(f"0x{a:x}" for a in data.args)
    print(f"{name or 'syscall'} (nr {data.nr}, {arch.name}) args [{shown}]")
    for i, (f, r) in enumerate(zip(stack.filters, result.runs)):
        print(f"\n# filter {i}: {f.name} ({len(f)} instructions, {f.kind})")
        marked = set(r.path or ())
        for pc, line in enumerate(f.listing(arch)):
            print((">" if pc in marked else " ") + line)
        where = f" at {r.return_pc:04d}" if r.return_pc is not None else ""
        print(f"return {ret_text(r.ret)}{where}")
    who = ""
    if len(stack) > 1:
        who = (f" (from filter {result.winner})" if result.winner is not None
               else " (every filter allows)")
    print(f"\nverdict: {actions.describe(result.ret)}{who}: {eff}")
    return 0


# --- sweep -----------------------------------------------------------------------------------------


@dataclass
class _Row:
    ret: int
    cases: list[str] = field(default_factory=list)  # "openat" or "openat[args[2]=0x1]"
    count: int = 0


def _interesting(stack: FilterStack) -> dict[int, list[int]]:
    """For each argument index, 64-bit values worth trying: every constant a classic filter
    compares that argument's low or high word against, +-1, combined with the other word."""
    lo: dict[int, set[int]] = {}
    hi: dict[int, set[int]] = {}
    for f in stack.filters:
        if not isinstance(f, ClassicFilter):
            continue
        for fld, consts in arg_constants(f.kernel).items():
            if not fld.startswith("args["):
                continue
            i = int(fld[5])
            into = hi if fld.endswith(">> 32") else lo
            s = into.setdefault(i, {0})
            for c in consts:
                s.update({c, (c - 1) & 0xFFFFFFFF, (c + 1) & 0xFFFFFFFF})
    out = {}
    for i in sorted(set(lo) | set(hi)):
        values = {(h << 32) | low for h in hi.get(i, {0}) for low in lo.get(i, {0})}
        values.discard(0)
        out[i] = sorted(values)
    return out


def _args_read(loads) -> set[int]:
    read = set()
    for off in loads:
        name = field_name(off)
        if name and name.startswith("args["):
            read.add(int(name[5]))
    return read


def _sweep(stack: FilterStack, arch: _arch.Arch, ip: int, args) -> int:
    values = _interesting(stack)
    opaque = any(not isinstance(f, ClassicFilter) for f in stack.filters)
    rows: dict[int, _Row] = {}
    covered = [set() for _ in stack.filters]
    runs = 0

    def evaluate(nr: int, sargs: tuple[int, ...]):
        nonlocal runs
        data = SeccompData(nr, arch.audit, ip, sargs)
        result = stack.evaluate(data)
        if args.converted:
            _check_converted(stack, data, result.runs)
        runs += 1
        read: set[int] = set()
        for i, r in enumerate(result.runs):
            if r.path is not None:
                covered[i].update(r.path)
            read |= _args_read(r.loads)
        if opaque:  # an eBPF filter does not say what it read: try every known argument
            read |= set(values)
        return result.ret, read

    table = arch.table
    for nr, name in sorted(table.items()):
        base = (0,) * 6
        ret, read = evaluate(nr, base)
        seen = {ret}
        row = rows.setdefault(ret, _Row(ret))
        row.cases.append(name)
        row.count += 1
        tried: set[int] = set()
        todo = sorted(read & set(values))
        while todo:
            i = todo.pop(0)
            if i in tried:
                continue
            tried.add(i)
            for v in values[i]:
                sargs = base[:i] + (v,) + base[i + 1:]
                vret, vread = evaluate(nr, sargs)
                todo += sorted((vread & set(values)) - tried - set(todo))
                if vret not in seen:
                    seen.add(vret)
                    r = rows.setdefault(vret, _Row(vret))
                    r.cases.append(f"{name}[args[{i}]=0x{v:x}]")
                    r.count += 1
    ordered = sorted(rows.values(), key=lambda r: (actions.precedence(r.ret), r.ret))
    coverage = []
    for f, cov in zip(stack.filters, covered):
        if isinstance(f, ClassicFilter):
            missed = [pc for pc in range(len(f)) if pc not in cov]
            coverage.append({"file": f.name, "instructions": len(f), "covered": len(cov),
                             "never_executed": missed})
        else:
            coverage.append({"file": f.name, "instructions": len(f), "covered": None,
                             "never_executed": None})
    if args.json:
        json.dump({"arch": arch.name, "syscalls": len(table), "runs": runs,
                   "verdicts": [{"ret": r.ret, "verdict": actions.describe(r.ret),
                                 "count": r.count, "cases": r.cases} for r in ordered],
                   "coverage": coverage}, sys.stdout, indent=2)
        print()
        return 0
    print(f"sweep of {len(table)} {arch.name} syscalls: {runs} runs")
    width = max(len(actions.describe(r.ret)) for r in ordered)
    print(f"{'verdict':<{width}}  {'count':>5}  syscalls")
    for r in ordered:
        shown = r.cases if len(r.cases) <= 12 else r.cases[:12] + [
            f"... and {len(r.cases) - 12} more (--json lists all)"]
        print(f"{actions.describe(r.ret):<{width}}  {r.count:>5}  {' '.join(shown)}")
    for c in coverage:
        if c["covered"] is None:
            print(f"coverage {c['file']}: not reported for eBPF filters")
            continue
        pct = 100.0 * c["covered"] / c["instructions"]
        line = f"coverage {c['file']}: {c['covered']}/{c['instructions']} instructions ({pct:.1f}%)"
        if c["never_executed"]:
            line += "; never executed: " + _ranges(c["never_executed"])
        print(line)
    return 0


def _ranges(pcs: list[int]) -> str:
    parts = []
    start = prev = pcs[0]
    for pc in pcs[1:] + [None]:
        if pc is not None and pc == prev + 1:
            prev = pc
            continue
        parts.append(f"{start:04d}" if start == prev else f"{start:04d}-{prev:04d}")
        if pc is not None:
            start = prev = pc
    return ", ".join(parts)
