"""Map scripts: steps played on a map and the kernel's answer to each, for tests/vm/test_maps.py
(our maps) and tests/vm/test_kernel_oracle.py (the kernel's maps, and ours beside them).

A step is (operation, key, value, flags); its answer is the value read (int), None for success,
or the errno name. The answers were asked of Linux 6.18 and hold for any recent kernel.
"""

from __future__ import annotations

import errno

from sysdispatch.errors import MapError
from sysdispatch.vm import kernel
from sysdispatch.vm.kernel import BPF_F_LOCK as F_LOCK
from sysdispatch.vm.maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST

U64 = (1 << 64) - 1

ARRAY_SCRIPT = [  # key 4 bytes, value 8 bytes, 4 entries
    (("lookup", 0), 0),
    (("lookup", 4), "ENOENT"),
    (("update", 1, 5, BPF_ANY), None),
    (("update", 1, 6, BPF_NOEXIST), "EEXIST"),   # every element of an array always exists
    (("update", 2, 7, BPF_EXIST), None),
    (("update", 4, 1, BPF_ANY), "E2BIG"),        # index past max_entries
    (("update", 4, 1, BPF_NOEXIST), "E2BIG"),
    (("update", 1, 1, 3), "EINVAL"),             # unknown flag bits
    (("update", 9, 1, 3), "EINVAL"),             # flags are checked before the index
    (("update", 1, 1, F_LOCK), "EINVAL"),        # F_LOCK without a bpf_spin_lock in the value
    (("delete", 1), "EINVAL"),                   # array elements cannot be deleted
    (("delete", 9), "EINVAL"),
    (("lookup", 1), 5),
    (("lookup", 2), 7),
    (("update", 3, U64, BPF_EXIST), None),
    (("lookup", 3), U64),
]
HASH_SCRIPT = [  # key 4 bytes, value 8 bytes, 2 entries
    (("lookup", 1), "ENOENT"),
    (("update", 1, 5, BPF_EXIST), "ENOENT"),
    (("update", 1, 5, BPF_NOEXIST), None),
    (("update", 1, 6, BPF_NOEXIST), "EEXIST"),
    (("update", 1, 6, BPF_EXIST), None),
    (("update", 2, 7, BPF_ANY), None),
    (("update", 3, 8, BPF_ANY), "E2BIG"),       # full
    (("update", 3, 8, BPF_NOEXIST), "E2BIG"),
    (("update", 3, 8, BPF_EXIST), "ENOENT"),    # a missing key beats a full table
    (("update", 2, 9, BPF_ANY), None),          # replacing in a full table is fine
    (("update", 1, 1, 3), "EINVAL"),            # unknown flag bits
    (("update", 5, 1, 3), "EINVAL"),            # ... checked before the key is looked for
    (("update", 1, 1, F_LOCK), "EINVAL"),
    (("delete", 3), "ENOENT"),
    (("delete", 2), None),
    (("lookup", 2), "ENOENT"),
    (("update", 3, 10, BPF_NOEXIST), None),     # the freed slot is reused
    (("lookup", 1), 6),
    (("lookup", 3), 10),
]

# (kind, max_entries, script): every script's map has 4-byte keys and 8-byte values.
MAP_SCRIPTS = [("array", 4, ARRAY_SCRIPT), ("hash", 2, HASH_SCRIPT)]


def play(do, script) -> list:
    """Play ``script`` through ``do(op, *args)``; return the answers in the scripts' terms."""
    answers = []
    for step, _ in script:
        try:
            out = do(*step)
        except MapError as exc:
            answers.append(errno.errorcode[exc.errno])
        else:
            answers.append(int.from_bytes(out, "little") if out is not None else None)
    return answers


def our_ops(m):
    """``do`` for one of our maps (vm.maps)."""
    def do(op, key, value=None, flags=BPF_ANY):
        if op == "lookup":
            out = m.lookup(key)
            if out is None:  # ours answers None where bpf(2) fails with ENOENT
                raise MapError("absent", errno.ENOENT)
            return out
        if op == "delete":
            return m.delete(key)
        return m.update(key, value, flags)
    return do


def kernel_ops(m):
    """``do`` for a kernel map (vm.kernel.create_map)."""
    def do(op, key, value=None, flags=BPF_ANY):
        if op == "lookup":
            return kernel.map_lookup(m, key)
        if op == "delete":
            return kernel.map_delete(m, key)
        return kernel.map_update(m, key, value, flags)
    return do
