"""The assembler: both syntaxes, labels, ranges, error locations, the conformance suite's text."""

from __future__ import annotations

import string
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysdispatch.errors import AsmError, EncodingError, SysdispatchError
from sysdispatch.vm.asm import assemble, parse
from sysdispatch.vm.isa import Insn, lddw, make
from sysdispatch.vm.program import MAP_LOOKUP_ELEM, SECCOMP

from asm_samples import CONFORMANCE_HELPERS, asm_of, sections

def code(text: str, **kw) -> bytes:
    return b"".join(i.encode() for i in parse(text, **kw).insns)


# --- the conformance suite --------------------------------------------------------------------


def test_every_conformance_program_assembles(conformance_dir):
    files = sorted((conformance_dir / "tests").glob("*.data"))
    assert len(files) >= 313
    checked_raw = 0
    for path in files:
        prog = assemble(asm_of(path), filename=path.name, helpers=CONFORMANCE_HELPERS)
        assert len(prog) > 0
        raw = sections(path).get("raw")
        if raw:   # some files also give the bytes: one little-endian 64-bit word per slot
            want = b"".join(int(w, 16).to_bytes(8, "little") for w in raw[1].split())
            assert prog.bytes() == want, path.name
            checked_raw += 1
    assert checked_raw >= 1


NEGATIVE = ("invalid_*.data", "empty*.data")


def test_negative_conformance_files_fail_with_one_line(conformance_dir):
    paths = [p for pat in NEGATIVE for p in sorted((conformance_dir / "negative").glob(pat))]
    assert len(paths) >= 12
    for path in paths:
        with pytest.raises((AsmError, EncodingError)) as info:
            assemble(asm_of(path), filename=path.name)
        msg = str(info.value)
        assert "\n" not in msg and msg.startswith(path.name), msg


def test_negative_conformance_messages_point_at_the_token(conformance_dir):
    neg = conformance_dir / "negative"
    expect = {
        "invalid_imm32_dec_range.data": ":5:12: immediate 2147483648 out of range for 32 bits",
        "invalid_imm32_hex_range.data": ":5:12: immediate 0x100000000 out of range for 32 bits",
        "invalid_label.data": ":4:4: undefined label 'NOT_A_LABEL'",
        "invalid_mnemonic.data": ":5:1: unknown mnemonic 'ldxq'",
        "invalid_register.data": ":4:9: invalid register '%r50'",
        "invalid_offset.data": ":4:11: expected a memory operand",
        "invalid_offset_range.data": ":5:15: offset 0x10000 out of range for 16 bits",
        "invalid_operand_count.data": ":4:1: 'lddw' takes 2 operands",
        "invalid_lock.data": ":4:1: 'lock or' takes 2 operands",
        "invalid_lock2.data": ":4:5: 'lock' needs an operation",
    }
    for name, want in expect.items():
        with pytest.raises(AsmError) as info:
            assemble(asm_of(neg / name), filename=name)
        assert str(info.value).startswith(name + want), str(info.value)


def test_error_data_is_a_valid_program(conformance_dir):
    # negative/error.data ("or %r0, %r10; exit", "-- error Invalid") tests a runner's handling of
    # an *expected* error; its program is valid ISA (r10 may be read), so it must assemble.
    path = conformance_dir / "negative" / "error.data"
    prog = assemble(asm_of(path), filename=path.name)
    assert prog.insns[0] == make("or", dst=0, src=10, reg=True)


# --- the two syntaxes agree -------------------------------------------------------------------

SAME = [
    ("mov %r1, -1", "r1 = -1"),
    ("mov32 %r1, 0xffffffff", "w1 = -1"),
    ("add64 %r0, %r7", "r0 += r7"),
    ("sdiv32 %r3, 7", "w3 s/= 7"),
    ("smod %r3, %r4", "r3 s%= r4"),
    ("arsh %r1, 3", "r1 s>>= 3"),
    ("neg %r2", "r2 = -r2"),
    ("neg32 %r2", "w2 = -w2"),
    ("movsx832 %r2, %r1", "w2 = (s8)w1"),
    ("movsx3264 %r2, %r1", "r2 = (s32)r1"),
    ("be16 %r0", "r0 = be16 r0"),
    ("le64 %r0", "r0 = le64 r0"),
    ("swap32 %r0", "r0 = bswap32 r0"),
    ("ldxw %r0, [%r1+4]", "r0 = *(u32 *)(r1 + 4)"),
    ("ldxsh %r0, [%r1-2]", "r0 = *(s16 *)(r1 - 2)"),
    ("ldxdw %r0, [%r1]", "r0 = *(u64 *)(r1 + 0)"),
    ("stxdw [%r10-8], %r0", "*(u64 *)(r10 - 8) = r0"),
    ("stw [%r1+2], 5", "*(u32 *)(r1 + 2) = 5"),
    ("lddw %r0, 0x123456789abcdef0", "r0 = 0x123456789abcdef0 ll"),
    ("jeq %r1, 59, +3", "if r1 == 59 goto +3"),
    ("jset %r1, 4, +1", "if r1 & 4 goto +1"),
    ("jsgt32 %r1, %r2, -1", "if w1 s> w2 goto -1"),
    ("ja +2", "goto +2"),
    ("ja32 +70000", "gotol +70000"),
    ("call 5", "call 5"),
    ("call %r2", "callx r2"),
    ("call local +3", "call pc+3"),
    ("exit", "exit"),
    ("lock add [%r10-8], %r1", "lock *(u64 *)(r10 - 8) += r1"),
    ("lock xor32 [%r10-8], %r1", "lock *(u32 *)(r10 - 8) ^= w1"),
    ("lock fetch add [%r10-8], %r1", "r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)"),
    ("lock fetch or32 [%r10-4], %r3", "w3 = atomic_fetch_or((u32 *)(r10 - 4), w3)"),
    ("lock xchg [%r10-8], %r1", "r1 = xchg_64(r10 - 8, r1)"),
    ("lock xchg32 [%r10-8], %r1", "w1 = xchg32_32(r10 - 8, w1)"),
    ("lock cmpxchg [%r10-8], %r1", "r0 = cmpxchg_64(r10 - 8, r0, r1)"),
    ("lock cmpxchg32 [%r10-8], %r1", "w0 = cmpxchg32_32(r10 - 8, w0, w1)"),
    ("lock_fetch_add32 [%r10-8], %r1", "w1 = atomic_fetch_add((u32 *)(r10 - 8), w1)"),
]


@pytest.mark.parametrize("ubpf,llvm", SAME)
def test_both_syntaxes_give_the_same_bytes(ubpf, llvm):
    assert code(ubpf) == code(llvm)


def test_encodings_match_the_isa_table():
    # a few fields spelled out: the table (isa.make) is the reference, not this test
    assert parse("if r2 == 59 goto +3").insns == [make("jeq", dst=2, off=3, imm=59, reg=False)]
    assert parse("w1 s%= w2").insns == [make("smod32", dst=1, src=2, reg=True)]
    assert parse("r0 = 0x1122334455667788 ll").insns == list(lddw(0, 0x1122334455667788))
    assert parse("r0 = -1 ll").insns == list(lddw(0, -1))
    assert parse("gotol -5").insns == [make("ja32", imm=-5)]
    assert parse("call pc-2").insns == [make("call_local", imm=-2)]
    assert parse("callx r7").insns == [Insn(0x8D, dst=7)]


def test_mixed_syntaxes_labels_and_comments():
    text = """\
    ; a comment line
    start: mov %r0, 0        # conformance syntax
    r1 = 10                  // LLVM syntax
loop:
    r0 += r1 ; add
    r1 -= 1
    if r1 != 0 goto loop
    jne %r0, 55, fail
    exit
fail: r0 = -1
    ja exit                  # the suite's implicit label: the first exit
"""
    prog = assemble(text, filename="loop.s")
    assert prog.labels == {0: "start", 2: "loop", 7: "fail"}
    assert prog.insns[4] == make("jne", dst=1, off=-3, reg=False)
    assert prog.insns[5].off == 1                 # jne ... fail
    assert prog.insns[8].off == -3                # ja exit -> pc 6
    assert [(loc.line, loc.col) for loc in prog.source[:3]] == [(2, 12), (3, 5), (5, 5)]


def test_lddw_slots_share_the_line_location():
    prog = assemble("r0 = 0\nr1 = 0x100000000 ll\nexit", filename="x.s")
    assert len(prog) == 4
    assert [str(loc) for loc in prog.source] == ["x.s:1:1", "x.s:2:1", "x.s:2:1", "x.s:3:1"]


def test_calls_by_helper_name_label_and_register():
    text = """\
        call map_lookup_elem
        call bpf_map_lookup_elem
        call MAP_LOOKUP_ELEM
        call 1
        call func
        call local func
        exit
func:   r0 = 0
        exit
"""
    prog = assemble(text)
    assert {i.imm for i in prog.insns[:4]} == {MAP_LOOKUP_ELEM}
    assert prog.insns[4] == make("call_local", imm=2)
    assert prog.insns[5] == make("call_local", imm=1)


def test_maps_by_name_index_and_mapping():
    conns, counts = SimpleNamespace(name="conns"), SimpleNamespace(name="counts")
    text = "r1 = map[counts] ll\nr2 = map_value[conns] + 8 ll\nr3 = map[0] ll\nexit"
    for maps in ([conns, counts], {"conns": object(), "counts": object()}):
        prog = assemble(text, maps=maps)
        assert len(prog.maps) == 2
        assert (prog.insns[0].src, prog.insns[0].imm, prog.insns[1].imm) == (1, 1, 0)
        assert (prog.insns[2].src, prog.insns[2].imm, prog.insns[3].imm) == (2, 0, 8)
        assert (prog.insns[4].src, prog.insns[4].imm) == (1, 0)
    with pytest.raises(AsmError, match=r"x\.s:1:10: unknown map 'nope' \(maps: conns\)"):
        assemble("r1 = map[nope] ll\nexit", filename="x.s", maps=[conns])
    with pytest.raises(AsmError, match=r"1:10: no map 3: the program has 1 map$"):
        assemble("r1 = map[3] ll\nexit", maps=[conns])


def test_pc_prefix_bytes_and_target_notes_are_skipped():
    text = """\
     0:  b7 00 00 00 01 00 00 00                          r0 = 1
     1:  18 01 00 00 88 77 66 55 00 00 00 00 44 33 22 11  r1 = 0x1122334455667788 ll
done:
     3:  05 00 ff ff 00 00 00 00                          goto -1 <done>
     4:  exit
"""
    assert code(text) == code("r0 = 1\nr1 = 0x1122334455667788 ll\ngoto -1\nexit")


# --- ranges ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text,imm", [
    ("r0 = 0xffffffff", -1), ("r0 = 0x80000000", -0x80000000), ("r0 = -2147483648", -0x80000000),
    ("w0 = 4294967295", -1), ("r0 = 2147483647", 0x7FFFFFFF), ("mov %r0, 0xffff8001", -0x7FFF),
    ("mov %r0, -2147483648", -0x80000000), ("if r1 == 0xffffffff goto +0", -1),
])
def test_32_bit_immediates(text, imm):
    assert parse(text).insns[0].imm == imm


@pytest.mark.parametrize("text,col,shown", [
    ("r0 = 4294967296", 6, "4294967296"),
    ("r0 = -2147483649", 6, "-2147483649"),
    ("mov32 %r0, 2147483648", 12, "2147483648"),     # conformance: decimal must be signed 32
    ("mov %r0, 0x100000000", 10, "0x100000000"),
    ("*(u32 *)(r10 - 8) = 4294967296", 21, "4294967296"),
])
def test_32_bit_immediates_out_of_range(text, col, shown):
    with pytest.raises(AsmError, match=rf"^x\.s:3:{col}: immediate {shown} out of range for 32"):
        parse("\n\n" + text, filename="x.s")


def test_offsets_and_64_bit_immediates():
    assert parse("r0 = *(u8 *)(r1 - 32768)").insns[0].off == -0x8000
    assert parse("ldxb %r0, [%r1+0x7fff]").insns[0].off == 0x7FFF
    with pytest.raises(AsmError, match=r"^1:19: offset 32768 out of range for 16 bits"):
        parse("r0 = *(u8 *)(r1 + 32768)")
    with pytest.raises(AsmError, match=r"^1:6: jump offset 40000 out of range for 16 bits"):
        parse("goto +40000")
    assert parse("lddw %r0, 18446744073709551615").insns == list(lddw(0, -1))
    with pytest.raises(AsmError, match=r"^1:11: immediate 0x10000000000000000 out of range for 64"):
        parse("lddw %r0, 0x10000000000000000")


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text,where,msg", [
    ("r0 = 1\nldxz %r0, [%r1]", "2:1", "unknown mnemonic 'ldxz'"),
    ("    r0 = *(u32 *)(r1 + 0)\n\n  r0 = *(u33 *)(r1 + 0)", "3:10", "unknown memory type 'u33'"),
    ("exit\n\n\n\n\n\nif r0 == 0 goto fial", "7:17", "undefined label 'fial'"),
    ("call bpf_nope\nexit", "1:6", "undefined label 'bpf_nope' (nor a helper name)"),
    ("a: exit\n  a: exit", "2:3", "duplicate label 'a' (first defined at line 1)"),
    ("r0 = r11", "1:6", "invalid register 'r11'"),
    ("w0 = r1", "1:6", "expected a 32-bit register w1, found 'r1'"),
    ("if w1 > r2 goto +1", "1:9", "expected a 32-bit register w2, found 'r2'"),
    ("w1 = 5 ll", "1:4", "a 64-bit load ('ll') needs a 64-bit register"),
    ("r1 = atomic_fetch_add((u64 *)(r10 - 8), r2)", "1:41", "same register on both sides"),
    ("r1 = cmpxchg_64(r10 - 8, r0, r2)", "1:6", "cmpxchg compares with and returns in r0"),
    ("r0 = (s64)r1", "1:7", "no sign-extending move from 's64'"),
    ("r0 = *(s64 *)(r1 + 0)", "1:8", "unknown memory type 's64'"),
    ("lock *(u16 *)(r1 + 0) += r2", "1:1", "no atomic 'add' on 2-byte memory"),
    ("lock *(u64 *)(r1 + 0) -= r2", "1:23", "unknown atomic operator '-='"),
    ("r0 = 1 2", "1:8", "unexpected '2'"),
    ("r0 = 12ab", "1:6", "bad number '12ab'"),
    ("r0 = @", "1:6", "unexpected character '@'"),
    ("add %r0, , 1", "1:8", "empty operand"),
    ("add %r0", "1:1", "'add' takes 2 operands (dst, src|imm), got 1"),
    ("call", "1:5", "'call' needs a target"),
    ("r0 = " + "9" * 5000, "1:6", "is too long"),
])
def test_errors_name_file_line_col(text, where, msg):
    with pytest.raises(AsmError) as info:
        assemble(text, filename="h.s")
    line = str(info.value)
    assert line.startswith(f"h.s:{where}: ") and msg in line and "\n" not in line, line


def test_load_errors_carry_the_source_location():
    with pytest.raises(EncodingError, match=r"^j\.s:3:5: pc 2: jump out of range \(target 43"):
        assemble("r0 = 0\nr1 = 1\n    goto +40\nexit", filename="j.s")
    with pytest.raises(EncodingError, match=r"^j\.s:2:1: pc 1: unknown helper 99"):
        assemble("r1 = 1\ncall 99\nexit", filename="j.s")


def test_origin_shifts_locations_into_the_enclosing_file():
    # e.g. asm = """r0 = 0 ... in a policy file, the text starting at line 14, column 8
    text = "r0 = 0\n  r1 = *(u128 *)(r1 + 0)\nexit"
    with pytest.raises(AsmError, match=r"^web\.toml:15:10: unknown memory type 'u128'"):
        assemble(text, filename="web.toml", origin=(14, 8))
    with pytest.raises(AsmError, match=r"^web\.toml:14:13: immediate 4294967296 out of range"):
        assemble("r0 = 4294967296", filename="web.toml", origin=(14, 8))
    prog = assemble("r0 = 0\nexit", filename="web.toml", origin=(14, 8))
    assert [str(loc) for loc in prog.source] == ["web.toml:14:8", "web.toml:15:1"]


def test_empty_text_is_an_error():
    with pytest.raises(AsmError, match=r"^e\.s: no instructions$"):
        assemble("; nothing\n\n  # here\n", filename="e.s")


def test_program_options_pass_through():
    prog = assemble("call 5\nexit", prog_type=SECCOMP, helpers=CONFORMANCE_HELPERS, name="h")
    assert (prog.prog_type, prog.name) == (SECCOMP, "h")
    with pytest.raises(EncodingError, match="unknown helper 5"):
        assemble("call 5\nexit", helpers=frozenset({1}))


# --- garbage never escapes as a Python error ------------------------------------------------

_PIECES = ["r0", "w1", "%r2", "r11", "=", "+=", "s>>=", "-", "+", "*", "(", ")", "[", "]", ",",
           "u32", "s8", "ll", "goto", "if", "==", "&", "lock", "call", "exit", "map", "fetch",
           "add", "mov32", "lddw", "jeq", "0x10", "8", "-1", "4294967296", "lbl:", "lbl", "<",
           ">", "atomic_fetch_add", "xchg_64", "cmpxchg_64", "be16", "local", "pc", ";", "\n"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES), max_size=12), st.text(string.printable, max_size=6))
def test_garbage_raises_only_sysdispatch_errors(pieces, noise):
    try:
        assemble(" ".join(pieces) + noise, filename="g.s", maps=[SimpleNamespace(name="m")])
    except SysdispatchError as exc:
        assert "\n" not in str(exc)
