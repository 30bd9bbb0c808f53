"""Symbolic constants a policy may use in conditions and table keys (O_CREAT, AF_INET, EPERM, ...).

A fact table of Linux UAPI values, written down from the kernel headers named beside each group
(include/uapi/...; ``asm-generic`` is what x86, x32 and arm64 use). Only values that are the same
on every architecture this project emulates are in :data:`CONSTANTS`; the few that differ between
x86 and arm64 are in :data:`PER_ARCH` and resolve only when every architecture of the policy agrees.
Error numbers come from the standard library's :mod:`errno` (asm-generic/errno*.h on Linux, the
same on x86 and arm64). tests/policy/test_constants.py checks the table against the C headers of
this machine (through gcc) and against Python's os/socket/mmap/signal modules.
"""

from __future__ import annotations

import errno as _errno
from typing import Iterable

from ..errors import PolicyError


def _group(prefix: str, **values: int) -> dict[str, int]:
    return {prefix + k: v for k, v in values.items()}


CONSTANTS: dict[str, int] = {}
_add = CONSTANTS.update

# open(2) flags — include/uapi/asm-generic/fcntl.h (octal, as written there)
_add(_group("O_", RDONLY=0, WRONLY=1, RDWR=2, ACCMODE=0o3, CREAT=0o100, EXCL=0o200, NOCTTY=0o400,
            TRUNC=0o1000, APPEND=0o2000, NONBLOCK=0o4000, NDELAY=0o4000, DSYNC=0o10000,
            ASYNC=0o20000, NOATIME=0o1000000, CLOEXEC=0o2000000, SYNC=0o4010000,
            RSYNC=0o4010000, PATH=0o10000000))
_add({"FASYNC": 0o20000})
# *at() flags and the "current directory" fd — include/uapi/linux/fcntl.h
_add(_group("AT_", FDCWD=-100, SYMLINK_NOFOLLOW=0x100, REMOVEDIR=0x200, EACCESS=0x200,
            SYMLINK_FOLLOW=0x400, NO_AUTOMOUNT=0x800, EMPTY_PATH=0x1000, RECURSIVE=0x8000))
# fcntl(2) commands — include/uapi/asm-generic/fcntl.h (64-bit F_GETLK) and linux/fcntl.h
_add(_group("F_", DUPFD=0, GETFD=1, SETFD=2, GETFL=3, SETFL=4, GETLK=5, SETLK=6, SETLKW=7,
            SETOWN=8, GETOWN=9, SETSIG=10, GETSIG=11, SETLEASE=1024, GETLEASE=1025, NOTIFY=1026,
            DUPFD_CLOEXEC=1030, SETPIPE_SZ=1031, GETPIPE_SZ=1032, ADD_SEALS=1033, GET_SEALS=1034))
_add({"FD_CLOEXEC": 1})
# address families — include/linux/socket.h (the kernel ABI; glibc's PF_* match)
_add(_group("AF_", UNSPEC=0, UNIX=1, LOCAL=1, INET=2, AX25=3, IPX=4, APPLETALK=5, NETROM=6,
            BRIDGE=7, ATMPVC=8, X25=9, INET6=10, ROSE=11, DECnet=12, NETBEUI=13, SECURITY=14,
            KEY=15, NETLINK=16, ROUTE=16, PACKET=17, ASH=18, ECONET=19, ATMSVC=20, RDS=21,
            SNA=22, IRDA=23, PPPOX=24, WANPIPE=25, LLC=26, IB=27, MPLS=28, CAN=29, TIPC=30,
            BLUETOOTH=31, IUCV=32, RXRPC=33, ISDN=34, PHONET=35, IEEE802154=36, CAIF=37,
            ALG=38, NFC=39, VSOCK=40, KCM=41, QIPCRTR=42, SMC=43, XDP=44, MCTP=45))
# socket types and type flags — include/linux/net.h (SOCK_NONBLOCK = O_NONBLOCK, SOCK_CLOEXEC =
# O_CLOEXEC; only MIPS differs, which is not emulated)
_add(_group("SOCK_", STREAM=1, DGRAM=2, RAW=3, RDM=4, SEQPACKET=5, DCCP=6, PACKET=10,
            NONBLOCK=0o4000, CLOEXEC=0o2000000))
# protocols — include/uapi/linux/in.h, in6.h
_add(_group("IPPROTO_", IP=0, ICMP=1, IGMP=2, TCP=6, UDP=17, IPV6=41, ICMPV6=58, SCTP=132,
            UDPLITE=136, RAW=255, MPTCP=262))
# clone(2)/unshare(2)/setns(2) flags — include/uapi/linux/sched.h
_add(_group("CLONE_", NEWTIME=0x80, VM=0x100, FS=0x200, FILES=0x400, SIGHAND=0x800,
            PIDFD=0x1000, PTRACE=0x2000, VFORK=0x4000, PARENT=0x8000, THREAD=0x10000,
            NEWNS=0x20000, SYSVSEM=0x40000, SETTLS=0x80000, PARENT_SETTID=0x100000,
            CHILD_CLEARTID=0x200000, DETACHED=0x400000, UNTRACED=0x800000,
            CHILD_SETTID=0x1000000, NEWCGROUP=0x2000000, NEWUTS=0x4000000, NEWIPC=0x8000000,
            NEWUSER=0x10000000, NEWPID=0x20000000, NEWNET=0x40000000, IO=0x80000000,
            CLEAR_SIGHAND=0x100000000, INTO_CGROUP=0x200000000))
_add({"CSIGNAL": 0xFF})
# mmap(2)/mprotect(2) — include/uapi/asm-generic/mman-common.h and asm-generic/mman.h
_add(_group("PROT_", NONE=0, READ=1, WRITE=2, EXEC=4, SEM=8, GROWSDOWN=0x01000000,
            GROWSUP=0x02000000))
_add(_group("MAP_", SHARED=1, PRIVATE=2, SHARED_VALIDATE=3, TYPE=0xF, FIXED=0x10,
            ANONYMOUS=0x20, ANON=0x20, GROWSDOWN=0x100, DENYWRITE=0x800, EXECUTABLE=0x1000,
            LOCKED=0x2000, NORESERVE=0x4000, POPULATE=0x8000, NONBLOCK=0x10000, STACK=0x20000,
            HUGETLB=0x40000, SYNC=0x80000, FIXED_NOREPLACE=0x100000, UNINITIALIZED=0x4000000))
# mount(2)/umount2(2) — include/uapi/linux/mount.h, include/linux/fs.h (MNT_*)
_add(_group("MS_", RDONLY=1, NOSUID=2, NODEV=4, NOEXEC=8, SYNCHRONOUS=16, REMOUNT=32,
            MANDLOCK=64, DIRSYNC=128, NOSYMFOLLOW=256, NOATIME=1024, NODIRATIME=2048,
            BIND=4096, MOVE=8192, REC=16384, SILENT=32768, POSIXACL=1 << 16,
            UNBINDABLE=1 << 17, PRIVATE=1 << 18, SLAVE=1 << 19, SHARED=1 << 20,
            RELATIME=1 << 21, KERNMOUNT=1 << 22, I_VERSION=1 << 23, STRICTATIME=1 << 24,
            LAZYTIME=1 << 25))
_add(_group("MNT_", FORCE=1, DETACH=2, EXPIRE=4))
_add({"UMOUNT_NOFOLLOW": 8})
# prctl(2) options — include/uapi/linux/prctl.h
_add(_group("PR_", SET_PDEATHSIG=1, GET_PDEATHSIG=2, GET_DUMPABLE=3, SET_DUMPABLE=4,
            GET_KEEPCAPS=7, SET_KEEPCAPS=8, SET_NAME=15, GET_NAME=16, GET_SECCOMP=21,
            SET_SECCOMP=22, CAPBSET_READ=23, CAPBSET_DROP=24, GET_SECUREBITS=27,
            SET_SECUREBITS=28, SET_MM=35, SET_CHILD_SUBREAPER=36, GET_CHILD_SUBREAPER=37,
            SET_NO_NEW_PRIVS=38, GET_NO_NEW_PRIVS=39, CAP_AMBIENT=47, SET_PTRACER=0x59616D61))
# ptrace(2) requests common to every architecture — include/uapi/linux/ptrace.h
_add(_group("PTRACE_", TRACEME=0, PEEKTEXT=1, PEEKDATA=2, PEEKUSR=3, POKETEXT=4, POKEDATA=5,
            POKEUSR=6, CONT=7, KILL=8, SINGLESTEP=9, ATTACH=16, DETACH=17, SYSCALL=24,
            SETOPTIONS=0x4200, GETEVENTMSG=0x4201, GETSIGINFO=0x4202, SETSIGINFO=0x4203,
            GETREGSET=0x4204, SETREGSET=0x4205, SEIZE=0x4206, INTERRUPT=0x4207, LISTEN=0x4208,
            SECCOMP_GET_FILTER=0x420C, GET_SYSCALL_INFO=0x420E))
# seccomp(2) operations — include/uapi/linux/seccomp.h
_add(_group("SECCOMP_", SET_MODE_STRICT=0, SET_MODE_FILTER=1, GET_ACTION_AVAIL=2,
            GET_NOTIF_SIZES=3))
# clocks — include/uapi/linux/time.h
_add(_group("CLOCK_", REALTIME=0, MONOTONIC=1, PROCESS_CPUTIME_ID=2, THREAD_CPUTIME_ID=3,
            MONOTONIC_RAW=4, REALTIME_COARSE=5, MONOTONIC_COARSE=6, BOOTTIME=7,
            REALTIME_ALARM=8, BOOTTIME_ALARM=9, TAI=11))
# file types and mode bits — include/uapi/linux/stat.h
_add(_group("S_", IFMT=0o170000, IFSOCK=0o140000, IFLNK=0o120000, IFREG=0o100000,
            IFBLK=0o60000, IFDIR=0o40000, IFCHR=0o20000, IFIFO=0o10000, ISUID=0o4000,
            ISGID=0o2000, ISVTX=0o1000))
# signals — include/uapi/asm-generic/signal.h (x86 and arm64 agree)
_add(_group("SIG", HUP=1, INT=2, QUIT=3, ILL=4, TRAP=5, ABRT=6, BUS=7, FPE=8, KILL=9, USR1=10,
            SEGV=11, USR2=12, PIPE=13, ALRM=14, TERM=15, STKFLT=16, CHLD=17, CONT=18, STOP=19,
            TSTP=20, TTIN=21, TTOU=22, URG=23, XCPU=24, XFSZ=25, VTALRM=26, PROF=27, WINCH=28,
            IO=29, PWR=30, SYS=31))
# terminal ioctls a container policy cares about — include/uapi/asm-generic/ioctls.h
_add({"TIOCSTI": 0x5412, "TIOCSCTTY": 0x540E, "TIOCLINUX": 0x541C, "TIOCSETD": 0x5423})
# error numbers — the errno module (asm-generic/errno-base.h, errno.h)
_add({name: num for num, name in _errno.errorcode.items()})
_add({name: getattr(_errno, name) for name in dir(_errno) if name.startswith("E")
      and isinstance(getattr(_errno, name), int)})

# Values that differ between the emulated architectures (arch/arm64/include/uapi/asm/fcntl.h
# overrides four open flags; MAP_32BIT exists on x86 only).
_X86 = ("x86_64", "i386", "x32")
PER_ARCH: dict[str, dict[str, int]] = {
    "O_DIRECT": {**dict.fromkeys(_X86, 0o40000), "aarch64": 0o200000, "arm": 0o200000},
    "O_LARGEFILE": {**dict.fromkeys(_X86, 0o100000), "aarch64": 0o400000, "arm": 0o400000},
    "O_DIRECTORY": {**dict.fromkeys(_X86, 0o200000), "aarch64": 0o40000, "arm": 0o40000},
    "O_NOFOLLOW": {**dict.fromkeys(_X86, 0o400000), "aarch64": 0o100000, "arm": 0o100000},
    "O_TMPFILE": {**dict.fromkeys(_X86, 0o20200000), "aarch64": 0o20040000,
                  "arm": 0o20040000},
    "MAP_32BIT": dict.fromkeys(_X86, 0x40),
}


def lookup(name: str, arches: Iterable[str] = ("x86_64",)) -> int:
    """The value of constant ``name`` for a policy on ``arches``; PolicyError when unknown or
    when the architectures disagree (write the number instead)."""
    if name in CONSTANTS:
        return CONSTANTS[name]
    if name in PER_ARCH:
        table = PER_ARCH[name]
        arches = tuple(arches)
        values = {table.get(a) for a in arches}
        if None in values:
            missing = [a for a in arches if a not in table]
            raise PolicyError(f"constant '{name}' is not defined for {', '.join(missing)}")
        if len(values) > 1:
            spell = ", ".join(f"{a} {table[a]:#o}" if name.startswith("O_") else f"{a} {table[a]:#x}"
                              for a in arches)
            raise PolicyError(f"constant '{name}' differs between architectures ({spell}): "
                              f"write the number")
        return values.pop()
    raise PolicyError(f"unknown constant '{name}'")


def names_for(value: int, prefix: str) -> list[str]:
    """Names with ``prefix`` whose value is ``value`` (for display, e.g. AF_INET for 2)."""
    return [k for k, v in CONSTANTS.items() if k.startswith(prefix) and v == value]
