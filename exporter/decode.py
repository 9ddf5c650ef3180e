"""Decode stage: one message (bytes) to a record.

JSON: for the hot path a msgspec Struct is built per file holding only the fields the config and
the preset need, so the rest of each line is skipped, not materialised; `explain` and the slow
path decode to a plain dict. logfmt has no maintained parser on PyPI (the few packages are
abandoned and slower than this), so it is a small hand-written scanner. regex: named groups.
Dotted paths look up nested objects and literal dotted keys ("log.level" as ECS writes it).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any

import msgspec


class DecodeFailure(ValueError):
    """reason is the parse-failure label value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


JSON = msgspec.json.Decoder()  # any JSON value; dicts for objects


def json_dict(line: bytes) -> dict[str, Any]:
    """Full decode for explain and the slow path; raises DecodeFailure with a reason."""
    try:
        obj = JSON.decode(line)
    except UnicodeDecodeError:
        raise DecodeFailure("invalid_utf8") from None
    except RecursionError:
        raise DecodeFailure("too_deep") from None
    except msgspec.DecodeError:
        # msgspec checks UTF-8 only inside strings; binary garbage is told from broken JSON
        # here, on the failure path only
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeFailure("invalid_utf8") from None
        raise DecodeFailure("invalid_json") from None
    if not isinstance(obj, dict):
        raise DecodeFailure("not_object")
    return obj


# logfmt: key=value, key="quoted \" value", bare keys mean true. Quoted values use Go's
# escapes (logrus and slog quote with strconv.Quote).
_LOGFMT = re.compile(r'([^\s=]+)(?:=(?:"((?:[^"\\]|\\.)*)"|(\S*)))?')
_ESCAPE = re.compile(r"\\(U[0-9a-fA-F]{8}|u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|.)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def _unescape(m: re.Match[str]) -> str:
    e = m.group(1)
    if len(e) > 1:  # \u00e9, \U0001f600, \x07
        n = int(e[1:], 16)
        # a surrogate or out-of-range code point could not be encoded in a label later
        return chr(n) if n < 0x110000 and not 0xD800 <= n < 0xE000 else "\ufffd"
    return _ESCAPES.get(e, e)


def logfmt(line: bytes) -> dict[str, Any]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeFailure("invalid_utf8") from None
    out: dict[str, Any] = {}
    pairs = 0
    for m in _LOGFMT.finditer(text):
        key, quoted, bare = m.groups()
        if quoted is None and bare is None:
            out[key] = True
            continue
        pairs += 1
        if quoted is not None:
            out[key] = _ESCAPE.sub(_unescape, quoted) if "\\" in quoted else quoted
        else:
            out[key] = bare
    if pairs == 0:
        raise DecodeFailure("invalid_logfmt")
    return out


def looks_logfmt(line: bytes) -> bool:
    try:
        d = logfmt(line)
    except DecodeFailure:
        return False
    return sum(1 for v in d.values() if v is not True) >= 2


def regex_decoder(pattern: str) -> Callable[[bytes], dict[str, Any]]:
    rx = re.compile(pattern)

    def decode(line: bytes) -> dict[str, Any]:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeFailure("invalid_utf8") from None
        m = rx.search(text)
        if m is None:
            raise DecodeFailure("regex_mismatch")
        return {k: v for k, v in m.groupdict().items() if v is not None}
    return decode


def valid_utf8(data: bytes | memoryview) -> bool:
    try:
        codecs.utf_8_decode(data, "strict", True)
    except UnicodeDecodeError:
        return False
    return True


def matches(decoder: Callable[[bytes], dict[str, Any]], line: bytes) -> bool:
    try:
        decoder(line)
    except DecodeFailure:
        return False
    return True


def text_record(line: bytes) -> dict[str, Any]:
    """A line of no known format: the whole line is the message, level unknown."""
    try:
        return {"message": line.decode("utf-8")}
    except UnicodeDecodeError:
        raise DecodeFailure("invalid_utf8") from None


_INDEX = re.compile(r"-?[0-9]{1,18}")  # a list index in a path ("a.--1", "a.²" are keys)


def _walk(v: Any, rest: list[str]) -> Any:
    for part in rest:
        if isinstance(v, dict):
            v = v.get(part)
        elif isinstance(v, list) and _INDEX.fullmatch(part):
            i = int(part)
            v = v[i] if -len(v) <= i < len(v) else None
        else:
            return None
        if v is None:
            return None
    return v


Getter = Callable[[Any], Any]


def dict_getter(path: str) -> Getter:
    if "." not in path:
        return lambda d: d.get(path)
    head, *rest = path.split(".")

    def get(d: dict[str, Any]) -> Any:
        v = d.get(path)
        if v is None:
            v = _walk(d.get(head), rest)
        return v
    return get


# any JSON value but null
_VALUE = bool | int | float | str | list[Any] | dict[str, Any]


class JsonShape:
    """A Struct type holding only `paths`, its decoder, and getters that work on its instances.
    A `required` key must be present and not null, else decoding fails (ValidationError)."""

    def __init__(self, paths: Iterable[str], required: str | None = None) -> None:
        keys: dict[str, str] = {}  # JSON key -> attribute
        self.paths = list(dict.fromkeys(paths))
        for p in self.paths:
            for key in (p, p.split(".")[0]) if "." in p else (p,):
                keys.setdefault(key, f"f{len(keys)}")
        self.attr = keys
        self.type = msgspec.defstruct(
            "Record", [(a, _VALUE) if k == required else (a, Any, None)
                       for k, a in keys.items()],
            rename={a: k for k, a in keys.items()}, gc=False, omit_defaults=False,
            kw_only=True)
        self.decoder = msgspec.json.Decoder(self.type)

    def field(self, path: str) -> Any:
        """What exporter._tally reads a path with: the attribute's member descriptor (its slot)
        for a plain key, else the getter."""
        return vars(self.type)[self.attr[path]] if "." not in path \
            else self.getter(path)

    def getter(self, path: str) -> Getter:
        if "." not in path:
            return attrgetter(self.attr[path])
        lit = attrgetter(self.attr[path])
        head = attrgetter(self.attr[path.split(".")[0]])
        rest = path.split(".")[1:]

        def get(r: Any) -> Any:
            v = lit(r)
            if v is None:
                v = _walk(head(r), rest)
            return v
        return get
