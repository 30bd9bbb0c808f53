"""Maps: every error the kernel gives, from Python and from programs, and one storage for both.

The map scripts (tests/vm/map_scripts.py) hold the kernel's answers; tests/vm/test_kernel_oracle.py
asks the kernel them again, and compares our maps with it, whenever root and bpf() are available.
"""

from __future__ import annotations

import errno
import gc

import pytest

from sysdispatch.errors import EncodingError, MapError, VmError
from sysdispatch.vm.interp import run
from sysdispatch.vm.isa import FP, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, lddw, make
from sysdispatch.vm.maps import (BPF_ANY, BPF_EXIST, BPF_NOEXIST, ArrayMap, HashMap, ProgArray,
                                 create_map, prog_id)
from sysdispatch.vm.memory import SHARED
from sysdispatch.vm.program import (GENERIC, MAP_DELETE_ELEM, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM,
                                    SECCOMP, Program)

from map_scripts import MAP_SCRIPTS, our_ops, play

U64 = (1 << 64) - 1


@pytest.mark.parametrize("kind, entries, script", MAP_SCRIPTS)
def test_python_api_answers_like_the_kernel(kind, entries, script):
    m = create_map(kind, 4, 8, entries)
    assert play(our_ops(m), script) == [want for _, want in script]


@pytest.mark.parametrize("args", [("array", 8, 4, 4), ("array", 4, 0, 4), ("array", 4, 4, 0),
                                  ("hash", 0, 4, 4), ("hash", 4, 4, 0), ("prog_array", 4, 8, 4),
                                  ("queue", 0, 4, 4)])
def test_bad_geometry_is_einval(args):
    with pytest.raises(MapError) as info:
        create_map(*args)
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("call", [
    lambda m: m.update(b"\0\0", 1),           # key of 2 bytes for a 4-byte key
    lambda m: m.update(0, b"\0" * 7),         # value of 7 bytes for an 8-byte value
    lambda m: m.lookup(b"\0" * 5),
    lambda m: m.update(0, object()),
    lambda m: m.update(1 << 40, 1),           # an int key that does not fit
])
def test_wrong_sizes_from_python_are_einval(call):
    for m in (ArrayMap(8, 4), HashMap(4, 8, 4)):
        with pytest.raises(MapError) as info:
            call(m)
        assert info.value.errno == errno.EINVAL


def test_hash_iteration_and_items():
    m = HashMap(4, 4, 8)
    for k in (3, 1, 2):
        m[k] = k * 10
    assert list(m) == [k.to_bytes(4, "little") for k in (3, 1, 2)]
    assert m.items()[0] == ((3).to_bytes(4, "little"), (30).to_bytes(4, "little"))
    assert len(m) == 3 and len(ArrayMap(4, 6)) == 6


# --- the same storage for Python and programs ----------------------------------------------------

def lookup_prog(m, key: int, then: list, *, prog_type=GENERIC) -> Program:
    """r0 = map_lookup_elem(m, &key); if NULL return -1; then ``then`` with r0 the pointer."""
    return Program.load([
        make("stw", FP, off=-4, imm=key),
        *lddw(1, 0, PSEUDO_MAP_FD),
        make("mov", 2, FP, reg=True), make("add", 2, imm=-4, reg=False),
        make("call", imm=MAP_LOOKUP_ELEM),
        make("jne", 0, off=2, imm=0, reg=False),
        make("mov", 0, imm=-1, reg=False), make("exit"),
        *then, make("exit"),
    ], maps=[m], prog_type=prog_type)


@pytest.mark.parametrize("m", [ArrayMap(8, 4), HashMap(4, 8, 4)], ids=["array", "hash"])
def test_programs_and_python_share_values(m):
    m.update(2, 41)
    # the program reads the value, increments it in place, returns what it read
    p = lookup_prog(m, 2, [make("ldxdw", 1, 0), make("add", 1, imm=1, reg=False),
                           make("stxdw", 0, 1), make("mov", 0, 1, reg=True)])
    assert run(p).r0 == 42
    assert m.lookup(2) == (42).to_bytes(8, "little")
    view = m.view(2)
    view[0] = 99  # a write through the live view is what the next run reads
    assert run(p).r0 == 100
    # the pointer the program got is the address Python reports, stable across runs
    addr = Program.load(list(lookup_prog(m, 2, []).insns), maps=[m])
    assert run(addr).r0 == m.address(2)


def test_lookup_of_a_missing_key_is_null():
    assert run(lookup_prog(HashMap(4, 8, 4), 7, [])).r0 == U64  # -1: the NULL branch
    assert run(lookup_prog(ArrayMap(8, 4), 4, [])).r0 == U64   # index past the end


def test_a_value_is_exactly_its_size():
    m = ArrayMap(8, 4)
    with pytest.raises(VmError, match=r"pc 9: read of 8 bytes .* outside value 1 of map 'array'"):
        run(lookup_prog(m, 1, [make("ldxdw", 0, 0, off=1)]))


def test_a_deleted_hash_value_is_gone_for_later_runs():
    m = HashMap(4, 8, 4)
    m.update(1, 5)
    addr = m.address(1)
    m.delete(1)
    reader = Program.load([*lddw(1, addr), make("ldxdw", 0, 1), make("exit")])
    with pytest.raises(VmError, match="outside any region"):
        run(reader)


def helper_prog(m, helper: int, key: int, value: int = 0, flags: int = 0) -> Program:
    """r0 = helper(m, &key[, &value, flags])."""
    return Program.load([
        make("stw", FP, off=-4, imm=key),
        *lddw(3, value), make("stxdw", FP, 3, off=-16),
        *lddw(1, 0, PSEUDO_MAP_FD),
        make("mov", 2, FP, reg=True), make("add", 2, imm=-4, reg=False),
        make("mov", 3, FP, reg=True), make("add", 3, imm=-16, reg=False),
        make("mov", 4, imm=flags, reg=False),
        make("call", imm=helper), make("exit"),
    ], maps=[m])


def neg(e: int) -> int:
    return -e & U64


@pytest.mark.parametrize("kind, steps", [
    ("array", [(MAP_UPDATE_ELEM, 1, 5, BPF_ANY, 0), (MAP_UPDATE_ELEM, 1, 5, BPF_NOEXIST,
                                                     neg(errno.EEXIST)),
               (MAP_UPDATE_ELEM, 4, 5, BPF_ANY, neg(errno.E2BIG)),
               (MAP_UPDATE_ELEM, 1, 5, 7, neg(errno.EINVAL)),
               (MAP_DELETE_ELEM, 1, 0, 0, neg(errno.EINVAL))]),
    ("hash", [(MAP_UPDATE_ELEM, 1, 5, BPF_EXIST, neg(errno.ENOENT)),
              (MAP_UPDATE_ELEM, 1, 5, BPF_NOEXIST, 0),
              (MAP_UPDATE_ELEM, 1, 5, BPF_NOEXIST, neg(errno.EEXIST)),
              (MAP_UPDATE_ELEM, 2, 5, BPF_ANY, 0),
              (MAP_UPDATE_ELEM, 3, 5, BPF_ANY, neg(errno.E2BIG)),
              (MAP_DELETE_ELEM, 3, 0, 0, neg(errno.ENOENT)),
              (MAP_DELETE_ELEM, 2, 0, 0, 0)]),
])
def test_helpers_return_the_negative_errno(kind, steps):
    m = create_map(kind, 4, 8, 4 if kind == "array" else 2)
    for helper, key, value, flags, want in steps:
        assert run(helper_prog(m, helper, key, value, flags)).r0 == want
    if kind == "hash":
        assert m.lookup(1) == (5).to_bytes(8, "little") and m.lookup(2) is None


def map_value(dst: int, index: int, off: int):
    """lddw dst, map[index] + off: the first slot's imm names the map, the second's the offset."""
    return lddw(dst, index | (off << 32), PSEUDO_MAP_VALUE)


def test_map_value_address_lddw():
    m = ArrayMap(16, 1)
    m.update(0, bytes(range(16)))
    p = Program.load([*map_value(1, 0, 4), make("ldxw", 0, 1), make("exit")], maps=[m])
    assert run(p).r0 == int.from_bytes(bytes(range(4, 8)), "little")
    for bad_map, off, message in [(ArrayMap(16, 2), 0, "one-element array"),
                                  (HashMap(4, 16, 1), 0, "one-element array"),
                                  (m, 16, "offset 16 is beyond the 16-byte value")]:
        p = Program.load([*map_value(1, 0, off), make("mov", 0, imm=0, reg=False),
                          make("exit")], maps=[bad_map])
        with pytest.raises(EncodingError, match=rf"pc 0: .*{message}"):
            run(p)


def test_helpers_refuse_what_a_verifier_would():
    m = ArrayMap(8, 1)
    garbage = Program.load([*lddw(1, 0x1234), make("mov", 2, FP, reg=True),
                            make("call", imm=MAP_LOOKUP_ELEM), make("exit")])
    with pytest.raises(VmError, match=r"pc 3: r1 = 0x1234 is not a map pointer"):
        run(garbage)
    pa = ProgArray(2)
    with pytest.raises(VmError, match="map_lookup_elem on prog_array"):
        run(lookup_prog(pa, 0, []))
    bad_key = Program.load([*lddw(1, 0, PSEUDO_MAP_FD), make("mov", 2, imm=0, reg=False),
                            make("call", imm=MAP_LOOKUP_ELEM), make("exit")], maps=[m])
    with pytest.raises(VmError, match=r"pc 3: read of 4 bytes at 0x0: null pointer"):
        run(bad_key)
    with pytest.raises(EncodingError, match=r"pc 0: lddw refers to map 0, which is a str"):
        run(Program.load([*lddw(1, 0, PSEUDO_MAP_FD), make("exit")], maps=["not a map"]))


# --- PROG_ARRAY -------------------------------------------------------------------------------------

def ret(v, prog_type=GENERIC, name="p"):
    return Program.load([make("mov", 0, imm=v, reg=False), make("exit")], prog_type=prog_type,
                        name=name)


def test_prog_array_errors_and_owner():
    pa = ProgArray(4)
    a = ret(1)
    pa.update(0, a)
    assert pa.get(0) is a and pa.owner.prog_type == "generic"
    cases = [
        (lambda: pa.update(1, a, BPF_NOEXIST), errno.EINVAL),   # prog arrays take only BPF_ANY
        (lambda: pa.update(4, a), errno.E2BIG),
        (lambda: pa.update(1, b"\x01\0\0\0"), errno.EINVAL),   # not a program
        (lambda: pa.update(1, ret(2, SECCOMP)), errno.EINVAL),  # another type than the owner's
        (lambda: pa.delete(3), errno.ENOENT),
        (lambda: pa.delete(4), errno.E2BIG),
        (lambda: pa.lookup(1), errno.ENOENT),                  # an empty slot
        (lambda: pa.lookup(4), errno.ENOENT),                  # past the end: ENOENT, not E2BIG
    ]
    for call, want in cases:
        with pytest.raises(MapError) as info:
            call()
        assert info.value.errno == want, call
    assert "has type seccomp, the array holds type generic" in _message(
        lambda: pa.update(1, ret(2, SECCOMP)))
    pa.delete(0)
    assert pa.get(0) is None and pa.get(99) is None and len(pa) == 0
    # the owner stays once set, even with every slot empty (as the kernel's map->owner)
    with pytest.raises(MapError):
        pa.update(0, ret(3, SECCOMP))
    pa.update(0, ret(3))


def _lookup_story(progs, a, b) -> list:
    """Slot 0 and 2 hold ``a``, slot 1 ``b``, slot 3 nothing: what lookups of 0..5 answer, with
    ids renamed by order of appearance (the kernel's ids are its own)."""
    for i, p in ((0, a), (1, b), (2, a)):
        progs.update(i, p)
    names: dict[bytes, str] = {}
    out = []
    for i in range(6):
        try:
            got = progs.lookup(i)
        except MapError as exc:
            out.append(errno.errorcode[exc.errno])
            continue
        assert len(got) == 4 and int.from_bytes(got, "little") > 0
        out.append(names.setdefault(got, f"id{len(names)}"))
    return out


def test_prog_array_lookup_answers_the_program_id_or_enoent():
    ours = _lookup_story(ProgArray(4), ret(1), ret(2))
    assert ours == ["id0", "id1", "id0", "ENOENT", "ENOENT", "ENOENT"]
    kernel = pytest.importorskip("sysdispatch.vm.kernel")
    if not kernel.kernel_bpf_available():
        pytest.skip("needs root and bpf()")

    class KernelArray:
        def __init__(self, m):
            self.m = m

        def update(self, i, prog):
            kernel.map_update(self.m, i, prog)

        def lookup(self, i):
            return kernel.map_lookup(self.m, i)

    with kernel.create_map("prog_array", 4, 4, 4) as km, \
            kernel.load_program([make("mov", 0, imm=1, reg=False), make("exit")],
                                "socket_filter") as a, \
            kernel.load_program([make("mov", 0, imm=2, reg=False), make("exit")],
                                "socket_filter") as b:
        assert _lookup_story(KernelArray(km), a, b) == ours


def test_prog_ids_are_stable_and_shared_with_wrappers():
    verifier = pytest.importorskip("sysdispatch.vm.verifier")
    a, b = ret(1), ret(2)
    assert prog_id(a) == prog_id(a) != prog_id(b)
    assert prog_id(verifier.verify(a, mem_size=0)) == prog_id(a)


def test_prog_array_takes_verified_programs_beside_plain_ones():
    """A verified program is stored as it is (an engine can use its facts); its owner is its
    Program's: the same as a plain program of that type (converted classic filters are never
    verified, as in the kernel, and share arrays with verified ones)."""
    verifier = pytest.importorskip("sysdispatch.vm.verifier")
    handler = verifier.verify(ret(7, SECCOMP), SECCOMP)
    pa = ProgArray(4)
    pa.update(0, handler)
    assert pa.get(0) is handler and str(pa.owner) == "type seccomp"
    pa.update(1, ret(8, SECCOMP))  # a plain program of the owner's type
    with pytest.raises(MapError) as info:
        pa.update(2, verifier.verify(ret(9), mem_size=0))  # verified, but generic
    assert info.value.errno == errno.EINVAL
    assert "program 'p' has type generic, the array holds type seccomp" in str(info.value)


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_a_tail_call_enters_a_verified_slot(engine):
    from sysdispatch.vm import engine as engines
    from sysdispatch.vm.program import TAIL_CALL
    verifier = pytest.importorskip("sysdispatch.vm.verifier")
    pa = ProgArray(2)
    pa.update(1, verifier.verify(ret(42), mem_size=0))
    entry = Program.load([*lddw(2, 0, PSEUDO_MAP_FD), make("mov", 3, imm=1, reg=False),
                          make("call", imm=TAIL_CALL), make("mov", 0, imm=5, reg=False),
                          make("exit")], maps=[pa])
    result = engines.run(entry, engine=engine)
    assert result.r0 == 42 and result.tail_calls == 1


def _message(call) -> str:
    try:
        call()
    except MapError as exc:
        return str(exc)
    raise AssertionError("no error")


def test_map_windows_are_given_back():
    m = HashMap(4, 4, 1)
    base = m.addr
    assert SHARED.owner(base) is m
    del m
    gc.collect()
    assert SHARED.owner(base) is None
