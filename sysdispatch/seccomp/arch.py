"""Architectures as seccomp sees them: AUDIT_ARCH values and syscall names <-> numbers.

Syscall tables are never kept by hand: names and numbers come from libseccomp
(``seccomp_syscall_resolve_num_arch`` / ``seccomp_syscall_resolve_name_arch`` through pyseccomp).
A table is built once per architecture by asking libseccomp for the name of every number in a
range that covers today's tables (0..1023), so that name -> number is the exact inverse of
number -> name (libseccomp's own name lookup returns negative pseudo numbers for the i386
socket calls, which exist as real syscalls since Linux 4.3).

x32 is not an AUDIT_ARCH of its own: the kernel reports ``AUDIT_ARCH_X86_64`` in
``seccomp_data.arch`` and sets ``__X32_SYSCALL_BIT`` (0x40000000) in ``nr``; libseccomp's x32
token (0x4000003e) is internal to libseccomp. :class:`Arch` keeps the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import pyseccomp

from .data import AUDIT_ARCH_AARCH64, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT

_SCAN = 1024  # syscall numbers scanned per architecture (the largest today is x32's 547)


@dataclass(frozen=True, eq=False)
class Arch:
    """One architecture: its name, the AUDIT_ARCH value filters compare against, libseccomp's
    token, and the base added to every syscall number (x32)."""

    name: str
    audit: int
    scmp: int
    nr_base: int = 0
    aliases: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name

    @cached_property
    def table(self) -> dict[int, str]:
        """number -> name for every syscall libseccomp knows on this architecture."""
        out: dict[int, str] = {}
        for n in range(self.nr_base, self.nr_base + _SCAN):
            try:
                out[n] = pyseccomp.resolve_syscall(self.scmp, n).decode()
            except ValueError:
                continue
        return out

    @cached_property
    def numbers(self) -> dict[str, int]:
        """name -> number, the inverse of :attr:`table`."""
        return {name: nr for nr, name in self.table.items()}

    def syscall_name(self, nr: int) -> str | None:
        """The name of syscall ``nr`` on this architecture, or None."""
        return self.table.get(nr)

    def syscall_number(self, name: str) -> int | None:
        """The number of syscall ``name`` on this architecture, or None when it has none."""
        nr = self.numbers.get(name)
        if nr is None:
            # Names outside the scanned range (none today) still resolve through libseccomp;
            # negative answers are libseccomp's pseudo numbers: not a syscall here.
            got = pyseccomp.resolve_syscall(self.scmp, name)
            nr = got if got >= 0 else None
        return nr

    def resolve(self, text: str) -> int:
        """A syscall given as a name or a number (decimal or 0x hex); ValueError if unknown."""
        t = text.strip()
        try:
            return int(t, 0)
        except ValueError:
            pass
        nr = self.syscall_number(t)
        if nr is None:
            raise ValueError(f"unknown syscall '{t}' on {self.name}")
        return nr


X86_64 = Arch("x86_64", AUDIT_ARCH_X86_64, pyseccomp.Arch.X86_64, aliases=("amd64",))
I386 = Arch("i386", AUDIT_ARCH_I386, pyseccomp.Arch.X86, aliases=("x86", "i686"))
X32 = Arch("x32", AUDIT_ARCH_X86_64, pyseccomp.Arch.X32, nr_base=X32_SYSCALL_BIT)
AARCH64 = Arch("aarch64", AUDIT_ARCH_AARCH64, pyseccomp.Arch.AARCH64, aliases=("arm64",))
# libseccomp's tokens for these are their AUDIT_ARCH values.
ARM = Arch("arm", pyseccomp.Arch.ARM, pyseccomp.Arch.ARM)
RISCV64 = Arch("riscv64", pyseccomp.Arch.RISCV64, pyseccomp.Arch.RISCV64)
PPC64LE = Arch("ppc64le", pyseccomp.Arch.PPC64LE, pyseccomp.Arch.PPC64LE)
S390X = Arch("s390x", pyseccomp.Arch.S390X, pyseccomp.Arch.S390X)

ARCHES: tuple[Arch, ...] = (X86_64, I386, X32, AARCH64, ARM, RISCV64, PPC64LE, S390X)
_BY_NAME = {n: a for a in ARCHES for n in (a.name, *a.aliases)}

# The symbol a disassembly prints for an AUDIT_ARCH value (seccomp-tools' spelling). x32 shares
# x86_64's value, so it has no symbol of its own.
AUDIT_SYMBOLS: dict[int, str] = {}
for _a in ARCHES:
    AUDIT_SYMBOLS.setdefault(_a.audit, f"ARCH_{_a.name.upper()}")
del _a
AUDIT_BY_SYMBOL = {sym: audit for audit, sym in AUDIT_SYMBOLS.items()}


def by_name(name: str) -> Arch:
    """The architecture called ``name`` (x86_64, amd64, i386, x86, x32, aarch64, arm64, ...)."""
    a = _BY_NAME.get(name.strip().lower())
    if a is None:
        raise ValueError(f"unknown architecture '{name}' (known: "
                         f"{', '.join(a.name for a in ARCHES)})")
    return a


def by_audit(audit: int) -> Arch | None:
    """The architecture whose syscalls carry this AUDIT_ARCH value (x86_64 for
    AUDIT_ARCH_X86_64: x32 numbers are recognised by their bit, see :func:`for_number`)."""
    for a in ARCHES:
        if a.audit == audit:
            return a
    return None


def for_number(arch: Arch, nr: int) -> Arch:
    """The table a syscall number belongs to: x32 when an x86_64 number has the x32 bit."""
    if arch is X86_64 and nr & X32_SYSCALL_BIT:
        return X32
    return arch


def native() -> Arch:
    """The architecture this machine runs (libseccomp's answer)."""
    token = pyseccomp.system_arch()
    for a in ARCHES:
        if a.scmp == token:
            return a
    raise ValueError(f"unsupported native architecture 0x{token:08x}")
