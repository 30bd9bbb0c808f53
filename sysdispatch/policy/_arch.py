"""Architectures and syscall numbers as the policy layer asks for them, by architecture *name*.

A thin adapter over :mod:`sysdispatch.seccomp.arch` (which asks libseccomp; no hand-kept tables):
policies name architectures by strings, and a bad name is a :class:`PolicyError`. The one
place the policy layer looks an architecture up by name; :mod:`.scmp_arch` adds libseccomp's
own spellings and behaviours on top.

x32 is special: its syscalls arrive with ``arch = AUDIT_ARCH_X86_64`` and bit 0x40000000 set in
``nr`` (libseccomp's x32 numbers include that bit).
"""

from __future__ import annotations

from ..errors import PolicyError
from ..seccomp import arch as _sa

ARCH_NAMES = tuple(a.name for a in _sa.ARCHES)


def get(name: str) -> _sa.Arch:
    """The architecture called ``name`` (any spelling :func:`~sysdispatch.seccomp.arch.by_name`
    takes); PolicyError when unknown."""
    try:
        return _sa.by_name(name)
    except ValueError as exc:
        raise PolicyError(str(exc)) from None


def known(name: str) -> bool:
    """Whether ``name`` spells an architecture."""
    try:
        _sa.by_name(name)
        return True
    except ValueError:
        return False


def canonical(name: str) -> str:
    """The canonical name of an architecture (``x86`` -> ``i386``); PolicyError when unknown."""
    return get(name).name


def native() -> str:
    """The name of the architecture this machine runs."""
    return _sa.native().name


def audit_arch(name: str) -> int:
    """The value the kernel puts in ``seccomp_data.arch`` for this architecture."""
    return get(name).audit


def nr_bias(name: str) -> int:
    """What the kernel adds to this architecture's syscall numbers (x32: 0x40000000)."""
    return get(name).nr_base


def syscall_number(arch: str, name: str) -> int | None:
    """The number of syscall ``name`` on ``arch`` (x32: with its bit), or None."""
    return get(arch).syscall_number(name)


def resolve_syscall(arch: str, text: str) -> int:
    """A syscall on ``arch`` given as a name or a number (decimal or 0x hex); PolicyError when
    ``arch`` has no syscall of that name."""
    try:
        return get(arch).resolve(text)
    except ValueError as exc:
        raise PolicyError(str(exc)) from None


def syscall_name(arch: str, nr: int) -> str | None:
    """The name of syscall ``nr`` on ``arch`` (x32: ``nr`` with its bit), or None."""
    return get(arch).syscall_name(nr)


def syscalls(arch: str) -> dict[int, str]:
    """Every syscall libseccomp knows for ``arch``: number (x32: with its bit) -> name."""
    return dict(get(arch).table)


def max_syscall(arch: str) -> int:
    """The highest syscall number libseccomp knows on ``arch``, without the x32 bit."""
    a = get(arch)
    return max(a.table, default=a.nr_base) - a.nr_base
