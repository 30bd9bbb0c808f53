"""Seccomp return values (SECCOMP_RET_*): names, parsing, precedence and stacking.

A filter returns a 32-bit value: the action in the upper 16 bits (``SECCOMP_RET_ACTION_FULL``) and
data in the lower 16 (``SECCOMP_RET_DATA``). Across stacked filters the kernel keeps the value whose
action is lowest when compared as a *signed* 32-bit number — KILL_PROCESS is 0x80000000, the most
restrictive — and on a tie keeps the newest filter's value (kernel/seccomp.c, seccomp_run_filters).
That comparison uses the raw action bits, unknown actions included: 0x7ffe0000 loses to LOG,
0x00010000 beats TRAP. Only once an unknown action has won is it enforced as KILL_PROCESS
(__seccomp_filter's default case).
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass
from typing import Iterable

from ..vm.isa import signed32

KILL_PROCESS = 0x80000000
KILL_THREAD = 0x00000000
TRAP = 0x00030000
ERRNO = 0x00050000
USER_NOTIF = 0x7FC00000
TRACE = 0x7FF00000
LOG = 0x7FFC0000
ALLOW = 0x7FFF0000

ACTION_FULL = 0xFFFF0000
DATA = 0x0000FFFF
MAX_ERRNO = 4095  # ERRNO data is capped at this (kernel: min_t(int, data, MAX_ERRNO))

# Names as the kernel's /proc/sys/kernel/seccomp/actions_avail spells them.
NAMES = {
    KILL_PROCESS: "kill_process", KILL_THREAD: "kill_thread", TRAP: "trap", ERRNO: "errno",
    USER_NOTIF: "user_notif", TRACE: "trace", LOG: "log", ALLOW: "allow",
}
BY_NAME = {v: k for k, v in NAMES.items()}
BY_NAME["kill"] = KILL_THREAD  # SECCOMP_RET_KILL is the old name of KILL_THREAD
TAKES_DATA = frozenset({TRAP, ERRNO, TRACE})




def action_of(ret: int) -> int:
    """The action part of a return value; unknown actions count as KILL_PROCESS."""
    act = ret & ACTION_FULL
    return act if act in NAMES else KILL_PROCESS


def precedence(ret: int) -> int:
    """Sort key: lower wins. The kernel compares the raw action bits as a signed 32-bit number
    (ACTION_ONLY in kernel/seccomp.c), so unknown actions sort by their value, not as kills."""
    return signed32(ret & ACTION_FULL)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A seccomp return value, decoded."""

    ret: int  # the raw 32-bit value a filter returned

    @property
    def action(self) -> int:
        return action_of(self.ret)

    @property
    def data(self) -> int:
        return self.ret & DATA

    @property
    def name(self) -> str:
        return NAMES[self.action]

    @property
    def errno(self) -> int:
        """The errno an ERRNO verdict makes the syscall fail with (capped at 4095)."""
        return min(self.data, MAX_ERRNO)

    @property
    def known(self) -> bool:
        return (self.ret & ACTION_FULL) in NAMES

    def __str__(self) -> str:
        return describe(self.ret)


def describe(ret: int) -> str:
    """``ERRNO(13)``, ``TRACE(5)``, ``ALLOW``, ``KILL_PROCESS (unknown action 0x12340000)``."""
    ret &= 0xFFFFFFFF
    act = ret & ACTION_FULL
    if act not in NAMES:
        return f"KILL_PROCESS (unknown action 0x{ret:08x})"
    name = NAMES[act].upper()
    if act in TAKES_DATA:
        return f"{name}({ret & DATA})"
    return name


def errno_name(n: int) -> str:
    return _errno.errorcode.get(n, str(n))


def parse(text: str) -> int:
    """Parse ``allow``, ``errno(EPERM)``, ``errno(13)``, ``trap(1)``, ``trace``, ``kill_process``."""
    t = text.strip().lower()
    name, _, arg = t.partition("(")
    name = name.strip()
    if name not in BY_NAME:
        raise ValueError(f"unknown seccomp action '{text.strip()}'")
    act = BY_NAME[name]
    if not arg:
        return act
    if not arg.endswith(")") or act not in TAKES_DATA:
        raise ValueError(f"action '{name}' takes no argument" if act not in TAKES_DATA
                         else f"unclosed '(' in '{text.strip()}'")
    val = arg[:-1].strip()
    if val.upper() in _errno.__dict__ and val.upper().startswith("E"):
        n = getattr(_errno, val.upper())
    else:
        try:
            n = int(val, 0)
        except ValueError:
            raise ValueError(f"bad action data '{val}' in '{text.strip()}'") from None
    if not 0 <= n <= DATA:
        raise ValueError(f"action data {n} out of range 0..65535")
    return act | n


def combine(rets: Iterable[int]) -> int:
    """The verdict of stacked filters, given their return values oldest first.

    Like seccomp_run_filters: start from ALLOW, run every filter newest first, and keep a
    value only when its action is strictly lower. So the most restrictive action wins, the
    newest filter wins a tie (with its data), and when every filter allows the result is plain
    ALLOW (data dropped).
    """
    values = [r & 0xFFFFFFFF for r in rets]
    if not values:
        raise ValueError("no filters to combine")
    best = ALLOW
    for ret in reversed(values):  # newest first
        if precedence(ret) < precedence(best):
            best = ret
    return best
