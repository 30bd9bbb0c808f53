"""The shipped policies (filters/*.toml): each checks, says what it is for, decides as its header
promises — on the BPF machine, against the real kernel running its libseccomp export, and for
real processes run under that kernel filter."""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import pytest

from sysdispatch.policy import parse
from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.policy import _arch
from sysdispatch.seccomp import actions as A
from sysdispatch.seccomp.data import AUDIT_ARCH_I386, SeccompData
from tests.conftest import REPO, need_root

FILTERS = REPO / "filters"
SHIPPED = ["default", "container", "no-network", "readonly-fs", "fault-inject", "dispatch-demo"]
ERRNO = A.ERRNO


def nr(name: str) -> int:
    return _arch.syscall_number("x86_64", name)


@pytest.fixture(scope="module")
def loaded():
    cache: dict[str, LoadedPolicy] = {}

    def get(name: str) -> LoadedPolicy:
        if name not in cache:
            cache[name] = LoadedPolicy.from_file(FILTERS / f"{name}.toml")
        return cache[name]
    return get


def call(lp: LoadedPolicy, name: str, *args: int, arch: int = 0xC000003E) -> int:
    return lp.decide(SeccompData(nr(name), arch, 0, args)).ret


@pytest.mark.parametrize("name", SHIPPED)
def test_each_policy_checks_and_has_a_header(name, loaded):
    path = FILTERS / f"{name}.toml"
    head = path.read_text().splitlines()
    assert head[0].startswith(f"# {name}.toml — ") and len(head[0]) > 30
    assert sum(1 for line in head[:12] if line.startswith("#")) >= 4   # says what it is for
    lp = loaded(name)
    assert lp.policy.name == name and lp.policy.description
    assert set(FILTERS.glob("*.toml")) == {FILTERS / f"{n}.toml" for n in SHIPPED}


def test_default_is_shipped_in_the_package_once():
    link = FILTERS / "default.toml"
    packaged = importlib.resources.files("sysdispatch") / "data" / "default.toml"
    assert link.is_symlink() and link.resolve() == Path(str(packaged)).resolve()
    assert packaged.read_text() == link.read_text()
    assert parse.default_path().resolve() == link.resolve()
    assert parse.load_default() == parse.load(link.resolve())


def test_default_allows_everything_and_logs_the_dangerous(loaded):
    lp = loaded("default")
    dangerous = {"ptrace", "mount", "umount2", "bpf", "init_module", "finit_module",
                 "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff",
                 "pivot_root", "setns", "unshare", "keyctl", "add_key", "request_key",
                 "perf_event_open", "process_vm_writev", "open_by_handle_at"}
    for number, name in _arch.syscalls("x86_64").items():
        d = lp.decide(SeccompData(number, args=(1, 2, 3, 4, 5, 6)))
        assert d.ret in (A.ALLOW, A.LOG), name
        if name in dangerous:
            assert d.ret == A.LOG and d.path == ("syscall_entry",
                                                 f"tail_call syscalls_x86_64[{number}]", "log")
    assert call(lp, "read") == A.ALLOW
    # per-arch tables: 101 is ptrace on x86_64 but ioperm on i386 (both logged); i386's ptrace
    # is 26, which is x86_64's msync
    assert lp.decide(SeccompData(26, AUDIT_ARCH_I386)).ret == A.LOG
    assert lp.decide(SeccompData(26)).ret == A.ALLOW
    assert lp.decide(SeccompData(39, AUDIT_ARCH_I386)).ret == A.ALLOW   # i386 mkdir
    assert lp.decide(SeccompData(1, 0x12345678)).ret == A.LOG          # unknown arch: logged


def test_container(loaded):
    lp = loaded("container")
    assert call(lp, "read") == A.ALLOW and call(lp, "execve") == A.ALLOW
    for denied in ("mount", "ptrace", "bpf", "unshare", "setns", "init_module", "kexec_load"):
        assert call(lp, denied) == ERRNO | 1, denied
    assert call(lp, "clone", 0x3D0F00) == A.ALLOW                      # a thread
    assert call(lp, "clone", 0x11) == A.ALLOW                          # fork (SIGCHLD)
    for flag in (0x10000000, 0x20000000, 0x40000000, 0x20000, 0x80):   # NEWUSER .. NEWTIME
        assert call(lp, "clone", 0x11 | flag) == ERRNO | 1, hex(flag)
    assert call(lp, "clone3") == ERRNO | 38
    assert call(lp, "socket", 2) == A.ALLOW and call(lp, "socket", 1) == A.ALLOW
    assert call(lp, "socket", 17) == ERRNO | 97                        # AF_PACKET
    assert call(lp, "socket", (1 << 32) | 2) == ERRNO | 97             # no aliasing of AF_INET
    assert call(lp, "ioctl", 1, 0x5412) == ERRNO | 1                   # TIOCSTI
    assert call(lp, "ioctl", 1, (1 << 32) | 0x5412) == ERRNO | 1       # the kernel takes u32 cmd
    assert call(lp, "ioctl", 1, 0x5401) == A.ALLOW                     # TCGETS
    assert call(lp, "personality", 0xFFFFFFFF) == A.ALLOW
    assert call(lp, "personality", 0x0400000) == ERRNO | 1             # READ_IMPLIES_EXEC
    assert lp.decide(SeccompData(0x40000000 | 0)).ret == A.KILL_PROCESS   # x32 read
    assert lp.decide(SeccompData(3, AUDIT_ARCH_I386)).ret == A.KILL_PROCESS


def test_no_network(loaded):
    lp = loaded("no-network")
    assert call(lp, "socket", 1) == A.ALLOW
    for family in (2, 10, 16, 17, 0, 45, 1000):
        assert call(lp, "socket", family) == ERRNO | 13, family
    assert call(lp, "socketpair", 1) == A.ALLOW
    assert call(lp, "io_uring_setup") == ERRNO | 38
    assert call(lp, "connect") == A.ALLOW


def test_readonly_fs(loaded):
    lp = loaded("readonly-fs")
    O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_CLOEXEC, O_DIRECTORY = 1, 2, 0o100, 0o1000, 0o2000000, 0o200000
    assert call(lp, "openat", 0, 0, O_CLOEXEC | O_DIRECTORY) == A.ALLOW
    for flags in (O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_RDWR | O_CREAT, 3):
        assert call(lp, "openat", 0, 0, flags) == ERRNO | 30, oct(flags)
        assert call(lp, "open", 0, flags) == ERRNO | 30, oct(flags)
    for name in ("unlink", "rename", "mkdir", "chmod", "truncate", "creat", "setxattr"):
        assert call(lp, name) == ERRNO | 30, name
    assert call(lp, "write", 1) == A.ALLOW and call(lp, "read") == A.ALLOW


def test_fault_inject_counts_in_its_map():
    lp = LoadedPolicy.from_file(FILTERS / "fault-inject.toml")
    rets = [call(lp, "openat") for _ in range(5)]
    assert rets == [A.ALLOW, A.ALLOW, ERRNO | 5, A.ALLOW, A.ALLOW]
    assert call(lp, "read") == A.ALLOW
    assert int.from_bytes(lp.compiled.maps["opens"][0], "little") == 5
    lp.compiled.maps["opens"][0] = (1).to_bytes(8, "little")          # reset from outside
    assert [call(lp, "openat") for _ in range(2)] == [A.ALLOW, ERRNO | 5]


def test_dispatch_demo_paths(loaded):
    lp = loaded("dispatch-demo")
    d = lp.decide(SeccompData(nr("openat"), args=(0xFFFFFF9C, 0, 0o100)))
    assert d.describe() == ("syscall_entry -> tail_call syscalls[257] -> openat_rules -> "
                            "return ERRNO(13)")
    d = lp.decide(SeccompData(nr("openat"), args=(0xFFFFFF9C, 0, 0o200000)))
    assert d.ret == A.LOG
    d = lp.decide(SeccompData(nr("socket"), args=(10,)))
    assert d.describe() == ("syscall_entry -> tail_call syscalls[41] -> socket_by_family -> "
                            "tail_call families[10] -> log -> return LOG")
    assert d.tail_calls == 2
    assert call(lp, "socket", 17) == ERRNO | 97
    assert call(lp, "kill", 1, 9) == ERRNO | 1 and call(lp, "kill", 2, 9) == A.ALLOW
    assert call(lp, "ptrace") == A.LOG and call(lp, "getpid") == A.ALLOW


# --- the real kernel ---------------------------------------------------------------------------

RULES_ONLY = ["default", "container", "no-network", "readonly-fs", "dispatch-demo"]


@pytest.mark.parametrize("name", RULES_ONLY)
def test_kernel_agrees(name):
    """The kernel running the policy's libseccomp export decides every invocation as the
    compiled policy does (the bridge's sentinel-TRACE oracle; the syscalls never run)."""
    need_root()
    from sysdispatch.policy.against_kernel import against_kernel
    report = against_kernel(parse.load(FILTERS / f"{name}.toml"), cases=60)
    assert report.cases >= 60 and not report.divergences, [str(d) for d in report.divergences]


def test_real_processes_under_the_policies(tmp_path, capfd):
    need_root()
    from sysdispatch.policy.kernel import run_command
    pol = {n: parse.load(FILTERS / f"{n}.toml") for n in ("readonly-fs", "no-network", "container")}
    target = tmp_path / "new"
    assert run_command(pol["readonly-fs"], ["touch", str(target)]) == 1
    assert not target.exists() and "Read-only file system" in capfd.readouterr().err
    assert run_command(pol["readonly-fs"], ["cat", os.devnull]) == 0
    net = "import socket; socket.socket(socket.AF_INET)"
    assert run_command(pol["no-network"], ["python3", "-c", net]) == 1
    assert "Permission denied" in capfd.readouterr().err
    unix = "import socket; socket.socket(socket.AF_UNIX)"
    assert run_command(pol["no-network"], ["python3", "-c", unix]) == 0
    assert run_command(pol["container"], ["python3", "-c", "print(6 * 7)"]) == 0
    assert "42" in capfd.readouterr().out
    assert run_command(pol["container"], ["unshare", "-U", "true"]) == 1
    assert "Operation not permitted" in capfd.readouterr().err
