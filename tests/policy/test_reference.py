"""The reference evaluator on hand-checked cases: arch checks, x32, nested tables, the 64-bit
guard of args tables, and the kernel's tail-call counting (empty in-range slots count)."""

from __future__ import annotations

import textwrap

import pytest

from sysdispatch.policy import parse
from sysdispatch.policy.reference import Unsupported, evaluate
from sysdispatch.seccomp import actions
from sysdispatch.seccomp.data import AUDIT_ARCH_AARCH64, AUDIT_ARCH_I386, SeccompData

X32 = 0x40000000

POLICY = textwrap.dedent('''\
    [policy]
    arches = ["x86_64", "x32"]
    default = "allow"
    bad_arch = "errno(EPERM)"
    [tables.syscalls.entries]
    openat = "openat_rules"
    ptrace = "log"
    socket = "by_family"
    [tables.families]
    index = "args[0]"
    default = "errno(EAFNOSUPPORT)"
    [tables.families.entries]
    AF_INET = "allow"
    AF_UNIX = "trace(1)"
    [handlers.openat_rules]
    rules = [
      { when = ["args[2] & O_CREAT == O_CREAT"], action = "errno(EACCES)" },
      { when = ["args[0] == 0xffffff9c", "args[2] > 7"], action = "trap(2)" },
    ]
    default = "kill_thread"
    [handlers.by_family]
    default = "tail_call(families)"
    ''')


@pytest.fixture(scope="module")
def pol():
    return parse.loads(POLICY, "ref.toml")


def sd(nr, *args, arch=0xC000003E):
    return SeccompData(nr, arch, 0, tuple(args))


def test_rules_in_order_and_default(pol):
    r = evaluate(pol, sd(257, 3, 0, 0o100))
    assert r.ret == actions.ERRNO | 13 and r.handler == "openat_rules" and r.tail_calls == 1
    assert r.path == ("syscall_entry", "tail_call syscalls_x86_64[257]", "openat_rules")
    assert evaluate(pol, sd(257, 0xFFFFFF9C, 0, 8)).ret == actions.TRAP | 2
    assert evaluate(pol, sd(257, 0xFFFFFFFFFFFFFF9C, 0, 8)).ret == actions.KILL_THREAD  # 64-bit
    assert evaluate(pol, sd(257, 0xFFFFFF9C, 0, 7)).ret == actions.KILL_THREAD
    # the first matching rule wins even when a later one would match too
    assert evaluate(pol, sd(257, 0xFFFFFF9C, 0, 0o100)).ret == actions.ERRNO | 13


def test_empty_slot_and_arches(pol):
    r = evaluate(pol, sd(0))
    assert r.ret == actions.ALLOW and r.path == ("syscall_entry",) and r.handler is None
    assert evaluate(pol, sd(101)).ret == actions.LOG
    assert evaluate(pol, sd(X32 | 257, 0, 0, 0o100)).path[1] == "tail_call syscalls_x32[257]"
    for arch in (AUDIT_ARCH_I386, AUDIT_ARCH_AARCH64, 0):
        r = evaluate(pol, sd(257, arch=arch))
        assert r.ret == actions.ERRNO | 1 and r.path == ("syscall_entry",)
    assert evaluate(pol, sd(0xFFFFFFFF)).ret == actions.ALLOW     # nr -1: out of range
    assert evaluate(pol, sd(-1)).ret == actions.ALLOW


def test_x32_calls_are_bad_arch_for_an_x86_64_policy():
    p = parse.loads('[policy]\ndefault = "errno(1)"\n[tables.syscalls.entries]\nopenat = "allow"\n')
    assert evaluate(p, sd(257)).ret == actions.ALLOW
    assert evaluate(p, sd(X32 | 257)).ret == actions.KILL_PROCESS   # never aliases openat
    p32 = parse.loads('[policy]\narches=["x32"]\ndefault = "errno(1)"\n'
                      '[tables.syscalls.entries]\nopenat = "allow"\n')
    assert evaluate(p32, sd(X32 | 257)).ret == actions.ALLOW
    assert evaluate(p32, sd(257)).ret == actions.KILL_PROCESS


def test_nested_table(pol):
    r = evaluate(pol, sd(41, 1))
    assert r.ret == actions.TRACE | 1 and r.tail_calls == 2 and r.handler == "trace(1)"
    assert r.path == ("syscall_entry", "tail_call syscalls_x86_64[41]", "by_family",
                      "tail_call families[1]", "trace(1)")
    r = evaluate(pol, sd(41, 10))
    assert r.ret == actions.ERRNO | 97 and r.path[-1] == "by_family"
    # a 64-bit family above 2**32 must not alias slot 1 (the kernel truncates the index to u32)
    assert evaluate(pol, sd(41, (1 << 32) | 1)).ret == actions.ERRNO | 97
    assert evaluate(pol, sd(41, 2)).ret == actions.ALLOW


LOOP = textwrap.dedent('''\
    [policy]
    default = "errno(9)"
    [tables.syscalls.entries]
    getpid = "h"
    [tables.t]
    index = "args[0]"
    default = "errno(7)"
    [tables.t.entries]
    0 = "h"
    [tables.e]
    index = "args[2]"
    default = "tail_call(t)"
    [handlers.h]
    default = "tail_call(e)"
    ''')


def test_tail_call_limit_and_empty_slots_count():
    p = parse.loads(LOOP)
    # args[2] out of e's range: each round is one counted tail call, 33 in all (34 programs)
    r = evaluate(p, sd(39, 0, 0, 1000))
    assert r.tail_calls == 33 and r.ret == actions.ERRNO | 7
    assert r.path.count("h") == 33 and len(r.path) == 1 + 2 * 33
    # in range but empty: the kernel counts the attempt too, so h is reached only 17 times
    r = evaluate(p, sd(39, 0, 0, 5))
    assert r.tail_calls == 17 and r.ret == actions.ERRNO | 7
    # t's slot 1 empty: e -> t falls through to t's default at once
    assert evaluate(p, sd(39, 1, 0, 5)).ret == actions.ERRNO | 7


def test_asm_handlers_are_not_evaluated():
    p = parse.loads('[policy]\ndefault = "allow"\n[tables.syscalls.entries]\nread = "a"\n'
                    '[handlers.a]\nasm = "r0 = 0\\nexit"\n')
    with pytest.raises(Unsupported, match="handler 'a' is asm"):
        evaluate(p, sd(0))
    assert evaluate(p, sd(1)).ret == actions.ALLOW
