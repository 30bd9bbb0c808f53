"""Helper functions a program may call, by their Linux numbers: the one table of them.

:data:`HELPERS` maps a helper id to a :class:`Helper`: its name (what the assembler accepts after
``call``), the kinds of its arguments and of its result (what a verifier checks, in the kernel's
terms: ``ARG_PTR_TO_CTX``, ``ARG_CONST_MAP_PTR``, ...) and its implementation.

An implementation is called as ``impl(env, r1, r2, r3, r4, r5)`` with the registers as unsigned
ints and returns the new r0 (an int, reduced to 64 bits by the caller) or None to leave r0 as it
is (``tail_call``: the kernel's interpreter does not touch r0 when a tail call falls through).
It may raise :class:`TailCall` to replace the running program, :class:`Unwind` to end the run
with a given r0, or :class:`~sysdispatch.errors.VmError` for what a verifier would have refused
(a garbage map pointer, an unreadable key). Map operations return the negative errno as r0, as the
kernel does.

The outside world — clock, pid/tgid, random numbers, where ``trace_printk`` output goes — comes
from a :class:`Host`, so tests can fix it.
"""

from __future__ import annotations

import errno
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

from ..errors import VmError
from .isa import MAX_TAIL_CALL_CNT
from .maps import ArrayMap, HashMap, Map, ProgArray
from .memory import SHARED, Memory
from .program import (GET_CURRENT_PID_TGID, GET_PRANDOM_U32, KTIME_GET_NS, MAP_DELETE_ELEM,
                      MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, TAIL_CALL, TRACE_PRINTK, Program)

M64 = 0xFFFF_FFFF_FFFF_FFFF


class Arg(Enum):
    """Argument kinds (the kernel's ``enum bpf_arg_type``, the ones these helpers use)."""

    CTX = "ctx"                # the program's ctx pointer (ARG_PTR_TO_CTX)
    MAP_PTR = "map_ptr"        # a map handle from lddw (ARG_CONST_MAP_PTR)
    MAP_KEY = "map_key"        # pointer to key_size readable bytes (stack or map value)
    MAP_VALUE = "map_value"    # pointer to value_size readable bytes
    MEM = "mem"                # pointer to readable memory, sized by the next CONST_SIZE arg
    CONST_SIZE = "const_size"  # the size of the preceding MEM argument
    SCALAR = "scalar"          # any value (ARG_ANYTHING)


class Ret(Enum):
    """Result kinds (the kernel's ``enum bpf_return_type``)."""

    SCALAR = "scalar"
    MAP_VALUE_OR_NULL = "map_value_or_null"
    VOID = "void"


@dataclass(frozen=True, slots=True)
class Helper:
    id: int
    name: str
    args: tuple[Arg, ...]
    ret: Ret
    impl: Callable[..., int | None]
    doc: str = ""


@dataclass(frozen=True, slots=True)
class Printk:
    """One line written by ``bpf_trace_printk``."""

    text: str


def _default_pid_tgid() -> int:
    # The kernel's value: tgid (the process id) in the upper half, the thread id in the lower.
    return (os.getpid() << 32) | threading.get_native_id()


def _random_u32(rng: random.Random) -> Callable[[], int]:
    return lambda: rng.getrandbits(32)


# Seeding a Random from the OS costs microseconds: every default Host shares this one.
_SHARED_RANDOM = _random_u32(random.Random())


@dataclass
class Host:
    """The outside world as helpers see it. Every field may be replaced (tests fix them all)."""

    clock: Callable[[], int] = time.monotonic_ns
    pid_tgid: Callable[[], int] = _default_pid_tgid
    random: Callable[[], int] = _SHARED_RANDOM
    events: list = field(default_factory=list)

    @classmethod
    def fixed(cls, *, now: int = 1_000_000_000, pid: int = 4242, tgid: int = 4200,
              seed: int = 0) -> "Host":
        """A deterministic host: a clock that advances 1000 ns per call, fixed ids, seeded
        random numbers, and an event list to inspect."""
        ticks = iter(range(now, 1 << 64, 1000))
        return cls(clock=lambda: next(ticks), pid_tgid=lambda: (tgid << 32) | pid,
                   random=_random_u32(random.Random(seed)))


class TailCall(Exception):
    """Raised by ``tail_call`` to make the engine continue in ``program`` at its first insn."""

    def __init__(self, program: Program) -> None:
        super().__init__(program.name)
        self.program = program


class Unwind(Exception):
    """Raised by a helper to end the whole run with r0 = ``value`` (the conformance suite's
    helper 5; no kernel helper does this)."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


class Env:
    """What helpers of one run share: its memory, the host, and the tail-call count."""

    __slots__ = ("mem", "host", "tail_calls")

    def __init__(self, mem: Memory, host: Host) -> None:
        self.mem = mem
        self.host = host
        self.tail_calls = 0  # the kernel's tail_call_cnt: index checks passed, per run


# --- implementations ---------------------------------------------------------------------------

def map_at(addr: int, what: str = "r1") -> Map:
    """The map whose handle is ``addr``; VmError for anything else."""
    owner = SHARED.owner(addr)
    if not isinstance(owner, Map) or owner.addr != addr:
        raise VmError(f"{what} = 0x{addr:x} is not a map pointer")
    return owner


def _data_map(addr: int, helper: str) -> ArrayMap | HashMap:
    m = map_at(addr)
    if isinstance(m, ProgArray):
        raise VmError(f"{helper} on prog_array '{m.name}' (programs may only tail-call it)")
    return m


def _map_lookup_elem(env: Env, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    m = _data_map(r1, "map_lookup_elem")
    region = m.lookup_raw(env.mem.read(r2, m.key_size))
    return 0 if region is None else region.base


def _map_update_elem(env: Env, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    m = _data_map(r1, "map_update_elem")
    key = env.mem.read(r2, m.key_size)
    value = env.mem.read(r3, m.value_size)
    return m.update_raw(key, value, r4) & M64


def _map_delete_elem(env: Env, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    m = _data_map(r1, "map_delete_elem")
    return m.delete_raw(env.mem.read(r2, m.key_size)) & M64


def _ktime_get_ns(env: Env, *_regs: int) -> int:
    return env.host.clock() & M64


def _get_prandom_u32(env: Env, *_regs: int) -> int:
    return env.host.random() & 0xFFFF_FFFF


def _get_current_pid_tgid(env: Env, *_regs: int) -> int:
    return env.host.pid_tgid() & M64


def tail_call_target(env: Env, map_addr: int, index: int) -> Program | None:
    """Where ``bpf_tail_call(ctx, map, index)`` goes: the program to enter, or None to fall
    through. Counts the call in ``env.tail_calls`` as the kernel does."""
    m = map_at(map_addr, "r2")
    if not isinstance(m, ProgArray):
        raise VmError(f"tail_call through {m.type_name} map '{m.name}', not a prog_array")
    return tail_call_into(env, m, index)


def tail_call_into(env: Env, m: ProgArray, index: int) -> Program | None:
    """:func:`tail_call_target` once the map is known to be the prog_array ``m`` (an engine
    that knows which map a call site uses skips the lookup by address).

    kernel/bpf/core.c, JMP_TAIL_CALL: the index is a u32; out of range -> fall through; count
    already at MAX_TAIL_CALL_CNT -> fall through; count += 1 (before the slot is read, so an empty
    slot uses up a call); empty slot -> fall through.
    """
    index &= 0xFFFF_FFFF
    slots = m.slots
    if index >= len(slots):
        return None
    if env.tail_calls >= MAX_TAIL_CALL_CNT:
        return None
    env.tail_calls += 1
    return slots[index]  # read exactly once: a concurrent update is seen whole or not at all


def _tail_call(env: Env, r1: int, r2: int, r3: int, r4: int, r5: int) -> None:
    program = tail_call_target(env, r2, r3)
    if program is not None:
        raise TailCall(program)
    return None  # r0 untouched, as the kernel's interpreter leaves it


# trace_printk conversions the kernel accepts (kernel/bpf/helpers.c, bpf_bprintf_prepare):
# optional flags "0 +-" and width, then one of these. No precision, no other letters.
_PRINTK_SPEC = re.compile(rb"%([0 +\-]*)([1-9][0-9]*)?(%|s|p[xK]?|c|ll[diuxX]|l[diuxX]|[diuxX])")
MAX_PRINTK_STR = 512  # longest %s string copied (the kernel's per-string buffer is similar)
PRINTK_BUF = 1024     # the kernel formats into a 1 KiB buffer: longer output is cut there


def format_printk(fmt: bytes, args: tuple[int, ...], read_str: Callable[[int], bytes]) -> str | None:
    """Format like the kernel's ``bpf_trace_printk``; None when the kernel would say EINVAL."""
    out: list[bytes] = []
    pos = 0
    used = 0
    while True:
        pct = fmt.find(b"%", pos)
        if pct < 0:
            out.append(fmt[pos:])
            break
        out.append(fmt[pos:pct])
        mt = _PRINTK_SPEC.match(fmt, pct)
        if mt is None:
            return None
        flags, width, conv = mt.group(1).decode(), (mt.group(2) or b"").decode(), mt.group(3)
        if width and int(width) > PRINTK_BUF:  # wider than the buffer could ever show
            width = str(PRINTK_BUF)
        pos = mt.end()
        if conv == b"%":
            out.append(b"%")
            continue
        if used >= len(args):
            return None
        v = args[used]
        used += 1
        letter = conv[-1:]
        if conv == b"s":
            text = read_str(v)
            out.append((f"%{flags}{width}s" % text.decode("latin-1")).encode("latin-1"))
            continue
        if conv[:1] == b"p":
            if conv == b"p" and fmt[pos:pos + 1].isalnum():
                return None  # %p followed by a letter is an extension the kernel may refuse
            out.append((f"%{flags}{width}s" % f"{v:016x}").encode())
            continue
        if conv == b"c":
            out.append((f"%{flags}{width}c" % chr(v & 0xFF)).encode("latin-1"))
            continue
        bits = 32 if len(conv) == 1 else 64  # %d is an int, %ld and %lld 64-bit on x86_64
        v &= (1 << bits) - 1
        if letter in (b"d", b"i"):
            v -= (v >> (bits - 1)) << bits
            letter = b"d"
        elif letter == b"u":
            letter = b"d"
        out.append((f"%{flags}{width}{letter.decode()}" % v).encode())
    return b"".join(out).decode("latin-1")


def _trace_printk(env: Env, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    if r2 == 0:
        return -errno.EINVAL & M64  # an empty format
    fmt = env.mem.read(r1, r2)
    nul = fmt.find(b"\0")
    if nul < 0:
        return -errno.EINVAL & M64  # the kernel wants the NUL inside fmt_size
    def read_str(addr: int) -> bytes:
        s = env.mem.read_cstr(addr, MAX_PRINTK_STR)
        return b"" if s is None else s  # the kernel prints an unreadable string as empty
    text = format_printk(fmt[:nul], (r3, r4, r5), read_str)
    if text is None:
        return -errno.EINVAL & M64
    env.host.events.append(Printk(text[:PRINTK_BUF - 1]))
    return len(text.encode("latin-1"))  # the length formatted, even past the buffer


HELPERS: dict[int, Helper] = {h.id: h for h in (
    Helper(MAP_LOOKUP_ELEM, "map_lookup_elem", (Arg.MAP_PTR, Arg.MAP_KEY),
           Ret.MAP_VALUE_OR_NULL, _map_lookup_elem, "pointer to the value under *key, or NULL"),
    Helper(MAP_UPDATE_ELEM, "map_update_elem",
           (Arg.MAP_PTR, Arg.MAP_KEY, Arg.MAP_VALUE, Arg.SCALAR), Ret.SCALAR, _map_update_elem,
           "store *value under *key; flags BPF_ANY/NOEXIST/EXIST; 0 or -errno"),
    Helper(MAP_DELETE_ELEM, "map_delete_elem", (Arg.MAP_PTR, Arg.MAP_KEY), Ret.SCALAR,
           _map_delete_elem, "remove *key; 0 or -errno"),
    Helper(KTIME_GET_NS, "ktime_get_ns", (), Ret.SCALAR, _ktime_get_ns,
           "monotonic time in ns"),
    Helper(TRACE_PRINTK, "trace_printk", (Arg.MEM, Arg.CONST_SIZE, Arg.SCALAR, Arg.SCALAR,
                                          Arg.SCALAR), Ret.SCALAR, _trace_printk,
           "format up to 3 args, emit a Printk event; bytes written or -EINVAL"),
    Helper(GET_PRANDOM_U32, "get_prandom_u32", (), Ret.SCALAR, _get_prandom_u32,
           "a pseudo-random u32"),
    Helper(TAIL_CALL, "tail_call", (Arg.CTX, Arg.MAP_PTR, Arg.SCALAR), Ret.VOID, _tail_call,
           "jump to prog_array[index]; falls through when out of range, over the limit or empty"),
    Helper(GET_CURRENT_PID_TGID, "get_current_pid_tgid", (), Ret.SCALAR, _get_current_pid_tgid,
           "tgid << 32 | pid"),
)}

BY_NAME: dict[str, Helper] = {h.name: h for h in HELPERS.values()}
