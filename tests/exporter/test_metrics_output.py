"""The exposition: every metric of README's "Metrics reference" (exporter line metrics) with the
right labels and values, OpenMetrics exemplars read back by prometheus_client's own parser,
user-defined counters and histograms, and the same counts whatever the read chunking."""

from __future__ import annotations

import json
from typing import Any

from exporter_helpers import Samples, samples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_families,
)

from exporter import config
from exporter.expose import render
from exporter.pipeline import Pipeline


def pipeline(cfg: dict[str, Any] | None = None) -> Pipeline:
    return Pipeline(config.Config(config.validate(cfg or {}, "<test>")))


def run(data: bytes, cfg: dict[str, Any] | None = None, chunk: int | None = None) -> Samples:
    pipe = pipeline(cfg)
    src = pipe.open("app.log")
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        src.feed(data[i:i + step])
    src.flush()
    return samples(render(pipe.registry, False).decode())


def pick(ss: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for (n, lbl), v in ss.items()
               if n == name and labels.items() <= dict(lbl).items())


def jl(*recs: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in recs)


LOG = jl(
    {"level": "info", "message": "request completed", "component": "api", "duration_ms": 40},
    {"level": "INFO", "message": "request completed", "component": "api", "duration_ms": 700},
    {"level": "debug", "message": "cache hit", "component": "web"},
    {"level": "warn", "message": "slow query", "component": "db", "latency_ms": 3000},
    {"level": "error", "message": "payment processing failed for order 17", "component": "pay",
     "error_type": "PaymentDeclined", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
     "duration_ms": 120},
    {"level": "error", "message": "payment processing failed for order 99", "component": "pay",
     "error_type": "PaymentDeclined", "trace_id": "00f067aa0ba902b7"},
    {"level": "fatal", "message": "out of memory", "component": "worker"},
    {"level": "err", "message": "upstream timeout after 5000ms", "component": "api",
     "error": {"type": "TimeoutError"}},
) + b"not json at all {\n" + b'{"level":"info","msg":"\xff\xfe"}\n' + b"[1, 2, 3]\n"


def test_every_line_metric_with_labels_and_values() -> None:
    ss = run(LOG, {"format": "json"})
    assert {lvl: pick(ss, "tailpage_log_lines_total", level=lvl) for lvl in
            ("trace", "debug", "info", "warning", "error", "fatal", "unknown")} == \
        {"trace": 0, "debug": 1, "info": 2, "warning": 1, "error": 3, "fatal": 1, "unknown": 0}

    errors = {dict(lbl)["error_type"]: (dict(lbl), v) for (n, lbl), v in ss.items()
              if n == "tailpage_errors_total"}
    assert errors["PaymentDeclined"] == ({"level": "error", "severity": "critical",
                                          "category": "payment", "component": "pay",
                                          "error_type": "PaymentDeclined"}, 2)
    assert errors["unknown"][0]["severity"] == "critical"  # fatal out of memory
    assert errors["TimeoutError"][0] == {"level": "error", "severity": "medium",
                                              "category": "performance", "component": "api",
                                              "error_type": "TimeoutError"}

    by_fp = {lbl: v for (n, lbl), v in ss.items() if n == "tailpage_errors_by_fingerprint_total"}
    pay = [v for lbl, v in by_fp.items() if dict(lbl)["error_type"] == "PaymentDeclined"]
    assert pay == [2]  # order 17 and order 99: one fingerprint
    assert all(len(dict(lbl)["fingerprint"]) == 12 for lbl in by_fp)
    assert pick(ss, "tailpage_error_fingerprints_new_total") == 3
    assert pick(ss, "tailpage_error_fingerprints_new_total", severity="critical",
                category="payment", component="pay") == 1

    h = "tailpage_request_duration_seconds"
    assert pick(ss, h + "_count", component="api") == 2
    assert abs(pick(ss, h + "_sum", component="api") - 0.74) < 1e-9
    assert pick(ss, h + "_bucket", component="api", le="0.05") == 1
    assert pick(ss, h + "_bucket", component="api", le="0.5") == 1
    assert pick(ss, h + "_bucket", component="api", le="1.0") == 2
    assert pick(ss, h + "_bucket", component="db", le="2.5") == 0
    assert pick(ss, h + "_bucket", component="db", le="5.0") == 1
    assert pick(ss, h + "_count", component="pay") == 1

    assert pick(ss, "tailpage_exporter_parse_failures_total", reason="invalid_json") == 1
    assert pick(ss, "tailpage_exporter_parse_failures_total", reason="invalid_utf8") == 1
    assert pick(ss, "tailpage_exporter_parse_failures_total", reason="not_object") == 1


def test_metric_names_match_the_reference() -> None:
    names = {n for n, _ in run(LOG)}
    assert {"tailpage_log_lines_total", "tailpage_errors_total",
            "tailpage_errors_by_fingerprint_total", "tailpage_error_fingerprints_new_total",
            "tailpage_request_duration_seconds_bucket", "tailpage_request_duration_seconds_sum",
            "tailpage_request_duration_seconds_count",
            "tailpage_exporter_parse_failures_total"} <= names


def test_too_long_lines_counted_and_skipped() -> None:
    data = jl({"level": "info", "msg": "a"}) + b'{"level":"error","msg":"' + b"x" * 500 + \
        b'"}\n' + jl({"level": "error", "msg": "b"})
    for chunk in (None, 7, 64, 100):
        ss = run(data, {"max_line_bytes": 200}, chunk)
        assert pick(ss, "tailpage_exporter_parse_failures_total", reason="too_long") == 1
        assert pick(ss, "tailpage_log_lines_total", level="error") == 1
        assert pick(ss, "tailpage_log_lines_total", level="info") == 1


def test_openmetrics_exemplars_on_error_counter() -> None:
    pipe = pipeline()
    src = pipe.open("app.log")
    src.feed(LOG)
    src.flush()
    text = render(pipe.registry, True).decode()
    fams = {f.name: f for f in om_families(text)}
    errors = fams["tailpage_errors"]
    assert errors.type == "counter"
    ex = {s.labels["error_type"]: s.exemplar for s in errors.samples if s.name.endswith("_total")}
    # the last error of each series carries its trace id
    assert ex["PaymentDeclined"].labels == {"trace_id": "00f067aa0ba902b7"}
    assert ex["PaymentDeclined"].timestamp is not None
    assert ex["unknown"] is None  # no trace or request id on that line
    # plain Prometheus text has no exemplars
    assert "trace_id" not in render(pipe.registry, False).decode()


def test_request_id_is_an_exemplar_too() -> None:
    pipe = pipeline()
    src = pipe.open("a.log")
    src.feed(jl({"level": "error", "msg": "x", "request_id": "req_8668d32f"}))
    src.flush()
    errors = next(f for f in om_families(render(pipe.registry, True).decode())
                  if f.name == "tailpage_errors")
    assert errors.samples[0].exemplar.labels == {"trace_id": "req_8668d32f"}


USER = {"metrics": [
    {"name": "checkout_orders_total", "type": "counter", "help": "orders by outcome",
     "labels": {"outcome": "outcome", "region": "geo.region", "level": "level"}},
    {"name": "checkout_amount_eur_total", "type": "counter", "value": "amount_cents",
     "scale": 0.01, "labels": {"component": "component"}},
    {"name": "payment_gateway_seconds", "type": "histogram", "value": "gw.ms", "scale": 0.001,
     "buckets": [0.1, 1], "labels": {"gateway": "gw.name"},
     "when": {"message": "^gateway call"}},
]}


def test_user_defined_counters_and_histograms() -> None:
    data = jl(
        {"level": "info", "msg": "order placed", "outcome": "ok", "geo": {"region": "eu"},
         "amount_cents": 1999, "component": "checkout"},
        {"level": "info", "msg": "order placed", "outcome": "ok", "geo": {"region": "eu"},
         "amount_cents": "1", "component": "checkout"},
        {"level": "error", "msg": "order failed", "outcome": "declined", "geo": {"region": "us"},
         "component": "checkout"},
        {"level": "info", "msg": "gateway call done", "gw": {"ms": 250, "name": "stripe"}},
        {"level": "info", "msg": "gateway call done", "gw": {"ms": 50, "name": "stripe"}},
        {"level": "info", "msg": "other", "gw": {"ms": 5000, "name": "stripe"}},
    )
    ss = run(data, USER)
    assert pick(ss, "checkout_orders_total", outcome="ok", region="eu", level="info") == 2
    assert pick(ss, "checkout_orders_total", outcome="declined", region="us",
                level="error") == 1
    assert pick(ss, "checkout_orders_total", outcome="unknown") == 3  # records without the field
    assert abs(pick(ss, "checkout_amount_eur_total", component="checkout") - 20.0) < 1e-9
    assert pick(ss, "payment_gateway_seconds_count", gateway="stripe") == 2
    assert pick(ss, "payment_gateway_seconds_bucket", gateway="stripe", le="0.1") == 1
    assert pick(ss, "payment_gateway_seconds_bucket", gateway="stripe", le="1.0") == 2
    assert abs(pick(ss, "payment_gateway_seconds_sum", gateway="stripe") - 0.3) < 1e-9
    # the built-in metrics still count with user metrics configured
    assert pick(ss, "tailpage_log_lines_total", level="info") == 5


def test_user_metric_series_limit() -> None:
    cfg = {"limits": {"max_series_per_metric": 3},
           "metrics": [{"name": "by_user_total", "type": "counter",
                        "labels": {"user": "user", "level": "level"}}]}
    ss = run(jl(*({"level": "info", "msg": "x", "user": f"u{i}"} for i in range(10))), cfg)
    assert pick(ss, "by_user_total", user="__other__", level="info") == 7
    assert pick(ss, "tailpage_exporter_series_dropped_total", metric="by_user_total") == 7


def test_fast_and_per_line_paths_agree() -> None:
    """A chunk holding one bad line goes through the per-line path; the counts must be the
    same as for the clean chunk plus one failure."""
    good = LOG.split(b"not json")[0] * 50
    clean = run(good, {"format": "json"})
    dirty = run(good + b"{broken\n", {"format": "json"})
    assert pick(dirty, "tailpage_exporter_parse_failures_total", reason="invalid_json") == 1
    del dirty[("tailpage_exporter_parse_failures_total", (("reason", "invalid_json"),))]
    assert clean == dirty


lines = st.one_of(
    st.builds(lambda lvl, c, d, et: json.dumps(
        {"level": lvl, "msg": f"failed {et} 12", "component": c, "duration_ms": d,
         "error_type": et}).encode(),
        st.sampled_from(["info", "error", "WARN", "fatal", 50, None]),
        st.sampled_from(["api", "db", None, {"x": 1}]),
        st.one_of(st.none(), st.floats(0, 1e4), st.text(max_size=4)),
        st.sampled_from(["E1", "E2"])),
    st.binary(max_size=30),
    st.just(b""),
    st.just(b'{"level":"error","msg":"' + b"y" * 150 + b'"}'),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lines, max_size=40), st.integers(1, 97))
def test_counts_do_not_depend_on_read_chunking(recs: list[bytes], chunk: int) -> None:
    data = b"\n".join(recs) + b"\n"
    cfg = {"max_line_bytes": 128}
    assert run(data, cfg, chunk) == run(data, cfg)


def test_duration_fields_beyond_the_first_seen_are_read() -> None:
    """The fast path reads the duration field of a file's first records inline; lines naming
    their duration differently still count, in their own units."""
    recs = [{"level": "info", "msg": "a", "component": "c", "duration_ms": 100}] * 3 + [
        {"level": "info", "msg": "b", "component": "c", "took": 250},
        {"level": "info", "msg": "b", "component": "c", "duration": "1.5s"},
        {"level": "info", "msg": "b", "component": "c", "event": {"duration": 3_000_000}},
        {"level": "info", "msg": "b", "component": "c", "duration_ms": "bogus"},
        {"level": "info", "msg": "b", "component": "c"},
    ]
    for fmt in ("json", "auto"):
        ss = run(jl(*recs), {"format": fmt})
        h = "tailpage_request_duration_seconds"
        assert pick(ss, h + "_count", component="c") == 6
        assert abs(pick(ss, h + "_sum", component="c") - (0.3 + 0.25 + 1.5 + 0.003)) < 1e-9


def test_files_with_different_loggers_share_a_pipeline() -> None:
    """Serilog omits the level of Information events; a plain JSON line without a level is
    `unknown`. Two such files in one exporter must not borrow each other's answer."""
    pipe = pipeline()
    plain = pipe.open("plain.log")
    serilog = pipe.open("serilog.log")
    plain.feed(jl(*({"msg": "no level", "component": "api"} for _ in range(3))))
    serilog.feed(jl(*({"@t": "2026-11-22T00:00:00Z", "@mt": "Served {Path}", "Path": "/",
                       "component": "api"} for _ in range(2))))
    plain.feed(jl({"msg": "no level", "component": "api"}))
    for src in (plain, serilog):
        src.flush()
    ss = samples(render(pipe.registry, False).decode())
    assert pick(ss, "tailpage_log_lines_total", level="unknown") == 4
    assert pick(ss, "tailpage_log_lines_total", level="info") == 2
