"""A recognizer for GBNF grammars (llama.cpp's grammar format), to check that a reply generated
under a ``grammar`` constraint really follows it (:meth:`~llmkd.teachers.base.Constraint.violation`).

Covers what llmkd's tasks write and the common GBNF: rules ``name ::= ...`` (a rule ends at a
line break outside brackets), string literals with ``\\n \\t \\r \\\\ \\" \\xHH \\uHHHH`` escapes,
character classes ``[a-z]`` / ``[^\\n]``, ``.`` (any character), grouping, alternation ``|``,
the repetitions ``? * +`` and ``{m}`` / ``{m,}`` / ``{m,n}``, and ``#`` comments. Matching is
by sets of end positions with memoised rules, so ambiguous grammars are fine; left recursion
is not followed (llama.cpp does not support it either).

:func:`compile_gbnf` raises :class:`GbnfError` for a grammar it cannot read; callers treat such
a grammar as unchecked.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Union


class GbnfError(ValueError):
    """The grammar text is not GBNF this recognizer reads."""


@dataclass(frozen=True)
class _Lit:
    text: str


@dataclass(frozen=True)
class _Class:
    ranges: tuple[tuple[str, str], ...]
    negated: bool


@dataclass(frozen=True)
class _Ref:
    name: str


@dataclass(frozen=True)
class _Seq:
    items: tuple["_Node", ...]


@dataclass(frozen=True)
class _Alt:
    options: tuple["_Node", ...]


@dataclass(frozen=True)
class _Rep:
    node: "_Node"
    low: int
    high: int | None


_Node = Union[_Lit, _Class, _Ref, _Seq, _Alt, _Rep]
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-", "^": "^"}


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def error(self, what: str) -> GbnfError:
        return GbnfError(f"GBNF: {what} at character {self.i}: {self.s[self.i:self.i + 30]!r}")

    def space(self, newlines: bool) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "#":
                while self.i < len(self.s) and self.s[self.i] != "\n":
                    self.i += 1
            elif c in " \t" or (newlines and c in "\r\n"):
                self.i += 1
            else:
                break

    def rules(self) -> dict[str, _Node]:
        out: dict[str, _Node] = {}
        self.space(True)
        while self.i < len(self.s):
            m = _NAME.match(self.s, self.i)
            if not m:
                raise self.error("expected a rule name")
            self.i = m.end()
            self.space(False)
            if not self.s.startswith("::=", self.i):
                raise self.error("expected ::=")
            self.i += 3
            self.space(True)
            out[m.group()] = self.alternatives(nested=False)
            self.space(True)
        return out

    def alternatives(self, nested: bool) -> _Node:
        options = [self.sequence(nested)]
        while self.i < len(self.s) and self.s[self.i] == "|":
            self.i += 1
            self.space(True)
            options.append(self.sequence(nested))
        return options[0] if len(options) == 1 else _Alt(tuple(options))

    def sequence(self, nested: bool) -> _Node:
        items: list[_Node] = []
        while True:
            self.space(nested)
            if self.i >= len(self.s) or self.s[self.i] in "|)\r\n":
                break
            if not nested and _NAME.match(self.s, self.i) and self._starts_rule():
                break
            items.append(self.postfix(self.atom()))
        return items[0] if len(items) == 1 else _Seq(tuple(items))

    def _starts_rule(self) -> bool:
        m = _NAME.match(self.s, self.i)
        j = m.end() if m else self.i
        while j < len(self.s) and self.s[j] in " \t":
            j += 1
        return self.s.startswith("::=", j)

    def atom(self) -> _Node:
        c = self.s[self.i]
        if c == '"':
            self.i += 1
            out = []
            while self.i < len(self.s) and self.s[self.i] != '"':
                out.append(self.char())
            if self.i >= len(self.s):
                raise self.error("unterminated string")
            self.i += 1
            return _Lit("".join(out))
        if c == "[":
            self.i += 1
            negated = self.s.startswith("^", self.i)
            self.i += negated
            ranges = []
            while self.i < len(self.s) and self.s[self.i] != "]":
                low = self.char()
                high = low
                if self.s.startswith("-", self.i) and not self.s.startswith("-]", self.i):
                    self.i += 1
                    high = self.char()
                ranges.append((low, high))
            if self.i >= len(self.s):
                raise self.error("unterminated character class")
            self.i += 1
            return _Class(tuple(ranges), negated)
        if c == ".":
            self.i += 1
            return _Class((), True)
        if c == "(":
            self.i += 1
            self.space(True)
            node = self.alternatives(nested=True)
            self.space(True)
            if not self.s.startswith(")", self.i):
                raise self.error("expected )")
            self.i += 1
            return node
        m = _NAME.match(self.s, self.i)
        if m:
            self.i = m.end()
            return _Ref(m.group())
        raise self.error("unexpected character")

    def char(self) -> str:
        if self.i >= len(self.s):
            raise self.error("unexpected end")
        c = self.s[self.i]
        if c != "\\":
            self.i += 1
            return c
        e = self.s[self.i + 1: self.i + 2]
        if e in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[e]
            digits = self.s[self.i + 2: self.i + 2 + width]
            try:
                value = chr(int(digits, 16))
            except ValueError:
                raise self.error("bad escape") from None
            self.i += 2 + width
            return value
        if e in _ESCAPES:
            self.i += 2
            return _ESCAPES[e]
        raise self.error("unknown escape")

    def postfix(self, node: _Node) -> _Node:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in "?*+":
                self.i += 1
                node = _Rep(node, 1 if c == "+" else 0, 1 if c == "?" else None)
            elif c == "{":
                m = re.compile(r"\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}").match(self.s, self.i)
                if not m:
                    raise self.error("bad repetition")
                self.i = m.end()
                low = int(m.group(1))
                high = low if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
                node = _Rep(node, low, high)
            else:
                break
        return node


@functools.lru_cache(maxsize=32)
def compile_gbnf(grammar: str) -> dict[str, _Node]:
    """The rules of ``grammar`` (it must have ``root``); raises GbnfError when it cannot be read."""
    rules = _Parser(grammar).rules()
    if "root" not in rules:
        raise GbnfError("GBNF: no rule named 'root'")
    for node in rules.values():
        _check_refs(node, rules)
    return rules


def _check_refs(node: _Node, rules: dict[str, _Node]) -> None:
    if isinstance(node, _Ref) and node.name not in rules:
        raise GbnfError(f"GBNF: rule {node.name!r} is used but not defined")
    for child in (node.items if isinstance(node, _Seq) else node.options if isinstance(node, _Alt)
                  else (node.node,) if isinstance(node, _Rep) else ()):
        _check_refs(child, rules)


def matches(grammar: str, text: str) -> bool:
    """Whether the whole of ``text`` is derived from the grammar's ``root`` rule."""
    rules = compile_gbnf(grammar)
    memo: dict[tuple[str, int], frozenset[int]] = {}
    active: set[tuple[str, int]] = set()

    def ends(node: _Node, pos: int) -> frozenset[int]:
        if isinstance(node, _Lit):
            return frozenset([pos + len(node.text)]) if text.startswith(node.text, pos) else frozenset()
        if isinstance(node, _Class):
            if pos >= len(text):
                return frozenset()
            c = text[pos]
            inside = any(lo <= c <= hi for lo, hi in node.ranges)
            return frozenset([pos + 1]) if inside != node.negated else frozenset()
        if isinstance(node, _Ref):
            key = (node.name, pos)
            if key in memo:
                return memo[key]
            if key in active:  # left recursion: not followed
                return frozenset()
            active.add(key)
            try:
                found = ends(rules[node.name], pos)
            finally:
                active.discard(key)
            memo[key] = found
            return found
        if isinstance(node, _Seq):
            current = frozenset([pos])
            for item in node.items:
                current = frozenset(e for p in current for e in ends(item, p))
                if not current:
                    break
            return current
        if isinstance(node, _Alt):
            return frozenset(e for option in node.options for e in ends(option, pos))
        # _Rep
        found = {pos} if node.low == 0 else set()
        current, count = frozenset([pos]), 0
        seen: set[int] = set(current)
        while current and (node.high is None or count < node.high):
            current = frozenset(e for p in current for e in ends(node.node, p))
            count += 1
            if node.high is None:
                current = frozenset(e for e in current if e not in seen)  # no progress: stop
                seen |= current
            if count >= node.low:
                found |= current
        return frozenset(found)

    return len(text) in ends(_Ref("root"), 0)
