"""The running kernel's verifier as the oracle for ours.

Every case of the table marked ``kernel=True`` is loaded as a socket filter (as root) into the
kernel, with real maps of the same geometry, and the kernel must accept exactly the programs we
accept. Random programs from :mod:`sysdispatch.vm.progen` (which the kernel accepts, see
test_progen.py) must pass our verifier too.
"""

from __future__ import annotations

import random

import pytest

from sysdispatch.errors import SysdispatchError, VerifierError
from sysdispatch.vm import kernel
from sysdispatch.vm.progen import random_program
from sysdispatch.vm.program import Program
from sysdispatch.vm.verifier import verify
from test_verifier import build
from verifier_cases.table import CASES, Case

KERNEL_CASES = [c for c in CASES if c.kernel]


@pytest.fixture(scope="module")
def kernel_ok():
    if not kernel.kernel_bpf_available():
        pytest.skip("needs root and bpf() to ask the kernel's verifier")


def kernel_verdict(prog: Program) -> str | None:
    """None when the kernel accepts ``prog``, else the end of its log."""
    maps = [kernel.create_map(m.map_type, m.key_size, m.value_size, m.max_entries)
            for m in prog.maps]
    try:
        kernel.load_program(prog, maps=maps).close()
        return None
    except VerifierError as exc:
        return str(exc)
    finally:
        for m in maps:
            m.close()


def test_enough_cases_are_asked():
    assert len(KERNEL_CASES) >= 60


@pytest.mark.parametrize("case", KERNEL_CASES, ids=str)
def test_kernel_agrees(kernel_ok, case: Case):
    prog = build(case)
    try:
        verify(prog, mem_size=case.mem_size, **({"insn_limit": case.limit} if case.limit else {}))
        ours = None
    except SysdispatchError as exc:
        ours = str(exc)
    theirs = kernel_verdict(prog)
    assert (ours is None) == (theirs is None), f"ours: {ours or 'accepted'}\n" \
                                               f"kernel: {theirs or 'accepted'}"


def test_random_kernel_valid_programs_pass(kernel_ok):
    rng = random.Random(20240607)
    for i in range(120):
        prog = Program.load(random_program(rng, length=rng.randrange(8, 60)))
        verify(prog)
        if i % 4 == 0:   # and the kernel agrees (a sample: loading costs more than verifying)
            assert kernel_verdict(prog) is None
