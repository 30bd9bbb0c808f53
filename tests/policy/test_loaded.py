"""LoadedPolicy at run time: the verdict cache (what it keeps, what it must not), live slot
updates, and atomic slot swaps while other threads dispatch."""

from __future__ import annotations

import sys
import textwrap
import threading
import time

import pytest

from sysdispatch.errors import PolicyError
from sysdispatch.policy import parse
from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.policy.purity import depends_only_on_arch_nr
from sysdispatch.seccomp import actions
from sysdispatch.seccomp.data import SeccompData

POLICY = textwrap.dedent('''\
    [policy]
    default = "allow"
    [tables.syscalls.entries]
    getpid = "errno(1)"
    openat = "no_create"
    socket = "fam"
    [tables.families]
    index = "args[0]"
    default = "errno(EAFNOSUPPORT)"
    [tables.families.entries]
    AF_UNIX = "allow"
    [handlers.no_create]
    rules = [{ when = ["args[2] & O_CREAT != 0"], action = "errno(EACCES)" }]
    [handlers.fam]
    default = "tail_call(families)"
    [handlers.two]
    default = "errno(2)"
    ''')
GETPID, OPENAT, SOCKET = 39, 257, 41


def test_purity_of_generated_programs():
    lp = LoadedPolicy(parse.loads(POLICY))
    prog = lp.compiled.program
    assert depends_only_on_arch_nr(prog("syscall_entry"))
    assert depends_only_on_arch_nr(prog("errno(1)"))
    assert not depends_only_on_arch_nr(prog("no_create"))     # reads args[2]
    assert not depends_only_on_arch_nr(prog("fam"))           # indexes by args[0]
    fi = LoadedPolicy.from_file("filters/fault-inject.toml")
    assert not depends_only_on_arch_nr(fi.compiled.program("third_open_fails"))   # a map


def test_cache_keys_on_what_the_verdict_depends_on():
    lp = LoadedPolicy(parse.loads(POLICY))
    first = lp.decide(SeccompData(GETPID))
    again = lp.decide(SeccompData(GETPID, args=(5, 6)))       # arguments do not matter here
    assert not first.cached and again.cached and again.ret == first.ret == actions.ERRNO | 1
    assert again.path == first.path
    assert lp.decide(SeccompData(0)).ret == actions.ALLOW and lp.decide(SeccompData(0)).cached
    # openat's handler reads args[2]: verdicts are kept per value of args[2], and only that
    create = lp.decide(SeccompData(OPENAT, args=(0, 0, 0o100)))
    assert create.ret == actions.ERRNO | 13 and not create.cached
    same = lp.decide(SeccompData(OPENAT, args=(7, 8, 0o100)))
    assert same.ret == actions.ERRNO | 13 and same.cached
    other = lp.decide(SeccompData(OPENAT, args=(0, 0, 0)))
    assert other.ret == actions.ALLOW and not other.cached
    # socket reads args[0], also through its nested table
    assert lp.decide(SeccompData(SOCKET, args=(1,))).ret == actions.ALLOW
    assert lp.decide(SeccompData(SOCKET, args=(2,))).ret == actions.ERRNO | 97
    d = lp.decide(SeccompData(SOCKET, args=(2, 1)))
    assert d.cached and d.path[-1] == "fam" and d.ret == actions.ERRNO | 97
    # the fault injector counts every call in a map: never cached
    fi = LoadedPolicy.from_file("filters/fault-inject.toml")
    assert [fi.decide(SeccompData(OPENAT)).ret & 0xFFFF for _ in range(4)] == [0, 0, 5, 0]
    assert not any(fi.decide(SeccompData(OPENAT)).cached for _ in range(3))


def test_set_slot_updates_and_invalidates():
    lp = LoadedPolicy(parse.loads(POLICY))
    assert lp.decide(SeccompData(GETPID)).ret == actions.ERRNO | 1
    assert lp.decide(SeccompData(GETPID)).cached
    lp.set_slot("syscalls", "getpid", "two")
    d = lp.decide(SeccompData(GETPID))
    assert d.ret == actions.ERRNO | 2 and not d.cached and d.handler == "two"
    lp.set_slot("syscalls", "getpid", "trap(4)")           # an action literal makes a handler
    assert lp.decide(SeccompData(GETPID)).ret == actions.TRAP | 4
    lp.set_slot("syscalls", "getpid", None)                # empty: the default
    assert lp.decide(SeccompData(GETPID)).ret == actions.ALLOW
    lp.set_slot("families", "AF_INET", "log")
    assert lp.decide(SeccompData(SOCKET, args=(2,))).ret == actions.LOG
    lp.set_slot("syscalls", 500, "log")                    # a number past libseccomp's table
    assert lp.decide(SeccompData(500)).ret == actions.LOG
    with pytest.raises(PolicyError, match="neither a handler of the policy nor an action"):
        lp.set_slot("syscalls", "getpid", "nosuch")
    with pytest.raises(PolicyError, match="no table 'nosuch'"):
        lp.set_slot("nosuch", 1, "log")
    with pytest.raises(PolicyError, match="slot 100000: .*E2BIG"):
        lp.set_slot("syscalls", 100000, "log")


def test_slot_swaps_are_atomic_under_concurrent_dispatch():
    """Threads dispatch getpid while the main thread swaps its slot between two handlers: every
    verdict is one of the two (never a torn or stale state), and after each swap the very next
    dispatch sees the new handler although the other threads keep filling the cache."""
    lp = LoadedPolicy(parse.loads(POLICY))
    engine = lp._run

    def slow_engine(*args, **kw):   # widen the window between a run and storing its verdict
        result = engine(*args, **kw)
        time.sleep(0.00005)
        return result

    lp._run = slow_engine
    allowed = {actions.ERRNO | 1, actions.ERRNO | 2}
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def hammer():
        try:
            while not stop.is_set():
                seen.append(lp.decide(SeccompData(GETPID)).ret)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # switch threads often, to open every race window
    for t in threads:
        t.start()
    try:
        for i in range(300):
            name, want = ("two", actions.ERRNO | 2) if i % 2 else ("errno(1)", actions.ERRNO | 1)
            lp.set_slot("syscalls", "getpid", name)
            for _ in range(10):   # a dispatch that ran before the swap must not cache its verdict
                assert lp.decide(SeccompData(GETPID)).ret == want, i
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(interval)
    assert not errors, errors
    assert len(seen) > 100 and set(seen) <= allowed and len(set(seen)) == 2
