"""``sysdispatch filter``: read, show and write classic seccomp filters.

* ``filter dump -p PID [-o DIR]`` — the filters a running process has (PTRACE_SECCOMP_GET_FILTER,
  needs root), oldest first; ``-o DIR`` writes one raw file per filter.
* ``filter dump [--limit N] [-o DIR] -- CMD ...`` — run CMD under ptrace, following its forks,
  vforks and clones (threads too), and collect every filter any of them installs (at the exit of
  each seccomp(SET_MODE_FILTER) / prctl(PR_SET_SECCOMP) call); stop after N filters in all
  when --limit N is given, else at the first exec of a process after it installed filters unless
  another process may still install some; or when all have exited. The ptrace work is
  :mod:`sysdispatch.trace.dump`; this module parses arguments and prints.
* ``filter disasm FILE`` and ``filter asm FILE -o OUT`` — the text syntax of
  :mod:`sysdispatch.seccomp.cfilter`, round-tripping exactly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import TraceError
from ..seccomp import arch as _arch
from ..seccomp import cfilter
from ..seccomp.stack import ClassicFilter

_DUMP_EPILOG = """\
Output: when one process installed filters (or with -p PID), each is shown under
'# filter I of N, ...' and -o DIR writes DIR/filter-I.bpf. When several processes of
the command did, each header names the process ('# pid PID: filter I of N, ...') and
-o DIR writes DIR/pidPID-filter-I.bpf. I counts from 0, the oldest, within one
process; processes come in the order they installed their first filter. A process
lists the filters it installed itself: a child also runs under those it inherited
from its parent, listed under the parent's pid."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("filter", help="dump, disassemble and assemble classic seccomp filters",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    fsub = p.add_subparsers(dest="filter_command", metavar="ACTION", required=True,
                            parser_class=type(p))

    d = fsub.add_parser("dump", help="read the filters of a process (-p PID) or of a command",
                        epilog=_DUMP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("-p", "--pid", type=int, help="a running process (needs root)")
    d.add_argument("-o", "--output", metavar="DIR", help="write one raw file per filter here")
    d.add_argument("--limit", type=int, default=0,
                   help="with a command: stop after this many filters in all processes, or "
                        "when all exited (default: at the first exec of a process after it "
                        "installed filters, once no other process may still install one, or "
                        "when all exited)")
    d.add_argument("--arch", default=None, help="architecture for syscall names (default: native)")
    d.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARG...]: run it and dump")
    d.set_defaults(func=_dump)

    s = fsub.add_parser("disasm", help="show a raw classic filter as text")
    s.add_argument("file")
    s.add_argument("--arch", default=None, help="architecture for syscall names (default: native)")
    s.add_argument("--no-raw", action="store_true", help="leave out the code/jt/jf/k columns")
    s.set_defaults(func=_disasm)

    a = fsub.add_parser("asm", help="assemble filter text into a raw classic filter")
    a.add_argument("file")
    a.add_argument("-o", "--output", required=True, metavar="OUT")
    a.add_argument("--arch", default=None,
                   help="architecture for syscall names when the text has no .arch line")
    a.set_defaults(func=_asm)


def _arch_of(name: str | None) -> _arch.Arch:
    if name is None:
        return _arch.native()
    try:
        return _arch.by_name(name)
    except ValueError as exc:
        raise TraceError(str(exc)) from None


def _disasm(args: argparse.Namespace) -> int:
    f = ClassicFilter.from_bytes(Path(args.file).read_bytes(), name=args.file)
    sys.stdout.write(cfilter.disassemble(f.insns, arch=_arch_of(args.arch), raw=not args.no_raw))
    return 0


def _asm(args: argparse.Namespace) -> int:
    text = Path(args.file).read_text()
    default = _arch_of(args.arch)
    insns = cfilter.assemble(text, filename=args.file,
                             **({"arch": default} if args.arch else {"default_arch": default}))
    raw = b"".join(i.encode() for i in insns)
    Path(args.output).write_bytes(raw)
    print(f"wrote {args.output}: {len(insns)} instructions ({len(raw)} bytes)")
    return 0


# --- dump ---------------------------------------------------------------------------------------


def _dump(args: argparse.Namespace) -> int:
    from ..trace import dump as _tdump   # lazily: imports python-ptrace
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if (args.pid is None) == (not cmd):
        raise TraceError("give either -p PID or -- CMD [ARG...]")
    if args.limit < 0:
        raise TraceError(f"--limit {args.limit}: must be 0 (no limit) or more")
    arch = _arch_of(args.arch)
    if args.pid is not None:
        _show_one(_tdump.dump_pid(args.pid), f"process {args.pid}", args, arch)
        return 0
    origin = f"'{' '.join(cmd)}'"
    by_pid = _tdump.dump_command(cmd, limit=args.limit)
    if len(by_pid) <= 1:
        _show_one(next(iter(by_pid.values()), []), origin, args, arch)
    else:
        _show_many(by_pid, origin, args, arch)
    return 0


def _order(i: int, n: int) -> str:
    if n < 2:
        return ""
    return " (oldest)" if i == 0 else (" (newest)" if i == n - 1 else "")


def _show_one(filters: list[bytes], origin: str, args: argparse.Namespace,
              arch: _arch.Arch) -> None:
    """One process's filters: ``filter-<i>.bpf`` files or text, as for ``-p PID``."""
    if not filters:
        print(f"{origin} has no seccomp filters")
        return
    if args.output:
        _write(Path(args.output), [(f"filter-{i}.bpf", raw) for i, raw in enumerate(filters)])
        return
    for i, raw in enumerate(filters):
        f = ClassicFilter.from_bytes(raw, name=f"filter {i}")
        print(f"# filter {i} of {len(filters)}{_order(i, len(filters))}, {len(f)} instructions, "
              f"from {origin}")
        sys.stdout.write(cfilter.disassemble(f.insns, arch=arch))
        if i != len(filters) - 1:
            print()


def _show_many(by_pid: dict[int, list[bytes]], origin: str, args: argparse.Namespace,
               arch: _arch.Arch) -> None:
    """Filters of several processes: each header and file name carries the pid; ``<i>``
    counts within one process (0 = the oldest it installed)."""
    if args.output:
        _write(Path(args.output), [(f"pid{pid}-filter-{i}.bpf", raw)
                                   for pid, filters in by_pid.items()
                                   for i, raw in enumerate(filters)])
        return
    first = True
    for pid, filters in by_pid.items():
        for i, raw in enumerate(filters):
            if not first:
                print()
            first = False
            f = ClassicFilter.from_bytes(raw, name=f"pid {pid} filter {i}")
            print(f"# pid {pid}: filter {i} of {len(filters)}{_order(i, len(filters))}, "
                  f"{len(f)} instructions, from {origin}")
            sys.stdout.write(cfilter.disassemble(f.insns, arch=arch))


def _write(out: Path, files: list[tuple[str, bytes]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, raw in files:
        path = out / name
        path.write_bytes(raw)
        print(f"wrote {path}: {len(raw) // 8} instructions")
