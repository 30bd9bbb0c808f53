"""The dashboard model and view: real policy decisions fed to the model, the view rendered to a
fixed-width capture console and read back as text."""

from __future__ import annotations

import threading

from dash_helpers import (AF_INET, AF_NETLINK, NR, O_CREAT, demo_policy,  # noqa: F401
                          event, text_of)

from sysdispatch.dash.model import DashModel, column_of, tail_call_depth
from sysdispatch.dash.view import plain_line, render, sparkline
from sysdispatch.policy.loaded import LoadedPolicy


def fed(policy: LoadedPolicy) -> DashModel:
    m = DashModel(policy, command="demo-cmd", mode="enforce", live=False)
    for i in range(7):
        m(event(policy, "getppid", t=i * 0.3))
    m(event(policy, "openat", (0xFFFFFF9C, 0x1000, O_CREAT | 1), t=1.0,
            decoded={"pathname": "/tmp/x"}))
    m(event(policy, "openat", (0xFFFFFF9C, 0x1000, 0), t=1.1))
    m(event(policy, "socket", (AF_INET, 1, 0), t=2.5))
    for _ in range(3):
        m(event(policy, "socket", (AF_NETLINK, 3, 0), t=2.6))
    m(event(policy, "kill", (1, 9), t=2.7, pid=101))
    m.close()
    return m


def row_line(text: str, name: str) -> list[str]:
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row for {name} in:\n{text}")


def test_table_counts_handlers_depth_and_verdicts(demo):
    text = text_of(render(fed(demo).snapshot()))
    # syscall nr calls handler depth allow log errno trap trace kill last-args...
    assert row_line(text, "getppid")[:11] == ["getppid", "110", "7", "default", "0", "7", ".",
                                             ".", ".", ".", "."]
    openat = row_line(text, "openat")
    assert openat[:11] == ["openat", "257", "2", "openat_rules", "1", "1", ".", "1", ".", ".", "."]
    sock = row_line(text, "socket")
    # socket -> socket_by_family -> families[AF_NETLINK] is empty: the tail call falls through
    # to the table default EAFNOSUPPORT, so the last call reached one program (depth 1)
    assert sock[:3] == ["socket", "41", "4"] and sock[5:8] == ["1", ".", "3"]
    assert sock[3] == "socket_by_family" and sock[4] == "1"
    assert row_line(text, "kill")[:8] == ["kill", "62", "1", "no_kill_init", "1", ".", ".", "1"]


def test_header_and_panels(demo):
    text = text_of(render(fed(demo).snapshot()))
    head, stats = text.splitlines()[:2]
    assert head == "sysdispatch demo-cmd  policy dispatch-demo (enforce)"
    assert stats.startswith("2 proc/2 thr seen  0:00:00  ")
    assert "14 total" in stats and "[finished]" in stats
    assert "syscalls_x86_64 4/" in text or "syscalls 4/" in text   # 4 filled nr slots
    assert "families 3/" in text
    assert "ERRNO(EACCES)" in text and "pathname=/tmp/x" in text
    assert "ERRNO(EAFNOSUPPORT)" in text and "ERRNO(EPERM)" in text


def test_rows_sorted_by_calls_then_denials(demo):
    m = fed(demo)
    names = [r.name for r in m.snapshot().rows]
    assert names == ["getppid", "socket", "openat", "kill"]
    assert m.toggle_sort() == "denials"
    text = text_of(render(m.snapshot()))
    order = [ln.split()[0] for ln in text.splitlines()
             if ln.split() and ln.split()[0] in NR]
    assert order == ["socket", "openat", "kill", "getppid"]   # 3 denials; 1 each, by calls
    assert "by denials" in text


def test_rate_buckets_and_sparkline(demo):
    m = DashModel(demo, live=False)
    for t, n in ((0.1, 2), (1.5, 8), (3.2, 4)):
        for _ in range(n):
            m(event(demo, "getppid", t=t))
    s = m.snapshot()
    assert s.rates == (2, 8, 0, 4)     # a second without events is a zero
    assert s.rate == 0.0                # the last complete second
    line = sparkline(s.rates, 10)
    assert len(line) == 4 and line[2] == " " and line[1] == "█" and line[0] < line[3]


def test_plain_line(demo):
    line = plain_line(fed(demo).snapshot())
    assert "14 syscalls" in line and "5 denied" in line and "getppid=7" in line


def test_model_helpers(demo):
    assert tail_call_depth(("syscall_entry", "tail_call syscalls[41]", "socket_by_family",
                            "tail_call families[16]")) == 2
    assert column_of(0x00050000 | 13) == "errno" and column_of(0x7FFF0000) == "allow"
    assert column_of(0x12340000) == "kill"   # unknown actions kill, as the kernel enforces


def test_snapshot_while_feeding_from_another_thread(demo):
    """The tracer thread feeds while a view thread snapshots: counts stay consistent."""
    m = DashModel(demo, live=False)
    ev = event(demo, "getppid")
    stop = threading.Event()
    seen = []

    def view():
        while not stop.is_set():
            s = m.snapshot()
            seen.append(sum(r.calls for r in s.rows) == s.events)

    th = threading.Thread(target=view)
    th.start()
    for _ in range(20000):
        m(ev)
    stop.set()
    th.join()
    assert m.snapshot().events == 20000 and seen and all(seen)


def test_alive_counts_live_processes(demo):
    import os
    import subprocess
    m = DashModel(demo, live=True)
    child = subprocess.Popen(["sleep", "5"])
    try:
        m(event(demo, "getppid", pid=child.pid))
        m(event(demo, "getppid", pid=os.getpid()))
        assert m.snapshot().processes == 2
        child.kill()
        child.wait()
        s = m.snapshot()
        assert (s.processes, s.threads, s.alive_known) == (1, 1, True)
    finally:
        child.kill()


def test_header_is_one_line_for_a_long_command(demo):
    m = DashModel(demo, command="python3 -c 'import socket\nfor f in (1, 2):\n" + "x" * 200 + "'",
                  live=False)
    m(event(demo, "getppid"))
    text = text_of(render(m.snapshot()), width=100)
    head, stats, title = text.splitlines()[:3]
    assert head.startswith("sysdispatch python3 -c 'import socket for f in (1, 2): xxx")
    assert "…" in head and head.endswith("policy dispatch-demo (enforce)")
    assert stats.startswith("1 proc/1 thr seen") and title.startswith("syscalls (by calls")
