"""A policy as a real kernel filter, through libseccomp (pyseccomp).

:func:`build_filter` lowers the policy (:mod:`sysdispatch.policy.lower`) and feeds the rules to
libseccomp, one single-arch filter per architecture merged into one: the policy's syscall tables
are per arch, while libseccomp's rule API takes native syscall numbers and translates them to
every arch of a filter by name — so each arch gets its own filter and its own rules.
:func:`export_bpf` gives the classic BPF program the kernel would load (``seccomp_export_bpf``),
:func:`export_pfc` libseccomp's pseudo-code, and :func:`run_command` runs a command under the
filter with no tracer (fork, no_new_privs, load, exec).
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile

import pyseccomp

from ..errors import PolicyError
from . import scmp_arch
from .lower import Cmp, Lowered, lower
from .model import Policy

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_NO_NEW_PRIVS = 38

_OPS = {"==": pyseccomp.EQ, "!=": pyseccomp.NE, "<": pyseccomp.LT, "<=": pyseccomp.LE,
        ">": pyseccomp.GT, ">=": pyseccomp.GE, "&==": pyseccomp.MASKED_EQ}


def _arg(c: Cmp) -> pyseccomp.Arg:
    if c.op == "&==":
        return pyseccomp.Arg(c.arg, pyseccomp.MASKED_EQ, c.mask, c.value)
    return pyseccomp.Arg(c.arg, _OPS[c.op], c.value)


def _native_number(arch: str, nr: int, handler: str) -> int:
    """The number to hand libseccomp's rule API for syscall ``nr`` of ``arch``: it takes native
    numbers (or pseudo numbers) and translates them to the filter's arch by name."""
    native = scmp_arch.native()
    if arch == native:
        return nr
    name = scmp_arch.name_of(arch, nr)
    if name is None:
        raise PolicyError(f"syscall number {nr} has no name on {arch}, and libseccomp can only "
                          "place rules for a foreign arch by name", context=f"handler '{handler}'")
    native_nr = scmp_arch.resolve(native, name)
    if native_nr == -1:
        raise PolicyError(f"libseccomp cannot translate '{name}' to {arch}",
                          context=f"handler '{handler}'")
    return native_nr


def _arch_filter(low: Lowered, arch: str) -> pyseccomp.SyscallFilter:
    f = pyseccomp.SyscallFilter(low.default)
    f.set_attr(pyseccomp.Attr.ACT_BADARCH, low.bad_arch)
    native = scmp_arch.native()
    if arch != native:
        try:
            f.add_arch(scmp_arch.token(arch))
        except OSError as exc:
            raise PolicyError(f"libseccomp cannot put {arch} in a filter on this {native} host "
                              f"({exc.strerror})") from None
        f.remove_arch(scmp_arch.token(native))
    for nr, sr in sorted(low.by_arch[arch].items()):
        num = _native_number(arch, nr, sr.handler)
        for rule in sr.rules:
            try:
                f.add_rule(rule.ret, num, *(_arg(c) for c in rule.cmps))
            except OSError as exc:
                conds = " && ".join(str(c) for c in rule.cmps) or "always"
                raise PolicyError(f"libseccomp refused the rule '{conds}' for syscall {nr} on "
                                  f"{arch}: {exc.strerror}", context=f"handler '{sr.handler}'",
                                  loc=low.policy.handlers[sr.handler].loc) from None
    return f


def build_filter(policy: Policy | Lowered) -> pyseccomp.SyscallFilter:
    """The libseccomp filter for ``policy`` (raises PolicyError naming the handler when the
    policy uses something a kernel filter cannot express)."""
    low = policy if isinstance(policy, Lowered) else lower(policy)
    if not low.arches:
        raise PolicyError("the policy lists no architecture")
    merged = None
    for arch in low.arches:
        f = _arch_filter(low, arch)
        if merged is None:
            merged = f
        else:
            merged.merge(f)
    return merged


def _export(f: pyseccomp.SyscallFilter, how: str) -> bytes:
    with tempfile.TemporaryFile() as tmp:
        getattr(f, how)(tmp)
        tmp.seek(0)
        return tmp.read()


def export_bpf(policy: Policy | Lowered | pyseccomp.SyscallFilter) -> bytes:
    """The classic BPF program (``struct sock_filter`` array, native endian) libseccomp would
    load for ``policy``."""
    f = policy if isinstance(policy, pyseccomp.SyscallFilter) else build_filter(policy)
    return _export(f, "export_bpf")


def export_pfc(policy: Policy | Lowered | pyseccomp.SyscallFilter) -> str:
    """libseccomp's pseudo filter code for ``policy``."""
    f = policy if isinstance(policy, pyseccomp.SyscallFilter) else build_filter(policy)
    return _export(f, "export_pfc").decode()


def run_command(policy: Policy, argv: list[str]) -> int:
    """Run ``argv`` under ``policy`` as a real kernel filter, with no tracer. Returns the
    command's exit status, or 128 + the signal that ended it (a KILL_PROCESS verdict: 159)."""
    if not argv:
        raise PolicyError("no command to run")
    f = build_filter(policy)  # refuse before forking: errors belong to the caller
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's Python
        try:
            # no_new_privs lets an unprivileged process install a filter (libseccomp would set
            # it too, through its CTL_NNP attribute; doing it here keeps that explicit)
            if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
            f.load()
            os.execvp(argv[0], argv)
        except OSError as exc:
            try:
                os.write(2, f"sysdispatch: {argv[0]}: {exc.strerror}\n".encode())
            finally:
                os._exit(127 if exc.errno == 2 else 126)
        finally:
            os._exit(126)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
        except KeyboardInterrupt:  # the child got the terminal's SIGINT too; wait for it
            continue
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
