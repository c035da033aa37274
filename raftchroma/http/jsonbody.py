"""Request bodies read as Chroma's server reads them (serde_json under serde_path_to_error).

Owns: turning body bytes into JSON values, and, when the bytes are not valid JSON, finding the
first syntax error with serde_json's wording and the path serde_path_to_error reports for it.
Valid bodies go through Python's C parser; only a body it rejects is re-read here, byte by byte,
into a *partial* value that holds a `SyntaxMark` where reading stopped. The request validators
(`parse`) walk that value in document order, so a type error that Chroma meets before the syntax
error is still reported first, exactly as the streaming deserializer does.

Pure functions, no I/O. Positions (" at line L column C") are not reproduced.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any


class _Unknown:
    """serde_path_to_error's `?` segment: an error while reading a map key."""

    def __repr__(self) -> str:
        return "?"


UNKNOWN = _Unknown()
Path = tuple[Any, ...]  # str keys, int indexes, UNKNOWN


@dataclass(frozen=True)
class SyntaxMark:
    """Where reading stopped: serde_json's message and the path it is reported at."""

    message: str
    path: Path


class MarkKey:
    """The key under which an object records a mark in a key or colon position."""

    def __repr__(self) -> str:
        return "<mark>"


MARK_KEY = MarkKey()


class PairsDict(dict[str, Any]):
    """A JSON object with a repeated key; `pairs` keeps every occurrence, in order."""

    pairs: list[tuple[Any, Any]]


def object_from_pairs(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    dup = PairsDict(out)
    dup.pairs = pairs
    return dup


def items(obj: dict[Any, Any]) -> list[tuple[Any, Any]]:
    """An object's entries in document order, repeats included."""
    return obj.pairs if isinstance(obj, PairsDict) else list(obj.items())


def describe(path: Path) -> str:
    """serde_path_to_error's rendering: "ids[0]", "metadatas[0].a", "where.?"."""
    out = ""
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        else:
            out += ("." if out else "") + ("?" if segment is UNKNOWN else segment)
    return out


def prefixed(path: Path, message: str) -> str:
    """The message with its path in front, unless the path is only unknown segments (as serde does)."""
    if all(segment is UNKNOWN for segment in path):
        return message
    return f"{describe(path)}: {message}"


@dataclass(frozen=True)
class Body:
    value: Any  # complete, or partial with a SyntaxMark inside
    trailing: SyntaxMark | None  # "trailing characters", reported only if the value deserializes


_SURROGATE_ESCAPE_RE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _has_lone_surrogate(raw: bytes) -> bool:
    """A \\u escape of half a surrogate pair without its other half (Python accepts it, serde_json
    does not). A false alarm (an escaped backslash before "u") only costs the slow path."""
    if b"\\u" not in raw:
        return False
    expect_low_at = -1
    for match in _SURROGATE_ESCAPE_RE.finditer(raw):
        is_low = match.group(0)[3] in b"cdefCDEF"
        if is_low != (match.start() == expect_low_at):
            return True
        expect_low_at = -1 if is_low else match.end()
    return expect_low_at != -1


def read(raw: bytes) -> Body:
    """The body as JSON: Python's fast parser when it agrees with serde_json, else our reader."""
    if not _has_lone_surrogate(raw):
        try:
            text = raw.decode("utf-8")
            parse_float = _finite_float if _may_overflow(raw) else None
            return Body(json.loads(text, parse_constant=_reject, parse_float=parse_float,
                                   object_pairs_hook=object_from_pairs), None)
        except (UnicodeDecodeError, ValueError, RecursionError):
            pass
    return _Reader(raw).document()


def _reject(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# A float literal beyond f64 (1e400) is infinite to Python and "number out of range" to serde_json;
# it needs an exponent of three digits or more than 308 digits. Only such bodies pay for the check.
_MAY_OVERFLOW_RE = re.compile(rb"[eE][+]?0*[1-9][0-9]{2}|[0-9]{309}")


def _may_overflow(raw: bytes) -> bool:
    return _MAY_OVERFLOW_RE.search(raw) is not None


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number out of range")  # our reader reports it where serde_json does
    return value


def find_mark(value: Any) -> SyntaxMark | None:
    """The syntax mark inside a partial value, if any (it is always the last thing read)."""
    while True:
        if isinstance(value, SyntaxMark):
            return value
        if isinstance(value, list) and value:
            value = value[-1]
        elif isinstance(value, dict) and value:
            last_key, value = value.pairs[-1] if isinstance(value, PairsDict) else next(reversed(value.items()))
            if last_key is MARK_KEY:
                return value
        else:
            return None


# ------------------------------------------------------------------ reader

_WS = " \t\n\r"
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_DIGITS = "0123456789"
MAX_DEPTH = 127  # serde_json's recursion limit: the 128th nested array or object is refused
MAX_FAST_FAILURES = 8  # bounds the C re-scans of a hostile, deeply nested body
_NOT_UTF8_RE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (decoded with surrogateescape)
_DECODER = json.JSONDecoder(parse_constant=_reject, parse_float=_finite_float, object_pairs_hook=object_from_pairs)
_NO_VALUE = object()


class _Stop(Exception):
    def __init__(self, mark: SyntaxMark) -> None:
        self.mark = mark


class _Reader:
    """A recursive-descent reader following serde_json's order of checks and its messages.

    A container that Python's C decoder reads without complaint (and that holds nothing serde_json
    would refuse) is taken whole, so only the chain of values around the error is read here."""

    def __init__(self, data: bytes) -> None:
        self.text = data.decode("utf-8", errors="surrogateescape")
        self.pos = 0
        self.fast_failures = 0

    def document(self) -> Body:
        value, stopped = self.value(())
        if stopped:
            return Body(value, None)
        if self.peek() is not None:
            return Body(value, SyntaxMark("trailing characters", ()))
        return Body(value, None)

    def peek(self) -> str | None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1
        return self.text[self.pos] if self.pos < len(self.text) else None

    def value(self, path: Path) -> tuple[Any, bool]:
        """(value, stopped); when stopped, the value is partial and ends in a SyntaxMark."""
        c = self.peek()
        try:
            if c is None:
                raise _Stop(SyntaxMark("EOF while parsing a value", path))
            if c in "[{":
                return self.container(c, path)
            if c == '"':
                return self.string(path), False
            if c == "-" or c in _DIGITS:
                return self.number(path), False
            if c in "tfn":
                return self.ident(path), False
            raise _Stop(SyntaxMark("expected value", path))
        except _Stop as stop:
            return stop.mark, True

    def container(self, c: str, path: Path) -> tuple[Any, bool]:
        if len(path) >= MAX_DEPTH:
            raise _Stop(SyntaxMark("recursion limit exceeded", path))
        whole = self.whole()
        if whole is not _NO_VALUE:
            return whole, False
        return self.object(path) if c == "{" else self.array(path)

    def whole(self) -> Any:
        """The container at `pos` read by the C decoder, or _NO_VALUE if serde_json might disagree."""
        if self.fast_failures >= MAX_FAST_FAILURES:
            return _NO_VALUE
        try:
            value, end = _DECODER.raw_decode(self.text, self.pos)
        except (ValueError, RecursionError):
            self.fast_failures += 1
            return _NO_VALUE
        span = self.text[self.pos:end]
        if _NOT_UTF8_RE.search(span) or _has_lone_surrogate(span.encode("utf-8", errors="surrogateescape")):
            return _NO_VALUE
        self.pos = end
        return value

    def array(self, path: Path) -> tuple[list[Any], bool]:
        self.pos += 1
        out: list[Any] = []
        while True:
            mark = self._before_element(path, first=not out)
            if mark is not None:
                out.append(mark)
                return out, True
            if self.text[self.pos] == "]":
                self.pos += 1
                return out, False
            item, stopped = self.value(path + (len(out),))
            out.append(item)
            if stopped:
                return out, True

    def _before_element(self, path: Path, first: bool) -> SyntaxMark | None:
        c = self.peek()
        if c is None:
            return SyntaxMark("EOF while parsing a list", path)
        if c == "]" or first:
            return None
        if c != ",":
            return SyntaxMark("expected `,` or `]`", path)
        self.pos += 1
        c = self.peek()
        if c is None:
            return SyntaxMark("EOF while parsing a value", path)
        return SyntaxMark("trailing comma", path) if c == "]" else None

    def object(self, path: Path) -> tuple[dict[Any, Any], bool]:
        self.pos += 1
        pairs: list[tuple[Any, Any]] = []
        while True:
            try:
                if not self._before_key(path + (UNKNOWN,), first=not pairs):
                    self.pos += 1
                    return object_from_pairs(pairs), False
                key = self.string(path + (UNKNOWN,))
                self._colon(path)
            except _Stop as stop:
                pairs.append((MARK_KEY, stop.mark))
                return object_from_pairs(pairs), True
            item, stopped = self.value(path + (key,))
            pairs.append((key, item))
            if stopped:
                return object_from_pairs(pairs), True

    def _before_key(self, key_path: Path, first: bool) -> bool:
        """True if a key follows, False at the closing brace; raises _Stop on a syntax error."""
        c = self.peek()
        if c is None:
            raise _Stop(SyntaxMark("EOF while parsing an object", key_path))
        if c == "}":
            return False
        if not first:
            if c != ",":
                raise _Stop(SyntaxMark("expected `,` or `}`", key_path))
            self.pos += 1
            c = self.peek()
            if c is None:
                raise _Stop(SyntaxMark("EOF while parsing a value", key_path))
            if c == "}":
                raise _Stop(SyntaxMark("trailing comma", key_path))
        if c != '"':
            raise _Stop(SyntaxMark("key must be a string", key_path))
        return True

    def _colon(self, path: Path) -> None:
        c = self.peek()
        if c is None:
            raise _Stop(SyntaxMark("EOF while parsing an object", path))
        if c != ":":
            raise _Stop(SyntaxMark("expected `:`", path))
        self.pos += 1

    def string(self, path: Path) -> str:
        self.pos += 1
        chunks: list[str] = []
        start = self.pos
        while True:
            if self.pos >= len(self.text):
                raise _Stop(SyntaxMark("EOF while parsing a string", path))
            c = self.text[self.pos]
            if c == '"' or c == "\\":
                chunks.append(self.text[start:self.pos])
                self.pos += 1
                if c == '"':
                    return "".join(chunks)
                chunks.append(self.escape(path))
                start = self.pos
            elif c < " ":
                raise _Stop(SyntaxMark("control character (\\u0000-\\u001F) found while parsing a string", path))
            elif _NOT_UTF8_RE.match(c):
                raise _Stop(SyntaxMark("invalid unicode code point", path))
            else:
                self.pos += 1

    def escape(self, path: Path) -> str:
        if self.pos >= len(self.text):
            raise _Stop(SyntaxMark("EOF while parsing a string", path))
        c = self.text[self.pos]
        self.pos += 1
        if c in _ESCAPES:
            return _ESCAPES[c]
        if c != "u":
            raise _Stop(SyntaxMark("invalid escape", path))
        code = self.hex4(path)
        if 0xDC00 <= code <= 0xDFFF:
            raise _Stop(SyntaxMark("lone leading surrogate in hex escape", path))
        if not 0xD800 <= code <= 0xDBFF:
            return chr(code)
        if self.text[self.pos:self.pos + 2] != "\\u":
            raise _Stop(SyntaxMark("unexpected end of hex escape", path))
        self.pos += 2
        low = self.hex4(path)
        if not 0xDC00 <= low <= 0xDFFF:
            raise _Stop(SyntaxMark("lone leading surrogate in hex escape", path))
        return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))

    def hex4(self, path: Path) -> int:
        digits = self.text[self.pos:self.pos + 4]
        if len(digits) < 4:
            raise _Stop(SyntaxMark("EOF while parsing a string", path))
        if not all(d in "0123456789abcdefABCDEF" for d in digits):
            raise _Stop(SyntaxMark("invalid escape", path))
        self.pos += 4
        return int(digits, 16)

    def ident(self, path: Path) -> Any:
        for word, value in (("true", True), ("false", False), ("null", None)):
            if self.text[self.pos] == word[0]:
                for expected in word:
                    if self.pos >= len(self.text):
                        raise _Stop(SyntaxMark("EOF while parsing a value", path))
                    if self.text[self.pos] != expected:
                        raise _Stop(SyntaxMark("expected ident", path))
                    self.pos += 1
                return value
        raise _Stop(SyntaxMark("expected value", path))

    def number(self, path: Path) -> int | float:
        start = self.pos
        if self.text[self.pos] == "-":
            self.pos += 1
        self._digits(path, leading=True)
        is_float = False
        if self._at("."):
            is_float = True
            self.pos += 1
            self._digits(path, leading=False)
        if self._at("eE"):
            is_float = True
            self.pos += 1
            if self._at("+-"):
                self.pos += 1
            self._digits(path, leading=False)
        text = self.text[start:self.pos]
        try:
            value = float(text) if is_float else int(text)
        except ValueError:  # more digits than Python converts; serde_json reads it as an f64
            value = float("inf")
        if value in (float("inf"), float("-inf")):
            raise _Stop(SyntaxMark("number out of range", path))
        return value

    def _at(self, choices: str) -> bool:
        return self.pos < len(self.text) and self.text[self.pos] in choices

    def _digits(self, path: Path, leading: bool) -> None:
        if self.pos >= len(self.text):
            raise _Stop(SyntaxMark("EOF while parsing a value", path))
        if self.text[self.pos] not in _DIGITS:
            raise _Stop(SyntaxMark("invalid number", path))
        first = self.text[self.pos]
        self.pos += 1
        if leading and first == "0":
            if self._at(_DIGITS):
                raise _Stop(SyntaxMark("invalid number", path))
            return
        while self._at(_DIGITS):
            self.pos += 1
