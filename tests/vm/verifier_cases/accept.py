"""Programs the verifier must accept (see table.py for the fields)."""

from __future__ import annotations

from .table import ARR_KEY, HASH_KEY, Case

ACCEPT = [
    Case("exit with constant", "r0 = 0\nexit", kernel=True),
    Case("seccomp reads every field", """
        r0 = *(u32 *)(r1 + 0)
        r2 = *(u32 *)(r1 + 4)
        r3 = *(u64 *)(r1 + 8)
        r4 = *(u64 *)(r1 + 16)
        r5 = *(u32 *)(r1 + 20)
        r6 = *(u64 *)(r1 + 56)
        r7 = *(u32 *)(r1 + 60)
        exit""", type="seccomp"),
    Case("generic memory in bounds", "r0 = *(u32 *)(r1 + 4)\nexit", mem_size=8),
    Case("generic memory, bounded variable offset", """
        r3 = *(u8 *)(r1 + 0)
        r3 &= 7
        r1 += r3
        r0 = *(u8 *)(r1 + 0)
        exit""", mem_size=8),
    Case("generic memory written", "*(u64 *)(r1 + 0) = 1\nr0 = r2\nexit", mem_size=8),
    Case("spilled ctx pointer keeps its type", """
        *(u64 *)(r10 - 8) = r1
        r2 = *(u64 *)(r10 - 8)
        r0 = *(u32 *)(r2 + 0)
        exit""", type="seccomp"),
    Case("map lookup, NULL check, read", ARR_KEY + """
        r1 = map[arr] ll
        call 1
        if r0 == 0 goto +2
        r0 = *(u64 *)(r0 + 0)
        exit
        r0 = 0
        exit""", maps=("arr",), kernel=True),
    Case("NULL check with jne", HASH_KEY + """
        r1 = map[hash] ll
        call 1
        if r0 != 0 goto +2
        r0 = 0
        exit
        r0 = *(u64 *)(r0 + 8)
        exit""", maps=("hash",), kernel=True),
    Case("NULL check covers earlier copies", HASH_KEY + """
        r1 = map[hash] ll
        call 1
        r6 = r0
        *(u64 *)(r10 - 16) = r0
        if r0 == 0 goto +4
        r0 = *(u64 *)(r6 + 0)
        r7 = *(u64 *)(r10 - 16)
        r7 = *(u64 *)(r7 + 8)
        exit
        r0 = 0
        exit""", maps=("hash",), kernel=True),
    Case("map update with key and value on the stack", ARR_KEY + """
        r3 = 5
        *(u64 *)(r10 - 16) = r3
        r3 = r10
        r3 += -16
        r1 = map[arr] ll
        r4 = 0
        call 2
        exit""", maps=("arr",), kernel=True),
    Case("map delete", HASH_KEY + """
        r1 = map[hash] ll
        call 3
        exit""", maps=("hash",), kernel=True),
    Case("map value, bounded variable index", ARR_KEY + """
        r1 = map[big] ll
        call 1
        if r0 == 0 goto +6
        r6 = r0
        call 7
        r0 &= 56
        r6 += r0
        r0 = *(u64 *)(r6 + 0)
        exit
        r0 = 0
        exit""", maps=("big",), kernel=True),
    Case("map value, index bounded by a comparison", ARR_KEY + """
        r1 = map[big] ll
        call 1
        if r0 == 0 goto out
        r6 = r0
        call 7
        if r0 > 60 goto out
        r6 += r0
        r0 = *(u32 *)(r6 + 0)
        exit
    out:
        r0 = 0
        exit""", maps=("big",), kernel=True),
    Case("direct map value address", """
        r1 = map_value[one] + 4 ll
        r0 = *(u32 *)(r1 + 0)
        exit""", maps=("one",), kernel=True),
    Case("tail call from a seccomp program", """
        r6 = r1
        r2 = map[jt] ll
        r3 = *(u32 *)(r6 + 0)
        call 12
        r0 = 0x7fff0000
        exit""", type="seccomp", maps=("jt",)),
    Case("tail call with a constant index", """
        r2 = map[jt] ll
        r3 = 3
        call 12
        r0 = 0
        exit""", maps=("jt",), kernel=True),
    Case("trace_printk of a string on the stack", """
        r1 = 0x0a216968
        *(u64 *)(r10 - 8) = r1
        r1 = r10
        r1 += -8
        r2 = 5
        r3 = 0
        r4 = 0
        r5 = 0
        call 6
        r0 = 0
        exit""", kernel=True),
    Case("bounded loop of 100 iterations", """
        r0 = 0
        r1 = 0
    loop:
        r0 += r1
        r1 += 1
        if r1 < 100 goto loop
        exit""", kernel=True),
    Case("loop bounded by a random start below 16", """
        call 7
        r1 = r0
        r1 &= 15
        r0 = 0
    loop:
        r1 += -1
        r0 += 1
        if r1 s> 0 goto loop
        exit""", kernel=True),
    Case("bpf-to-bpf call keeps r6-r9", """
        r6 = 6
        r9 = 9
        r1 = 1
        r2 = 2
        call add
        r0 += r6
        r0 += r9
        exit
    add:
        r0 = r1
        r0 += r2
        r6 = 0
        exit""", kernel=True),
    Case("callee writes the caller's stack", """
        r1 = r10
        r1 += -8
        call fill
        r0 = *(u64 *)(r10 - 8)
        exit
    fill:
        r2 = 7
        *(u64 *)(r1 + 0) = r2
        r0 = 0
        exit""", kernel=True),
    Case("callee returns a map value pointer", ARR_KEY + """
        call get
        if r0 == 0 goto +2
        r0 = *(u64 *)(r0 + 0)
        exit
        r0 = 0
        exit
    get:
        r1 = map[arr] ll
        call 1
        exit""", maps=("arr",), kernel=True),
    Case("branch on a constant skips a bad instruction", """
        r1 = 1
        if r1 == 1 goto +1
        r0 = *(u64 *)(r1 + 0)
        r0 = 0
        exit""", kernel=True),
    Case("dead write to the frame pointer is never walked", """
        r1 = 1
        if r1 == 1 goto +1
        r10 = 0
        r0 = 0
        exit""", kernel=True),
    Case("jmp32 decides on the low half", """
        r1 = 0x100000001 ll
        if w1 == 1 goto +1
        r0 = *(u64 *)(r1 + 0)
        r0 = 0
        exit""", kernel=True),
    Case("pointer difference within the stack", """
        r1 = r10
        r1 += -8
        r2 = r10
        r1 -= r2
        r0 = r1
        exit""", kernel=True),
    Case("variable-offset stack read of initialised bytes", """
        *(u64 *)(r10 - 16) = 0xab
        *(u64 *)(r10 - 8) = 0xcd
        call 7
        r0 &= 1
        r0 <<= 3
        r2 = r10
        r2 += r0
        r0 = *(u64 *)(r2 - 16)
        exit"""),
    Case("stack index bounded by a 32-bit compare", """
        *(u64 *)(r10 - 8) = 0
        call 7
        w1 = w0
        if w1 > 7 goto +4
        r2 = r10
        r2 += r1
        r0 = *(u8 *)(r2 - 8)
        exit
        r0 = 0
        exit"""),
    Case("stack index bounded by signed compares", """
        *(u64 *)(r10 - 8) = 0
        call 7
        r1 = r0
        if r1 s< 0 goto +5
        if r1 s> 7 goto +4
        r2 = r10
        r2 += r1
        r0 = *(u8 *)(r2 - 8)
        exit
        r0 = 0
        exit"""),
    Case("atomic add on the stack", """
        r1 = 1
        *(u64 *)(r10 - 8) = r1
        lock *(u64 *)(r10 - 8) += r1
        r0 = *(u64 *)(r10 - 8)
        exit""", kernel=True),
    Case("atomic fetch_add on a map value", ARR_KEY + """
        r1 = map[arr] ll
        call 1
        if r0 == 0 goto +3
        r1 = 1
        r1 = atomic_fetch_add((u64 *)(r0 + 0), r1)
        r0 = r1
        exit""", maps=("arr",), kernel=True),
    Case("cmpxchg on the stack", """
        r1 = 5
        *(u64 *)(r10 - 8) = r1
        r0 = 5
        r2 = 6
        r0 = cmpxchg_64(r10 - 8, r0, r2)
        exit""", kernel=True),
    Case("low half of a spilled zero", """
        *(u64 *)(r10 - 8) = 0
        r0 = *(u32 *)(r10 - 4)
        exit""", kernel=True),
    Case("byte swaps and sign extension of scalars", """
        call 7
        r0 = be16 r0
        r0 = le32 r0
        r0 = bswap64 r0
        r1 = (s8)r0
        w2 = (s16)w1
        r0 = r2
        exit""", kernel=True),
    Case("pruning keeps 24 diamonds linear", "call 7\nr6 = r0\nr7 = 0\n" + "".join(f"""
        if r6 & {1 << (i % 30)} goto +2
        r7 += 1
        goto +0
        r0 = 0
    """ for i in range(24)) + "r0 = r7\nexit", kernel=True),
    Case("seccomp: high half of args[0]", "r0 = *(u32 *)(r1 + 20)\nexit", type="seccomp"),
    Case("seccomp: allow-list on nr", """
        r2 = *(u32 *)(r1 + 4)
        if r2 != 0xc000003e goto kill
        r2 = *(u32 *)(r1 + 0)
        if r2 == 59 goto allow
        r0 = 0x00050001
        exit
    allow:
        r0 = 0x7fff0000
        exit
    kill:
        r0 = 0x80000000
        exit""", type="seccomp"),
]

