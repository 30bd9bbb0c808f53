"""The TOML locator: key paths to line:col, for the shapes TOML allows."""

from __future__ import annotations

import textwrap

from sysdispatch.policy.locate import Locator

TEXT = textwrap.dedent('''\
    # comment
    top = 1
    [a.b]
    "quoted key" = 'lit'
    dotted.key = "x"   # trailing comment
    arr = [
      1,   # one
      { k = "v", n = [10, 20] },
    ]
    [[aot]]
    x = 1
    [[aot]]
    x = 2
    [aot.sub]
    y = """
    line one
    line two"""
    ''')


def where(loc):
    return (loc.line, loc.col)


def test_keys_and_values():
    at = Locator(TEXT, "t.toml")
    assert where(at.key(("top",))) == (2, 1) and where(at.value(("top",))) == (2, 7)
    assert where(at.key(("a", "b"))) == (3, 4)
    assert where(at.key(("a", "b", "quoted key"))) == (4, 1)
    assert where(at.value(("a", "b", "quoted key"))) == (4, 16)
    assert where(at.key(("a", "b", "dotted", "key"))) == (5, 8)
    assert where(at.value(("a", "b", "dotted", "key"))) == (5, 14)
    assert where(at.value(("a", "b", "arr", 0))) == (7, 3)
    assert where(at.value(("a", "b", "arr", 1))) == (8, 3)
    assert where(at.key(("a", "b", "arr", 1, "k"))) == (8, 5)
    assert where(at.value(("a", "b", "arr", 1, "n", 1))) == (8, 23)
    assert where(at.value(("aot", 0, "x"))) == (11, 5)
    assert where(at.value(("aot", 1, "x"))) == (13, 5)
    assert where(at.key(("aot", 1, "sub", "y"))) == (15, 1)
    assert at.string_origin(("aot", 1, "sub", "y")) == (16, 1)
    assert str(at.key(("top",))) == "t.toml:2:1"


def test_inside_strings_and_fallbacks():
    at = Locator('k = "args[7] == 1"\nm = "a\\\\b c"\n', "f")
    assert where(at.inside(("k",), 5)) == (1, 11)
    assert where(at.inside(("m",), 4)) == (2, 5)          # an escape before: the string's start
    assert where(at.value(("k", "nosuch", 3))) == (1, 5)   # unknown: the nearest known parent
    assert at.key(("nothing",)).line is None


def test_scanner_never_raises():
    for text in ("a = [1, 2", "[x\n", 'k = """open', "= 1", "a.b.c = {x = [1, {y = 2}]}"):
        Locator(text, "bad")                               # positions only cost precision
