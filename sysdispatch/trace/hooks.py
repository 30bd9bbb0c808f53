"""``--on-trace MODULE:FUNC``: user code that answers TRACE and USER_NOTIF verdicts.

With a real kernel filter, SECCOMP_RET_TRACE hands the syscall to a ptracer and
SECCOMP_RET_USER_NOTIF to a listener on a notification fd; each may let it run, fail it with a
value, or (a tracer) change its arguments. Here both go to one Python function::

    # mytool.py
    from sysdispatch.trace.hooks import Skip, Modify

    def on_trace(call):
        if call.name == "getppid":
            return Skip(4242)                  # the syscall returns 4242 and never runs
        if call.name == "kill" and call.args[1] == 15:
            return Modify(args=call.args[:1] + (0,) + call.args[2:])   # SIGTERM -> probe
        return None                            # let it run unchanged

``sysdispatch trace --policy p.toml --on-trace mytool:on_trace -- CMD`` (MODULE is an importable
module or a path to a ``.py`` file). The function gets a :class:`TraceCall` and returns None (run
it), an ``int`` or :class:`Skip` (do not run it; that value is its result, e.g.
``-errno.EPERM``), or :class:`Modify` (run it with these arguments / this number; like the
kernel after a tracer changed a syscall, the policy is asked again about the changed call, a
second TRACE then meaning "run it").

Without a hook, TRACE and USER_NOTIF make the syscall fail with ENOSYS, as the kernel does when
no tracer (or no listener) is attached. A hook that raises or returns something else is
reported once per kind of failure and treated as "no hook" for that call.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Callable

from ..errors import TraceError
from .decode import read_memory, read_string


@dataclass(frozen=True, slots=True)
class Skip:
    """Do not run the syscall; it returns ``value`` (a negative errno for a failure)."""

    value: int


@dataclass(frozen=True, slots=True)
class Modify:
    """Run the syscall with other arguments (six u64, or fewer: the rest unchanged) and/or
    another number."""

    args: tuple[int, ...] | None = None
    nr: int | None = None


Reply = None | int | Skip | Modify


@dataclass(frozen=True, slots=True)
class TraceCall:
    """One syscall a TRACE or USER_NOTIF verdict handed to the hook."""

    pid: int                 # thread group id
    tid: int
    nr: int
    name: str
    arch: int                # AUDIT_ARCH_*
    ip: int
    args: tuple[int, ...]
    verdict: int             # the 32-bit SECCOMP_RET_* value
    action: str              # "trace" | "user_notif"

    @property
    def data(self) -> int:
        """SECCOMP_RET_DATA: what a kernel tracer reads with PTRACE_GETEVENTMSG."""
        return self.verdict & 0xFFFF

    def read_string(self, addr: int, limit: int = 4096) -> bytes | None:
        """A NUL-terminated string of the tracee (None when unreadable)."""
        return read_string(self.tid, addr, limit)

    def read_memory(self, addr: int, size: int) -> bytes:
        return read_memory(self.tid, addr, size)


Hook = Callable[[TraceCall], Reply]


def load(spec: str) -> Hook:
    """``MODULE:FUNC`` -> the function. MODULE is a module name or a path to a .py file."""
    module_name, sep, func_name = spec.rpartition(":")
    if not sep or not module_name or not func_name:
        raise TraceError(f"--on-trace '{spec}': expected MODULE:FUNC")
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            if not os.path.isfile(module_name):
                raise TraceError(f"--on-trace '{spec}': {module_name}: no such file")
            loc = importlib.util.spec_from_file_location("sysdispatch_on_trace", module_name)
            module = importlib.util.module_from_spec(loc)
            loc.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except TraceError:
        raise
    except Exception as exc:  # the user's module failed to import: one line, not a traceback
        raise TraceError(f"--on-trace '{spec}': cannot load {module_name}: "
                         f"{type(exc).__name__}: {exc}") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise TraceError(f"--on-trace '{spec}': {module_name} has no function '{func_name}'")
    return func


def normalize(reply: object) -> Skip | Modify | None:
    """A hook's answer as None (run), Skip or Modify; TypeError for anything else."""
    if reply is None or isinstance(reply, (Skip, Modify)):
        return reply
    if isinstance(reply, int) and not isinstance(reply, bool):
        return Skip(reply)
    raise TypeError(f"a hook returns None, an int, Skip or Modify, not {type(reply).__name__}")
