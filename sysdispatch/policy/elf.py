"""ELF handlers: one section of a BPF object file (``clang -O2 -target bpf -c``) as a handler.

A policy names the object and the section (``elf = "handlers.o"``, ``section = "openat"``; the
path is relative to the policy file). The section's bytes are the program; its relocations
(``.rel<section>``, type R_BPF_64_64 on an ``lddw``) name the maps it loads:

* a symbol in the object's legacy ``maps`` section (``struct bpf_map_def { u32 type, key_size,
  value_size, max_entries, map_flags; }``, types 1 hash and 2 array) becomes a map of that name
  — shared by every handler of the same object, and the policy's own map when the policy
  declares one of that name and the handler lists it (the geometry must then agree);
* a symbol named like one of the policy's args tables is that jump table (for ``tail_call``).

Only little-endian ELF64 objects for the BPF machine (EM_BPF = 247) are read. Every mistake is a
PolicyError naming the handler.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PolicyError
from ..vm import isa
from ..vm.maps import MAP_ARRAY, MAP_HASH, Map, create_map

EM_BPF = 247
SHT_SYMTAB, SHT_RELA, SHT_REL = 2, 4, 9
R_BPF_64_64 = 1
MAP_TYPES = {MAP_HASH: "hash", MAP_ARRAY: "array"}

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_REL = struct.Struct("<QQ")
_RELA = struct.Struct("<QQq")
_MAPDEF = struct.Struct("<IIII")


@dataclass(frozen=True, slots=True)
class _Section:
    index: int
    name: str
    type: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int


class ElfObject:
    """The parts of a BPF ELF object a handler needs."""

    def __init__(self, path: Path, context: str) -> None:
        self.path, self.context = path, context
        try:
            self.raw = path.read_bytes()
        except OSError as exc:
            raise self.error(f"cannot read {path}: {exc.strerror}") from None
        if len(self.raw) < _EHDR.size or self.raw[:4] != b"\x7fELF":
            raise self.error(f"{path} is not an ELF file")
        ident, _, machine, *_rest = _EHDR.unpack_from(self.raw)
        if ident[4] != 2 or ident[5] != 1:
            raise self.error(f"{path}: not a little-endian 64-bit ELF object")
        if machine != EM_BPF:
            raise self.error(f"{path}: ELF machine {machine}, not BPF ({EM_BPF}): build it with "
                             f"clang -target bpf")
        (_, _, _, _, _, _, shoff, _, _, _, _, shentsize, shnum, shstrndx) = _EHDR.unpack_from(
            self.raw)
        headers = [_SHDR.unpack_from(self.raw, shoff + i * shentsize) for i in range(shnum)]
        names = headers[shstrndx]
        self.sections = [
            _Section(i, self._str(names[4], h[0]), h[1], h[4], h[5], h[6], h[7], h[9])
            for i, h in enumerate(headers)]
        self.by_name = {s.name: s for s in self.sections}

    def error(self, message: str) -> PolicyError:
        return PolicyError(message, context=self.context)

    def _str(self, table_offset: int, offset: int) -> str:
        end = self.raw.index(b"\0", table_offset + offset)
        return self.raw[table_offset + offset:end].decode("utf-8", "replace")

    def data(self, s: _Section) -> bytes:
        if s.offset + s.size > len(self.raw):
            raise self.error(f"{self.path}: section '{s.name}' runs past the end of the file")
        return self.raw[s.offset:s.offset + s.size]

    def symbols(self) -> list[tuple[str, int, int]]:
        """(name, section index, value) of every symbol."""
        out = []
        for s in self.sections:
            if s.type != SHT_SYMTAB:
                continue
            strtab = self.sections[s.link].offset
            body = self.data(s)
            for off in range(0, len(body), _SYM.size):
                name, _, _, shndx, value, _ = _SYM.unpack_from(body, off)
                out.append((self._str(strtab, name), shndx, value))
        return out

    def relocations(self, target: _Section) -> list[tuple[int, int, str]]:
        """(offset, type, symbol name) of each relocation applied to ``target``."""
        syms = self.symbols()
        out = []
        for s in self.sections:
            if s.type not in (SHT_REL, SHT_RELA) or s.info != target.index:
                continue
            fmt = _REL if s.type == SHT_REL else _RELA
            body = self.data(s)
            for off in range(0, len(body), fmt.size):
                r_offset, r_info = fmt.unpack_from(body, off)[:2]
                sym = r_info >> 32
                out.append((r_offset, r_info & 0xFFFFFFFF, syms[sym][0] if sym < len(syms) else ""))
        return out

    def map_def(self, symbol: str) -> tuple[str, int, int, int] | None:
        """(type, key_size, value_size, max_entries) of a map in the legacy ``maps`` section."""
        maps = self.by_name.get("maps")
        if maps is None:
            return None
        for name, shndx, value in self.symbols():
            if name == symbol and shndx == maps.index:
                kind, key, val, entries = _MAPDEF.unpack_from(self.data(maps), value)
                if kind not in MAP_TYPES:
                    raise self.error(f"{self.path}: map '{symbol}' has type {kind}; only hash (1) "
                                     f"and array (2) are supported")
                return MAP_TYPES[kind], key, val, entries
        return None


def load_handler(path: Path, section: str, *, name: str, policy_maps: dict[str, Map],
                 declared: dict[str, Any], listed: tuple[str, ...], tables: dict[str, Map],
                 shared: dict[tuple[str, str], Map]) -> tuple[list[isa.Insn], list[Map]]:
    """The instructions of ``section`` with their map loads bound, and the maps they use.

    ``policy_maps``/``declared``: the policy's maps and their declarations; ``listed``: the maps
    the handler names; ``tables``: the args tables; ``shared``: maps made from objects so far,
    by (object path, symbol)."""
    context = f"handler '{name}'"
    try:
        return _load(path, section, context, policy_maps, declared, listed, tables, shared)
    except (struct.error, IndexError, ValueError, UnicodeError) as exc:
        raise PolicyError(f"{path}: malformed ELF object ({exc})", context=context) from None


def _load(path: Path, section: str, context: str, policy_maps, declared, listed, tables,
          shared) -> tuple[list[isa.Insn], list[Map]]:
    obj = ElfObject(path, context)
    sec = obj.by_name.get(section)
    if sec is None:
        code = [s.name for s in obj.sections if s.name and not s.name.startswith(".")
                and s.name != "maps"]
        raise obj.error(f"{path}: no section '{section}' (sections: {', '.join(code)})")
    body = obj.data(sec)
    if len(body) % 8:
        raise obj.error(f"{path}: section '{section}' is {len(body)} bytes, not whole instructions")
    insns = list(isa.decode_program(body))
    maps: list[Map] = []
    for offset, kind, symbol in obj.relocations(sec):
        pc = offset // 8
        if kind != R_BPF_64_64 or offset % 8 or pc >= len(insns) or \
                insns[pc].code != isa.make("lddw").code:
            raise obj.error(f"{path}: unsupported relocation type {kind} at pc {pc} "
                            f"(symbol '{symbol}'); only map loads (R_BPF_64_64) are")
        m = _bind(obj, symbol, policy_maps, declared, listed, tables, shared)
        if m not in maps:
            maps.append(m)
        first = insns[pc]
        insns[pc] = isa.Insn(first.code, first.dst, isa.PSEUDO_MAP_FD, 0, maps.index(m))
    return insns, maps


def _bind(obj: ElfObject, symbol: str, policy_maps, declared, listed, tables, shared) -> Map:
    if symbol in tables:
        return tables[symbol]
    spec = obj.map_def(symbol)
    if symbol in listed:
        d = declared[symbol]
        if spec is not None and spec != (d.type, d.key_size, d.value_size, d.max_entries):
            raise obj.error(f"{obj.path}: map '{symbol}' is {spec[0]} {spec[1]}/{spec[2]}/"
                            f"{spec[3]} in the object but {d.type} {d.key_size}/{d.value_size}/"
                            f"{d.max_entries} in the policy")
        return policy_maps[symbol]
    if spec is None:
        raise obj.error(f"{obj.path}: '{symbol}' is neither a map of the object's maps section, "
                        f"nor a map the handler lists, nor an args table")
    key = (str(obj.path.resolve()), symbol)
    if key not in shared:
        shared[key] = create_map(spec[0], spec[1], spec[2], spec[3], symbol)
    return shared[key]
