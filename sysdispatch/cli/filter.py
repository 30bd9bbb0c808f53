"""``sysdispatch filter``: read, show and write classic seccomp filters.

* ``filter dump -p PID [-o DIR]`` — the filters a running process has (PTRACE_SECCOMP_GET_FILTER,
  needs root), oldest first; ``-o DIR`` writes one raw file per filter.
* ``filter dump [--limit N] [-o DIR] -- CMD ...`` — run CMD under ptrace, collect every filter it
  installs (at the exit of each seccomp(SET_MODE_FILTER) / prctl(PR_SET_SECCOMP) call), and stop
  it at the first exec after a filter, at exit, or after N filters — as seccomp-tools does.
* ``filter disasm FILE`` and ``filter asm FILE -o OUT`` — the text syntax of
  :mod:`sysdispatch.seccomp.cfilter`, round-tripping exactly.
"""

from __future__ import annotations

import argparse
import errno as _errno
import os
import signal
import sys
from pathlib import Path

from ..errors import TraceError
from ..seccomp import arch as _arch
from ..seccomp import cfilter
from ..seccomp.stack import ClassicFilter

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_SET_MODE_FILTER = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("filter", help="dump, disassemble and assemble classic seccomp filters",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    fsub = p.add_subparsers(dest="filter_command", metavar="ACTION", required=True,
                            parser_class=type(p))

    d = fsub.add_parser("dump", help="read the filters of a process (-p PID) or of a command")
    d.add_argument("-p", "--pid", type=int, help="a running process (needs root)")
    d.add_argument("-o", "--output", metavar="DIR", help="write one raw file per filter here")
    d.add_argument("--limit", type=int, default=0,
                   help="with a command: stop after this many filters (default: at its first "
                        "exec after a filter, or its exit)")
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
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if (args.pid is None) == (not cmd):
        raise TraceError("give either -p PID or -- CMD [ARG...]")
    if args.pid is not None:
        filters = dump_pid(args.pid)
        origin = f"process {args.pid}"
    else:
        filters = dump_command(cmd, limit=args.limit)
        origin = f"'{' '.join(cmd)}'"
    _show(filters, origin, args)
    return 0


def _root_hint(exc: TraceError) -> TraceError:
    if getattr(exc, "errno", None) in (_errno.EPERM, _errno.EACCES):
        return TraceError(f"reading seccomp filters needs root (CAP_SYS_ADMIN, and not being "
                          f"under seccomp yourself): {exc}")
    return exc


def dump_pid(pid: int) -> list[bytes]:
    """The filters of running process ``pid``, oldest first (stops it briefly)."""
    from ..trace import ptrace as pt
    try:
        pt.seize(pid)
    except TraceError as exc:
        if getattr(exc, "errno", None) == _errno.ESRCH:
            raise TraceError(f"no process {pid}") from None
        raise _root_hint(exc) from None
    try:
        pt.interrupt(pid)
        while True:
            _, status = pt.wait(pid)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                raise TraceError(f"process {pid} exited before its filters could be read")
            if pt.event(status) == pt.PTRACE_EVENT_STOP:
                break
            # A signal arrived first: deliver it and keep waiting for our interrupt.
            pt.cont(pid, os.WSTOPSIG(status) if os.WSTOPSIG(status) != signal.SIGTRAP else 0)
        try:
            return pt.seccomp_filters(pid)
        except TraceError as exc:
            raise _root_hint(exc) from None
    finally:
        try:
            pt.detach(pid)
        except TraceError:
            pass


def dump_command(cmd: list[str], *, limit: int = 0) -> list[bytes]:
    """Run ``cmd`` under ptrace and return the filters it installs, oldest first."""
    from ..trace import ptrace as pt
    r, w = os.pipe()  # carries an exec failure back from the child
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.set_inheritable(w, False)
            pt.traceme()
            os.kill(os.getpid(), signal.SIGSTOP)
            os.execvp(cmd[0], cmd)
        except OSError as exc:
            os.write(w, f"{cmd[0]}: {exc.strerror}".encode())
        finally:
            os._exit(127)
    os.close(w)
    found: list[bytes] = []
    try:
        _, status = pt.wait(pid)
        pt.setoptions(pid, pt.PTRACE_O_TRACESYSGOOD | pt.PTRACE_O_TRACEEXEC | pt.PTRACE_O_EXITKILL)
        pt.syscall(pid)
        installing = False
        while True:
            _, status = pt.wait(pid)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                break
            sig = os.WSTOPSIG(status)
            if sig == pt.SYSCALL_STOP:
                info = pt.get_syscall_info(pid)
                if info.op == pt.PTRACE_SYSCALL_INFO_ENTRY:
                    installing = _installs_filter(info)
                elif info.op == pt.PTRACE_SYSCALL_INFO_EXIT and installing:
                    installing = False
                    if info.rval >= 0:
                        try:
                            now = pt.seccomp_filters(pid)
                        except TraceError as exc:
                            raise _root_hint(exc) from None
                        found += now[len(found):]
                        if limit and len(found) >= limit:
                            found = found[:limit]
                            break
                pt.syscall(pid)
            elif pt.is_event_stop(status, pt.PTRACE_EVENT_EXEC):
                if found:
                    break
                pt.syscall(pid)
            else:
                pt.syscall(pid, 0 if sig == signal.SIGTRAP else sig)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    failure = os.read(r, 4096).decode(errors="replace")
    os.close(r)
    if failure:
        raise TraceError(failure)
    return found


def _installs_filter(info) -> bool:
    arch = _arch.by_audit(info.arch)
    if arch is None:
        return False
    on = _arch.for_number(arch, info.nr)
    nr = info.nr
    return ((nr == on.syscall_number("seccomp") and info.args[0] == SECCOMP_SET_MODE_FILTER)
            or (nr == on.syscall_number("prctl") and info.args[0] == PR_SET_SECCOMP
                and info.args[1] == SECCOMP_MODE_FILTER))


def _show(filters: list[bytes], origin: str, args: argparse.Namespace) -> None:
    if not filters:
        print(f"{origin} has no seccomp filters")
        return
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        for i, raw in enumerate(filters):
            path = out / f"filter-{i}.bpf"
            path.write_bytes(raw)
            print(f"wrote {path}: {len(raw) // 8} instructions")
        return
    arch = _arch_of(args.arch)
    for i, raw in enumerate(filters):
        f = ClassicFilter.from_bytes(raw, name=f"filter {i}")
        order = " (oldest)" if i == 0 and len(filters) > 1 else (
            " (newest)" if i == len(filters) - 1 and len(filters) > 1 else "")
        print(f"# filter {i} of {len(filters)}{order}, {len(f)} instructions, from {origin}")
        sys.stdout.write(cfilter.disassemble(f.insns, arch=arch))
        if i != len(filters) - 1:
            print()
