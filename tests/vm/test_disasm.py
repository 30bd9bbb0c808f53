"""The disassembler: llvm-objdump spelling, and text -> bytes -> text -> bytes for every form."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sysdispatch.errors import EncodingError
from sysdispatch.vm.asm import assemble, parse
from sysdispatch.vm.disasm import disassemble, format_insn
from sysdispatch.vm.isa import LDDW_SOURCES, SPECS, Insn, lddw, make
from sysdispatch.vm.maps import ArrayMap, HashMap

from asm_samples import CONFORMANCE_HELPERS, MAPS, all_samples, asm_of, build


def text_of(slots, pc=0, **kw) -> str:
    return format_insn(pc, slots[0], slots[1] if len(slots) > 1 else None, **kw)


def bytes_of(slots) -> bytes:
    return b"".join(i.encode() for i in slots)


# --- exact spellings (llvm-objdump 14/19 with --no-print-imm-hex, plus our target notes) -------

GOLDEN = [
    (make("mov", dst=0, imm=1, reg=False), "r0 = 1"),
    (make("mov32", dst=0, imm=-1, reg=False), "w0 = -1"),
    (make("add", dst=0, src=1, reg=True), "r0 += r1"),
    (make("arsh32", dst=3, imm=4, reg=False), "w3 s>>= 4"),
    (make("sdiv", dst=1, src=2, reg=True), "r1 s/= r2"),
    (make("smod32", dst=1, src=2, reg=True), "w1 s%= w2"),
    (make("neg", dst=4), "r4 = -r4"),
    (make("movsx1632", dst=1, src=2), "w1 = (s16)w2"),
    (make("movsx3264", dst=1, src=2), "r1 = (s32)r2"),
    (make("be16", dst=0), "r0 = be16 r0"),
    (make("le32", dst=0), "r0 = le32 r0"),
    (make("bswap64", dst=5), "r5 = bswap64 r5"),
    (make("ldxw", dst=0, src=1, off=0), "r0 = *(u32 *)(r1 + 0)"),
    (make("ldxsh", dst=0, src=1, off=2), "r0 = *(s16 *)(r1 + 2)"),
    (make("stxdw", dst=10, src=1, off=-8), "*(u64 *)(r10 - 8) = r1"),
    (make("stw", dst=10, off=-8, imm=5), "*(u32 *)(r10 - 8) = 5"),
    (make("lock_add", dst=10, src=1, off=-8), "lock *(u64 *)(r10 - 8) += r1"),
    (make("lock_and32", dst=10, src=1, off=-8), "lock *(u32 *)(r10 - 8) &= w1"),
    (make("lock_fetch_add", dst=10, src=0, off=-8),
     "r0 = atomic_fetch_add((u64 *)(r10 - 8), r0)"),
    (make("lock_xchg", dst=10, src=0, off=-8), "r0 = xchg_64(r10 - 8, r0)"),
    (make("lock_cmpxchg", dst=10, src=1, off=-8), "r0 = cmpxchg_64(r10 - 8, r0, r1)"),
    (make("lock_cmpxchg32", dst=10, src=1, off=-8), "w0 = cmpxchg32_32(r10 - 8, w0, w1)"),
    (make("jeq", dst=2, imm=59, off=3, reg=False), "if r2 == 59 goto +3 <pc 14>"),
    (make("jset32", dst=1, src=2, off=-1, reg=True), "if w1 & w2 goto -1 <pc 10>"),
    (make("ja", off=2), "goto +2 <pc 13>"),
    (make("ja32", imm=70000), "gotol +70000 <pc 70011>"),
    (make("call", imm=1), "call 1"),
    (make("call_local", imm=3), "call pc+3 <pc 14>"),
    (Insn(0x8D, dst=2), "callx r2"),
    (make("exit"), "exit"),
]


@pytest.mark.parametrize("insn,text", GOLDEN, ids=[t for _, t in GOLDEN])
def test_llvm_spelling(insn, text):
    assert format_insn(10, insn) == text


def test_lddw_spelling_and_maps():
    assert text_of(lddw(1, 0x1122334455667788)) == "r1 = 0x1122334455667788 ll"
    assert text_of(lddw(1, -1)) == "r1 = 0xffffffffffffffff ll"
    assert text_of(lddw(1, 42)) == "r1 = 42 ll"
    maps = [ArrayMap(8, 4, name="conns"), HashMap(4, 8, 16, name="counts")]
    assert text_of(lddw(1, 1, src=1), maps=maps) == "r1 = map[counts] ll"
    value = (Insn(0x18, 2, 2, 0, 0), Insn(0, imm=8))
    assert text_of(value, maps=maps) == "r2 = map_value[conns] + 8 ll"
    assert text_of(value, maps={"a": 1}) == "r2 = map_value[a] + 8 ll"
    assert text_of(value) == "r2 = map_value[0] + 8 ll"      # maps unknown: by index
    with pytest.raises(EncodingError, match="lddw without its second slot"):
        format_insn(0, lddw(1, 5)[0])


def test_jump_notes_use_labels():
    labels = {14: "deny"}
    assert format_insn(10, make("jeq", dst=2, off=3, imm=59), labels=labels) == \
        "if r2 == 59 goto +3 <deny>"


# --- round trips --------------------------------------------------------------------------------


def test_every_spec_round_trips():
    seen = set()
    for spec, slots in all_samples():
        text = text_of(slots, pc=100, maps=MAPS)
        again = parse(text, maps=MAPS).insns
        assert tuple(again) == slots, (spec.name, text)
        assert text_of(again, pc=100, maps=MAPS) == text
        seen.add(spec)
    assert seen == set(SPECS)


@st.composite
def instructions(draw):
    spec = draw(st.sampled_from(SPECS))
    reg = st.integers(0, 10)
    return build(spec, draw(reg),
                 draw(st.sampled_from(LDDW_SOURCES)) if spec.wide else draw(reg),
                 draw(st.integers(-0x8000, 0x7FFF)),
                 draw(st.integers(-0x80000000, 0x7FFFFFFF)),
                 draw(st.integers(0, 2**64 - 1)))


@settings(max_examples=400, deadline=None)
@given(instructions(), st.integers(0, 100000))
def test_random_instructions_round_trip(slots, pc):
    text = text_of(slots, pc=pc, maps=MAPS)
    assert bytes_of(parse(text, maps=MAPS).insns) == bytes_of(slots), text


PROGRAM = """\
entry:
    r6 = r1
    r1 = map[conns] ll
    r2 = *(u32 *)(r6 + 0)
    if r2 == 59 goto deny
    if w2 s> 0x100 goto other
    call pc+5
    r0 = 0x7fff0000
    exit
deny:
    r0 = 0x50001
    exit
other:
    gotol entry
sub:
    r0 = 0
    exit
"""


@pytest.mark.parametrize("with_pc", [True, False])
@pytest.mark.parametrize("with_bytes", [True, False])
def test_disassembly_reassembles_to_the_same_bytes(with_pc, with_bytes):
    maps = [ArrayMap(8, 4, name="conns")]
    prog = assemble(PROGRAM, maps=maps)
    text = disassemble(prog, with_pc=with_pc, with_bytes=with_bytes)
    again = assemble(text, maps=maps)
    assert again.bytes() == prog.bytes()
    assert again.labels == prog.labels
    assert disassemble(again, with_pc=with_pc, with_bytes=with_bytes) == text


def test_disassembly_layout():
    prog = assemble(PROGRAM, maps=[ArrayMap(8, 4, name="conns")])
    lines = disassemble(prog).splitlines()
    assert lines[:3] == ["entry:", "     0:  r6 = r1", "     1:  r1 = map[conns] ll"]
    assert "     4:  if r2 == 59 goto +4 <deny>" in lines
    assert "    11:  gotol -12 <entry>" in lines
    assert "     6:  call pc+5 <sub>" in lines
    with_bytes = disassemble(prog, with_bytes=True).splitlines()
    assert with_bytes[2].startswith("     1:  18 11 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ")
    assert with_bytes[1] == "     0:  " + "bf 16 00 00 00 00 00 00".ljust(48) + "  r6 = r1"
    assert disassemble(prog, with_pc=False).splitlines()[1] == "r6 = r1"


def test_conformance_programs_round_trip_through_text(conformance_dir):
    for path in sorted((conformance_dir / "tests").glob("*.data")):
        prog = assemble(asm_of(path), filename=path.name, helpers=CONFORMANCE_HELPERS)
        again = assemble(disassemble(prog, with_bytes=True), helpers=CONFORMANCE_HELPERS)
        assert again.bytes() == prog.bytes(), path.name
