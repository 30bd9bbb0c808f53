"""The JIT: BPF programs compiled to Python functions, with the interpreter's behaviour.

``compile_program(program) -> JitProgram`` compiles (once per program and helper table);
``run(program, ctx, ...)`` runs compiled, with the arguments, :class:`RunResult` and errors of
:func:`sysdispatch.vm.interp.run`. :mod:`sysdispatch.vm.engine` is where callers choose between
the two engines.

* :mod:`.codegen` — the source of one function per program (registers as locals, basic blocks as
  a state machine, semantics pasted from :mod:`sysdispatch.vm.semantics`);
* :mod:`.compiler` — checks, compile cache, bindings, and the trampolines (tail calls enter the
  callee's body without a new run or a deeper Python stack);
* :mod:`.lean` — which programs need no run context at all (their lean function runs on the
  caller's bytes);
* :mod:`.runtime` — pooled per-run set-up, the lean entry, the top-level run, faults mapped back
  to pcs.
"""

from .compiler import JitProgram, compile_program, unwrap
from .runtime import run

__all__ = ["JitProgram", "compile_program", "run", "unwrap"]
