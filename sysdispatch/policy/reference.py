"""The reference evaluator: the model run directly on a SeccompData, with no BPF at all.

A third oracle beside the eBPF engines (interpreter, JIT) for differential tests: it follows the
meaning of a policy written down in parse.py's docstring and the kernel's tail-call rules
(kernel/bpf/core.c): an index >= max_entries falls through without counting; otherwise, once 33
tail calls were made the call falls through; else the count goes up by one, and an empty slot
falls through. It gives the same ``path`` as :class:`~.loaded.LoadedPolicy.decide` (the programs
that ran and the tail calls that reached them), so tests compare paths as well as verdicts.

Only rules handlers can be evaluated here: an asm or ELF handler raises :class:`Unsupported`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..seccomp.data import SeccompData
from . import layout
from .layout import ENTRY
from .model import Act, Handler, Policy


class Unsupported(Exception):
    """The policy has a handler the reference evaluator cannot run (asm, ELF)."""


@dataclass(frozen=True, slots=True)
class RefResult:
    ret: int                      # the 32-bit seccomp return value
    path: tuple[str, ...]         # ("syscall_entry", "tail_call syscalls[257]", "openat_rules")
    tail_calls: int               # tail calls that reached a program (len(path) programs - 1)
    handler: str | None           # the last handler that ran; None when only the entry ran
    attempts: int = 0             # the kernel's tail-call counter (empty in-range slots count)


def evaluate(policy: Policy, data: SeccompData) -> RefResult:
    """The verdict of ``policy`` for ``data``."""
    return _Run(policy, data).entry()


class _Run:
    def __init__(self, policy: Policy, data: SeccompData) -> None:
        self.policy = policy
        self.args = tuple(a & 0xFFFFFFFFFFFFFFFF for a in data.args)
        self.nr = data.nr & 0xFFFFFFFF
        self.arch_value = data.arch & 0xFFFFFFFF
        self.count = 0        # the kernel's tail_call_cnt
        self.reached = 0      # tail calls that started a program
        self.path: list[str] = [ENTRY]
        self.handler: str | None = None

    def result(self, ret: int) -> RefResult:
        return RefResult(ret & 0xFFFFFFFF, tuple(self.path), self.reached, self.handler,
                         self.count)

    def entry(self) -> RefResult:
        pol = self.policy
        arch = layout.arch_of(pol, self.arch_value, self.nr)
        if arch is None:
            return self.result(pol.bad_arch)
        table = pol.tables[pol.entry_table]
        index = layout.slot_index(arch, self.nr)
        target = self.tail_call(table.name, arch, index, table.by_arch.get(arch, {}).get(self.nr))
        if target is not None:
            return self.run(target)
        return self.act(pol.table_default(table.name))

    def tail_call(self, table: str, arch: str | None, index: int, handler: str | None) -> str | None:
        """The kernel's bpf_tail_call: the handler that runs next, or None to fall through."""
        if index >= layout.slot_count(self.policy.tables[table], arch):
            return None
        if self.count >= layout.MAX_TAIL_CALL_CNT:
            return None
        self.count += 1
        if handler is None:
            return None
        self.reached += 1
        self.path += [f"tail_call {layout.array_name(self.policy, table, arch)}[{index}]", handler]
        return handler

    def run(self, name: str) -> RefResult:
        h: Handler = self.policy.handlers[name]
        self.handler = name
        if h.kind != "rules":
            raise Unsupported(f"handler '{name}' is {h.kind}: the reference evaluator runs only "
                              f"rules handlers")
        for rule in h.rules:
            if all(c.holds(self.args) for c in rule.conds):
                return self.act(rule.then)
        return self.act(self.policy.handler_default(h))

    def act(self, act: Act) -> RefResult:
        while act.ret is None:
            table = self.policy.tables[act.tail_call]
            key = self.args[table.arg]
            # Keys of args tables are below 65536, so a 64-bit value above 2**32 never matches
            # (the compiled handler guards it before the kernel would truncate it to u32).
            target = self.tail_call(table.name, None, key, table.entries.get(key))
            if target is not None:
                return self.run(target)
            act = self.policy.table_default(table.name)
        return self.result(act.ret)
