"""Helpers called from programs: the host-facing ones, trace_printk, and the helper table."""

from __future__ import annotations

import errno

import pytest

from sysdispatch.vm import program as prog_mod
from sysdispatch.vm.helpers import BY_NAME, HELPERS, Arg, Host, Printk, Ret, format_printk
from sysdispatch.vm.interp import run
from sysdispatch.vm.isa import FP, lddw, make
from sysdispatch.vm.program import (GET_CURRENT_PID_TGID, GET_PRANDOM_U32, KTIME_GET_NS,
                                    TRACE_PRINTK, Program)

U64 = (1 << 64) - 1


def call(helper: int, *pre) -> Program:
    return Program.load([*pre, make("call", imm=helper), make("exit")])


def test_host_helpers_read_the_host():
    host = Host.fixed(now=5_000, pid=7, tgid=9, seed=3)
    assert run(call(KTIME_GET_NS), host=host).r0 == 5_000
    assert run(call(KTIME_GET_NS), host=host).r0 == 6_000  # the fixed clock advances
    assert run(call(GET_CURRENT_PID_TGID), host=host).r0 == (9 << 32) | 7
    rolls = [run(call(GET_PRANDOM_U32), host=host).r0 for _ in range(4)]
    again = Host.fixed(seed=3)
    assert rolls == [run(call(GET_PRANDOM_U32), host=again).r0 for _ in range(4)]
    assert all(0 <= r < 1 << 32 for r in rolls) and len(set(rolls)) > 1


def test_default_host_is_the_real_world():
    import os
    assert run(call(GET_CURRENT_PID_TGID)).r0 >> 32 == os.getpid()
    t1, t2 = run(call(KTIME_GET_NS)).r0, run(call(KTIME_GET_NS)).r0
    assert 0 < t1 <= t2


def format_on_stack(fmt: bytes, size: int | None = None) -> list:
    """Instructions that put ``fmt`` on the stack: r1 = its address, r2 = ``size`` (its length)."""
    padded = fmt + bytes(-len(fmt) % 8)
    insns = []
    for i in range(0, len(padded), 8):
        insns += [*lddw(1, int.from_bytes(padded[i:i + 8], "little")),
                  make("stxdw", FP, 1, off=-len(padded) + i)]
    return insns + [make("mov", 1, FP, reg=True), make("add", 1, imm=-len(padded), reg=False),
                    make("mov", 2, imm=len(fmt) if size is None else size, reg=False)]


def printk(fmt: bytes, *args: int, size: int | None = None, host: Host | None = None):
    """Put ``fmt`` on the stack, call trace_printk(fmt, size, args...); (r0, events)."""
    host = host or Host.fixed()
    insns = format_on_stack(fmt, size)
    for reg, v in zip((3, 4, 5), args):
        insns += lddw(reg, v)
    res = run(call(TRACE_PRINTK, *insns), host=host)
    return res.r0, [e.text for e in host.events if isinstance(e, Printk)]


@pytest.mark.parametrize("fmt, args, text", [
    (b"hello\0", (), "hello"),
    (b"%d %i\0", ((-5) & U64, 0xFFFF_FFFF), "-5 -1"),            # %d is a 32-bit int
    (b"%u %x\0", ((-1) & U64, 0x1_0000_00AB), "4294967295 ab"),  # %u %x: the low 32 bits
    (b"%ld|%lu|%lx\0", ((-2) & U64, (-2) & U64, U64), f"-2|{U64 - 1}|ffffffffffffffff"),
    (b"%lld %llu %llx\0", ((-3) & U64, 3, 0xABC), "-3 3 abc"),
    (b"100%% %5d|%-3x|\0", (42, 10), "100%    42|a  |"),
    (b"%p\0", (0xDEAD,), "000000000000dead"),
])
def test_trace_printk_formats_like_the_kernel(fmt, args, text):
    r0, lines = printk(fmt, *args)
    assert lines == [text]
    assert r0 == len(text)  # the helper returns the bytes written


def test_trace_printk_reads_strings_from_memory():
    # %s of the format string itself, offset to its second half
    fmt = b"s=%s\0tail\0"
    host = Host.fixed()
    insns = format_on_stack(fmt) + [make("mov", 3, 1, reg=True), make("add", 3, imm=5, reg=False),
                                    make("call", imm=TRACE_PRINTK), make("exit")]
    run(Program.load(insns), host=host)
    assert [e.text for e in host.events] == ["s=tail"]
    # an unreadable string prints as empty, as the kernel's copy_from_kernel_nofault fallback
    r0, lines = printk(b"[%s]\0", 0x1234)
    assert lines == ["[]"] and r0 == 2


@pytest.mark.parametrize("fmt, args, size", [
    (b"no nul", (), None),               # the NUL must lie within fmt_size
    (b"%d %d %d %d\0", (1, 2, 3, 4), None),  # at most 3 arguments
    (b"%q\0", (1,), None),               # an unknown conversion
    (b"%.3d\0", (1,), None),             # no precision
    (b"%pz\0", (1,), None),              # a %p extension the kernel does not know
    (b"x\0", (), 0),                     # an empty format
])
def test_trace_printk_refusals_are_einval(fmt, args, size):
    r0, lines = printk(fmt, *args, size=size)
    assert r0 == -errno.EINVAL & U64
    assert lines == []


def test_format_printk_is_usable_alone():
    assert format_printk(b"%d-%s", (7, 0x10), lambda a: b"x" * (a >> 4)) == "7-x"


def test_the_helper_table_is_the_one_source():
    # every helper id program.py allows has one entry, with its Linux name and kinds
    ids = {v for k, v in vars(prog_mod).items() if k.isupper() and isinstance(v, int)
           and v in prog_mod.GENERIC.helpers}
    assert ids == set(HELPERS) == set(prog_mod.GENERIC.helpers)
    assert BY_NAME["map_lookup_elem"].id == 1 and BY_NAME["tail_call"].id == 12
    assert HELPERS[1].args == (Arg.MAP_PTR, Arg.MAP_KEY)
    assert HELPERS[1].ret is Ret.MAP_VALUE_OR_NULL
    assert HELPERS[12].ret is Ret.VOID and HELPERS[12].args[0] is Arg.CTX
    assert HELPERS[6].args[:2] == (Arg.MEM, Arg.CONST_SIZE)
    for h in HELPERS.values():
        assert len(h.args) <= 5 and h.name and h.doc


def printk_insns(fmt: bytes, args: tuple[int, ...]) -> list:
    padded = fmt + bytes(-len(fmt) % 8)
    insns = []
    for i in range(0, len(padded), 8):
        insns += [*lddw(1, int.from_bytes(padded[i:i + 8], "little")),
                  make("stxdw", FP, 1, off=-len(padded) + i)]
    insns += [make("mov", 1, FP, reg=True), make("add", 1, imm=-len(padded), reg=False),
              make("mov", 2, imm=len(fmt), reg=False)]
    for reg, v in zip((3, 4, 5), args):
        insns += lddw(reg, v)
    return insns + [make("call", imm=TRACE_PRINTK), make("exit")]


KERNEL_PRINTK = [
    (b"%d %i\0", ((-5) & U64, 0xFFFF_FFFF)), (b"%u %x\0", ((-1) & U64, 0x1_0000_00AB)),
    (b"%ld|%lu|%lx\0", ((-2) & U64, (-2) & U64, U64)), (b"100%% %5d|%-3x|\0", (42, 10)),
    (b"%p\0", (0xDEAD,)), (b"%c%X\0", (65, 255)), (b"%0999d\0", (1,)), (b"%s\0", (0x1234,)),
    (b"no nul", ()), (b"%d %d %d %d\0", (1, 2, 3, 4)), (b"%q\0", (1,)), (b"%.3d\0", (1,)),
    (b"%pz\0", (1,)),
]


@pytest.mark.parametrize("fmt, args", KERNEL_PRINTK)
def test_trace_printk_returns_what_the_kernel_returns(fmt, args):
    kernel = pytest.importorskip("sysdispatch.vm.kernel")
    if not kernel.kernel_bpf_available():
        pytest.skip("needs root and bpf()")
    insns = printk_insns(fmt, args)
    assert run(Program.load(insns), host=Host.fixed()).r0 == kernel.run_r0(insns)
