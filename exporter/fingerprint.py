"""Fingerprint stage: the same kind of error gets the same short id whatever ids it mentions.

The message is normalised (UUIDs, emails, IPs, hex ids, numbers and quoted values become
placeholders), then hashed with the error type and component. The normalised text is also what
makes label values safe: nothing user-specific survives it.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict

# Order matters: the specific shapes first, so a UUID is not eaten as numbers and hex.
_SUBS = [
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
     "<uuid>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}\b"), "<ip>"),
    (re.compile(r"https?://\S+"), "<url>"),
    (re.compile(r"\"[^\"]*\"|'[^']*'|`[^`]*`"), "<str>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b|(?<![0-9A-Za-z])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{6,}(?![0-9A-Za-z])"),
     "<hex>"),
    # any other digits, also glued to words (user42, db-3, 523ms)
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
]
MAX_MESSAGE = 512  # normalise only the head of a message: the kind of error is stated early


_EMAIL, _UUID, _IP4, _IP6, _URL, _QUOTED, _HEX, _NUM = (rx for rx, _ in _SUBS)
_HEX6 = re.compile(r"[0-9a-fA-F]{6}")
# API keys, session tokens, JWT segments: a run of 20+ word characters with a letter and at least
# two digits. Class names keep theirs (Http2ConnectionException has one digit).
_TOKEN = re.compile(r"(?<![A-Za-z0-9])(?=(?:[A-Za-z_-]*\d){2})(?=[0-9_-]*[A-Za-z])"
                    r"[A-Za-z0-9_-]{20,}(?![A-Za-z0-9])")


# A run of word characters long enough to be a token: without one, _TOKEN cannot match, and this
# simpler regex rules that out in less than half _TOKEN's time.
_RUN20 = re.compile(r"[A-Za-z0-9_-]{20}")

# Digits 2-9 as 1 (0 kept: "0x" starts a hex literal). Every pattern above treats the digits 1-9
# alike (classes \d, \w, [0-9a-fA-F], ...; no literal 1-9) and the result holds no digit at all
# (_NUM replaces every one that is left), so two messages equal under this mapping normalise to
# the same text: "order 4812 failed" and "order 1931 failed" share one cache entry.
_DIGITS = bytes.maketrans(b"23456789", b"11111111")
CACHE_MAX = 8192  # normalised texts kept; cleared when full (no LRU bookkeeping per hit)
_cache: dict[bytes, str] = {}


def digit_key(text: str) -> bytes:
    """`text` with the digits 2-9 as 1: the key under which its normalised form is cached."""
    return text.encode("utf-8", "surrogatepass").translate(_DIGITS)


# A hex id: a maximal run of ASCII letters and digits, all hex, six or more, with a letter and a
# digit. Such a run never survives normalisation: it is replaced whole, by <hex> or by a
# placeholder around it (an email, a UUID, a token). The patterns above treat all its letters
# alike and all its digits alike, and count its digits only up to two (a token needs two), so the
# message normalises to the same text with the run as min(2, digits) "1"s and then "a"s:
# "sku 8f3a2b1c" and "sku 77c0e19d" share one cache entry, which the digit key alone would not
# give them.
_HEX_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{6,}(?![0-9A-Za-z])")
_NO_DIGITS = str.maketrans("", "", "0123456789")
# ASCII hex digits as "h", every other byte (UTF-8's non-ASCII bytes included) as "."
_HEX_BYTES = bytes(0x68 if chr(i) in "0123456789abcdefABCDEF" else 0x2E for i in range(256))


def has_hex6(key: bytes) -> bool:
    """Whether the text whose digit key this is holds six hex digits in a row (what _HEX6
    finds): one byte translation, against a regex scan several times as long."""
    return b"hhhhhh" in key.translate(_HEX_BYTES)


def _hex_canon(m: re.Match[str]) -> str:
    run = m.group()
    letters = len(run.translate(_NO_DIGITS))
    if letters == 0 or letters == len(run):  # a number, or a word (deface): kept
        return run
    ones = min(2, len(run) - letters)
    return "1" * ones + "a" * (len(run) - ones)


def normalize(message: str) -> str:
    """The message with ids, numbers, addresses and quoted values as placeholders. Cached by
    digit_key, and failing that by the digit key of the text with its hex ids made alike: a
    storm repeats a few kinds of message with different numbers and ids in them."""
    s = message[:MAX_MESSAGE]
    key = digit_key(s)
    norm = _cache.get(key)
    if norm is None:
        canon = _HEX_RUN.sub(_hex_canon, s) if has_hex6(key) else s
        if canon != s:
            key = digit_key(canon)
            norm = _cache.get(key)
        if norm is None:
            norm = normalize_uncached(message)
            if len(_cache) >= CACHE_MAX:
                _cache.clear()
            _cache[key] = norm
    return norm


def normalize_uncached(message: str) -> str:
    # Each substitution runs only when what it needs occurs: most messages hold no email, UUID
    # or IP, and skipping those regexes makes this (run once per error line) about 2x faster.
    s = message[:MAX_MESSAGE]
    if "@" in s:
        s = _EMAIL.sub("<email>", s)
    if "-" in s:
        s = _UUID.sub("<uuid>", s)
    if "." in s:
        s = _IP4.sub("<ip>", s)
    if s.count(":") >= 2:
        s = _IP6.sub("<ip>", s)
    if "://" in s:
        s = _URL.sub("<url>", s)
    if '"' in s or "'" in s or "`" in s:
        s = _QUOTED.sub("<str>", s)
    if len(s) >= 20 and _RUN20.search(s):
        s = _TOKEN.sub("<token>", s)
    if "0x" in s or _HEX6.search(s):
        s = _HEX.sub("<hex>", s)
    s = _NUM.sub("<n>", s)
    return " ".join(s.split())


def fingerprint(normalized: str, error_type: str, component: str) -> str:
    h = hashlib.blake2b(f"{error_type}\x00{component}\x00{normalized}".encode(), digest_size=6)
    return h.hexdigest()


class Seen:
    """First-sighting memory for fingerprints, bounded to `capacity` entries (least recently seen
    evicted). Trade-off: a fingerprint evicted and then seen again counts as new a second time; in
    exchange a flood of distinct errors cannot grow memory. Capacity 10,000 costs about 1 MB."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._d: OrderedDict[str, None] = OrderedDict()

    def first_sighting(self, fp: str) -> bool:
        d = self._d
        if fp in d:
            d.move_to_end(fp)
            return False
        d[fp] = None
        if len(d) > self.capacity:
            d.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._d)


# Label values keep their words and short codes (ECONNREFUSED, 23505, db-3) but lose what could
# identify a person or explode cardinality: emails, UUIDs, IPs, tokens, long hex ids, long numbers.
_SCRUB = [*_SUBS[:4], (_TOKEN, "<token>"),
          (re.compile(r"(?<![0-9A-Za-z])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{12,}(?![0-9A-Za-z])"),
           "<hex>"),
          (re.compile(r"\d{6,}"), "<n>"),
          (re.compile(r"[^\w.:$<>/-]+"), "_")]


_TAIL = re.compile(r"[^\s,;|]*$")


def scrub(value: str, max_len: int) -> str:
    """A free-text value made fit for a label: no personal data, bounded length."""
    s = value.strip()
    if len(s) > max_len * 2:
        # the cut may split an email or a token so that no pattern sees it whole: drop that
        # last fragment (unless it is all there is)
        s = s[:max_len * 2]
        s = _TAIL.sub("", s) or s
    for rx, repl in _SCRUB:
        s = rx.sub(repl, s)
    return s[:max_len] or "unknown"
