"""The one place that picks an engine: ``run(program, ctx, engine="interp"|"jit", ...)``.

Both engines take the same arguments and give the same :class:`~sysdispatch.vm.interp.RunResult`
and the same errors (the differential tests hold them to it); the JIT compiles each program once
to Python source and runs it faster. ``program`` may be a loaded
:class:`~sysdispatch.vm.program.Program`, a verified program, or a
:class:`~sysdispatch.vm.jit.JitProgram`.
"""

from __future__ import annotations

from typing import Any

from . import interp, jit
from .helpers import Helper, Host
from .interp import DEFAULT_MAX_STEPS, RunResult

ENGINES = ("interp", "jit")


def run(program: Any, ctx: Any = None, *, engine: str = "interp", host: Host | None = None,
        mem: Any = None, max_steps: int = DEFAULT_MAX_STEPS,
        helpers: dict[int, Helper] | None = None) -> RunResult:
    """Run ``program`` on ``engine`` (see :func:`sysdispatch.vm.interp.run` for the rest)."""
    if engine == "jit":
        return jit.run(program, ctx, host=host, mem=mem, max_steps=max_steps, helpers=helpers)
    if engine == "interp":
        return interp.run(jit.unwrap(program), ctx, host=host, mem=mem, max_steps=max_steps,
                          helpers=helpers)
    raise ValueError(f"unknown engine {engine!r} (engines: {', '.join(ENGINES)})")
