"""The --summary table: counts per syscall, verdict and handler; text, rich and JSON renderings."""

from __future__ import annotations

import io
from collections import Counter

from rich.console import Console

from sysdispatch.dash.summary import summary_table
from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.seccomp import actions
from sysdispatch.seccomp import arch as _arch
from sysdispatch.trace.events import Event, Header
from sysdispatch.trace.summary import Summary, format_text

from record_helpers import FILTERS, WORKLOAD, decide_events

X86_64 = 0xC000003E
HEADER = Header("x86_64", "demo", "h", ("ls",), 0.0)


def _ev(t, nr, name, verdict, handler="default", *, pid=1, tid=1, arch=X86_64, enforced=True):
    return Event(t, pid, tid, nr, name, arch, 0, (0,) * 6, verdict, handler, enforced=enforced)


FIXED = [
    _ev(0.0, 0, "read", actions.ALLOW),
    _ev(0.1, 0, "read", actions.ALLOW, tid=2),
    _ev(0.2, 257, "openat", actions.ERRNO | 13, "openat_rules"),
    _ev(0.3, 257, "openat", actions.ALLOW, "openat_rules", pid=7, tid=7),
    _ev(0.4, 257, "openat", actions.LOG, "openat_rules"),
    _ev(0.5, 101, "ptrace", actions.LOG, "log"),
    _ev(0.6, 0, "read", actions.ALLOW),
    _ev(1.5, 3, "close", actions.ALLOW, arch=_arch.I386.audit),
]

GOLDEN = """\
% calls calls allow log errno syscall      handlers
------- ----- ----- --- ----- ------------ --------
  37.50     3     1   1     1 openat       openat_rules
  37.50     3     3   0     0 read         default
  12.50     1     1   0     0 close (i386) default
  12.50     1     0   1     0 ptrace       log
------- ----- ----- --- ----- ------------ --------
 100.00     8     5   2     1 total        3 handlers
8 syscalls in 1.500 s, 2 processes, 3 threads, policy demo (enforce)
"""


def _summary(events, header=HEADER) -> Summary:
    s = Summary(header)
    for ev in events:
        s(ev)
    s.close()
    return s


def test_text_table_golden():
    assert format_text(_summary(FIXED)) == GOLDEN


def test_counts_match_the_events():
    pol = LoadedPolicy.from_file(FILTERS / "dispatch-demo.toml")
    events = decide_events(pol, WORKLOAD * 5)
    doc = _summary(events).to_json()
    calls = Counter(e.name for e in events)
    assert {r["syscall"]: r["calls"] for r in doc["syscalls"]} == calls
    assert [r["calls"] for r in doc["syscalls"]] == sorted(calls.values(), reverse=True)
    for row in doc["syscalls"]:
        mine = [e for e in events if e.name == row["syscall"]]
        assert row["verdicts"] == Counter(actions.describe(e.verdict) for e in mine)
        assert row["handlers"] == Counter(e.handler for e in mine)
        assert sum(row["actions"].values()) == row["calls"]
    assert doc["total"]["calls"] == doc["events"] == len(events)
    assert doc["total"]["actions"] == {"allow": 40, "errno": 15, "log": 15}


def test_columns_follow_what_happened():
    only_allow = _summary([_ev(0, 0, "read", actions.ALLOW)])
    assert only_allow.columns() == ["% calls", "calls", "allow", "syscall", "handlers"]
    odd = _summary([_ev(0, 0, "read", actions.TRAP | 1), _ev(0, 0, "read", 0x12340000),
                    _ev(0, 0, "read", actions.KILL_THREAD, enforced=False),
                    _ev(0, 0, "read", actions.TRACE | 5)])
    assert odd.columns() == ["% calls", "calls", "allow", "trace", "trap", "kill", "reported",
                             "syscall", "handlers"]
    body, total = odd.cells()
    # an unknown action is enforced as a kill, so it counts there
    assert body[0][:7] == ["100.00", "4", "0", "1", "1", "2", "1"]
    x32 = _summary([_ev(0, 0x40000000, "read", actions.ALLOW)])
    assert x32.syscall_label(x32.rows()[0]) == "read (x32)"
    assert _summary([]).cells()[1][:3] == ["0.00", "0", "0"]


def test_rich_table_draws_the_same_cells():
    console = Console(file=io.StringIO(), width=100, color_system=None, record=True)
    console.print(summary_table(_summary(FIXED), title="syscalls"))
    text = console.export_text()
    lines = [ln.rstrip() for ln in text.splitlines()]
    assert lines[0].strip() == "syscalls"
    header = next(ln for ln in lines if "% calls" in ln)
    assert header.split() == ["%", "calls", "calls", "allow", "log", "errno", "syscall",
                              "handlers"]
    assert any(ln.split() == ["37.50", "3", "1", "1", "1", "openat", "openat_rules"]
               for ln in lines)
    assert any(ln.split() == ["100.00", "8", "5", "2", "1", "total", "3", "handlers"]
               for ln in lines)
    assert lines[-1].strip() == "8 syscalls in 1.500 s, 2 processes, 3 threads, policy demo " \
                                "(enforce)"
