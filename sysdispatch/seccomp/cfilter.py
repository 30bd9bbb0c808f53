"""Classic seccomp filters: the kernel's seccomp checks, and a readable assembler/disassembler.

:func:`check` does what the kernel does when a filter is installed: ``bpf_check_classic``
(:func:`sysdispatch.vm.cbpf.check`) and then ``seccomp_check_filter`` (kernel/seccomp.c): only
the opcodes seccomp allows (no packet loads, no modulo), ``ld [k]`` 4-byte aligned and inside
the 64-byte ``struct seccomp_data``. It returns the program as the kernel runs it: ``ld [k]``
becomes the internal context-word load and ``ld len`` / ``ldx len`` become the constant 64.

The text syntax follows seccomp-tools, one instruction per line::

    .arch x86_64
     0000: 0x20 0x00 0x00 0x00000004  A = arch
     0001: 0x15 0x00 0x03 0xc000003e  if (A != ARCH_X86_64) goto 0005
     0002: 0x20 0x00 0x00 0x00000000  A = sys_number
     0003: 0x15 0x00 0x01 0x0000003b  if (A != execve) goto 0005
     0004: 0x06 0x00 0x00 0x00050001  return ERRNO(1)
     0005: 0x06 0x00 0x00 0x7fff0000  return ALLOW

The ``NNNN: code jt jf k`` prefix is optional on input (and ignored: the text after it is what
is assembled). ``goto`` takes an absolute instruction number or a label (``name:``). Loads name
the seccomp_data field (``sys_number``, ``arch``, ``instruction_pointer``, ``args[i]``; the upper
32 bits of a 64-bit field are ``args[i] >> 32``). Constants compared against ``sys_number`` are
syscall names of the architecture known on that path: the arch inferred from a preceding
``if (A == ARCH_...)`` test, else the ``.arch`` (default x86_64). x32 numbers on an x86_64 path
print as ``x32:read``. The same inference runs when assembling, so bytes -> text -> bytes is
exact; fields a form ignores but the bytes set are kept as a suffix, e.g. ``A += X {k=0x7}``.
The disassembler is here, the assembler in :mod:`.casm` (re-exported as :func:`assemble`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import Location, SysdispatchError, VerifierError
from ..vm import cbpf
from ..vm.cbpf import CInsn, OPS, code_name
from . import actions
from .arch import AUDIT_SYMBOLS, X86_64, Arch, by_audit, by_name, for_number
from .data import OFF_ARCH, OFF_ARGS, OFF_IP, OFF_NR, SIZE as DATA_SIZE

# The public names, ``assemble`` among them: it is defined in .casm and re-exported at the end.
__all__ = ["HEADER", "OPS_BY_KIND", "PcInfo", "analyse", "arg_constants", "assemble", "check",
           "disassemble", "disassemble_lines", "export_libseccomp", "field_name", "format_insn",
           "load", "resolve_syscall_symbol", "ret_text", "syscall_symbol"]

# --- seccomp_check_filter ----------------------------------------------------------------------

# The classic forms seccomp accepts (kernel/seccomp.c). Notably absent: modulo, ldh/ldb, indexed
# and ldxb-msh loads (socket data only).
_ALLOWED_KINDS = {"neg", "ld_abs", "ld_len", "ldx_len", "ld_imm", "ldx_imm", "ld_mem", "ldx_mem",
                  "st", "stx", "tax", "txa", "ret", "ja", "jcc"}


def _seccomp_allows(op: cbpf.ClassicOp) -> bool:
    if op.kind == "alu":
        return op.op != "mod"
    if op.kind == "ld_abs":
        return op.size == 4
    return op.kind in _ALLOWED_KINDS


def check(insns: Sequence[CInsn], *, filename: str | None = None) -> tuple[CInsn, ...]:
    """Check a filter as seccomp does at install time; return it as the kernel runs it.

    Raises :class:`VerifierError` naming the file and pc, e.g.
    ``f.bpf: pc 3: 'mod k' is not allowed in seccomp filters``.
    """
    try:
        cbpf.check(insns)
        return tuple(_seccomp_rewrite(pc, ins) for pc, ins in enumerate(insns))
    except SysdispatchError as exc:
        raise exc.at(loc=Location(filename) if filename else None)


def _seccomp_rewrite(pc: int, ins: CInsn) -> CInsn:
    op = OPS[ins.code]
    if not _seccomp_allows(op):
        raise VerifierError(f"'{code_name(ins.code)}' is not allowed in seccomp filters", pc=pc)
    if op.kind == "ld_abs":
        if ins.k >= DATA_SIZE:
            raise VerifierError(f"ld [{ins.k}] reads past struct seccomp_data "
                                f"({DATA_SIZE} bytes)", pc=pc)
        if ins.k & 3:
            raise VerifierError(f"ld [{ins.k}] is not 4-byte aligned", pc=pc)
        return CInsn(cbpf.LDX_ABS_W, 0, 0, ins.k)
    if op.kind in ("ld_len", "ldx_len"):
        imm = OPS_BY_KIND["ld_imm" if op.kind == "ld_len" else "ldx_imm"]
        return CInsn(imm, 0, 0, DATA_SIZE)
    return ins


# Opcodes of the forms named by their kind alone ("ret_x" is ret A; "ld_abs_w" is ld [k]).
OPS_BY_KIND = {o.kind + ("_x" if o.reg else ""): c for c, o in OPS.items()
               if o.kind not in ("alu", "jcc", "ld_abs", "ld_ind")}
OPS_BY_KIND["ld_abs_w"] = cbpf.Cls.LD | cbpf.SIZE_BITS[4] | cbpf.ABS


def export_libseccomp(f) -> bytes:
    """The filter a pyseccomp ``SyscallFilter`` would load, as raw bytes: libseccomp's
    ``seccomp_export_bpf`` writes into a pipe, read by a thread so that a filter larger than the
    pipe's buffer cannot block the writer."""
    import os
    import threading

    r, w = os.pipe()
    chunks: list[bytes] = []

    def drain() -> None:
        while chunk := os.read(r, 65536):
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        with os.fdopen(w, "wb", closefd=True) as pipe:
            f.export_bpf(pipe)
    finally:
        reader.join()
        os.close(r)
    return b"".join(chunks)


def load(raw: bytes, *, filename: str | None = None) -> tuple[tuple[CInsn, ...], tuple[CInsn, ...]]:
    """Decode and check raw filter bytes: (as written, as the kernel runs it)."""
    insns = cbpf.decode(raw, filename=filename)
    return insns, check(insns, filename=filename)


# --- what A holds, and which architecture a path is on ---------------------------------------


def field_name(off: int) -> str | None:
    """The seccomp_data field a 4-byte load at ``off`` reads (``args[2] >> 32`` for a high word)."""
    if off == OFF_NR:
        return "sys_number"
    if off == OFF_ARCH:
        return "arch"
    if off == OFF_IP:
        return "instruction_pointer"
    if off == OFF_IP + 4:
        return "instruction_pointer >> 32"
    if OFF_ARGS <= off < DATA_SIZE and off % 4 == 0:
        i, hi = divmod(off - OFF_ARGS, 8)
        return f"args[{i}]" + (" >> 32" if hi else "")
    return None


_FIELD_OFFSETS = {field_name(off): off for off in range(0, DATA_SIZE, 4)}


@dataclass(frozen=True, slots=True)
class PcInfo:
    """What is known on entry to one instruction, on every path reaching it."""

    reachable: bool
    a: str | None = None        # the seccomp_data field A holds, e.g. "sys_number"
    derived: bool = False       # A was computed from that field (masked, shifted, ...)
    arch: Arch | None = None    # the architecture every path here has tested for


def analyse(insns: Sequence[CInsn]) -> tuple[PcInfo, ...]:
    """One forward pass (classic jumps only go forward) computing :class:`PcInfo` per pc."""
    n = len(insns)
    incoming: list[list[PcInfo]] = [[] for _ in range(n)]
    incoming[0].append(PcInfo(True))
    out: list[PcInfo] = []
    for pc, ins in enumerate(insns):
        here = _merge(incoming[pc])
        out.append(here)
        op = OPS.get(ins.code) or (cbpf.CTX_W if ins.code == cbpf.LDX_ABS_W else None)
        if not here.reachable or op is None:
            continue

        def flow(target: int, info: PcInfo) -> None:
            if 0 <= target < n:
                incoming[target].append(info)

        kind = op.kind
        if kind == "ret":
            continue
        if kind == "ja":
            flow(pc + 1 + ins.k, here)
        elif kind == "jcc":
            taken = here
            if (here.a == "arch" and not here.derived and op.op == "jeq" and not op.reg
                    and by_audit(ins.k) is not None):
                taken = PcInfo(True, here.a, here.derived, by_audit(ins.k))
            flow(pc + 1 + ins.jt, taken)
            flow(pc + 1 + ins.jf, here)
        else:
            flow(pc + 1, _after(kind, op, ins, here))
    return tuple(out)


def _after(kind: str, op: cbpf.ClassicOp, ins: CInsn, here: PcInfo) -> PcInfo:
    if kind in ("ld_abs", "ctx_w"):
        return PcInfo(True, field_name(ins.k), False, here.arch)
    if kind in ("alu", "neg"):
        return PcInfo(True, here.a, here.a is not None, here.arch)
    if kind in ("ld_len", "ld_imm", "ld_mem", "txa", "ld_ind"):
        return PcInfo(True, None, False, here.arch)
    return here  # X and M[] changes leave A alone


def _merge(infos: list[PcInfo]) -> PcInfo:
    if not infos:
        return PcInfo(False)
    first = infos[0]
    a, derived, arch = first.a, first.derived, first.arch
    for i in infos[1:]:
        if i.a != a:
            a, derived = None, False
        derived = derived or i.derived
        if i.arch is not arch:
            arch = None
    return PcInfo(True, a, derived if a is not None else False, arch)


def arg_constants(insns: Sequence[CInsn]) -> dict[str, set[int]]:
    """The constants each seccomp_data field is compared against (directly or after masking):
    ``{"args[1]": {...}, "args[1] >> 32": {...}}``. Sweeps use them as interesting values."""
    found: dict[str, set[int]] = {}
    for ins, info in zip(insns, analyse(insns)):
        op = OPS.get(ins.code)
        if op is not None and op.kind == "jcc" and not op.reg and info.a is not None:
            found.setdefault(info.a, set()).add(ins.k)
    return found


# --- symbols ---------------------------------------------------------------------------------


def syscall_symbol(nr: int, arch: Arch) -> str | None:
    """How the disassembly names syscall ``nr`` on ``arch`` (``x32:read`` for an x32 number on
    an x86_64 path), or None when libseccomp has no name that maps back to it."""
    table_arch = for_number(arch, nr)
    name = table_arch.syscall_name(nr)
    if name is None or table_arch.syscall_number(name) != nr:
        return None
    return name if table_arch is arch else f"{table_arch.name}:{name}"


def resolve_syscall_symbol(sym: str, arch: Arch) -> int | None:
    """The inverse of :func:`syscall_symbol`."""
    qual, _, name = sym.rpartition(":")
    target = by_name(qual) if qual else arch
    return target.syscall_number(name)


def _hex(v: int) -> str:
    return f"0x{v:x}"


def ret_text(k: int) -> str:
    """``ERRNO(1)``, ``ALLOW``, ``KILL_PROCESS``; a value whose spelling would lose bits (data on
    an action without data, unknown actions) prints as hex so it assembles back exactly."""
    if (k & actions.ACTION_FULL) in actions.NAMES:
        text = actions.describe(k)
        try:
            if actions.parse(text) == k:
                return text
        except ValueError:
            pass
    return f"0x{k:08x}"


# --- disassembler ------------------------------------------------------------------------------

_ALU_SYM = {"add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%", "and": "&", "or": "|",
            "xor": "^", "lsh": "<<", "rsh": ">>"}
_CMP = {"jeq": ("==", "!="), "jgt": (">", "<="), "jge": (">=", "<"), "jset": ("&", None)}


def _operand(ins: CInsn, op: cbpf.ClassicOp, info: PcInfo, arch: Arch) -> str:
    if op.reg:
        return "X"
    k = ins.k
    if op.op == "jeq" and not info.derived:
        if info.a == "sys_number":
            sym = syscall_symbol(k, arch)
            if sym is not None:
                return sym
        elif info.a == "arch" and k in AUDIT_SYMBOLS:
            return AUDIT_SYMBOLS[k]
    return _hex(k)


def _used_fields(op: cbpf.ClassicOp) -> tuple[str, ...]:
    """The sock_filter fields an instruction form reads (the kernel ignores the others)."""
    if op.kind == "jcc":
        return ("jt", "jf") if op.reg else ("jt", "jf", "k")
    if op.kind in ("neg", "tax", "txa", "ld_len", "ldx_len") or op.reg:
        return ()
    return ("k",)


def _unused_nonzero(ins: CInsn, op: cbpf.ClassicOp) -> str:
    """`` {k=0x7}`` for fields the form ignores but the bytes set, so text keeps every bit."""
    used = _used_fields(op)
    extra = [f"{f}={_hex(getattr(ins, f))}" for f in ("jt", "jf", "k")
             if f not in used and getattr(ins, f)]
    return f" {{{', '.join(extra)}}}" if extra else ""


def format_insn(pc: int, ins: CInsn, info: PcInfo, default_arch: Arch = X86_64) -> str:
    """The readable text of one instruction (without the ``NNNN: code jt jf k`` prefix)."""
    op = OPS.get(ins.code) or (cbpf.CTX_W if ins.code == cbpf.LDX_ABS_W else None)
    if op is None:
        return f"<unknown opcode 0x{ins.code:02x}>"
    return _format(pc, ins, op, info, default_arch) + _unused_nonzero(ins, op)


def _format(pc: int, ins: CInsn, op: cbpf.ClassicOp, info: PcInfo, default_arch: Arch) -> str:
    k, kind = ins.k, op.kind
    arch = info.arch or default_arch
    if kind in ("ld_abs", "ctx_w") and op.size == 4 and field_name(k) is not None:
        return f"A = {field_name(k)}"
    if kind == "alu":
        return f"A {_ALU_SYM[op.op]}= {'X' if op.reg else _hex(k)}"
    if kind == "jcc":
        sym, inv = _CMP[op.op]
        v = _operand(ins, op, info, arch)
        t, f = pc + 1 + ins.jt, pc + 1 + ins.jf
        if ins.jf == 0:
            return f"if (A {sym} {v}) goto {t:04d}"
        if ins.jt == 0:
            cond = f"!(A & {v})" if inv is None else f"A {inv} {v}"
            return f"if ({cond}) goto {f:04d}"
        return f"if (A {sym} {v}) goto {t:04d} else goto {f:04d}"
    simple = {
        "neg": "A = -A", "ld_len": "A = len", "ldx_len": "X = len", "ld_imm": f"A = {_hex(k)}",
        "ldx_imm": f"X = {_hex(k)}", "ld_mem": f"A = M[{k}]", "ldx_mem": f"X = M[{k}]",
        "st": f"M[{k}] = A", "stx": f"M[{k}] = X", "tax": "X = A", "txa": "A = X",
        "ja": f"goto {pc + 1 + k:04d}",
    }
    if kind in simple:
        return simple[kind]
    if kind == "ret":
        return "return A" if op.reg else f"return {ret_text(k)}"
    # Forms seccomp refuses; shown bpf_asm-style so a refused filter can still be looked at.
    return {"ld_abs": f"{op.name} [{k}]", "ld_ind": f"{op.name} [x + {k}]",
            "ldx_msh": f"ldxb 4*([{k}]&0xf)"}.get(kind, code_name(ins.code))


def disassemble_lines(insns: Sequence[CInsn], *, arch: Arch = X86_64,
                      raw: bool = True) -> list[str]:
    """One line per instruction: `` 0004: 0x15 0x00 0x01 0x0000003b  if (A != execve) goto 0006``."""
    infos = analyse(insns) if insns else ()
    lines = []
    for pc, (ins, info) in enumerate(zip(insns, infos)):
        text = format_insn(pc, ins, info, arch)
        if raw:
            lines.append(f" {pc:04d}: 0x{ins.code:02x} 0x{ins.jt:02x} 0x{ins.jf:02x} "
                         f"0x{ins.k:08x}  {text}")
        else:
            lines.append(f" {pc:04d}: {text}")
    return lines


HEADER = ["#  line  CODE  JT   JF      K", "# ================================="]


def disassemble(insns: Sequence[CInsn], *, arch: Arch = X86_64, raw: bool = True) -> str:
    """The whole filter as text that :func:`assemble` turns back into the same bytes."""
    head = [f".arch {arch.name}"] + (HEADER if raw else [])
    return "\n".join(head + disassemble_lines(insns, arch=arch, raw=raw)) + "\n"


# The assembler lives in .casm; it is re-exported here so the syntax has one home.
from .casm import assemble  # noqa: E402  (casm imports the names defined above)
