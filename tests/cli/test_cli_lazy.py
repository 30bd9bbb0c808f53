"""The CLI builds only the invoked command's parser (start-up matters for ``sysdispatch trace``):
the command -> modules map must give every command exactly the parser the full tree has."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from sysdispatch import cli


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _helps(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, str]:
    """Every (nested) sub-command's full help text, by its path."""
    out = {}
    for name, sub in _subparsers(parser).items() if any(
            isinstance(a, argparse._SubParsersAction) for a in parser._actions) else []:
        out[prefix + name] = sub.format_help()
        out.update(_helps(sub, prefix + name + " "))
    return out


FULL = cli.build_parser()


def test_every_command_has_an_entry_and_no_entry_is_stale():
    assert set(cli.ENTRY_POINTS) == set(_subparsers(FULL))


@pytest.mark.parametrize("command", sorted(cli.ENTRY_POINTS))
def test_a_command_built_alone_equals_the_full_tree(command):
    full = {k: v for k, v in _helps(FULL).items() if k.split()[0] == command}
    alone = cli.build_parser(cli.ENTRY_POINTS[command])
    assert {k: v for k, v in _helps(alone).items() if k.split()[0] == command} == full


def test_modules_for_picks_the_command_word():
    assert cli._modules_for(["--debug", "trace", "--", "ls"]) == ("trace",)
    assert cli._modules_for(["prog", "verify", "x.s"]) == ("prog", "verify")
    assert cli._modules_for(["--help"]) == cli.COMMANDS
    assert cli._modules_for(["nosuch"]) == cli.COMMANDS


def test_trace_does_not_import_other_commands():
    code = ("import sys; from sysdispatch import cli; cli.build_parser(cli._modules_for(['trace']));"
            "print(sorted(m for m in sys.modules if m.startswith('sysdispatch.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['sysdispatch.cli.trace']"


def test_unknown_command_lists_every_command():
    res = subprocess.run([sys.executable, "-m", "sysdispatch", "nosuch"], capture_output=True,
                         text=True)
    assert res.returncode == 2
    assert all(f"'{name}'" in res.stderr for name in cli.ENTRY_POINTS)


def test_engine_choices_spelled_in_the_cli_are_the_engines():
    """The parsers name the engines without importing them (start-up); they must still be
    vm.engine's (replay adds the policy model's reference evaluator)."""
    from sysdispatch.vm.engine import ENGINES

    def choices(path):
        parser = FULL
        for word in path:
            parser = _subparsers(parser)[word]
        return next(a.choices for a in parser._actions if a.dest == "engine")

    assert tuple(choices(["trace"])) == ENGINES
    assert tuple(choices(["prog", "run"])) == ENGINES
    assert tuple(choices(["replay"])) == (*ENGINES, "reference")
