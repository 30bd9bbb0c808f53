"""Filter policies as program tables.

A policy file (filters/*.toml, read by :mod:`.parse` into the model of :mod:`.model`) becomes a
``syscall_entry`` program that checks the architecture and tail-calls through a jump table indexed
by syscall number into handler programs (:mod:`.compile`); :mod:`.loaded` runs it on the BPF
machine (``LoadedPolicy.decide``), :mod:`.reference` evaluates the model directly as an oracle,
and :mod:`.emulate` serves ``sysdispatch emu`` (``policy_emulator``).

The names below are imported lazily, so that reading a policy does not load the BPF machine.
"""

from __future__ import annotations

import importlib
from typing import Any

from .parse import load, loads

_LAZY = {"LoadedPolicy": "loaded", "Decision": "loaded", "compile_policy": "compile",
         "evaluate": "reference", "policy_emulator": "emulate"}

__all__ = ["load", "loads", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
