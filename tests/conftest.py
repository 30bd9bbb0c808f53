"""Shared test fixtures: where ../shared lives, and skips when it or root is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CONFORMANCE = SHARED / "conformance" / "bpf_conformance"


@pytest.fixture
def conformance_dir() -> Path:
    if not (CONFORMANCE / "tests").is_dir():
        pytest.skip(f"bpf_conformance suite not found at {CONFORMANCE} (../shared is missing)")
    return CONFORMANCE


@pytest.fixture
def shared_profiles() -> Path:
    d = SHARED / "profiles"
    if not d.is_dir():
        pytest.skip(f"profiles not found at {d} (../shared is missing)")
    return d


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (bpf(), PTRACE_SECCOMP_GET_FILTER)")
