"""``sysdispatch replay``: recorded syscalls through a policy again, without running anything.

    sysdispatch replay TRACE... --policy P [--diff P2] [--json] [--engine E] [--allow-truncated]

Every event of the traces (recorded with ``sysdispatch trace --record``) is decided again by
policy P, in recorded order, each trace with freshly loaded policies (so policies that keep state
in maps behave as they did live). Without ``--diff``: the verdicts per syscall (a ``--summary``
table of the replayed decisions) and every event whose verdict differs from the recorded one.
With ``--diff P2``: every event that P and P2 decide differently. P is a policy file (.toml), an
OCI/Docker profile (.json), or ``default`` (the embedded default policy).

Traces are streamed (memory does not grow with their length); ``--json`` keeps the listed events
until it prints them.

Exit status: 0 when no event was listed, 1 when some were (like diff(1)), 2 for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import Callable

from ..trace.record import TraceReader, policy_hash
from ..trace.replay import (Replayed, call_text, difference_json, header_json, replay,
                            verdict_text)
from ..trace.summary import Summary, format_text

EXIT_DIFFERENT = 1
EMBEDDED_DEFAULT = Path(__file__).resolve().parents[1] / "data" / "default.toml"


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


def cmd_replay(args: argparse.Namespace) -> int:
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

    dash = contextlib.nullcontext(None)
    if args.dashboard:
        from ..dash.live import dashboard_sink
        dash = dashboard_sink(first(), ["replay", *args.traces], "replay", live=False)
    with dash as board:
        for r in replay(args.traces, first, load_other=second,
                        allow_truncated=args.allow_truncated, on_trace=on_trace):
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
    for note in notes:
        print(f"sysdispatch: warning: {note}", file=sys.stderr)

    if args.json:
        doc = {"policy": first.json(), "diff": second.json() if second else None,
               "traces": [header_json(t.header, t.path) for t in readers], "events": total,
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

