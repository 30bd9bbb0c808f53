"""Stacked filters: precedence, ties, data, unknown actions and the path-length limit — each
case also run by the kernel."""

from __future__ import annotations

import errno
import signal

import pytest

from sysdispatch.errors import VerifierError
from sysdispatch.seccomp import actions, arch, cfilter, oracle
from sysdispatch.seccomp.actions import ALLOW, ERRNO, KILL_PROCESS, KILL_THREAD, LOG, TRACE, TRAP
from sysdispatch.seccomp.data import SeccompData
from sysdispatch.seccomp.stack import (MAX_INSNS_PER_PATH, ClassicFilter, FilterStack, effect,
                                       load_filter)
from sysdispatch.vm import cbpf
from sysdispatch.vm.cbpf import OPS, CInsn

GETPPID = arch.X86_64.syscall_number("getppid")


def returning(value: int) -> ClassicFilter:
    """``return value`` for every syscall but seccomp(), which stays allowed so that newer
    filters can still be installed on top (the kernel runs older filters on that call too)."""
    text = (f"A = sys_number\nif (A == seccomp) goto ok\nreturn 0x{value:08x}\n"
            f"ok: return ALLOW\n")
    return ClassicFilter(cfilter.assemble(text), name=f"ret-{value:08x}")


def emulate(values: list[int]) -> int:
    return FilterStack([returning(v) for v in values]).evaluate(SeccompData(GETPPID)).ret


CASES = {
    "newest wins a tie, with its data": [ERRNO | 5, ERRNO | 7],
    "lowest action wins": [ERRNO | 9, TRACE | 3, LOG],
    "trap beats errno": [ERRNO | 1, TRAP | 4],
    "kill thread beats trap": [TRAP | 4, KILL_THREAD],
    "kill process beats everything": [KILL_THREAD, KILL_PROCESS | 1, ERRNO],
    "errno data capped at 4095": [ERRNO | 5000],
    "user notif without a listener": [actions.USER_NOTIF | 3, LOG],
    "allow data dropped": [ALLOW | 0x1234],
    "trace data kept": [TRACE | 0x1234, ALLOW],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_stacks_like_the_kernel(name):
    values = CASES[name]
    ret = emulate(values)
    assert ret == actions.combine(values)
    raws = [returning(v).bytes() for v in values]
    nr = GETPPID
    assert oracle.kernel_outcome(raws, nr) == oracle.predict([ret])


def test_combine_details():
    assert emulate([ERRNO | 5, ERRNO | 7]) == ERRNO | 7
    assert emulate([ERRNO | 7, ERRNO | 5]) == ERRNO | 5
    assert emulate([ALLOW | 0x1234, LOG]) == LOG
    assert emulate([ALLOW | 0x1234]) == ALLOW  # the kernel starts from plain ALLOW
    with pytest.raises(ValueError):
        actions.combine([])


# Unknown actions compare by their raw value; they kill only once they have won. An action above
# TRACE would hide behind the oracle's sentinel, so these run without one (getppid really runs
# when the stack allows it).
UNKNOWN = {
    "0x7ffe0000 loses to LOG": ([0x7FFE0000, LOG], "allow"),
    "0x7ffe0000 alone kills": ([0x7FFE0000], "kill"),
    "0x00010000 beats TRAP": ([TRAP | 1, 0x00010000], "kill"),
    "ERRNO beats 0x00060000": ([0x00060000, ERRNO | 3], "errno"),
}


@pytest.mark.parametrize("name", sorted(UNKNOWN))
def test_unknown_actions_compare_raw_and_kill_when_they_win(name):
    values, kind = UNKNOWN[name]
    ret = emulate(values)
    assert effect(ret).kind == {"allow": "run", "kill": "kill_process", "errno": "errno"}[kind]
    got = oracle.kernel_outcome([returning(v).bytes() for v in values], GETPPID, sentinel=None)
    assert got.kind == kind
    assert got == oracle.predict([ret], sentinel=None)


def test_an_older_filter_judges_the_installation_of_newer_ones():
    deny_all = ClassicFilter([CInsn(cbpf.RET, 0, 0, ERRNO | 9)]).bytes()
    assert oracle.kernel_outcome([deny_all, deny_all], GETPPID) == \
        oracle.Outcome("refused", (1 << 16) | 9)


def test_winner_is_the_newest_filter_with_the_winning_value():
    stack = FilterStack([returning(ERRNO | 1), returning(TRAP), returning(TRAP), returning(LOG)])
    run = stack.evaluate(SeccompData(GETPPID))
    assert (run.ret, run.winner) == (TRAP, 2)
    assert FilterStack([returning(ALLOW | 3)]).evaluate(SeccompData(GETPPID)).winner is None


def test_effects():
    assert effect(ERRNO | 70).errno == 70 and effect(ERRNO | 9999).errno == 4095
    assert effect(TRACE | 5).errno == errno.ENOSYS  # no tracer
    assert effect(TRACE | 5, tracer=True).kind == "trace"
    assert effect(actions.USER_NOTIF).errno == errno.ENOSYS
    assert effect(TRAP | 2).signal == signal.SIGSYS and effect(TRAP | 2).data == 2
    assert effect(KILL_THREAD).kind == "kill_thread"
    assert effect(0x12340000).kind == "kill_process"
    assert effect(LOG).logged and effect(ALLOW).kind == "run"
    assert str(effect(ERRNO | 1)) == "fails with -EPERM (1)"


# --- MAX_INSNS_PER_PATH ---------------------------------------------------------------------------


def sized(ebpf_len: int) -> ClassicFilter:
    """A filter whose converted program has exactly ``ebpf_len`` instructions: 3 prologue, 3 per
    jset with a top-bit constant, 1 per ld #k, 2 for the final ret #k."""
    jset = next(c for c, o in OPS.items() if o.kind == "jcc" and o.op == "jset" and not o.reg)
    ld = next(c for c, o in OPS.items() if o.kind == "ld_imm")
    a, b = divmod(ebpf_len - 5, 3)
    if b == 0:  # keep one ld after the jsets: the last one's false branch skips an instruction
        a, b = a - 1, 3
    insns = [CInsn(jset, 0, 1, 0x80000001)] * a + [CInsn(ld, 0, 0, 0)] * b
    f = ClassicFilter(insns + [CInsn(cbpf.RET, 0, 0, ALLOW)], name=f"{ebpf_len}")
    assert f.kernel_len() == ebpf_len and len(f) <= cbpf.MAXINSNS
    return f


def test_the_path_limit_counts_converted_instructions_like_the_kernel():
    # 3 filters: e + e + e + 2*4 == 32768 exactly fits; one more instruction does not.
    e = (MAX_INSNS_PER_PATH - 8) // 3
    fits = [sized(e), sized(e), sized(e)]
    FilterStack(fits)
    assert oracle.kernel_outcome([f.bytes() for f in fits], None) == oracle.Outcome("installed")
    over = fits[:2] + [sized(e + 1)]
    with pytest.raises(VerifierError, match="32769 eBPF instructions .* ENOMEM"):
        FilterStack(over)
    assert oracle.kernel_outcome([f.bytes() for f in over], None) == \
        oracle.Outcome("refused", (2 << 16) | errno.ENOMEM)
    # Counting classic instructions instead would have let this through: 3 * ~3640 << 32768.
    assert sum(len(f) for f in over) + 8 < MAX_INSNS_PER_PATH


def test_load_filter_by_suffix(tmp_path):
    raw = returning(ERRNO | 3).bytes()
    (tmp_path / "f.bpf").write_bytes(raw)
    (tmp_path / "f.asm").write_text("return ERRNO(3)\n")
    (tmp_path / "f.s").write_text("w0 = 0x50003\nexit\n")
    (tmp_path / "bad.bpf").write_bytes(raw[:5])
    data = SeccompData(GETPPID)
    for name in ("f.bpf", "f.asm", "f.s"):
        f = load_filter(tmp_path / name)
        assert f.run(data).ret == ERRNO | 3, name
    assert load_filter(tmp_path / "f.s").kind == "ebpf"
    with pytest.raises(Exception) as exc:
        load_filter(tmp_path / "bad.bpf")
    assert str(exc.value).startswith(f"{tmp_path / 'bad.bpf'}: pc 0: 5 bytes")
