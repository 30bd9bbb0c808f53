"""The compiler: generated programs, the 64-bit guard, x32 and multi-arch entry programs, asm
handlers with policy-file locations, and the differential test — random policies and random
seccomp_data, compiled eBPF on the interpreter vs. the reference evaluator (verdict, path and
the kernel's tail-call counter must all agree)."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysdispatch.errors import PolicyError
from sysdispatch.policy import parse
from sysdispatch.policy.compile import ENTRY, compile_policy
from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.policy.model import OPS, Act, Cond, Handler, Policy, Rule, Table
from sysdispatch.policy.reference import evaluate
from sysdispatch.seccomp import actions
from sysdispatch.seccomp.data import AUDIT_ARCH_AARCH64, AUDIT_ARCH_I386, SeccompData
from sysdispatch.vm.asm import assemble
from sysdispatch.vm.disasm import disassemble
from sysdispatch.vm.program import SECCOMP

X86_64, X32 = 0xC000003E, 0x40000000
U64 = 2**64 - 1


def test_rules_handler_code_and_round_trip():
    p = parse.loads(textwrap.dedent('''\
        [policy]
        default = "allow"
        [tables.syscalls.entries]
        openat = "h"
        [handlers.h]
        rules = [
          { when = ["args[2] & O_CREAT == O_CREAT"], action = "errno(EACCES)" },
          { when = ["args[1] > 0xffffffff00000000", "args[3] & 0x8000000000000000 != 0"], action = "log" },
        ]
        '''), "h.toml")
    c = compile_policy(p)
    h = c.program("h")
    text = disassemble(h, with_pc=False)
    assert "r2 = *(u64 *)(r6 + 32)" in text           # args[2]: a 64-bit load
    assert "if r2 != 64 goto" in text                  # inverted compare, to the next rule
    assert "r4 = 0xffffffff00000000 ll" in text        # too wide for an immediate: lddw
    assert "if r2 <= r4 goto" in text
    assert h.where(1).line == 7                        # each slot knows its rule's line
    # the text re-assembles to the same bytes (labels and maps by name)
    again = assemble(text, prog_type=SECCOMP, maps={}, name="h")
    assert again.bytes() == h.bytes()
    entry = disassemble(c.program(ENTRY), with_pc=False)
    again = assemble(entry, prog_type=SECCOMP, maps={"syscalls": c.array("syscalls", "x86_64")})
    assert again.bytes() == c.program(ENTRY).bytes()
    # a handler that only returns is two instructions
    assert len(compile_policy(parse.loads('[policy]\ndefault="allow"\n[tables.syscalls.entries]\n'
                                          'read="log"\n')).program("log")) == 2


GUARD = textwrap.dedent('''\
    [policy]
    default = "allow"
    [tables.syscalls.entries]
    socket = "fam"
    [tables.families]
    index = "args[0]"
    default = "errno(EAFNOSUPPORT)"
    [tables.families.entries]
    AF_UNIX = "errno(EPERM)"
    [handlers.fam]
    default = "tail_call(families)"
    ''')


def test_guard_keeps_64_bit_index_from_aliasing_a_slot():
    lp = LoadedPolicy(parse.loads(GUARD), cache=False)
    assert lp.decide(SeccompData(41, args=(1,))).ret == actions.ERRNO | 1
    # the kernel truncates a tail-call index to u32: without the guard 2**32 + 1 would be slot 1
    for family in ((1 << 32) | 1, (1 << 63) | 1, U64):
        d = lp.decide(SeccompData(41, args=(family,)))
        assert d.ret == actions.ERRNO | 97 and d.path[-1] == "fam" and d.attempts == 1
    assert "if r3 >= 64 goto" in disassemble(lp.compiled.program("fam"))


def test_entry_per_arch_tables_and_x32():
    p = parse.loads('[policy]\narches = ["x86_64", "x32", "i386", "aarch64"]\n'
                    'default = "errno(1)"\nbad_arch = "trap(9)"\n'
                    '[tables.syscalls.entries]\nopenat = "allow"\n')
    lp = LoadedPolicy(p, cache=False)
    cases = {(X86_64, 257): "syscalls_x86_64[257]", (X86_64, X32 | 257): "syscalls_x32[257]",
             (AUDIT_ARCH_I386, 295): "syscalls_i386[295]",
             (AUDIT_ARCH_AARCH64, 56): "syscalls_aarch64[56]"}
    for (arch, nr), where in cases.items():
        d = lp.decide(SeccompData(nr, arch))
        assert d.ret == actions.ALLOW and d.path[1] == f"tail_call {where}", (arch, nr, d)
    assert lp.decide(SeccompData(257, AUDIT_ARCH_I386)).ret == actions.ERRNO | 1
    assert lp.decide(SeccompData(257, 0x12345678)).ret == actions.TRAP | 9
    sizes = {k[1]: a.max_entries for k, a in lp.compiled.arrays.items()}
    assert sizes["x86_64"] % 64 == 0 and sizes["x86_64"] > 400 and sizes["x32"] > 547 - 64


def test_x32_only_policy_refuses_x86_64_numbers():
    lp = LoadedPolicy(parse.loads('[policy]\narches = ["x32"]\ndefault = "allow"\n'), cache=False)
    assert lp.decide(SeccompData(X32 | 0)).ret == actions.ALLOW
    assert lp.decide(SeccompData(0)).ret == actions.KILL_PROCESS
    assert lp.decide(SeccompData(-1)).ret == actions.KILL_PROCESS


@pytest.mark.parametrize("arches", [["x86_64"], ["x86_64", "x32"]])
def test_syscall_minus_one_is_not_x32(arches):
    """nr -1 has the x32 bit but is x86_64's "no syscall" (what libseccomp's filters do too):
    it takes the default, while other numbers with the bit are x32 calls."""
    p = parse.loads(f'[policy]\narches = {arches}\ndefault = "errno(1)"\n'
                    '[tables.syscalls.entries]\ngetpid = "allow"\n')
    lp = LoadedPolicy(p, cache=False)
    for nr in (-1, 0xFFFFFFFF):
        d = lp.decide(SeccompData(nr))
        assert d.ret == actions.ERRNO | 1 == evaluate(p, SeccompData(nr)).ret
    want = actions.ERRNO | 1 if "x32" in arches else actions.KILL_PROCESS
    assert lp.decide(SeccompData(0xFFFFFFFE)).ret == want


ASM = textwrap.dedent('''\
    [policy]
    default = "allow"
    [maps.counts]
    type = "array"
    key_size = 4
    value_size = 8
    max_entries = 1
    [tables.syscalls.entries]
    read = "a"
    [handlers.a]
    maps = ["counts"]
    asm = """
    r0 = 0x7fff0000
    BODY
    exit
    """
    ''')


@pytest.mark.parametrize("body,expected", [
    ("r1 = bogus", "p.toml:14:6: handler 'a': "),
    ("r0 = *(u64 *)(r1 + 64)", "p.toml:14:1: handler 'a', pc 1: "),
    ("r1 = map[nosuch] ll", "p.toml:14:"),
])
def test_asm_handler_errors_name_the_policy_line(body, expected):
    with pytest.raises(PolicyError) as info:
        compile_policy(parse.loads(ASM.replace("BODY", body), "p.toml"))
    assert str(info.value).startswith(expected), str(info.value)
    assert "\n" not in str(info.value)


def test_asm_handler_runs_with_its_map():
    body = textwrap.dedent('''\
        *(u32 *)(r10 - 4) = 0
        r2 = r10
        r2 += -4
        r1 = map[counts] ll
        call map_lookup_elem
        if r0 == 0 goto out
        r1 = *(u64 *)(r0 + 0)
        r1 += 1
        *(u64 *)(r0 + 0) = r1
        r0 = r1
        r0 |= 0x50000
        exit
        out:''')
    lp = LoadedPolicy(parse.loads(ASM.replace("BODY", body), "p.toml"))
    rets = [lp.decide(SeccompData(0)).ret for _ in range(3)]
    assert rets == [actions.ERRNO | 1, actions.ERRNO | 2, actions.ERRNO | 3]   # never cached
    assert lp.compiled.maps["counts"][0] == (3).to_bytes(8, "little")


def test_missing_elf_object_is_one_error_with_location():
    with pytest.raises(PolicyError, match=r"^e\.toml:5:11: handler 'h': cannot read x\.o: No such "):
        compile_policy(parse.loads('[policy]\ndefault="allow"\n[tables.syscalls.entries]\n'
                                   'read = "h"\n[handlers.h]\nelf = "x.o"\n', "e.toml"))


# --- differential: compiled (interpreter) vs reference ---------------------------------------

VALUES = [0, 1, 2, 7, 8, 0x40, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, (1 << 32) | 1,
          (1 << 63), U64 - 1, U64, 0xFFFFFFFF80000000]
RETS = [actions.ALLOW, actions.LOG, actions.KILL_PROCESS, actions.KILL_THREAD, actions.USER_NOTIF,
        actions.ERRNO | 1, actions.ERRNO | 4095, actions.TRAP | 3, actions.TRACE | 0xFFFF,
        0x12340000]
ARCH_SETS = [("x86_64",), ("x86_64", "x32"), ("i386",), ("x86_64", "i386", "aarch64"), ("x32",)]
AUDIT = {"x86_64": X86_64, "x32": X86_64, "i386": AUDIT_ARCH_I386, "aarch64": AUDIT_ARCH_AARCH64}

values = st.one_of(st.sampled_from(VALUES), st.integers(0, U64), st.integers(0, 80))


@st.composite
def policies(draw):
    arches = draw(st.sampled_from(ARCH_SETS))
    n_tables = draw(st.integers(0, 3))
    tnames = [f"t{i}" for i in range(n_tables)]
    hnames = [f"h{i}" for i in range(draw(st.integers(1, 5)))]

    def act(allow_tail=True, after=-1):
        # a table default may only tail-call tables after it (defaults must not loop); rule
        # actions may tail-call anywhere: loops end at the 33-call limit.
        choices = tnames[after + 1:] if after >= 0 else tnames
        if allow_tail and choices and draw(st.booleans()):
            return Act(tail_call=draw(st.sampled_from(choices)))
        return Act(ret=draw(st.sampled_from(RETS)))

    tables = {}
    for i, t in enumerate(tnames):
        keys = draw(st.lists(st.one_of(st.integers(0, 70), st.sampled_from([127, 200])),
                             max_size=5, unique=True))
        entries = {k: draw(st.sampled_from(hnames)) for k in keys}
        default = act(after=i) if draw(st.booleans()) else None
        tables[t] = Table(t, f"args[{draw(st.integers(0, 5))}]", entries=entries, default=default)
    handlers = {}
    for h in hnames:
        rules = []
        for _ in range(draw(st.integers(0, 4))):
            conds = tuple(Cond(draw(st.integers(0, 5)), draw(st.sampled_from(OPS)), draw(values),
                               draw(st.none() | values)) for _ in range(draw(st.integers(0, 3))))
            rules.append(Rule(conds, act()))
        handlers[h] = Handler(h, rules=tuple(rules), default=act() if draw(st.booleans()) else None)
    by_arch = {}
    for a in arches:
        bias = X32 if a == "x32" else 0
        nrs = draw(st.lists(st.integers(0, 40), max_size=6, unique=True))
        by_arch[a] = {bias + n: draw(st.sampled_from(hnames)) for n in nrs}
    tables["syscalls"] = Table("syscalls", "nr", by_arch=by_arch,
                               default=act() if draw(st.booleans()) else None)
    return Policy("random", arches, act(allow_tail=False), draw(st.sampled_from(RETS)), tables,
                  handlers)


@st.composite
def calls(draw, policy):
    audits = sorted({AUDIT[a] for a in policy.arches}) + [0x12345678]
    arch = draw(st.sampled_from(audits))
    keys = [k for m in policy.tables["syscalls"].by_arch.values() for k in m]
    nr = draw(st.one_of(st.sampled_from(keys or [0]), st.integers(0, 50),
                        st.sampled_from([X32 | 3, X32, 0xFFFFFFFF, 1000, 511, 512])))
    interesting = [v for h in policy.handlers.values() for r in h.rules for c in r.conds
                   for v in c.interesting_values()]
    interesting += [k for t in policy.tables.values() for k in t.entries]
    arg = st.one_of(values, st.sampled_from(interesting or [0]))
    args = [draw(arg) for _ in range(6)]
    rules = [(h.name, r) for h in policy.handlers.values() for r in h.rules if r.conds]
    if rules and draw(st.booleans()):
        # aim at one rule: each of its conditions gets one of its own edge values, and the
        # call goes straight to its handler when the entry table holds it
        name, rule = draw(st.sampled_from(rules))
        for c in rule.conds:
            args[c.arg] = draw(st.sampled_from(c.interesting_values()))
        slots = [(a, n) for a, m in policy.tables["syscalls"].by_arch.items()
                 for n, h in m.items() if h == name]
        if slots:
            a, nr = draw(st.sampled_from(slots))
            arch = AUDIT[a]
    return SeccompData(nr, arch, 0, tuple(args))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_compiled_equals_reference(data):
    policy = data.draw(policies())
    lp = LoadedPolicy(policy, cache=False)
    cached = LoadedPolicy(policy, cache=True)
    for _ in range(12):
        call = data.draw(calls(policy))
        want = evaluate(policy, call)
        got = lp.decide(call)
        assert (got.ret, got.path, got.attempts, got.handler) == \
            (want.ret, want.path, want.attempts, want.handler), call
        for _ in range(2):   # the second answer may come from the cache
            again = cached.decide(call)
            assert (again.ret, again.path, again.attempts) == \
                (want.ret, want.path, want.attempts), call
        # the same call with one argument changed: a cache keyed on too few arguments would
        # answer with the verdict above
        k = data.draw(st.integers(0, 5))
        variant = SeccompData(call.nr, call.arch, 0, call.args[:k] + (data.draw(values),)
                              + call.args[k + 1:])
        assert cached.decide(variant).ret == evaluate(policy, variant).ret, variant


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(OPS), values, st.none() | values, st.integers(0, 5))
def test_each_matcher_at_its_edges(op, value, mask, arg):
    """A one-condition handler, run at each of the condition's interesting values: the compiled
    verdict is the condition's own truth (Cond.holds) and the reference's."""
    cond = Cond(arg, op, value, mask)
    h = Handler("h", rules=(Rule((cond,), Act(ret=actions.ERRNO | 1)),), default=Act(ret=actions.ALLOW))
    pol = Policy("m", ("x86_64",), Act(ret=actions.LOG), actions.KILL_PROCESS,
                 {"syscalls": Table("syscalls", "nr", by_arch={"x86_64": {0: "h"}})}, {"h": h})
    lp = LoadedPolicy(pol, cache=False)
    for x in cond.interesting_values():
        args = [0] * 6
        args[arg] = x
        call = SeccompData(0, X86_64, 0, tuple(args))
        want = actions.ERRNO | 1 if cond.holds(args) else actions.ALLOW
        assert lp.decide(call).ret == want == evaluate(pol, call).ret, (str(cond), hex(x))
