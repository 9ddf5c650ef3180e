"""Series limits: label sets past the per-metric limit fold into `__other__` and are counted, and
a flood of 100,000 distinct error types leaves both series counts and memory bounded."""

from __future__ import annotations

import json
import tracemalloc

from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.aggregate import OTHER, Bounded, Histograms
from exporter.expose import render
from exporter.pipeline import Pipeline


def test_bounded_folds_free_labels_past_the_limit() -> None:
    dropped: dict[str, float] = {}
    b = Bounded("m", 2, (1,), dropped)
    assert b.add(("error", "a")) == ("error", "a")
    b.add(("error", "b"))
    b.add(("error", "a"), 2)
    assert b.add(("fatal", "c")) == ("fatal", OTHER)  # enumerated label kept, free one folded
    b.add(("fatal", "d"))
    assert b.values == {("error", "a"): 3, ("error", "b"): 1, ("fatal", OTHER): 2}
    assert dropped == {"m": 2}
    assert sum(b.values.values()) == 6  # folding keeps totals


def test_histograms_fold_and_bucket() -> None:
    dropped: dict[str, float] = {}
    h = Histograms("h", [0.1, 1], 1, (0,), dropped)
    h.observe(("api",), 0.05)
    h.observe(("api",), 0.1)  # le is inclusive
    h.observe(("web",), 5)
    assert h.values[("api",)] == [2, 0, 0, 0.15000000000000002]
    assert h.values[(OTHER,)] == [0, 0, 1, 5.0]
    assert dropped == {"h": 1}


def _lines(a: int, b: int) -> bytes:
    return "".join(json.dumps({
        "level": "error", "message": f"failure {i} for user{i}@example.com",
        "error_type": f"Err{i}Kind", "component": "api", "trace_id": f"t{i}"}) + "\n"
        for i in range(a, b)).encode()


def test_cardinality_attack_100k_distinct_error_types_stays_bounded() -> None:
    limit = 500
    cfg = config.validate({"limits": {"max_series_per_metric": limit,
                                      "fingerprint_memory": 1000}}, "<test>")
    pipe = Pipeline(config.Config(cfg))
    src = pipe.open("attack.log")
    batches = [_lines(k, k + 5000) for k in range(0, 100_000, 5000)]
    tracemalloc.start()
    try:
        for i, data in enumerate(batches):
            src.feed(data)
            if i == 4:
                _, peak_25k = tracemalloc.get_traced_memory()
        _, peak_100k = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    src.flush()
    agg = pipe.agg
    # every family holds at most `limit` label sets plus the folded ones
    assert len(agg.errors.values) <= limit + 1
    assert len(agg.by_fingerprint.values) <= limit + 1
    assert len(agg.exemplars) <= limit + 1
    assert len(pipe.seen) == 1000
    assert agg.lines["error"] == 100_000
    assert sum(agg.errors.values.values()) == 100_000  # nothing lost, only folded
    assert agg.dropped["tailpage_errors_total"] == 100_000 - limit
    # memory: four times the flood costs no more than caches cycling (< 2 MB more), and the
    # whole state stays small
    assert peak_100k - peak_25k < 2 * 1024 * 1024, (peak_25k, peak_100k)
    assert peak_100k < 32 * 1024 * 1024

    text = render(pipe.registry, False).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    other = [s for s in fams["tailpage_errors"].samples if s.labels["error_type"] == OTHER]
    assert other and sum(s.value for s in other) == 100_000 - limit
    dropped = {s.labels["metric"]: s.value for s in fams["tailpage_exporter_series_dropped"]
               .samples}
    assert dropped["tailpage_errors_total"] == 100_000 - limit
    assert len(text) < 2 * 1024 * 1024


def test_component_flood_bounds_the_duration_histogram() -> None:
    cfg = config.validate({"limits": {"max_series_per_metric": 10}}, "<test>")
    pipe = Pipeline(config.Config(cfg))
    src = pipe.open("a.log")
    src.feed("".join(json.dumps({"level": "info", "msg": "ok", "component": f"svc{i}",
                                 "duration_ms": 5}) + "\n" for i in range(300)).encode())
    src.flush()
    h = pipe.agg.durations.values
    assert len(h) == 11
    assert sum(v[-2] for v in h.values()) == 0  # nothing in +Inf: 5 ms is in the 0.005 bucket
    assert sum(sum(v[:-1]) for v in h.values()) == 300
    assert pipe.agg.dropped["tailpage_request_duration_seconds"] == 290
