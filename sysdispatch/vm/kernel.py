"""The running kernel as an oracle for the BPF machine: a thin ctypes wrapper over bpf(2).

Tests load the same program into the kernel and into our VM and compare. This module only
talks to the kernel — load a program (``BPF_PROG_LOAD``), run it once on a packet
(``BPF_PROG_TEST_RUN``), create and use maps (ARRAY, HASH, PROG_ARRAY) — and turns every
refusal into a :class:`~sysdispatch.errors.SysdispatchError` that carries the kernel's errno,
so a test can compare our refusals with the kernel's errno for errno. It is part of the vm layer
and uses only ctypes and the standard library (no third-party bpf library).

Facts checked against the running kernel (6.18, x86_64), each also a test in
tests/vm/test_kernel_oracle.py:

* ``BPF_PROG_TEST_RUN`` of a socket filter wants at least 14 bytes of data (an Ethernet header;
  fewer gives EINVAL) and at most a page less the skb's head- and tailroom (3712 bytes here;
  4096 gives EINVAL); the program's r0 comes back truncated to 32 bits (``retval`` is a
  ``__u32`` in ``union bpf_attr`` for every program type). :func:`run_r0` gets all 64 bits by
  running a second copy that shifts r0 right by 32 before exiting.
* At most 33 tail calls: a chain of programs that each tail-call the next runs 34 of them.
* A PROG_ARRAY takes only BPF_ANY updates, and only programs of its owner's type (EINVAL).

With ``net.core.bpf_jit_enable = 1`` (the default here) what runs is the kernel's x86-64 JIT
output, an engine written independently of ours — which is what makes it a useful oracle.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import platform
import struct
from typing import Any, Iterable, Sequence

from ..errors import MapError, SysdispatchError, VerifierError
from .isa import (Insn, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, decode_program, encode_program, make,
                  spec_of)
from .maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST, MAP_TYPE_NAMES  # noqa: F401 (re-exported)

# The bpf(2) system call number on x86_64 (arch/x86/entry/syscalls/syscall_64.tbl: 321 bpf).
# glibc exports no bpf() wrapper, so we go through its generic syscall(2).
NR_BPF_X86_64 = 321

# bpf(2) commands (include/uapi/linux/bpf.h, enum bpf_cmd).
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET_INFO_BY_FD = 15

# Program types (enum bpf_prog_type) we load; the names are our spelling.
PROG_TYPES = {
    "socket_filter": 1,
    "kprobe": 2,
    "sched_cls": 3,
    "sched_act": 4,
    "tracepoint": 5,
    "xdp": 6,
}

# Map types by name (enum bpf_map_type); the update flags BPF_ANY/NOEXIST/EXIST come from maps.py.
MAP_TYPES = MAP_TYPE_NAMES
# BPF_MAP_UPDATE_ELEM's flag for a value with a bpf_spin_lock (our maps have none to take).
BPF_F_LOCK = 4

# BPF_PROG_TEST_RUN of an skb-based program needs an Ethernet header's worth of data.
ETH_HLEN = 14

# Verifier log: level 1 logs what the verifier saw; the buffer must be large enough or the load
# fails with ENOSPC, so we size it generously and keep only the tail in errors.
LOG_LEVEL = 1
LOG_SIZE = 1 << 20
LOG_TAIL_LINES = 4

# union bpf_attr is at most a few hundred bytes; the kernel wants unused tail bytes zero, and
# accepts a size smaller than its own (it zero-fills the rest).
_ATTR_SIZE = 160

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.syscall.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_ulong)


class KernelError(SysdispatchError):
    """The kernel refused a bpf(2) command; ``errno`` holds its error number."""

    def __init__(self, message: str, errno: int, **kw) -> None:
        super().__init__(message, **kw)
        self.errno = errno


class KernelVerifierError(KernelError, VerifierError):
    """The kernel's verifier refused a program; ``log`` holds the tail of its verifier log."""

    def __init__(self, message: str, errno: int, log: str = "", **kw) -> None:
        super().__init__(message, errno, **kw)
        self.log = log


def _errname(err: int) -> str:
    return errno_mod.errorcode.get(err, str(err))


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    """Issue bpf(cmd, attr); return the result or raise OSError with the kernel's errno."""
    ret = _libc.syscall(NR_BPF_X86_64, cmd, ctypes.addressof(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _attr(*fields: tuple[int, str, int], error: type = KernelError) -> ctypes.Array:
    """A zeroed bpf_attr buffer with ``(offset, struct format, value)`` fields packed in; a value
    that does not fit its field raises ``error`` with EINVAL, as the kernel would refuse it."""
    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    for off, fmt, value in fields:
        try:
            struct.pack_into("<" + fmt, buf, off, value)
        except struct.error:
            raise error(f"{value!r} does not fit the {struct.calcsize(fmt)}-byte unsigned field "
                        f"at offset {off} of bpf_attr", errno_mod.EINVAL) from None
    return buf


def _to_bytes(value: int, size: int, what: str) -> bytes:
    """A little-endian ``size``-byte field (negative values in two's complement)."""
    if not -(1 << (8 * size - 1)) <= value < 1 << (8 * size):
        raise MapError(f"{what} {value} does not fit in {size} bytes", errno_mod.EINVAL)
    return (value % (1 << (8 * size))).to_bytes(size, "little")


def _addr(buf: Any) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


# --- availability ------------------------------------------------------------------------------

_available: bool | None = None


def kernel_bpf_available() -> bool:
    """True when we may load and run programs: root and bpf() permitted (asked once, cached)."""
    global _available
    if _available is None:
        _available = False
        if os.geteuid() == 0 and platform.machine() == "x86_64":  # NR_BPF_X86_64 is x86_64's
            try:
                with load_program([make("mov", 0, imm=0, reg=False), make("exit")]) as prog:
                    test_run(prog, bytes(ETH_HLEN))
                _available = True
            except (SysdispatchError, OSError):
                pass
    return _available


# --- maps --------------------------------------------------------------------------------------


class KernelMap:
    """A kernel map fd with its geometry; close() (or ``with``) releases it."""

    def __init__(self, fd: int, map_type: int, key_size: int, value_size: int,
                 max_entries: int, *, owned: bool = True) -> None:
        self.fd = fd
        self.owned = owned  # False for a view of a caller's fd: close() leaves it open
        self.map_type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries

    def close(self) -> None:
        if self.fd >= 0 and self.owned:
            os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> "KernelMap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # a safety net only; tests close explicitly
        try:
            self.close()
        except OSError:
            pass

    def __repr__(self) -> str:
        return (f"KernelMap(fd={self.fd}, type={self.map_type}, key={self.key_size}, "
                f"value={self.value_size}, max_entries={self.max_entries})")


def create_map(map_type: int | str, key_size: int, value_size: int, max_entries: int,
               flags: int = 0) -> KernelMap:
    """BPF_MAP_CREATE; raises :class:`MapError` with the kernel's errno when refused."""
    mtype = MAP_TYPES.get(map_type) if isinstance(map_type, str) else map_type
    if mtype is None:
        raise MapError(f"unknown map type {map_type!r} (known: {', '.join(MAP_TYPES)})",
                       errno_mod.EINVAL)
    attr = _attr((0, "I", mtype), (4, "I", key_size), (8, "I", value_size),
                 (12, "I", max_entries), (16, "I", flags), error=MapError)
    try:
        fd = _bpf(BPF_MAP_CREATE, attr)
    except OSError as exc:
        raise MapError(f"kernel refused to create map type {mtype} (key {key_size}, value "
                       f"{value_size}, {max_entries} entries): {_errname(exc.errno)}",
                       exc.errno) from None
    return KernelMap(fd, mtype, key_size, value_size, max_entries)


def _map_geometry(m: KernelMap | int) -> KernelMap:
    """A KernelMap view of ``m``; for a bare fd, ask the kernel (BPF_OBJ_GET_INFO_BY_FD)."""
    if isinstance(m, KernelMap):
        return m
    info = ctypes.create_string_buffer(80)  # struct bpf_map_info: type, id, key, value, max, ...
    attr = _attr((0, "I", m), (4, "I", ctypes.sizeof(info)), (8, "Q", _addr(info)),
                 error=MapError)
    try:
        _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    except OSError as exc:
        raise MapError(f"fd {m} is not a bpf map: {_errname(exc.errno)}", exc.errno) from None
    mtype, _id, key, value, max_entries = struct.unpack_from("<5I", info, 0)
    return KernelMap(m, mtype, key, value, max_entries, owned=False)


def _key_buf(m: KernelMap, key: bytes | int) -> ctypes.Array:
    if isinstance(key, int):
        key = _to_bytes(key, m.key_size, "key")
    if len(key) != m.key_size:
        raise MapError(f"key is {len(key)} bytes, map wants {m.key_size}", errno_mod.EINVAL)
    return ctypes.create_string_buffer(bytes(key), m.key_size)


def _map_op(cmd: int, what: str, m: KernelMap, key: ctypes.Array, value: Any,
            flags: int = 0) -> None:
    attr = _attr((0, "I", m.fd), (8, "Q", _addr(key)), (16, "Q", _addr(value)), (24, "Q", flags),
                 error=MapError)
    try:
        _bpf(cmd, attr)
    except OSError as exc:
        raise MapError(f"kernel map {what} failed: {_errname(exc.errno)}", exc.errno) from None


def map_update(m: KernelMap | int, key: bytes | int, value: bytes | int | KernelProg,
               flags: int = BPF_ANY) -> None:
    """BPF_MAP_UPDATE_ELEM. For a PROG_ARRAY the value is a program (or its fd)."""
    m = _map_geometry(m)
    if isinstance(value, KernelProg):
        value = value.fd
    if isinstance(value, int):
        value = _to_bytes(value, m.value_size, "value")
    if len(value) != m.value_size:
        raise MapError(f"value is {len(value)} bytes, map wants {m.value_size}", errno_mod.EINVAL)
    _map_op(BPF_MAP_UPDATE_ELEM, "update", m, _key_buf(m, key),
            ctypes.create_string_buffer(bytes(value), m.value_size), flags)


def map_lookup(m: KernelMap | int, key: bytes | int) -> bytes:
    """BPF_MAP_LOOKUP_ELEM: the value's bytes, or :class:`MapError` (ENOENT when absent).

    For a PROG_ARRAY the kernel answers with the id of the program in the slot (a u32).
    """
    m = _map_geometry(m)
    value = ctypes.create_string_buffer(m.value_size)
    _map_op(BPF_MAP_LOOKUP_ELEM, "lookup", m, _key_buf(m, key), value)
    return value.raw


def map_delete(m: KernelMap | int, key: bytes | int) -> None:
    """BPF_MAP_DELETE_ELEM; an ARRAY's elements cannot be deleted (EINVAL)."""
    m = _map_geometry(m)
    _map_op(BPF_MAP_DELETE_ELEM, "delete", m, _key_buf(m, key), None)


# --- programs ----------------------------------------------------------------------------------


class KernelProg:
    """A loaded kernel program fd; close() (or ``with``) releases it."""

    def __init__(self, fd: int, prog_type: int, insn_cnt: int, log: str = "") -> None:
        self.fd = fd
        self.prog_type = prog_type
        self.insn_cnt = insn_cnt
        self.log = log  # the verifier log, when asked for

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "KernelProg":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass

    def __repr__(self) -> str:
        return f"KernelProg(fd={self.fd}, type={self.prog_type}, insns={self.insn_cnt})"


def relocate(insns: Sequence[Insn], maps: Sequence[KernelMap | int]) -> list[Insn]:
    """Rewrite ``lddw rX, map[i]`` (src=1 or 2, imm=i) to carry the kernel map's fd instead.

    Our :class:`~sysdispatch.vm.program.Program` names maps by their index in ``Program.maps``;
    the kernel's BPF_PSEUDO_MAP_FD / BPF_PSEUDO_MAP_VALUE have the same meaning with an fd.
    """
    fds = [m.fd if isinstance(m, KernelMap) else int(m) for m in maps]
    out = list(insns)
    pc = 0
    while pc < len(out):
        insn = out[pc]
        spec = spec_of(insn)
        if spec.wide:
            if insn.src in (PSEUDO_MAP_FD, PSEUDO_MAP_VALUE):
                if not 0 <= insn.imm < len(fds):
                    raise KernelError(f"lddw refers to map {insn.imm}, {len(fds)} given",
                                      errno_mod.EINVAL, pc=pc)
                out[pc] = Insn(insn.code, insn.dst, insn.src, insn.off, fds[insn.imm])
            pc += 2
        else:
            pc += 1
    return out


def _as_insns(program: Any) -> tuple[list[Insn], Sequence[Any]]:
    """Instructions and map table of a Program, raw bytes or a sequence of Insn."""
    if isinstance(program, (bytes, bytearray, memoryview)):
        return list(decode_program(bytes(program))), ()
    if hasattr(program, "insns"):  # a vm.program.Program (duck-typed to keep imports light)
        return list(program.insns), tuple(getattr(program, "maps", ()))
    return list(program), ()


def _log_tail(log: str) -> str:
    # The closing statistics line ("processed N insns ...") says nothing about the refusal.
    lines = [ln for ln in log.splitlines() if ln.strip() and not ln.startswith("processed ")]
    return " | ".join(lines[-LOG_TAIL_LINES:])


def load_program(program: Any, prog_type: int | str = "socket_filter", *,
                 maps: Sequence[KernelMap | int] | None = None, log: bool = False,
                 name: str = "") -> KernelProg:
    """BPF_PROG_LOAD with license "GPL".

    ``program`` is a Program, raw bytes or a sequence of :class:`Insn`. Map references are
    relocated to ``maps`` (default: the Program's own maps, when they are :class:`KernelMap`).
    With ``log`` the verifier log is kept on the result. A refusal raises
    :class:`KernelVerifierError` with the kernel's errno and the last lines of its log (the log
    is always requested on failure, by loading a second time, so the error can say why).
    """
    insns, own_maps = _as_insns(program)
    table = maps if maps is not None else own_maps
    if any(spec_of(insns[pc]).wide and insns[pc].src in (PSEUDO_MAP_FD, PSEUDO_MAP_VALUE)
           for pc in _first_pcs(insns)):
        insns = relocate(insns, table)
    ptype = PROG_TYPES.get(prog_type) if isinstance(prog_type, str) else prog_type
    if ptype is None:
        raise KernelError(f"unknown program type {prog_type!r} (known: {', '.join(PROG_TYPES)})",
                          errno_mod.EINVAL)
    code = ctypes.create_string_buffer(encode_program(insns), 8 * len(insns))
    try:
        fd, text = _prog_load(ptype, code, len(insns), name, log)
    except OSError as exc:
        # Ask again with a log, so the error can say what the verifier disliked.
        text = ""
        if not log:
            try:
                fd, text = _prog_load(ptype, code, len(insns), name, True)
                os.close(fd)  # cannot happen for a deterministic verifier, but never leak it
            except OSError as again:
                text = getattr(again, "bpf_log", "")
        else:
            text = getattr(exc, "bpf_log", "")
        tail = _log_tail(text)
        raise KernelVerifierError(
            f"kernel refused program ({len(insns)} insns, type {ptype}): {_errname(exc.errno)}"
            + (f": {tail}" if tail else ""), exc.errno, text) from None
    return KernelProg(fd, ptype, len(insns), text)


def _first_pcs(insns: Sequence[Insn]) -> Iterable[int]:
    """The pc of every instruction except the second slots of lddw."""
    pc = 0
    while pc < len(insns):
        yield pc
        pc += 2 if spec_of(insns[pc]).wide else 1


def _prog_load(ptype: int, code: ctypes.Array, count: int, name: str,
               log: bool) -> tuple[int, str]:
    license_ = ctypes.create_string_buffer(b"GPL")
    logbuf = ctypes.create_string_buffer(LOG_SIZE) if log else None
    attr = _attr((0, "I", ptype), (4, "I", count), (8, "Q", _addr(code)),
                 (16, "Q", _addr(license_)),
                 (24, "I", LOG_LEVEL if log else 0), (28, "I", LOG_SIZE if log else 0),
                 (32, "Q", _addr(logbuf)))
    ctypes.memmove(ctypes.addressof(attr) + 48, name.encode()[:15], len(name.encode()[:15]))
    try:
        fd = _bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        exc.bpf_log = logbuf.value.decode(errors="replace") if logbuf is not None else ""
        raise
    return fd, (logbuf.value.decode(errors="replace") if logbuf is not None else "")


def test_run(prog: KernelProg | int, data: bytes, repeat: int = 1) -> int:
    """BPF_PROG_TEST_RUN: run ``prog`` on ``data`` and return its r0 as the kernel reports it.

    The kernel reports ``retval`` as a ``__u32``: only the low 32 bits of r0 come back. For a
    socket filter, ``data`` must be at least 14 bytes (the kernel builds an skb with an Ethernet
    header from it; shorter data gives EINVAL).
    """
    fd = prog.fd if isinstance(prog, KernelProg) else prog
    data_in = ctypes.create_string_buffer(bytes(data), max(len(data), 1))
    attr = _attr((0, "I", fd), (8, "I", len(data)), (16, "Q", _addr(data_in)),
                 (32, "I", repeat))
    try:
        _bpf(BPF_PROG_TEST_RUN, attr)
    except OSError as exc:
        raise KernelError(f"kernel test run failed ({len(data)} bytes of data): "
                          f"{_errname(exc.errno)}", exc.errno) from None
    return struct.unpack_from("<I", attr, 4)[0]


test_run.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite its name



def high_half_variant(insns: Sequence[Insn]) -> list[Insn]:
    """``insns`` with every ``exit`` turned into a jump to ``r0 >>= 32; exit`` appended at the end.

    Test runs report only the low 32 bits of r0; running this variant too gives the high 32.
    Each exit becomes a one-slot ``ja``, so no other jump moves. Programs with local calls are
    refused (an ``exit`` there returns from a subprogram).
    """
    out = list(insns)
    tail = len(out)
    for pc in _first_pcs(out):
        kind = spec_of(out[pc]).kind
        if kind == "local_call":
            raise KernelError("cannot take the high half of r0 of a program with local calls",
                              errno_mod.EINVAL, pc=pc)
        if kind == "exit":
            out[pc] = make("ja", off=tail - pc - 1)
    return out + [make("rsh", 0, imm=32, reg=False), make("exit")]


def run_r0(program: Any, data: bytes = bytes(ETH_HLEN), prog_type: int | str = "socket_filter",
           *, maps: Sequence[KernelMap | int] | None = None) -> int:
    """All 64 bits of r0 after the kernel runs ``program`` once (two loads, two test runs)."""
    insns, own_maps = _as_insns(program)
    table = maps if maps is not None else own_maps
    with load_program(insns, prog_type, maps=table) as lo_prog:
        low = test_run(lo_prog, data)
    with load_program(high_half_variant(insns), prog_type, maps=table) as hi_prog:
        high = test_run(hi_prog, data)
    return (high << 32) | low
