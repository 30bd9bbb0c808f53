"""The verifier's table of programs: each accepted, or refused with the message the kernel gives.

This module holds what the cases share; accept.py and reject.py hold the cases, and
:data:`CASES` is all of them.

A case is assembly (LLVM syntax), a program type, the maps it names, and what must happen:
``reject=None`` means accepted, otherwise the text the error must contain and ``pc`` where.
``kernel=True`` marks programs that mean the same as a socket filter (they do not read r1's
memory or r2) and that the running kernel, as root, must accept or refuse alike; the others
touch a seccomp ctx, or a rule where this verifier is deliberately stricter than a privileged
kernel (see ``STRICTER``).

Used by tests/vm/test_verifier.py (our verdicts) and test_verifier_kernel.py (the kernel's).
"""

from __future__ import annotations

from dataclasses import dataclass

from sysdispatch.vm.maps import ArrayMap, HashMap, ProgArray


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    reject: str | None = None
    pc: int | None = None
    type: str = "generic"
    maps: tuple[str, ...] = ()
    mem_size: int = 0
    kernel: bool = False
    limit: int | None = None

    def __str__(self) -> str:
        return self.name


# Map geometries the cases refer to by name, as map[NAME].
MAPS = {
    "arr": lambda: ArrayMap(8, 4, name="arr"),        # key u32, value 8 bytes, 4 entries
    "one": lambda: ArrayMap(8, 1, name="one"),        # a single value (direct addresses)
    "big": lambda: ArrayMap(64, 4, name="big"),       # value 64 bytes
    "hash": lambda: HashMap(8, 16, 32, name="hash"),  # key 8 bytes, value 16 bytes
    "jt": lambda: ProgArray(8, name="jt"),
}

# key 0 on the stack at fp-4 for map[arr]
ARR_KEY = """
    r1 = 0
    *(u32 *)(r10 - 4) = r1
    r2 = r10
    r2 += -4
"""
# an 8-byte key at fp-8 for map[hash], filled from a random number (so it is not a constant)
HASH_KEY = """
    call 7
    *(u64 *)(r10 - 8) = r0
    r2 = r10
    r2 += -8
"""

# Why some rules are stricter than the kernel's as root (each has a case below, not kernel=True).
STRICTER = {
    "uninit stack read": "root may read stack bytes never written; we require them written",
    "null check always": "6.18 drops the NULL check for a constant in-range array key; we keep it",
    "pointer leaks": "root may turn pointers into scalars (mov32, stores into maps, helper "
                     "args); we refuse, so no address reaches r0 or host-visible memory",
    "pointer difference": "root may subtract any two pointers; we only subtract pointers into "
                          "the same object",
    "tail calls with subprograms": "x86-64 JIT allows it; our engines do not",
    "map handle reads": "root may read struct bpf_map fields through a map pointer (BTF); our "
                        "map handles are not memory",
    "trace_printk args": "the kernel does not check r3-r5 of trace_printk; our helper table "
                         "types them as scalars, so they must be set",
}


from .accept import ACCEPT  # noqa: E402 - the cases use the definitions above
from .reject import REJECT  # noqa: E402

CASES = ACCEPT + REJECT
