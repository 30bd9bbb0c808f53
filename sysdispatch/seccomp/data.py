"""``struct seccomp_data``: the 64-byte context every seccomp program reads.

Layout (include/uapi/linux/seccomp.h): ``int nr`` at 0, ``__u32 arch`` at 4,
``__u64 instruction_pointer`` at 8, ``__u64 args[6]`` at 16 + 8*i. Little-endian on every
architecture this project emulates.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

_LAYOUT = struct.Struct("<iIQ6Q")
SIZE = _LAYOUT.size  # 64
OFF_NR, OFF_ARCH, OFF_IP, OFF_ARGS = 0, 4, 8, 16

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_SYSCALL_BIT = 0x40000000


@dataclass(frozen=True, slots=True)
class SeccompData:
    nr: int
    arch: int = AUDIT_ARCH_X86_64
    instruction_pointer: int = 0
    args: tuple[int, ...] = field(default=(0, 0, 0, 0, 0, 0))

    def __post_init__(self) -> None:
        if len(self.args) != 6:
            object.__setattr__(self, "args", tuple(self.args) + (0,) * (6 - len(self.args)))

    def pack(self) -> bytes:
        nr = ((self.nr + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        return _LAYOUT.pack(nr, self.arch & 0xFFFFFFFF, self.instruction_pointer & (2**64 - 1),
                            *(a & (2**64 - 1) for a in self.args))

    @classmethod
    def unpack(cls, raw: bytes) -> "SeccompData":
        if len(raw) != SIZE:
            raise ValueError(f"struct seccomp_data is {SIZE} bytes, got {len(raw)}")
        nr, arch, ip, *args = _LAYOUT.unpack(raw)
        return cls(nr, arch, ip, tuple(args))
