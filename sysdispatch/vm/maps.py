"""BPF maps — ARRAY, HASH, PROG_ARRAY — with the kernel's semantics, for Python and programs.

One implementation serves both callers: the ``*_raw`` methods behave like the kernel's map ops
(kernel/bpf/arraymap.c, hashtab.c) and return ``0`` or a negative errno, which the helpers hand to
programs as r0; the Python methods (:meth:`Map.update`, :meth:`Map.lookup`, ...) call the same
methods and raise :class:`~sysdispatch.errors.MapError` with the (positive) errno, as the bpf(2)
syscall would fail. Each fact below was checked against the running kernel (see
tests/vm/test_maps.py, which compares with :mod:`sysdispatch.vm.kernel` when it is available):

* update flags are ``BPF_ANY``/``BPF_NOEXIST``/``BPF_EXIST``; anything else is EINVAL, checked
  first;
* ARRAY: index >= max_entries is E2BIG on update and NULL on lookup; NOEXIST is EEXIST (every
  element exists); delete is EINVAL;
* HASH: NOEXIST on an existing key is EEXIST, EXIST on a missing key ENOENT (checked before
  fullness), a new key in a full map E2BIG (an existing key can still be replaced), delete of a
  missing key ENOENT;
* PROG_ARRAY: flags other than BPF_ANY are EINVAL, index >= max_entries E2BIG, deleting an empty
  slot ENOENT; the first program stored fixes the owner (its program type and engine) for good,
  and a program of another type or engine is EINVAL (``bpf_prog_map_compatible``); a user-space
  lookup answers the slot's program id (a u32), or ENOENT for an empty slot or an index out of
  range (kernel 6.18).

Every map owns a window of the shared address space (:data:`~sysdispatch.vm.memory.SHARED`): its
handle — what ``lddw rX, map`` loads — is the window's base, and each value is its own
:class:`~sysdispatch.vm.memory.Region` in the window, stable while the element lives. Updates
copy into the existing value in place, so a pointer a program got from ``map_lookup_elem`` sees
later updates, like the kernel's arrays.
"""

from __future__ import annotations

import errno
import itertools
import threading
import weakref
from dataclasses import dataclass
from typing import Iterator

from ..errors import MapError
from .memory import SHARED, WINDOW_SHIFT, Region
from .program import Program

# enum bpf_map_type (include/uapi/linux/bpf.h)
MAP_HASH, MAP_ARRAY, MAP_PROG_ARRAY = 1, 2, 3
# BPF_MAP_UPDATE_ELEM flags
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2

# Values sit this far apart inside a map's window (a power of two at least this much larger than
# the value), so an access running off one value faults instead of reaching the next.
GUARD = 4096


def _errname(e: int) -> str:
    return errno.errorcode.get(e, str(e))


class Map:
    """Common part of every map: geometry, its address window, key/value conversion."""

    map_type = 0
    type_name = "map"

    def __init__(self, key_size: int, value_size: int, max_entries: int, name: str) -> None:
        for what, v in (("key_size", key_size), ("value_size", value_size),
                        ("max_entries", max_entries)):
            if not isinstance(v, int) or not 0 < v < 1 << 32:
                raise MapError(f"{self.type_name} map '{name}': {what} must be 1..2**32-1, "
                               f"got {v!r}", errno.EINVAL)
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.name = name
        self.stride = 1 << (value_size + GUARD - 1).bit_length()
        if (max_entries + 1) * self.stride > 1 << WINDOW_SHIFT:
            raise MapError(f"{self.type_name} map '{name}': {max_entries} values of "
                           f"{value_size} bytes do not fit the address space", errno.E2BIG)
        self._lock = threading.Lock()
        self.addr = SHARED.allocate(self)  # the map's handle, as programs see it

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} '{self.name}' key {self.key_size} value "
                f"{self.value_size} max_entries {self.max_entries} at 0x{self.addr:x}>")

    # --- conversions for the Python API ------------------------------------------------------

    def _bytes(self, what: str, v, size: int) -> bytes:
        if isinstance(v, int):
            if not -(1 << (8 * size - 1)) <= v < 1 << (8 * size):
                raise MapError(f"map '{self.name}': {what} {v} does not fit in {size} bytes",
                               errno.EINVAL)
            return (v & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        try:
            b = bytes(v)
        except TypeError:
            raise MapError(f"map '{self.name}': {what} must be bytes or int, got "
                           f"{type(v).__name__}", errno.EINVAL) from None
        if len(b) != size:
            raise MapError(f"map '{self.name}': {what} is {len(b)} bytes, map wants {size}",
                           errno.EINVAL)
        return b

    def _key(self, key) -> bytes:
        return self._bytes("key", key, self.key_size)

    def _value(self, value) -> bytes:
        return self._bytes("value", value, self.value_size)

    def _check(self, ret: int, what: str, key: bytes) -> None:
        if ret < 0:
            raise MapError(f"map '{self.name}': {what} of key {key.hex()} failed: "
                           f"{_errname(-ret)}", -ret)

    def _slot_base(self, slot: int) -> int:
        return self.addr + (slot + 1) * self.stride

    def _slot_of(self, addr: int) -> int:
        return (addr - self.addr) // self.stride - 1

    # --- the kernel-style core (also what helpers call) ---------------------------------------

    def lookup_raw(self, key: bytes) -> Region | None:
        raise NotImplementedError

    def update_raw(self, key: bytes, value: bytes, flags: int) -> int:
        raise NotImplementedError

    def delete_raw(self, key: bytes) -> int:
        raise NotImplementedError

    def region_at(self, addr: int) -> Region | None:
        raise NotImplementedError

    # --- the Python API ----------------------------------------------------------------------

    def lookup(self, key) -> bytes | None:
        """A copy of the value stored under ``key``, or None (absent / index out of range)."""
        region = self.lookup_raw(self._key(key))
        return None if region is None else bytes(region.buf)

    def view(self, key) -> memoryview | None:
        """The live value under ``key``: writes through it are what programs read."""
        region = self.lookup_raw(self._key(key))
        return None if region is None else memoryview(region.buf)

    def address(self, key) -> int | None:
        """Where programs see the value under ``key`` (what map_lookup_elem returns)."""
        region = self.lookup_raw(self._key(key))
        return None if region is None else region.base

    def update(self, key, value, flags: int = BPF_ANY) -> None:
        k = self._key(key)
        self._check(self.update_raw(k, self._value(value), flags), "update", k)

    def delete(self, key) -> None:
        k = self._key(key)
        self._check(self.delete_raw(k), "delete", k)

    def __getitem__(self, key) -> bytes:
        v = self.lookup(key)
        if v is None:
            raise KeyError(key)
        return v

    def __setitem__(self, key, value) -> None:
        self.update(key, value)


class ArrayMap(Map):
    """BPF_MAP_TYPE_ARRAY: ``max_entries`` values, all existing and zeroed from the start."""

    map_type = MAP_ARRAY
    type_name = "array"

    def __init__(self, value_size: int, max_entries: int, name: str = "array",
                 key_size: int = 4) -> None:
        if key_size != 4:
            raise MapError(f"array map '{name}': key_size must be 4, got {key_size}",
                           errno.EINVAL)
        super().__init__(key_size, value_size, max_entries, name)
        # Values are made on first touch, so a large array costs nothing until used.
        self._values: dict[int, Region] = {}

    def _element(self, index: int) -> Region:
        region = self._values.get(index)
        if region is None:
            with self._lock:
                region = self._values.get(index)
                if region is None:
                    region = Region(self._slot_base(index), bytearray(self.value_size), True,
                                    f"value {index} of map '{self.name}'")
                    self._values[index] = region
        return region

    def lookup_raw(self, key: bytes) -> Region | None:
        index = int.from_bytes(key, "little")
        return self._element(index) if index < self.max_entries else None

    def update_raw(self, key: bytes, value: bytes, flags: int) -> int:
        if flags not in (BPF_ANY, BPF_NOEXIST, BPF_EXIST):
            return -errno.EINVAL
        index = int.from_bytes(key, "little")
        if index >= self.max_entries:
            return -errno.E2BIG
        if flags == BPF_NOEXIST:  # every element of an array always exists
            return -errno.EEXIST
        self._element(index).buf[:] = value
        return 0

    def delete_raw(self, key: bytes) -> int:
        return -errno.EINVAL  # array elements cannot be deleted

    def region_at(self, addr: int) -> Region | None:
        index = self._slot_of(addr)
        return self._element(index) if 0 <= index < self.max_entries else None

    def __len__(self) -> int:
        return self.max_entries

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.max_entries))


class HashMap(Map):
    """BPF_MAP_TYPE_HASH: at most ``max_entries`` keys; iteration follows insertion order."""

    map_type = MAP_HASH
    type_name = "hash"

    def __init__(self, key_size: int, value_size: int, max_entries: int,
                 name: str = "hash") -> None:
        super().__init__(key_size, value_size, max_entries, name)
        self._entries: dict[bytes, Region] = {}
        self._by_slot: dict[int, Region] = {}
        self._free: list[int] = []  # slots given back by deletes (like the kernel's freelist)
        self._next_slot = 0

    def lookup_raw(self, key: bytes) -> Region | None:
        return self._entries.get(key)

    def update_raw(self, key: bytes, value: bytes, flags: int) -> int:
        if flags not in (BPF_ANY, BPF_NOEXIST, BPF_EXIST):
            return -errno.EINVAL
        with self._lock:
            old = self._entries.get(key)
            if old is not None and flags == BPF_NOEXIST:
                return -errno.EEXIST
            if old is None and flags == BPF_EXIST:
                return -errno.ENOENT
            if old is not None:
                old.buf[:] = value
                return 0
            if len(self._entries) >= self.max_entries:
                return -errno.E2BIG
            slot = self._free.pop() if self._free else self._next_slot
            if slot == self._next_slot:
                self._next_slot += 1
            region = Region(self._slot_base(slot), bytearray(value), True,
                            f"value of key {key.hex()} in map '{self.name}'")
            self._by_slot[slot] = region
            self._entries[key] = region
        return 0

    def delete_raw(self, key: bytes) -> int:
        with self._lock:
            region = self._entries.pop(key, None)
            if region is None:
                return -errno.ENOENT
            slot = self._slot_of(region.base)
            del self._by_slot[slot]
            self._free.append(slot)
        return 0

    def region_at(self, addr: int) -> Region | None:
        return self._by_slot.get(self._slot_of(addr))

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[bytes]:
        return iter(list(self._entries))

    def items(self) -> list[tuple[bytes, bytes]]:
        return [(k, bytes(r.buf)) for k, r in list(self._entries.items())]


@dataclass(frozen=True, slots=True)
class ProgOwner:
    """What every program in one PROG_ARRAY must share (kernel: ``map->owner``): the program
    type and the engine — ``"jit"`` for a :class:`~sysdispatch.vm.jit.JitProgram`, else
    ``"interp"`` (the kernel's ``owner.jited``). :func:`owner_of` is the one place that computes
    it from a program.
    """

    prog_type: str
    engine: str = "interp"

    def __str__(self) -> str:
        return f"type {self.prog_type}" + (" (jit)" if self.engine == "jit" else "")


def _inner(obj) -> Program | None:
    """The Program itself, or the one a wrapper holds (a verified program or a JIT-compiled one:
    ``.program``); None for anything else."""
    if isinstance(obj, Program):
        return obj
    inner = getattr(obj, "program", None)
    return inner if isinstance(inner, Program) else None


def owner_of(program) -> ProgOwner:
    """The owner a program (or a wrapper of one) asks for. The type is the Program's own (what it
    was loaded as, the kernel's ``prog->type``), not the type a wrapper was verified for."""
    return ProgOwner(_inner(program).prog_type.name, getattr(program, "engine", "interp"))


# Program ids, as the kernel's idr hands them out: process-wide, from 1, never reused while the
# program lives. A wrapper shares the id of the Program inside it.
_prog_ids: weakref.WeakKeyDictionary[Program, int] = weakref.WeakKeyDictionary()
_next_prog_id = itertools.count(1)
_prog_id_lock = threading.Lock()


def prog_id(program) -> int:
    """The id of ``program`` (a Program or a wrapper of one), given on first use."""
    inner = _inner(program)
    with _prog_id_lock:
        pid = _prog_ids.get(inner)
        if pid is None:
            pid = _prog_ids[inner] = next(_next_prog_id) & 0xFFFF_FFFF
        return pid


class ProgArray(Map):
    """BPF_MAP_TYPE_PROG_ARRAY: the jump table of ``bpf_tail_call``.

    ``slots`` is a plain list that tail calls index exactly once; an update or delete replaces one
    list item, which is atomic under the GIL, so a dispatch running in another thread sees either
    the old or the new program, never anything in between.
    """

    map_type = MAP_PROG_ARRAY
    type_name = "prog_array"

    def __init__(self, max_entries: int, name: str = "prog_array") -> None:
        super().__init__(4, 4, max_entries, name)
        self.slots: list[Program | None] = [None] * max_entries
        self.owner: ProgOwner | None = None
        # The program type fixed by whichever came first: a program stored in a slot, or a
        # verified program that uses the array (:meth:`claim`; the kernel checks both against
        # one map->owner).
        self.owner_type: str | None = None

    def claim(self, prog_type: str) -> bool:
        """A verified program of ``prog_type`` uses this array (the kernel's check when it loads
        a program that refers to a prog array): the first user or stored program fixes the
        type; after that only the same type may use the array."""
        with self._lock:
            if self.owner_type is None:
                self.owner_type = prog_type
            return self.owner_type == prog_type

    def _index(self, index) -> int:
        return int.from_bytes(self._key(index), "little")

    def update_prog(self, index: int, program, flags: int = BPF_ANY) -> int:
        """Kernel-style: 0 or a negative errno (the order of checks is the kernel's)."""
        if flags != BPF_ANY:
            return -errno.EINVAL
        if index >= self.max_entries:
            return -errno.E2BIG
        if _inner(program) is None:
            return -errno.EINVAL
        owner = owner_of(program)
        with self._lock:
            if self.owner_type not in (None, owner.prog_type):
                return -errno.EINVAL  # a verified user of another type came first
            if self.owner is None:
                self.owner = owner  # the first program fixes the owner, for good
                self.owner_type = owner.prog_type
            elif owner != self.owner:
                return -errno.EINVAL
            self.slots[index] = program
        return 0

    def update(self, index, program, flags: int = BPF_ANY) -> None:  # type: ignore[override]
        i = self._index(index)
        ret = self.update_prog(i, program, flags)
        if ret == 0:
            return
        if ret == -errno.E2BIG:
            why = f"index {i} >= max_entries {self.max_entries}"
        elif flags != BPF_ANY:
            why = f"flags {flags}: a prog_array takes only BPF_ANY"
        elif _inner(program) is None:
            why = f"value must be a Program or a verified one, got {type(program).__name__}"
        else:
            holds = self.owner or f"type {self.owner_type} (fixed by a program that uses it)"
            why = f"program '{program.name}' has {owner_of(program)}, the array holds {holds}"
        raise MapError(f"prog_array '{self.name}': update of slot {i} failed: {_errname(-ret)} "
                       f"({why})", -ret)

    def delete_raw(self, key: bytes) -> int:
        index = int.from_bytes(key, "little")
        if index >= self.max_entries:
            return -errno.E2BIG
        with self._lock:
            if self.slots[index] is None:
                return -errno.ENOENT
            self.slots[index] = None
        return 0

    def delete(self, index) -> None:
        k = self._key(index)
        self._check(self.delete_raw(k), "delete", k)

    def get(self, index) -> Program | None:
        """The program in slot ``index``, or None (empty or out of range)."""
        i = self._index(index)
        return self.slots[i] if i < self.max_entries else None

    # Programs cannot read or write a program array (the verifier refuses): no value regions.
    def lookup_raw(self, key: bytes) -> Region | None:
        return None

    def update_raw(self, key: bytes, value: bytes, flags: int) -> int:
        return -errno.EINVAL

    def lookup(self, key) -> bytes:
        """As bpf(BPF_MAP_LOOKUP_ELEM) on a prog array (kernel 6.18): the slot's program id, a
        u32; an empty slot or an index out of range fails with ENOENT (unlike the other maps'
        None: the kernel fails this lookup where theirs finds nothing). get() gives the
        program itself."""
        i = self._index(key)
        program = self.slots[i] if i < self.max_entries else None
        if program is None:
            raise MapError(f"prog_array '{self.name}': lookup of slot {i} failed: ENOENT "
                           "(" + ("empty slot" if i < self.max_entries else
                                  f"index {i} >= max_entries {self.max_entries}") + ")",
                           errno.ENOENT)
        return prog_id(program).to_bytes(4, "little")

    def region_at(self, addr: int) -> Region | None:
        return None

    def __len__(self) -> int:
        return sum(p is not None for p in self.slots)


MAP_CLASSES = {MAP_ARRAY: ArrayMap, MAP_HASH: HashMap, MAP_PROG_ARRAY: ProgArray}
MAP_TYPE_NAMES = {"array": MAP_ARRAY, "hash": MAP_HASH, "prog_array": MAP_PROG_ARRAY}


def create_map(map_type: int | str, key_size: int, value_size: int, max_entries: int,
               name: str | None = None) -> Map:
    """Create a map the way BPF_MAP_CREATE would (same geometry checks, same errnos)."""
    mtype = MAP_TYPE_NAMES.get(map_type) if isinstance(map_type, str) else map_type
    if mtype not in MAP_CLASSES:
        raise MapError(f"unsupported map type {map_type!r}", errno.EINVAL)
    label = name or {v: k for k, v in MAP_TYPE_NAMES.items()}[mtype]
    if mtype == MAP_ARRAY:
        return ArrayMap(value_size, max_entries, label, key_size=key_size)
    if mtype == MAP_HASH:
        return HashMap(key_size, value_size, max_entries, label)
    if key_size != 4 or value_size != 4:
        raise MapError(f"prog_array '{label}': key and value size must be 4", errno.EINVAL)
    return ProgArray(max_entries, label)
