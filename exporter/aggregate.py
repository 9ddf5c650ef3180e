"""Aggregate stage: plain dicts keyed by label tuples, bounded per metric.

A metric holding `limit` label sets takes no new ones: a new label set has its free-text labels
(component, error_type, fingerprint, user labels) replaced by `__other__` and the fold is counted
in tailpage_exporter_series_dropped_total{metric} (once per folded record). Enumerated labels
(level, severity, category) are kept, so the folded series stay few and still add up.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from exporter.levels import LEVELS

OTHER = "__other__"

Key = tuple[str, ...]


class Bounded:
    """Counter family: label tuple -> value, at most `limit` distinct tuples plus folded ones."""

    __slots__ = ("dropped", "free", "limit", "name", "values")

    def __init__(self, name: str, limit: int, free: Sequence[int], dropped: dict[str, float]):
        self.name, self.limit, self.free, self.dropped = name, limit, tuple(free), dropped
        self.values: dict[Key, float] = {}

    def key(self, key: Key) -> Key:
        """The key to use: itself while under the limit, else folded."""
        if key in self.values or len(self.values) < self.limit:
            return key
        k = list(key)
        for i in self.free:
            k[i] = OTHER
        self.dropped[self.name] = self.dropped.get(self.name, 0) + 1
        return tuple(k)

    def add(self, key: Key, v: float = 1.0) -> Key:
        values = self.values
        if key in values:
            values[key] += v
            return key
        key = self.key(key)
        values[key] = values.get(key, 0) + v
        return key


class Histograms:
    """Histogram family: label tuple -> [count per bucket (non-cumulative, +Inf last), sum]."""

    __slots__ = ("buckets", "dropped", "free", "limit", "name", "values")

    def __init__(self, name: str, buckets: Sequence[float], limit: int, free: Sequence[int],
                 dropped: dict[str, float]):
        self.name, self.limit, self.free, self.dropped = name, limit, tuple(free), dropped
        self.buckets = tuple(sorted(buckets))
        self.values: dict[Key, list[float]] = {}

    def slot(self, key: Key) -> list[float]:
        h = self.values.get(key)
        if h is None:
            if len(self.values) >= self.limit:
                k = list(key)
                for i in self.free:
                    k[i] = OTHER
                key = tuple(k)
                self.dropped[self.name] = self.dropped.get(self.name, 0) + 1
                h = self.values.get(key)
            if h is None:
                h = self.values[key] = [0] * (len(self.buckets) + 1) + [0.0]
        return h

    def observe(self, key: Key, value: float) -> None:
        h = self.values.get(key) or self.slot(key)
        h[bisect_left(self.buckets, value)] += 1
        h[-1] += value


class Aggregate:
    """All line metrics of one pipeline (shared by every file's Source)."""

    def __init__(self, limit: int, duration_buckets: Sequence[float]) -> None:
        self.dropped: dict[str, float] = {}
        self.lines: dict[str, int] = dict.fromkeys(LEVELS, 0)
        self.failures: dict[str, int] = {}
        self.errors = Bounded("tailpage_errors_total", limit, (3, 4), self.dropped)
        # (trace id, value at that time, unix time) of the last error per series
        self.exemplars: dict[Key, tuple[str, float]] = {}
        self.by_fingerprint = Bounded("tailpage_errors_by_fingerprint_total", limit, (0, 1, 2),
                                      self.dropped)
        self.fingerprints_new = Bounded("tailpage_error_fingerprints_new_total", limit, (2,),
                                        self.dropped)
        self.durations = Histograms("tailpage_request_duration_seconds", duration_buckets, limit,
                                    (0,), self.dropped)
        self.user: dict[str, Bounded | Histograms] = {}

    def fail(self, reason: str, n: int = 1) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + n
