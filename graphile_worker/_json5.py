"""A small JSON5 reader for crontab payloads, written from the JSON5 spec.

:func:`loads` reads one JSON5 value: objects with unquoted (ECMAScript
identifier) or quoted keys, single- or double-quoted strings with every JSON5
escape (``\\xHH``, ``\\uHHHH``, ``\\0``, backslash-newline continuations),
``//`` and ``/* */`` comments, trailing commas, hexadecimal numbers, leading
or trailing decimal points, an explicit ``+`` sign, ``Infinity`` and ``NaN``.

Numbers take JavaScript's values, as Node's ``json5`` package gives them: an
integral value of magnitude up to 2**53 comes back as :class:`int` (so ``1e3``
and ``5.`` are ``1000`` and ``5``, and ``-0`` is ``0``), every other value as
the nearest :class:`float`, with ``±inf`` and ``nan`` for ``±Infinity`` and
``NaN``.

Where this reader stops short of Node's (each refusal is a
:class:`JSON5Error`, never a silent change):

* a ``\\u`` escape of half a surrogate pair that is not joined to its other
  half is refused, since PostgreSQL's ``jsonb`` would refuse it later;
* nesting deeper than :data:`MAX_DEPTH` is refused;
* unquoted keys may use the characters that ``json5`` allows (letters and
  letter numbers to start; also combining marks, decimal digits, connector
  punctuation, ZWNJ and ZWJ to continue), but taken from Python's Unicode
  database, which is newer than the one ``json5`` 2.2 was built with: letters
  added to Unicode since are accepted here and refused there.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Final

MAX_DEPTH: Final = 256  # levels of nested objects and arrays
SAFE_INTEGER: Final = 2**53  # largest magnitude returned as an int
MAX_INT_DIGITS: Final = 4000  # longer integers are read through float()

_LINE_TERMINATORS: Final = "\n\r\u2028\u2029"
# JSON5 WhiteSpace: the ECMAScript set, including every space separator (Zs).
WHITESPACE: Final = frozenset(
    "\t\n\v\f\r \xa0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff"
    + "".join(map(chr, range(0x2000, 0x200B)))
)
_SIMPLE_ESCAPES: Final = {
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_NUMBER: Final = re.compile(
    r"([+-]?)(?:(Infinity)|(NaN)|0[xX]([0-9a-fA-F]+)"
    r"|((?:0|[1-9][0-9]*)(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?"
    r"|\.[0-9]+(?:[eE][+-]?[0-9]+)?))"
)
_PLAIN_DOUBLE: Final = re.compile(r'[^"\\\n\r]+')
_PLAIN_SINGLE: Final = re.compile(r"[^'\\\n\r]+")
_ID_START_CATEGORIES: Final = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nl"})
_ID_PART_CATEGORIES: Final = frozenset({"Mn", "Mc", "Nd", "Pc"})


class JSON5Error(ValueError):
    """Text that is not JSON5; the message gives the line and column."""


def loads(text: str) -> Any:
    """Read the one JSON5 value that ``text`` holds.

    :raises JSON5Error: when ``text`` is not exactly one JSON5 value, optionally
        surrounded by whitespace and comments.
    """
    reader = _Reader(text)
    reader.skip_blank()
    value = reader.value(0)
    reader.skip_blank()
    if reader.pos < len(text):
        raise reader.error("unexpected text after the value")

    return value


def is_id_start(char: str) -> bool:
    """Whether ``char`` may begin an unquoted key."""
    if char.isascii():
        return char.isalpha() or char in ("$", "_")

    return unicodedata.category(char) in _ID_START_CATEGORIES


def is_id_part(char: str) -> bool:
    """Whether ``char`` may continue an unquoted key."""
    if char.isascii():
        return char.isalnum() or char in ("$", "_")

    return (
        is_id_start(char)
        or char in ("\u200c", "\u200d")
        or unicodedata.category(char) in _ID_PART_CATEGORIES
    )


def _number(sign: str, magnitude: float | int) -> float | int:
    """The JavaScript number ``sign magnitude`` as Python gives it back."""
    value = -magnitude if sign == "-" else magnitude
    if isinstance(value, float) and value.is_integer() and abs(value) <= SAFE_INTEGER:
        return int(value)

    if isinstance(value, int) and abs(value) > SAFE_INTEGER:
        try:
            return float(value)
        except OverflowError:
            return float("-inf") if value < 0 else float("inf")

    return value


class _Reader:
    """A cursor over JSON5 text; each method reads one construct."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str, pos: int | None = None) -> JSON5Error:
        at = self.pos if pos is None else pos
        line = self.text.count("\n", 0, at) + 1
        column = at - self.text.rfind("\n", 0, at)
        found = repr(self.text[at]) if at < len(self.text) else "the end of the text"
        return JSON5Error(f"JSON5: {what} at {line}:{column} (found {found})")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_blank(self) -> None:
        """Skip whitespace and comments."""
        text, end = self.text, len(self.text)
        while self.pos < end:
            char = text[self.pos]
            if char in WHITESPACE:
                self.pos += 1
            elif text.startswith("//", self.pos):
                stops = [text.find(t, self.pos) for t in _LINE_TERMINATORS]
                self.pos = min((s for s in stops if s >= 0), default=end)
            elif text.startswith("/*", self.pos):
                close = text.find("*/", self.pos + 2)
                if close < 0:
                    raise self.error("unterminated comment")
                self.pos = close + 2
            elif char == "/":
                raise self.error("a '/' that starts no comment")
            else:
                return

    def expect(self, char: str, what: str) -> None:
        if self.peek() != char:
            raise self.error(f"expected {what}")
        self.pos += 1

    def value(self, depth: int) -> Any:
        char = self.peek()
        if char == "{":
            return self.object(depth + 1)
        if char == "[":
            return self.array(depth + 1)
        if char in ("'", '"'):
            return self.string()
        for word, result in (("null", None), ("true", True), ("false", False)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return result
        return self.number()

    def nest(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise self.error(f"nesting deeper than {MAX_DEPTH} levels")
        self.pos += 1
        self.skip_blank()

    def object(self, depth: int) -> dict[str, Any]:
        self.nest(depth)
        result: dict[str, Any] = {}
        while self.peek() != "}":
            key = self.string() if self.peek() in ("'", '"') else self.identifier()
            self.skip_blank()
            self.expect(":", "':' after a key")
            self.skip_blank()
            result[key] = self.value(depth)
            self.skip_blank()
            if self.peek() != "}":
                self.expect(",", "',' or '}' after a value")
                self.skip_blank()
        self.pos += 1
        return result

    def array(self, depth: int) -> list[Any]:
        self.nest(depth)
        result: list[Any] = []
        while self.peek() != "]":
            result.append(self.value(depth))
            self.skip_blank()
            if self.peek() != "]":
                self.expect(",", "',' or ']' after a value")
                self.skip_blank()
        self.pos += 1
        return result

    def number(self) -> float | int:
        found = _NUMBER.match(self.text, self.pos)
        if found is None:
            raise self.error("expected a value")
        self.pos = found.end()
        sign, infinity, nan, hexa, decimal = found.groups()
        if infinity:
            return _number(sign, float("inf"))
        if nan:
            return float("nan")
        if hexa:
            return _number(sign, int(hexa, 16))
        if decimal.isdigit() and len(decimal) <= MAX_INT_DIGITS:
            return _number(sign, int(decimal))
        return _number(sign, float(decimal))

    def hex_digits(self, count: int) -> int:
        digits = self.text[self.pos : self.pos + count]
        for offset, char in enumerate(digits):
            if char not in _HEX:
                raise self.error("expected a hexadecimal digit", self.pos + offset)
        if len(digits) < count:
            raise self.error("expected a hexadecimal digit", len(self.text))
        self.pos += count
        return int(digits, 16)

    def unicode_escape(self, *, pairs: bool = True) -> str:
        """The character of ``\\uHHHH`` (``self.pos`` after the ``u``).

        With ``pairs``, a high surrogate must be followed by the escape of a
        low one, and the two make one character; without, surrogates are
        refused.
        """
        start = self.pos - 2
        unit = self.hex_digits(4)
        if not 0xD800 <= unit <= 0xDFFF:
            return chr(unit)
        if not pairs or unit >= 0xDC00:
            raise self.error("an escape of a lone surrogate", start)
        if not self.text.startswith("\\u", self.pos):
            raise self.error("a high surrogate escape not followed by a low one")
        self.pos += 2
        low = self.hex_digits(4)
        if not 0xDC00 <= low <= 0xDFFF:
            raise self.error("a high surrogate escape not followed by a low one")
        return chr(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))

    def escape(self) -> str:
        """The text of the escape sequence after a backslash in a string."""
        char = self.peek()
        if not char:
            raise self.error("unterminated string")
        self.pos += 1
        if char in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[char]
        if char == "0":
            if self.peek().isascii() and self.peek().isdigit():
                raise self.error("a digit after the escape '\\0'")
            return "\0"
        if char in "123456789":
            raise self.error("an octal escape", self.pos - 1)
        if char == "x":
            return chr(self.hex_digits(2))
        if char == "u":
            return self.unicode_escape()
        if char == "\r":
            if self.peek() == "\n":
                self.pos += 1
            return ""
        if char in _LINE_TERMINATORS:
            return ""
        return char

    def string(self) -> str:
        quote = self.text[self.pos]
        plain = _PLAIN_DOUBLE if quote == '"' else _PLAIN_SINGLE
        self.pos += 1
        parts: list[str] = []
        while True:
            run = plain.match(self.text, self.pos)
            if run is not None:
                parts.append(run.group())
                self.pos = run.end()
            char = self.peek()
            if char == quote:
                self.pos += 1
                return "".join(parts)
            if char == "\\":
                self.pos += 1
                parts.append(self.escape())
            elif char:
                raise self.error("a line break inside a string")
            else:
                raise self.error("unterminated string")

    def identifier(self) -> str:
        """An unquoted key: an ECMAScript IdentifierName, escapes allowed."""
        parts: list[str] = []
        while True:
            start = self.pos
            char = self.peek()
            escaped = char == "\\"
            if escaped:
                self.pos += 1
                if self.peek() != "u":
                    raise self.error("expected 'u' after '\\' in a key")
                self.pos += 1
                char = self.unicode_escape(pairs=False)
            if char and (is_id_part(char) if parts else is_id_start(char)):
                self.pos += 0 if escaped else 1
                parts.append(char)
            elif escaped:
                raise self.error("an escape of a character not allowed in a key", start)
            elif not parts:
                raise self.error("expected a key", start)
            else:
                return "".join(parts)
