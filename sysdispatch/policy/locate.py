"""Where things are in a TOML text: key paths to ``line:col``.

:mod:`tomllib` parses but keeps no positions, so error messages about a *valid* TOML document
(an unknown key, a bad action, a typo in a condition) would have nowhere to point. This module
re-reads the text with a small scanner — it assumes the text already parsed with tomllib — and
records, for every key path such as ``("handlers", "openat_rules", "rules", 0, "when", 1)``,
where its key and its value begin. Array elements are addressed by index, array-of-tables
headers by their running index. Anything the scanner does not understand only costs precision:
:meth:`Locator.key` / :meth:`Locator.value` fall back to the nearest enclosing path it did see.
"""

from __future__ import annotations

import bisect
import tomllib
from typing import Sequence

from ..errors import Location

Path = tuple  # of str | int

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SCALAR_END = frozenset(",]}\n\r#")


class Locator:
    """Positions of the keys and values of one TOML text (1-based lines and columns)."""

    def __init__(self, text: str, filename: str | None = None) -> None:
        self.text = text
        self.filename = filename
        self._starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
        self._keys: dict[Path, int] = {}
        self._values: dict[Path, int] = {}
        try:
            _Scanner(text, self._keys, self._values).run()
        except (IndexError, ValueError, tomllib.TOMLDecodeError):
            pass  # keep what was found before the scanner lost its way

    def _loc(self, offset: int | None) -> Location:
        if offset is None:
            return Location(self.filename)
        line = bisect.bisect_right(self._starts, offset)
        return Location(self.filename, line, offset - self._starts[line - 1] + 1)

    def _find(self, table: dict[Path, int], path: Sequence, other: dict[Path, int]) -> int | None:
        path = tuple(path)
        while path:
            if path in table:
                return table[path]
            if path in other:
                return other[path]
            path = path[:-1]
        return None

    def key(self, path: Sequence) -> Location:
        """Where the key of ``path`` is written (a table's header for a table)."""
        return self._loc(self._find(self._keys, path, self._values))

    def value(self, path: Sequence) -> Location:
        """Where the value of ``path`` begins (its opening quote for a string)."""
        return self._loc(self._find(self._values, path, self._keys))

    def inside(self, path: Sequence, offset: int) -> Location:
        """Where character ``offset`` of the string value at ``path`` is, when the string is
        written on one line without escapes before that character; else the value's start."""
        start = self._values.get(tuple(path))
        if start is None:
            return self.value(path)
        quote = 3 if self.text.startswith(('"""', "'''"), start) else 1
        raw = self.text[start + quote:start + quote + offset]
        if quote == 1 and "\\" not in raw and "\n" not in raw:
            return self._loc(start + quote + offset)
        return self._loc(start)

    def key_inside(self, path: Sequence, offset: int) -> Location:
        """Where character ``offset`` of the last key of ``path`` is (after its quote, if any)."""
        start = self._keys.get(tuple(path))
        if start is None:
            return self.key(path)
        quote = 1 if self.text[start] in "\"'" else 0
        return self._loc(start + quote + offset)

    def string_origin(self, path: Sequence) -> tuple[int, int] | None:
        """(line, col) of the first character of the string value at ``path`` (a multi-line
        string's content starts after the newline that follows its opening quotes)."""
        start = self._values.get(tuple(path))
        if start is None:
            return None
        quote = 3 if self.text.startswith(('"""', "'''"), start) else 1
        pos = start + quote
        if quote == 3:
            if self.text.startswith("\r\n", pos):
                pos += 2
            elif self.text.startswith("\n", pos):
                pos += 1
        loc = self._loc(pos)
        return loc.line, loc.col


class _Scanner:
    def __init__(self, text: str, keys: dict, values: dict) -> None:
        self.t, self.n = text, len(text)
        self.keys, self.values = keys, values
        self.aot: dict[Path, int] = {}  # array-of-tables path -> index of its latest element

    def run(self) -> None:
        i, current = 0, ()
        while True:
            i = self.blank(i, newlines=True)
            if i >= self.n:
                return
            if self.t.startswith("[[", i):
                parts, i = self.dotted(self.blank(i + 2))
                path = self.resolve(parts[:-1]) + (parts[-1][0],)   # no index for itself
                self.aot[path] = self.aot.get(path, -1) + 1
                current = path + (self.aot[path],)
                self.keys.setdefault(current, parts[-1][1])
                self.keys.setdefault(path, parts[-1][1])
                i = self.blank(i) + 2
            elif self.t[i] == "[":
                parts, i = self.dotted(self.blank(i + 1))
                current = self.resolve(parts)
                self.keys[current] = parts[-1][1]
                i = self.blank(i) + 1
            else:
                i = self.pair(i, current)

    def resolve(self, parts) -> Path:
        """A header's path, with the current index inserted after each array of tables."""
        path: Path = ()
        for name, pos in parts:
            path += (name,)
            self.keys.setdefault(path, pos)
            if path in self.aot:
                path += (self.aot[path],)
        return path

    def blank(self, i: int, newlines: bool = False) -> int:
        t, n = self.t, self.n
        while i < n:
            c = t[i]
            if c in " \t" or (newlines and c in "\r\n"):
                i += 1
            elif c == "#" and newlines:
                while i < n and t[i] != "\n":
                    i += 1
            else:
                break
        return i

    def simple_key(self, i: int) -> tuple[str, int]:
        t = self.t
        if t[i] == '"':
            j = self.basic_end(i)
            return tomllib.loads(f"k = {t[i:j]}")["k"], j
        if t[i] == "'":
            j = t.index("'", i + 1) + 1
            return t[i + 1:j - 1], j
        j = i
        while j < self.n and t[j] in _BARE:
            j += 1
        if j == i:
            raise ValueError(f"no key at {i}")
        return t[i:j], j

    def dotted(self, i: int) -> tuple[list[tuple[str, int]], int]:
        parts = []
        while True:
            start = i
            name, i = self.simple_key(i)
            parts.append((name, start))
            i = self.blank(i)
            if i < self.n and self.t[i] == ".":
                i = self.blank(i + 1)
                continue
            return parts, i

    def pair(self, i: int, table: Path) -> int:
        parts, i = self.dotted(i)
        path = table
        for name, pos in parts:
            path += (name,)
            self.keys.setdefault(path, pos)
        i = self.blank(i)
        if self.t[i] != "=":
            raise ValueError(f"expected '=' at {i}")
        return self.value(self.blank(i + 1), path)

    def basic_end(self, i: int) -> int:
        """End (exclusive) of the one-line basic string starting at ``i``."""
        j = i + 1
        while self.t[j] != '"':
            j += 2 if self.t[j] == "\\" else 1
        return j + 1

    def value(self, i: int, path: Path) -> int:
        t = self.t
        self.values[path] = i
        if t.startswith('"""', i) or t.startswith("'''", i):
            q = t[i:i + 3]
            j = i + 3
            while not t.startswith(q, j):
                j += 2 if (q == '"""' and t[j] == "\\") else 1
            j += 3
            for _ in range(2):  # the body may end with up to two more quote characters
                if j < self.n and t[j] == q[0]:
                    j += 1
            return j
        if t[i] == '"':
            return self.basic_end(i)
        if t[i] == "'":
            return t.index("'", i + 1) + 1
        if t[i] == "[":
            i, idx = i + 1, 0
            while True:
                i = self.blank(i, newlines=True)
                if t[i] == "]":
                    return i + 1
                i = self.blank(self.value(i, path + (idx,)), newlines=True)
                idx += 1
                if t[i] == ",":
                    i += 1
        if t[i] == "{":
            i = self.blank(i + 1)
            while t[i] != "}":
                parts, i = self.dotted(i)
                sub = path
                for name, pos in parts:
                    sub += (name,)
                    self.keys.setdefault(sub, pos)
                i = self.blank(self.blank(i) + 1)  # past '='
                i = self.blank(self.value(i, sub))
                if t[i] == ",":
                    i = self.blank(i + 1)
            return i + 1
        j = i
        while j < self.n and t[j] not in _SCALAR_END:
            j += 1
        return j
