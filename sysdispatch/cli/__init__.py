"""The command line: one argparse tree, one sub-module per command group.

Each module named in :data:`COMMANDS` exposes ``register(subparsers)``, which adds its parser and
sets ``func`` (a callable taking the parsed args and returning an exit status). Errors a user can
cause are :class:`~sysdispatch.errors.SysdispatchError` (or an OSError on a named file): they print
as one line on stderr and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from ..errors import SysdispatchError

# Command-group modules, in the order `sysdispatch --help` lists them.
COMMANDS = ("demo", "prog", "bench", "filter", "emu", "check", "policy_io", "verify", "replay",
            "trace", "explain", "generate")

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exits with 2 too; keep it one line
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sysdispatch",
                     description="Syscall tracing and seccomp-filter emulation on an eBPF machine.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        return 0
    except (SysdispatchError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        else:
            print(f"sysdispatch: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return " ".join(str(exc).split("\n"))
