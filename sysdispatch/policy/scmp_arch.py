"""What the container bridge needs to know about libseccomp's view of architectures.

Built on :mod:`._arch` (architectures by name, numbers <-> names). On top of it: libseccomp's
tokens and spellings of arches, its raw name lookup, and two libseccomp behaviours the bridge
must reproduce to decide exactly as a container runtime's filter does:

* Multiplexers. On arches that still have ``socketcall``/``ipc`` (i386), libseccomp's own name
  lookup gives the socket and SysV-IPC calls negative "pseudo" numbers (``-100 - call`` and
  ``-200 - call``), and a rule for such a call lands on the direct syscall (Linux >= 4.3) *and*
  on the multiplexer, with ``args[0] == call`` in place of any ``args[0]`` comparison.
* Argument width. On 32-bit arches libseccomp compares only the low 32 bits of an argument (it
  truncates a comparison's value), since the kernel zero-extends their arguments.
"""

from __future__ import annotations

import pyseccomp

from ._arch import canonical, get, syscall_number

SOCKET_MUX = range(-120, -100)   # pseudo numbers of the socketcall calls: -100 - call
IPC_MUX = range(-224, -200)      # pseudo numbers of the ipc calls: -200 - call
# Arches on which libseccomp compares 32-bit arguments.
ARGS_32BIT = frozenset({"i386", "x32", "arm"})
# Go's GOARCH for an arch, as Docker profiles name arches in includes/excludes.
GOARCH = {"x86_64": "amd64", "i386": "386", "aarch64": "arm64"}
# libseccomp's (and OCI's SCMP_ARCH_*) name where it differs from ours.
SCMP_NAME = {"i386": "x86"}


def token(name: str) -> int:
    return get(name).scmp


def scmp_name(name: str) -> str:
    """The SCMP_ARCH_* suffix (lower case) for an arch: ``i386`` -> ``x86``."""
    n = canonical(name)
    return SCMP_NAME.get(n, n)


def aliases(name: str) -> frozenset[str]:
    """Every spelling of an arch a profile may use in includes/excludes ``arches``."""
    a = get(name)
    return frozenset({a.name, *a.aliases, scmp_name(a.name), GOARCH.get(a.name, a.name)})


def resolve(arch: str, name: str) -> int:
    """libseccomp's own lookup of ``name`` on ``arch``: negative when the arch lacks it (a pseudo
    number, or -1 when libseccomp has never heard of the name)."""
    return pyseccomp.resolve_syscall(token(arch), name)


def multiplexer(arch: str, name: str) -> tuple[int, int] | None:
    """``(multiplexer_nr, call)`` when libseccomp also routes ``name`` through ``socketcall`` or
    ``ipc`` on ``arch`` (``socket`` on i386 -> (102, 1)); None otherwise."""
    pseudo = resolve(arch, name)
    for mux_name, rng, off in (("socketcall", SOCKET_MUX, 100), ("ipc", IPC_MUX, 200)):
        if pseudo in rng:
            mux_nr = resolve(arch, mux_name)
            if mux_nr >= 0:
                return mux_nr, -pseudo - off
    return None


def targets(arch: str, name: str) -> tuple[int | None, tuple[int, int] | None]:
    """Where libseccomp puts a rule for ``name`` on ``arch``: ``(direct_nr or None,
    (mux_nr, call) or None)``; both None when the arch lacks the syscall."""
    return syscall_number(arch, name), multiplexer(arch, name)


def arg_max(arch: str) -> int:
    """The largest argument value libseccomp compares on ``arch``."""
    return 0xFFFFFFFF if canonical(arch) in ARGS_32BIT else 0xFFFFFFFFFFFFFFFF
