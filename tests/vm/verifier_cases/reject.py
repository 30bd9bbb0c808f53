"""Programs the verifier must refuse, with the message and pc (see table.py)."""

from __future__ import annotations

from .table import ARR_KEY, HASH_KEY, Case

REJECT = [
    Case("r0 never set", "exit", "R0 !read_ok", 0, kernel=True),
    Case("uninitialised source register", "r0 = r3\nexit", "R3 !read_ok", 0, kernel=True),
    Case("write to the frame pointer", "r10 = 0\nr0 = 0\nexit",
         "frame pointer is read only", 0, kernel=True),
    Case("load into the frame pointer", "*(u64 *)(r10 - 8) = 0\nr10 = *(u64 *)(r10 - 8)\nexit",
         "frame pointer is read only", 1, kernel=True),
    Case("loop without progress", "r0 = 0\ngoto -1", "infinite loop detected at insn 1", 1,
         kernel=True),
    Case("loop without progress (conditional)", """
        r0 = 0
    L:
        if r0 > 10 goto +1
        goto L
        exit""", "infinite loop detected at insn 1", 1, kernel=True),
    Case("loop that outlives the budget", """
        r0 = 0
    L:
        r0 += 1
        if r0 != 0 goto L
        exit""", "BPF program is too large. Processed 2001 insn", 2, limit=2000),
    Case("unreachable instruction", "r0 = 0\nexit\nr0 = 1\nexit", "unreachable insn 2", 2,
         kernel=True),
    Case("last instruction is not exit", "r0 = 0\nif r0 == 0 goto -2\nr0 = 1",
         "last insn is not an exit or jmp", 2, kernel=True),
    Case("jump from one function into another", """
        call f
        goto +2
        exit
    f:
        r0 = 0
        exit""", "jump out of range from insn 1 to 4", 1, kernel=True),
    Case("helper call clobbers r1", "call 7\nr0 = r1\nexit", "R1 !read_ok", 1, kernel=True),
    Case("map value used before its NULL check", HASH_KEY + """
        r1 = map[hash] ll
        call 1
        r0 = *(u64 *)(r0 + 0)
        exit""", "R0 invalid mem access 'map_value_or_null'", 7, maps=("hash",), kernel=True),
    Case("NULL check on the other lookup", HASH_KEY + """
        r1 = map[hash] ll
        call 1
        r6 = r0
        r2 = r10
        r2 += -8
        r1 = map[hash] ll
        call 1
        if r0 == 0 goto +2
        r0 = *(u64 *)(r6 + 0)
        exit
        r0 = 0
        exit""", "R6 invalid mem access 'map_value_or_null'", 14, maps=("hash",),
         kernel=True),
    Case("NULL check in 32 bits does not count", HASH_KEY + """
        r1 = map[hash] ll
        call 1
        if w0 == 0 goto +2
        r0 = *(u64 *)(r0 + 0)
        exit
        r0 = 0
        exit""", "R0 invalid mem access 'map_value_or_null'", 8, maps=("hash",), kernel=True),
    Case("the NULL branch holds a scalar", HASH_KEY + """
        r1 = map[hash] ll
        call 1
        if r0 != 0 goto +2
        r0 = *(u64 *)(r0 + 0)
        exit
        r0 = 0
        exit""", "R0 invalid mem access 'scalar'", 8, maps=("hash",), kernel=True),
    Case("map value read past its end", ARR_KEY + """
        r1 = map[arr] ll
        call 1
        if r0 == 0 goto +2
        r0 = *(u64 *)(r0 + 4)
        exit
        r0 = 0
        exit""", "invalid access to map value, value_size=8 off=4 size=8", 8, maps=("arr",),
         kernel=True),
    Case("map value with an index up to 255", ARR_KEY + """
        r1 = map[big] ll
        call 1
        if r0 == 0 goto out
        r6 = r0
        call 7
        r0 &= 255
        r6 += r0
        r0 = *(u8 *)(r6 + 0)
        exit
    out:
        r0 = 0
        exit""", "R6 max value is outside of the allowed memory range", 12, maps=("big",),
         kernel=True),
    Case("map value with an unchecked index", ARR_KEY + """
        r1 = map[big] ll
        call 1
        if r0 == 0 goto out
        r6 = r0
        call 7
        r6 += r0
        r0 = *(u8 *)(r6 + 0)
        exit
    out:
        r0 = 0
        exit""", "math between map_value pointer and register with unbounded min value", 10,
         maps=("big",), kernel=True),
    Case("map value with an index checked one too far", ARR_KEY + """
        r1 = map[big] ll
        call 1
        if r0 == 0 goto +6
        r6 = r0
        call 7
        if r0 > 61 goto +3
        r6 += r0
        r0 = *(u32 *)(r6 + 0)
        exit
        r0 = 0
        exit""", "invalid access to map value, value_size=64 off=61 size=4", 12,
         maps=("big",), kernel=True),
    Case("map value with a negative index", ARR_KEY + """
        r1 = map[big] ll
        call 1
        if r0 == 0 goto +6
        r6 = r0
        call 7
        if r0 s> 8 goto +3
        r6 += r0
        r0 = *(u8 *)(r6 + 0)
        exit
        r0 = 0
        exit""", "math between map_value pointer and register with unbounded min value", 11,
         maps=("big",), kernel=True),
    Case("scalar used as a pointer", "r0 = 0\nr0 = *(u64 *)(r0 + 0)\nexit",
         "R0 invalid mem access 'scalar'", 1, kernel=True),
    Case("map handle used as a pointer", "r1 = map[arr] ll\nr0 = *(u64 *)(r1 + 0)\nexit",
         "R1 invalid mem access 'map_ptr'", 2, maps=("arr",)),
    Case("stack below 512 bytes", "*(u64 *)(r10 - 520) = 0\nr0 = 0\nexit",
         "invalid write to stack R10 off=-520 size=8", 0, kernel=True),
    Case("stack above the frame pointer", "*(u64 *)(r10 + 0) = 0\nr0 = 0\nexit",
         "invalid write to stack R10 off=0 size=8", 0, kernel=True),
    Case("misaligned stack access", "*(u64 *)(r10 - 6) = 0\nr0 = 0\nexit",
         "misaligned stack access off 0+0+-6 size 8", 0, kernel=True),
    Case("stack read before write", "r0 = *(u64 *)(r10 - 8)\nexit",
         "invalid read from stack off -8+0 size 8", 0),
    Case("stack read partly before write", "*(u32 *)(r10 - 8) = 0\nr0 = *(u64 *)(r10 - 8)\nexit",
         "invalid read from stack off -8+4 size 8", 1),
    Case("variable stack read over unwritten bytes", """
        *(u64 *)(r10 - 16) = 0
        call 7
        r0 &= 8
        r2 = r10
        r2 += r0
        r0 = *(u64 *)(r2 - 16)
        exit""", "invalid read from stack off -16+8 size 8", 5),
    Case("seccomp: modified ctx pointer", "r1 += 4\nr0 = *(u32 *)(r1 + 0)\nexit",
         "dereference of modified ctx ptr R1 off=4 disallowed", 1, type="seccomp"),
    Case("seccomp: ctx is read-only", "*(u32 *)(r1 + 0) = 1\nr0 = 0\nexit",
         "invalid bpf_context access off=0 size=4", 0, type="seccomp"),
    Case("seccomp: 2-byte ctx load", "r0 = *(u16 *)(r1 + 0)\nexit",
         "invalid bpf_context access off=0 size=2", 0, type="seccomp"),
    Case("seccomp: ctx load past the end", "r0 = *(u32 *)(r1 + 64)\nexit",
         "invalid bpf_context access off=64 size=4", 0, type="seccomp"),
    Case("seccomp: u64 load across nr and arch", "r0 = *(u64 *)(r1 + 0)\nexit",
         "invalid bpf_context access off=0 size=8", 0, type="seccomp"),
    Case("seccomp: misaligned ctx load", "r0 = *(u32 *)(r1 + 2)\nexit",
         "invalid bpf_context access off=2 size=4", 0, type="seccomp"),
    Case("seccomp: variable ctx offset", """
        r2 = *(u32 *)(r1 + 0)
        r2 &= 4
        r1 += r2
        r0 = *(u32 *)(r1 + 0)
        exit""", "variable ctx access var_off=(0x0; 0x4) disallowed", 3, type="seccomp"),
    Case("seccomp: pointer returned", "r0 = r1\nexit", "R0 leaks addr as return value", 1,
         type="seccomp"),
    Case("seccomp: atomic on ctx", "r2 = 1\nlock *(u32 *)(r1 + 0) += r2\nr0 = 0\nexit",
         "BPF_ATOMIC stores into R1 ctx is not allowed", 1, type="seccomp"),
    Case("generic memory past its size", "r0 = *(u32 *)(r1 + 4)\nexit",
         "invalid access to memory, mem_size=4 off=4 size=4", 0, mem_size=4),
    Case("pointer times scalar", "r1 = r10\nr1 *= 2\nr0 = 0\nexit",
         "R1 pointer arithmetic with *= operator prohibited", 1, kernel=True),
    Case("pointer or scalar", "r1 = r10\nr1 |= 2\nr0 = 0\nexit",
         "R1 bitwise operator |= on pointer prohibited", 1, kernel=True),
    Case("32-bit arithmetic on a pointer", "r1 = r10\nw1 += 2\nr0 = 0\nexit",
         "R1 32-bit pointer arithmetic prohibited", 1, kernel=True),
    Case("negated pointer", "r1 = r10\nr1 = -r1\nr0 = 0\nexit",
         "R1 pointer arithmetic prohibited", 1),
    Case("pointer minus pointer of another kind", "r1 = r10\nr3 = map[arr] ll\nr1 -= r3\n"
         "r0 = 0\nexit", "R1 pointer -= pointer prohibited", 3, maps=("arr",)),
    Case("pointer plus pointer", "r1 = r10\nr2 = r10\nr1 += r2\nr0 = 0\nexit",
         "R1 pointer += pointer prohibited", 2, kernel=True),
    Case("scalar minus pointer", "r0 = 0\nr0 -= r10\nexit",
         "R0 tried to subtract pointer from scalar", 1, kernel=True),
    Case("subtraction from the frame pointer", "r2 = r10\nr2 -= 8\nr0 = 0\nexit",
         "R2 subtraction from stack pointer prohibited", 1, kernel=True),
    Case("arithmetic on a map handle", "r1 = map[arr] ll\nr1 += 8\nr0 = 0\nexit",
         "R1 pointer arithmetic on map_ptr prohibited", 2, maps=("arr",), kernel=True),
    Case("arithmetic before the NULL check", HASH_KEY + """
        r1 = map[hash] ll
        call 1
        r0 += 8
        r0 = 0
        exit""", "R0 pointer arithmetic on map_value_or_null prohibited, null-check it first",
         7, maps=("hash",), kernel=True),
    Case("pointer plus unbounded scalar", "call 7\nr1 = r10\nr1 += r0\nr0 = 0\nexit",
         "math between fp pointer and register with unbounded min value is not allowed", 2,
         kernel=True),
    Case("pointer copied in 32 bits", "w0 = w10\nr0 = 0\nexit", "R10 partial copy of pointer",
         0),
    Case("pointer stored into a map value", ARR_KEY + """
        r1 = map[arr] ll
        call 1
        if r0 == 0 goto +1
        *(u64 *)(r0 + 0) = r10
        r0 = 0
        exit""", "R10 leaks addr into map", 8, maps=("arr",)),
    Case("pointer stored into caller memory", "*(u64 *)(r1 + 0) = r10\nr0 = 0\nexit",
         "R10 leaks addr into mem", 0, mem_size=8),
    Case("pointer spilled in half", "*(u32 *)(r10 - 8) = r10\nr0 = 0\nexit",
         "invalid size of register spill", 0, kernel=True),
    Case("spilled pointer read in half", "*(u64 *)(r10 - 8) = r10\nr0 = *(u32 *)(r10 - 8)\nexit",
         "invalid size of register fill", 1, kernel=True),
    Case("spilled pointer overwritten in half", """
        *(u64 *)(r10 - 8) = r10
        *(u32 *)(r10 - 8) = 0
        r0 = 0
        exit""", "attempt to corrupt spilled pointer on stack", 1),
    Case("division by immediate zero", "r0 = 1\nr0 /= 0\nexit", "div by zero", 1, kernel=True),
    Case("modulo by immediate zero", "w0 = 1\nw0 %= 0\nexit", "div by zero", 1, kernel=True),
    Case("shift by 64", "r0 = 1\nr0 <<= 64\nexit", "invalid shift 64", 1, kernel=True),
    Case("32-bit shift by 32", "w0 = 1\nw0 >>= 32\nexit", "invalid shift 32", 1, kernel=True),
    Case("callx", "r2 = 3\ncallx r2\nr0 = 0\nexit", "unknown opcode 8d", 1,
         kernel=True),
    Case("recursion past eight frames", """
        call f
        r0 = 0
        exit
    f:
        call f
        exit""", "the call stack of 9 frames is too deep !", 3, kernel=True),
    Case("callee returns its stack", """
        call f
        r0 = 0
        exit
    f:
        r0 = r10
        exit""", "cannot return stack pointer to the caller", 4, kernel=True),
    Case("callee reads the caller's r6", """
        r6 = 1
        call f
        exit
    f:
        r0 = r6
        exit""", "R6 !read_ok", 3, kernel=True),
    Case("caller reads r1 after a call", """
        r1 = 1
        call f
        r0 = r1
        exit
    f:
        r0 = 0
        exit""", "R1 !read_ok", 2, kernel=True),
    Case("callee's stack pointer spilled into the caller's frame", """
        r1 = r10
        r1 += -8
        call f
        r0 = 0
        exit
    f:
        r2 = r10
        r2 += -8
        *(u64 *)(r1 + 0) = r2
        r0 = 0
        exit""", "cannot spill pointers to stack into stack frame of the caller", 7,
         kernel=True),
    Case("two frames over 512 bytes of stack", """
        *(u64 *)(r10 - 512) = 0
        call f
        r0 = 0
        exit
    f:
        *(u64 *)(r10 - 16) = 0
        r0 = 0
        exit""", "combined stack size of 2 calls is 528. Too large", 4, kernel=True),
    Case("tail call in a program with functions", """
        r2 = map[jt] ll
        r3 = 0
        call 12
        call f
        exit
    f:
        r0 = 0
        exit""", "mixing of tail_calls and bpf-to-bpf calls is not supported", 3,
         maps=("jt",)),
    Case("lookup with a scalar as the map", "r1 = 0\nr2 = r10\ncall 1\nr0 = 0\nexit",
         "R1 type=scalar expected=map_ptr", 2, kernel=True),
    Case("lookup with a scalar as the key", "r1 = map[arr] ll\nr2 = 0\ncall 1\nr0 = 0\nexit",
         "R2 type=scalar expected=fp, map_value", 3, maps=("arr",), kernel=True),
    Case("lookup with an unwritten key", "r1 = map[arr] ll\nr2 = r10\nr2 += -4\ncall 1\n"
         "r0 = 0\nexit", "invalid indirect read from stack R2 off -4+0 size 4", 4,
         maps=("arr",)),
    Case("lookup with a key running past the stack", "r1 = map[hash] ll\nr2 = r10\n"
         "r2 += -4\ncall 1\nr0 = 0\nexit",
         "invalid indirect access to stack R2 off=-4 size=8", 4, maps=("hash",), kernel=True),
    Case("update with a value running past the stack", ARR_KEY + """
        r1 = map[big] ll
        r3 = r10
        r3 += -16
        *(u64 *)(r10 - 16) = 0
        r4 = 0
        call 2
        exit""", "invalid indirect access to stack R3 off=-16 size=64", 10,
         maps=("big",), kernel=True),
    Case("update with a value partly unwritten", ARR_KEY + """
        r1 = map[big] ll
        r3 = r10
        r3 += -64
        *(u64 *)(r10 - 64) = 0
        r4 = 0
        call 2
        exit""", "invalid indirect read from stack R3 off -64+8 size 64", 10,
         maps=("big",)),
    Case("update flags holding a pointer", ARR_KEY + """
        *(u64 *)(r10 - 16) = 0
        r3 = r10
        r3 += -16
        r1 = map[arr] ll
        r4 = r10
        call 2
        exit""", "R4 leaks addr into helper function", 10, maps=("arr",)),
    Case("tail call through an array map", "r2 = map[arr] ll\nr3 = 0\ncall 12\nr0 = 0\nexit",
         "cannot pass map_type 2 into func bpf_tail_call#12", 3, maps=("arr",), kernel=True),
    Case("lookup in a program array", ARR_KEY + "r1 = map[jt] ll\ncall 1\nr0 = 0\nexit",
         "cannot pass map_type 3 into func bpf_map_lookup_elem#1", 6, maps=("jt",),
         kernel=True),
    Case("tail call without the ctx", "r1 = map[jt] ll\nr2 = r1\nr3 = 0\ncall 12\nr0 = 0\n"
         "exit", "R1 type=map_ptr expected=ctx", 4, maps=("jt",), kernel=True),
    Case("tail call with a moved ctx", "r1 += 8\nr2 = map[jt] ll\nr3 = 0\ncall 12\nr0 = 0\n"
         "exit", "dereference of modified ctx ptr R1 off=8 disallowed", 4, maps=("jt",),
         kernel=True),
    Case("r0 after a tail call that fell through", "r2 = map[jt] ll\nr3 = 0\ncall 12\nexit",
         "R0 !read_ok", 4, maps=("jt",), kernel=True),
    Case("trace_printk of zero bytes", """
        *(u64 *)(r10 - 8) = 0
        r1 = r10
        r1 += -8
        r2 = 0
        call 6
        r0 = 0
        exit""", "R2 invalid zero-sized read: u64=[0,0]", 4, kernel=True),
    Case("trace_printk of an unbounded size", """
        *(u64 *)(r10 - 8) = 0
        call 7
        r2 = r0
        r2 >>= 1
        r1 = r10
        r1 += -8
        call 6
        r0 = 0
        exit""", "R2 unbounded memory access", 6, kernel=True),
    Case("trace_printk of a maybe negative size", """
        *(u64 *)(r10 - 8) = 0
        call 7
        r2 = r0
        r1 = r10
        r1 += -8
        call 6
        r0 = 0
        exit""", "R2 min value is negative, either use unsigned or 'var &= const'", 5,
         kernel=True),
    Case("trace_printk past the written bytes", """
        *(u64 *)(r10 - 8) = 0
        r1 = r10
        r1 += -8
        r2 = 9
        call 6
        r0 = 0
        exit""", "invalid indirect access to stack R1 off=-8 size=9", 4, kernel=True),
    Case("join of a safe and an unsafe path is not pruned", """
        *(u64 *)(r10 - 8) = 0
        call 7
        if r0 > 7 goto +2
        r2 = r0
        goto +1
        r2 = 8
        r1 = r10
        r1 += -8
        r1 += r2
        r0 = *(u8 *)(r1 + 0)
        exit""", "invalid read from stack R1 off=0 size=1", 9, kernel=True),
    Case("a checkpoint's precise offset is not stretched to cover a wider one", """
        *(u64 *)(r10 - 8) = 0
        call 7
        r3 = 0
        r4 = 0
        r5 = 0
        if r0 > 7 goto wide
        r2 = r0
        goto join
    wide:
        r2 = r0
        r2 &= 15
    join:
        r3 += 1
        r4 += 1
        r5 += 1
        if r3 == 0 goto +0
        r1 = r10
        r1 += -8
        r1 += r2
        r0 = *(u8 *)(r1 + 0)
        exit""", "invalid variable-offset read from stack R1 var_off=(0x0; 0xf) off=-8 size=1",
         17, kernel=True),
    Case("misaligned atomic on a map value", ARR_KEY + """
        r1 = map[arr] ll
        call 1
        if r0 == 0 goto +2
        r1 = 1
        lock *(u32 *)(r0 + 2) += r1
        r0 = 0
        exit""", "misaligned access off 0+0+2 size 4", 9, maps=("arr",), kernel=True),
    Case("atomic with a pointer operand", "*(u64 *)(r10 - 8) = 0\nr1 = r10\n"
         "lock *(u64 *)(r10 - 8) += r1\nr0 = 0\nexit", "R1 leaks addr into mem", 2),
    Case("direct map value address past the value", "r1 = map_value[one] + 8 ll\nr0 = 0\nexit",
         "invalid access to map value pointer, value_size=8 off=8", 0, maps=("one",),
         kernel=True),
    Case("direct map value address in a 4-entry array", "r1 = map_value[arr] + 0 ll\n"
         "r0 = 0\nexit", "invalid access to map value pointer, value_size=8 off=0", 0,
         maps=("arr",), kernel=True),
    Case("NULL check against a register holding 0", HASH_KEY + """
        r1 = map[hash] ll
        call 1
        r1 = 0
        if r1 != r0 goto +2
        r0 = 0
        exit
        r0 = *(u64 *)(r0 + 8)
        exit""", "R0 invalid mem access 'map_value_or_null'", 11, maps=("hash",),
         kernel=True),
    Case("direct value address of a hash map", "r1 = map_value[hash] + 0 ll\nr0 = 0\nexit",
         "no direct value access support for this map type", 0, maps=("hash",), kernel=True),
]
