"""``sysdispatch import``, ``export`` and ``run --kernel``: the bridge to the container world.

* ``import PROFILE.json -o filters/NAME.toml [--caps CAP_SYS_ADMIN,...] [--kernel 6.1]
  [--arch x86_64]`` reads a Docker/Podman/OCI profile as a runtime would for those caps, kernel
  and arch (defaults: no caps, the running kernel, this machine's arch) and writes a policy file.
* ``export POLICY --format oci|spo|bpf|pfc [-o OUT]`` writes the policy as an OCI profile (JSON),
  a Security Profiles Operator SeccompProfile (YAML), libseccomp's classic BPF (binary) or its
  pseudo filter code. POLICY is a policy file, or an OCI profile (.json) imported with defaults.
* ``run --kernel POLICY -- CMD [ARG...]`` runs CMD under the policy as a real kernel filter with
  no tracer; exits with CMD's status, or 128 + the signal that killed it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import PolicyError
from ..policy.model import Policy


def load_policy(path: str) -> tuple[Policy, list[str]]:
    """A policy from a policy file or an OCI profile (imported with the defaults)."""
    if path.endswith(".json"):
        from ..policy import oci
        res = oci.import_profile(path)
        return res.policy, res.warnings
    from ..policy import parse
    return parse.load(path), []


def _warn(lines: list[str]) -> None:
    for line in lines:
        print(f"sysdispatch: warning: {line}", file=sys.stderr)


def _write(out: str | None, data: str | bytes) -> None:
    if out is None or out == "-":
        if isinstance(data, bytes):
            if sys.stdout.isatty():
                raise PolicyError("classic BPF is binary: give -o FILE (or redirect stdout)")
            sys.stdout.buffer.write(data)
        else:
            sys.stdout.write(data)
        return
    path = Path(out)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")


def cmd_import(args: argparse.Namespace) -> int:
    from ..policy import oci, writer
    caps = tuple(c for c in (args.caps or "").split(",") if c.strip())
    res = oci.import_profile(args.profile, caps=caps, kernel=args.kernel, arch=args.arch,
                             name=args.name or (Path(args.output).stem if args.output
                                                and args.output != "-" else None))
    pol = res.policy
    kver = oci.kernel_version(args.kernel)
    header = [
        f"Written by `sysdispatch import {Path(args.profile).name}` for {pol.arches[0]}, "
        f"caps {','.join(caps) or '(none)'}, kernel {kver[0]}.{kver[1]}.",
        "Entries for one syscall became the rules of one handler (first match wins);",
        "an unconditional entry overrides conditional ones, as in libseccomp.",
    ]
    if res.skipped:
        counts = ", ".join(f"{n} on {a}" for a, n in
                           ((a, len(v)) for a, v in res.skipped.items()))
        header.append(f"Names an architecture lacks were skipped ({counts}).")
    _write(args.output, writer.write_policy(pol, header=header))
    _warn(res.warnings)
    entry = pol.tables[pol.entry_table]
    slots = ", ".join(f"{len(entry.by_arch.get(a, {}))} on {a}" for a in pol.arches)
    print(f"imported {args.profile}: {slots} syscall slots, "
          f"{sum(1 for h in pol.handlers.values() if h.rules)} conditional handlers; "
          f"{res.skipped_count} names skipped (unknown to libseccomp on an arch)",
          file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    pol, warnings = load_policy(args.policy)
    if args.format == "oci":
        from ..policy import oci
        doc, w = oci.export_oci(pol)
        data: str | bytes = oci.dumps(doc)
    elif args.format == "spo":
        from ..policy import spo
        data, w = spo.dumps(pol)
    elif args.format == "bpf":
        from ..policy import kernel
        data, w = kernel.export_bpf(pol), []
    else:
        from ..policy import kernel
        data, w = kernel.export_pfc(pol), []
    _write(args.output, data)
    _warn(warnings + w)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..policy import kernel
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise PolicyError("no command given: sysdispatch run --kernel POLICY -- CMD [ARG...]")
    pol, warnings = load_policy(args.kernel)
    _warn(warnings)
    return kernel.run_command(pol, command)


def register(sub) -> None:
    p = sub.add_parser("import", help="import a Docker/Podman/OCI seccomp profile as a policy",
                       description="Read a Docker/Podman/OCI seccomp profile (JSON) as a container "
                       "runtime would and write it as a policy file.")
    p.add_argument("profile", metavar="PROFILE.json")
    p.add_argument("-o", "--output", metavar="OUT.toml", help="policy file to write (default: "
                   "stdout)")
    p.add_argument("--caps", metavar="CAP,...", default="",
                   help="capabilities the container holds, for includes/excludes (default: none)")
    p.add_argument("--kernel", metavar="X.Y", default=None,
                   help="kernel version for minKernel (default: the running kernel)")
    p.add_argument("--arch", metavar="ARCH", default=None,
                   help="the container's architecture; its archMap sub-architectures are added "
                   "(default: this machine's)")
    p.add_argument("--name", help="policy name (default: the output file's stem)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="export a policy as OCI JSON, SPO YAML, classic BPF or PFC",
                       description="Write a policy as an OCI seccomp profile, a Security Profiles "
                       "Operator SeccompProfile, libseccomp's classic BPF, or libseccomp's pseudo "
                       "filter code. Refuses policies a kernel filter cannot express, naming the "
                       "handler.")
    p.add_argument("policy", metavar="POLICY")
    p.add_argument("--format", required=True, choices=("oci", "spo", "bpf", "pfc"))
    p.add_argument("-o", "--output", metavar="OUT", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("run", help="run a command under a policy as a real kernel filter",
                       description="Run CMD under POLICY compiled to a real seccomp filter by "
                       "libseccomp, with no tracer. Exits with CMD's status, or 128 + the signal "
                       "that killed it (a kill_process verdict: 159).")
    p.add_argument("--kernel", metavar="POLICY", required=True,
                   help="the policy to enforce with the kernel's own seccomp filter")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    p.set_defaults(func=cmd_run)
