"""Damaged policy files: whatever the damage, reading and compiling ends in success or in one
PolicyError line — never a Python exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sysdispatch.errors import PolicyError
from sysdispatch.policy import parse
from sysdispatch.policy.compile import compile_policy
from tests.conftest import REPO

SOURCES = [(REPO / "filters" / f).read_text() for f in ("dispatch-demo.toml", "fault-inject.toml")]
PIECES = ['"', "'", "[", "]", "{", "}", "=", ",", "\n", "#", "args[", "&", "|", "==", "<", "0x",
          "-", "tail_call(", ")", "9" * 25, "nr", "errno(", "\\", '"""', ".", "maps", "O_CREAT"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SOURCES), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 3),
                                                    st.sampled_from(PIECES)), min_size=1,
                                          max_size=4))
def test_damaged_policies_fail_cleanly(source, edits):
    text = source
    for where, cut, piece in edits:
        i = int(where * len(text))
        text = text[:i] + piece + text[i + cut:]
    try:
        compile_policy(parse.loads(text, "fuzz.toml"))
    except PolicyError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz.toml"), str(exc)
