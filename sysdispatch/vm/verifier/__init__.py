"""The verifier: ``verify(program, prog_type) -> VerifiedProgram``, as the kernel's verifier would.

A program is checked in two passes, like the kernel's ``bpf_check``: the shape of its control flow
(:mod:`.cfg`: functions, jumps inside them, every instruction reachable) and then every path
through it (:mod:`.check`), tracking what each register and stack byte holds (:mod:`.state`,
:mod:`.scalar`, :mod:`.tnum`) and checking every memory access (:mod:`.access`), helper call and
exit. Refusals are :class:`~sysdispatch.errors.VerifierError` naming the pc, the instruction and,
for programs assembled from text, the source line, with the kernel's wording::

    handlers.s:12: pc 7: r3 = *(u64 *)(r3 + 0): R3 invalid mem access 'map_value_or_null'

Acceptance gives a :class:`~.result.VerifiedProgram`, the only thing engines and program arrays
take. Program types: ``seccomp`` (r1 = the read-only 64-byte struct seccomp_data) and
``generic`` (r1 = caller memory of ``mem_size`` bytes, r2 = ``mem_size``, as in the bpf
conformance suite).
"""

from __future__ import annotations

from ...errors import VerifierError
from ..program import Program, ProgType
from .result import VerifiedProgram

__all__ = ["verify", "VerifiedProgram", "VerifierError", "COMPLEXITY_LIMIT"]

COMPLEXITY_LIMIT = 1_000_000   # BPF_COMPLEXITY_LIMIT_INSNS


def verify(program: Program, prog_type: ProgType | None = None, *, mem_size: int | None = None,
           log: bool = False, insn_limit: int = COMPLEXITY_LIMIT) -> VerifiedProgram:
    """Check ``program`` for ``prog_type`` (default: the program's own) or raise VerifierError.

    ``mem_size``: for the generic type, the exact number of bytes r1 will point to (and r2 will
    hold) when the program runs; default 0. ``log=True`` keeps the verifier log (the states
    walked) in ``.log`` of the result, and of the error on failure. ``insn_limit`` is the budget
    of processed instructions.
    """
    from .check import Verifier   # lazily: the checker imports helpers, which import maps

    if not isinstance(program, Program):
        raise TypeError(f"verify() wants a Program, not {type(program).__name__}")
    verified = Verifier(program, prog_type or program.prog_type, mem_size, log, insn_limit).run()
    _claim_prog_arrays(program)
    return verified


def _claim_prog_arrays(program: Program) -> None:
    """Like the kernel once its verifier accepts a program (``bpf_check_tail_call``): every prog
    array the program refers to must hold, or come to hold, programs of the program's own type."""
    from ..maps import ProgArray
    for m in program.maps:
        if isinstance(m, ProgArray) and not m.claim(program.prog_type.name):
            raise VerifierError(
                f"program type {program.prog_type.name} cannot use prog_array '{m.name}', which "
                f"holds type {m.owner_type} programs (a tail call runs only programs of the "
                f"caller's type; the kernel refuses the load with EINVAL)")
