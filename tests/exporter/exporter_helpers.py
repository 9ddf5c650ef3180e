"""Helpers shared by the live-mode tests (tail, server, run, cli): a real line-splitting Source to
feed the tailer, polling with a generous deadline, and exposition text parsed into samples."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

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

    def open(self, path: str) -> Recorder:
        return Recorder(path, self.lines)

    def texts(self) -> list[bytes]:
        return [ln for _, ln in self.lines]


async def until(cond: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    """Yield to the loop until cond() holds; fail naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"not reached in {timeout}s: {what}"
        await asyncio.sleep(0.01)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text exposition as {(sample name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}
