"""The jump tables a policy becomes: one PROG_ARRAY per (nr table, architecture) and one per args
table — their names, their sizes, and which architecture a seccomp_data belongs to.

One source of truth for the compiler (which builds the arrays and the guards) and the reference
evaluator (which must count tail calls exactly as the kernel does, and the kernel counts an
attempt on an in-range empty slot but not on an out-of-range index).

Sizes: an nr table for an architecture gets ``max(highest syscall number libseccomp knows there,
highest key) + 1`` slots, rounded up to a multiple of 64 (x86_64: 457 -> 512). The rounding leaves
room for syscalls newer than this machine's libseccomp (the running kernel may know a few more),
which a live update may add by number. An args table gets 64 slots, or the next power of two
above its largest key (AF_* fit in 64). A ``size`` in the policy file overrides both.
"""

from __future__ import annotations

from ..seccomp.data import AUDIT_ARCH_X86_64, X32_SYSCALL_BIT
from . import _arch
from .model import Policy, Table

ENTRY = "syscall_entry"  # the program every dispatch starts in, as paths and listings name it
MAX_TAIL_CALL_CNT = 33  # kernel/bpf: at most 33 tail calls, so at most 34 programs run
NR_NONE = 0xFFFFFFFF    # syscall number -1, as a u32


def slot_count(table: Table, arch: str | None = None) -> int:
    """max_entries of the PROG_ARRAY for ``table`` (and ``arch`` for an nr table)."""
    if table.size is not None:
        return table.size
    if table.index == "nr":
        bias = _arch.nr_bias(arch)
        top = max([_arch.max_syscall(arch)] + [k - bias for k in table.by_arch.get(arch, {})])
        return -(-(top + 1) // 64) * 64
    top = max(table.entries, default=0)
    size = 64
    while size <= top:
        size *= 2
    return size


def array_name(policy: Policy, table: str, arch: str | None = None) -> str:
    """How a jump table is named in paths, listings and disassembly (``map[NAME]``): ``syscalls``
    for a policy with one architecture, ``syscalls_x32`` when an nr table exists once per
    architecture."""
    if arch is None or len(policy.arches) == 1:
        return table
    return f"{table}_{arch}"


def arch_of(policy: Policy, arch: int, nr: int) -> str | None:
    """Which of the policy's architectures a (seccomp_data.arch, nr) pair belongs to; None when
    none (the entry program then returns bad_arch). x32 calls arrive as AUDIT_ARCH_X86_64 with
    bit 0x40000000 in nr: they belong to x32 only, never to x86_64 (as libseccomp decides),
    so a policy for x86_64 alone cannot be bypassed through the x32 ABI. nr -1 is x86_64's."""
    # nr -1 is not an x32 call: tracers use it to skip a syscall, and libseccomp's filters
    # send it to the default action, not to the bad-arch one.
    x32_call = bool(nr & X32_SYSCALL_BIT) and nr != NR_NONE
    for a in policy.arches:
        if _arch.audit_arch(a) != arch:
            continue
        if arch == AUDIT_ARCH_X86_64 and (a == "x32") != x32_call:
            continue
        return a
    return None


def slot_index(arch: str, nr: int) -> int:
    """The index into an nr table: the syscall number without the x32 bit (u32)."""
    return (nr - _arch.nr_bias(arch)) & 0xFFFFFFFF
