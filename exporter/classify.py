"""Classify stage: error type, duration, and the ordered severity/category rules.

Rules come from the config (shipped defaults live in the schema). Only records at level error or
fatal are classified: nothing else is counted by severity, which keeps the hot path short.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.config import parse_duration
from exporter.fingerprint import digit_key
from exporter.rule_regexes import (
    DIGIT_RUN,
    Searched,
    Searcher,
    digit_blind,
    digit_uniform,
    required_literals,
)

_UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
_GO_DUR = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def to_seconds(value: Any, unit: str) -> float | None:
    """A duration field's value in seconds: numbers in `unit`, numeric strings likewise, Go-style
    strings ("1.5s", "250ms", "1m2s") by their own units. None for anything else or negatives."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        s = value * _UNIT[unit]
    elif isinstance(value, str):
        v = value.strip()
        try:
            s = float(v) * _UNIT[unit]
        except ValueError:
            if not _GO_DUR.match(v):
                return None
            s = sum(float(n) * _GO_UNIT[u] for n, u in _GO_PART.findall(v))
    else:
        return None
    if s != s or s < 0 or s == float("inf"):
        return None
    return s


# The class name in an exception line: "ValueError: x", "java.lang.IllegalStateException: x",
# "System.InvalidOperationException: x", "Error: x", "psycopg.errors.UniqueViolation".
# .NET prints a native error code after some names: "SocketException (111): x".
_EXC = re.compile(r"^\s*(?:Caused by: )?([A-Za-z_$][\w$]*(?:[.$][A-Za-z_$][\w$]*)*)"
                  r"(?: \(\w+\))?(?::|\s*$)")
_GO_FRAME = re.compile(r"\s+\S+\.go:\d+")  # a Go stack (zap's `stacktrace`) names functions only




def _newlines_only(s: str) -> bool:
    """Whether "\n" is the only str.splitlines separator in s (each test a memchr)."""
    return (s.isascii() and "\r" not in s and "\x0b" not in s and "\x0c" not in s
            and "\x1c" not in s and "\x1d" not in s and "\x1e" not in s)


def type_from_stack(stack: str) -> str | None:
    """Error type from a stack trace: Python prints the exception last, Java/.NET/Node first."""
    s = stack.strip()
    if not s:
        return None
    # Only the first, second and last non-blank lines matter. After strip() the first and last
    # lines are not blank (every line separator is whitespace), so a Python traceback is read at
    # its ends: by find/rfind when "\n" is the only separator (an ASCII text without the others),
    # else from splitlines.
    second: str | None = None
    if _newlines_only(s):
        i = s.find("\n")
        first = last = s
        if i >= 0:
            first, last = s[:i], s[s.rfind("\n") + 1:]
            j = s.find("\n", i + 1)
            second = s[i + 1:j] if j >= 0 else s[i + 1:]
            if not second.strip():  # the last line is not blank: one is found
                second = next(ln for ln in s[i + 1:].split("\n") if ln.strip())
    else:
        lines = s.splitlines()
        first, last = lines[0], lines[-1]
        if len(lines) > 1:
            second = lines[1]
            if not second.strip():
                second = next(ln for ln in lines[2:] if ln.strip())
    candidate = last if first.startswith("Traceback") else first
    if second is not None and _GO_FRAME.match(second):
        return None
    # _EXC never reads past the first colon (its match ends there or fails), unless that colon
    # is the one of "Caused by:": the name is cached by the line up to it ("ValueError:"), so
    # the message after it, which varies, costs no regex run
    k = candidate.find(":")
    if k < 0 or "Caused" in candidate[:k]:
        return _exc_name(candidate)
    key = candidate[:k + 1]
    try:
        return _exc_cache[key]
    except KeyError:
        if len(_exc_cache) >= CACHE_MAX:
            _exc_cache.clear()
        name = _exc_cache[key] = _exc_name(key)
        return name


_exc_cache: dict[str, str | None] = {}


def _exc_name(line: str) -> str | None:
    m = _EXC.match(line)
    if m is None:
        return None
    name = m.group(1).rsplit(".", 1)[-1]
    if name in ("at", "File", "Traceback") or len(name) < 2:
        return None
    return name


@dataclass(slots=True)
class Facts:
    """What a rule can look at."""

    level: str
    text: str  # message plus error message
    error_type: str
    component: str
    duration: float | None
    get: Callable[[str], Any]  # any field by dotted path


class Match:
    def __init__(self, when: dict[str, Any]) -> None:
        self.levels = frozenset(when["level"]) if "level" in when else None
        self.message = _rx(when.get("message"))
        self.error_type = _rx(when.get("error_type"))
        self.component = _rx(when.get("component"))
        self.duration_over = (parse_duration(when["duration_over"])
                              if "duration_over" in when else None)
        self.field = when.get("field")
        self.paths = [self.field["path"]] if self.field else []

    def __call__(self, f: Facts) -> bool:
        if self.levels is not None and f.level not in self.levels:
            return False
        if self.duration_over is not None and (f.duration is None
                                               or f.duration <= self.duration_over):
            return False
        if self.error_type is not None and not self.error_type.search(f.error_type):
            return False
        if self.component is not None and not self.component.search(f.component):
            return False
        if self.message is not None and not self.message.search(f.text):
            return False
        return not (self.field is not None and not _field_ok(self.field, f.get(self.field["path"])))


def _rx(p: str | None) -> re.Pattern[str] | None:
    return re.compile(p, re.IGNORECASE) if p else None


def _field_ok(cond: dict[str, Any], value: Any) -> bool:
    if "eq" in cond and isinstance(cond["eq"], str):
        return value is not None and str(value) == cond["eq"]
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return False
    if not isinstance(value, int | float):
        return False
    ops = {"gt": value.__gt__, "ge": value.__ge__, "lt": value.__lt__, "le": value.__le__,
           "eq": value.__eq__}
    return all(ops[k](v) is True for k, v in cond.items() if k in ops)


@dataclass(slots=True)
class Decision:
    severity: str
    category: str
    rule: str  # which rule decided severity ("fallback" when none did)
    category_rule: str


CACHE_MAX = 16384  # per-value match caches; cleared when full (no LRU bookkeeping per hit)

class Rules:
    """First match decides severity; category comes from the first matching rule that sets one
    (a rule may set only a category, e.g. network), else the fallback.

    Fast: each condition kind is evaluated once per distinct value (message text, error type,
    component) into a bitmask of the rules it allows; the AND of the masks (with level, duration
    and field conditions) picks a cached decision. Regexes run once per distinct message, not
    once per rule per line."""

    def __init__(self, rules: list[dict[str, Any]], fallback: dict[str, Any]) -> None:
        self.rules = [(r["name"], Match(r["when"]), r.get("severity"), r.get("category"))
                      for r in rules]
        self.fallback = fallback
        self.paths = [p for _, m, _, _ in self.rules for p in m.paths]
        allbits = (1 << len(self.rules)) - 1
        self.level_mask = {lvl: sum(1 << i for i, (_, m, _, _) in enumerate(self.rules)
                                    if m.levels is None or lvl in m.levels)
                           for lvl in ("trace", "debug", "info", "warning", "error", "fatal",
                                       "unknown")}
        self.dur = [(1 << i, m.duration_over) for i, (_, m, _, _) in enumerate(self.rules)
                    if m.duration_over is not None]
        self.fields = [(1 << i, m.field) for i, (_, m, _, _) in enumerate(self.rules)
                       if m.field is not None]
        self.allbits = allbits
        self._caches: tuple[dict[str, int], ...] = ({}, {}, {})
        # per condition kind (message, error type, component): the rules without such a regex
        # pass regardless; only the rules with one are searched
        self._kinds: list[tuple[int, Searched]] = []
        for kind in range(3):
            rxs = [(1 << i, (m.message, m.error_type, m.component)[kind])
                   for i, (_, m, _, _) in enumerate(self.rules)]
            free = sum(bit for bit, rx in rxs if rx is None)
            self._kinds.append((free, [(bit, rx, required_literals(rx.pattern))
                                       for bit, rx in rxs if rx is not None]))
        # message regexes blind to digits are searched once per digit-collapsed message
        free, searched = self._kinds[0]
        blind = [t for t in searched if digit_blind(t[1].pattern)]
        self._kinds[0] = (free, [t for t in searched if t not in blind])
        self._blind = Searcher(blind) if blind else None
        self._searchers = [Searcher(k[1]) for k in self._kinds]
        self._blind_cache: dict[str, int] = {}
        # when every message regex treats the digits 1-9 alike, messages that differ only in
        # them ("order 4812", "order 1931") share one mask, found under fingerprint.digit_key
        self._keyed: dict[bytes, int] = {}
        self._use_key = all(digit_uniform(rx.pattern) for _, rx, _ in self._kinds[0][1])
        self._decisions: dict[tuple[int, bool], Decision] = {}

    def _mask(self, kind: int, value: str) -> int:
        if kind == 0 and self._use_key:
            return self._keyed_mask(value)
        cache = self._caches[kind]
        m = cache.get(value)
        if m is None:
            m = self._kinds[kind][0] | self._searchers[kind](value)
            if kind == 0 and self._blind:
                m |= self._blind_mask(DIGIT_RUN.sub("0", value))
            if len(cache) >= CACHE_MAX:
                cache.clear()
            cache[value] = m
        return m

    def _keyed_mask(self, text: str) -> int:
        cache = self._keyed
        key = digit_key(text)
        m = cache.get(key)
        if m is None:
            m = self._kinds[0][0] | self._searchers[0](text)
            if self._blind:
                m |= self._blind_mask(DIGIT_RUN.sub("0", text))
            if len(cache) >= CACHE_MAX:
                cache.clear()
            cache[key] = m
        return m

    def _blind_mask(self, collapsed: str) -> int:
        cache = self._blind_cache
        m = cache.get(collapsed)
        if m is None:
            m = self._blind(collapsed)  # type: ignore[misc]
            if len(cache) >= CACHE_MAX:
                cache.clear()
            cache[collapsed] = m
        return m

    def decide(self, level: str, text: str, error_type: str, component: str,
               duration: float | None, get: Callable[[str], Any] | None) -> Decision:
        """`get` reads a field by path; it may be None when no rule has a field condition."""
        return self.finish(self.premask(level, text, error_type, component), level, duration,
                           get)

    def premask(self, level: str, text: str, error_type: str, component: str) -> int:
        """The rules the level, message, error type and component allow. When `by_digit_key`,
        a function of the message's digit key (not of the message itself)."""
        c0, c1, c2 = self._caches  # hits looked up inline: this runs for every error line
        m0 = self._keyed.get(digit_key(text)) if self._use_key else c0.get(text)
        m1, m2 = c1.get(error_type), c2.get(component)
        return (self.level_mask.get(level, 0)
                & (self._mask(0, text) if m0 is None else m0)
                & (self._mask(1, error_type) if m1 is None else m1)
                & (self._mask(2, component) if m2 is None else m2))

    @property
    def by_digit_key(self) -> bool:
        return self._use_key

    def finish(self, m: int, level: str, duration: float | None,
               get: Callable[[str], Any] | None) -> Decision:
        """The decision for a premask, given the duration and the record's fields."""
        for bit, over in self.dur:
            if duration is None or duration <= over:
                m &= ~bit
        for bit, cond in self.fields:
            if m & bit and not _field_ok(cond, get(cond["path"])):
                m &= ~bit
        key = (m, level == "fatal")
        dec = self._decisions.get(key)
        if dec is None:
            dec = self._decisions[key] = self._decide_mask(m, level)
        return dec

    def _decide_mask(self, mask: int, level: str) -> Decision:
        severity = category = None
        srule = crule = "fallback"
        for i, (name, _, sev, cat) in enumerate(self.rules):
            if not mask & (1 << i):
                continue
            if severity is None and sev:
                severity, srule = sev, name
            if category is None and cat:
                category, crule = cat, name
            if severity and category:
                break
        if severity is None:
            severity = self.fallback["fatal" if level == "fatal" else "error"]
        return Decision(severity, category or self.fallback["category"], srule, crule)
