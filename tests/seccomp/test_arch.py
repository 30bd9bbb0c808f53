"""Architectures: AUDIT_ARCH values, syscall tables from libseccomp, and the kernel's view of
x86_64 numbers."""

from __future__ import annotations

import os

import pyseccomp
import pytest

from sysdispatch.seccomp import arch, cfilter, data, oracle
from sysdispatch.vm import cbpf


def test_audit_values_agree_with_libseccomp_and_the_struct_layout():
    assert arch.X86_64.audit == data.AUDIT_ARCH_X86_64 == pyseccomp.Arch.X86_64
    assert arch.I386.audit == data.AUDIT_ARCH_I386 == pyseccomp.Arch.X86
    assert arch.AARCH64.audit == data.AUDIT_ARCH_AARCH64 == pyseccomp.Arch.AARCH64
    # x32 reports x86_64's AUDIT_ARCH; libseccomp's x32 token is something else.
    assert arch.X32.audit == data.AUDIT_ARCH_X86_64 != arch.X32.scmp
    assert arch.by_audit(data.AUDIT_ARCH_X86_64) is arch.X86_64


@pytest.mark.parametrize("a", arch.ARCHES, ids=lambda a: a.name)
def test_tables_are_libseccomps_and_invert_exactly(a):
    table = a.table
    assert len(table) > 250
    for nr, name in table.items():
        assert a.syscall_number(name) == nr
        assert pyseccomp.resolve_syscall(a.scmp, nr).decode() == name
    assert all(nr & data.X32_SYSCALL_BIT for nr in table) == (a is arch.X32)


def test_i386_socket_calls_resolve_to_their_real_numbers():
    # libseccomp's name lookup answers with a negative pseudo number for the multiplexed socket
    # calls; the number -> name scan finds the direct syscalls Linux has had since 4.3.
    assert pyseccomp.resolve_syscall(arch.I386.scmp, "socket") < 0
    nr = arch.I386.syscall_number("socket")
    assert nr > 0 and arch.I386.syscall_name(nr) == "socket"
    assert arch.I386.syscall_number("socketcall") != nr


def test_names_and_aliases():
    assert arch.by_name("amd64") is arch.X86_64 and arch.by_name("ARM64") is arch.AARCH64
    assert arch.by_name("x86") is arch.I386
    with pytest.raises(ValueError, match="unknown architecture 'sparc'"):
        arch.by_name("sparc")
    assert arch.native() is arch.X86_64
    assert arch.X86_64.resolve("0x3b") == 59 == arch.X86_64.resolve("execve")
    with pytest.raises(ValueError, match="unknown syscall 'nosuch' on x86_64"):
        arch.X86_64.resolve("nosuch")
    assert arch.for_number(arch.X86_64, arch.X32.resolve("read")) is arch.X32


def _errno_under_filter(name: str, call) -> int:
    """In a child, install 'ERRNO(77) if nr == <our number for name>' and make the call through
    Python's os module; the errno it fails with says whether the kernel saw our number."""
    text = f"A = sys_number\nif (A != {name}) goto ok\nreturn ERRNO(77)\nok: return ALLOW\n"
    raw = cbpf.encode(cfilter.assemble(text))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
            buf = ctypes.create_string_buffer(raw, len(raw))
            fprog = oracle._SockFprog(len(raw) // 8, ctypes.addressof(buf))
            assert libc.prctl(oracle.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            # PR_SET_SECCOMP (22), SECCOMP_MODE_FILTER (2)
            assert libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0) == 0
            try:
                call()
                code = 0
            except OSError as exc:
                code = exc.errno
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status)


@pytest.mark.parametrize("name,call,want", [
    ("uname", os.uname, 77), ("getcwd", os.getcwd, 77),
    ("getpriority", lambda: os.getpriority(os.PRIO_PROCESS, 0), 77),
    ("getcwd", os.uname, 0),  # the control: another syscall is not caught
])
def test_x86_64_numbers_are_the_ones_the_kernel_sees(name, call, want):
    assert _errno_under_filter(name, call) == want
