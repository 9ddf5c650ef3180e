"""The JSON fast path's per-line loop in plain Python: the reference that exporter._tally (C)
accelerates, and what runs when the C extension is not built (no C compiler at install time)
or TAILPAGE_PURE_PYTHON=1 forces it. Both give the same results, to the last bit of every
histogram sum: the C loop's groups, their order and its float arithmetic are reproduced here.
The arguments and results are described in exporter/_tally.pyi.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from types import MemberDescriptorType, ModuleType
from typing import Any, NamedTuple

log = logging.getLogger("exporter.tally")

MAX_GROUPS = 256  # as in _tally.c: entries beyond it are left to the caller (odd)
_BLANK = b" \t\r"  # JSON whitespace a blank line may hold (msgspec skips such lines)
# the prefix of a CRI line holding a whole (F) message that is a JSON object, after a newline
_CRI_WHOLE = re.compile(rb"\n\d{4}-\d\d-\d\dT\S+ (?:stdout|stderr) F(?::\S*)? (?=\{)")


def _getter(field: Any) -> Callable[[Any], Any]:
    if field is None:
        return lambda r: None
    if isinstance(field, MemberDescriptorType):
        return lambda r: field.__get__(r, type(r))
    return field


def _lookup(cache: dict[Any, Any], key: Any) -> Any:
    try:
        entry = cache.get(key)
    except TypeError:  # unhashable: a dict where a name should be
        return None
    return entry if type(entry) is tuple and len(entry) == 4 else None


def _plain_seconds(v: Any, mul: float) -> float | None:
    """A plain duration (an exact float or int, not negative) in seconds, else None."""
    t = type(v)
    if t is int:
        try:
            d = float(v)
        except OverflowError:
            return None
    elif t is float:
        d = v
    else:
        return None
    return d * mul if d >= 0 else None


def tally(recs: list[Any], level_comp: Any, cache: dict[Any, Any], duration: Any, mul: float,
          any_duration: Callable[[Any], Any] | None, no_duration: Any,
          buckets: Sequence[float]) -> tuple[list[Any], list[int], list[Any]]:
    """Count the records whose cache entry is known and whose duration is plain, per entry;
    hand back the others by index (see exporter/_tally.pyi)."""
    if isinstance(level_comp, tuple) and len(level_comp) == 2:
        get_level, get_comp = _getter(level_comp[0]), _getter(level_comp[1])

        def key_of(r: Any) -> Any:
            return get_level(r), get_comp(r)
    else:
        key_of = level_comp
    get_dur = _getter(duration)
    bounds = [float(b) for b in buckets]
    nb = len(bounds)
    groups: dict[int, list[Any]] = {}  # id(entry) -> [entry, lines, with duration, sum, counts]
    odd: list[int] = []
    errors: list[Any] = []
    for i, r in enumerate(recs):
        entry = _lookup(cache, key_of(r))
        seconds = None
        if entry is None:
            d = 0
        else:
            v = get_dur(r)
            if v is not None:
                seconds = _plain_seconds(v, mul)
                d = 0 if seconds is None else 1
            elif any_duration is None or any_duration(r) == no_duration:
                d = 2
            else:
                d = 0
        g = groups.get(id(entry)) if d else None
        if d and g is None and len(groups) < MAX_GROUPS:
            g = groups[id(entry)] = [entry, 0, 0, 0.0, [0] * (nb + 1)]
        if g is None:
            odd.append(i)
            continue
        g[1] += 1
        if d == 1:
            g[2] += 1
            g[3] += seconds
            g[4][_bucket(bounds, seconds)] += 1
        if entry[3] is True:
            errors.append((i, entry, seconds if d == 1 else None))
    out = [(e, n, counts if with_d else None, total)
           for e, n, with_d, total, counts in groups.values()]
    return out, odd, errors


def _bucket(bounds: list[float], v: float) -> int:
    """The number of bounds below v (bisect_left), as the C loop finds it."""
    lo, hi = 0, len(bounds)
    while lo < hi:
        mid = (lo + hi) // 2
        if bounds[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


def lines(buf: bytes | memoryview, start: int, end: int,
          wanted: Sequence[int]) -> tuple[int, list[bytes]]:
    """The lines of buf[start:end] that are not blank, counted, and those at `wanted`."""
    if start < 0 or end > len(buf) or start > end:
        raise ValueError("lines(): start/end out of range")
    found = [ln for ln in bytes(buf[start:end]).split(b"\n")[:-1] if ln.strip(_BLANK)]
    return len(found), [found[i] for i in wanted if i < len(found)]


def cut_cri(chunk: bytes | memoryview) -> tuple[bytes, int]:
    """b"\\n" + chunk with the CRI prefix of each whole line holding a JSON object cut off."""
    return _CRI_WHOLE.subn(b"\n", b"\n" + bytes(chunk))


class Loop(NamedTuple):
    """The loop's three functions, and which implementation they are."""

    tally: Callable[..., tuple[list[Any], list[int], list[Any]]]
    lines: Callable[..., tuple[int, list[bytes]]]
    cut_cri: Callable[..., tuple[bytes, int]]
    name: str


PYTHON = Loop(tally, lines, cut_cri, "pure Python")
_said: str | None = None


def _c_loop() -> ModuleType | None:
    try:
        from exporter import _tally
    except ImportError:
        return None
    return _tally


def loop() -> Loop:
    """The C loop when it is built, unless TAILPAGE_PURE_PYTHON=1; else this module's. Read when
    a Pipeline is made; which one runs is logged the first time (and on any change)."""
    global _said
    forced = os.environ.get("TAILPAGE_PURE_PYTHON", "") not in ("", "0")
    c = None if forced else _c_loop()
    chosen = PYTHON if c is None else Loop(c.tally, c.lines, c.cut_cri, "C loop")
    if chosen.name != _said:
        _said = chosen.name
        log.info("line path: %s (%s)", chosen.name,
                 "exporter._tally" if c is not None else
                 "TAILPAGE_PURE_PYTHON is set" if forced else "exporter._tally is not built")
    return chosen
