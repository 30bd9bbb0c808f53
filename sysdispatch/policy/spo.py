"""A policy as a Security Profiles Operator ``SeccompProfile`` (Kubernetes YAML).

The resource (apiVersion ``security-profiles-operator.x-k8s.io/v1beta1``, kind
``SeccompProfile``) carries an OCI profile in its ``spec``: ``defaultAction``,
``architectures`` and ``syscalls`` (``names``, ``action``, ``errnoRet``, ``args`` with ``index``,
``value``, ``valueTwo``, ``op``) — so the spec is the OCI export (:mod:`.oci`). The CRD has no
``defaultErrnoRet``: a default ERRNO other than EPERM (what the runtime then uses) cannot be said
and is reported as a warning.

The YAML is written here (a small emitter for maps, lists, strings and integers; no PyYAML).
"""

from __future__ import annotations

import errno as _errno
import json
import re
from typing import Any

from .model import Policy
from .oci import export_oci

API_VERSION = "security-profiles-operator.x-k8s.io/v1beta1"
KIND = "SeccompProfile"

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
# Plain scalars YAML 1.1 (still common in Kubernetes tooling) would read as something else.
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def resource_name(name: str) -> str:
    """A DNS-1123 subdomain for ``metadata.name``: lower case, ``[a-z0-9.-]``, at most 253."""
    out = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.")
    return (out or "policy")[:253].rstrip("-.")


def export_spo(policy: Policy, *, namespace: str | None = None) -> tuple[dict, list[str]]:
    """The SeccompProfile resource for ``policy`` (a dict), with warnings."""
    spec, warnings = export_oci(policy)
    default_errno = spec.pop("defaultErrnoRet", None)
    if default_errno is not None and default_errno != _errno.EPERM:
        warnings.append(f"SeccompProfile has no defaultErrnoRet: the default ERRNO({default_errno}) "
                        "becomes ERRNO(EPERM) in a container")
    meta: dict[str, Any] = {"name": resource_name(policy.name)}
    if namespace:
        meta["namespace"] = namespace
    if policy.description:
        meta["annotations"] = {"description": policy.description}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": spec}, warnings


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        if _PLAIN.match(v) and v.lower() not in _RESERVED:
            return v
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar
    raise TypeError(f"cannot write {type(v).__name__} as YAML")


def _emit(v: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(x, (dict, list)) and x:
                out.append(f"{pad}{_scalar(k)}:")
                _emit(x, indent + 2 if isinstance(x, dict) else indent, out)
            else:
                out.append(f"{pad}{_scalar(k)}: {_flow_empty(x)}")
    elif isinstance(v, list):
        for x in v:
            if isinstance(x, dict) and x:
                sub: list[str] = []
                _emit(x, indent + 2, sub)
                out.append(f"{pad}- {sub[0].lstrip()}")
                out.extend(sub[1:])
            elif isinstance(x, list) and x:
                sub = []
                _emit(x, indent + 2, sub)
                out.append(f"{pad}- {sub[0].lstrip()}")
                out.extend(sub[1:])
            else:
                out.append(f"{pad}- {_flow_empty(x)}")
    else:
        out.append(pad + _scalar(v))


def _flow_empty(x: Any) -> str:
    if isinstance(x, dict):
        return "{}"
    if isinstance(x, list):
        return "[]"
    return _scalar(x)


def to_yaml(doc: dict, *, comment: str | None = None) -> str:
    """``doc`` as block-style YAML (one document)."""
    out: list[str] = []
    if comment:
        out += [f"# {line}".rstrip() for line in comment.splitlines()]
    out.append("---")
    _emit(doc, 0, out)
    return "\n".join(out) + "\n"


def dumps(policy: Policy) -> tuple[str, list[str]]:
    """The SeccompProfile YAML text for ``policy``, with warnings."""
    doc, warnings = export_spo(policy)
    note = f"SeccompProfile for policy '{policy.name}', written by sysdispatch"
    return to_yaml(doc, comment=note), warnings
