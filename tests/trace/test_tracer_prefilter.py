"""The kernel prefilter is sound: whatever it lets run without a stop, the policy allows for
every argument value. Checked by running the exported classic programs (our classic
interpreter, combined as the kernel combines stacked filters) against the policy's own
decisions, on every syscall number each host arch knows and on the edges between them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.seccomp import actions
from sysdispatch.seccomp import arch as _sa
from sysdispatch.seccomp.data import SeccompData, X32_SYSCALL_BIT
from sysdispatch.seccomp.stack import ClassicFilter
from sysdispatch.policy import static
from sysdispatch.trace import prefilter

from tracer_helpers import policy_file

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "filters").glob("*.toml"))
EDGES = (-1, 0x3FFFFFFF, X32_SYSCALL_BIT - 1, X32_SYSCALL_BIT, 0x7FFFFFFF, 0x80000000 - 2**32,
         1000, 4095)
ARG_SAMPLES = [(0,) * 6, (2**64 - 1,) * 6]


def _verdict(filters: list[ClassicFilter], data: SeccompData) -> int:
    return actions.combine([f.run(data).ret for f in filters])


def _check(loaded: LoadedPolicy) -> tuple[int, int]:
    """(numbers allowed by the prefilter, numbers traced); fails on an unsound ALLOW."""
    filters = [ClassicFilter.from_bytes(p)
               for p in prefilter.programs(loaded, dispatch_all=False)]
    rng = random.Random(7)
    allowed = traced = 0
    for host in static.HOST_ARCHES:
        a = _sa.by_name(host)
        for nr in sorted(set(a.table) | {e + a.nr_base for e in EDGES if e >= 0} | {-1}):
            data = SeccompData(nr, a.audit)
            act = _verdict(filters, data) & actions.ACTION_FULL
            assert act in (actions.ALLOW, actions.TRACE), (host, nr, hex(act))
            if act == actions.TRACE:
                traced += 1
                continue
            allowed += 1
            samples = ARG_SAMPLES + [tuple(rng.getrandbits(64) for _ in range(6))]
            for args in samples:
                got = loaded.decide(SeccompData(nr, a.audit, 0, args)).ret
                assert got & actions.ACTION_FULL == actions.ALLOW, \
                    f"{host} nr {nr}: prefilter ALLOW, policy {actions.describe(got)}"
    return allowed, traced


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_prefilter_is_sound_for_shipped_policies(path):
    allowed, traced = _check(LoadedPolicy.from_file(path))
    assert traced > 0


def test_static_allow_follows_handlers_and_tables(tmp_path):
    """Static: an empty slot with an allowing default, a rules handler (and the args tables it
    tail-calls into) allowing on every path, a pure asm handler returning ALLOW. Not static:
    LOG, a rule that can deny, a handler reading arguments."""
    extra = """
[tables.fam]
index = "args[0]"
default = "allow"
[tables.fam.entries]
1 = "allow"
[handlers.always]
rules = [{ when = ["args[0] == 1"], action = "allow" }]
default = "tail_call(fam)"
[handlers.sometimes]
rules = [{ when = ["args[0] == 1"], action = "errno(1)" }]
default = "allow"
[handlers.pure_asm]
asm = \"\"\"
w0 = 0x7fff0000
exit
\"\"\"
[handlers.reads_args]
asm = \"\"\"
r2 = *(u64 *)(r1 + 16)
w0 = 0x7fff0000
if r2 != 5 goto done
w0 = 0x50001
done:
exit
\"\"\"
"""
    pol = policy_file(tmp_path, {"read": "always", "write": "sometimes", "close": "log",
                                 "dup": "pure_asm", "dup2": "reads_args"},
                      arches=("x86_64",), extra=extra)
    loaded = LoadedPolicy.from_file(pol)
    plan = static.plan(loaded, "x86_64")
    nr = _sa.X86_64.syscall_number
    assert {nr("read"), nr("dup"), nr("getpid")} <= plan.allowed
    assert {nr("write"), nr("close"), nr("dup2")} <= plan.dispatched
    _check(loaded)


def test_deny_by_default_policy_traces_by_default(tmp_path):
    """A deny-by-default policy: the prefilter's default is TRACE (unknown numbers too) with
    ALLOW rules only for the syscalls the policy names as allowed; i386 socket calls, which
    libseccomp would also route through socketcall, stay traced."""
    pol = policy_file(tmp_path, {"read": "allow", "write": "allow", "socket": "allow"},
                      default="errno(EPERM)")
    loaded = LoadedPolicy.from_file(pol)
    allowed, traced = _check(loaded)
    assert allowed >= 5 and traced > 300
    f = ClassicFilter.from_bytes(prefilter.programs(loaded, dispatch_all=False)[0])
    i386_socket = SeccompData(_sa.I386.syscall_number("socket"), _sa.I386.audit)
    assert f.run(i386_socket).ret == actions.TRACE


def test_dispatch_all_traces_everything():
    (raw,) = prefilter.programs(None, dispatch_all=True)
    f = ClassicFilter.from_bytes(raw)
    for data in (SeccompData(0), SeccompData(3, _sa.I386.audit), SeccompData(-1, 0x12345678)):
        assert f.run(data).ret == actions.TRACE
