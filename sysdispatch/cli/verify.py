"""``sysdispatch prog verify FILE``: run the verifier on one program and say why it refuses.

Prints one line when the program is accepted (instructions processed, stack used, helpers,
tail calls); a refusal is the usual one-line error (``file:line:col: pc N: insn: reason``, exit
status 2). ``--log`` first prints the verifier log of the states walked, like the kernel's.
Programs that use maps name them with ``--map NAME:TYPE:KEY_SIZE:VALUE_SIZE:MAX_ENTRIES``
(TYPE array, hash or prog_array), and refer to them in assembly as ``map[NAME]``.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import SysdispatchError
from ..vm.program import PROG_TYPES


def register(sub: argparse._SubParsersAction) -> None:
    # Lives under `prog` when that group exists (it is registered first), else on its own.
    target = sub
    prog = sub.choices.get("prog")
    if prog is not None:
        target = next((a for a in prog._actions if isinstance(a, argparse._SubParsersAction)),
                      sub)
    v = target.add_parser("verify", help="verify a program as the kernel's verifier would",
                          description=__doc__.split("\n\n")[0])
    v.add_argument("file", metavar="FILE", help="assembly text, or raw instructions (.bin)")
    v.add_argument("--type", choices=sorted(PROG_TYPES), default="generic",
                   help="program type: generic (r1 = memory of --mem-size bytes, r2 = its "
                        "length) or seccomp (r1 = struct seccomp_data)")
    v.add_argument("--mem-size", type=int, default=0, metavar="N",
                   help="generic type: bytes of memory r1 points to (default 0)")
    v.add_argument("--map", action="append", default=[], metavar="NAME:TYPE:K:V:N",
                   help="a map the program refers to as map[NAME] (repeatable)")
    v.add_argument("--log", action="store_true", help="print the verifier log")
    v.add_argument("--limit", type=int, default=None, metavar="N",
                   help="budget of processed instructions (default 1000000)")
    v.set_defaults(func=cmd_verify)


def parse_map(spec: str):
    from ..vm.maps import ArrayMap, HashMap, ProgArray

    parts = spec.split(":")
    if len(parts) != 5:
        raise SysdispatchError(f"--map '{spec}': want NAME:TYPE:KEY_SIZE:VALUE_SIZE:MAX_ENTRIES")
    name, kind = parts[0], parts[1]
    try:
        key, value, entries = (int(p, 0) for p in parts[2:])
    except ValueError:
        raise SysdispatchError(f"--map '{spec}': sizes must be numbers") from None
    if kind == "array":
        if key != 4:
            raise SysdispatchError(f"--map '{spec}': an array's key is 4 bytes")
        return ArrayMap(value, entries, name=name)
    if kind == "hash":
        return HashMap(key, value, entries, name=name)
    if kind == "prog_array":
        if (key, value) != (4, 4):
            raise SysdispatchError(f"--map '{spec}': a prog_array's key and value are 4 bytes")
        return ProgArray(entries, name=name)
    raise SysdispatchError(f"--map '{spec}': unknown map type '{kind}' (array, hash, "
                           f"prog_array)")


def cmd_verify(args: argparse.Namespace) -> int:
    from ..vm.verifier import COMPLEXITY_LIMIT, verify

    maps = {}
    for spec in args.map:
        m = parse_map(spec)
        maps[m.name] = m
    from .prog import load_file
    prog = load_file(args.file, PROG_TYPES[args.type], maps)
    try:
        vp = verify(prog, PROG_TYPES[args.type], mem_size=args.mem_size, log=args.log,
                    insn_limit=args.limit or COMPLEXITY_LIMIT)
    except SysdispatchError as exc:
        if args.log and getattr(exc, "log", None):
            sys.stdout.write(exc.log)
            sys.stdout.flush()
        raise
    if args.log:
        sys.stdout.write(vp.log)
    helpers = ", ".join(str(h) for h in sorted(vp.helpers)) or "none"
    print(f"{args.file}: accepted ({args.type}): {vp.insn_processed} insns processed, "
          f"stack {vp.stack_depth} bytes, helpers {helpers}, "
          f"tail calls {'yes' if vp.tail_calls else 'no'}")
    return 0
