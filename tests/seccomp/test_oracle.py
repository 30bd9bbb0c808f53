"""The emulator against the kernel: libseccomp filters from randomised rules (every comparison,
64-bit values, several syscalls, every action), single and stacked, and Docker's profile. For
each invocation the classic interpreter, the converted eBPF program and the kernel must agree."""

from __future__ import annotations

import random

import pyseccomp
import pytest

from sysdispatch.seccomp import arch, oracle
from sysdispatch.seccomp.data import SeccompData
from sysdispatch.seccomp.stack import ClassicFilter, FilterStack

from cfilter_helpers import export, profile_filter

A = arch.X86_64
SYSCALLS = ["getppid", "uname", "ioctl", "openat", "read", "write", "close", "mmap", "kill",
            "fcntl", "socket", "prctl", "futex", "lseek"]
OPS = [pyseccomp.NE, pyseccomp.LT, pyseccomp.LE, pyseccomp.EQ, pyseccomp.GE, pyseccomp.GT,
       pyseccomp.MASKED_EQ]
SENTINEL = oracle.DEFAULT_SENTINEL


def _value(rnd: random.Random) -> int:
    return rnd.choice([0, 1, 2, 0xFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x1_0000_0000,
                       0x1_0000_0001, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000,
                       0xFFFF_FFFF_FFFF_FFFF, rnd.getrandbits(64), rnd.getrandbits(33)])


def _action(rnd: random.Random) -> int:
    return rnd.choice([
        pyseccomp.ALLOW, pyseccomp.LOG, pyseccomp.KILL_PROCESS, pyseccomp.KILL_THREAD,
        pyseccomp.TRAP, pyseccomp.NOTIFY,
        # libseccomp refuses ERRNO data above 4095; the kernel's cap is tested with raw
        # filters in test_stack.py
        pyseccomp.ERRNO(rnd.randrange(1, 200)), pyseccomp.ERRNO(rnd.randrange(200, 4096)),
        pyseccomp.ERRNO(0), pyseccomp.TRACE(rnd.randrange(0, SENTINEL)),
    ])


def random_filter(rnd: random.Random, *, allow_seccomp: bool = False):
    """A libseccomp filter from random rules; returns (raw bytes, {syscall: [arg values]})."""
    default = _action(rnd)
    f = pyseccomp.SyscallFilter(default)
    if allow_seccomp and default != pyseccomp.ALLOW:
        f.add_rule(pyseccomp.ALLOW, "seccomp")
    values: dict[str, set[int]] = {}
    for name in rnd.sample(SYSCALLS, rnd.randrange(2, 6)):
        for _ in range(rnd.randrange(1, 4)):
            args = []
            for index in rnd.sample(range(6), rnd.randrange(0, 3)):
                op = rnd.choice(OPS)
                a, b = _value(rnd), _value(rnd)
                if op == pyseccomp.MASKED_EQ:
                    b &= a  # a datum outside the mask could never match
                args.append(pyseccomp.Arg(index, op, a, b))
                values.setdefault(name, set()).update(
                    (index, v & (2**64 - 1)) for v in (a, b, a + 1, a - 1, b + 1, b - 1))
            action = _action(rnd)
            try:
                f.add_rule(action, name, *args)
            except OSError:
                pass  # the default action again, or a conflicting rule: libseccomp refuses
    return export(f), values


def invocations(rnd: random.Random, values: dict, count: int):
    names = list(values) + [rnd.choice(SYSCALLS)]
    for _ in range(count):
        name = rnd.choice(names)
        args = [rnd.choice([0, _value(rnd)]) for _ in range(6)]
        for index, v in rnd.sample(sorted(values.get(name, ())), min(3, len(values.get(name, ())))):
            if rnd.random() < 0.7:
                args[index] = v
        yield A.syscall_number(name), tuple(args)


def check_against_kernel(filters: list[bytes], nr: int, args: tuple[int, ...]) -> None:
    stack = FilterStack([ClassicFilter.from_bytes(raw) for raw in filters])
    data = SeccompData(nr, A.audit, 0, args)
    run = stack.evaluate(data)
    for f, r in zip(stack.filters, run.runs):
        assert f.run_converted(data) == r.ret, "converted eBPF and classic interpreter differ"
    want = oracle.predict([r.ret for r in run.runs], sentinel=SENTINEL)
    got = oracle.kernel_outcome(filters, nr, args, sentinel=SENTINEL)
    assert got == want, (f"nr {nr} args {[hex(a) for a in args]}: kernel {got}, emulator "
                         f"{want} (rets {[hex(r.ret) for r in run.runs]})")


@pytest.mark.parametrize("seed", range(20))
def test_random_libseccomp_filters_agree_with_the_kernel(seed):
    rnd = random.Random(seed)
    raw, values = random_filter(rnd)
    for nr, args in invocations(rnd, values, 8):
        check_against_kernel([raw], nr, args)


@pytest.mark.parametrize("seed", range(5))
def test_random_stacks_agree_with_the_kernel(seed):
    rnd = random.Random(1000 + seed)
    filters, values = [], {}
    depth = rnd.randrange(2, 4)
    for i in range(depth):
        raw, v = random_filter(rnd, allow_seccomp=i < depth - 1)
        filters.append(raw)
        for name, vals in v.items():
            values.setdefault(name, set()).update(vals)
    for nr, args in invocations(rnd, values, 6):
        check_against_kernel(filters, nr, args)


def test_dockers_default_profile_agrees_with_the_kernel(shared_profiles):
    raw = profile_filter(shared_profiles / "moby-default.json")
    rnd = random.Random(7)
    # personality and clone have argument rules in the profile; the rest are plain allow/deny
    cases = [("personality", (0x0,)), ("personality", (0x8,)), ("personality", (0x20008,)),
             ("personality", (0xFFFFFFFF,)), ("personality", (0x1,)),
             ("clone", (0x7E020000,)), ("clone", (0x10000,)), ("socket", (40,)),
             ("socket", (2,)), ("ptrace", ()), ("reboot", ()), ("getppid", ()),
             ("mount", ()), ("bpf", ())]
    for name, args in cases:
        args = tuple(args) + tuple(rnd.choice([0, rnd.getrandbits(64)]) for _ in
                                   range(6 - len(args)))
        check_against_kernel([raw], A.syscall_number(name), args)


def test_the_oracle_refuses_to_guess_when_the_child_misbehaves(monkeypatch):
    """If anything but the test syscall ran after the filters went in, its verdict could be
    misread: the oracle must raise instead. Simulate it by asking about a different syscall
    than the child makes."""
    raw, _ = random_filter(random.Random(3))
    import sysdispatch.seccomp.oracle as o
    real = o._observe

    def observe(pt, pid, sys_seccomp, n, first, nr, args, sentinel):
        return real(pt, pid, sys_seccomp, n, first, nr, tuple(a + 1 for a in args), sentinel)
    monkeypatch.setattr(o, "_observe", observe)
    with pytest.raises(oracle.OracleError, match="between installing the filters"):
        oracle.kernel_outcome([raw], A.syscall_number("getppid"), (1, 2))


def test_syscall_number_minus_one_either_way():
    """seccomp_data.nr is a 32-bit int: the oracle takes 0xffffffff and -1 as the same call (the
    kernel reports it as -1), and the filter sees 0xffffffff either way."""
    from sysdispatch.seccomp import cfilter
    from sysdispatch.vm import cbpf
    insns = cfilter.assemble("A = sys_number\nif (A == 0xffffffff) goto neg\nreturn ALLOW\n"
                             "neg: return ERRNO(7)\n")
    f = ClassicFilter(insns)
    assert f.run(SeccompData(0xFFFFFFFF, A.audit)).ret == pyseccomp.ERRNO(7)
    raw = cbpf.encode(insns)
    assert oracle.kernel_outcome([raw], 0xFFFFFFFF) == oracle.Outcome("errno", 7)
    assert oracle.kernel_outcome([raw], -1) == oracle.Outcome("errno", 7)
    # the sentinel follows the normalised number too: 0xfffffffe is allowed, not misread
    assert oracle.kernel_outcome([raw], 0xFFFFFFFE) == oracle.Outcome("allow")
    with pytest.raises(oracle.OracleError, match="does not fit in 32 bits"):
        oracle.kernel_outcome([raw], 1 << 32)
