"""The BPF machine's memory: one flat address space of plain integer pointers.

A pointer is an ``int``, so pointer arithmetic works as the conformance suite expects. Memory is a
set of disjoint :class:`Region` s — byte buffers at fixed addresses — and every access must lie
fully inside one region; anything else (null, garbage, one byte past the end, a write to a
read-only region) raises :class:`~sysdispatch.errors.VmError`, never an IndexError. The error
carries no pc: the engine that made the access adds it.

The address space has two parts:

* per run (:class:`Memory`): the ctx or caller memory at :data:`CTX_BASE`, and one
  :data:`~sysdispatch.vm.isa.STACK_SIZE`-byte stack per call frame (frame *k* at
  ``STACK_BASE + k * STACK_STRIDE``; r10 points one past its top), made zeroed when the frame
  first touches it. Each run has its own, so concurrent runs never share a stack;
* shared (:data:`SHARED`): windows of ``2**WINDOW_SHIFT`` bytes handed to long-lived owners —
  each map gets one, its handle is the window's base and its values are regions inside it. A
  value's address is stable while the element lives, and visible to every run and to Python.

Lookup is O(1): the last region hit is cached (most accesses repeat it), then the few per-run
regions are scanned, then the window index ``addr >> WINDOW_SHIFT`` names the owner that resolves
the address itself. Guard gaps between regions make small overruns fault instead of aliasing.
"""

from __future__ import annotations

import struct
import threading
import weakref
from typing import Protocol

from ..errors import VmError
from .isa import MAX_CALL_FRAMES, STACK_SIZE

CTX_BASE = 0x0000_0001_0000_0000    # ctx / caller memory of a run
STACK_BASE = 0x0000_7FFF_0000_0000  # call frame k's stack: STACK_BASE + k * STACK_STRIDE
STACK_STRIDE = 0x1_0000
WINDOW_SHIFT = 48                   # shared windows: window w covers [w << 48, (w + 1) << 48)
M64 = 0xFFFF_FFFF_FFFF_FFFF

UNPACK = {1: struct.Struct("<B").unpack_from, 2: struct.Struct("<H").unpack_from,
          4: struct.Struct("<I").unpack_from, 8: struct.Struct("<Q").unpack_from}
PACK = {1: struct.Struct("<B").pack_into, 2: struct.Struct("<H").pack_into,
        4: struct.Struct("<I").pack_into, 8: struct.Struct("<Q").pack_into}
SIZE_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF, 8: M64}

# Atomic read-modify-write on shared values must not interleave between threads: the GIL may
# switch between the load and the store, so atomics take this lock (cheap: no contention in the
# common single-threaded case).
ATOMIC_LOCK = threading.Lock()


class Region:
    """``size`` bytes at address ``base``. ``buf`` is a bytearray (bytes when read-only)."""

    __slots__ = ("base", "size", "end", "buf", "writable", "name", "__weakref__")

    def __init__(self, base: int, buf: bytearray | bytes, writable: bool, name: str) -> None:
        self.base = base
        self.size = len(buf)
        self.end = base + self.size
        self.buf = buf
        self.writable = writable
        self.name = name

    def __repr__(self) -> str:
        mode = "rw" if self.writable else "ro"
        return f"<Region {self.name} 0x{self.base:x}+{self.size} {mode}>"


class WindowOwner(Protocol):
    """An owner of a shared window (a map): resolves addresses inside it to its regions."""

    def region_at(self, addr: int) -> Region | None: ...


class SharedSpace:
    """Hands out windows of the shared address space; thread-safe.

    ``windows`` maps a window number to a weak reference to its owner: a window is given back
    when its owner (a map) is garbage-collected. Readers index it without a lock (a dict read is
    atomic under the GIL).
    """

    FIRST_WINDOW = 1  # window 0 holds the per-run regions and the null page

    def __init__(self) -> None:
        self.windows: dict[int, weakref.ref] = {}
        # Reentrant: the release callback may run from the garbage collector inside allocate().
        self._lock = threading.RLock()
        self._next = self.FIRST_WINDOW
        self._free: list[int] = []

    def allocate(self, owner: WindowOwner) -> int:
        """A fresh window for ``owner``; returns its base address."""
        with self._lock:
            if self._free:
                w = self._free.pop()
            else:
                w = self._next
                if w >= 1 << (64 - WINDOW_SHIFT):
                    raise VmError("shared address space exhausted (too many live maps)")
                self._next += 1
            self.windows[w] = weakref.ref(owner, lambda _ref, w=w: self._release(w))
        return w << WINDOW_SHIFT

    def _release(self, w: int) -> None:
        with self._lock:
            if self.windows.pop(w, None) is not None:
                self._free.append(w)

    def owner(self, addr: int) -> WindowOwner | None:
        ref = self.windows.get(addr >> WINDOW_SHIFT)
        return ref() if ref is not None else None

    def region_at(self, addr: int) -> Region | None:
        owner = self.owner(addr)
        return owner.region_at(addr) if owner is not None else None


SHARED = SharedSpace()

# A region nothing lies in: the initial "last hit" so the fast path needs no None check.
_NOWHERE = Region(0, b"", False, "nowhere")


class Memory:
    """The memory one run sees: its own ctx and stacks plus everything shared.

    Engines read ``last`` directly for their fast path (``0 <= addr - last.base <= last.size -
    n``) and call :meth:`load`/:meth:`store` otherwise; both update ``last``.
    """

    __slots__ = ("last", "local", "stacks", "depth")

    def __init__(self) -> None:
        self.last: Region = _NOWHERE
        self.local: list[Region] = []
        self.stacks: list[Region | None] = [None] * MAX_CALL_FRAMES
        self.depth = 1  # live call frames; a frame's stack is made when first touched

    # --- regions ---------------------------------------------------------------------------

    def map(self, base: int, data: bytearray | bytes, *, writable: bool = True,
            name: str = "mem") -> Region:
        """Place ``data`` at ``base`` (bytes are read-only; a bytearray is used in place, so the
        caller sees the program's writes). Overlapping an existing region is an error."""
        if writable and not isinstance(data, bytearray):
            data = bytearray(data)
        region = Region(base, data, writable, name)
        for other in self.local:
            if other.base < region.end and region.base < other.end:
                raise VmError(f"region {name} overlaps {other.name}")
        self.local.append(region)
        return region

    @staticmethod
    def stack_top(frame: int) -> int:
        """r10 of call frame ``frame``: one past the top of its stack."""
        return STACK_BASE + frame * STACK_STRIDE + STACK_SIZE

    def push_frame(self) -> int:
        """Enter a new call frame (the caller checks the depth limit); returns its r10."""
        self.depth += 1
        return self.stack_top(self.depth - 1)

    def pop_frame(self) -> None:
        """Leave the innermost frame: its stack is forgotten, the next call gets a fresh one."""
        self.depth -= 1
        region = self.stacks[self.depth]
        if region is not None:
            self.stacks[self.depth] = None
            self.local.remove(region)
            if self.last is region:
                self.last = _NOWHERE

    def stack(self, frame: int) -> Region:
        """The stack of call frame ``frame`` (created zeroed on first use). Programs that never
        touch their stack — most seccomp filters — never pay for one."""
        region = self.stacks[frame]
        if region is None:
            region = Region(STACK_BASE + frame * STACK_STRIDE, bytearray(STACK_SIZE), True,
                            f"stack of frame {frame}")
            self.stacks[frame] = region
            self.local.append(region)
        return region

    def _live_stack(self, addr: int) -> Region | None:
        """The stack whose window holds ``addr``, if that frame is live (made if needed)."""
        frame = (addr - STACK_BASE) // STACK_STRIDE
        if 0 <= frame < self.depth and STACK_BASE <= addr:
            return self.stack(frame)
        return None

    def find(self, addr: int, size: int) -> Region | None:
        """The region holding all of ``[addr, addr + size)``, or None."""
        for region in self.local:
            if region.base <= addr and addr + size <= region.end:
                return region
        region = self._live_stack(addr)
        if region is not None:
            return region if region.base <= addr and addr + size <= region.end else None
        region = SHARED.region_at(addr)
        if region is not None and region.base <= addr and addr + size <= region.end:
            return region
        return None

    def _region(self, addr: int, size: int, write: bool) -> Region:
        region = self.last
        if not (region.base <= addr and addr + size <= region.end):
            region = self.find(addr, size)
            if region is None:
                raise VmError(self._describe(addr, size, write))
            self.last = region
        if write and not region.writable:
            raise VmError(f"write of {size} bytes at 0x{addr & M64:x} into read-only "
                          f"{region.name}")
        return region

    def _describe(self, addr: int, size: int, write: bool) -> str:
        what = f"{'write' if write else 'read'} of {size} bytes at 0x{addr & M64:x}"
        if 0 <= addr < 0x1000:
            return f"{what}: null pointer"
        for frame in range(self.depth):  # describe a stack overrun relative to its stack
            base = STACK_BASE + frame * STACK_STRIDE
            if base - 0x1000 <= addr < base + STACK_SIZE + 0x1000:
                self.stack(frame)
        near = [r for r in self.local if r.base - 0x1000 <= addr < r.end + 0x1000]
        shared = SHARED.region_at(addr)
        if shared is not None:
            near.append(shared)
        if near:
            r = near[0]
            return (f"{what} outside {r.name} (0x{r.base:x}..0x{r.end:x}, {r.size} bytes, "
                    f"offset {addr - r.base})")
        return f"{what} outside any region"

    # --- access ----------------------------------------------------------------------------

    def load(self, addr: int, size: int) -> int:
        """Unsigned little-endian load of 1, 2, 4 or 8 bytes."""
        region = self._region(addr, size, False)
        return UNPACK[size](region.buf, addr - region.base)[0]

    def store(self, addr: int, size: int, value: int) -> None:
        """Little-endian store of the low ``size`` bytes of ``value``."""
        region = self._region(addr, size, True)
        PACK[size](region.buf, addr - region.base, value & SIZE_MASK[size])

    def read(self, addr: int, n: int) -> bytes:
        if n == 0:
            return b""
        region = self._region(addr, n, False)
        off = addr - region.base
        return bytes(region.buf[off:off + n])

    def write(self, addr: int, data: bytes) -> None:
        if not data:
            return
        region = self._region(addr, len(data), True)
        off = addr - region.base
        region.buf[off:off + len(data)] = data

    def read_cstr(self, addr: int, limit: int) -> bytes | None:
        """Bytes up to a NUL (at most ``limit``), or None when ``addr`` is not readable."""
        region = self.find(addr, 1)
        if region is None:
            return None
        off = addr - region.base
        chunk = bytes(region.buf[off:off + limit])
        nul = chunk.find(b"\0")
        return chunk if nul < 0 else chunk[:nul]

    def atomic(self, addr: int, size: int, update) -> int:
        """Atomically replace the value ``m`` at ``addr`` by ``update(m)``; returns ``m``."""
        region = self._region(addr, size, True)
        off = addr - region.base
        with ATOMIC_LOCK:
            old = UNPACK[size](region.buf, off)[0]
            PACK[size](region.buf, off, update(old))
        return old
