"""Least-privilege policy generation from recorded traces (``sysdispatch generate``).

Every syscall the traces show (on the architecture each call was made with) gets an ``allow``
slot; everything else falls through to the policy default (``errno(EPERM)`` unless told). For
the syscalls named in ``args`` the slot holds a rules handler instead, allowing exactly the
argument values the traces show (``args[i] == v`` rules, all 64 bits compared as the recorded
register held them) so that, e.g., socket allows only the address families seen. Traces from
several runs merge: the policy allows the union.

Calls the recording policy denied are allowed too (the program attempted them): the generated
policy must let every recorded call pass, and :class:`Generated` says how many such calls there
were so the CLI can say so. The result is a policy model; writer.py turns it into TOML and
oci.py into an OCI profile, so the generator has no syntax of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import PolicyError, TraceError
from ..seccomp import actions
from ..seccomp import arch as _arch
from ..trace.record import TraceReader
from .model import Act, Cond, Handler, Policy, Rule, Table

# Which argument constrains a syscall named in --args without ``:i`` (the one that says what
# kind of object or operation the call is about).
DEFAULT_ARG: dict[str, int] = {"socket": 0, "socketpair": 0, "clone": 0, "unshare": 0,
                               "ioctl": 1, "fcntl": 1, "prctl": 0, "personality": 0,
                               "mmap": 2, "mprotect": 2, "kill": 1, "setsockopt": 2,
                               "getsockopt": 2}
MAX_VALUES = 64   # more distinct values than this: the argument is not a useful constraint
ALLOW = Act(ret=actions.ALLOW)


@dataclass
class Generated:
    policy: Policy
    events: int = 0
    traces: list[str] = field(default_factory=list)
    denied_when_recorded: int = 0        # recorded calls that the recording policy refused
    unconstrained: list[str] = field(default_factory=list)   # --args syscalls left plain allow
    notes: list[str] = field(default_factory=list)


def parse_args_spec(text: str | None) -> dict[str, int]:
    """``socket,ioctl:1`` -> {"socket": 0, "ioctl": 1}. A name without ``:i`` takes
    :data:`DEFAULT_ARG` (else args[0])."""
    out: dict[str, int] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, idx = part.partition(":")
        if sep:
            if not idx.isdigit() or not 0 <= int(idx) <= 5:
                raise PolicyError(f"--args: '{part}': the argument index must be 0..5")
            out[name] = int(idx)
        else:
            out[name] = DEFAULT_ARG.get(name, 0)
    return out


def _arch_name(audit: int, nr: int, where: str) -> str:
    a = _arch.by_audit(audit & 0xFFFFFFFF)
    if a is None:
        raise TraceError(f"{where}: architecture {audit & 0xFFFFFFFF:#010x} is not one a policy "
                         f"can list")
    return _arch.for_number(a, nr).name


def generate(traces: Iterable[str | os.PathLike], *, name: str,
             default: str = "errno(EPERM)", args: dict[str, int] | None = None,
             allow_truncated: bool = False) -> Generated:
    """The least-privilege policy for ``traces`` (see the module docstring)."""
    try:
        default_ret = actions.parse(default)
    except ValueError as exc:
        raise PolicyError(f"--default: {exc}") from None
    args = args or {}
    seen: dict[str, dict[int, str]] = {}                 # arch -> nr -> syscall name
    values: dict[tuple[str, int], set[int]] = {}          # (arch, nr) -> values of the arg
    out = Generated(policy=None)  # type: ignore[arg-type]
    for path in traces:
        with TraceReader(path, allow_truncated=allow_truncated) as reader:
            out.traces.append(str(path))
            for ev in reader:
                arch = _arch_name(ev.arch, ev.nr, f"{path}:{reader.line}")
                seen.setdefault(arch, {})[ev.nr] = ev.name
                out.events += 1
                if actions.action_of(ev.verdict) not in (actions.ALLOW, actions.LOG):
                    out.denied_when_recorded += 1
                if ev.name in args:
                    values.setdefault((arch, ev.nr), set()).add(ev.args[args[ev.name]])
            if reader.truncated:
                out.notes.append(reader.truncated)
    if not seen:
        raise TraceError("generate: the traces hold no events: nothing to allow")

    handlers: dict[str, Handler] = {"allow": Handler("allow", default=ALLOW, synthetic=True)}
    by_arch: dict[str, dict[int, str]] = {}
    for arch, calls in seen.items():
        slots = by_arch[arch] = {}
        for nr, sname in calls.items():
            vals = values.get((arch, nr))
            if vals is None:
                slots[nr] = "allow"
                continue
            if len(vals) > MAX_VALUES:
                out.unconstrained.append(sname)
                slots[nr] = "allow"
                continue
            hname = f"{sname}_seen"
            i = args[sname]
            rules = tuple(Rule((Cond(i, "==", v),), ALLOW) for v in sorted(vals))
            prior = handlers.get(hname)
            if prior is not None and prior.rules != rules:   # the same call on two arches
                hname = f"{sname}_seen_{arch}"
            handlers[hname] = Handler(hname, rules=rules, description=(
                f"args[{i}] as the traces show it ({len(vals)} value"
                f"{'s' if len(vals) != 1 else ''})"))
            slots[nr] = hname
    native = _arch.native().name
    arches = tuple(sorted(seen, key=lambda a: (a != native, a)))
    out.policy = Policy(name=name, arches=arches, default=Act(ret=default_ret),
                        bad_arch=actions.KILL_PROCESS,
                        tables={"syscalls": Table("syscalls", "nr", by_arch=by_arch)},
                        handlers=handlers,
                        description="generated from traces: allows what they show")
    return out


def to_toml(gen: Generated) -> str:
    """The policy file text, checked by reading it back and compiling it."""
    from .compile import compile_policy
    from .parse import loads
    from .writer import action_text, write_policy
    header = ["Written by `sysdispatch generate` from:", *(f"  {t}" for t in gen.traces),
              f"{gen.events} recorded calls; "
              f"{sum(len(s) for s in gen.policy.tables['syscalls'].by_arch.values())} "
              f"syscalls allowed, everything else {action_text(gen.policy.default)}."]
    text = write_policy(gen.policy, header=header)
    compile_policy(loads(text, f"<generated {gen.policy.name}>"))
    return text


def to_oci(gen: Generated) -> tuple[str, list[str]]:
    """The policy as an OCI/Docker profile (the bridge's exporter) and its warnings."""
    from .oci import dumps, export_oci
    doc, warnings = export_oci(gen.policy)
    return dumps(doc), warnings
