# exporter._tally, the JSON fast path's per-line loop in C (exporter/_tally.c); exporter/tally.py
# is the same in pure Python, and what runs when this is not built or TAILPAGE_PURE_PYTHON=1.

from collections.abc import Callable, Sequence
from typing import Any

# The count stage's cache entry for one (raw level, raw component) pair: what the loop counts a
# record under, without looking at the record again.
#   level      one of exporter.levels.LEVELS
#   component  the component label value (scrubbed, capped)
#   key        (component,): the duration histogram's label tuple, made once
#   is_error   level is error or fatal; only the value True (the object) counts as an error
CacheEntry = tuple[str, str, tuple[str], bool]

# A field of the records: a callable (record -> value), or the member descriptor of a msgspec
# Struct field (read straight from the record's slot), or None (no such field).
Field = Callable[[Any], Any] | Any | None

# Per cache entry: (entry, lines, bucket counts or None, sum of seconds). Bucket counts are
# non-cumulative, +Inf last; None when no line of the group had a duration.
Group = tuple[CacheEntry, int, list[int] | None, float]

# A counted record whose entry is an error: (its index in recs, entry, seconds or None).
Error = tuple[int, CacheEntry, float | None]

def tally(recs: list[Any], level_comp: Callable[[Any], Any] | tuple[Field, Field],
          cache: dict[Any, CacheEntry], duration: Field, mul: float,
          any_duration: Callable[[Any], Any] | None, no_duration: Any,
          buckets: tuple[float, ...]) -> tuple[list[Group], list[int], list[Error]]:
    """Counts each record whose cache key (level_comp: a callable returning it, or the two
    fields it is made of) has an entry in `cache` and whose duration is a plain non-negative
    number (the field `duration` times `mul`) or absent (then `any_duration(record)` must equal
    `no_duration`: no other duration field is set). Returns the groups, the indices of the
    other records (odd: the caller counts them), and the errors among the counted, in order.
    At most 256 groups: records of further entries are odd."""

def lines(buf: bytes | memoryview, start: int, end: int,
          wanted: Sequence[int]) -> tuple[int, list[bytes]]:
    """The lines of buf[start:end] ending in a newline that are not blank (only spaces, tabs,
    CRs, which msgspec skips), counted; and those at the ascending indices `wanted`, without
    their newline."""

def cut_cri(chunk: bytes | memoryview) -> tuple[bytes, int]:
    """b"\\n" + chunk with the CRI prefix cut from every whole (F) line whose message is a JSON
    object, and how many were cut."""
