"""Seccomp's own checks (asked of the kernel), and the classic-filter text syntax: bytes -> text
-> bytes is exact for libseccomp's filters, Docker's profile and every instruction form."""

from __future__ import annotations

import errno
import io
import random

import pyseccomp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sysdispatch.errors import AsmError, VerifierError
from sysdispatch.seccomp import arch, cfilter, oracle
from sysdispatch.seccomp.data import SeccompData
from sysdispatch.vm import cbpf
from sysdispatch.vm.cbpf import OPS, CInsn

from cfilter_helpers import export, profile_filter

ALLOW = CInsn(cbpf.RET, 0, 0, 0x7FFF0000)


def c(kind, op="", reg=False, size=4):
    return next(code for code, o in OPS.items() if o.kind == kind and o.op == op
                and o.reg == reg and (o.size == size or kind not in ("ld_abs", "ld_ind")))


# --- seccomp_check_filter ------------------------------------------------------------------------

REFUSED = {
    "mod": ([CInsn(c("alu", "mod"), 0, 0, 3), ALLOW], "pc 0: 'mod k' is not allowed"),
    "ldh": ([CInsn(c("ld_abs", size=2), 0, 0, 0), ALLOW], "pc 0: 'ldh [k]' is not allowed"),
    "ld ind": ([CInsn(c("ld_ind", size=4), 0, 0, 0), ALLOW], "'ld [x+k]' is not allowed"),
    "msh": ([CInsn(c("ldx_msh"), 0, 0, 0), ALLOW], "is not allowed"),
    "past the struct": ([CInsn(c("ld_abs"), 0, 0, 64), ALLOW], "pc 0: ld [64] reads past"),
    "unaligned": ([ALLOW, CInsn(c("ld_abs"), 0, 0, 18), ALLOW], "pc 1: ld [18] is not 4-byte"),
    "classic rule": ([CInsn(c("ja", "ja"), 0, 0, 5), ALLOW], "pc 0: jump to 6 is out of range"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_seccomp_refuses_like_the_kernel(name):
    insns, words = REFUSED[name]
    with pytest.raises(VerifierError) as exc:
        cfilter.check(insns, filename="f.bpf")
    assert str(exc.value).startswith("f.bpf: ") and words in str(exc.value)
    assert oracle.kernel_accepts(cbpf.encode(insns)) == oracle.Outcome("refused", errno.EINVAL)


def test_accepted_forms_install_and_len_is_64():
    # ld [60] is the last word; len and ldx len read as 64 (seccomp rewrites them).
    insns = [CInsn(c("ld_abs"), 0, 0, 60), CInsn(c("ldx_len")), CInsn(c("ld_len")),
             CInsn(c("jcc", "jeq", True), 1, 0), CInsn(cbpf.RET, 0, 0, 0x50001), ALLOW]
    kernel = cfilter.check(insns)
    assert kernel[0] == CInsn(cbpf.LDX_ABS_W, 0, 0, 60)
    assert {kernel[1].k, kernel[2].k} == {64}
    raw = cbpf.encode(insns)
    nr = arch.X86_64.syscall_number("getppid")
    ret = cbpf.run(kernel, SeccompData(nr).pack()).ret
    assert ret == 0x7FFF0000
    assert oracle.kernel_outcome([raw], nr) == oracle.predict([ret]) == oracle.Outcome("allow")


# --- round trips ----------------------------------------------------------------------------------


def round_trip(raw: bytes, a=arch.X86_64) -> str:
    insns = cbpf.decode(raw)
    text = cfilter.disassemble(insns, arch=a)
    assert cbpf.encode(cfilter.assemble(text)) == raw
    plain = cfilter.disassemble(insns, arch=a, raw=False)
    assert cbpf.encode(cfilter.assemble(plain)) == raw
    return text


def test_round_trip_of_a_multi_arch_libseccomp_filter():
    f = pyseccomp.SyscallFilter(pyseccomp.ERRNO(1))
    for a in (pyseccomp.Arch.X86, pyseccomp.Arch.X32, pyseccomp.Arch.AARCH64):
        f.add_arch(a)
    for name in ("read", "write", "socket", "openat", "exit_group"):
        f.add_rule(pyseccomp.ALLOW, name)
    f.add_rule(pyseccomp.TRACE(9), "ioctl", pyseccomp.Arg(1, pyseccomp.MASKED_EQ, 0xFF00, 0x5400))
    text = round_trip(export(f))
    # Names are those of the arch each path tested for.
    assert "if (A == ARCH_I386)" in text or "if (A != ARCH_I386)" in text
    i386_socket = arch.I386.syscall_number("socket")
    assert f"0x{i386_socket:08x}  if (A == socket)" in text or \
        f"0x{i386_socket:08x}  if (A != socket)" in text
    assert "x32:read" in text and "return TRACE(9)" in text and "A = args[1] >> 32" in text


def test_round_trip_of_dockers_default_profile(shared_profiles):
    raw = profile_filter(shared_profiles / "moby-default.json")
    assert len(raw) // 8 > 300
    text = round_trip(raw)
    assert "if (A == personality)" in text or "if (A != personality)" in text


def test_round_trip_of_every_form_and_odd_values():
    forms = [code for code, o in OPS.items() if cfilter._seccomp_allows(o)]
    insns = [CInsn(c("ld_imm"), 0, 0, 1)] + [CInsn(c("st"), 0, 0, i) for i in range(16)]
    for code in forms:
        o = OPS[code]
        k = {"ld_abs": 20, "ld_mem": 15, "ldx_mem": 3, "st": 1, "stx": 2, "ja": 0,
             "alu": 7 if o.op != "lsh" else 31}.get(o.kind, 0xFFFFFFFF)
        insns.append(CInsn(code, 0, 0, k))
    insns += [CInsn(cbpf.RET, 0, 0, v) for v in (0x7FFF0001, 0x12340000, 0x50000 | 4096,
                                                  0x30005, 0, 0x80000000, 0x7FC00000,
                                                  0x7FFC0000)]
    # conditional jumps in all four shapes, ja, ret A
    jumps = [CInsn(c("jcc", "jgt"), 1, 0, 3), CInsn(c("jcc", "jge"), 0, 1, 3),
             CInsn(c("jcc", "jset"), 1, 2, 3), CInsn(c("jcc", "jeq", True), 0, 0),
             CInsn(c("jcc", "jset"), 0, 1, 3)]
    insns = insns[:17] + jumps + [CInsn(c("ja", "ja"), 0, 0, 1), ALLOW] + insns[17:]
    insns.append(CInsn(cbpf.RET | cbpf.RVAL_A))
    cfilter.check(insns)
    text = round_trip(cbpf.encode(insns))
    # a register form whose unused k is set keeps it, in braces
    assert "A += X {k=0x7}" in text
    for frag in ("A %= ", "return 0x7fff0001", "return 0x12340000", "return ERRNO(4096)",
                 "return TRAP(5)", "return USER_NOTIF", "return LOG", "if (!(A & 0x3))",
                 "if (A < 0x3) goto", "X = len", "M[15] = A", "return A"):
        if frag == "A %= ":
            assert frag not in text  # seccomp has no modulo
        else:
            assert frag in text, frag


@pytest.mark.parametrize("seed", range(6))
def test_round_trip_of_random_libseccomp_filters(seed):
    rnd = random.Random(seed)
    f = pyseccomp.SyscallFilter(rnd.choice([pyseccomp.ALLOW, pyseccomp.KILL_PROCESS,
                                            pyseccomp.ERRNO(1)]))
    if seed % 2:
        f.add_arch(pyseccomp.Arch.X86)
    for _ in range(8):
        op = rnd.choice([pyseccomp.NE, pyseccomp.LT, pyseccomp.LE, pyseccomp.EQ, pyseccomp.GE,
                         pyseccomp.GT, pyseccomp.MASKED_EQ])
        try:
            f.add_rule(rnd.choice([pyseccomp.TRAP, pyseccomp.LOG, pyseccomp.ERRNO(rnd.randrange(99)),
                                   pyseccomp.TRACE(rnd.randrange(99))]),
                       rnd.choice(["read", "ioctl", "mmap", "kill", "openat", "fcntl"]),
                       pyseccomp.Arg(rnd.randrange(6), op, rnd.getrandbits(64),
                                     rnd.getrandbits(64)))
        except OSError:
            pass
    round_trip(export(f))


# --- the assembler -----------------------------------------------------------------------------------


def test_labels_names_and_both_goto_styles():
    text = """
        .arch x86_64
        A = arch
        if (A != ARCH_X86_64) goto kill     # labels or absolute numbers
        A = sys_number
        if (A == execve) goto 0006
        if (A == i386:execve) goto deny else goto ok
        kill: return KILL_PROCESS
        deny: return ERRNO(EPERM)
        ok: return ALLOW
    """
    insns = cfilter.assemble(text, filename="t.asm")
    assert insns[3] == CInsn(c("jcc", "jeq"), 2, 0, arch.X86_64.syscall_number("execve"))
    assert insns[4] == CInsn(c("jcc", "jeq"), 1, 2, arch.I386.syscall_number("execve"))
    assert insns[6].k == 0x50001
    out = cfilter.disassemble(insns)
    assert "if (A == execve) goto 0006" in out
    # i386's execve is 11, which on this (x86_64) path reads as munmap
    assert arch.X86_64.syscall_name(11) == "munmap"
    assert "if (A == munmap) goto 0006 else goto 0007" in out


def test_names_follow_the_arch_a_path_tested_for():
    text = """
        A = arch
        if (A == ARCH_I386) goto i386
        A = sys_number
        if (A == socket) goto deny
        return ALLOW
        i386: A = sys_number
        if (A == socket) goto deny
        return ALLOW
        deny: return ERRNO(1)
    """
    insns = cfilter.assemble(text)
    assert insns[3].k == arch.X86_64.syscall_number("socket")
    assert insns[6].k == arch.I386.syscall_number("socket")
    insns_x32 = cfilter.assemble("A = sys_number\nif (A == read) goto 2\nreturn ALLOW\n"
                                 "return ERRNO(1)\n", default_arch=arch.X32)
    assert insns_x32[1].k == arch.X32.syscall_number("read") == 0x40000000


ERRORS = [
    ("A = sys_number\nfrobnicate\nreturn ALLOW\n", "t.asm:2:1: cannot parse 'frobnicate'"),
    ("if (A == 1) goto nowhere\nreturn ALLOW\n", "t.asm:1:18: undefined label 'nowhere'"),
    ("return ALLOW\nx: return ALLOW\ngoto x\n", "t.asm:3:6: backward jump to 1 from instruction 2"),
    ("A = sys_number\nif (A == nosuchcall) goto 2\nreturn ALLOW\nreturn ALLOW\n",
     "t.asm:2:10: unknown syscall 'nosuchcall' on x86_64"),
    ("A = args[6]\nreturn ALLOW\n", "t.asm:1:5: args[6]: a syscall has 6 arguments"),
    ("M[16] = A\nreturn ALLOW\n", "t.asm:1:3: scratch memory M[16] out of range"),
    ("A = 0x100000000\nreturn ALLOW\n", "t.asm:1:5: constant 0x100000000 does not fit"),
    ("return ERRNO(70000)\n", "t.asm:1:8: action data 70000 out of range"),
    ("A = 1\n", "t.asm:1:1: pc 0: last instruction must be a return"),
    ("A = 1\nA %= 3\nreturn A\n", "t.asm:2:1: pc 1: 'mod k' is not allowed in seccomp filters"),
    ("if (A == 1) goto far\n" + "A = 1\n" * 300 + "far: return ALLOW\n",
     "t.asm:1:18: conditional jump to 301 is 300 instructions ahead, more than 255"),
    (".arch vax\nreturn ALLOW\n", "t.asm:1:7: unknown architecture 'vax'"),
    ("x: A = 1\nx: return A\n", "t.asm:2:1: duplicate label 'x'"),
    ("A = 1 {k=2}\nreturn A\n", "t.asm:1:7: field k is an operand of this instruction"),
    ("A = X {jt=300}\nreturn A\n", "t.asm:1:8: jt=300 out of range"),
]


@pytest.mark.parametrize("text,message", ERRORS, ids=[m.split(": ", 1)[1][:30] for _, m in ERRORS])
def test_assembler_errors_say_where(text, message):
    with pytest.raises((AsmError, VerifierError)) as exc:
        cfilter.assemble(text, filename="t.asm")
    assert str(exc.value).startswith(message), str(exc.value)
    assert "\n" not in str(exc.value)


def test_arg_constants_collects_what_args_are_compared_with():
    f = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    f.add_rule(pyseccomp.ERRNO(1), "ioctl", pyseccomp.Arg(1, pyseccomp.EQ, 0x1234_0000_5678))
    f.add_rule(pyseccomp.ERRNO(2), "openat", pyseccomp.Arg(2, pyseccomp.MASKED_EQ, 3, 1))
    consts = cfilter.arg_constants(cbpf.decode(export(f)))
    assert 0x5678 in consts["args[1]"] and 0x1234 in consts["args[1] >> 32"]
    assert 1 in consts["args[2]"]


_SECCOMP_FORMS = sorted(code for code, o in OPS.items() if cfilter._seccomp_allows(o))
_K_POOL = [0, 4, 0xC000003E, 0x40000003, 0xC00000B7, 59, 0x40000000, 0x40000001, 11, 359,
           0xFFFFFFFF, 0x7FFF0000]


@st.composite
def seccomp_programs(draw):
    """Valid filters of any seccomp form, unused fields often set, constants often syscall
    numbers and AUDIT_ARCH values after loads of nr and arch."""
    out = [CInsn(c("ld_imm"), 0, 0, 0)] + [CInsn(c("st"), 0, 0, i) for i in range(16)]
    n = draw(st.integers(1, 30))
    end = len(out) + n
    for pc in range(len(out), end):
        code = draw(st.sampled_from(_SECCOMP_FORMS + [c("ld_abs")] * 6 + [c("jcc", "jeq")] * 6))
        o = OPS[code]
        room = min(end - pc - 1, 255)
        jt, jf = draw(st.integers(0, 255)), draw(st.integers(0, 255))
        k = draw(st.sampled_from(_K_POOL) | st.integers(0, 0xFFFFFFFF))
        if o.kind == "jcc":
            jt, jf = jt % (room + 1), jf % (room + 1)
        elif o.kind == "ja":
            k = k % (end - pc)
        elif o.kind == "ld_abs":
            k = draw(st.sampled_from([0, 0, 4, 4, 8, 12, 16, 20, 36, 60]))
        elif o.kind in ("ld_mem", "ldx_mem", "st", "stx"):
            k %= 16
        elif o.kind == "alu" and not o.reg:
            k = (k % 31 + 1) if o.op in ("lsh", "rsh", "div") else k
        out.append(CInsn(code, jt, jf, k))
    out.append(CInsn(draw(st.sampled_from([cbpf.RET, cbpf.RET | cbpf.RVAL_A])), 0, 0,
                     draw(st.sampled_from(_K_POOL))))
    cfilter.check(out)
    return out


@settings(max_examples=150, deadline=None)
@given(seccomp_programs(), st.sampled_from([arch.X86_64, arch.I386, arch.X32, arch.AARCH64]))
def test_any_valid_filter_round_trips_exactly(insns, a):
    raw = cbpf.encode(insns)
    text = cfilter.disassemble(insns, arch=a)
    assert cbpf.encode(cfilter.assemble(text)) == raw, text


def test_public_names_and_the_assemble_re_export():
    """``assemble`` lives in casm and is exported by cfilter through ``__all__`` (not a
    'noqa: F401' import that pyflakes calls unused)."""
    from sysdispatch.seccomp import casm
    names: dict = {}
    exec("from sysdispatch.seccomp.cfilter import *", names)
    assert names["assemble"] is casm.assemble
    assert all(hasattr(cfilter, n) for n in cfilter.__all__)
    pyflakes_api = pytest.importorskip("pyflakes.api")
    from pyflakes.reporter import Reporter
    out = io.StringIO()
    warnings = pyflakes_api.checkPath(cfilter.__file__, Reporter(out, out))
    assert warnings == 0, out.getvalue()
