"""The low-level ptrace layer on real processes: the stop handshake, syscall info and registers,
skipping a syscall, SIGSYS siginfo from a seccomp TRAP, and errors."""

from __future__ import annotations

import ctypes
import errno
import os
import signal

import pytest

from sysdispatch.seccomp import arch, cfilter, oracle
from sysdispatch.trace import ptrace as pt
from sysdispatch.vm import cbpf

GETPPID = arch.X86_64.syscall_number("getppid")
ARGS = (11, 22, 33, 44, 55, 0xFFFF_FFFF_FFFF_FFFE)


def _libc_syscall():
    libc = ctypes.CDLL(None, use_errno=True)
    sc = libc.syscall
    sc.restype = ctypes.c_long
    sc.argtypes = [ctypes.c_long] * 7
    return libc, sc


def traced_child(body) -> int:
    """Fork a child that stops itself under ptrace, then runs ``body`` and exits with its
    result; return its pid once it is in the SIGSTOP stop."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            pt.traceme()
            os.kill(os.getpid(), signal.SIGSTOP)
            code = body()
        finally:
            os._exit(code)
    _, status = pt.wait(pid)
    assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP
    pt.setoptions(pid, pt.PTRACE_O_TRACESYSGOOD | pt.PTRACE_O_EXITKILL)
    return pid


def until_syscall(pid: int, nr: int, op: int) -> pt.SyscallInfo:
    while True:
        pt.syscall(pid)
        _, status = pt.wait(pid)
        assert pt.is_syscall_stop(status), hex(status)
        info = pt.get_syscall_info(pid)
        if info.op == op and (op != pt.PTRACE_SYSCALL_INFO_ENTRY or info.nr == nr):
            return info


def test_entry_info_registers_and_skipping_a_syscall():
    libc, sc = _libc_syscall()

    def body():
        r = sc(GETPPID, *[ctypes.c_long(a).value for a in ARGS])
        return 0 if (r, ctypes.get_errno()) == (-1, errno.EPERM) else 3

    pid = traced_child(body)
    try:
        info = until_syscall(pid, GETPPID, pt.PTRACE_SYSCALL_INFO_ENTRY)
        assert (info.nr, info.args, info.arch) == (GETPPID, ARGS, arch.X86_64.audit)
        regs = pt.getregs(pid)
        assert regs.orig_rax == GETPPID and regs.syscall_args == ARGS
        assert regs.rip == info.instruction_pointer and regs.rsp == info.stack_pointer
        pt.skip_syscall(pid, -errno.EPERM)
        assert pt.getregs(pid).orig_rax == 2**64 - 1
        out = until_syscall(pid, GETPPID, pt.PTRACE_SYSCALL_INFO_EXIT)
        assert (out.rval, out.is_error) == (-errno.EPERM, True)
        pt.cont(pid)
        _, status = pt.wait(pid)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        oracle._reap(pid)


def test_sigsys_siginfo_of_a_seccomp_trap():
    raw = cbpf.encode(cfilter.assemble(
        "A = sys_number\nif (A == getppid) goto t\nreturn ALLOW\nt: return TRAP(42)\n"))
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = oracle._SockFprog(len(raw) // 8, ctypes.addressof(buf))
    libc, sc = _libc_syscall()
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4

    def body():
        libc.prctl(oracle.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        sc(arch.X86_64.syscall_number("seccomp"), 1, 0, ctypes.addressof(fprog), 0, 0, 0)
        sc(GETPPID, 0, 0, 0, 0, 0, 0)
        return 5

    pid = traced_child(body)
    try:
        pt.cont(pid)
        _, status = pt.wait(pid)
        assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSYS
        info = pt.getsiginfo(pid)
        assert (info.signo, info.code, info.errno) == (signal.SIGSYS, pt.SYS_SECCOMP, 42)
        assert (info.syscall, info.arch) == (GETPPID, arch.X86_64.audit)
        assert info.call_addr == pt.getregs(pid).rip  # just after the syscall instruction
        made = pt.SigInfo.sigsys(GETPPID, arch.X86_64.audit, info.call_addr, 42)
        assert bytes(made)[:32] == bytes(info)[:32]
    finally:
        oracle._reap(pid)


def test_errors_name_the_request_and_pid():
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    with pytest.raises(pt.PtraceError) as exc:
        pt.getregs(child)
    assert exc.value.errno == errno.ESRCH
    assert str(exc.value) == f"ptrace(GETREGS, pid {child}): No such process"
