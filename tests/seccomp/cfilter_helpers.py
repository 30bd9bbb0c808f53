"""Filters for tests, built by libseccomp (pyseccomp) and exported as the kernel gets them."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pyseccomp

from sysdispatch.seccomp import cfilter

_OPS = {"SCMP_CMP_NE": pyseccomp.NE, "SCMP_CMP_LT": pyseccomp.LT, "SCMP_CMP_LE": pyseccomp.LE,
        "SCMP_CMP_EQ": pyseccomp.EQ, "SCMP_CMP_GE": pyseccomp.GE, "SCMP_CMP_GT": pyseccomp.GT,
        "SCMP_CMP_MASKED_EQ": pyseccomp.MASKED_EQ}
_SUBARCH = {"SCMP_ARCH_X86": pyseccomp.Arch.X86, "SCMP_ARCH_X32": pyseccomp.Arch.X32}


def export(f: pyseccomp.SyscallFilter) -> bytes:
    """The raw classic filter libseccomp would load (seccomp_export_bpf, through a pipe)."""
    raw = cfilter.export_libseccomp(f)
    with tempfile.TemporaryFile() as t:  # the file route gives the same bytes
        f.export_bpf(t)
        t.seek(0)
        assert t.read() == raw
    return raw


def _action(name: str, errno_ret: int) -> int:
    return {"SCMP_ACT_ALLOW": pyseccomp.ALLOW, "SCMP_ACT_LOG": pyseccomp.LOG,
            "SCMP_ACT_ERRNO": pyseccomp.ERRNO(errno_ret)}[name]


def profile_filter(path: Path) -> bytes:
    """A Docker-style JSON profile (../shared/profiles) for x86_64 (+ its sub-architectures),
    for a container without extra capabilities, built by libseccomp."""
    p = json.loads(path.read_text())
    default = _action(p["defaultAction"], p.get("defaultErrnoRet", 1))
    f = pyseccomp.SyscallFilter(default)
    for entry in p.get("archMap", []):
        if entry["architecture"] == "SCMP_ARCH_X86_64":
            for sub in entry.get("subArchitectures", []):
                f.add_arch(_SUBARCH[sub])
    for rule in p["syscalls"]:
        inc = rule.get("includes") or {}
        if inc.get("caps") or (inc.get("arches") and "amd64" not in inc["arches"]):
            continue
        if "amd64" in (rule.get("excludes") or {}).get("arches", []):
            continue
        action = _action(rule["action"], rule.get("errnoRet", p.get("defaultErrnoRet", 1)))
        if action == default:
            continue
        args = [pyseccomp.Arg(a["index"], _OPS[a["op"]], a["value"], a.get("valueTwo", 0))
                for a in rule.get("args") or []]
        for name in rule["names"]:
            try:
                f.add_rule(action, name, *args)
            except (OSError, ValueError):
                pass  # a name this libseccomp does not know on x86_64
    return export(f)
