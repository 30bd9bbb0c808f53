"""VerifiedProgram: proof that a Program passed :func:`~sysdispatch.vm.verifier.verify`.

Engines and PROG_ARRAY slots accept only a :class:`VerifiedProgram`. It cannot be built without
the verifier: the constructor wants a private token only the verifier holds, the object is
immutable, and it has no ``replace``-style copy that would let someone swap the program inside.
Besides the program it records what the walk learnt that an engine may rely on or size for.

This module imports nothing from the rest of the verifier, so that maps and engines can import
it without pulling in the checker.
"""

from __future__ import annotations

from typing import Any

_TOKEN = object()   # handed to the constructor only by verifier.check


class VerifiedProgram:
    """A program the verifier accepted, for one program type (and, for the generic type, one
    memory size), with facts about it.

    ``program``        the :class:`~sysdispatch.vm.program.Program` that was verified
    ``prog_type``      the :class:`~sysdispatch.vm.program.ProgType` it was verified for
    ``mem_size``       generic type: the exact length of the memory r1 points to (r2's value)
                       that the walk assumed; None for types with a fixed ctx
    ``stack_depth``    bytes of stack used, the deepest call chain's frames added up
    ``frame_depths``   bytes of stack each function uses: {first pc: bytes}
    ``max_call_depth`` most frames alive at once (1 without bpf-to-bpf calls)
    ``helpers``        ids of the helpers it may call
    ``tail_calls``     whether it may tail-call
    ``insn_processed`` instructions the walk processed (the kernel's "processed N insns")
    ``dead_code``      pcs no path reaches (a branch on a known value never goes there): never
                       run, so never checked — the kernel replaces them with traps
    ``log``            the verifier log when asked for, else None
    """

    __slots__ = ("program", "prog_type", "mem_size", "stack_depth", "frame_depths",
                 "max_call_depth", "helpers", "tail_calls", "insn_processed", "dead_code",
                 "log")

    def __init__(self, token: object, **facts: Any) -> None:
        if token is not _TOKEN:
            raise TypeError("a VerifiedProgram comes only from sysdispatch.vm.verifier.verify()")
        for name in self.__slots__:
            object.__setattr__(self, name, facts[name])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("VerifiedProgram is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("VerifiedProgram is immutable")

    def __reduce__(self):
        raise TypeError("a VerifiedProgram cannot be pickled or copied; verify the program again")

    def __copy__(self) -> "VerifiedProgram":
        return self   # immutable: a copy may be the object itself

    def __deepcopy__(self, memo) -> "VerifiedProgram":
        return self

    @property
    def name(self) -> str:
        return self.program.name

    def __len__(self) -> int:
        return len(self.program)

    def __repr__(self) -> str:
        extra = f", mem_size={self.mem_size}" if self.mem_size is not None else ""
        return (f"<VerifiedProgram '{self.program.name}' type={self.prog_type}{extra} "
                f"insns={len(self.program)} stack={self.stack_depth} "
                f"helpers={sorted(self.helpers)} tail_calls={self.tail_calls}>")
