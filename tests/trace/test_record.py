"""Trace files: the Recorder writes what the reader gives back, a killed recorder leaves a readable
prefix, and every malformed line is one TraceError naming file:line."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sysdispatch.cli import main
from sysdispatch.errors import TraceError
from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.seccomp import actions
from sysdispatch.trace.events import FORMAT_VERSION, Event, Header
from sysdispatch.trace.record import Recorder, TraceReader, read_events, read_header

from record_helpers import FILTERS, WORKLOAD, decide_events, header_for, record

U64 = st.integers(0, 2**64 - 1)
HEADER = Header("x86_64", "dispatch-demo", "ab" * 32, ("ls", "-l", "/tmp"), 1717171717.25)

events_st = st.builds(
    Event,
    time=st.floats(0, 1e6, allow_nan=False),
    pid=st.integers(1, 2**31 - 1), tid=st.integers(1, 2**31 - 1),
    nr=st.integers(-(2**31), 2**31 - 1), name=st.text(max_size=20),
    arch=st.integers(0, 2**32 - 1), ip=U64, args=st.tuples(U64, U64, U64, U64, U64, U64),
    verdict=st.integers(0, 2**32 - 1), handler=st.text(max_size=12),
    path=st.lists(st.text(max_size=12), max_size=5).map(tuple), enforced=st.booleans(),
    decoded=st.dictionaries(st.text(max_size=8), st.text(max_size=30), max_size=3),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(events_st, max_size=30), st.integers(1, 8))
def test_round_trip_any_events(tmp_path, events, flush_every):
    path = tmp_path / "t.jsonl"
    with Recorder(path, HEADER, flush_every=flush_every) as rec:
        for ev in events:
            rec(ev)
    with TraceReader(path) as trace:
        assert trace.header == HEADER
        assert list(trace) == [dataclasses.replace(e, time=round(e.time, 6)) for e in events]
        assert trace.events == len(events) and trace.truncated is None


def test_lines_hold_the_documented_fields(tmp_path):
    pol = LoadedPolicy.from_file(FILTERS / "dispatch-demo.toml")
    events = decide_events(pol, WORKLOAD)
    path = record(tmp_path / "t.jsonl", header_for(FILTERS / "dispatch-demo.toml", ["ls"]), events)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    head = lines[0]
    assert head["format"] == "sysdispatch-trace" and head["version"] == FORMAT_VERSION
    assert head["policy"] == "dispatch-demo" and head["command"] == ["ls"]
    assert head["policy_hash"] == __import__("hashlib").sha256(
        (FILTERS / "dispatch-demo.toml").read_bytes()).hexdigest()
    assert len(lines) == 1 + len(WORKLOAD)
    creating = lines[2]  # openat with O_CREAT: the rules handler says EACCES
    assert creating["name"] == "openat" and creating["verdict"] == actions.ERRNO | 13
    assert creating["verdict_text"] == "ERRNO(13)" and creating["handler"] == "openat_rules"
    assert creating["path"] == ["syscall_entry", "tail_call syscalls[257]", "openat_rules"]
    inet6 = lines[7]    # socket(AF_INET6): two tail calls deep
    assert inet6["verdict_text"] == "LOG" and inet6["path"][-2] == "tail_call families[10]"
    assert all(set(x) >= {"time", "pid", "tid", "nr", "arch", "ip", "args", "enforced",
                          "decoded"} for x in lines[1:])


def test_recorder_writes_in_small_batches_before_close(tmp_path):
    path = tmp_path / "t.jsonl"
    ev = Event(0.0, 1, 1, 0, "read", 0xC000003E, 0, (0,) * 6, actions.ALLOW)
    rec = Recorder(path, HEADER, flush_every=4, flush_interval=10.0)
    assert len(path.read_text().splitlines()) == 1, "the header is written at once"
    for _ in range(3):
        rec(ev)
    assert len(path.read_text().splitlines()) == 1
    rec(ev)
    assert len(path.read_text().splitlines()) == 5, "a full batch goes to the kernel"
    rec(Event(10.5, 1, 1, 0, "read", 0xC000003E, 0, (0,) * 6, actions.ALLOW))
    assert len(path.read_text().splitlines()) == 6, "so does an event after the interval"
    rec.close()
    with pytest.raises(TraceError, match="closed"):
        rec(ev)


KILLED_RECORDER = textwrap.dedent("""
    import sys
    from sysdispatch.trace.events import Event, Header
    from sysdispatch.trace.record import Recorder
    rec = Recorder(sys.argv[1], Header("x86_64", "p", "h", ("x",), 0.0), flush_every=7)
    i = 0
    while True:
        rec(Event(i * 1e-6, 7, 7, i % 400, "n" * (i % 50), 0xC000003E, i, (i,) * 6, 0x7fff0000,
                  decoded={"k": "v" * (i % 300)}))
        i += 1
        if i == 2000:
            print("go", flush=True)
""")


def test_a_killed_recorder_leaves_a_readable_prefix(tmp_path):
    path = tmp_path / "killed.jsonl"
    child = subprocess.Popen([sys.executable, "-c", KILLED_RECORDER, str(path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "go\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    raw = path.read_bytes()
    # However the kill fell, the lines before the last are whole, in order, and readable.
    events = list(read_events(path, allow_truncated=True))
    assert len(events) >= 2000 - 7
    assert [e.nr for e in events] == [i % 400 for i in range(len(events))]
    # Simulate the kill falling inside a write: cut the file in the middle of a line.
    cut = raw.rindex(b"\n", 0, len(raw) - 1) + 40
    path.write_bytes(raw[:cut])
    n_whole = raw[:cut].count(b"\n") - 1
    with pytest.raises(TraceError) as exc:
        list(read_events(path))
    msg = str(exc.value)
    assert msg.startswith(f"{path}:{n_whole + 2}: truncated last line") and "\n" not in msg
    with TraceReader(path, allow_truncated=True) as trace:
        assert len(list(trace)) == n_whole
        assert trace.truncated.startswith(f"{path}:{n_whole + 2}: truncated last line")


def test_reader_streams(tmp_path):
    """Events come out while the writer is still writing (a FIFO), and reading a long trace keeps
    memory flat."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got_first = threading.Event()
    ev = Event(0.0, 1, 1, 0, "read", 0xC000003E, 0, (0,) * 6, actions.ALLOW)

    def writer():
        with open(fifo, "w") as f:
            rec = Recorder(f, HEADER, flush_every=1)
            rec(ev)
            assert got_first.wait(10), "the reader did not yield before the writer finished"
            rec(ev)
            rec.close()

    t = threading.Thread(target=writer)
    t.start()
    with TraceReader(fifo) as trace:
        assert next(trace) == ev
        got_first.set()
        assert list(trace) == [ev]
    t.join()

    big = tmp_path / "big.jsonl"
    with Recorder(big, HEADER) as rec:
        for i in range(20000):
            rec(Event(i * 1e-5, 9, 9, i % 300, "read", 0xC000003E, i, (i,) * 6, actions.ALLOW,
                      decoded={"buf": "x" * 200}))
    assert big.stat().st_size > 5_000_000
    tracemalloc.start()
    try:
        n = sum(1 for _ in read_events(big))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 20000 and peak < 200_000


def _write(tmp_path, *lines: str, name="bad.jsonl", end="\n"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + end)
    return path


def _good_event(**over) -> str:
    ev = {"time": 0.5, "pid": 10, "tid": 11, "nr": 257, "name": "openat", "arch": 0xC000003E,
          "ip": 4096, "args": [1, 2, 3, 4, 5, 6], "verdict": 0x50001, "verdict_text": "ERRNO(1)",
          "handler": "h", "path": ["syscall_entry"], "enforced": True, "decoded": {}}
    ev.update(over)
    return json.dumps({k: v for k, v in ev.items() if v is not ...})


GOOD_HEADER = json.dumps({"format": "sysdispatch-trace", "version": 1, "arch": "x86_64",
                          "policy": "p", "policy_hash": "h", "command": ["x"], "start_time": 1.0,
                          "mode": "enforce"})


@pytest.mark.parametrize("bad, where, what", [
    ('{"time": 0.5, "pid": 10,,}', ":3:25:", "not JSON: Expecting property name"),
    ("[1, 2]", ":3:", "expected a JSON object, got [1, 2]"),
    ("", ":3:", "empty line"),
    (_good_event(pid=0), ":3:", "event field 'pid': 0 is out of range 1..2147483647"),
    (_good_event(nr="257"), ":3:", "event field 'nr': expected an integer, got \"257\""),
    (_good_event(args=[1, 2, 3]), ":3:", "event field 'args': expected a list of 6 integers"),
    (_good_event(args=[1, 2, 3, 4, 5, 2**64]), ":3:", "is out of range 0..18446744073709551615"),
    (_good_event(args=[1, 2, 3, 4, 5, True]), ":3:", "expected an integer, got true"),
    (_good_event(verdict=-1), ":3:", "event field 'verdict': -1 is out of range"),
    (_good_event(time=float("nan")), ":3:", "event field 'time': expected a number, got NaN"),
    (_good_event(time=-1), ":3:", "event field 'time': negative time"),
    (_good_event(enforced=1), ":3:", "event field 'enforced': expected true or false, got 1"),
    (_good_event(decoded={"a": 1}), ":3:", "event field 'decoded': expected an object of strings"),
    (_good_event(path="syscall_entry"), ":3:", "event field 'path': expected a list of strings"),
    (_good_event(ip=...), ":3:", "event has no 'ip'"),
    (_good_event(verdict_text="ALLOW"), ":3:", "event 'verdict_text' \"ALLOW\" does not match"),
])
def test_malformed_event_lines(tmp_path, bad, where, what):
    path = _write(tmp_path, GOOD_HEADER, _good_event(), bad, _good_event())
    with pytest.raises(TraceError) as exc:
        list(read_events(path))
    msg = str(exc.value)
    assert msg.startswith(f"{path}{where} ") and what in msg and "\n" not in msg


@pytest.mark.parametrize("header, what", [
    ('{"format": "other"}', "1: not a sysdispatch trace"),
    (GOOD_HEADER.replace('"version": 1', '"version": 2'),
     "1: trace format version 2 is not supported (this sysdispatch reads version 1)"),
    (GOOD_HEADER.replace('"enforce"', '"loud"'), "1: header field 'mode': expected one of"),
    (GOOD_HEADER.replace('"command": ["x"], ', ""), "1: header has no 'command'"),
    ("not json", "1:1: not JSON: Expecting value"),
])
def test_malformed_headers(tmp_path, header, what):
    path = _write(tmp_path, header, _good_event())
    with pytest.raises(TraceError, match="^" + str(path).replace(".", r"\.") + ":") as exc:
        read_header(path)
    assert what in str(exc.value)


def test_empty_and_truncated_header_and_bad_bytes(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(TraceError, match=r"empty\.jsonl:1: empty file: no trace header"):
        read_header(empty)
    cut = tmp_path / "cut.jsonl"
    cut.write_text(GOOD_HEADER[:30])
    for allow in (False, True):  # no header means nothing to read, even when tolerating
        with pytest.raises(TraceError, match=r"cut\.jsonl:1: truncated last line"):
            TraceReader(cut, allow_truncated=allow)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(GOOD_HEADER.encode() + b"\n" + _good_event(name="\xe9").encode("latin-1")
                      .replace(b"\\u00e9", b"\xe9") + b"\n")
    with pytest.raises(TraceError, match=r"latin\.jsonl:2: not UTF-8 JSON"):
        list(read_events(latin))


def test_cli_reports_a_bad_trace_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, GOOD_HEADER, _good_event(), _good_event(args=[1]))
    assert main(["replay", str(path), "--policy", "default"]) == 2
    err = capsys.readouterr().err
    assert err == (f"sysdispatch: {path}:3: event field 'args': expected a list of 6 integers, "
                   f"got [1]\n")
    assert main(["replay", str(tmp_path / "missing.jsonl"), "--policy", "default"]) == 2
    assert "missing.jsonl: No such file or directory" in capsys.readouterr().err
    # a partial last line: refused with a hint, read with --allow-truncated (and a warning)
    cut = _write(tmp_path, GOOD_HEADER, _good_event(), _good_event()[:50], name="cut.jsonl", end="")
    assert main(["replay", str(cut), "--policy", "default"]) == 2
    err = capsys.readouterr().err
    assert f"{cut}:3: truncated last line" in err and "--allow-truncated" in err
    assert main(["replay", str(cut), "--policy", "default", "--allow-truncated"]) in (0, 1)
    out = capsys.readouterr()
    assert f"warning: {cut}:3: truncated last line" in out.err
    assert "1 syscalls" in out.out


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=7) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["time", "pid", "tid", "nr", "name", "arch", "ip", "args", "verdict",
                        "handler", "path", "enforced", "decoded"]),
       json_values | st.lists(st.integers(-1, 2**64), min_size=6, max_size=6))
def test_fast_and_field_by_field_checks_agree(key, value):
    """The reader checks a line in one expression and, only when that fails, field by field
    for the message: the two must accept exactly the same lines."""
    from sysdispatch.trace import record as rec
    obj = json.loads(_good_event())
    obj[key] = value
    fast = rec._well_formed_event(obj)
    reader = rec.TraceReader.__new__(rec.TraceReader)
    reader.path, reader.line = "x", 1
    try:
        slow = Event(*reader._fields(obj, rec._EVENT_FIELDS, "event"))
    except TraceError:
        slow = None
    assert fast == slow


@settings(max_examples=150, deadline=None)
@given(events_st)
def test_event_line_is_the_encoded_record(ev):
    """The recorder builds lines directly; they must be exactly the JSON of event_record."""
    from sysdispatch.trace.record import _encode, event_line, event_record
    assert event_line(ev) == _encode(event_record(ev)) + "\n"
    assert json.loads(event_line(ev)) == event_record(ev)
