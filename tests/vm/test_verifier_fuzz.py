"""Random programs against the verifier: it never crashes, and what it accepts runs cleanly.

Programs are built from random instruction forms of :data:`sysdispatch.vm.isa.SPECS` over
registers that hold pointers (r1 = caller memory or a seccomp ctx, r10 and copies of it, a map
value) and scalars,
with offsets near the edges of each region. Every verdict must be an acceptance or a one-line
VerifierError; every accepted program is then run by the interpreter on many inputs, where it must
never fault — the property the verifier exists for.
"""

from __future__ import annotations

import random

from sysdispatch.errors import SysdispatchError, VerifierError, VmError
from sysdispatch.vm import isa
from sysdispatch.vm.disasm import disassemble
from sysdispatch.vm.helpers import Host
from sysdispatch.vm.interp import run
from sysdispatch.vm.maps import ArrayMap
from sysdispatch.vm.program import GENERIC, SECCOMP, Program
from sysdispatch.vm.verifier import verify

MEM = 16
BODY = [s for s in isa.SPECS if s.kind in ("alu", "alu32", "neg", "end", "bswap", "movsx", "ldx",
                                           "ldxs", "st", "stx", "atomic", "jcc", "jcc32")]
OFFSETS = (-16, -9, -8, -4, -1, 0, 1, 2, 4, 8, 12, 15, 16)
IMMS = (0, 1, -1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 255, 0x7FFFFFFF, -0x80000000)


def _prologue(rng: random.Random) -> list[isa.Insn]:
    out = [isa.make("mov", 6, 1, reg=True),          # r6 = caller memory
           isa.make("mov", 7, 10, reg=True),         # r7 = fp - 16
           isa.make("add", 7, imm=-16),
           isa.make("st" + "dw", 10, off=-8, imm=rng.choice(IMMS)),
           isa.make("st" + "dw", 10, off=-16, imm=rng.choice(IMMS))]
    for r in (0, 3, 4, 5, 8, 9):
        out.append(isa.make("mov", r, imm=rng.choice(IMMS)))
    return out


def _map_value(rng: random.Random) -> list[isa.Insn]:
    """r9 = map_lookup(arr, &key) with a NULL check that exits."""
    return [isa.make("st" + "w", 10, off=-20, imm=rng.randrange(4)),
            *isa.lddw(1, 0, isa.PSEUDO_MAP_FD),
            isa.make("mov", 2, 10, reg=True), isa.make("add", 2, imm=-20),
            isa.make("call", imm=1),
            isa.make("jne", 0, off=2, imm=0),
            isa.make("mov", 0, imm=0), isa.make("exit"),
            isa.make("mov", 9, 0, reg=True), isa.make("mov", 0, imm=0),
            isa.make("mov", 1, 6, reg=True), isa.make("mov", 2, imm=MEM),
            *(isa.make("mov", r, imm=rng.choice(IMMS)) for r in (3, 4, 5))]


def random_program(rng: random.Random, n: int) -> list[isa.Insn]:
    insns = _prologue(rng)
    if rng.random() < 0.5:
        insns += _map_value(rng)
    body_start = len(insns)
    for i in range(n):
        spec = rng.choice(BODY)
        regs = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
        scalars = (0, 2, 3, 4, 5, 8)   # mostly compute on scalars, sometimes on pointers
        dst = rng.choice(scalars if rng.random() < 0.8 else regs)
        src = rng.choice(scalars if rng.random() < 0.7 else regs)
        if spec.kind in ("ldx", "ldxs", "st", "stx", "atomic"):
            base = rng.choice((1, 6, 7, 9, 10, 10))
            if spec.kind in ("st", "stx", "atomic"):
                dst, off = base, rng.choice(OFFSETS)
                if spec.kind == "atomic" and src == 10:
                    src = 3   # fetch forms write src; r10 would be refused at decode time
            else:
                src, off = base, rng.choice(OFFSETS)
                dst = dst if dst != 10 else 0
            imm = rng.choice(IMMS)
            fields = {"dst": dst, "src": src, "off": off, "imm": imm}
        elif spec.kind in ("jcc", "jcc32"):
            left = n - i - 1
            off = rng.randrange(-min(3, i), left + 1) if left or i else 0
            fields = {"dst": dst, "src": src, "off": off, "imm": rng.choice(IMMS)}
        else:
            # no writes to r10 even in dead code: the interpreter refuses those at decode time
            fields = {"dst": dst if dst != 10 else 0, "src": src,
                      "imm": rng.choice(IMMS) if spec.kind in ("alu", "alu32") else 0}
            if spec.kind in ("alu", "alu32") and spec.op in ("lsh", "rsh", "arsh"):
                fields["imm"] = rng.randrange(32)
        for f in spec.zero:
            fields[f] = 0
        for f, v in spec.fixed:
            fields[f] = v
        insns.append(isa.Insn(spec.code, fields.get("dst", 0), fields.get("src", 0),
                              fields.get("off", 0), fields.get("imm", 0)))
    assert len(insns) > body_start
    insns += [isa.make("mov", 0, 0, reg=True) if rng.random() < 0.7 else
              isa.make("mov", 0, imm=1), isa.make("exit")]
    return insns


def test_random_programs():
    rng = random.Random(7)
    accepted = refused = 0
    for i in range(1500):
        ptype = SECCOMP if i % 3 == 0 else GENERIC
        size = rng.randrange(3, 14) if i % 5 else rng.randrange(14, 40)
        insns = random_program(rng, size)
        try:
            prog = Program.load(insns, maps=[ArrayMap(8, 4, name="arr")], prog_type=ptype)
        except SysdispatchError:
            continue   # structurally invalid (e.g. a jump into the middle of nowhere)
        try:
            vp = verify(prog, mem_size=MEM, insn_limit=20_000)
        except VerifierError as exc:
            assert "\n" not in str(exc)
            refused += 1
            continue
        accepted += 1
        for trial in range(4):
            data = rng.randbytes(64) if ptype is SECCOMP else bytearray(rng.randbytes(MEM))
            try:
                run(vp.program, data, host=Host.fixed(seed=trial), max_steps=100_000)
            except VmError as exc:
                raise AssertionError(f"verified program faulted: {exc}\n"
                                     f"{disassemble(vp.program)}") from None
    # the generator must exercise both verdicts to mean anything
    assert accepted >= 150 and refused >= 300, (accepted, refused)
