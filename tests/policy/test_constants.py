"""The constant table against the facts of this machine: its C headers (through gcc) and Python's
os/socket/mmap/signal/errno modules. This machine is x86_64, so PER_ARCH is checked for x86_64."""

from __future__ import annotations

import errno
import mmap
import os
import platform
import shutil
import signal
import socket
import subprocess

import pytest

from sysdispatch.errors import PolicyError
from sysdispatch.policy import constants

LIBC_HEADERS = ("fcntl.h", "sys/socket.h", "netinet/in.h", "sched.h", "linux/sched.h", "sys/mman.h",
           "sys/mount.h", "sys/prctl.h", "sys/ptrace.h", "linux/seccomp.h", "time.h",
           "sys/stat.h", "signal.h", "sys/ioctl.h", "errno.h", "stdio.h")
# glibc spells ptrace requests as enums; the kernel's own headers have them as macros
UAPI_HEADERS = ("linux/ptrace.h", "linux/mman.h", "stdio.h")
# glibc defines O_LARGEFILE as 0 on 64-bit targets (the kernel sets it itself there); the table
# holds the kernel's value, which a 32-bit caller passes.
USERSPACE_DIFFERS = {"O_LARGEFILE"}


def _x86_64_values() -> dict[str, int]:
    vals = dict(constants.CONSTANTS)
    vals.update({k: v["x86_64"] for k, v in constants.PER_ARCH.items()})
    return vals


@pytest.fixture(scope="module")
def c_values(tmp_path_factory) -> dict[str, int]:
    if shutil.which("gcc") is None or platform.machine() != "x86_64":
        pytest.skip("needs gcc on x86_64 to read the C headers")
    d = tmp_path_factory.mktemp("consts")
    names = sorted(_x86_64_values())
    body = "".join(f'#ifdef {n}\nprintf("{n} %lld\\n", (long long)({n}));\n#endif\n' for n in names)
    found: dict[str, int] = {}
    for i, headers in enumerate((LIBC_HEADERS, UAPI_HEADERS)):
        src = "#define _GNU_SOURCE\n" + "".join(f"#include <{h}>\n" for h in headers)
        (d / f"c{i}.c").write_text(src + "int main(void){\n" + body + "return 0;}\n")
        subprocess.run(["gcc", "-w", "-o", str(d / f"c{i}"), str(d / f"c{i}.c")], check=True)
        out = subprocess.run([str(d / f"c{i}")], check=True, capture_output=True, text=True).stdout
        for n, v in (line.split() for line in out.splitlines()):
            found.setdefault(n, int(v))
    return found


def test_table_agrees_with_c_headers(c_values):
    ours = _x86_64_values()
    wrong = {n: (ours[n], v) for n, v in c_values.items()
             if n not in USERSPACE_DIFFERS and ours[n] != v}
    assert not wrong, f"ours vs headers: {wrong}"
    # most of the table is checked this way (the rest: kernel-only names such as AF_MCTP on an
    # older libc, or enums without a #define)
    assert len(c_values) >= 0.95 * len(ours), sorted(set(ours) - set(c_values))


def test_table_agrees_with_python_modules():
    ours = _x86_64_values()
    checked = 0
    for mod, prefixes in ((os, ("O_",)), (socket, ("AF_", "SOCK_", "IPPROTO_")),
                          (mmap, ("PROT_", "MAP_")), (signal, ("SIG",)), (errno, ("E",))):
        for n in dir(mod):
            if n.startswith(prefixes) and n in ours and n not in USERSPACE_DIFFERS \
                    and isinstance(getattr(mod, n), int):
                assert ours[n] == int(getattr(mod, n)), n
                checked += 1
    assert checked > 150


def test_lookup():
    assert constants.lookup("O_CREAT") == 0o100
    assert constants.lookup("EACCES") == errno.EACCES
    assert constants.lookup("O_DIRECTORY", ["x86_64", "x32"]) == 0o200000
    assert constants.lookup("O_DIRECTORY", ["aarch64"]) == 0o40000
    with pytest.raises(PolicyError, match="differs between architectures"):
        constants.lookup("O_NOFOLLOW", ["x86_64", "aarch64"])
    with pytest.raises(PolicyError, match="'MAP_32BIT' is not defined for aarch64"):
        constants.lookup("MAP_32BIT", ["aarch64"])
    with pytest.raises(PolicyError, match="unknown constant 'O_CREATE'"):
        constants.lookup("O_CREATE")
    assert "AF_INET" in constants.names_for(2, "AF_")
