"""``sysdispatch generate``: a least-privilege policy from recorded traces.

    sysdispatch generate TRACE... [-o filters/NAME.toml] [--name NAME] [--default errno(EPERM)]
                         [--args socket,clone,ioctl:1] [--format toml|oci] [--allow-truncated]

Allows every syscall the traces show (merging several runs), denies the rest with the default.
For the syscalls in ``--args`` only the argument values seen are allowed (``NAME:i`` picks
args[i]; the default index is the argument that names the kind of call, e.g. socket's family).
``--format oci`` writes an OCI/Docker seccomp profile instead. ``sysdispatch replay TRACE...
--policy OUT`` then replays the same traces with no denials.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="a least-privilege policy from recorded traces",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="+", metavar="TRACE", help="trace files (.jsonl)")
    p.add_argument("-o", dest="output", metavar="FILE", help="write here (default: stdout)")
    p.add_argument("--name", help="policy name (default: the output file's stem)")
    p.add_argument("--default", default="errno(EPERM)", metavar="ACTION",
                   help="what a syscall the traces do not show gets (default errno(EPERM))")
    p.add_argument("--args", metavar="SYSCALL[:i],...",
                   help="constrain these syscalls' argument to the values seen")
    p.add_argument("--format", default="toml", choices=("toml", "oci"))
    p.add_argument("--allow-truncated", action="store_true",
                   help="read a trace whose last line is partial")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from ..policy.generate import generate, parse_args_spec, to_oci, to_toml
    name = args.name or (Path(args.output).stem if args.output else "generated")
    gen = generate(args.traces, name=name, default=args.default,
                   args=parse_args_spec(args.args), allow_truncated=args.allow_truncated)
    warnings = list(gen.notes)
    if gen.denied_when_recorded:
        warnings.append(f"{gen.denied_when_recorded} recorded calls were denied by the recording "
                        f"policy; the generated policy allows them")
    for sname in gen.unconstrained:
        warnings.append(f"--args {sname}: too many distinct values, allowed whatever they are")
    if args.format == "oci":
        text, more = to_oci(gen)
        warnings += more
    else:
        text = to_toml(gen)
    for w in warnings:
        print(f"sysdispatch: warning: {w}", file=sys.stderr)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        slots = sum(len(s) for s in gen.policy.tables["syscalls"].by_arch.values())
        print(f"{args.output}: {slots} syscalls allowed from {gen.events} calls in "
              f"{len(gen.traces)} trace{'s' if len(gen.traces) != 1 else ''}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
