"""``sysdispatch prog``: run, assemble, disassemble and conformance-test single eBPF programs.

* ``prog run FILE`` runs a program (``.bin``: raw little-endian instructions; anything else:
  assembly text) on the interpreter and prints r0, for seccomp programs with the decoded action;
* ``prog asm FILE -o OUT.bin`` / ``prog disasm FILE`` convert between text and bytes;
* ``prog test PATH...`` runs bpf_conformance ``.data`` files: one line per failure, then
  ``N passed, N failed``; exit status 0 only when every test passed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import Location, SysdispatchError
from ..vm.program import PROG_TYPES, Program, ProgType

SECCOMP_TYPE = "seccomp"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prog", help="run, assemble, disassemble and test eBPF programs",
                       description=__doc__.split("\n\n")[0])
    p.set_defaults(func=lambda args: _usage(p))
    actions = p.add_subparsers(dest="action", metavar="ACTION")

    r = actions.add_parser("run", help="run a program and print r0",
                           description="Run FILE (.bin raw instructions, else assembly) on the "
                                       "interpreter and print r0.")
    r.add_argument("file", metavar="FILE")
    r.add_argument("--type", choices=sorted(PROG_TYPES), default="generic",
                   help="program type: generic (r1/r2 = --mem) or seccomp (r1 = --ctx)")
    r.add_argument("--mem", metavar="HEX", help="memory for a generic program, as hex bytes")
    r.add_argument("--ctx", metavar="SPEC",
                   help="seccomp_data for a seccomp program: nr=NAME|N,arch=x86_64|0x..,"
                        "ip=N,args=A,B,...")
    r.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="instruction budget (default 1000000)")
    r.add_argument("--engine", choices=("interp", "jit"), default="interp",
                   help="interp (default) or jit (compiled to Python; same results)")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.set_defaults(func=cmd_run)

    a = actions.add_parser("asm", help="assemble a program to raw bytes")
    a.add_argument("file", metavar="FILE")
    a.add_argument("-o", "--output", required=True, metavar="OUT.bin")
    a.add_argument("--type", choices=sorted(PROG_TYPES), default="generic")
    a.set_defaults(func=cmd_asm)

    d = actions.add_parser("disasm", help="disassemble a program (.bin or assembly)")
    d.add_argument("file", metavar="FILE")
    d.add_argument("--type", choices=sorted(PROG_TYPES), default="generic")
    d.add_argument("--bytes", action="store_true", help="show the raw bytes of each instruction")
    d.set_defaults(func=cmd_disasm)

    t = actions.add_parser("test", help="run bpf_conformance .data files",
                           description="Run bpf_conformance test files (directories: their "
                                       "*.data files). One line per failure, then a summary.")
    t.add_argument("paths", nargs="+", metavar="PATH")
    t.add_argument("--engine", choices=_engines(), default="interp",
                   help="which engine runs the programs (both: each file on both engines, "
                        "which must agree)")
    t.add_argument("-v", "--verbose", action="store_true", help="also list the tests that pass")
    t.set_defaults(func=cmd_test)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _engines() -> list[str]:
    from ..vm.conformance import ENGINES
    return sorted(ENGINES)


# --- loading -------------------------------------------------------------------------------------

def load_file(path: str, prog_type: ProgType, maps: dict | None = None) -> Program:
    """A program from ``path``: raw instructions for ``.bin``, assembly text otherwise;
    ``maps`` are the maps it may name (``map[NAME]``), by name."""
    maps = maps or {}
    p = Path(path)
    data = p.read_bytes()
    if p.suffix == ".bin":
        try:
            return Program.from_bytes(data, prog_type=prog_type, name=p.stem,
                                      maps=list(maps.values()))
        except SysdispatchError as exc:
            raise exc.at(loc=Location(str(p))) from None
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise SysdispatchError(f"not UTF-8 assembly text (byte {exc.start}); raw programs "
                               "must be named *.bin", loc=Location(str(p))) from None
    from ..vm.asm import assemble
    return assemble(text, filename=str(p), prog_type=prog_type, maps=maps, name=p.stem)


def parse_hex(text: str, what: str) -> bytes:
    cleaned = "".join(text.replace(",", " ").split())
    if cleaned[:2].lower() == "0x":
        cleaned = cleaned[2:]
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise SysdispatchError(f"{what}: not hex bytes: '{text}'") from None


def parse_ctx(spec: str):
    """``nr=openat,arch=x86_64,ip=0x1000,args=1,2,3`` -> SeccompData (arch defaults to x86_64;
    nr may be a syscall name, resolved for that arch through libseccomp)."""
    from ..seccomp import arch as arches
    from ..seccomp.data import SeccompData

    fields: dict[str, str] = {}
    args: list[str] = []
    current = None
    for part in spec.split(","):
        key, eq, value = part.partition("=")
        key = key.strip()
        if eq:
            if key not in ("nr", "arch", "ip", "args"):
                raise SysdispatchError(f"--ctx: unknown field '{key}' (nr, arch, ip, args)")
            current = key
            if key == "args":
                args = [value] if value.strip() else []
            else:
                fields[key] = value.strip()
        elif current == "args" and key:
            args.append(key)
        elif key:
            raise SysdispatchError(f"--ctx: '{part}' is not FIELD=VALUE")
    if len(args) > 6:
        raise SysdispatchError(f"--ctx: at most 6 args, got {len(args)}")
    try:
        arch_text = fields.get("arch", "x86_64")
        try:
            audit = int(arch_text, 0)
            arch = arches.by_audit(audit)
        except ValueError:
            arch = arches.by_name(arch_text)
            audit = arch.audit
        if "nr" not in fields:
            raise ValueError("nr is required")
        nr_text = fields["nr"]
        if arch is None:
            nr = int(nr_text, 0)
        else:
            nr = arch.resolve(nr_text)
        ip = int(fields.get("ip", "0"), 0)
        values = tuple(int(a.strip(), 0) for a in args)
    except ValueError as exc:
        raise SysdispatchError(f"--ctx: {exc}") from None
    return SeccompData(nr, audit, ip, values)


# --- commands ------------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from ..vm.engine import run
    from ..vm.helpers import Host, Printk
    from ..vm.interp import DEFAULT_MAX_STEPS

    ptype = PROG_TYPES[args.type]
    program = load_file(args.file, ptype)
    ctx = mem = None
    if args.type == SECCOMP_TYPE:
        if args.mem is not None:
            raise SysdispatchError("--mem is for generic programs; a seccomp program reads --ctx")
        ctx = parse_ctx(args.ctx) if args.ctx else None
    else:
        if args.ctx is not None:
            raise SysdispatchError("--ctx is for seccomp programs; give a generic program --mem")
        mem = bytearray(parse_hex(args.mem, "--mem")) if args.mem is not None else None
    host = Host()
    steps = DEFAULT_MAX_STEPS if args.max_steps is None else args.max_steps
    try:
        result = run(program, ctx, engine=args.engine, mem=mem, host=host, max_steps=steps)
    except SysdispatchError as exc:  # name the file for raw programs too
        raise exc.at(loc=Location(args.file)) from None
    action = None
    if args.type == SECCOMP_TYPE:
        from ..seccomp.actions import describe
        action = describe(result.r0 & 0xFFFF_FFFF)
    printk = [e.text for e in host.events if isinstance(e, Printk)]
    if args.json:
        out = {"r0": result.r0, "r0_hex": f"0x{result.r0:x}", "steps": result.steps,
               "tail_calls": result.tail_calls, "chain": [p.name for p in result.chain],
               "trace_printk": printk}
        if action is not None:
            out["action"] = action
        print(json.dumps(out))
        return 0
    for line in printk:
        print(f"trace_printk: {line}")
    print(f"r0 = 0x{result.r0:x} ({result.r0})")
    if action is not None:
        print(f"action: {action}")
    print(f"steps: {result.steps}, tail calls: {result.tail_calls}")
    return 0


def cmd_asm(args: argparse.Namespace) -> int:
    program = load_file(args.file, PROG_TYPES[args.type])
    Path(args.output).write_bytes(program.bytes())
    print(f"{args.output}: {len(program)} instructions, {len(program) * 8} bytes")
    return 0


def cmd_disasm(args: argparse.Namespace) -> int:
    from ..vm.disasm import disassemble
    program = load_file(args.file, PROG_TYPES[args.type])
    print(disassemble(program, with_bytes=args.bytes))
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from ..vm.conformance import collect, run_case, summary
    files = collect(args.paths)
    if not files:
        raise SysdispatchError(f"no test files in {' '.join(args.paths)}")
    outcomes = []
    for path in files:
        outcome = run_case(path, args.engine)
        outcomes.append(outcome)
        if not outcome.passed:
            print(f"{path}: {outcome.reason}")
        elif args.verbose:
            print(f"{path}: ok")
    print(summary(outcomes))
    return 0 if all(o.passed for o in outcomes) else 1
