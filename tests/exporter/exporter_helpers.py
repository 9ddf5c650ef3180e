"""Helpers shared by the exporter tests: a real line-splitting Source to feed the tailer, polling
with a generous deadline, and exposition text (or a pipeline's metrics) read back as samples."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.expose import render
from exporter.pipeline import Pipeline

DEADLINE = 15.0  # seconds; generous, the CI machine is small and shared


class Recorder:
    """Splits fed bytes into lines and keeps the unterminated tail, like the pipeline's Source."""

    def __init__(self, path: str, sink: list[tuple[str, bytes]]) -> None:
        self.path, self.sink, self.buf = path, sink, b""

    def feed(self, data: bytes) -> None:
        *lines, self.buf = (self.buf + data).split(b"\n")
        self.sink.extend((self.path, ln) for ln in lines)

    @property
    def pending(self) -> int:
        return len(self.buf)

    def flush(self) -> None:
        if self.buf:
            self.sink.append((self.path, self.buf))
            self.buf = b""


class RecordingPipeline:
    """Stands in for the line path (not under test here): records each line fed, with its file."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, bytes]] = []

    def open(self, path: str, offset: int = 0) -> Recorder:
        return Recorder(path, self.lines)

    def texts(self) -> list[bytes]:
        return [ln for _, ln in self.lines]


async def until(cond: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    """Yield to the loop until cond() holds; fail naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"not reached in {timeout}s: {what}"
        await asyncio.sleep(0.01)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Sum(float):
    """A histogram's sum, equal to another within a relative 1e-9: the order its values are
    added in (and so its last bits) depends on how the file was read."""

    def __eq__(self, other: object) -> bool:
        if isinstance(other, int | float):
            return math.isclose(self, other, rel_tol=1e-9)
        return NotImplemented  # e.g. pytest.approx decides

    __hash__ = float.__hash__


def samples(text: str) -> Samples:
    """Prometheus text exposition as {(sample name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))):
            Sum(s.value) if s.name.endswith("_sum") else s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def metrics(pipe: Pipeline) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {sorted label pairs: value}, read back from the pipeline's rendered exposition."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for (name, labels), value in samples(render(pipe.registry, False).decode()).items():
        out.setdefault(name, {})[labels] = value
    return out


def levels(pipe: Pipeline) -> dict[str, float]:
    return {dict(k)["level"]: v for k, v in metrics(pipe)["tailpage_log_lines_total"].items()
            if v}


def failures(pipe: Pipeline) -> dict[str, float]:
    return {dict(k)["reason"]: v
            for k, v in metrics(pipe).get("tailpage_exporter_parse_failures_total", {}).items()}


# ---- the fast paths against the per-line path ----------------------------------------------

def jl(recs: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(r, separators=(",", ":")).encode() for r in recs]


def run(data: bytes, step: int, **cfg: Any) -> Samples:
    pipe = Pipeline(config.Config(config.validate(cfg, "<test>")))
    src = pipe.open("app.log")
    for i in range(0, len(data), step):
        src.feed(data[i:i + step])
    src.flush()
    return samples(render(pipe.registry, False).decode())


def without_failures(ss: Samples) -> Samples:
    return {k: v for k, v in ss.items() if not k[0].startswith("tailpage_exporter_")}


def per_line(lines: list[bytes], every: int, bad: bytes) -> bytes:
    """The lines with a bad one after every `every`: no chunk of `every` lines is all good."""
    out = []
    for i, ln in enumerate(lines):
        out.append(ln)
        if i % every == 0:  # after the first line, which decides the format
            out.append(bad)
    return b"\n".join(out) + b"\n"
