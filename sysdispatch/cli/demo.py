"""``sysdispatch demo``: dispatch a handful of system calls through a tail-call program table.

Until policies and the tracer exist this builds its table in Python: a seccomp-type
``syscall_entry`` program checks the architecture (KILL_PROCESS for anything but x86_64), loads
the syscall number and tail-calls ``syscalls[nr]`` in a PROG_ARRAY; when the call falls through
(no handler in the slot, or a number past the table) it returns the default, ALLOW. A few handler
programs sit in the table. Sample ``struct seccomp_data`` values go through the interpreter and
each line shows the path taken — read from the run's program chain and tail-call count — and the
resulting action. Syscall numbers come from libseccomp, never from a table kept here.
"""

from __future__ import annotations

import argparse
import errno
import os
from dataclasses import dataclass

from ..seccomp import actions
from ..seccomp.arch import I386, X86_64
from ..seccomp.data import OFF_ARCH, OFF_ARGS, OFF_NR, AUDIT_ARCH_X86_64, SeccompData
from ..vm.helpers import Host
from ..vm.interp import run
from ..vm.isa import PSEUDO_MAP_FD, lddw, make, signed32
from ..vm.maps import ProgArray
from ..vm.program import SECCOMP, TAIL_CALL, Program

TABLE_SLOTS = 512  # x86_64 syscall numbers are below this
SYSCALLS_MAP = 0   # index of the PROG_ARRAY in the entry program's map table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="dispatch sample syscalls through a tail-call program table",
                       description=__doc__.split("\n\n")[0])
    p.set_defaults(func=cmd_demo)




def _ret(action: int) -> list:
    # mov32 zero-extends, so r0 holds exactly the 32-bit action
    return [make("mov32", 0, imm=signed32(action), reg=False), make("exit")]


def entry_program(table: ProgArray) -> Program:
    """syscall_entry: arch check, then tail_call(ctx, &syscalls, nr); fall through -> ALLOW."""
    insns = [
        make("ldxw", 2, 1, off=OFF_ARCH),
        # a 32-bit compare: the 64-bit form would sign-extend 0xC000003E
        make("jne32", 2, off=6, imm=signed32(AUDIT_ARCH_X86_64), reg=False),
        make("ldxw", 3, 1, off=OFF_NR),
        *lddw(2, SYSCALLS_MAP, PSEUDO_MAP_FD),
        make("call", imm=TAIL_CALL),
        *_ret(actions.ALLOW),                  # fell through: the default
        *_ret(actions.KILL_PROCESS),           # wrong architecture
    ]
    return Program.load(insns, prog_type=SECCOMP, maps=[table], name="syscall_entry")


def openat_handler() -> Program:
    """openat: creating files is refused with EACCES, opening existing ones allowed."""
    insns = [
        make("ldxdw", 2, 1, off=OFF_ARGS + 8 * 2),  # flags are the third argument
        make("jset", 2, off=2, imm=os.O_CREAT, reg=False),
        *_ret(actions.ALLOW),
        *_ret(actions.ERRNO | errno.EACCES),
    ]
    return Program.load(insns, prog_type=SECCOMP, name="openat")


def constant_handler(name: str, action: int) -> Program:
    return Program.load(_ret(action), prog_type=SECCOMP, name=name)


@dataclass(frozen=True)
class Sample:
    label: str
    data: SeccompData


def build_table() -> tuple[Program, ProgArray]:
    table = ProgArray(TABLE_SLOTS, name="syscalls")
    handlers = [openat_handler(), constant_handler("ptrace", actions.LOG),
                constant_handler("execve", actions.ALLOW),
                constant_handler("mount", actions.ERRNO | errno.EPERM)]
    for h in handlers:
        table.update(X86_64.syscall_number(h.name), h)
    return entry_program(table), table


def samples() -> list[Sample]:
    nr = X86_64.syscall_number
    at_fdcwd = -100
    return [
        Sample("openat(AT_FDCWD, \"/etc/hostname\", O_RDONLY)",
               SeccompData(nr("openat"), args=(at_fdcwd, 0x1000, os.O_RDONLY))),
        Sample("openat(AT_FDCWD, \"/tmp/new\", O_WRONLY|O_CREAT, 0644)",
               SeccompData(nr("openat"), args=(at_fdcwd, 0x1000, os.O_WRONLY | os.O_CREAT, 0o644))),
        Sample("ptrace(PTRACE_ATTACH, 1)", SeccompData(nr("ptrace"), args=(16, 1))),
        Sample("execve(\"/bin/true\", argv, envp)", SeccompData(nr("execve"))),
        Sample("mount(\"none\", \"/mnt\", \"tmpfs\", 0, NULL)", SeccompData(nr("mount"))),
        Sample("getpid()", SeccompData(nr("getpid"))),
        Sample("syscall 1000 (no such syscall)", SeccompData(1000)),
        Sample("i386 getpid() (int 0x80)",
               SeccompData(I386.syscall_number("getpid"), arch=I386.audit)),
    ]


def describe_path(entry: Program, table: ProgArray, s: Sample, result) -> str:
    """The dispatch path of one run, from its program chain and the kernel's tail-call count."""
    steps = [entry.name]
    nr = s.data.nr & 0xFFFF_FFFF
    if len(result.chain) > 1:
        steps += [f"tail_call {table.name}[{nr}]", *(p.name for p in result.chain[1:])]
    elif result.tail_calls:  # the count grew but nothing was entered: an empty slot
        steps += [f"tail_call {table.name}[{nr}] (empty slot)", "default"]
    elif s.data.arch != AUDIT_ARCH_X86_64:
        steps += ["arch check failed"]
    else:  # no count: the index check failed
        steps += [f"tail_call {table.name}[{nr}] (index >= {table.max_entries})", "default"]
    return " -> ".join(steps + [actions.describe(result.r0 & 0xFFFF_FFFF)])


def cmd_demo(args: argparse.Namespace) -> int:
    entry, table = build_table()
    print(f"syscall_entry ({len(entry)} insns, seccomp) tail-calls through PROG_ARRAY "
          f"'{table.name}' ({table.max_entries} slots, {len(table)} handlers: "
          + ", ".join(f"{p.name}[{i}]" for i, p in enumerate(table.slots) if p) + ")\n")
    rows = []
    taken = 0
    host = Host.fixed()
    for s in samples():
        result = run(entry, s.data, host=host)
        taken += len(result.chain) - 1
        rows.append((s.label, describe_path(entry, table, s, result)))
    width = max(len(label) for label, _ in rows)
    for label, path in rows:
        print(f"{label:<{width}} : {path}")
    print(f"\n{len(rows)} syscalls dispatched, {taken} tail calls taken")
    return 0
