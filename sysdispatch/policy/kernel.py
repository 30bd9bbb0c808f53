"""A policy as a real kernel filter, through libseccomp (pyseccomp).

The policy is lowered (:mod:`sysdispatch.policy.lower`) to libseccomp rules, which are added to
one single-arch libseccomp filter per architecture, merged into one (:func:`build_filter`): the
policy's syscall tables are per arch, while libseccomp's rule API takes native syscall numbers
and translates them to every arch of a filter by name. :func:`compile_filter` does that safely
and checks the result; :func:`export_bpf` gives the classic BPF program the kernel loads
(``seccomp_export_bpf``), :func:`export_pfc` libseccomp's pseudo filter code, and
:func:`run_command` runs a command under the filter with no tracer (fork, no_new_privs, load the
program with seccomp(2), exec).

libseccomp 2.5 is not always faithful to the rules it is given: for some mixes of rules it drops
a rule without a word, builds BPF where a rule can never match, or never returns from
``seccomp_rule_add`` (all seen with this project's random-policy tests). So every filter is
built in a forked child with a time limit, its BPF is run by the project's classic interpreter
on probes around every rule and compared with the rules (:func:`verify`), and when that fails
the next rule order is tried, then a lowering that uses only comparisons whose action sits on
the true branch of libseccomp's tree (==, >, >=, masked ==). A policy no attempt exports
faithfully is refused with the first disagreement.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import pickle
import select
import signal
import struct
import sys
import tempfile
import time
from dataclasses import dataclass

import pyseccomp

from ..errors import PolicyError
from . import _arch, scmp_arch
from .lower import Cmp, Lowered, evaluate, lower
from .model import Policy

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_SET_MODE_FILTER = 1
BUILD_SECONDS = 5.0  # libseccomp builds Docker's profile in ~10 ms; a hang is a libseccomp bug

_OPS = {"==": pyseccomp.EQ, "!=": pyseccomp.NE, "<": pyseccomp.LT, "<=": pyseccomp.LE,
        ">": pyseccomp.GT, ">=": pyseccomp.GE, "&==": pyseccomp.MASKED_EQ}


def _arg(c: Cmp) -> pyseccomp.Arg:
    if c.op == "&==":
        return pyseccomp.Arg(c.arg, pyseccomp.MASKED_EQ, c.mask, c.value)
    return pyseccomp.Arg(c.arg, _OPS[c.op], c.value)


def _native_number(arch: str, nr: int, handler: str) -> int:
    """The number to hand libseccomp's rule API for syscall ``nr`` of ``arch``: it takes native
    numbers (or pseudo numbers) and translates them to the filter's arch by name."""
    native = _arch.native()
    if arch == native:
        return nr
    name = _arch.syscall_name(arch, nr)
    if name is None:
        raise PolicyError(f"syscall number {nr} has no name on {arch}, and libseccomp can only "
                          "place rules for a foreign arch by name", context=f"handler '{handler}'")
    native_nr = scmp_arch.resolve(native, name)
    if native_nr == -1:
        raise PolicyError(f"libseccomp cannot translate '{name}' to {arch}",
                          context=f"handler '{handler}'")
    return native_nr


# Orders in which a syscall's rules are handed to libseccomp. Seen with libseccomp 2.5: KILL on
# args[1] == p, then ERRNO on args[0] == 0 && args[1] != p, then ALLOW on args[0] == 1 &&
# args[1] != p loses the ALLOW rule; added in the order of their first argument, all survive.
_ORDERS = (
    lambda rules: sorted(rules, key=lambda r: r.cmps[0].arg if r.cmps else -1),
    lambda rules: sorted(rules, key=lambda r: -(r.cmps[0].arg if r.cmps else -1)),
    lambda rules: list(reversed(rules)),
)


def _arch_filter(low: Lowered, arch: str, order, note=None) -> pyseccomp.SyscallFilter:
    f = pyseccomp.SyscallFilter(low.default)
    f.set_attr(pyseccomp.Attr.ACT_BADARCH, low.bad_arch)
    native = _arch.native()
    if arch != native:
        try:
            f.add_arch(scmp_arch.token(arch))
        except OSError as exc:
            raise PolicyError(f"libseccomp cannot put {arch} in a filter on this {native} host "
                              f"({exc.strerror})") from None
        f.remove_arch(scmp_arch.token(native))
    for nr, sr in sorted(low.by_arch[arch].items()):
        num = _native_number(arch, nr, sr.handler)
        if note is not None:
            note(sr.handler)
        for rule in order(sr.rules):
            try:
                f.add_rule(rule.ret, num, *(_arg(c) for c in rule.cmps))
            except OSError as exc:
                conds = " && ".join(str(c) for c in rule.cmps) or "always"
                raise PolicyError(f"libseccomp refused the rule '{conds}' for syscall {nr} on "
                                  f"{arch}: {exc.strerror}", context=f"handler '{sr.handler}'",
                                  loc=low.policy.handlers[sr.handler].loc) from None
    return f


def build_filter(policy: Policy | Lowered, order: int = 0,
                 note=None) -> pyseccomp.SyscallFilter:
    """The libseccomp filter for ``policy``, built in this process and not checked: prefer
    :func:`compile_filter`. ``order``: which rule order (see _ORDERS) to add rules in;
    ``note(handler)`` is called before each handler's rules are added."""
    low = policy if isinstance(policy, Lowered) else lower(policy)
    if not low.arches:
        raise PolicyError("the policy lists no architecture")
    merged = None
    for arch in low.arches:
        f = _arch_filter(low, arch, _ORDERS[order], note)
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


# --- building in a child, with a time limit ----------------------------------------------------

@dataclass(frozen=True)
class _Stuck:
    """A build that ran out of time, and the handler whose rules libseccomp was adding then
    (None: it hung elsewhere, e.g. exporting)."""

    handler: str | None


def _build_in_child(low: Lowered, order: int) -> tuple[bytes, str] | _Stuck:
    """(bpf, pfc) of :func:`build_filter` run in a forked child, or :class:`_Stuck` when it did
    not finish in time. A PolicyError raised while building is raised here."""
    mark = mmap.mmap(-1, 256)   # shared with the child: the handler it is adding rules for

    def note(handler: str) -> None:
        mark[:] = handler.encode()[:255].ljust(256, b"\0")

    built = in_child(lambda: build_filter(low, order, note))
    if built is None:
        return _Stuck(mark[:].rstrip(b"\0").decode() or None)
    return built


def in_child(build) -> tuple[bytes, str] | None:
    """(bpf, pfc) of the libseccomp filter ``build()`` returns, built in a forked child (see the
    module docstring); None when it did not finish within BUILD_SECONDS."""
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(rfd)
            try:
                f = build()
                payload = ("ok", _export(f, "export_bpf"), _export(f, "export_pfc").decode())
            except PolicyError as exc:
                payload = ("error", exc)
            except OSError as exc:
                payload = ("error", PolicyError(f"libseccomp failed: {exc.strerror or exc}"))
            data = pickle.dumps(payload)
            view = memoryview(struct.pack("<Q", len(data)) + data)
            while view:
                view = view[os.write(wfd, view):]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    deadline = time.monotonic() + BUILD_SECONDS
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([rfd], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                return None
            chunk = os.read(rfd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
        os.waitpid(pid, 0)
    raw = b"".join(chunks)
    if len(raw) < 8:
        raise PolicyError("libseccomp's filter builder died")
    payload = pickle.loads(raw[8:])
    if payload[0] == "error":
        raise payload[1]
    return payload[1], payload[2]


# --- checking what libseccomp built ------------------------------------------------------------

def _probe_values(c: Cmp, dmax: int) -> set[int]:
    v = c.value
    out = {v, v - 1, v + 1, 0, dmax}
    if c.op == "&==":
        bits = [1 << b for b in range(64) if c.mask >> b & 1]
        out |= {v ^ b for b in bits[:6] + bits[-6:]} | {v | (dmax & ~c.mask)}
    return {x & dmax for x in out if x >= 0}


def _witness(cmps: tuple[Cmp, ...]) -> list[int]:
    """Arguments that satisfy every comparison of a rule."""
    args = [0] * 6
    for c in cmps:
        args[c.arg] = {"==": c.value, "&==": c.value, "<=": c.value, ">=": c.value,
                       "<": c.value - 1, ">": c.value + 1,
                       "!=": c.value + 1 if c.value == 0 else c.value - 1}[c.op]
    return args


def _pairwise(rules, dmax: int, most: int = 16) -> list[list[int]]:
    """Probes that vary two arguments at once, each over the values its comparisons care about.

    libseccomp 2.5 can build a wrong jump for one argument that shows only when another argument
    takes an unrelated value (seen: a 64-bit ``>`` on args[2] lost when args[0] == 0xffffffff),
    which probes around single rules miss.
    """
    pools: dict[int, list[int]] = {}
    for rule in rules:
        for c in rule.cmps:
            pools.setdefault(c.arg, set()).update(_probe_values(c, dmax))  # type: ignore[union-attr]
    # Each 32-bit half at its extremes too: libseccomp compares 64-bit values half by half.
    halves = {0xFFFFFFFF & dmax, 0xFFFFFFFF00000000 & dmax}
    pools = {a: sorted(set(_spread(sorted(v), most)) | halves) for a, v in pools.items()}
    out = []
    used = sorted(pools)
    for i, a in enumerate(used):
        for b in used[i + 1:]:
            for va in pools[a]:
                for vb in pools[b]:
                    args = [0] * 6
                    args[a], args[b] = va, vb
                    out.append(args)
    return out


def _spread(values: list[int], most: int) -> list[int]:
    """At most ``most`` of the sorted ``values``, spread evenly from the smallest to the largest."""
    if len(values) <= most:
        return values
    step = (len(values) - 1) / (most - 1)
    return sorted({values[round(i * step)] for i in range(most)})


def verify(low: Lowered, bpf: bytes) -> str | None:
    """Run libseccomp's BPF (on the project's classic interpreter) on probes around every rule
    of every arch of ``low``; the first disagreement with the rules, or None."""
    found = _disagreement(low, bpf)
    return None if found is None else f"handler '{found[0]}': {found[1]}"


def _disagreement(low: Lowered, bpf: bytes) -> tuple[str, str] | None:
    """The first probe on which libseccomp's BPF and the rules disagree: (the handler whose rules
    they are, what happened), or None."""
    from ..seccomp import cfilter
    from ..seccomp.data import SeccompData
    from ..vm import cbpf
    insns = cfilter.load(bpf)[1]
    for arch in low.arches:
        audit = _arch.get(arch).audit
        dmax = scmp_arch.arg_max(arch)
        for nr, sr in low.by_arch[arch].items():
            for rule in sr.rules:
                base = _witness(rule.cmps)
                probes = [base] + [base[:c.arg] + [v] + base[c.arg + 1:]
                                   for c in rule.cmps for v in _probe_values(c, dmax)]
                for args in probes + _pairwise(sr.rules, dmax):
                    args = [a & dmax for a in args]
                    want = evaluate(sr.rules, args, low.default)
                    got = cbpf.run(insns, SeccompData(nr, audit, args=tuple(args)).pack()).ret
                    if got != want:
                        return sr.handler, (f"syscall {nr} on {arch} with args "
                                            f"{', '.join(map(hex, args))}: libseccomp's filter "
                                            f"returns {got:#x}, the rules {want:#x}")
    return None


@dataclass(frozen=True)
class KernelFilter:
    """A policy compiled by libseccomp and checked: the classic BPF and libseccomp's PFC."""

    bpf: bytes
    pfc: str
    lowered: Lowered
    order: int


def compile_filter(policy: Policy | Lowered) -> KernelFilter:
    """The checked kernel filter for ``policy`` (PolicyError, naming the handler, when the
    policy uses something a kernel filter cannot express or libseccomp cannot build it)."""
    low = policy if isinstance(policy, Lowered) else lower(policy)
    # why no attempt gave a right filter, as (handler, problem): a filter that decides wrong
    # says more than a build that ran out of time, so it is the one reported when both happen
    wrong = stuck = None
    for attempt in (low, None):
        if attempt is None:
            if low.positive:
                break
            attempt = lower(low.policy, positive=True)
        for order in range(len(_ORDERS)):
            built = _build_in_child(attempt, order)
            if isinstance(built, _Stuck):
                stuck = (built.handler, f"libseccomp did not finish building the filter in "
                         f"{BUILD_SECONDS:g} s" + (" (while adding this handler's rules)"
                                                   if built.handler else ""))
                continue
            found = _disagreement(attempt, built[0])
            if found is None:
                return KernelFilter(built[0], built[1], attempt, order)
            wrong = found
    handler, problem = wrong or stuck or (None, "libseccomp did not finish building the filter")
    h = low.policy.handlers.get(handler) if handler else None
    raise PolicyError(f"libseccomp cannot build a filter that decides like the policy "
                      f"(a libseccomp 2.5 limitation): {problem}",
                      loc=h.loc if h else None, context=f"handler '{handler}'" if handler else None)


def export_bpf(policy: Policy | Lowered | pyseccomp.SyscallFilter) -> bytes:
    """The classic BPF program (``struct sock_filter`` array, native endian) for ``policy`` (a
    libseccomp filter built elsewhere is exported as it is)."""
    if isinstance(policy, pyseccomp.SyscallFilter):
        return _export(policy, "export_bpf")
    return compile_filter(policy).bpf


def export_pfc(policy: Policy | Lowered | pyseccomp.SyscallFilter) -> str:
    """libseccomp's pseudo filter code for ``policy``."""
    if isinstance(policy, pyseccomp.SyscallFilter):
        return _export(policy, "export_pfc").decode()
    return compile_filter(policy).pfc


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def run_command(policy: Policy, argv: list[str]) -> int:
    """Run ``argv`` under ``policy`` as a real kernel filter, with no tracer. Returns the
    command's exit status, or 128 + the signal that ended it (a KILL_PROCESS verdict: 159)."""
    if not argv:
        raise PolicyError("no command to run")
    bpf = compile_filter(policy).bpf  # refuse before forking: errors belong to the caller
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.addressof(buf))
    sys_seccomp = _arch.syscall_number(_arch.native(), "seccomp")
    syscall = _libc.syscall
    syscall.restype = ctypes.c_long
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's Python
        try:
            # no_new_privs: what lets an unprivileged process install a filter (and what
            # libseccomp's seccomp_load would set too)
            if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
            if syscall(ctypes.c_long(sys_seccomp), ctypes.c_long(_SECCOMP_SET_MODE_FILTER),
                       ctypes.c_long(0), ctypes.byref(prog)) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"seccomp(SET_MODE_FILTER): {os.strerror(err)}")
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
