"""The line path, glued. A line flows one way through the stages, each calling the next one's
public functions only:

  source    exporter/source.py    one file's bytes: buffering, line cap, format detection,
                                  envelopes (envelope.py), decoding (decode.py); error boundary
  extract   exporter/extract.py   which fields play which role, per preset and record shape
  count     exporter/count.py     lines, levels (levels.py), components, durations, user
                                  metrics; the loop: exporter._tally (C) or exporter/tally.py
  classify  exporter/errors.py    error records: text, type, rules (classify.py), fingerprint
                                  (fingerprint.py)
  aggregate exporter/aggregate.py bounded label sets; exposed by exporter/expose.py

A Pipeline holds what outlives a config reload (the aggregate, the fingerprint memory, the
exposition) and builds the stages of the current config; `open` gives a file its Source.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from prometheus_client import CollectorRegistry

from exporter import decode, fingerprint, tally
from exporter.aggregate import Aggregate
from exporter.classify import Rules
from exporter.config import Config
from exporter.count import Counter, user_metrics
from exporter.errors import ErrorClassifier
from exporter.expose import LineCollector
from exporter.extract import Extractors
from exporter.source import Reporter, Route, Source


class Pipeline:
    def __init__(self, config: Config) -> None:
        limits = config["limits"]
        self.agg = Aggregate(limits["max_series_per_metric"], config["duration_buckets"])
        self.seen = fingerprint.Seen(limits["fingerprint_memory"])
        self.user_labels: dict[str, tuple[str, ...]] = {}
        self.user_help: dict[str, str] = {}
        self.collector = LineCollector(self.agg, self.user_labels, self.user_help)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.raised = Reporter("a line", "skipped; counted in "
                               'tailpage_exporter_parse_failures_total{reason="internal"}')
        self.chunk_raised = Reporter("a chunk", "read again line by line")
        self.loop = tally.loop()  # the C loop or its pure-Python twin
        self.generation = 0
        self.reload(config)

    def reload(self, config: Config) -> None:
        """Swap classification config (rules, presets, fields, user metrics) keeping all counts.
        Sources opened before keep working: they take the new stages on their next read."""
        self.config = config
        user, user_paths = user_metrics(config, self.agg, self.user_labels, self.user_help)
        rules = Rules(config["rules"], config["fallback"])
        classifier = ErrorClassifier(rules, config["limits"]["max_label_length"], self.agg,
                                     self.seen)
        self.generation += 1
        preset, regex = config["preset"], config["regex"]
        self.route = Route(
            generation=self.generation, max_line=config["max_line_bytes"],
            preset=None if preset == "auto" else preset,
            regex=decode.regex_decoder(regex) if regex else None,
            extractors=Extractors(config, bool(user), [*rules.paths, *user_paths]),
            counter=Counter(config, self.agg, classifier, user, self.loop),
            cut_cri=self.loop.cut_cri, raised=self.raised, chunk_raised=self.chunk_raised)

    def open(self, path: str, offset: int = 0) -> Source:
        """A Source for one file, whose first byte fed is at `offset` in the file (what the
        error boundary's log names a line by)."""
        fmt = self.config["format"]
        for inp in self.config["inputs"]:
            if "format" in inp and fnmatch.fnmatch(path, inp["path"]):
                fmt = inp["format"]
                break
        return Source(path, fmt, self._current, offset)

    def _current(self) -> Route:
        return self.route

    def explain(self, line: bytes, fmt: str | None = None) -> dict[str, Any]:
        """Everything the pipeline decides about one line, for `tailpage-exporter explain`.
        Runs the real path on a throwaway Pipeline so the caller's counts are untouched."""
        probe = Pipeline(self.config)
        src = probe.open("<explain>")
        if fmt:
            src.fmt = fmt
        src.trace = []
        src.feed(line.rstrip(b"\n") + b"\n")
        src.flush()
        out: dict[str, Any] = {"format": src.fmt, "preset": src.preset}
        if not src.trace:
            out["parse_failure"] = next(iter(probe.agg.failures), "empty")
            return out
        out.update(src.trace[-1])
        return out
