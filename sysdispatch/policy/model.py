"""The policy model: what a policy file means, independent of its syntax and of any engine.

A policy is a *program table*: an entry program (generated) checks the architecture and tail-calls
into a jump table indexed by syscall number; each slot holds a handler; an empty slot falls through
to the policy default. Tables can also be indexed by an argument (nested dispatch: a ``socket``
handler tail-calls into a table indexed by ``args[0]``, the address family).

Everything here is a plain immutable value. The TOML reader (``policy.parse``), the OCI/Docker
importer, the compiler to eBPF, the libseccomp exporter and the explainer all meet on these types.
Source locations ride along (``loc``) so any later stage can report ``file:line:col``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

from ..errors import Location
from ..seccomp import actions
from ..vm import isa
from . import emit

# Comparison operators of a condition, as written in policy files.
OPS = ("==", "!=", "<", "<=", ">", ">=")

U64 = 0xFFFFFFFFFFFFFFFF
_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
            ">": operator.gt, ">=": operator.ge}
# The jump that leaves a rule when a condition is false: the negation of its operator.
_NEGATED_JUMP = {"==": "jne", "!=": "jeq", "<": "jge", "<=": "jgt", ">": "jle", ">=": "jlt"}


@dataclass(frozen=True, slots=True)
class Cond:
    """``args[arg] [& mask] op value`` on the 64-bit argument (all unsigned 64-bit)."""

    arg: int                  # 0..5
    op: str                   # one of OPS
    value: int                # 0 .. 2**64-1
    mask: int | None = None   # masked comparison when set: (args[arg] & mask) op value
    loc: Location | None = field(default=None, compare=False)

    def __str__(self) -> str:
        lhs = f"args[{self.arg}]" if self.mask is None else f"args[{self.arg}] & {self.mask:#x}"
        return f"{lhs} {self.op} {self.value:#x}" if self.value > 9 else f"{lhs} {self.op} {self.value}"

    # A condition is a matcher value: it evaluates itself, renders itself to BPF, and names the
    # argument values worth testing it with.

    def holds(self, args) -> bool:
        """Whether the condition is true for the six argument words ``args``."""
        lhs = args[self.arg] & U64
        if self.mask is not None:
            lhs &= self.mask
        return _COMPARE[self.op](lhs, self.value)

    def to_bpf(self, fail: str) -> list:
        """Instructions that fall through when the condition holds and jump to label ``fail``
        when it does not: ``r2 = *(u64 *)(r1 + off)``, ``r2 &= mask``, one inverted compare.
        All unsigned 64-bit; a mask or value that a sign-extended 32-bit immediate cannot
        express goes through ``lddw`` into a scratch register."""
        items: list = [isa.make("ldxdw", emit.ARG, emit.CTX, emit.arg_offset(self.arg))]
        if self.mask is not None:
            if self.mask == 0xFFFFFFFF:   # the low half: w2 = w2 zero-extends, one instruction
                items.append(isa.make("mov32", emit.ARG, emit.ARG, reg=True))
            elif emit.fits_imm(self.mask):
                items.append(isa.make("and", emit.ARG, imm=self.mask, reg=False))
            else:
                items += list(isa.lddw(emit.SCRATCH, self.mask))
                items.append(isa.make("and", emit.ARG, emit.SCRATCH, reg=True))
        return items + emit.jump(_NEGATED_JUMP[self.op], emit.ARG, self.value, fail)

    def interesting_values(self) -> tuple[int, ...]:
        """Argument values at the condition's edges: the value and its neighbours, the extremes,
        the value with its upper 32 bits disturbed (to catch 32-bit truncation), and for a mask
        each mask bit toggled and the bits outside the mask set."""
        v = self.value
        out = {v, (v - 1) & U64, (v + 1) & U64, 0, U64, v ^ (1 << 32), v | (U64 ^ 0xFFFFFFFF)}
        if self.mask is not None:
            m = self.mask
            out |= {m, v | (U64 ^ m), (v | (U64 ^ m)) ^ (1 << 63), v & m}
            bits = [b for b in range(64) if m >> b & 1]
            for b in bits[:8] + bits[-8:]:
                out.add(v ^ (1 << b))
        return tuple(sorted(x & U64 for x in out))


@dataclass(frozen=True, slots=True)
class Act:
    """What a rule or a default does: return a seccomp value, or tail-call into a table."""

    ret: int | None = None         # SECCOMP_RET_* value (sysdispatch.seccomp.actions)
    tail_call: str | None = None   # table name
    loc: Location | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if (self.ret is None) == (self.tail_call is None):
            raise ValueError("an action is exactly one of a return value or a tail call")

    def __str__(self) -> str:
        """``ERRNO(13)``, ``ALLOW``, ``tail_call(families)``."""
        return f"tail_call({self.tail_call})" if self.ret is None else actions.describe(self.ret)

    @property
    def literal(self) -> str:
        """The action as a policy file writes it: ``errno(13)``, ``allow``, ``tail_call(t)``."""
        if self.ret is None:
            return f"tail_call({self.tail_call})"
        act, data = self.ret & actions.ACTION_FULL, self.ret & actions.DATA
        name = actions.NAMES.get(act, f"{self.ret:#x}")
        return f"{name}({data})" if act in actions.TAKES_DATA else name


@dataclass(frozen=True, slots=True)
class Rule:
    """All conditions true (an empty list is always true) -> ``then``. Rules are tried in order."""

    conds: tuple[Cond, ...]
    then: Act
    loc: Location | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Handler:
    """A handler program. ``kind`` is ``rules`` (compiled from ``rules``/``default``), ``asm``
    (eBPF assembly text in ``asm``), or ``elf`` (section ``section`` of object file ``elf``)."""

    name: str
    kind: str = "rules"
    rules: tuple[Rule, ...] = ()
    default: Act | None = None
    asm: str | None = None
    elf: str | None = None
    section: str | None = None
    maps: tuple[str, ...] = ()     # names of policy maps the handler uses
    description: str = ""
    loc: Location | None = field(default=None, compare=False)
    # True for the one-line handlers the reader makes from an action literal in a table entry
    # (``ptrace = "log"``); their name is that literal (``Act.literal``), so a writer can put
    # the literal back. A policy file cannot name a handler like an action.
    synthetic: bool = False
    # Where the asm text starts in the policy file (line, col of its first character), so that
    # assembler and verifier errors can name the policy file's line.
    asm_origin: tuple[int, int] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Table:
    """A jump table (a PROG_ARRAY). ``index`` is ``nr`` or ``args[i]``; ``entries`` maps a
    resolved key (syscall number per arch for ``nr``; the argument value otherwise) to a handler
    name. Per-arch ``nr`` tables are kept per arch in ``by_arch``."""

    name: str
    index: str                                   # "nr" or "args[0]".."args[5]"
    entries: dict[int, str] = field(default_factory=dict)              # for args[] tables
    by_arch: dict[str, dict[int, str]] = field(default_factory=dict)   # for nr tables
    default: Act | None = None                   # when the slot is empty (None: policy default)
    size: int | None = None                      # max_entries; derived when None
    loc: Location | None = field(default=None, compare=False)
    # how the policy file wrote each key of an args table (AF_INET), for listings
    key_names: dict[int, str] = field(default_factory=dict, compare=False)

    # by_arch keys are numbers as libseccomp gives them (x32: with bit 0x40000000).

    @property
    def arg(self) -> int | None:
        """``i`` for a table indexed by ``args[i]``; None for an ``nr`` table."""
        return None if self.index == "nr" else int(self.index[5:-1])


@dataclass(frozen=True, slots=True)
class MapDecl:
    """A map declared in the policy, usable by asm/ELF handlers (``map[NAME]``)."""

    name: str
    type: str            # "array" | "hash"
    key_size: int
    value_size: int
    max_entries: int
    loc: Location | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    arches: tuple[str, ...]              # e.g. ("x86_64",)
    default: Act                         # when a syscall slot is empty
    bad_arch: int                        # SECCOMP_RET_* for an architecture not listed
    tables: dict[str, Table]
    handlers: dict[str, Handler]
    maps: dict[str, MapDecl] = field(default_factory=dict)
    entry_table: str = "syscalls"        # the nr table the entry program dispatches through
    description: str = ""
    path: str | None = None

    def table_default(self, table: str) -> Act:
        """What an empty (or out-of-range) slot of ``table`` does."""
        t = self.tables.get(table)
        return t.default if t is not None and t.default is not None else self.default

    def handler_default(self, handler: Handler) -> Act:
        """What a rules handler does when no rule matches (None in the model: the policy
        default)."""
        return handler.default if handler.default is not None else self.default
