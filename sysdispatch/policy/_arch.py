"""Architectures and syscall numbers as the policy layer asks for them, by architecture *name*.

A thin adapter over :mod:`sysdispatch.seccomp.arch` (which asks libseccomp; no hand-kept tables):
policies name architectures by strings, and a bad name is a :class:`PolicyError`.

x32 is special: its syscalls arrive with ``arch = AUDIT_ARCH_X86_64`` and bit 0x40000000 set in
``nr`` (libseccomp's x32 numbers include that bit).
"""

from __future__ import annotations

from ..errors import PolicyError
from ..seccomp import arch as _sa

ARCH_NAMES = tuple(a.name for a in _sa.ARCHES)


def _get(name: str) -> _sa.Arch:
    try:
        return _sa.by_name(name)
    except ValueError as exc:
        raise PolicyError(str(exc)) from None


def canonical(name: str) -> str:
    """The canonical name of an architecture (``x86`` -> ``i386``); PolicyError when unknown."""
    return _get(name).name


def audit_arch(name: str) -> int:
    """The value the kernel puts in ``seccomp_data.arch`` for this architecture."""
    return _get(name).audit


def nr_bias(name: str) -> int:
    """What the kernel adds to this architecture's syscall numbers (x32: 0x40000000)."""
    return _get(name).nr_base


def syscall_number(arch: str, name: str) -> int | None:
    """The number of syscall ``name`` on ``arch`` (x32: with its bit), or None."""
    return _get(arch).syscall_number(name)


def syscall_name(arch: str, nr: int) -> str | None:
    """The name of syscall ``nr`` on ``arch`` (x32: ``nr`` with its bit), or None."""
    return _get(arch).syscall_name(nr)


def syscalls(arch: str) -> dict[int, str]:
    """Every syscall libseccomp knows for ``arch``: number (x32: with its bit) -> name."""
    return dict(_get(arch).table)


def max_syscall(arch: str) -> int:
    """The highest syscall number libseccomp knows on ``arch``, without the x32 bit."""
    a = _get(arch)
    return max(a.table, default=a.nr_base) - a.nr_base
