"""``sysdispatch check POLICY`` and ``sysdispatch disasm POLICY [--handler NAME]``.

``check`` reads the policy, compiles every handler and the entry program, verifies them all,
fills the jump tables, and prints the program table: for each jump table its slots, and for each
slot the key, the handler, its rule count and its instruction count. Any mistake is one line
``file:line:col: what`` and exit status 2. With ``--against-kernel`` it instead exports the
policy through libseccomp and runs ``--cases`` invocations both on the emulator and in the
kernel (a forked child, see sysdispatch.policy.against_kernel): exit 0 when every verdict agrees,
1 when one differs (each difference is printed), 2 when the kernel cannot run the policy (e.g. an
eBPF handler libseccomp cannot express).

``disasm`` prints the generated programs in LLVM syntax with their labels: ``syscall_entry``
first, then every handler (or only ``--handler NAME``).
"""

from __future__ import annotations

import argparse
import re

from ..errors import PolicyError
from ..policy import _arch
from ..policy.compile import ENTRY
from ..policy.loaded import LoadedPolicy
from ..seccomp import actions


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="verify a policy and print its program table",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("policy", metavar="POLICY", help="a policy file (filters/*.toml)")
    p.add_argument("--against-kernel", action="store_true",
                   help="compare the emulator's verdicts with the kernel running the policy")
    p.add_argument("--cases", type=_positive, default=None, metavar="N",
                   help=f"invocations for --against-kernel (default {DEFAULT_CASES})")
    p.set_defaults(func=_check)
    d = sub.add_parser("disasm", help="disassemble the programs a policy compiles to",
                       description=__doc__.split("\n\n")[2])
    d.add_argument("policy", metavar="POLICY", help="a policy file (filters/*.toml)")
    d.add_argument("--handler", metavar="NAME", help=f"only this handler (or {ENTRY})")
    d.set_defaults(func=_disasm)


DEFAULT_CASES = 200


def _positive(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is not a positive number")
    return n


def _check(args: argparse.Namespace) -> int:
    if args.against_kernel:
        return _against_kernel(args.policy, args.cases or DEFAULT_CASES)
    if args.cases is not None:
        raise PolicyError("--cases counts the invocations of --against-kernel: give both")
    lp = LoadedPolicy.from_file(args.policy, cache=False)
    print(check_report(lp), end="")
    return 0


def _against_kernel(path: str, cases: int) -> int:
    from ..policy.against_kernel import against_kernel  # forks and traces: load only when asked
    from ..policy.parse import load
    report = against_kernel(load(path), cases=cases, seed=0)
    print(report)
    return 0 if report.ok else 1


def check_report(lp: LoadedPolicy) -> str:
    """The text ``sysdispatch check`` prints."""
    pol, c = lp.policy, lp.compiled
    out = [f"policy {pol.name}: {pol.description}" if pol.description else f"policy {pol.name}",
           f"  arches {', '.join(pol.arches)}; default {actions.describe(pol.default.ret)}"
           if pol.default.ret is not None else f"  arches {', '.join(pol.arches)}; default "
           f"{pol.default.literal}",
           f"  bad arch {actions.describe(pol.bad_arch)}; {ENTRY}: "
           f"{len(c.program(ENTRY))} insns"]
    for (table, arch), array in c.arrays.items():
        t = pol.tables[table]
        slots = c.slots.get((table, arch), {})
        fall = pol.table_default(table)
        out.append("")
        out.append(f"table {array.name} (index {t.index}, {len(slots)}/{array.max_entries} slots,"
                   f" empty: {fall.literal})")
        out.append(f"  {'slot':>6}  {'key':<22} {'handler':<26} {'rules':>5} {'insns':>5}")
        for index in sorted(slots):
            h = pol.handlers[slots[index]]
            key = _key_name(pol, table, arch, index)
            rules = len(h.rules) if h.kind == "rules" else h.kind
            out.append(f"  {index:>6}  {key:<22} {h.name:<26} {rules:>5} "
                       f"{len(c.program(h.name)):>5}")
    used = {h for s in c.slots.values() for h in s.values()}
    unused = sorted(set(pol.handlers) - used)
    out.append("")
    out.append(f"ok: {len(c.handlers) + 1} programs verified, "
               f"{sum(len(s) for s in c.slots.values())} slots filled"
               + (f"; handlers in no table: {', '.join(unused)}" if unused else ""))
    return "\n".join(out) + "\n"


def _key_name(pol, table: str, arch: str | None, index: int) -> str:
    if arch is not None:
        nr = index + _arch.nr_bias(arch)
        return _arch.syscall_name(arch, nr) or str(nr)
    return pol.tables[table].key_names.get(index, str(index))


def _disasm(args: argparse.Namespace) -> int:
    from ..vm.disasm import disassemble
    lp = LoadedPolicy.from_file(args.policy, cache=False)
    c = lp.compiled
    names = [ENTRY, *c.handlers]
    if args.handler is not None:
        if args.handler not in names:
            raise PolicyError(f"{args.policy}: no handler '{args.handler}' (handlers: "
                              f"{', '.join(names)})")
        names = [args.handler]
    parts = []
    for name in names:
        prog = c.program(name)
        what = "entry program" if name == ENTRY else _describe_handler(lp, name)
        parts.append(f"; {name}: {what}, {len(prog)} insns\n{_annotate(disassemble(prog))}")
    print("\n".join(parts), end="")
    return 0


_RETURN = re.compile(r"^(\s*\d+:\s+w0 = (-?\d+))$")


def _annotate(text: str) -> str:
    """Name the seccomp action of each ``w0 = imm`` (a comment the assembler skips)."""
    def note(m: re.Match) -> str:
        return f"{m[1]}  ; {actions.describe(int(m[2]) & 0xFFFFFFFF)}"
    return "\n".join(_RETURN.sub(note, line) for line in text.split("\n"))


def _describe_handler(lp: LoadedPolicy, name: str) -> str:
    h = lp.policy.handlers[name]
    if h.kind != "rules":
        return f"{h.kind} handler"
    if h.synthetic:
        return "action"
    return f"{len(h.rules)} rules, default {lp.policy.handler_default(h).literal}"

