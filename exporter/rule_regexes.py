"""What the rules' regexes are judged to do, from their parse trees, so that the classify stage
can run fewer of them: which find the same in a message whatever its digits (`digit_blind`,
`digit_uniform`), and which strings a match must contain (`required_literals`, used by
`Searcher`). Each judgement errs towards "not known", which only costs speed.
"""

from __future__ import annotations

import re
from typing import Any

# Messages often differ only in numbers ("order 981", "after 5000ms"). A rule regex that never
# tests for a digit finds a match in a message exactly when it finds one in the message with
# every run of ASCII digits turned into one "0": its matches consume no digit, so they start and
# end beside the same characters, and digit runs only ever meet it as a neighbour (\b, a
# lookaround), where "0" is a digit and word character just like any other digit. Such regexes
# are evaluated once per collapsed message.
DIGIT_RUN = re.compile(r"[0-9]+")
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
