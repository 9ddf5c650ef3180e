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


def type_from_stack(stack: str) -> str | None:
    """Error type from a stack trace: Python prints the exception last, Java/.NET/Node first."""
    s = stack.strip()
    if not s:
        return None
    # Only the first, second and last non-blank lines matter. After strip() the first and last
    # lines are not blank (every line separator is whitespace), so no list of blank-filtered
    # lines is built: a Python traceback is read at its ends.
    lines = s.splitlines()
    first = lines[0]
    candidate = lines[-1] if first.startswith("Traceback") else first
    if len(lines) > 1:
        second = lines[1]
        if not second.strip():
            second = next(ln for ln in lines[2:] if ln.strip())
        if _GO_FRAME.match(second):
            return None
    m = _EXC.match(candidate)
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

# Messages often differ only in numbers ("order 981", "after 5000ms"). A rule regex that never
# tests for a digit finds a match in a message exactly when it finds one in the message with
# every run of ASCII digits turned into one "0": its matches consume no digit, so they start and
# end beside the same characters, and digit runs only ever meet it as a neighbour (\b, a
# lookaround), where "0" is a digit and word character just like any other digit. Such regexes
# are evaluated once per collapsed message.
_DIGIT_RUN = re.compile(r"[0-9]+")
_SAFE_CATEGORIES = {"CATEGORY_SPACE", "CATEGORY_NOT_DIGIT", "CATEGORY_NOT_WORD",
                    "CATEGORY_LINEBREAK"}
_SAFE_AT = {"AT_BEGINNING", "AT_BEGINNING_STRING", "AT_END", "AT_END_STRING", "AT_BOUNDARY"}


def digit_blind(pattern: str) -> bool:
    """The regex (case-insensitive, as rules compile) consumes at least one character and tests
    for no ASCII digit, judged from its parse tree; anything unrecognised counts as not blind."""
    try:
        from re import _parser  # the stdlib's own parser: what re.compile builds on

        tree = _parser.parse(pattern, re.IGNORECASE)
        return tree.getwidth()[0] >= 1 and _blind(tree)
    except Exception:  # a private module may change: then no shortcut
        return False


def digit_uniform(pattern: str) -> bool:
    """The regex (case-insensitive) treats the digits 1-9 alike: no literal 1-9, no class that
    holds some of them but not all, no back reference; so whether it finds a match in a text does
    not change when its digits 2-9 become 1 (fingerprint.digit_key). Anything unrecognised
    counts as not uniform."""
    try:
        from re import _parser

        return _uniform(_parser.parse(pattern, re.IGNORECASE))
    except Exception:
        return False


def _one_to_nine(lo: int, hi: int) -> bool:
    """The range lo..hi holds all of the digits 1-9 or none of them."""
    return hi < 0x31 or lo > 0x39 or (lo <= 0x31 and hi >= 0x39)


def _uniform(items: Any) -> bool:
    for op, av in items:
        name = str(op)
        if name in ("LITERAL", "NOT_LITERAL"):
            if 0x31 <= av <= 0x39:
                return False
        elif name == "IN":
            for iop, iav in av:
                iname = str(iop)
                if iname == "LITERAL" and 0x31 <= iav <= 0x39:
                    return False
                if iname in ("RANGE", "RANGE_UNI_IGNORE") and not _one_to_nine(*iav):
                    return False
                if iname not in ("LITERAL", "RANGE", "RANGE_UNI_IGNORE", "CATEGORY", "NEGATE"):
                    return False
        elif name in ("AT", "ANY"):
            pass
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            if not _uniform(av[2]):
                return False
        elif name == "SUBPATTERN":
            if not _uniform(av[3]):
                return False
        elif name in ("ASSERT", "ASSERT_NOT"):
            if not _uniform(av[1]):
                return False
        elif name == "ATOMIC_GROUP":
            if not _uniform(av):
                return False
        elif name == "BRANCH":
            if not all(_uniform(alt) for alt in av[1]):
                return False
        else:  # back references, conditionals, the unknown
            return False
    return True


def _blind(items: Any) -> bool:
    for op, av in items:
        name = str(op)
        if name == "LITERAL":
            if 0x30 <= av <= 0x39:
                return False
        elif name == "IN":
            for iop, iav in av:
                iname = str(iop)
                if iname == "LITERAL" and 0x30 <= iav <= 0x39:
                    return False
                if iname == "RANGE" and iav[0] <= 0x39 and iav[1] >= 0x30:
                    return False
                if iname == "CATEGORY" and str(iav) not in _SAFE_CATEGORIES:
                    return False
                if iname not in ("LITERAL", "RANGE", "CATEGORY"):  # NEGATE and the unknown
                    return False
        elif name == "AT":
            if str(av) not in _SAFE_AT:
                return False
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            if not _blind(av[2]):
                return False
        elif name == "SUBPATTERN":
            if not _blind(av[3]):
                return False
        elif name in ("ASSERT", "ASSERT_NOT"):
            if not _blind(av[1]):
                return False
        elif name == "ATOMIC_GROUP":
            if not _blind(av):
                return False
        elif name == "BRANCH":
            if not all(_blind(alt) for alt in av[1]):
                return False
        else:  # ANY, NOT_LITERAL, back references, conditionals, the unknown
            return False
    return True


def required_literals(pattern: str) -> tuple[str, ...] | None:
    """Lower-case ASCII strings one of which any match of the regex (case-insensitive, as rules
    compile) contains; None when no such set is found. An ASCII text holding none of them
    cannot match, which a substring test tells much faster than the regex: a message that
    misses the caches is searched only by the rules that can match it."""
    try:
        from re import _parser

        found = _required(_parser.parse(pattern, re.IGNORECASE))
    except Exception:
        return None
    return tuple(sorted(found)) if found else None


def _required(items: Any) -> frozenset[str] | None:
    """For a sequence: the best of the sets its parts require (a run of ASCII literals, a
    group, a branch each of whose alternatives requires a set, a repeat at least once)."""
    candidates: list[frozenset[str]] = []
    run = ""
    for op, av in items:
        name = str(op)
        if name == "LITERAL" and av < 0x80:
            run += chr(av).lower()
            continue
        if run:
            candidates.append(frozenset((run,)))
            run = ""
        sub: frozenset[str] | None = None
        if name == "SUBPATTERN":
            sub = _required(av[3])
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") and av[0] >= 1:
            sub = _required(av[2])
        elif name == "BRANCH":
            alts = [_required(alt) for alt in av[1]]
            if all(alts):
                sub = frozenset().union(*alts)  # type: ignore[arg-type]
        if sub:
            candidates.append(sub)
    if run:
        candidates.append(frozenset((run,)))
    # the set whose shortest string is longest lets the fewest texts through
    return max(candidates, key=lambda c: min(map(len, c)), default=None)


Searched = list[tuple[int, re.Pattern[str], tuple[str, ...] | None]]


class Searcher:
    """Searches a text with a list of (bit, regex, required literals): the bits of those that
    find a match. In an ASCII text only the regexes one of whose required literals occurs are
    run (for ASCII text and ASCII literals, case-insensitive means lower-case on both sides);
    each distinct literal is looked for once, whichever regexes require it."""

    def __init__(self, searched: Searched) -> None:
        self.regexes = [(bit, rx) for bit, rx, _ in searched]
        self.unfiltered = sum(bit for bit, _, lits in searched if lits is None)
        by_lit: dict[str, int] = {}
        for bit, _, lits in searched:
            for x in lits or ():
                by_lit[x] = by_lit.get(x, 0) | bit
        self.literals = tuple(by_lit.items())

    def __call__(self, text: str) -> int:
        if text.isascii():
            low = text.lower()
            could = self.unfiltered
            for x, bits in self.literals:
                if x in low:
                    could |= bits
            if not could:
                return 0
        else:
            could = -1
        m = 0
        for bit, rx in self.regexes:
            if could & bit and rx.search(text):
                m |= bit
        return m


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
                m |= self._blind_mask(_DIGIT_RUN.sub("0", value))
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
                m |= self._blind_mask(_DIGIT_RUN.sub("0", text))
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
