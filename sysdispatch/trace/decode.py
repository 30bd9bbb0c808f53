"""Reading a stopped tracee's arguments for people: paths, flag names, signal names — and the
one-line, strace-like rendering of an event.

Only for reports: the policy sees the raw ``struct seccomp_data`` words, never these strings
(a path read here could change before the kernel reads it; a policy deciding on it would be a
time-of-check/time-of-use hole). Decoding is done only for events someone will see or record,
at the stop, while the tracee's memory still holds the arguments; memory is read with
process_vm_readv (no ptrace round trip per word).

``decoded`` keys are the argument names of the man pages (``pathname``, ``flags``, ``mode``),
values plain text (a path as it is, unquoted; flags as ``O_RDONLY|O_CLOEXEC``);
:func:`render` prints the arguments a syscall has (:data:`SIGNATURES`, six hex words for a
syscall not listed there) with the decoded text where there is one.
"""

from __future__ import annotations

import ctypes
import os

from ..policy.constants import CONSTANTS, PER_ARCH
from ..seccomp import actions
from ..seccomp import arch as _sa
from ..seccomp.data import AUDIT_ARCH_I386
from ..vm.isa import signed32
from .events import Event

MAX_STRING = 4096
_PAGE = os.sysconf("SC_PAGE_SIZE")

# Argument kinds: path (a C string), fd, dirfd (AT_FDCWD), oflags (open flags), mode (octal),
# atflags (AT_*), sig (a signal number), argv (a string array), int (signed decimal), and anything
# else hex. Arguments beyond the listed ones are not printed.
_P, _FD, _DFD, _OF, _MODE, _AT, _SIG, _ARGV, _INT, _HEX = (
    "path", "fd", "dirfd", "oflags", "mode", "atflags", "sig", "argv", "int", "hex")
SIGNATURES: dict[str, tuple[tuple[str, str], ...]] = {
    "read": (("fd", _FD), ("buf", _HEX), ("count", _INT)),
    "write": (("fd", _FD), ("buf", _HEX), ("count", _INT)),
    "pread64": (("fd", _FD), ("buf", _HEX), ("count", _INT), ("offset", _INT)),
    "pwrite64": (("fd", _FD), ("buf", _HEX), ("count", _INT), ("offset", _INT)),
    "close": (("fd", _FD),),
    "open": (("pathname", _P), ("flags", _OF), ("mode", _MODE)),
    "openat": (("dirfd", _DFD), ("pathname", _P), ("flags", _OF), ("mode", _MODE)),
    "creat": (("pathname", _P), ("mode", _MODE)),
    "execve": (("pathname", _P), ("argv", _ARGV), ("envp", _HEX)),
    "execveat": (("dirfd", _DFD), ("pathname", _P), ("argv", _ARGV), ("envp", _HEX),
                 ("flags", _AT)),
    "mkdir": (("pathname", _P), ("mode", _MODE)),
    "mkdirat": (("dirfd", _DFD), ("pathname", _P), ("mode", _MODE)),
    "rmdir": (("pathname", _P),),
    "unlink": (("pathname", _P),),
    "unlinkat": (("dirfd", _DFD), ("pathname", _P), ("flags", _AT)),
    "rename": (("oldpath", _P), ("newpath", _P)),
    "renameat": (("olddirfd", _DFD), ("oldpath", _P), ("newdirfd", _DFD), ("newpath", _P)),
    "renameat2": (("olddirfd", _DFD), ("oldpath", _P), ("newdirfd", _DFD), ("newpath", _P),
                  ("flags", _HEX)),
    "link": (("oldpath", _P), ("newpath", _P)),
    "symlink": (("target", _P), ("linkpath", _P)),
    "readlink": (("pathname", _P), ("buf", _HEX), ("bufsiz", _INT)),
    "readlinkat": (("dirfd", _DFD), ("pathname", _P), ("buf", _HEX), ("bufsiz", _INT)),
    "stat": (("pathname", _P), ("statbuf", _HEX)),
    "lstat": (("pathname", _P), ("statbuf", _HEX)),
    "newfstatat": (("dirfd", _DFD), ("pathname", _P), ("statbuf", _HEX), ("flags", _AT)),
    "statx": (("dirfd", _DFD), ("pathname", _P), ("flags", _AT), ("mask", _HEX),
              ("statxbuf", _HEX)),
    "access": (("pathname", _P), ("mode", _INT)),
    "faccessat": (("dirfd", _DFD), ("pathname", _P), ("mode", _INT)),
    "faccessat2": (("dirfd", _DFD), ("pathname", _P), ("mode", _INT), ("flags", _AT)),
    "chdir": (("path", _P),),
    "chroot": (("path", _P),),
    "chmod": (("pathname", _P), ("mode", _MODE)),
    "fchmodat": (("dirfd", _DFD), ("pathname", _P), ("mode", _MODE)),
    "chown": (("pathname", _P), ("owner", _INT), ("group", _INT)),
    "truncate": (("path", _P), ("length", _INT)),
    "mount": (("source", _P), ("target", _P), ("filesystemtype", _P), ("mountflags", _HEX),
              ("data", _HEX)),
    "umount2": (("target", _P), ("flags", _HEX)),
    "kill": (("pid", _INT), ("sig", _SIG)),
    "tkill": (("tid", _INT), ("sig", _SIG)),
    "tgkill": (("tgid", _INT), ("tid", _INT), ("sig", _SIG)),
    "socket": (("domain", _INT), ("type", _HEX), ("protocol", _INT)),
    "connect": (("sockfd", _FD), ("addr", _HEX), ("addrlen", _INT)),
    "ptrace": (("request", _HEX), ("pid", _INT), ("addr", _HEX), ("data", _HEX)),
    "getpid": (), "getppid": (), "gettid": (), "getuid": (), "geteuid": (), "getgid": (),
    "fork": (), "vfork": (), "sched_yield": (),
    "brk": (("addr", _HEX),),
    "mmap": (("addr", _HEX), ("length", _INT), ("prot", _HEX), ("flags", _HEX), ("fd", _FD),
             ("offset", _INT)),
    "munmap": (("addr", _HEX), ("length", _INT)),
    "mprotect": (("addr", _HEX), ("length", _INT), ("prot", _HEX)),
    "arch_prctl": (("code", _HEX), ("addr", _HEX)),
    "set_tid_address": (("tidptr", _HEX),),
    "rt_sigaction": (("signum", _SIG), ("act", _HEX), ("oldact", _HEX), ("sigsetsize", _INT)),
    "rt_sigprocmask": (("how", _INT), ("set", _HEX), ("oldset", _HEX), ("sigsetsize", _INT)),
    "wait4": (("pid", _INT), ("wstatus", _HEX), ("options", _HEX), ("rusage", _HEX)),
    "clone": (("flags", _HEX), ("stack", _HEX), ("parent_tid", _HEX), ("child_tid", _HEX),
              ("tls", _HEX)),
    "clone3": (("cl_args", _HEX), ("size", _INT)),
    "pipe2": (("pipefd", _HEX), ("flags", _OF)),
    "lseek": (("fd", _FD), ("offset", _INT), ("whence", _INT)),
    "fstat": (("fd", _FD), ("statbuf", _HEX)),
    "getdents64": (("fd", _FD), ("dirp", _HEX), ("count", _INT)),
    "fcntl": (("fd", _FD), ("cmd", _INT), ("arg", _HEX)),
    "nanosleep": (("req", _HEX), ("rem", _HEX)),
    "clock_nanosleep": (("clockid", _INT), ("flags", _HEX), ("request", _HEX),
                        ("remain", _HEX)),
    "exit": (("status", _INT),),
    "exit_group": (("status", _INT),),
    "dup": (("oldfd", _FD),),
    "dup2": (("oldfd", _FD), ("newfd", _FD)),
    "dup3": (("oldfd", _FD), ("newfd", _FD), ("flags", _OF)),
    "ioctl": (("fd", _FD), ("request", _HEX), ("arg", _HEX)),
    "seccomp": (("operation", _INT), ("flags", _HEX), ("args", _HEX)),
    "prctl": (("option", _INT), ("arg2", _HEX), ("arg3", _HEX), ("arg4", _HEX), ("arg5", _HEX)),
    "bpf": (("cmd", _INT), ("attr", _HEX), ("size", _INT)),
    "unshare": (("flags", _HEX),),
    "setns": (("fd", _FD), ("nstype", _HEX)),
}
_ALL_SIX = tuple((f"arg{i}", _HEX) for i in range(6))
_DECODED_KINDS = frozenset({_P, _DFD, _OF, _MODE, _AT, _SIG, _ARGV})


# --- the tracee's memory -----------------------------------------------------------------------

class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
_vm_readv = _libc.process_vm_readv
_vm_readv.restype = ctypes.c_ssize_t
_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_Iovec), ctypes.c_ulong,
                      ctypes.POINTER(_Iovec), ctypes.c_ulong, ctypes.c_ulong]


def read_memory(pid: int, addr: int, size: int) -> bytes:
    """Up to ``size`` bytes at ``addr`` of process ``pid``; shorter when the range runs into
    unmapped memory (empty when ``addr`` itself is unmapped)."""
    if size <= 0 or addr <= 0:
        return b""
    buf = ctypes.create_string_buffer(size)
    local = _Iovec(ctypes.cast(buf, ctypes.c_void_p), size)
    remote = _Iovec(addr, size)
    got = _vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    return buf.raw[:got] if got > 0 else b""


def read_string(pid: int, addr: int, limit: int = MAX_STRING) -> bytes | None:
    """The NUL-terminated string at ``addr`` (at most ``limit`` bytes; None when unreadable).
    Read page by page, so a string ending just before an unmapped page is still found."""
    out = b""
    while len(out) < limit:
        chunk = min(_PAGE - (addr + len(out)) % _PAGE, limit - len(out))
        part = read_memory(pid, addr + len(out), chunk)
        if not part:
            return out if out else None
        end = part.find(b"\0")
        if end >= 0:
            return out + part[:end]
        out += part
    return out


def _text(raw: bytes) -> str:
    """Bytes of the tracee as text: UTF-8, anything else as backslash escapes."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == "\\" else f"\\x{ord(c):02x}" for c in text)


def _quote(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


# --- flags and numbers ---------------------------------------------------------------------------



def _flags(value: int, names: list[tuple[str, int]], *, octal: bool = False) -> str:
    parts, rest = [], value
    for name, bit in names:
        if rest & bit == bit:
            parts.append(name)
            rest &= ~bit
    if rest:
        parts.append(f"{rest:#o}" if octal else f"{rest:#x}")
    return "|".join(parts) or "0"


# open(2) flags as policy/constants.py holds them (x86 values for the per-arch ones), widest first
# so O_SYNC (which includes O_DSYNC's bit) wins over O_DSYNC.
_OPEN_FLAGS = sorted(
    [(k, v) for k, v in CONSTANTS.items() if k.startswith("O_") and v and k not in
     ("O_ACCMODE", "O_NDELAY", "O_RSYNC", "O_WRONLY", "O_RDWR")]
    + [(k, t["x86_64"]) for k, t in PER_ARCH.items() if k.startswith("O_")],
    key=lambda kv: -bin(kv[1]).count("1"))
_AT_FLAGS = sorted([(k, v) for k, v in CONSTANTS.items()
                    if k.startswith("AT_") and k not in ("AT_FDCWD", "AT_EACCESS")],
                   key=lambda kv: kv[1])
_SIGNALS = {v: k for k, v in CONSTANTS.items()
            if k.startswith("SIG") and k[3:].isupper() and k[3:].isalpha()}
_OPENS = frozenset({"open", "openat"})
_CREATES = CONSTANTS["O_CREAT"] | PER_ARCH["O_TMPFILE"]["x86_64"]
_ACCMODE = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR", 3: "O_ACCMODE"}


def _open_flags(v: int) -> str:
    v &= 0xFFFFFFFF
    acc = _ACCMODE[v & 3]
    rest = v & ~3
    return acc if not rest else f"{acc}|{_flags(rest, _OPEN_FLAGS, octal=True)}"


def _dirfd(v: int) -> str:
    fd = signed32(v)
    return "AT_FDCWD" if fd == CONSTANTS["AT_FDCWD"] else str(fd)


def _argv(pid: int, addr: int, word: int, limit: int = 8) -> str:
    if not addr:
        return "NULL"
    items = []
    for i in range(limit + 1):
        raw = read_memory(pid, addr + i * word, word)
        if len(raw) < word:
            return f"{addr:#x}"
        ptr = int.from_bytes(raw, "little")
        if not ptr:
            return "[" + ", ".join(items) + "]"
        if i == limit:
            return "[" + ", ".join(items) + ", ...]"
        raw = read_string(pid, ptr, 256)
        items.append(f"{ptr:#x}" if raw is None else _quote(_text(raw)))
    return "[" + ", ".join(items) + "]"


# --- events ------------------------------------------------------------------------------------

def syscall_name(audit: int, nr: int) -> str:
    """The syscall's name on its arch (x32 when an x86_64 number carries the bit), or
    ``syscall_<nr>``."""
    a = _sa.by_audit(audit & 0xFFFFFFFF)
    name = None
    if a is not None:
        name = _sa.for_number(a, nr & 0xFFFFFFFF).syscall_name(nr & 0xFFFFFFFF)
    return name or f"syscall_{nr}"


def signature(name: str) -> tuple[tuple[str, str], ...]:
    return SIGNATURES.get(name, _ALL_SIX)


def decode(pid: int, name: str, audit: int, args: tuple[int, ...]) -> dict[str, str]:
    """The arguments of a stopped thread's syscall worth showing as text: ``{"pathname":
    '"/etc/passwd"', "flags": "O_RDONLY|O_CLOEXEC"}``. ``pid`` is the thread's tid."""
    out: dict[str, str] = {}
    word = 4 if audit == AUDIT_ARCH_I386 else 8
    for (arg, kind), value in zip(SIGNATURES.get(name, ()), args):
        if kind not in _DECODED_KINDS:
            continue
        if word == 4:
            value &= 0xFFFFFFFF
        if kind == _P:
            raw = read_string(pid, value) if value else None
            if raw is not None:   # unquoted; render() quotes it
                out[arg] = _text(raw) + ("..." if len(raw) >= MAX_STRING else "")
        elif kind == _DFD:
            out[arg] = _dirfd(value)
        elif kind == _OF:
            out[arg] = _open_flags(value)
        elif kind == _MODE:
            out[arg] = f"0{value:03o}"
        elif kind == _AT:
            out[arg] = _flags(value & 0xFFFFFFFF, _AT_FLAGS)
        elif kind == _SIG:
            out[arg] = _SIGNALS.get(value & 0xFFFFFFFF, str(signed32(value)))
        elif kind == _ARGV:
            out[arg] = _argv(pid, value, word)
    return out


def _plain(kind: str, value: int) -> str:
    if kind in (_FD, _INT):
        v = value - (1 << 64) if value >> 63 else value
        return str(v if -(1 << 31) <= v < (1 << 63) else signed32(value))
    return f"{value:#x}" if value else "0"


def _shown(decoded: str | None, kind: str, value: int) -> str:
    if decoded is None:
        return "NULL" if kind == _P and not value else _plain(kind, value)
    return _quote(decoded) if kind == _P else decoded


def render(ev: Event) -> str:
    """``[pid 42] openat(AT_FDCWD, "/etc/shadow", O_RDONLY) -> ERRNO(13) EACCES [openat_rules]``
    — ``(audit)`` marks a verdict that was reported, not enforced."""
    sig = signature(ev.name)
    if ev.name in _OPENS and not ev.args[len(sig) - 2] & _CREATES:
        sig = sig[:-1]        # the mode of an open that creates nothing is not an argument
    args = ", ".join(_shown(ev.decoded.get(arg), kind, value)
                     for (arg, kind), value in zip(sig, ev.args))
    verdict = actions.describe(ev.verdict)
    act = actions.action_of(ev.verdict)
    if act == actions.ERRNO:
        verdict += " " + actions.errno_name(min(ev.verdict & actions.DATA, actions.MAX_ERRNO))
    who = f"[pid {ev.pid}]" if ev.pid == ev.tid else f"[pid {ev.pid} tid {ev.tid}]"
    audit = " (audit)" if not ev.enforced else ""
    return f"{who} {ev.name}({args}) -> {verdict}{audit} [{ev.handler}]"
