"""Filter policies as program tables.

A policy file (filters/*.toml, read by :mod:`.parse` into the model of :mod:`.model`) becomes a
``syscall_entry`` program that checks the architecture and tail-calls through a jump table indexed
by syscall number into handler programs (:mod:`.compile`); :mod:`.loaded` runs it on the BPF
machine (``LoadedPolicy.decide``), and :mod:`.reference` evaluates the model directly as an oracle.
"""

from .parse import load, loads

__all__ = ["load", "loads"]
