"""Shared helpers of the bridge tests (OCI import/export, kernel export, SPO, TOML writer).

:func:`libseccomp_filter` is the *original* the imported policy is compared with: the JSON
profile fed straight to libseccomp the way a container runtime does (moby's filtering of
includes/excludes, then one ``seccomp_rule_add`` per syscall name with native numbers). It is
written independently of :mod:`sysdispatch.policy.oci` on purpose: the two must agree.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pyseccomp

from sysdispatch.policy import scmp_arch
from sysdispatch.seccomp import arch as sarch
from sysdispatch.seccomp import cfilter
from sysdispatch.seccomp.data import SeccompData
from sysdispatch.vm import cbpf

_ACT = {"SCMP_ACT_ALLOW": pyseccomp.ALLOW, "SCMP_ACT_KILL": pyseccomp.KILL_THREAD,
        "SCMP_ACT_KILL_THREAD": pyseccomp.KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS": pyseccomp.KILL_PROCESS, "SCMP_ACT_TRAP": pyseccomp.TRAP,
        "SCMP_ACT_LOG": pyseccomp.LOG, "SCMP_ACT_NOTIFY": pyseccomp.NOTIFY}
_CMP = {"SCMP_CMP_NE": pyseccomp.NE, "SCMP_CMP_LT": pyseccomp.LT, "SCMP_CMP_LE": pyseccomp.LE,
        "SCMP_CMP_EQ": pyseccomp.EQ, "SCMP_CMP_GE": pyseccomp.GE, "SCMP_CMP_GT": pyseccomp.GT,
        "SCMP_CMP_MASKED_EQ": pyseccomp.MASKED_EQ}
_GOARCH = {"x86_64": "amd64"}


def _action(name: str, ret: int | None) -> int:
    if name == "SCMP_ACT_ERRNO":
        return pyseccomp.ERRNO(errno.EPERM if ret is None else ret)
    if name == "SCMP_ACT_TRACE":
        return pyseccomp.TRACE(errno.EPERM if ret is None else ret)
    return _ACT[name]


def libseccomp_filter(profile: dict | str | Path, *, caps: tuple[str, ...] = (),
                      kernel: tuple[int, int] = (6, 1)) -> pyseccomp.SyscallFilter:
    """The profile as runc + libseccomp load it on this (x86_64) machine."""
    if not isinstance(profile, dict):
        profile = json.loads(Path(profile).read_text())
    native = sarch.native().name
    goarch = _GOARCH.get(native, native)
    default = _action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    f = pyseccomp.SyscallFilter(default)
    for m in profile.get("archMap") or []:
        if m["architecture"] == f"SCMP_ARCH_{native.upper()}":
            for sub in m.get("subArchitectures") or []:
                f.add_arch(getattr(pyseccomp.Arch, sub[len("SCMP_ARCH_"):]))
    for a in profile.get("architectures") or []:
        tok = getattr(pyseccomp.Arch, a[len("SCMP_ARCH_"):])
        if tok != pyseccomp.system_arch():
            f.add_arch(tok)
    for e in profile.get("syscalls") or []:
        inc, exc = e.get("includes") or {}, e.get("excludes") or {}
        if any(c in caps for c in exc.get("caps") or ()) or goarch in (exc.get("arches") or ()):
            continue
        if inc.get("arches") and goarch not in inc["arches"]:
            continue
        if not all(c in caps for c in inc.get("caps") or ()):
            continue
        if inc.get("minKernel") and kernel < tuple(int(x) for x in inc["minKernel"].split(".")):
            continue
        act = _action(e["action"], e.get("errnoRet"))
        if act == default:
            continue  # libseccomp refuses it (EACCES); runc skips it
        args = [pyseccomp.Arg(a["index"], _CMP[a["op"]], a.get("value", 0), a.get("valueTwo", 0))
                for a in e.get("args") or []]
        for n in e["names"]:
            nr = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n)
            if nr == -1:
                continue  # unknown to libseccomp: runc skips it
            f.add_rule(act, nr, *args)
    return f


class ClassicFilter:
    """A raw classic filter (libseccomp's export), run by the project's classic interpreter."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.insns = cfilter.load(raw)[1]

    def ret(self, data: SeccompData) -> int:
        return cbpf.run(self.insns, data.pack()).ret


MINUS_ONE = 0xFFFFFFFF  # syscall -1: the default action, not bad_arch (see test_export_kernel)


def sweep_cases(policy, arches=None, extra_args=()):
    """SeccompData for every syscall number of each arch (plus a few numbers past the table),
    with each condition's interesting argument values in its argument position. On arches where
    libseccomp compares 32-bit words the values are cut to 32 bits (the kernel zero-extends
    their arguments, and libseccomp looks at the low word only)."""
    entry = policy.tables[policy.entry_table]
    for a in arches or policy.arches:
        arch = sarch.by_name(a)
        dmax = scmp_arch.arg_max(a)
        nrs = sorted(arch.table) + [arch.nr_base + 1000, arch.nr_base + 0x3FFF]
        if arch.name in ("x86_64", "x32"):
            nrs.append(MINUS_ONE)
        for nr in nrs:
            yield SeccompData(nr, arch.audit)
            hname = entry.by_arch.get(arch.name, {}).get(nr)
            for cond in _conds_of(policy, hname):
                for v in cond.interesting_values() + tuple(extra_args):
                    args = [0] * 6
                    args[cond.arg] = v & dmax
                    yield SeccompData(nr, arch.audit, args=tuple(args))
    # an architecture outside the policy
    yield SeccompData(0, sarch.AARCH64.audit)


def _conds_of(policy, hname, seen=None):
    seen = set() if seen is None else seen
    if hname is None or hname in seen:
        return []
    seen.add(hname)
    h = policy.handlers[hname]
    out = []
    for r in h.rules:
        out.extend(r.conds)
        if r.then.tail_call:
            t = policy.tables[r.then.tail_call]
            from sysdispatch.policy.model import Cond
            out.extend(Cond(t.arg, "==", k) for k in t.entries)
            for h2 in t.entries.values():
                out.extend(_conds_of(policy, h2, seen))
    return out


def emulator(policy):
    """The emulator's verdict function for ``policy``: the compiled policy (entry program, jump
    tables, handler programs) on the BPF interpreter, checked against the reference evaluator
    on every call (the model run directly)."""
    from sysdispatch.policy import reference
    from sysdispatch.policy.loaded import LoadedPolicy
    loaded = LoadedPolicy(policy)

    def decide(data):
        ret = loaded.decide(data).ret
        assert ret == reference.evaluate(policy, data).ret, data
        return ret
    return decide
