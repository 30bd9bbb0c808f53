"""Trace files: the :class:`Recorder` sink that writes them and the streaming reader.

A trace is JSON Lines (UTF-8, one object per line). Line 1 is the header, every other line one
dispatched syscall::

    {"format":"sysdispatch-trace","version":1,"arch":"x86_64","policy":"default",
     "policy_hash":"3f1c...","command":["ls","-l"],"start_time":1717171717.25,"mode":"enforce"}
    {"time":0.0012,"pid":41,"tid":41,"nr":257,"name":"openat","arch":3221225534,"ip":...,
     "args":[4294967196,...],"verdict":327693,"verdict_text":"ERRNO(13)","handler":"openat_rules",
     "path":["syscall_entry","tail_call syscalls[257]","openat_rules"],"enforced":true,
     "decoded":{"pathname":"/etc/shadow"}}

Integers are exact (``args`` are unsigned 64-bit: a reader whose JSON numbers are doubles loses
precision above 2**53). ``time`` (seconds since the trace started) is rounded to microseconds: a
ptrace stop takes longer than that. ``verdict_text`` is redundant with ``verdict`` and checked
against it.

Crash safety: the recorder hands lines to the kernel in small batches (a full batch, or 50 ms of
trace time since the last write), so a recorder killed outright leaves a prefix of whole lines and
at most one partial last line. The reader refuses a partial last line unless asked to tolerate
it (``allow_truncated``), and then says so in :attr:`TraceReader.truncated`. Any other bad line
is a :class:`~sysdispatch.errors.TraceError` naming ``file:line``.

The reader is an iterator over :class:`~sysdispatch.trace.events.Event` values: constant memory
whatever the trace's length.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from ..errors import Location, TraceError
from ..seccomp import actions
from .events import FORMAT_VERSION, Event, Header

FORMAT = "sysdispatch-trace"
U64 = (1 << 64) - 1
MODES = ("enforce", "audit")

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_decode = json.JSONDecoder().decode


def policy_hash(data: bytes) -> str:
    """The ``policy_hash`` of a header: sha256 of the policy file's bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


def policy_file_hash(path: str | os.PathLike) -> str:
    return policy_hash(Path(path).read_bytes())


# --- writing ------------------------------------------------------------------------------------

def header_record(header: Header) -> dict[str, Any]:
    return {"format": FORMAT, "version": header.version, "arch": header.arch,
            "policy": header.policy, "policy_hash": header.policy_hash,
            "command": list(header.command), "start_time": header.start_time,
            "mode": header.mode}


def event_record(ev: Event) -> dict[str, Any]:
    """An event as its JSON object: the definition of a trace line."""
    return {"time": round(ev.time, 6), "pid": ev.pid, "tid": ev.tid, "nr": ev.nr, "name": ev.name,
            "arch": ev.arch, "ip": ev.ip & U64, "args": [a & U64 for a in ev.args],
            "verdict": ev.verdict, "verdict_text": _describe(ev.verdict), "handler": ev.handler,
            "path": list(ev.path), "enforced": ev.enforced, "decoded": ev.decoded}


def event_line(ev: Event) -> str:
    """``_encode(event_record(ev)) + "\\n"``, built directly: this runs once per recorded syscall,
    and JSON-encoding the dict costs three times as much. (A test checks the two agree.)"""
    a = ev.args
    return (f'{{"time":{round(ev.time, 6)!r},"pid":{ev.pid},"tid":{ev.tid},"nr":{ev.nr},'
            f'"name":{_string(ev.name)},"arch":{ev.arch},"ip":{ev.ip & U64},'
            f'"args":[{a[0] & U64},{a[1] & U64},{a[2] & U64},{a[3] & U64},{a[4] & U64},'
            f'{a[5] & U64}],"verdict":{ev.verdict},"verdict_text":"{_describe(ev.verdict)}",'
            f'"handler":{_string(ev.handler)},"path":{_path(ev.path)},'
            f'"enforced":{"true" if ev.enforced else "false"},'
            f'"decoded":{_encode(ev.decoded) if ev.decoded else "{}"}}}\n')


# Encodings of the few distinct names, handlers, paths and verdicts a trace holds, remembered
# (a bounded cache, should a trace somehow hold very many).
_remembered = functools.lru_cache(maxsize=4096)
_string = _remembered(_encode)
_path = _remembered(lambda path: _encode(list(path)))
_describe = _remembered(actions.describe)


class Recorder:
    """A tracer sink writing a trace file: ``rec = Recorder("t.jsonl", header)``, then
    ``rec(event)`` per dispatched syscall and ``rec.close()``.

    ``out`` is a path or an open text file (not closed by :meth:`close`). Lines are written to
    the kernel once ``flush_every`` events are waiting or ``flush_interval`` seconds of trace
    time have passed since the last write (``flush_every=1``: every event at once).
    """

    def __init__(self, out: str | os.PathLike | IO[str], header: Header, *,
                 flush_every: int = 64, flush_interval: float = 0.05) -> None:
        if flush_every < 1:
            raise ValueError("flush_every must be >= 1")
        if isinstance(out, (str, os.PathLike)):
            self._file: IO[str] = open(out, "w", encoding="utf-8", newline="\n")
            self._owned = True
        else:
            self._file, self._owned = out, False
        self.name = getattr(self._file, "name", "<trace>")
        self.header = header
        self.events = 0
        self._flush_every = flush_every
        self._flush_interval = flush_interval
        self._pending: list[str] = []
        self._last_write = 0.0
        self._closed = False
        self._file.write(_encode(header_record(header)) + "\n")
        self._file.flush()

    def __call__(self, ev: Event) -> None:
        if self._closed:
            raise TraceError("event after the recorder was closed", loc=Location(self.name))
        self._pending.append(event_line(ev))
        self.events += 1
        if len(self._pending) >= self._flush_every or \
                ev.time - self._last_write >= self._flush_interval:
            self._last_write = ev.time
            self.flush()

    def flush(self) -> None:
        """Hand every waiting line to the kernel (one write)."""
        if self._pending:
            self._file.write("".join(self._pending))
            self._pending.clear()
        self._file.flush()

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self._owned:
            self._file.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reading ------------------------------------------------------------------------------------

# Field checks: each returns the value (converted where JSON cannot say it) or raises ValueError
# with what is wrong.

def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if type(v) is not int:
            raise ValueError(f"expected an integer, got {_kind(v)}")
        if not lo <= v <= hi:
            raise ValueError(f"{v} is out of range {lo}..{hi}")
        return v
    return check


def _str(v: Any) -> str:
    if type(v) is not str:
        raise ValueError(f"expected a string, got {_kind(v)}")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise ValueError(f"expected true or false, got {_kind(v)}")
    return v


def _number(v: Any) -> float:
    if type(v) not in (int, float) or v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"expected a number, got {_kind(v)}")
    return float(v)


def _time(v: Any) -> float:
    v = _number(v)
    if v < 0:
        raise ValueError(f"negative time {v}")
    return v


def _args(v: Any) -> tuple[int, ...]:
    if type(v) is not list or len(v) != 6:
        raise ValueError(f"expected a list of 6 integers, got {_kind(v)}")
    u64 = _int(0, U64)
    return tuple(u64(a) for a in v)


def _strings(v: Any) -> tuple[str, ...]:
    if type(v) is not list or any(type(s) is not str for s in v):
        raise ValueError(f"expected a list of strings, got {_kind(v)}")
    return tuple(v)


def _decoded(v: Any) -> dict[str, str]:
    if type(v) is not dict or any(type(s) is not str for s in v.values()):
        raise ValueError(f"expected an object of strings, got {_kind(v)}")
    return v


def _mode(v: Any) -> str:
    if v not in MODES:
        raise ValueError(f"expected one of {', '.join(MODES)}, got {_kind(v)}")
    return v


def _kind(v: Any) -> str:
    text = json.dumps(v)
    return text if len(text) <= 40 else text[:37] + "..."


_PID = _int(1, (1 << 31) - 1)
_U32 = _int(0, (1 << 32) - 1)
# Event field -> (JSON key, check). Order is the Event's.
_EVENT_FIELDS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("time", _time), ("pid", _PID), ("tid", _PID), ("nr", _int(-(1 << 31), (1 << 31) - 1)),
    ("name", _str), ("arch", _U32), ("ip", _int(0, U64)), ("args", _args), ("verdict", _U32),
    ("handler", _str), ("path", _strings), ("enforced", _bool), ("decoded", _decoded),
)
_HEADER_FIELDS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("arch", _str), ("policy", _str), ("policy_hash", _str), ("command", _strings),
    ("start_time", _number), ("mode", _mode),
)


def _well_formed_event(o: dict[str, Any]) -> Event | None:
    """The event of a valid line, checked in one expression (the common case); None when
    something is wrong, and then :data:`_EVENT_FIELDS` find what."""
    try:
        t, pid, tid, nr, arch, ip, verdict = (o["time"], o["pid"], o["tid"], o["nr"], o["arch"],
                                              o["ip"], o["verdict"])
        name, args, handler, path, enforced, decoded = (o["name"], o["args"], o["handler"],
                                                        o["path"], o["enforced"], o["decoded"])
    except KeyError:
        return None
    if not (type(t) is float and 0 <= t < _INF or type(t) is int and t >= 0):
        return None
    if not (type(pid) is int and type(tid) is int and type(nr) is int and type(arch) is int
            and type(ip) is int and type(verdict) is int and type(name) is str
            and type(handler) is str and type(enforced) is bool and type(args) is list
            and type(path) is list and type(decoded) is dict):
        return None
    if not (0 < pid <= _PID_MAX and 0 < tid <= _PID_MAX and _NR_MIN <= nr <= _NR_MAX
            and 0 <= arch <= _U32_MAX and 0 <= ip <= U64 and 0 <= verdict <= _U32_MAX):
        return None
    if len(args) != 6 or set(map(type, args)) != _INT_ONLY or min(args) < 0 or max(args) > U64:
        return None
    if not (all(type(x) is str for x in path) and all(type(x) is str for x in decoded.values())):
        return None
    return Event(float(t), pid, tid, nr, name, arch, ip, tuple(args), verdict, handler,
                 tuple(path), enforced, decoded)


_INF = float("inf")
_PID_MAX, _NR_MIN, _NR_MAX, _U32_MAX = (1 << 31) - 1, -(1 << 31), (1 << 31) - 1, (1 << 32) - 1
_INT_ONLY = {int}


class TraceReader:
    """Read a trace file: the header on opening, then events by iterating (once).

    ``with TraceReader("t.jsonl") as trace: for ev in trace: ...``. ``trace.line`` is the line
    number of the event last returned (for messages); with ``allow_truncated=True`` a partial last
    line ends the iteration and :attr:`truncated` describes it.
    """

    def __init__(self, path: str | os.PathLike, *, allow_truncated: bool = False) -> None:
        self.path = str(path)
        self.allow_truncated = allow_truncated
        self.truncated: str | None = None
        self.line = 0
        self.events = 0
        self._file = open(path, "rb")
        try:
            self.header = self._read_header()
        except BaseException:
            self._file.close()
            raise

    @property
    def size(self) -> int:
        """The trace file's size in bytes (for progress)."""
        return os.fstat(self._file.fileno()).st_size

    @property
    def bytes_read(self) -> int:
        """Bytes consumed so far: lines are read whole in binary mode, so tell() is exact."""
        return self._file.tell()

    def _error(self, message: str, line: int | None = None, col: int | None = None) -> TraceError:
        return TraceError(message, loc=Location(self.path, line if line is not None else self.line,
                                                col))

    def _next_object(self) -> dict[str, Any] | None:
        """The next line's object; None at the end (or at a tolerated partial last line)."""
        raw = self._file.readline()
        if not raw:
            return None
        self.line += 1
        complete = raw.endswith(b"\n")
        try:
            obj = _decode(raw.decode("utf-8"))
        except ValueError as exc:
            if not complete:
                what = (f"truncated last line ({len(raw)} bytes, no newline): the recorder was "
                        f"probably killed while writing")
                if self.allow_truncated and self.line > 1:
                    self.truncated = f"{Location(self.path, self.line)}: {what}; ignored"
                    return None
                hint = "" if self.line == 1 else "; --allow-truncated reads the lines before it"
                raise self._error(what + hint) from None
            if not raw.strip():
                raise self._error("empty line") from None
            if isinstance(exc, json.JSONDecodeError):
                raise self._error(f"not JSON: {exc.msg}", col=exc.colno) from None
            raise self._error(f"not UTF-8 JSON: {exc}") from None
        if type(obj) is not dict:
            raise self._error(f"expected a JSON object, got {_kind(obj)}")
        return obj

    def _fields(self, obj: dict[str, Any], fields, what: str) -> list[Any]:
        out = []
        for key, check in fields:
            if key not in obj:
                raise self._error(f"{what} has no '{key}'")
            try:
                out.append(check(obj[key]))
            except ValueError as exc:
                raise self._error(f"{what} field '{key}': {exc}") from None
        return out

    def _read_header(self) -> Header:
        obj = self._next_object()
        if obj is None:
            raise self._error("empty file: no trace header", line=1 if self.line == 0 else None)
        if obj.get("format") != FORMAT:
            raise self._error(f"not a sysdispatch trace (the header's 'format' is not '{FORMAT}')")
        version = obj.get("version")
        if version != FORMAT_VERSION:
            raise self._error(f"trace format version {_kind(version)} is not supported "
                              f"(this sysdispatch reads version {FORMAT_VERSION})")
        arch, policy, phash, command, start, mode = self._fields(obj, _HEADER_FIELDS, "header")
        return Header(arch, policy, phash, command, start, mode, version)

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        obj = self._next_object()
        if obj is None:
            self.close()
            raise StopIteration
        ev = _well_formed_event(obj)
        if ev is None:  # say what is wrong (the checks field by field raise)
            ev = Event(*self._fields(obj, _EVENT_FIELDS, "event"))
        text = obj.get("verdict_text")
        if text is not None and text != _describe(ev.verdict):
            raise self._error(f"event 'verdict_text' {_kind(text)} does not match 'verdict' "
                              f"{ev.verdict:#x} ({_describe(ev.verdict)})")
        self.events += 1
        return ev

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "TraceReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_header(path: str | os.PathLike) -> Header:
    with TraceReader(path) as trace:
        return trace.header


def read_events(path: str | os.PathLike, *, allow_truncated: bool = False) -> Iterator[Event]:
    """Every event of the trace at ``path``, streamed."""
    with TraceReader(path, allow_truncated=allow_truncated) as trace:
        yield from trace
