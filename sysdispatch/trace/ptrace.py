"""The ptrace layer: the one module that imports python-ptrace.

A thin, general layer over ``ptrace.binding.func.ptrace(request, pid, addr, data)`` (python-ptrace
0.9.9), adding what python-ptrace lacks: PTRACE_SEIZE / INTERRUPT / LISTEN, the TRACESECCOMP and
EXITKILL options, PTRACE_EVENT_SECCOMP / EVENT_STOP, PTRACE_GET_SYSCALL_INFO, PTRACE_SETSIGINFO
with a siginfo that knows SIGSYS's fields, PTRACE_SECCOMP_GET_FILTER, and GETREGS/SETREGS with
x86_64's ``struct user_regs_struct``. Numbers are from include/uapi/linux/ptrace.h and
arch/x86/include/asm/user_64.h.

No debugger objects and no polling: callers run their own ``waitpid(-1, __WALL)`` loop (python-
ptrace's debugger polls each pid with WNOHANG and sleeps, which is ruinous with many children).
Failures raise :class:`PtraceError`, a :class:`~sysdispatch.errors.TraceError` carrying ``errno``.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import signal
from dataclasses import dataclass

from ptrace import PtraceError as _PyPtraceError
from ptrace.binding import func as _binding
from ptrace.binding.func import (  # the constants python-ptrace has
    PTRACE_ATTACH, PTRACE_CONT, PTRACE_DETACH, PTRACE_GETEVENTMSG, PTRACE_GETSIGINFO,
    PTRACE_PEEKDATA, PTRACE_SETOPTIONS, PTRACE_SETSIGINFO, PTRACE_SYSCALL, PTRACE_TRACEME,
    PTRACE_EVENT_CLONE, PTRACE_EVENT_EXEC, PTRACE_EVENT_EXIT, PTRACE_EVENT_FORK,
    PTRACE_EVENT_VFORK, PTRACE_EVENT_VFORK_DONE, PTRACE_O_TRACECLONE, PTRACE_O_TRACEEXEC,
    PTRACE_O_TRACEEXIT, PTRACE_O_TRACEFORK, PTRACE_O_TRACESYSGOOD, PTRACE_O_TRACEVFORK,
    PTRACE_O_TRACEVFORKDONE,
)

from ..errors import TraceError

# --- what python-ptrace lacks ------------------------------------------------------------------

PTRACE_GETREGS = 12          # x86: struct user_regs_struct
PTRACE_SETREGS = 13
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_SECCOMP_GET_FILTER = 0x420C
PTRACE_SECCOMP_GET_METADATA = 0x420D
PTRACE_GET_SYSCALL_INFO = 0x420E

PTRACE_EVENT_SECCOMP = 7
PTRACE_EVENT_STOP = 128      # group-stop / PTRACE_INTERRUPT stop of a seized tracee
PTRACE_O_TRACESECCOMP = 1 << PTRACE_EVENT_SECCOMP
PTRACE_O_EXITKILL = 1 << 20

PTRACE_SYSCALL_INFO_NONE = 0
PTRACE_SYSCALL_INFO_ENTRY = 1
PTRACE_SYSCALL_INFO_EXIT = 2
PTRACE_SYSCALL_INFO_SECCOMP = 3

SYSCALL_STOP = signal.SIGTRAP | 0x80  # WSTOPSIG of a syscall stop with PTRACE_O_TRACESYSGOOD
SYS_SECCOMP = 1                       # si_code of a SIGSYS raised by seccomp
WALL = 0x40000000                     # __WALL: wait for every kind of child

_NAMES = {v: k for k, v in globals().items() if k.startswith("PTRACE_") and "_O_" not in k
          and "_EVENT_" not in k and "INFO_" not in k and isinstance(v, int)}

# --- the one call --------------------------------------------------------------------------------


class PtraceError(TraceError):
    """A ptrace request the kernel refused; ``errno`` says why."""

    def __init__(self, message: str, errno: int, **kw) -> None:
        super().__init__(message, **kw)
        self.errno = errno


def ptrace(request: int, pid: int, addr: int = 0, data: int = 0, *,
           check_errno: bool = False) -> int:
    """One ptrace(2) call; raises :class:`PtraceError` naming the request and pid.

    ``check_errno`` is for the PEEK requests, whose result -1 is a valid word."""
    try:
        return _binding.ptrace(request, pid, addr, data, check_errno)
    except _PyPtraceError as exc:
        err = exc.errno or 0
        name = _NAMES.get(request, hex(request)).removeprefix("PTRACE_")
        raise PtraceError(f"ptrace({name}, pid {pid}): {os.strerror(err)}", err) from None


def traceme() -> None:
    ptrace(PTRACE_TRACEME, 0)


def attach(pid: int) -> None:
    ptrace(PTRACE_ATTACH, pid)


def seize(pid: int, options: int = 0) -> None:
    """Trace ``pid`` without stopping it (stop it with :func:`interrupt`)."""
    ptrace(PTRACE_SEIZE, pid, 0, options)


def interrupt(pid: int) -> None:
    ptrace(PTRACE_INTERRUPT, pid)


def listen(pid: int) -> None:
    ptrace(PTRACE_LISTEN, pid)


def setoptions(pid: int, options: int) -> None:
    ptrace(PTRACE_SETOPTIONS, pid, 0, options)


def cont(pid: int, sig: int = 0) -> None:
    ptrace(PTRACE_CONT, pid, 0, sig)


def syscall(pid: int, sig: int = 0) -> None:
    """Continue to the next syscall entry or exit stop."""
    ptrace(PTRACE_SYSCALL, pid, 0, sig)


def detach(pid: int, sig: int = 0) -> None:
    ptrace(PTRACE_DETACH, pid, 0, sig)


def geteventmsg(pid: int) -> int:
    """The event message (new pid, exit status, SECCOMP_RET_DATA of a seccomp stop)."""
    msg = ctypes.c_ulong()
    ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(msg))
    return msg.value


def peekdata(pid: int, addr: int) -> int:
    """One word of the tracee's memory."""
    return ptrace(PTRACE_PEEKDATA, pid, addr, 0, check_errno=True)


# --- registers (x86_64) --------------------------------------------------------------------------

_REG_NAMES = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
              "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
              "gs_base", "ds", "es", "fs", "gs")


class UserRegs(ctypes.Structure):
    """x86_64 ``struct user_regs_struct`` (arch/x86/include/asm/user_64.h)."""

    _fields_ = [(name, ctypes.c_ulonglong) for name in _REG_NAMES]

    # The syscall ABI: number in orig_rax (rax holds the return value), args in this order.
    SYSCALL_ARGS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")

    @property
    def syscall_args(self) -> tuple[int, ...]:
        return tuple(getattr(self, r) for r in self.SYSCALL_ARGS)


def getregs(pid: int) -> UserRegs:
    regs = UserRegs()
    ptrace(PTRACE_GETREGS, pid, 0, ctypes.addressof(regs))
    return regs


def setregs(pid: int, regs: UserRegs) -> None:
    ptrace(PTRACE_SETREGS, pid, 0, ctypes.addressof(regs))


def skip_syscall(pid: int, retval: int) -> None:
    """At a syscall-entry or seccomp stop: do not run the syscall, make it return ``retval``
    (``-errno`` for a failure). One SETREGS: orig_rax = -1 skips, rax is the result."""
    regs = getregs(pid)
    regs.orig_rax = 0xFFFFFFFFFFFFFFFF
    regs.rax = retval & 0xFFFFFFFFFFFFFFFF
    setregs(pid, regs)


# --- siginfo -------------------------------------------------------------------------------------


class SigInfo(ctypes.Structure):
    """``siginfo_t`` (128 bytes) with accessors for SIGSYS's ``_sigsys`` fields, which
    python-ptrace's siginfo lacks: call_addr at 16, syscall at 24, arch at 28 (x86_64)."""

    _fields_ = [("signo", ctypes.c_int), ("errno", ctypes.c_int), ("code", ctypes.c_int),
                ("_pad0", ctypes.c_int), ("call_addr", ctypes.c_ulonglong),
                ("syscall", ctypes.c_int), ("arch", ctypes.c_uint),
                ("_rest", ctypes.c_ubyte * 96)]

    @classmethod
    def sigsys(cls, syscall: int, arch: int, call_addr: int, data: int) -> "SigInfo":
        """The SIGSYS seccomp raises for RET_TRAP: ``si_errno`` carries the filter's data."""
        info = cls()
        info.signo, info.code, info.errno = signal.SIGSYS, SYS_SECCOMP, data
        info.syscall, info.arch, info.call_addr = syscall, arch, call_addr
        return info


assert ctypes.sizeof(SigInfo) == 128


def getsiginfo(pid: int) -> SigInfo:
    info = SigInfo()
    ptrace(PTRACE_GETSIGINFO, pid, 0, ctypes.addressof(info))
    return info


def setsiginfo(pid: int, info: SigInfo) -> None:
    ptrace(PTRACE_SETSIGINFO, pid, 0, ctypes.addressof(info))


# --- PTRACE_GET_SYSCALL_INFO ---------------------------------------------------------------------


class _RawSyscallInfo(ctypes.Structure):
    _fields_ = [("op", ctypes.c_ubyte), ("_pad", ctypes.c_ubyte * 3), ("arch", ctypes.c_uint),
                ("instruction_pointer", ctypes.c_ulonglong), ("stack_pointer", ctypes.c_ulonglong),
                ("nr", ctypes.c_ulonglong),       # entry/seccomp; exit: rval
                ("args", ctypes.c_ulonglong * 6),  # entry/seccomp; exit: args[0] low byte = is_error
                ("ret_data", ctypes.c_uint),       # seccomp only
                ("_pad2", ctypes.c_uint)]


@dataclass(frozen=True, slots=True)
class SyscallInfo:
    """What a syscall stop is about. ``op`` is one of PTRACE_SYSCALL_INFO_*; ``nr``/``args`` for
    entry and seccomp stops, ``rval``/``is_error`` for exit stops, ``ret_data`` for seccomp."""

    op: int
    arch: int
    instruction_pointer: int
    stack_pointer: int
    nr: int = -1
    args: tuple[int, ...] = ()
    rval: int = 0
    is_error: bool = False
    ret_data: int = 0


def get_syscall_info(pid: int) -> SyscallInfo:
    raw = _RawSyscallInfo()
    ptrace(PTRACE_GET_SYSCALL_INFO, pid, ctypes.sizeof(raw), ctypes.addressof(raw))
    base = (raw.op, raw.arch, raw.instruction_pointer, raw.stack_pointer)
    if raw.op == PTRACE_SYSCALL_INFO_EXIT:
        rval = ctypes.c_longlong(raw.nr).value
        return SyscallInfo(*base, rval=rval, is_error=bool(raw.args[0] & 0xFF))
    if raw.op in (PTRACE_SYSCALL_INFO_ENTRY, PTRACE_SYSCALL_INFO_SECCOMP):
        nr = ctypes.c_longlong(raw.nr).value
        return SyscallInfo(*base, nr=nr, args=tuple(raw.args),
                           ret_data=raw.ret_data if raw.op == PTRACE_SYSCALL_INFO_SECCOMP else 0)
    return SyscallInfo(*base)


# --- seccomp filters of a tracee ------------------------------------------------------------------


def seccomp_get_filter(pid: int, index: int) -> bytes | None:
    """The raw classic instructions of filter ``index`` of a stopped tracee, counting from the
    *oldest* (0; kernel/seccomp.c get_nth_filter walks back from the newest); None past the
    newest. Needs CAP_SYS_ADMIN and a tracer not itself under seccomp (EACCES otherwise)."""
    try:
        count = ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, 0)
    except PtraceError as exc:
        if exc.errno == _errno.ENOENT:
            return None
        if exc.errno == _errno.EINVAL and index == 0:
            return None  # the tracee is not in seccomp filter mode: it has no filters
        raise
    buf = (ctypes.c_ubyte * (8 * count))()
    got = ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, ctypes.addressof(buf))
    return bytes(buf)[:8 * got]


def seccomp_filters(pid: int) -> list[bytes]:
    """Every filter of a stopped tracee, oldest first (the order they were installed)."""
    found = []
    while (raw := seccomp_get_filter(pid, len(found))) is not None:
        found.append(raw)
    return found


# --- wait statuses ---------------------------------------------------------------------------------


def wait(pid: int = -1, flags: int = WALL) -> tuple[int, int]:
    """waitpid with __WALL; returns (pid, status)."""
    return os.waitpid(pid, flags)


def event(status: int) -> int:
    """The PTRACE_EVENT_* of a stop (0 when the stop is not an event stop)."""
    return (status >> 16) & 0xFF


def is_syscall_stop(status: int) -> bool:
    return os.WIFSTOPPED(status) and os.WSTOPSIG(status) == SYSCALL_STOP


def is_event_stop(status: int, ev: int) -> bool:
    return os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP and event(status) == ev


# Names of events and a convenient option set, for callers that must not import python-ptrace.
EVENTS = {PTRACE_EVENT_FORK: "fork", PTRACE_EVENT_VFORK: "vfork", PTRACE_EVENT_CLONE: "clone",
          PTRACE_EVENT_EXEC: "exec", PTRACE_EVENT_VFORK_DONE: "vfork_done",
          PTRACE_EVENT_EXIT: "exit", PTRACE_EVENT_SECCOMP: "seccomp", PTRACE_EVENT_STOP: "stop"}
OPTIONS_ALL_EVENTS = (PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK
                      | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC | PTRACE_O_TRACEVFORKDONE
                      | PTRACE_O_TRACEEXIT | PTRACE_O_TRACESECCOMP)


# --- additions for the tracer (sysdispatch.trace.tracer / enforce) ---------------------------------
#
# The per-stop path must stay lean: these avoid a fresh ctypes structure and a dataclass per stop,
# and give the tracer the requests it needs to emulate seccomp's signals (per-thread signal masks,
# one word of memory written).

import struct  # noqa: E402

from ptrace.binding.func import PTRACE_POKEDATA  # noqa: E402  (kept beside its use)

PTRACE_GETSIGMASK = 0x420A
PTRACE_SETSIGMASK = 0x420B

# Registers holding the syscall arguments at a syscall stop of a 64-bit tracer: x86_64 (and x32)
# use the 64-bit ABI; a 64-bit process calling ``int 0x80`` uses i386's (ebx, ecx, edx, esi, edi,
# ebp), zero-extended into the same struct user_regs_struct.
SYSCALL_ARG_REGS_I386 = ("rbx", "rcx", "rdx", "rsi", "rdi", "rbp")


def pokedata(pid: int, addr: int, word: int) -> None:
    """Write one word of the tracee's memory."""
    ptrace(PTRACE_POKEDATA, pid, addr, word & 0xFFFFFFFFFFFFFFFF)


def getsigmask(pid: int) -> int:
    """The blocked-signal mask of one thread (bit ``sig - 1`` set: ``sig`` is blocked)."""
    mask = ctypes.c_uint64()
    ptrace(PTRACE_GETSIGMASK, pid, ctypes.sizeof(mask), ctypes.addressof(mask))
    return mask.value


def setsigmask(pid: int, mask: int) -> None:
    value = ctypes.c_uint64(mask)
    ptrace(PTRACE_SETSIGMASK, pid, ctypes.sizeof(value), ctypes.addressof(value))


# The hot path calls libc's ptrace() (through python-ptrace's handle on libc) with no ctypes
# argument types: converting four arguments to c_ulong costs more than the system call, while
# untyped small ints (a pid, a signal, a size) and a prepared c_void_p pass as they are. A failed
# call (-1) is made again through :func:`ptrace`, which raises the usual PtraceError: failures
# are rare (a tracee killed under us), so the retry costs nothing.
_untyped_ptrace = None
if not getattr(_binding, "HAS_CPTRACE", False):
    from ptrace.ctypes_libc import libc as _libc  # noqa: E402
    _untyped_ptrace = _libc["ptrace"]             # a fresh function object: no argtypes
    _untyped_ptrace.restype = ctypes.c_long


def fast_call(request: int):
    """A function ``f(pid, addr=0, data=0)`` making ptrace(request, ...) with the least
    overhead; ``addr`` and ``data`` must be small ints (they pass as C ints). It raises
    PtraceError like :func:`ptrace` on failure."""
    raw = _untyped_ptrace
    if raw is None:
        return lambda pid, addr=0, data=0: ptrace(request, pid, addr, data)

    def call(pid: int, addr: int = 0, data: int = 0) -> int:
        result = raw(request, pid, addr, data)
        if result == -1:
            return ptrace(request, pid, addr, data)
        return result
    return call


class StopInfo:
    """A reusable PTRACE_GET_SYSCALL_INFO buffer for the tracer's hot path: :meth:`read` makes
    one request and returns the fields as one tuple of ints, :data:`STOP_FIELDS` — no ctypes
    object or dataclass per stop. ``nr`` is the u64 the kernel wrote (exit stops: the return
    value), unsigned: the caller signs it (the tracer does, inline); ``args`` are
    ``fields[5:11]``."""

    LAYOUT = struct.Struct("<B3xIQQQ6QI4x")   # struct ptrace_syscall_info, as _RawSyscallInfo

    __slots__ = ("_buf", "_addr", "_ptr", "_size", "_raw")

    def __init__(self) -> None:
        self._buf = bytearray(self.LAYOUT.size)
        self._size = len(self._buf)
        self._addr = ctypes.addressof((ctypes.c_char * self._size).from_buffer(self._buf))
        self._ptr = ctypes.c_void_p(self._addr)
        self._raw = _untyped_ptrace

    def read(self, pid: int) -> tuple[int, ...]:
        if self._raw is None or self._raw(PTRACE_GET_SYSCALL_INFO, pid, self._size,
                                          self._ptr) == -1:
            ptrace(PTRACE_GET_SYSCALL_INFO, pid, self._size, self._addr)
        return self.LAYOUT.unpack_from(self._buf)


STOP_FIELDS = ("op", "arch", "instruction_pointer", "stack_pointer", "nr",
               "arg0", "arg1", "arg2", "arg3", "arg4", "arg5", "ret_data")
assert StopInfo.LAYOUT.size == ctypes.sizeof(_RawSyscallInfo)
