"""Expose stage: the aggregate dicts as Prometheus metric families, rendered on demand.

A custom Collector reads the plain dicts at scrape time instead of calling `labels().inc()` per
line, which is what keeps the line path fast. Exemplars (trace or request id of the last error in
each series) are attached to tailpage_errors_total and appear only in OpenMetrics output.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.samples import Exemplar

if TYPE_CHECKING:
    from exporter.aggregate import Aggregate, Histograms

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

ERROR_LABELS = ("level", "severity", "category", "component", "error_type")


def _counter(name: str, doc: str, labels: tuple[str, ...], values: dict) -> Metric:
    m = Metric(name, doc, "counter")
    for key, v in values.items():
        m.add_sample(name + "_total", dict(zip(labels, key, strict=True)), v)
    return m


def _histogram(name: str, doc: str, labels: tuple[str, ...], h: Histograms) -> Metric:
    m = Metric(name, doc, "histogram")
    bounds = [*(repr(float(b)) for b in h.buckets), "+Inf"]
    for key, counts in h.values.items():
        base = dict(zip(labels, key, strict=True))
        acc = 0
        for le, c in zip(bounds, counts, strict=False):
            acc += c
            m.add_sample(name + "_bucket", {**base, "le": le}, acc)
        m.add_sample(name + "_count", base, acc)
        m.add_sample(name + "_sum", base, counts[-1])
    return m


class LineCollector:
    """prometheus_client collector over one Aggregate."""

    def __init__(self, agg: Aggregate, user_labels: dict[str, tuple[str, ...]],
                 user_help: dict[str, str]) -> None:
        self.agg = agg
        self.user_labels = user_labels
        self.user_help = user_help

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only; no work at registration

    def collect(self) -> Iterator[Metric]:
        a = self.agg
        yield _counter("tailpage_log_lines", "Log records by normalised level.", ("level",),
                       {(k,): v for k, v in a.lines.items()})
        errors = Metric("tailpage_errors", "Records at level error or fatal, classified.",
                        "counter")
        for key, v in a.errors.values.items():
            ex = a.exemplars.get(key)
            exemplar = Exemplar({"trace_id": ex[0]}, 1.0, ex[1]) if ex else None
            errors.add_sample("tailpage_errors_total", dict(zip(ERROR_LABELS, key, strict=True)),
                              v, None, exemplar)
        yield errors
        yield _counter("tailpage_errors_by_fingerprint", "Errors by fingerprint.",
                       ("fingerprint", "component", "error_type"), a.by_fingerprint.values)
        yield _counter("tailpage_error_fingerprints_new",
                       "First sighting of an error fingerprint (see limits.fingerprint_memory).",
                       ("severity", "category", "component"), a.fingerprints_new.values)
        yield _histogram("tailpage_request_duration_seconds",
                         "Durations from the first duration field present.", ("component",),
                         a.durations)
        yield _counter("tailpage_exporter_parse_failures", "Malformed input, counted and skipped.",
                       ("reason",), {(k,): v for k, v in a.failures.items()})
        yield _counter("tailpage_exporter_series_dropped",
                       "Label sets folded into __other__ by the series limit.", ("metric",),
                       {(k,): v for k, v in a.dropped.items()})
        for name, fam in a.user.items():
            labels = self.user_labels[name]
            doc = self.user_help[name]
            if hasattr(fam, "buckets"):
                yield _histogram(name, doc, labels, fam)  # type: ignore[arg-type]
            else:
                base = name[:-6] if name.endswith("_total") else name
                m = Metric(base, doc, "counter")
                for key, v in fam.values.items():
                    m.add_sample(base + "_total", dict(zip(labels, key, strict=True)), v)
                yield m


def render(registry: CollectorRegistry, openmetrics: bool) -> bytes:
    """The registry as Prometheus text (0.0.4) or OpenMetrics (with exemplars)."""
    return generate_openmetrics(registry) if openmetrics else generate_latest(registry)
