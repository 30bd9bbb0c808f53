"""The tracer's parts that need no tracee: reading memory and decoding arguments (on this very
process), rendering event lines, loading --on-trace hooks."""

from __future__ import annotations

import ctypes
import mmap
import os

import pytest

from sysdispatch.errors import TraceError
from sysdispatch.seccomp import actions
from sysdispatch.seccomp.data import AUDIT_ARCH_I386, AUDIT_ARCH_X86_64
from sysdispatch.trace import decode, hooks
from sysdispatch.trace.events import Event

ME = os.getpid()


def _addr(buf) -> int:
    return ctypes.addressof(buf)


def test_read_string_stops_at_nul_and_at_unmapped_memory():
    buf = ctypes.create_string_buffer(b"hello\0world")
    assert decode.read_string(ME, _addr(buf)) == b"hello"
    assert decode.read_string(ME, 0) is None
    # a string running up to an unmapped page: read page by page, returned without the rest
    page = mmap.PAGESIZE
    area = mmap.mmap(-1, 2 * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    libc = ctypes.CDLL(None)
    libc.munmap(ctypes.c_void_p(base + page), page)
    area[page - 3:page] = b"abc"
    assert decode.read_string(ME, base + page - 3) == b"abc"
    assert decode.read_memory(ME, base + page, 8) == b""


def test_decode_names_paths_flags_and_signals():
    path = ctypes.create_string_buffer(b"/etc/\xffpasswd\n")
    got = decode.decode(ME, "openat", AUDIT_ARCH_X86_64,
                        (0xFFFFFF9C, _addr(path), 0o2000000 | 0o100 | 1, 0o644, 0, 0))
    assert got == {"dirfd": "AT_FDCWD", "pathname": "/etc/\\xffpasswd\\x0a",
                   "flags": "O_WRONLY|O_CREAT|O_CLOEXEC", "mode": "0644"}
    assert decode.decode(ME, "kill", AUDIT_ARCH_X86_64, (1, 31, 0, 0, 0, 0)) == {"sig": "SIGSYS"}
    assert decode.decode(ME, "newfstatat", AUDIT_ARCH_X86_64, (3, 0, 0, 0x1100, 0, 0)) == \
        {"dirfd": "3", "flags": "AT_SYMLINK_NOFOLLOW|AT_EMPTY_PATH"}
    assert decode.decode(ME, "getpid", AUDIT_ARCH_X86_64, (0,) * 6) == {}


def test_decode_argv_per_abi():
    strings = [ctypes.create_string_buffer(s) for s in (b"ls", b"-l")]
    arr64 = (ctypes.c_uint64 * 3)(*[_addr(s) for s in strings], 0)
    got = decode.decode(ME, "execve", AUDIT_ARCH_X86_64,
                        (_addr(strings[0]), _addr(arr64), 0, 0, 0, 0))
    assert got == {"pathname": "ls", "argv": '["ls", "-l"]'}
    # i386: 4-byte pointers (only when our buffers sit below 4 GiB can we build one)
    low = [a for a in (_addr(s) for s in strings) if a < 2**32]
    if len(low) == 2:
        arr32 = (ctypes.c_uint32 * 3)(*low, 0)
        got = decode.decode(ME, "execve", AUDIT_ARCH_I386, (low[0], _addr(arr32), 0, 0, 0, 0))
        assert got["argv"] == '["ls", "-l"]'


def test_syscall_names_per_abi():
    assert decode.syscall_name(AUDIT_ARCH_X86_64, 110) == "getppid"
    assert decode.syscall_name(AUDIT_ARCH_I386, 64) == "getppid"
    assert decode.syscall_name(AUDIT_ARCH_X86_64, 0x40000000 | 110) == "getppid"
    assert decode.syscall_name(AUDIT_ARCH_X86_64, 9999) == "syscall_9999"
    assert decode.syscall_name(0x12345678, 1) == "syscall_1"


def _event(**kw) -> Event:
    base = dict(time=0.0, pid=10, tid=10, nr=83, name="mkdir", arch=AUDIT_ARCH_X86_64, ip=0,
                args=(0x1000, 0o755, 0, 0, 0, 0), verdict=actions.ERRNO | 1, handler="deny",
                decoded={"pathname": "/tmp/a \"b\"", "mode": "0755"})
    base.update(kw)
    return Event(**base)


def test_render_lines():
    assert decode.render(_event()) == \
        '[pid 10] mkdir("/tmp/a \\"b\\"", 0755) -> ERRNO(1) EPERM [deny]'
    assert decode.render(_event(tid=11, enforced=False, verdict=actions.KILL_PROCESS,
                                decoded={})) == \
        "[pid 10 tid 11] mkdir(0x1000, 0x1ed) -> KILL_PROCESS (audit) [deny]"
    ev = _event(name="syscall_999", decoded={}, args=(1, 2, 3, 4, 5, 2**64 - 1))
    assert "syscall_999(0x1, 0x2, 0x3, 0x4, 0x5, 0xffffffffffffffff)" in decode.render(ev)
    opened = _event(name="openat", args=(0xFFFFFF9C, 0x1000, 0, 0, 0, 0),
                    decoded={"dirfd": "AT_FDCWD", "pathname": "/x", "flags": "O_RDONLY"})
    assert 'openat(AT_FDCWD, "/x", O_RDONLY) ->' in decode.render(opened)


def test_hooks_load_from_a_file_or_a_module(tmp_path, monkeypatch):
    f = tmp_path / "h.py"
    f.write_text("def on(call):\n    return 5\n")
    assert hooks.load(f"{f}:on")(None) == 5
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "hmod.py").write_text("def on(call):\n    return None\n")
    assert hooks.load("hmod:on")(None) is None
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(TraceError, match="cannot load broken: RuntimeError: boom"):
        hooks.load("broken:on")
    with pytest.raises(TraceError, match="has no function 'nope'"):
        hooks.load(f"{f}:nope")
    with pytest.raises(TraceError, match="no such file"):
        hooks.load(f"{tmp_path}/missing.py:on")


def test_hook_replies_normalize():
    assert hooks.normalize(None) is None
    assert hooks.normalize(-1) == hooks.Skip(-1)
    assert hooks.normalize(hooks.Modify(nr=3)) == hooks.Modify(nr=3)
    for bad in ("x", True, 1.5):
        with pytest.raises(TypeError):
            hooks.normalize(bad)
