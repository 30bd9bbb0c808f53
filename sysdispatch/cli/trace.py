"""``sysdispatch trace``: run a command (or attach to a process) under a policy, enforced live.

    sysdispatch trace [--policy FILE] [--audit] [--all] [--record FILE.jsonl] [--summary]
                      [--dashboard] [--on-trace MODULE:FUNC] [--engine interp|jit] [--cpu C]
                      [-o FILE] [-q] [-v] -- CMD [ARG...]
    sysdispatch trace [OPTIONS] -p PID

Children, threads and exec'd programs are followed. One line per event goes to stderr (``-o``
to a file, ``-q`` for none): every syscall whose verdict is not ALLOW, every dispatched one with
``-v``. Without ``--policy`` the embedded default policy decides (allow all, log dangerous
calls). ``--audit`` reports verdicts without enforcing them. In spawn mode only the syscalls the
policy must decide stop in the tracer (a kernel prefilter allows the rest); ``--all`` (and
``--record``, ``--summary``, ``--audit``, ``--dashboard``) dispatches every syscall. ``-p`` uses
syscall-entry stops instead, and Ctrl-C detaches. ``--dashboard`` draws a live table (event
lines then go only to ``-o FILE``).

Exit status: the command's own, or 128 + the signal that ended it (159: killed by SIGSYS, e.g.
a KILL verdict); 130 after Ctrl-C in spawn mode; 2 for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from ..errors import TraceError

ENGINES = ("interp", "jit")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="run a command under a policy (ptrace), or attach (-p)",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", metavar="FILE",
                   help="policy file (.toml) or OCI profile (.json); default: the embedded one")
    p.add_argument("--audit", action="store_true",
                   help="report every would-be verdict, change nothing")
    p.add_argument("-p", dest="pid", type=int, metavar="PID", help="attach to a running process")
    p.add_argument("--record", metavar="FILE.jsonl", help="write every dispatched syscall")
    p.add_argument("--summary", action="store_true", help="print a table of calls at the end")
    p.add_argument("--json", action="store_true",
                   help="with --summary: the summary as JSON (for scripts) instead of the table")
    p.add_argument("--dashboard", action="store_true",
                   help="a live table of the dispatched syscalls (plain lines when stdout is not "
                   "a terminal; 's' toggles sorting by calls/denials)")
    p.add_argument("--on-trace", metavar="MODULE:FUNC", help="answer TRACE/USER_NOTIF verdicts")
    p.add_argument("--all", action="store_true", help="dispatch every syscall")
    p.add_argument("--engine", default="interp", choices=ENGINES, help="how the policy runs")
    p.add_argument("--cpu", type=int, metavar="C",
                   help="run tracer and traced command on CPU C only (a ptrace stop is several "
                   "times cheaper without a cross-CPU wake-up; threads then share that CPU)")
    p.add_argument("-o", dest="output", metavar="FILE", help="event lines to FILE, not stderr")
    p.add_argument("-q", dest="quiet", action="store_true", help="no event lines")
    p.add_argument("-v", dest="verbose", action="store_true",
                   help="a line for every dispatched syscall")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    p.set_defaults(func=cmd_trace)


def _policy(args: argparse.Namespace):
    from ..policy.loaded import LoadedPolicy
    from ..trace.record import policy_hash
    from ..policy.parse import default_path
    from .policy_io import load_policy
    path = args.policy or str(default_path())
    data = Path(path).read_bytes()
    model, warnings = load_policy(path)
    for w in warnings:
        print(f"sysdispatch: {path}: {w}", file=sys.stderr)
    return LoadedPolicy(model, engine=args.engine), policy_hash(data)


def cmd_trace(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if args.pid is not None and command:
        raise TraceError("trace: give either -p PID or a command, not both")
    if args.pid is None and not command:
        raise TraceError("trace: no command (sysdispatch trace [OPTIONS] -- CMD [ARG...])")
    from ..seccomp.arch import native
    from ..trace.events import Header
    from ..trace.tracer import Tracer
    if args.cpu is not None:
        import os
        if args.cpu not in os.sched_getaffinity(0):
            raise TraceError(f"trace: CPU {args.cpu} is not available to this process")
        os.sched_setaffinity(0, {args.cpu})   # the command inherits it
    loaded, digest = _policy(args)
    hook = None
    if args.on_trace:
        from ..trace.hooks import load
        hook = load(args.on_trace)
    # the dashboard owns the terminal: event lines would tear it (-o FILE still gets them)
    out = None if args.quiet or (args.dashboard and not args.output) else sys.stderr
    close_out = False
    if args.output and not args.quiet:
        out = open(args.output, "w", encoding="utf-8")
        close_out = True
    header = Header(arch=native().name, policy=loaded.policy.name, policy_hash=digest,
                    command=tuple(command) if command else ("-p", str(args.pid)),
                    start_time=time.time(), mode="audit" if args.audit else "enforce")
    sinks = []
    summary = None
    stack = contextlib.ExitStack()
    try:
        if args.dashboard:
            from ..dash.live import dashboard_sink
            sinks.append(stack.enter_context(dashboard_sink(loaded, header.command, header.mode)))
        if args.record:
            from ..trace.record import Recorder
            sinks.append(Recorder(args.record, header))
        if args.summary:
            from ..trace.summary import Summary
            summary = Summary(header)
            sinks.append(summary)
        tracer = Tracer(loaded, audit=args.audit, sinks=sinks, out=out, verbose=args.verbose,
                        dispatch_all=args.all, hook=hook, reap_orphans=True)
        with stack:
            status = tracer.attach(args.pid) if args.pid is not None else tracer.spawn(command)
        if summary is not None:
            if args.json:
                import json
                (out or sys.stderr).write(json.dumps(summary.to_json(), indent=2) + "\n")
            else:
                from ..trace.summary import format_text
                (out or sys.stderr).write(format_text(summary))
        return status
    finally:
        stack.close()   # stops the dashboard if the tracer failed
        if close_out:
            out.close()
