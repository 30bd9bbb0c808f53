"""``sysdispatch replay``: recorded syscalls through a policy again, without running anything.

    sysdispatch replay TRACE... --policy P [--diff P2] [--json] [--engine E] [--allow-truncated]
                               [--jobs N] [--progress | --no-progress]

Every event of the traces (recorded with ``sysdispatch trace --record``) is decided again by
policy P, in recorded order, each trace with freshly loaded policies (so policies that keep state
in maps behave as they did live). Without ``--diff``: the verdicts per syscall (a ``--summary``
table of the replayed decisions) and every event whose verdict differs from the recorded one.
With ``--diff P2``: every event that P and P2 decide differently. P is a policy file (.toml), an
OCI/Docker profile (.json), or ``default`` (the embedded default policy).

Traces are streamed (memory does not grow with their length); ``--json`` keeps the listed events
until it prints them. ``--jobs N`` replays the trace files in N worker processes (one file per
worker at a time); the report is the same as with one, in file order. A progress bar per trace
(bytes read) is drawn on stderr when it is a terminal, or with ``--progress``.

Exit status: 0 when no event was listed, 1 when some were (like diff(1)), 2 for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import SysdispatchError
from ..policy.parse import default_path
from ..trace.record import TraceReader, policy_hash
from ..trace.replay import (Replayed, call_text, difference_json, header_json, replay,
                            verdict_text)
from ..trace.summary import Summary, format_text

EXIT_DIFFERENT = 1
EMBEDDED_DEFAULT = default_path()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="decide recorded syscalls again with a policy (or two)",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="+", metavar="TRACE", help="trace files (.jsonl)")
    p.add_argument("--policy", required=True, metavar="P",
                   help="policy file, OCI profile (.json), or 'default'")
    p.add_argument("--diff", metavar="P2", help="list the events P2 decides differently from P")
    p.add_argument("--engine", default="interp", choices=("interp", "jit", "reference"),
                   help="how the policies run (default interp)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--dashboard", action="store_true",
                   help="the live dashboard over the replayed decisions (plain lines when stdout "
                   "is not a terminal)")
    p.add_argument("--allow-truncated", action="store_true",
                   help="read a trace whose last line is partial (a killed recorder)")
    p.add_argument("--jobs", "-j", type=_jobs, default=1, metavar="N",
                   help="replay the trace files in N processes (0: one per core; default 1)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar on stderr (default: when stderr is a terminal)")
    p.set_defaults(func=cmd_replay)


class _PolicySource:
    """A policy named on the command line: read once, compiled fresh for every trace."""

    def __init__(self, spec: str, engine: str) -> None:
        from ..policy.loaded import LoadedPolicy
        from .policy_io import load_policy
        self.path = str(EMBEDDED_DEFAULT) if spec == "default" and not Path(spec).exists() \
            else spec
        data = Path(self.path).read_bytes()
        self.label = spec
        self.hash = policy_hash(data)
        self.model, self.warnings = load_policy(self.path)
        self.name = self.model.name
        self._make: Callable[[], LoadedPolicy] = lambda: LoadedPolicy(self.model, engine=engine)
        self._make()  # compile once now, so a policy that does not compile fails before output

    def __call__(self):
        return self._make()

    def json(self) -> dict:
        return {"file": self.path, "name": self.name, "sha256": self.hash}


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n or (os.cpu_count() or 1)


def cmd_replay(args: argparse.Namespace) -> int:
    if args.jobs > 1 and args.dashboard:
        # The dashboard is one live model fed event by event in order; workers only hand back
        # per-file totals, so the two cannot combine.
        raise SysdispatchError("--jobs cannot be combined with --dashboard (the dashboard "
                               "follows one stream of events); use --jobs 1")
    first = _PolicySource(args.policy, args.engine)
    second = _PolicySource(args.diff, args.engine) if args.diff else None
    for src in (first, second):
        for w in (src.warnings if src else ()):
            print(f"sysdispatch: warning: {src.label}: {w}", file=sys.stderr)
    if second is None:
        a_name, b_name = "recorded", "replayed"
    elif first.label != second.label:
        a_name, b_name = first.label, second.label
    else:
        a_name, b_name = first.label + " (1)", second.label + " (2)"
    out = sys.stdout
    summary = Summary()
    readers: list[TraceReader] = []
    listed: list[dict] = []
    total = changed = 0

    def on_trace(reader: TraceReader) -> None:
        h = reader.header
        readers.append(reader)
        if summary.header is None:  # the table's footer names the replayed policy
            summary.header = dataclasses.replace(h, policy=first.name, policy_hash=first.hash)
        if not args.json:
            print(f"trace {reader.path} ({' '.join(h.command)}; {h.mode}, {h.arch}): replaying "
                  f"with {first.label} ({_provenance(h, first)})", file=out)

    show_progress = args.progress if args.progress is not None else sys.stderr.isatty()
    bar = contextlib.nullcontext(None)
    if show_progress:
        from ..dash.progress import ReplayProgress
        bar = ReplayProgress(sys.stderr, force_terminal=bool(args.progress))
    if args.jobs > 1 and len(args.traces) > 1:
        results = _replay_parallel(args, a_name, b_name, bar)
        for res in results:
            if summary.header is None:
                summary.header = dataclasses.replace(res.header, policy=first.name,
                                                     policy_hash=first.hash)
            _merge_summary(summary, res.summary)
            total += res.total
            changed += res.changed
            listed.extend(res.listed)
        notes = [res.truncated for res in results if res.truncated]
        traces_json = [header_json(res.header, res.path) for res in results]
        return _report(args, out, first, second, summary, total, changed, listed, notes,
                       traces_json)

    dash = contextlib.nullcontext(None)
    if args.dashboard:
        from ..dash.live import dashboard_sink
        dash = dashboard_sink(first(), ["replay", *args.traces], "replay", live=False)
    with dash as board, bar as hook:
        for r in replay(args.traces, first, load_other=second,
                        allow_truncated=args.allow_truncated, on_trace=on_trace,
                        on_progress=hook):
            total += 1
            ev = r.as_event()
            summary(ev)
            if board is not None:
                board(ev)
            if r.changed:
                changed += 1
                if args.json:
                    listed.append(difference_json(r, a_name, b_name))
                else:
                    print(_difference_line(r, a_name, b_name), file=out)
    notes = [reader.truncated for reader in readers if reader.truncated]
    return _report(args, out, first, second, summary, total, changed, listed, notes,
                   [header_json(t.header, t.path) for t in readers])


def _report(args, out, first: _PolicySource, second: _PolicySource | None, summary: Summary,
            total: int, changed: int, listed: list[dict], notes: list[str],
            traces_json: list[dict]) -> int:
    """The end of the report, the same whether the traces were replayed here or by workers."""
    for note in notes:
        print(f"sysdispatch: warning: {note}", file=sys.stderr)
    if args.json:
        doc = {"policy": first.json(), "diff": second.json() if second else None,
               "traces": traces_json, "events": total,
               "differences": changed, "listed": listed, "summary": summary.to_json(),
               "warnings": notes}
        json.dump(doc, out, indent=2)
        out.write("\n")
        return EXIT_DIFFERENT if changed else 0
    if second is None:
        print(file=out)
        out.write(format_text(summary))
        what = f"decided differently by {first.label} than recorded"
    else:
        what = f"decided differently by {first.label} and {second.label}"
    print(f"{changed} of {total} events {what}", file=out)
    return EXIT_DIFFERENT if changed else 0


def _provenance(h, policy: _PolicySource) -> str:
    if h.policy_hash == policy.hash:
        return "the policy it was recorded with"
    if h.policy == policy.name:
        return f"recorded with another version of {h.policy!r}"
    return f"recorded with {h.policy!r}"


def _difference_line(r: Replayed, a_name: str, b_name: str) -> str:
    ev = r.event
    if r.other is not None:
        a = verdict_text(r.decision.ret, r.decision.handler)
        b = verdict_text(r.other.ret, r.other.handler)
    else:
        a = verdict_text(ev.verdict, ev.handler)
        b = verdict_text(r.decision.ret, r.decision.handler)
    return (f"{r.trace}:{r.line}: {ev.time:.6f} pid {ev.pid} tid {ev.tid} {call_text(ev)}: "
            f"{a_name} {a}, {b_name} {b}")



# --- --jobs: one trace file per worker task ------------------------------------------------------

@dataclass
class _TraceResult:
    """What a worker hands back for one trace: counters, the listed events (for --json), and
    the text lines it would have printed, in a temporary file (so they need not fit in memory)."""

    path: str
    header: Any
    summary: Summary
    total: int
    changed: int
    listed: list[dict]
    truncated: str | None
    text_file: str | None
    error: str | None = None


# Each worker process compiles the policies once and builds fresh ones per trace from them.
_worker_policies: dict[tuple[str, str], _PolicySource] = {}


def _worker_policy(spec: str, engine: str) -> _PolicySource:
    key = (spec, engine)
    if key not in _worker_policies:
        _worker_policies[key] = _PolicySource(spec, engine)
    return _worker_policies[key]


def _replay_one(task: tuple) -> _TraceResult:
    path, policy, diff, engine, as_json, allow_truncated, a_name, b_name, spool = task
    try:
        first = _worker_policy(policy, engine)
        second = _worker_policy(diff, engine) if diff else None
        summary = Summary()
        listed: list[dict] = []
        total = changed = 0
        header = truncated = text_file = None
        with contextlib.ExitStack() as stack:
            out = None
            if not as_json:
                fd, text_file = tempfile.mkstemp(suffix=".txt", dir=spool)
                out = stack.enter_context(open(fd, "w", encoding="utf-8"))
            readers: list[TraceReader] = []

            def on_trace(reader: TraceReader) -> None:
                readers.append(reader)
                h = reader.header
                if out is not None:
                    print(f"trace {reader.path} ({' '.join(h.command)}; {h.mode}, {h.arch}): "
                          f"replaying with {first.label} ({_provenance(h, first)})", file=out)

            for r in replay([path], first, load_other=second, allow_truncated=allow_truncated,
                            on_trace=on_trace):
                total += 1
                summary(r.as_event())
                if r.changed:
                    changed += 1
                    if as_json:
                        listed.append(difference_json(r, a_name, b_name))
                    else:
                        print(_difference_line(r, a_name, b_name), file=out)
            header, truncated = readers[0].header, readers[0].truncated
        return _TraceResult(path, header, summary, total, changed, listed, truncated, text_file)
    except (SysdispatchError, OSError) as exc:
        # Exceptions with locations do not always survive pickling: hand back the one line.
        msg = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and \
            exc.filename is not None and exc.strerror else str(exc)
        return _TraceResult(path, None, Summary(), 0, 0, [], None, text_file, error=msg)


def _replay_parallel(args, a_name: str, b_name: str, bar) -> list[_TraceResult]:
    with contextlib.ExitStack() as stack:
        return _replay_in_workers(stack, args, a_name, b_name, bar)


def _replay_in_workers(stack: contextlib.ExitStack, args, a_name: str, b_name: str,
                       bar) -> list[_TraceResult]:
    """Replay each trace in a worker; print each one's lines in file order as they come in.
    The progress bar (``bar``, a context giving the hook) moves a whole file at a time."""
    # Workers spool their text lines into one directory, removed at the end even when a trace
    # fails while later ones are still being replayed.
    spool = stack.enter_context(tempfile.TemporaryDirectory(prefix="sysdispatch-replay-"))
    tasks = [(str(t), args.policy, args.diff, args.engine, args.json, args.allow_truncated,
              a_name, b_name, spool) for t in args.traces]
    sizes = {}
    for t in args.traces:
        with contextlib.suppress(OSError):
            sizes[str(t)] = os.path.getsize(t)
    results: list[_TraceResult] = []
    sys.stdout.flush()  # forked workers must not inherit (and never write) unflushed output
    ctx = multiprocessing.get_context("fork")
    workers = min(args.jobs, len(tasks))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        # map submits every task, so the workers are forked now, before the bar starts its
        # refresh thread: a fork never copies a thread that may hold a lock.
        done = pool.map(_replay_one, tasks)
        try:
            with bar as hook:
                for res in done:
                    if res.text_file is not None:
                        with open(res.text_file, encoding="utf-8") as f:
                            for chunk in iter(lambda: f.read(1 << 16), ""):
                                sys.stdout.write(chunk)
                        os.unlink(res.text_file)
                        res.text_file = None
                    if res.error is not None:
                        raise SysdispatchError(res.error)
                    if hook is not None:
                        size = sizes.get(res.path, 0)
                        hook(res.path, size, size)
                    results.append(res)
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return results


def _merge_summary(into: Summary, part: Summary) -> None:
    """Add one trace's counts to the running summary, as if its events came after the others'."""
    for key, row in part.rows_by_key.items():
        mine = into.rows_by_key.get(key)
        if mine is None:
            into.rows_by_key[key] = row
            continue
        mine.calls += row.calls
        mine.reported_only += row.reported_only
        mine.verdicts.update(row.verdicts)
        mine.handlers.update(row.handlers)
    into.pids |= part.pids
    into.tids |= part.tids
    if part.events:
        if into.first_time is None:
            into.first_time = part.first_time
        into.last_time = part.last_time
    into.events += part.events
