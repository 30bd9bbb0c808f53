"""The one error hierarchy of sysdispatch.

Every error a user can cause (bad assembly, a truncated program, an access out of bounds, a policy
mistake) is a :class:`SysdispatchError`. Each carries where it happened — a source location
(file, line, column), a program counter, or both — and renders as one line, e.g.::

    filters/web.toml:14:5: handler 'openat', pc 7: jump out of range (target 42, 12 insns)

The CLI prints ``str(error)`` and exits with status 2; tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    """Where in a source text something is: any of the parts may be unknown."""

    file: str | None = None
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.line, self.col) if p is not None]
        return ":".join(str(p) for p in parts)


class SysdispatchError(Exception):
    """Base of every user-facing error. ``str()`` gives the one line a user sees."""

    def __init__(
        self,
        message: str,
        *,
        loc: Location | None = None,
        pc: int | None = None,
        context: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.pc = pc
        self.context = context  # e.g. "handler 'openat'"

    def at(self, *, loc: Location | None = None, pc: int | None = None,
           context: str | None = None) -> "SysdispatchError":
        """Fill in location details that were not known where the error was raised."""
        if loc is not None and (self.loc is None or self.loc.file is None):
            if self.loc is not None:
                loc = Location(loc.file, self.loc.line or loc.line, self.loc.col or loc.col)
            self.loc = loc
        if pc is not None and self.pc is None:
            self.pc = pc
        if context is not None and self.context is None:
            self.context = context
        return self

    def __str__(self) -> str:
        prefix = []
        where = str(self.loc) if self.loc else ""
        if where:
            prefix.append(where)
        inner = []
        if self.context:
            inner.append(self.context)
        if self.pc is not None:
            inner.append(f"pc {self.pc}")
        head = ": ".join(prefix + ([", ".join(inner)] if inner else []))
        return f"{head}: {self.message}" if head else self.message


class EncodingError(SysdispatchError):
    """Bytes that are not a valid instruction stream (truncated, unknown opcode, reserved bits)."""


class AsmError(SysdispatchError):
    """Assembly text that cannot be assembled (unknown mnemonic, bad operand, bad label)."""


class VmError(SysdispatchError):
    """A fault while a program runs (bad memory access, bad call, instruction budget)."""


class VerifierError(SysdispatchError):
    """A program the verifier refuses."""


class MapError(SysdispatchError):
    """A map operation the kernel would refuse; ``errno`` holds the kernel's error number."""

    def __init__(self, message: str, errno: int, **kw) -> None:
        super().__init__(message, **kw)
        self.errno = errno


class PolicyError(SysdispatchError):
    """A mistake in a policy file."""


class TraceError(SysdispatchError):
    """A malformed trace file or a tracing failure a user can act on."""
