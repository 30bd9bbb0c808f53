"""The policy reader: the model it builds, and one exact `file:line:col: message` per mistake."""

from __future__ import annotations

import textwrap

import pytest

from sysdispatch.errors import PolicyError
from sysdispatch.policy import parse
from sysdispatch.policy.model import Act, Cond
from sysdispatch.seccomp import actions

DEMO = textwrap.dedent('''\
    # demo
    [policy]
    name = "demo"
    arches = ["x86_64", "x32"]
    default = "allow"

    [maps.opens]
    type = "array"
    key_size = 4
    value_size = 8
    max_entries = 1

    [tables.syscalls]
    index = "nr"
    [tables.syscalls.entries]
    openat = "openat_rules"
    ptrace = "log"
    socket = "by_family"
    "0x40000200" = "errno(EPERM)"

    [tables.families]
    index = "args[0]"
    default = "errno(EAFNOSUPPORT)"
    [tables.families.entries]
    AF_INET = "allow"
    "AF_UNIX" = "allow"
    "0x10" = "log"

    [handlers.openat_rules]
    rules = [
      { when = ["args[2] & O_CREAT|O_TRUNC == O_CREAT"], action = "errno(EACCES)" },
      { when = ["args[0] == -100", "args[2] >= 0x8000"], action = "trap(7)" },
      { action = "trace(3)" },
    ]

    [handlers.by_family]
    default = "tail_call(families)"

    [handlers.count]
    maps = ["opens"]
    asm = """
    r0 = 0
    exit
    """
    ''')


def test_demo_model():
    p = parse.loads(DEMO, "demo.toml")
    assert p.name == "demo" and p.arches == ("x86_64", "x32")
    assert p.default == Act(ret=actions.ALLOW) and p.bad_arch == actions.KILL_PROCESS
    sc = p.tables["syscalls"]
    # names resolve per arch through libseccomp; x32 numbers carry their bit
    assert sc.by_arch["x86_64"] == {257: "openat_rules", 101: "log", 41: "by_family"}
    assert sc.by_arch["x32"][0x40000000 | 257] == "openat_rules"
    assert sc.by_arch["x32"][0x40000200] == "errno(1)"      # a number applies to its own ABI only
    assert 0x40000200 not in sc.by_arch["x86_64"] and 512 not in sc.by_arch["x86_64"]
    fam = p.tables["families"]
    assert fam.entries == {2: "allow", 1: "allow", 16: "log"} and fam.arg == 0
    assert fam.default == Act(ret=actions.ERRNO | 97)
    h = p.handlers["openat_rules"]
    assert h.rules[0].conds == (Cond(2, "==", 0o100, 0o100 | 0o1000),)
    assert h.rules[0].then == Act(ret=actions.ERRNO | 13)
    assert h.rules[1].conds == (Cond(0, "==", 2**64 - 100), Cond(2, ">=", 0x8000))
    assert h.rules[2].conds == () and h.rules[2].then == Act(ret=actions.TRACE | 3)
    assert h.default is None and p.handler_default(h) == p.default
    assert p.handlers["by_family"].default == Act(tail_call="families")
    # action literals in entries become one-line handlers named by their literal
    assert p.handlers["log"].synthetic and p.handlers["log"].default == Act(ret=actions.LOG)
    assert p.handlers["errno(1)"].default == Act(ret=actions.ERRNO | 1)
    asm = p.handlers["count"]
    assert asm.kind == "asm" and asm.maps == ("opens",) and asm.asm.startswith("r0 = 0\n")
    assert asm.asm_origin == (42, 1)   # the line after `asm = """`
    assert p.handlers["openat_rules"].rules[1].conds[1].loc.line == 32


def test_locations_of_values():
    p = parse.loads(DEMO, "demo.toml")
    assert str(p.tables["families"].loc) == "demo.toml:21:9"
    assert str(p.handlers["openat_rules"].rules[0].then.loc) == "demo.toml:31:63"


def test_no_nr_table_gets_an_empty_entry_table():
    p = parse.loads('[policy]\ndefault = "log"\n', "x.toml")
    assert p.entry_table == "syscalls" and p.tables["syscalls"].by_arch == {"x86_64": {}}
    assert p.name == "x"


def _with(old: str, new: str) -> str:
    assert old in DEMO, old
    return DEMO.replace(old, new, 1)


# (variant of DEMO, expected one-line error). Line/col are 1-based and name the offending token.
ERRORS = [
    (_with('name = "demo"', 'name = "demo'), "demo.toml:3:13: Illegal character"),
    (_with('name = "demo"', 'nmae = "demo"'), "demo.toml:3:1: unknown key 'nmae' in [policy]"),
    (_with('default = "allow"\n\n[maps', 'default = "alow"\n\n[maps'),
     "demo.toml:5:11: unknown seccomp action 'alow'"),
    (_with('default = "allow"\n\n[maps', '\n\n[maps'), "demo.toml:2:2: [policy] needs 'default'"),
    (_with('"x86_64", "x32"', '"x86_64", "x86-64"'), "demo.toml:4:21: unknown architecture 'x86-64'"),
    (_with('"x86_64", "x32"', '"x86_64", "amd64"'), "demo.toml:4:21: architecture 'x86_64' listed twice"),
    (_with('type = "array"', 'type = "ring"'), "demo.toml:8:8: map type must be 'array' or 'hash'"),
    (_with('key_size = 4', 'key_size = 8'), "demo.toml:9:12: an array map's key_size must be 4"),
    (_with('openat = "openat_rules"', 'opnat = "openat_rules"'),
     "demo.toml:16:1: unknown syscall 'opnat' (not a syscall on x86_64, x32)"),
    (_with('openat = "openat_rules"', 'openat = "openat_rule"'),
     "demo.toml:16:10: 'openat_rule' is neither a handler nor an action (unknown seccomp action"),
    (_with('ptrace = "log"', 'ptrace = "errno(EFOO)"'), "demo.toml:17:10: bad action data 'efoo'"),
    (_with('ptrace = "log"', '"257" = "log"'),
     "demo.toml:17:1: 'openat' and '257' are the same syscall (257 on x86_64)"),
    (_with('"0x40000200" = "errno(EPERM)"', '"-1" = "log"'),
     "demo.toml:19:1: syscall number -1 out of range"),
    (_with('index = "args[0]"', 'index = "args[6]"'),
     'demo.toml:22:9: table index must be "nr" or "args[0]" .. "args[5]", not \'args[6]\''),
    (DEMO + '[tables.more]\nindex = "nr"\n',
     "demo.toml:45:9: table 'more': only one table may be indexed by nr (the entry table "
     "'syscalls' at 13:9)"),
    (_with('AF_INET = "allow"', 'AF_INTE = "allow"'), "demo.toml:25:1: unknown constant 'AF_INTE'"),
    (_with('"AF_UNIX" = "allow"', '"AF_UNIX|AF_INTE" = "allow"'),
     "demo.toml:26:10: unknown constant 'AF_INTE'"),
    (_with('AF_INET = "allow"', '"1" = "allow"'),
     "demo.toml:26:1: '1' and 'AF_UNIX' are the same key (1)"),
    (_with('"0x10" = "log"', '"0x10000" = "log"'),
     "demo.toml:27:1: key 0x10000 (0x10000) too large: keys of an args table must be below 65536"),
    (_with('[tables.families]\n', '[tables.families]\nsize = 2\n'),
     "demo.toml:22:8: table size 2 is too small for slot 16"),
    (_with('& O_CREAT|O_TRUNC ==', '& O_CREAT|O_TRUNK =='),
     "demo.toml:31:32: unknown constant 'O_TRUNK'"),
    (_with('"args[0] == -100"', '"args[7] == -100"'),
     "demo.toml:32:19: argument index must be 0..5, not '7'"),
    (_with('"args[0] == -100"', '"args[0] =< -100"'),
     "demo.toml:32:13: cannot read condition 'args[0] =< -100'"),
    (_with('"args[2] >= 0x8000"', '"args[2] >= 0x1_0000_0000_0000_0000"'),
     "demo.toml:32:44: 0x1_0000_0000_0000_0000 does not fit in 64 bits"),
    (_with('"args[2] >= 0x8000"', '"args[2] >= "'),
     "demo.toml:32:43: condition 'args[2] >= ' has no value after '>='"),
    (_with('"args[2] >= 0x8000"', '"args[2] >= 12abc"'),
     "demo.toml:32:44: '12abc' is neither a number nor a constant name"),
    (_with('"args[2] >= 0x8000"', '"args[2] >= O_CREAT | | 1"'),
     "demo.toml:32:54: empty term in 'O_CREAT | | 1'"),
    (_with('{ action = "trace(3)" }', '{ action = "trace(3)", then = "x" }'),
     "demo.toml:33:26: unknown key 'then' in a rule of handler 'openat_rules'"),
    (_with('{ action = "trace(3)" }', '{ when = 3, action = "trace(3)" }'),
     "demo.toml:33:12: 'when' must be a list of conditions, not an integer"),
    (_with('default = "tail_call(families)"', 'default = "tail_call(famlies)"'),
     "demo.toml:37:11: tail_call to unknown table 'famlies' (args tables: families)"),
    (_with('default = "tail_call(families)"', 'default = "tail_call(syscalls)"'),
     "demo.toml:37:11: tail_call(syscalls): the nr table is entered only by syscall_entry"),
    (_with('maps = ["opens"]', 'maps = ["open"]'),
     "demo.toml:40:9: handler 'count' uses undeclared map 'open'"),
    (_with('[handlers.count]', '[handlers.log]'),
     "demo.toml:39:11: handler name 'log' is an action literal"),
    (_with('[handlers.by_family]\n', '[handlers.by_family]\nasm = "exit"\n'),
     "demo.toml:37:1: handler 'by_family' mixes rules and asm"),
    (_with('[handlers.by_family]\ndefault = "tail_call(families)"\n', '[handlers.by_family]\n'),
     "demo.toml:36:11: handler 'by_family' has none of rules, default, asm, elf"),
    (DEMO + '[tables.t2]\nindex="args[1]"\ndefault="tail_call(t3)"\n'
            '[tables.t3]\nindex="args[2]"\ndefault="tail_call(t2)"\n',
     "demo.toml:50:9: table defaults tail-call in a circle: t2 -> t3 -> t2"),
    (_with('default = "allow"\n\n[maps', 'default = "tail_call(t2)"\n\n[maps')
     + '[tables.t2]\nindex="args[1]"\n',
     "demo.toml:5:11: table defaults tail-call in a circle: t2 -> t2"),
    ("[policy]\ndefault = 'allow'\n[extra]\n", "demo.toml:3:2: unknown key 'extra' in the policy file"),
    ("handlers = 3\n[policy]\ndefault = 'allow'\n", "demo.toml:1:12: 'handlers' must be a table"),
    ("[maps]\n", "demo.toml:1:1: missing [policy] section"),
    (_with('[tables.families]', '[tables."fam ilies"]'),
     "demo.toml:21:9: 'fam ilies' is not a valid table name"),
    (_with('[tables.families]', '[tables.opens]'), "demo.toml:21:9: table 'opens' has the name of a map"),
]


@pytest.mark.parametrize("text,expected", ERRORS, ids=[e[1][:60] for e in ERRORS])
def test_errors_are_one_line_with_location(text, expected):
    with pytest.raises(PolicyError) as info:
        parse.loads(text, "demo.toml")
    msg = str(info.value)
    assert "\n" not in msg
    assert expected in msg, msg


def test_arch_dependent_constant_resolves_when_arches_agree():
    p = parse.loads('[policy]\ndefault = "allow"\narches = ["x86_64", "x86"]\n'
                    '[handlers.h]\nrules = [{ when = ["args[1] & O_DIRECTORY != 0"], '
                    'action = "log" }]\n', "x.toml")
    assert p.handlers["h"].rules[0].conds[0].mask == 0o200000
    with pytest.raises(PolicyError, match=r"x\.toml:5:31: constant 'O_DIRECTORY' differs between "
                                          r"architectures \(x86_64 0o200000, aarch64 0o40000\)"):
        parse.loads('[policy]\ndefault = "allow"\narches = ["x86_64", "aarch64"]\n'
                    '[handlers.h]\nrules = [{ when = ["args[1] & O_DIRECTORY != 0"], '
                    'action = "log" }]\n', "x.toml")


def test_load_reads_file(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[policy]\ndefault = "errno(EPERM)"\n')
    assert parse.load(f).default == Act(ret=actions.ERRNO | 1)
    f.write_text('[policy]\ndefault = "errno(EPERM)"\nbad_arch = "tail_call(x)"\n')
    with pytest.raises(PolicyError, match=r"p\.toml:3:12: tail_call to unknown table 'x'"):
        parse.load(f)
