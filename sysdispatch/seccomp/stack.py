"""Stacked seccomp filters, evaluated like the kernel, and what a verdict does to a syscall.

A process may carry many filters. On every syscall the kernel runs *all* of them, newest first,
and keeps the most restrictive return value, the newest filter winning a tie
(:func:`sysdispatch.seccomp.actions.combine`). A filter here is anything runnable on a
``struct seccomp_data``: a classic filter (run by the direct classic interpreter, and also
convertible to eBPF exactly as the kernel converts it) or an eBPF program of the seccomp type.

Installing is limited like the kernel's ``seccomp_attach_filter``: the instructions on the path
through all filters, counting 4 extra per earlier filter, may not exceed 32768
(MAX_INSNS_PER_PATH), else ENOMEM. The kernel counts the *converted* eBPF instructions
(``prog->len`` after bpf_convert_filter), not the classic ones; a test asks the kernel.

:func:`load_filter` maps a path to a filter by its suffix: the extension point for other kinds
of filter files (a policy compiler registers its suffix with :func:`register_loader`).
"""

from __future__ import annotations

import errno as _errno
import signal
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

from ..errors import Location, SysdispatchError, VerifierError
from ..vm import cbpf
from ..vm.cbpf import CInsn
from ..vm.program import SECCOMP, Program
from . import actions, cfilter
from .arch import X86_64, Arch
from .data import SeccompData

MAX_INSNS_PER_PATH = (1 << 18) // 8  # kernel/seccomp.c: 256 KiB of struct sock_filter
PER_FILTER_PENALTY = 4


@dataclass(frozen=True, slots=True)
class FilterRun:
    """One filter's run: its return value, the instructions executed (None when the engine does
    not report them) and the seccomp_data offsets it loaded."""

    ret: int
    path: tuple[int, ...] | None = None
    loads: frozenset[int] = frozenset()

    @property
    def return_pc(self) -> int | None:
        return self.path[-1] if self.path else None


class Filter:
    """Something the kernel could run as a seccomp filter."""

    name: str
    kind: str

    def __len__(self) -> int:
        raise NotImplementedError

    def kernel_len(self) -> int:
        """How many instructions the kernel counts for this filter (eBPF, after conversion)."""
        raise NotImplementedError

    def run(self, data: SeccompData) -> FilterRun:
        raise NotImplementedError

    def listing(self, arch: Arch = X86_64) -> list[str]:
        """The disassembly, one line per instruction (index = pc)."""
        raise NotImplementedError


class ClassicFilter(Filter):
    """A classic filter: ``insns`` as written, ``kernel`` as seccomp runs them."""

    kind = "classic"

    def __init__(self, insns: Sequence[CInsn], *, name: str = "filter") -> None:
        self.name = name
        self.insns = tuple(insns)
        self.kernel = cfilter.check(self.insns, filename=name)
        self._prepared = cbpf.prepare(self.kernel)

    @classmethod
    def from_bytes(cls, raw: bytes, *, name: str = "filter") -> "ClassicFilter":
        return cls(cbpf.decode(raw, filename=name), name=name)

    def __len__(self) -> int:
        return len(self.insns)

    def bytes(self) -> bytes:
        return cbpf.encode(self.insns)

    def kernel_len(self) -> int:
        return len(self.converted.program)

    def run(self, data: SeccompData) -> FilterRun:
        r = cbpf.run(self._prepared, data.pack())
        return FilterRun(r.ret, r.path, r.loads)

    @cached_property
    def converted(self) -> cbpf.Converted:
        """The eBPF program the kernel would run (bpf_convert_filter)."""
        return cbpf.convert(self.kernel, prog_type=SECCOMP, name=self.name)

    def run_converted(self, data: SeccompData) -> int:
        """The return value of the converted program on the eBPF machine."""
        return _run_ebpf(self.converted.program, data)

    def listing(self, arch: Arch = X86_64) -> list[str]:
        return cfilter.disassemble_lines(self.insns, arch=arch)


class EbpfFilter(Filter):
    """An eBPF program of the seccomp type used as a filter (r0's low 32 bits are the verdict)."""

    kind = "ebpf"

    def __init__(self, program: Program, *, name: str = "filter") -> None:
        if program.prog_type is not SECCOMP:
            raise VerifierError(f"program type is {program.prog_type}, a filter must be "
                                f"{SECCOMP}", loc=Location(name))
        self.name = name
        self.program = program

    def __len__(self) -> int:
        return len(self.program)

    def kernel_len(self) -> int:
        return len(self.program)

    def run(self, data: SeccompData) -> FilterRun:
        return FilterRun(_run_ebpf(self.program, data))

    def listing(self, arch: Arch = X86_64) -> list[str]:
        from ..vm.disasm import disassemble
        return disassemble(self.program).splitlines()


def _run_ebpf(program: Program, data: SeccompData) -> int:
    from ..vm import interp  # the vm engine; imported when first needed
    result = interp.run(program, ctx=data.pack())
    return result.r0 & 0xFFFFFFFF  # the kernel's BPF_PROG_RUN returns u32 for seccomp


# --- stacks ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StackRun:
    """All filters' runs (oldest first), the combined value, and which filter it came from
    (None when every filter allowed: the kernel then keeps no match)."""

    ret: int
    runs: tuple[FilterRun, ...]
    winner: int | None

    @property
    def verdict(self) -> actions.Verdict:
        return actions.Verdict(self.ret)


class FilterStack:
    """Filters in installation order (oldest first), evaluated like the kernel."""

    def __init__(self, filters: Sequence[Filter] = ()) -> None:
        self.filters: list[Filter] = []
        for f in filters:
            self.add(f)

    def __len__(self) -> int:
        return len(self.filters)

    def add(self, f: Filter) -> None:
        """Install ``f`` on top, refusing what seccomp_attach_filter refuses (ENOMEM)."""
        total = f.kernel_len() + sum(g.kernel_len() + PER_FILTER_PENALTY for g in self.filters)
        if total > MAX_INSNS_PER_PATH:
            raise VerifierError(
                f"installing this filter makes {total} eBPF instructions on the path through all "
                f"filters (4 extra per earlier filter), over the kernel's {MAX_INSNS_PER_PATH} "
                f"(it refuses with ENOMEM)", loc=Location(f.name))
        self.filters.append(f)

    def evaluate(self, data: SeccompData) -> StackRun:
        runs = tuple(f.run(data) for f in self.filters)
        rets = [r.ret for r in runs]
        ret = actions.combine(rets)
        matches = [i for i, r in enumerate(rets) if r == ret]
        winner = matches[-1] if matches else None
        return StackRun(ret, runs, winner)


# --- what a verdict does --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Effect:
    """What happens to the syscall. ``kind``: run | errno | trap | trace | notify | kill_thread
    | kill_process. ``errno`` for errno, ``data`` for trap/trace, ``signal`` for trap/kills."""

    kind: str
    errno: int | None = None
    data: int = 0
    signal: int | None = None
    logged: bool = False

    def __str__(self) -> str:
        if self.kind == "run":
            return "the syscall runs" + (" (logged)" if self.logged else "")
        if self.kind == "errno":
            return f"fails with -{actions.errno_name(self.errno or 0)} ({self.errno})"
        if self.kind == "trap":
            return f"SIGSYS raised (si_errno {self.data})"
        if self.kind == "trace":
            return f"tracer notified (PTRACE_EVENT_SECCOMP, data {self.data})"
        if self.kind == "notify":
            return "user-space listener notified"
        return "thread killed by SIGSYS" if self.kind == "kill_thread" \
            else "process killed by SIGSYS"


def effect(ret: int, *, tracer: bool = False, listener: bool = False) -> Effect:
    """The consequence of a (combined) verdict, as kernel/seccomp.c __seccomp_filter acts.

    TRACE with no tracer (or one that did not ask for seccomp events) and USER_NOTIF with no
    listener make the syscall fail with ENOSYS; ERRNO data is capped at 4095; unknown actions
    kill the process."""
    v = actions.Verdict(ret & 0xFFFFFFFF)
    act = v.action
    if act == actions.ALLOW:
        return Effect("run")
    if act == actions.LOG:
        return Effect("run", logged=True)
    if act == actions.ERRNO:
        return Effect("errno", errno=v.errno)
    if act == actions.TRAP:
        return Effect("trap", data=v.data, signal=signal.SIGSYS)
    if act == actions.TRACE:
        return Effect("trace", data=v.data) if tracer else Effect("errno", errno=_errno.ENOSYS)
    if act == actions.USER_NOTIF:
        return Effect("notify") if listener else Effect("errno", errno=_errno.ENOSYS)
    if act == actions.KILL_THREAD:
        return Effect("kill_thread", signal=signal.SIGSYS)
    return Effect("kill_process", signal=signal.SIGSYS)


# --- loading filters from files ---------------------------------------------------------------------

Loader = Callable[[Path, Arch], Filter]
_LOADERS: dict[str, Loader] = {}


def register_loader(suffix: str, loader: Loader) -> None:
    """Make :func:`load_filter` turn files ending in ``suffix`` into filters with ``loader``."""
    _LOADERS[suffix.lower()] = loader


def load_filter(path: str | Path, *, arch: Arch = X86_64) -> Filter:
    """The filter in ``path``: by suffix (``.s`` eBPF assembly, ``.bin`` raw eBPF, ``.asm``
    classic text, any other suffix raw classic ``sock_filter`` bytes) or a registered loader.
    ``arch`` is the default architecture for syscall names in text (a ``.arch`` line wins)."""
    p = Path(path)
    loader = _LOADERS.get(p.suffix.lower(), _load_classic_raw)
    try:
        return loader(p, arch)
    except SysdispatchError as exc:
        raise exc.at(loc=Location(str(p)))


def _load_classic_raw(p: Path, arch: Arch) -> Filter:
    return ClassicFilter.from_bytes(p.read_bytes(), name=str(p))


def _load_classic_text(p: Path, arch: Arch) -> Filter:
    insns = cfilter.assemble(p.read_text(), filename=str(p), default_arch=arch)
    return ClassicFilter(insns, name=str(p))


def _load_ebpf_text(p: Path, arch: Arch) -> Filter:
    from ..vm.asm import assemble
    return EbpfFilter(assemble(p.read_text(), filename=str(p), prog_type=SECCOMP, name=p.name),
                      name=str(p))


def _load_ebpf_raw(p: Path, arch: Arch) -> Filter:
    return EbpfFilter(Program.from_bytes(p.read_bytes(), prog_type=SECCOMP, name=p.name),
                      name=str(p))


register_loader(".asm", _load_classic_text)
register_loader(".s", _load_ebpf_text)
register_loader(".bin", _load_ebpf_raw)
