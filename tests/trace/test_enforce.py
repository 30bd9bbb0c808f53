"""Every action, enforced by the tracer, against the kernel enforcing the same verdict.

Each case runs a small C program twice: under a real kernel filter returning the verdict (no
tracer), and under ``Tracer`` with a policy returning it. What the program prints (results,
the SIGSYS siginfo its SA_SIGINFO handler sees) and its shell status must be the same.
"""

from __future__ import annotations

import errno
import os

import pytest

from sysdispatch.seccomp import actions
from sysdispatch.seccomp.arch import X86_64
from sysdispatch.trace.hooks import Modify, Skip

from tracer_helpers import (GETPGID, GETPID, GETPPID, classic_filter, cprog, needs_root_gcc,
                            policy_file, run_kernel, run_traced)

pytestmark = needs_root_gcc


def both(tmp_path, literal: str, ret: int, argv: list[str]):
    """(kernel run, traced run) of ``argv`` with getppid returning ``ret`` / ``literal``."""
    kernel = run_kernel([classic_filter({GETPPID: ret})], argv)
    traced = run_traced(policy_file(tmp_path, {"getppid": literal}), argv, record=True)
    return kernel, traced


@pytest.mark.parametrize("literal, ret, expect", [
    ("errno(13)", actions.ERRNO | 13, "ret=-13"),
    ("errno(0)", actions.ERRNO | 0, "ret=0"),          # skipped, returns 0
    ("errno(5000)", actions.ERRNO | 5000, "ret=-4095"),  # capped at MAX_ERRNO
])
def test_errno_like_kernel(tmp_path, literal, ret, expect):
    kernel, traced = both(tmp_path, literal, ret, [cprog("sigsys"), "default", str(GETPPID)])
    assert kernel.stdout == traced.stdout == f"{expect}\nalive\n"
    assert kernel.status == traced.status == 0


def test_trap_siginfo_like_kernel(tmp_path):
    """TRAP(7) with a handler: SIGSYS with si_code SYS_SECCOMP, si_errno 7, si_syscall,
    si_arch and si_call_addr just past the syscall instruction; rax holds the number."""
    argv = [cprog("sigsys"), "handler", str(GETPPID)]
    kernel, traced = both(tmp_path, "trap(7)", actions.TRAP | 7, argv)
    expected = (f"SIGSYS signo=31 code=1 errno=7 syscall={GETPPID} arch=0xc000003e "
                f"call_addr=after_syscall rax={GETPPID}\nret={GETPPID}\nalive\n")
    assert kernel.stdout == expected
    assert traced.stdout == expected and traced.status == 0
    assert [actions.describe(e.verdict) for e in traced.events if e.name == "getppid"] == \
        ["TRAP(7)"]


@pytest.mark.parametrize("mode", ["block", "ignore", "default"])
def test_trap_forced_like_kernel(tmp_path, mode):
    """The kernel forces a TRAP's SIGSYS: blocked or ignored, it is unblocked and its handler
    reset, so the process dies by SIGSYS (159) without running on."""
    argv = [cprog("sigsys"), mode, str(GETPPID)]
    kernel, traced = both(tmp_path, "trap(7)", actions.TRAP | 7, argv)
    assert kernel.status == traced.status == 159
    assert kernel.stdout == traced.stdout == ""


@pytest.mark.parametrize("mode", ["handler", "ignore", "block", "default"])
def test_kill_process_like_kernel(tmp_path, mode):
    """KILL_PROCESS: death by SIGSYS whatever the program did with SIGSYS (a handler is
    reset by the emulation), status 159, and nothing after the call runs."""
    argv = [cprog("sigsys"), mode, str(GETPPID)]
    kernel, traced = both(tmp_path, "kill_process", actions.KILL_PROCESS, argv)
    assert kernel.status == traced.status == 159
    assert kernel.stdout == traced.stdout == ""
    assert traced.tracer.enforcer.killed == set()    # a real SIGSYS, not the SIGKILL fallback


def test_unknown_action_kills_like_kernel(tmp_path):
    weird = 0x12340000
    extra = f'[handlers.weird]\nasm = """\nw0 = {weird:#x}\nexit\n"""\n'
    argv = [cprog("sigsys"), "handler", str(GETPPID)]
    kernel = run_kernel([classic_filter({GETPPID: weird})], argv)
    traced = run_traced(policy_file(tmp_path, {"getppid": "weird"}, extra=extra), argv)
    assert kernel.status == traced.status == 159
    assert kernel.stdout == traced.stdout == ""


@pytest.mark.parametrize("who, status, out", [
    ("worker", 0, "worker calling\nmain joined\n"),
    ("main", 3, "main calling\nworker alive after main\n"),
])
def test_kill_thread_ends_one_thread_like_kernel(tmp_path, who, status, out):
    argv = [cprog("threads"), who, str(GETPPID)]
    kernel, traced = both(tmp_path, "kill_thread", actions.KILL_THREAD, argv)
    assert kernel.stdout == traced.stdout == out
    assert kernel.status == traced.status == status


def test_kill_thread_of_last_thread_kills_process(tmp_path):
    argv = [cprog("sigsys"), "handler", str(GETPPID)]
    kernel, traced = both(tmp_path, "kill_thread", actions.KILL_THREAD, argv)
    assert kernel.status == traced.status == 159 and traced.stdout == ""


@pytest.mark.parametrize("literal, ret", [("trace(5)", actions.TRACE | 5),
                                          ("user_notif", actions.USER_NOTIF)])
def test_trace_and_user_notif_without_hook_are_enosys(tmp_path, literal, ret):
    kernel, traced = both(tmp_path, literal, ret, [cprog("sigsys"), "default", str(GETPPID)])
    assert kernel.stdout == traced.stdout == f"ret={-errno.ENOSYS}\nalive\n"


def test_hook_skips_runs_and_modifies(tmp_path):
    """TRACE with a hook: Skip gives the program the hook's value; Modify changes arguments
    (getpgid(999999) -> getpgid(0) succeeds) or the number; the policy is asked again about a
    changed call (getpgid turned into getppid: ERRNO(13) from the policy)."""
    pol = policy_file(tmp_path, {"getppid": "errno(13)", "getpgid": "trace(9)",
                                 "getpid": "user_notif"})
    seen = []

    def hook(call):
        seen.append((call.name, call.action, call.data, call.args[0]))
        if call.action == "user_notif":
            return Skip(4242)
        if call.args[0] == 1:
            return Modify(args=(0,))
        if call.args[0] == 2:
            return Modify(nr=GETPPID)
        return None

    prog = cprog("sigsys")
    run = lambda nr, a0: run_traced(pol, [prog, "default", str(nr), str(a0)], hook=hook).stdout
    assert run(GETPID, 0) == "ret=4242\nalive\n"
    assert run(GETPGID, 999999) == f"ret={-errno.ESRCH}\nalive\n"      # ran unchanged
    assert run(GETPGID, 1).startswith("ret=") and int(run(GETPGID, 1)[4:].split()[0]) > 0
    assert run(GETPGID, 2) == f"ret={-errno.EACCES}\nalive\n"
    assert ("getpid", "user_notif", 0, 0) in seen and ("getpgid", "trace", 9, 999999) in seen


def test_failing_hook_is_reported_and_enosys(tmp_path):
    pol = policy_file(tmp_path, {"getppid": "trace(1)"})
    run = run_traced(pol, [cprog("sigsys"), "default", str(GETPPID)],
                     hook=lambda call: "nonsense")
    assert run.stdout == f"ret={-errno.ENOSYS}\nalive\n"
    assert "--on-trace hook failed: TypeError" in run.lines


def test_audit_changes_nothing_and_reports(tmp_path):
    """--audit: a KILL_PROCESS policy, yet the program runs exactly as untraced, and the
    would-be verdict is reported (enforced=False)."""
    pol = policy_file(tmp_path, {"getppid": "kill_process"})
    run = run_traced(pol, [cprog("sigsys"), "handler", str(GETPPID)], audit=True, record=True)
    assert run.status == 0
    assert run.stdout == f"ret={os.getpid()}\nalive\n"   # the traced program's parent: us
    (ev,) = [e for e in run.events if e.name == "getppid"]
    assert ev.verdict == actions.KILL_PROCESS and not ev.enforced
    assert "getppid() -> KILL_PROCESS (audit)" in run.lines


def test_denied_mkdir_never_runs_under_storms(tmp_path):
    """8 threads, 4 forks and a vfork per level, two levels of execve, mkdir/mkdirat/syscall()
    and i386 mkdir: a policy denying mkdir lets no directory appear."""
    target = tmp_path / "storm"
    target.mkdir()
    pol = policy_file(tmp_path, {"mkdir": "errno(EPERM)", "mkdirat": "errno(EPERM)"})
    run = run_traced(pol, [cprog("storm"), str(target), "2"])
    assert run.status == 0
    lines = run.stdout.split("\n")[:-1]
    assert len(lines) == 31 and set(lines) == {"made 0"}     # 1 + 5 + 25 processes
    assert list(target.iterdir()) == []


def test_syscall_numbers_are_libseccomps():
    assert (GETPPID, GETPID, GETPGID) == tuple(X86_64.syscall_number(n)
                                               for n in ("getppid", "getpid", "getpgid"))


def test_kill_when_the_handler_cannot_be_reset(tmp_path):
    """The program keeps a SIGSYS handler and its own filter forbids rt_sigaction, so the
    emulation cannot reset the handler: the process is killed with SIGKILL instead, and the
    status still says SIGSYS (159), as the kernel's kill does."""
    argv = [cprog("own_filter"), "lock"]
    kernel = run_kernel([classic_filter({GETPPID: actions.KILL_PROCESS})], argv)
    traced = run_traced(policy_file(tmp_path, {"getppid": "kill_process"}), argv)
    assert kernel.status == traced.status == 159
    assert kernel.stdout == traced.stdout == "installed\ngetpid -77\ngetuid -5\n"
    assert len(traced.tracer.enforcer.killed) == 1
