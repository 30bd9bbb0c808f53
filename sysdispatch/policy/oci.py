"""Docker/Podman/OCI seccomp profiles (JSON) to the policy model, and the model back to OCI JSON.

Import follows what a container runtime does with a profile (moby's profile filtering, then runc
feeding libseccomp), so that the imported policy decides like the profile does in a container:

* Architectures: ``archMap`` picks the entry whose ``architecture`` is the target arch (``--arch``,
  default: this machine's) and adds its ``subArchitectures``; a plain OCI ``architectures`` list
  is used as given. The target arch is always included (libseccomp's filter always has it).
* ``includes``/``excludes`` are decided for the target: ``caps`` (includes: all listed caps held;
  excludes: any listed cap held — the caps given with ``--caps``, default none), ``arches``
  (Go ``GOARCH`` names such as ``amd64`` or libseccomp names) and ``minKernel`` (``--kernel``,
  default: the running kernel's ``major.minor``).
* Entries for one syscall become the rules of one handler, in profile order (first match wins);
  the conditions of an entry are ANDed. As in libseccomp, an unconditional entry overrides every
  conditional one of its syscall (the first unconditional one wins), and entries whose action is
  the default action are left out (libseccomp refuses them; runtimes skip them).
* Names are resolved per arch through libseccomp; a name an arch lacks is skipped and counted
  (profiles list names for many arches and kernels). On arches with ``socketcall``/``ipc``
  (x86) libseccomp also routes socket and SysV-IPC rules through the multiplexer with
  ``args[0] == call``: the importer does the same, so the x86 table matches the real filter.
* Actions: ``SCMP_ACT_ERRNO``/``SCMP_ACT_TRACE`` take ``errnoRet`` (default EPERM, as runc);
  ``defaultErrnoRet`` for the default. An architecture outside the filter gets KILL_THREAD,
  libseccomp's default bad-arch action, which runtimes keep.

Unknown keys, ops, actions or architectures raise :class:`PolicyError` naming the JSON path, e.g.
``moby.json: syscalls[12].args[0]: unknown key 'valu'``.

Export (:func:`export_oci`) writes the lowered policy (:mod:`sysdispatch.policy.lower`): one
``syscalls`` entry per distinct (action, conditions), listing every syscall that has it.
"""

from __future__ import annotations

import errno as _errno
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Location, PolicyError
from ..seccomp import actions as A
from ..seccomp import arch as _sa
from . import _arch, scmp_arch
from .lower import Cmp, Lowered, lower
from .model import Act, Cond, Handler, Policy, Rule, Table

ACTIONS = {
    "SCMP_ACT_KILL": A.KILL_THREAD, "SCMP_ACT_KILL_THREAD": A.KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": A.KILL_PROCESS, "SCMP_ACT_TRAP": A.TRAP,
    "SCMP_ACT_ERRNO": A.ERRNO, "SCMP_ACT_TRACE": A.TRACE, "SCMP_ACT_ALLOW": A.ALLOW,
    "SCMP_ACT_LOG": A.LOG, "SCMP_ACT_NOTIFY": A.USER_NOTIF,
}
_ACTION_NAME = {A.KILL_THREAD: "SCMP_ACT_KILL_THREAD", A.KILL_PROCESS: "SCMP_ACT_KILL_PROCESS",
                A.TRAP: "SCMP_ACT_TRAP", A.ERRNO: "SCMP_ACT_ERRNO", A.TRACE: "SCMP_ACT_TRACE",
                A.ALLOW: "SCMP_ACT_ALLOW", A.LOG: "SCMP_ACT_LOG", A.USER_NOTIF: "SCMP_ACT_NOTIFY"}
OPS = {"SCMP_CMP_NE": "!=", "SCMP_CMP_LT": "<", "SCMP_CMP_LE": "<=", "SCMP_CMP_EQ": "==",
       "SCMP_CMP_GE": ">=", "SCMP_CMP_GT": ">", "SCMP_CMP_MASKED_EQ": "&=="}
_OP_NAME = {v: k for k, v in OPS.items()}
DEFAULT_DATA = _errno.EPERM  # runc's errno (and trace data) when a profile gives none
BAD_ARCH = A.KILL_THREAD     # libseccomp's default for an arch outside the filter

_TOP_KEYS = {"defaultAction", "defaultErrnoRet", "defaultErrno", "architectures", "archMap",
             "syscalls", "flags", "listenerPath", "listenerMetadata"}
_ENTRY_KEYS = {"names", "name", "action", "errnoRet", "errno", "args", "comment", "includes",
               "excludes"}
_ARG_KEYS = {"index", "value", "valueTwo", "op"}
_FILTER_KEYS = {"caps", "arches", "minKernel"}
_ARCHMAP_KEYS = {"architecture", "subArchitectures"}


@dataclass
class ImportResult:
    policy: Policy
    skipped: dict[str, list[str]] = field(default_factory=dict)  # arch -> names it lacks
    warnings: list[str] = field(default_factory=list)

    @property
    def skipped_count(self) -> int:
        return sum(len(v) for v in self.skipped.values())


class _Reader:
    """Walks the JSON with its path, so every complaint can say where."""

    def __init__(self, file: str | None) -> None:
        self.loc = Location(file) if file else None

    def fail(self, path: str, msg: str) -> PolicyError:
        return PolicyError(msg, loc=self.loc, context=path or "profile")

    def obj(self, v: Any, path: str, keys: set[str]) -> dict:
        if not isinstance(v, dict):
            raise self.fail(path, f"expected an object, got {type(v).__name__}")
        for k in v:
            if k not in keys:
                raise self.fail(path, f"unknown key '{k}'")
        return v

    def lst(self, v: Any, path: str) -> list:
        if v is None:
            return []
        if not isinstance(v, list):
            raise self.fail(path, f"expected a list, got {type(v).__name__}")
        return v

    def string(self, v: Any, path: str) -> str:
        if not isinstance(v, str):
            raise self.fail(path, f"expected a string, got {json.dumps(v)}")
        return v

    def uint(self, v: Any, path: str, top: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top:
            raise self.fail(path, f"expected an integer 0..{top}, got {json.dumps(v)}")
        return v


def kernel_version(text: str | None = None) -> tuple[int, int]:
    """``major.minor`` of ``text`` (e.g. "6.1", "3.12.25-gentoo"), or of the running kernel."""
    text = os.uname().release if text is None else text
    m = re.match(r"^(\d+)\.(\d+)", text.strip())
    if not m:
        raise PolicyError(f"kernel version '{text}' is not of the form MAJOR.MINOR")
    return int(m[1]), int(m[2])


def _arch_name(r: _Reader, v: Any, path: str, target: str) -> str | None:
    """Our name for an SCMP_ARCH_* value (None: an arch this project does not model)."""
    s = r.string(v, path)
    if not s.startswith("SCMP_ARCH_"):
        raise r.fail(path, f"unknown architecture '{s}' (expected SCMP_ARCH_...)")
    name = s[len("SCMP_ARCH_"):].lower()
    if name == "native":
        return target
    return _arch.canonical(name) if _arch.known(name) else None


def _action(r: _Reader, entry: dict, path: str, errno_key: str, errno_ret_key: str) -> int:
    name = r.string(entry.get("action" if "action" in entry else "defaultAction"), path)
    if name not in ACTIONS:
        raise r.fail(path, f"unknown action '{name}'")
    act = ACTIONS[name]
    data = entry.get(errno_ret_key)
    if data is None and isinstance(entry.get(errno_key), str):  # Podman's "errno": "EPERM"
        sym = entry[errno_key]
        if not (sym.startswith("E") and isinstance(getattr(_errno, sym, None), int)):
            raise r.fail(f"{path}.{errno_key}", f"unknown errno '{sym}'")
        data = getattr(_errno, sym)
    if act in (A.ERRNO, A.TRACE):
        return act | r.uint(DEFAULT_DATA if data is None else data,
                            f"{path}.{errno_ret_key}", 0xFFFF)
    return act


def _applies(r: _Reader, entry: dict, path: str, caps: frozenset[str], kernel: tuple[int, int],
             aliases: frozenset[str]) -> bool:
    inc = r.obj(entry.get("includes") or {}, f"{path}.includes", _FILTER_KEYS)
    exc = r.obj(entry.get("excludes") or {}, f"{path}.excludes", _FILTER_KEYS)
    for key, flt in (("includes", inc), ("excludes", exc)):
        for i, c in enumerate(r.lst(flt.get("caps"), f"{path}.{key}.caps")):
            r.string(c, f"{path}.{key}.caps[{i}]")
        for i, a in enumerate(r.lst(flt.get("arches"), f"{path}.{key}.arches")):
            r.string(a, f"{path}.{key}.arches[{i}]")
    if any(_cap(c) in caps for c in exc.get("caps") or ()):
        return False
    if aliases & set(exc.get("arches") or ()):
        return False
    if exc.get("minKernel") and kernel >= _min_kernel(r, exc, f"{path}.excludes.minKernel"):
        return False
    if inc.get("arches") and not aliases & set(inc["arches"]):
        return False
    if not all(_cap(c) in caps for c in inc.get("caps") or ()):
        return False
    if inc.get("minKernel") and kernel < _min_kernel(r, inc, f"{path}.includes.minKernel"):
        return False
    return True


def _min_kernel(r: _Reader, flt: dict, path: str) -> tuple[int, int]:
    try:
        return kernel_version(r.string(flt["minKernel"], path))
    except PolicyError as exc:
        raise r.fail(path, exc.message) from None


def _cap(c: str) -> str:
    c = c.strip().upper()
    return c if c.startswith("CAP_") else "CAP_" + c


def _conds(r: _Reader, entry: dict, path: str) -> tuple[Cond, ...]:
    out = []
    for i, a in enumerate(r.lst(entry.get("args"), f"{path}.args")):
        p = f"{path}.args[{i}]"
        a = r.obj(a, p, _ARG_KEYS)
        if "index" not in a or "op" not in a:
            raise r.fail(p, "an argument condition needs 'index' and 'op'")
        idx = r.uint(a["index"], f"{p}.index", 5)
        op = r.string(a["op"], f"{p}.op")
        if op not in OPS:
            raise r.fail(f"{p}.op", f"unknown operator '{op}'")
        value = r.uint(a.get("value", 0), f"{p}.value", 2**64 - 1)
        two = r.uint(a.get("valueTwo", 0), f"{p}.valueTwo", 2**64 - 1)
        loc = Location(r.loc.file) if r.loc else None
        if op == "SCMP_CMP_MASKED_EQ":  # (arg & value) == valueTwo
            out.append(Cond(idx, "==", two, mask=value, loc=loc))
        else:
            out.append(Cond(idx, OPS[op], value, loc=loc))
    return tuple(out)


def import_profile(profile: dict | str | os.PathLike, *, caps: tuple[str, ...] = (),
                   kernel: str | None = None, arch: str | None = None,
                   name: str | None = None) -> ImportResult:
    """Read a Docker/Podman/OCI profile (a path or the parsed JSON) into a policy."""
    file = None
    if not isinstance(profile, dict):
        file = str(profile)
        try:
            data = json.loads(Path(file).read_text())
        except json.JSONDecodeError as exc:
            raise PolicyError(f"not JSON: {exc.msg}",
                              loc=Location(file, exc.lineno, exc.colno)) from None
    else:
        data = profile
    r = _Reader(file)
    if arch is not None and not _arch.known(arch):
        raise PolicyError(f"--arch {arch}: unknown architecture (known: "
                          f"{', '.join(a.name for a in _sa.ARCHES)})")
    target = _arch.canonical(arch) if arch else _arch.native()
    top = r.obj(data, "", _TOP_KEYS)
    res = ImportResult(policy=None)  # type: ignore[arg-type]
    default = _action(r, {"action": top.get("defaultAction"),
                          "errnoRet": top.get("defaultErrnoRet"),
                          "errno": top.get("defaultErrno")}, "defaultAction", "errno", "errnoRet")
    for key in ("flags", "listenerPath", "listenerMetadata"):
        if top.get(key):
            res.warnings.append(f"'{key}' has no meaning for the emulator and was left out")

    arches = [target]
    if top.get("archMap") and top.get("architectures"):
        raise r.fail("", "both 'architectures' and 'archMap' are given (a runtime refuses that)")
    listed: list[tuple[str, Any]] = []
    for i, m in enumerate(r.lst(top.get("archMap"), "archMap")):
        m = r.obj(m, f"archMap[{i}]", _ARCHMAP_KEYS)
        if _arch_name(r, m.get("architecture"), f"archMap[{i}].architecture", target) != target:
            continue
        subs = r.lst(m.get("subArchitectures"), f"archMap[{i}].subArchitectures")
        listed += [(f"archMap[{i}].subArchitectures[{j}]", s) for j, s in enumerate(subs)]
    listed += [(f"architectures[{i}]", s)
               for i, s in enumerate(r.lst(top.get("architectures"), "architectures"))]
    for path, s in listed:
        a = _arch_name(r, s, path, target)
        if a is None:
            res.warnings.append(f"{path}: {s} is not an architecture sysdispatch models: left out")
        else:
            arches.append(a)
    usable = list(dict.fromkeys(arches))

    capset = frozenset(_cap(c) for c in caps if c.strip())
    kver = kernel_version(kernel)
    aliases = scmp_arch.aliases(target)
    # (arch, nr) -> [(conds, ret)] in profile order
    slots: dict[str, dict[int, list[tuple[tuple[Cond, ...], int]]]] = {a: {} for a in usable}
    skipped: dict[str, set[str]] = {a: set() for a in usable}
    comments: dict[str, list[str]] = {}
    dropped_default = 0
    for i, entry in enumerate(r.lst(top.get("syscalls"), "syscalls")):
        path = f"syscalls[{i}]"
        entry = r.obj(entry, path, _ENTRY_KEYS)
        names = list(r.lst(entry.get("names"), f"{path}.names"))
        if entry.get("name"):
            names.append(entry["name"])
        names = [r.string(n, f"{path}.names") for n in names]
        ret = _action(r, entry, path, "errno", "errnoRet")
        conds = _conds(r, entry, path)
        if not _applies(r, entry, path, capset, kver, aliases):
            continue
        if len({c.arg for c in conds}) < len(conds):
            res.warnings.append(f"{path}: several conditions on one argument are ANDed here; "
                                "runc would OR them")
        if ret == default:
            dropped_default += 1
            continue
        for n in names:
            if isinstance(entry.get("comment"), str) and entry["comment"]:
                comments.setdefault(n, []).append(entry["comment"])
            for a in usable:
                direct, mux = scmp_arch.targets(a, n)
                if direct is None and mux is None:
                    skipped[a].add(n)
                if direct is not None:
                    slots[a].setdefault(direct, []).append((conds, ret))
                if mux is not None:
                    mux_nr, call = mux
                    muxed = (Cond(0, "==", call),) + tuple(c for c in conds if c.arg != 0)
                    slots[a].setdefault(mux_nr, []).append((muxed, ret))
    if dropped_default:
        res.warnings.append(f"{dropped_default} entries with the default action left out "
                            "(libseccomp refuses them)")
    res.skipped = {a: sorted(v) for a, v in skipped.items() if v}
    pname = name or (Path(file).stem if file else "imported")
    res.policy = _build(pname, file, usable, default, slots, comments, capset, kver, target)
    return res


def _build(pname, file, arches, default, slots, comments, caps, kver, target) -> Policy:
    default_act = Act(ret=default)
    handlers: dict[str, Handler] = {}
    by_content: dict[tuple, str] = {}
    by_arch: dict[str, dict[int, str]] = {}
    loc = Location(file) if file else None
    for a in arches:
        table = by_arch.setdefault(a, {})
        for nr, rules in sorted(slots[a].items()):
            uncond = [ret for conds, ret in rules if not conds]
            if uncond:  # libseccomp: an unconditional rule overrides the conditional ones
                act = Act(ret=uncond[0])
                hname = act.literal  # the one-line handler a policy file's literal makes
                if hname not in handlers:
                    handlers[hname] = Handler(hname, default=act, loc=loc, synthetic=True)
                table[nr] = hname
                continue
            rule_vals = tuple(Rule(conds, Act(ret=ret)) for conds, ret in rules)
            key = ("rules", rule_vals)
            hname = by_content.get(key)
            if hname is None:
                sc = _arch.syscall_name(a, nr) or str(nr)
                hname = sc if sc not in handlers else f"{sc}_{a}"
                by_content[key] = hname
                desc = "; ".join(dict.fromkeys(comments.get(sc, [])))
                handlers[hname] = Handler(hname, rules=rule_vals, default=default_act,
                                          description=desc, loc=loc)
            table[nr] = hname
    caps_txt = ",".join(sorted(caps)) or "none"
    desc = (f"Imported from {Path(file).name if file else 'an OCI profile'} for {target} "
            f"(caps: {caps_txt}; kernel {kver[0]}.{kver[1]})")
    return Policy(name=pname, arches=tuple(arches), default=default_act, bad_arch=BAD_ARCH,
                  tables={"syscalls": Table("syscalls", "nr", by_arch=by_arch, loc=loc)},
                  handlers=handlers, description=desc, path=file)


# --- export -----------------------------------------------------------------------------------

def _action_fields(ret: int, what: str, errno_key: str) -> dict:
    act = ret & A.ACTION_FULL
    if act not in _ACTION_NAME:
        raise PolicyError(f"{what}: action {ret:#010x} has no OCI name")
    out: dict[str, Any] = {"action": _ACTION_NAME[act]}
    data = ret & A.DATA
    if act in (A.ERRNO, A.TRACE):
        out[errno_key] = data
    elif data:
        raise PolicyError(f"{what}: {A.describe(ret)} carries data an OCI profile cannot "
                          "give (runtimes load SCMP_ACT_TRAP/KILL/LOG without data)")
    return out


def _arg_json(c: Cmp) -> dict:
    if c.op == "&==":
        return {"index": c.arg, "value": c.mask, "valueTwo": c.value, "op": "SCMP_CMP_MASKED_EQ"}
    return {"index": c.arg, "value": c.value, "op": _OP_NAME[c.op]}


def per_name_rules(policy: Policy, positive: bool = False
                   ) -> tuple[Lowered, dict[str, tuple], list[str]]:
    """The policy lowered (64-bit arguments) and keyed by syscall name: the same rules must hold
    on every arch where libseccomp knows the name, since OCI profiles name syscalls once."""
    low = lower(policy, args32=False, positive=positive)
    entry = policy.tables[policy.entry_table]
    by_name: dict[str, tuple] = {}
    seen_on: dict[str, str] = {}
    for arch in low.arches:
        rules_here: dict[str, tuple] = {}
        for nr in entry.by_arch.get(arch, {}):
            sc = _arch.syscall_name(arch, nr)
            if sc is None:
                raise PolicyError(f"syscall number {nr} has no name on {arch}; OCI profiles "
                                  "name syscalls", context=f"handler '{entry.by_arch[arch][nr]}'")
            sr = low.by_arch[arch].get(nr)
            rules_here[sc] = sr.rules if sr else ()
        for sc, rules in rules_here.items():
            if sc in by_name and by_name[sc] != rules:
                raise PolicyError(f"syscall '{sc}' is handled differently on {seen_on[sc]} and "
                                  f"{arch}; an OCI profile gives every architecture the same rules")
            by_name.setdefault(sc, rules)
            seen_on.setdefault(sc, arch)
        for sc, rules in list(by_name.items()):  # known here but without a slot: the default
            if sc not in rules_here and rules and scmp_arch.targets(arch, sc)[0] is not None:
                raise PolicyError(f"syscall '{sc}' has rules on {seen_on[sc]} but none on "
                                  f"{arch}; an OCI profile gives every architecture the same rules")
    warnings = []
    if low.bad_arch != BAD_ARCH:
        warnings.append(f"bad_arch {A.describe(low.bad_arch)} cannot be said in an OCI profile "
                        "(runtimes use KILL_THREAD)")
    if _arch.native() not in low.arches:
        warnings.append(f"a runtime always adds this machine's arch ({_arch.native()})")
    return low, {k: v for k, v in by_name.items() if v}, warnings


def export_oci(policy: Policy) -> tuple[dict, list[str]]:
    """The policy as an OCI seccomp profile (a JSON-ready dict), with warnings about what an
    OCI profile cannot carry.

    The profile is loaded the way a runtime loads it (one libseccomp rule per entry and name,
    in profile order) and the resulting BPF is checked against the rules on this machine's
    arch; when libseccomp would build it wrongly (see kernel.py), the profile is written again
    with positive comparisons only (==, >, >=, masked ==)."""
    problem = None
    for positive in (False, True):
        low, by_name, warnings = per_name_rules(policy, positive)
        doc = _document(policy, low.default, by_name)
        problem = _runtime_check(doc, low)
        if problem is None:
            return doc, warnings
    return doc, warnings + [f"a runtime's libseccomp may load this profile inexactly: {problem}"]


def _document(policy: Policy, default: int, by_name: dict[str, tuple]) -> dict:
    groups: dict[tuple, list[str]] = {}
    for sc, rules in by_name.items():
        for r in rules:
            groups.setdefault((r.ret, r.cmps), []).append(sc)
    out: dict[str, Any] = {}
    d = _action_fields(default, "default", "defaultErrnoRet")
    out["defaultAction"] = d.pop("action")
    out.update(d)
    out["architectures"] = [f"SCMP_ARCH_{scmp_arch.scmp_name(a).upper()}" for a in policy.arches]
    entries = []
    # unconditional groups first (largest first), then conditional ones by syscall name
    order = sorted(groups.items(), key=lambda kv: (bool(kv[0][1]), -len(kv[1]) if not kv[0][1]
                                                   else 0, sorted(kv[1]), kv[0][1]))
    for (ret, cmps), names in order:
        e: dict[str, Any] = {"names": sorted(names)}
        e.update(_action_fields(ret, f"syscall '{names[0]}'", "errnoRet"))
        if cmps:
            e["args"] = [_arg_json(c) for c in cmps]
        entries.append(e)
    out["syscalls"] = entries
    return out


def _runtime_check(doc: dict, low: Lowered) -> str | None:
    """Load ``doc`` into libseccomp for this machine's arch as a runtime would and compare the
    BPF with the rules; the first disagreement, or None."""
    import dataclasses

    import pyseccomp

    from . import kernel
    native = _arch.native()
    if native not in low.arches:
        return None

    def ret_of(e: dict, errno_key: str) -> int:
        act = ACTIONS[e["action"] if "action" in e else e["defaultAction"]]
        return act | e.get(errno_key, 0) if act in (A.ERRNO, A.TRACE) else act

    def build() -> pyseccomp.SyscallFilter:
        f = pyseccomp.SyscallFilter(ret_of(doc, "defaultErrnoRet"))
        for e in doc["syscalls"]:
            args = [pyseccomp.Arg(a["index"], getattr(pyseccomp, a["op"][len("SCMP_CMP_"):]),
                                  a["value"], a.get("valueTwo", 0)) for a in e.get("args", ())]
            for n in e["names"]:
                nr = scmp_arch.resolve(native, n)
                if nr >= 0:
                    f.add_rule(ret_of(e, "errnoRet"), nr, *args)
        return f

    built = kernel.in_child(build)
    if built is None:
        return "libseccomp did not finish loading it"
    return kernel.verify(dataclasses.replace(low, arches=(native,)), built[0])


def dumps(profile: dict) -> str:
    return json.dumps(profile, indent=2) + "\n"
