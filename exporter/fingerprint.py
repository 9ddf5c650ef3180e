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
_WS = re.compile(r"\s+")
MAX_MESSAGE = 512  # normalise only the head of a message: the kind of error is stated early


def normalize(message: str) -> str:
    s = message[:MAX_MESSAGE]
    for rx, repl in _SUBS:
        s = rx.sub(repl, s)
    return _WS.sub(" ", s).strip()


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
# identify a person or explode cardinality: emails, UUIDs, IPs, long hex ids, long numbers.
_SCRUB = [*_SUBS[:4],
          (re.compile(r"(?<![0-9A-Za-z])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{12,}(?![0-9A-Za-z])"),
           "<hex>"),
          (re.compile(r"\d{6,}"), "<n>"),
          (re.compile(r"[^\w.:$<>/-]+"), "_")]


def scrub(value: str, max_len: int) -> str:
    """A free-text value made fit for a label: no personal data, bounded length."""
    s = value.strip()[:max_len * 2]
    for rx, repl in _SCRUB:
        s = rx.sub(repl, s)
    return s[:max_len] or "unknown"
