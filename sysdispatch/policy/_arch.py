"""Architectures and syscall numbers for the policy layer, through libseccomp (pyseccomp).

A private stand-in until sysdispatch/seccomp/arch.py (the classic-BPF engineer's) lands: the
policy modules ask only the four functions here, so switching is a change to this file alone.
Numbers always come from libseccomp, never from a hand-kept table.

x32 is special: its syscalls arrive with ``arch = AUDIT_ARCH_X86_64`` and bit 0x40000000 set in
``nr`` (libseccomp's x32 numbers include that bit). libseccomp's ``SCMP_ARCH_X32`` token
(0x4000003E) is *not* what the kernel puts in ``seccomp_data.arch``.
"""

from __future__ import annotations

from functools import lru_cache

import pyseccomp

from ..errors import PolicyError
from ..seccomp.data import X32_SYSCALL_BIT

AUDIT_ARCH_X86_64 = 0xC000003E

# libseccomp's arch names are the lowercase names of its SCMP_ARCH_* tokens.
_TOKENS = {name.lower(): getattr(pyseccomp.Arch, name) for name in dir(pyseccomp.Arch)
           if name.isupper() and name != "NATIVE"}
ALIASES = {"i386": "x86", "amd64": "x86_64", "arm64": "aarch64"}
ARCH_NAMES = tuple(sorted(_TOKENS))

# How far past the highest number libseccomp knows we scan and size tables (see table_size).
_SCAN_LIMIT = 2048


def canonical(name: str) -> str:
    """The libseccomp name of an architecture; PolicyError when unknown."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in _TOKENS:
        raise PolicyError(f"unknown architecture '{name}' (known: {', '.join(ARCH_NAMES)})")
    return key


def audit_arch(name: str) -> int:
    """The value the kernel puts in ``seccomp_data.arch`` for this architecture."""
    name = canonical(name)
    return AUDIT_ARCH_X86_64 if name == "x32" else _TOKENS[name]


def nr_bias(name: str) -> int:
    """What the kernel adds to this architecture's syscall numbers (x32: 0x40000000)."""
    return X32_SYSCALL_BIT if canonical(name) == "x32" else 0


@lru_cache(maxsize=None)
def syscall_number(arch: str, name: str) -> int | None:
    """The number of syscall ``name`` on ``arch`` (x32: with its bit), or None when ``arch``
    has no such syscall."""
    nr = pyseccomp.resolve_syscall(_TOKENS[canonical(arch)], name)
    return nr if nr >= 0 else None  # libseccomp: -1 unknown, other negatives: not on this arch


@lru_cache(maxsize=None)
def _names(arch: str) -> dict[int, str]:
    token, bias = _TOKENS[canonical(arch)], nr_bias(arch)
    out = {}
    for n in range(_SCAN_LIMIT):
        try:
            out[n + bias] = pyseccomp.resolve_syscall(token, n + bias).decode()
        except ValueError:
            pass
    return out


def syscall_name(arch: str, nr: int) -> str | None:
    """The name of syscall ``nr`` on ``arch`` (x32: ``nr`` with its bit), or None."""
    return _names(canonical(arch)).get(nr)


def syscalls(arch: str) -> dict[int, str]:
    """Every syscall libseccomp knows for ``arch``: number (x32: with its bit) -> name."""
    return dict(_names(canonical(arch)))


def max_syscall(arch: str) -> int:
    """The highest syscall number libseccomp knows on ``arch``, without the x32 bit."""
    names = _names(canonical(arch))
    return max(names) - nr_bias(arch) if names else 0
