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

# The modules each top-level command needs (in COMMANDS order): a command's parser is built from
# these alone, so `sysdispatch trace ...` starts without importing every other command (and its
# dependencies: benchmarks, the verifier's CLI, the dashboard ...). Most modules register one
# command of their own name; these are the exceptions (tests check the map against the modules).
_SHARED = {"disasm": ("check",), "import": ("policy_io",), "export": ("policy_io",),
           "run": ("policy_io",), "prog": ("prog", "verify")}
ENTRY_POINTS = {**{name: (name,) for name in COMMANDS if name not in ("policy_io", "verify")},
                **_SHARED}

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exits with 2 too; keep it one line
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser(modules: tuple[str, ...] = COMMANDS) -> argparse.ArgumentParser:
    """The argparse tree of ``modules`` (default: every command)."""
    parser = _Parser(prog="sysdispatch",
                     description="Syscall tracing and seccomp-filter emulation on an eBPF machine.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in modules:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def _modules_for(argv: list[str]) -> tuple[str, ...]:
    """The modules to build the parser from: the command's own when argv names one, else all
    (top-level help, a typo: argparse then lists every command)."""
    for word in argv:
        if not word.startswith("-"):
            return ENTRY_POINTS.get(word, COMMANDS)
    return COMMANDS


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(_modules_for(argv))
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
