"""``sysdispatch explain POLICY [--handler NAME]``: a policy's tables, slots and handlers in words.

    sysdispatch explain filters/dispatch-demo.toml
    sysdispatch explain filters/dispatch-demo.toml --handler openat_rules

Without ``--handler``: every jump table with its occupancy and slots, and every handler with its
rules in words and its instruction count. With ``--handler NAME`` (or ``syscall_entry``): that
program's disassembly. POLICY is a policy file (.toml) or an OCI/Docker profile (.json).
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="a policy's program table in words; a handler's disassembly",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("policy", metavar="POLICY", help="policy file (.toml) or OCI profile (.json)")
    p.add_argument("--handler", metavar="NAME", help="disassemble this handler")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    from ..dash.explain import explain, handler_disassembly
    from ..policy.compile import compile_policy
    from .policy_io import load_policy
    policy, warnings = load_policy(args.policy)
    for w in warnings:
        print(f"sysdispatch: warning: {args.policy}: {w}", file=sys.stderr)
    compiled = compile_policy(policy)
    if args.handler:
        sys.stdout.write(handler_disassembly(policy, compiled, args.handler))
    else:
        sys.stdout.write(explain(policy, compiled))
    return 0
