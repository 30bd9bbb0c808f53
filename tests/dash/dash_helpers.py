"""Shared by the dashboard tests: events whose verdicts a real loaded policy decided."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.seccomp.data import AUDIT_ARCH_X86_64, SeccompData
from sysdispatch.trace.events import Event

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "filters" / "dispatch-demo.toml"
NR = {"getppid": 110, "openat": 257, "socket": 41, "kill": 62}
O_CREAT = 0o100
AF_INET, AF_NETLINK = 2, 16


@pytest.fixture(name="demo", scope="module")
def demo_policy() -> LoadedPolicy:
    """The demo policy, loaded once per module (import this fixture into a test module)."""
    return LoadedPolicy.from_file(DEMO)


def event(policy: LoadedPolicy, name: str, args=(0,) * 6, t: float = 0.0, pid: int = 100,
          decoded=None) -> Event:
    """An event whose verdict, handler and path the real policy decided."""
    args = tuple(args) + (0,) * (6 - len(args))
    d = policy.decide(SeccompData(NR[name], AUDIT_ARCH_X86_64, 0x401000, args))
    return Event(t, pid, pid, NR[name], name, AUDIT_ARCH_X86_64, 0x401000, args, d.ret,
                 d.handler or "default", d.path, True, decoded or {})


def text_of(renderable, width: int = 140) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


