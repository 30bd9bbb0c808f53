"""Every bpf_conformance program (read from ../shared, never copied) passes the verifier as a
generic program over its ``-- mem`` bytes, except the few the kernel's verifier refuses too —
each listed with the reason, and each checked to be refused by us (and by the kernel, when it
can be asked) for exactly that reason."""

from __future__ import annotations

import pytest

from sysdispatch.errors import VerifierError
from sysdispatch.vm import kernel
from sysdispatch.vm.conformance import load_case, parse_test
from sysdispatch.vm.verifier import verify

SHIFT = "invalid shift"   # kernel check_alu_op: a constant shift amount must be < the width
EXCLUDED = {
    **{f"{op}{w}-imm-{kind}.data": SHIFT
       for op in ("lsh", "rsh", "arsh") for w in (32, 64) for kind in ("high", "neg")},
    "callx.data": "unknown opcode 8d",   # the kernel has no call-by-register
}


def _cases(conformance_dir):
    for path in sorted((conformance_dir / "tests").glob("*.data")):
        case = parse_test(path)
        mem = case.mem()
        yield path, load_case(case), len(mem) if mem else 0


def test_conformance_programs_verify(conformance_dir):
    accepted, refused = [], {}
    for path, prog, mem_size in _cases(conformance_dir):
        try:
            verify(prog, mem_size=mem_size)
            accepted.append(path.name)
        except VerifierError as exc:
            refused[path.name] = str(exc)
    assert set(refused) == set(EXCLUDED), "\n".join(
        f"{name}: {why}" for name, why in sorted(refused.items()) if name not in EXCLUDED)
    for name, why in EXCLUDED.items():
        assert why in refused[name], refused[name]
    assert len(accepted) == 313 - len(EXCLUDED) == 300


def test_excluded_programs_are_refused_by_the_kernel_too(conformance_dir):
    if not kernel.kernel_bpf_available():
        pytest.skip("needs root and bpf() to ask the kernel's verifier")
    for name, why in EXCLUDED.items():
        prog = load_case(parse_test(conformance_dir / "tests" / name))
        with pytest.raises(VerifierError, match=why):
            kernel.load_program(prog)
