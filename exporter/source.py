"""Source stage: one file's bytes to records. Buffers the unterminated last line, caps line
length, detects the file's format (and its JSON preset), unwraps container envelopes
(exporter/envelope), decodes (exporter/decode) and hands the records to the count stage
(exporter/count) with the extractor (exporter/extract) that reads them. `oneshot` and the live
tailer both feed raw file bytes to a Source.

Hot path (plain JSON files, and CRI files of whole JSON messages once their prefixes are cut):
a whole chunk of complete lines is decoded by one msgspec `decode_lines` call into Structs
holding only the needed fields, counted by the count stage's loop. Anything unusual in a chunk
(a malformed line, an over-long line, a CRI partial) sends that chunk through the per-line
path, which counts and skips the bad lines and handles the rest the same way.

The error boundary is here: a chunk whose fast path raises is read again line by line, and a
line that raises there is counted as parse failure reason="internal" and skipped (`_chunk`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from exporter import decode, envelope
from exporter.count import Counter
from exporter.extract import Extractor, Extractors
from exporter.presets import detect

log = logging.getLogger("exporter.source")
_DETECT_LINES = 200  # how many lines of a file's first chunk may be tried to detect its format
_HEAD_BYTES = 256 * 1024  # format and preset detection look at most this much of a chunk


class Reporter:
    """Logs an exception the error boundary caught at most once a minute, naming the file, the
    byte offset and where the exporter raised, never the line's content (it may hold secrets,
    and so may the exception's message)."""

    EVERY = 60.0  # seconds

    def __init__(self, what: str, outcome: str) -> None:
        self.what, self.outcome = what, outcome
        self.last = -self.EVERY
        self.unreported = 0

    def report(self, path: str, offset: int, exc: Exception) -> None:
        self.unreported += 1
        now = time.monotonic()
        if now - self.last < self.EVERY:
            return
        self.last = now
        import traceback  # only when reporting: the module costs start-up time

        tb = traceback.extract_tb(exc.__traceback__)
        at = f"{os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else "?"
        log.error("%s: %s at byte %d raised %s (%s); %s. %d such since the last report",
                  path, self.what, offset, type(exc).__name__, at, self.outcome, self.unreported)
        self.unreported = 0


@dataclass(frozen=True)
class Route:
    """Where a Source sends what it reads, as of the last config (re)load; a Source made before
    a reload takes the new one on its next read (`generation` tells)."""

    generation: int
    max_line: int
    preset: str | None  # configured; None: detected per file
    regex: Callable[[bytes], dict[str, Any]] | None  # the configured `regex` format's decoder
    extractors: Extractors
    counter: Counter
    cut_cri: Callable[[bytes | memoryview], tuple[bytes, int]]  # the loop's
    raised: Reporter  # lines skipped by the error boundary
    chunk_raised: Reporter  # chunks read again line by line


def _short_lines(buf: bytes, start: int, end: int, maxlen: int) -> bool:
    """No line of buf[start:end] is longer than maxlen. A longer line would cover a whole
    aligned block of maxlen/2 bytes, so one find per block rules it out; only a block without a
    newline needs the exact per-line check."""
    if end - start <= maxlen + 1:
        return True
    step = max(1, maxlen // 2)
    for pos in range(start, end, step):
        if buf.find(b"\n", pos, min(pos + step, end)) < 0:
            break
    else:
        return True
    prev = start
    while (j := buf.find(b"\n", prev, end)) >= 0:
        if j - prev > maxlen:
            return False
        prev = j + 1
    return True


class Source:
    """One file's state: format, preset, the unterminated tail, the partials being joined."""

    def __init__(self, path: str, fmt: str, route: Callable[[], Route], offset: int = 0) -> None:
        self.path = path
        self.offset = offset  # in the file, of the next byte fed
        self.fmt: str | None = None if fmt == "auto" else fmt
        self.inner: str | None = None  # format inside a CRI/docker envelope ("auto" per message)
        self._current = route
        self.route = route()
        self.preset: str | None = self.route.preset
        self.buf = b""
        self.skipping = 0  # bytes of an over-long line being discarded (0: not discarding)
        self.joiner = envelope.Joiner(self.route.max_line)
        self.trace: list[dict[str, Any]] | None = None  # explain collects per-record details
        self._gen = self.route.generation
        self._fast: Extractor | None = None
        self._narrow: Extractor | None = None
        self._slow: Extractor | None = None

    @property
    def pending(self) -> int:
        return len(self.buf) + self.skipping + self.joiner.pending

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self._refresh()
        maxlen = self.route.max_line
        at = self.offset  # of data[0] in the file
        self.offset += len(data)
        if self.skipping:
            i = data.find(b"\n")
            if i < 0:
                self.skipping += len(data)
                return
            data = data[i + 1:]
            at += i + 1
            self.skipping = 0
        start = 0
        if self.buf:  # the held-back line completed by data's first line: a chunk of its own
            i = data.find(b"\n")
            if i < 0:
                self.buf += data
                self._check_tail(maxlen)
                return
            head, self.buf = self.buf + data[:i + 1], b""
            self._chunk(head, 0, len(head), at - len(head) + i + 1)
            start = i + 1
        j = data.rfind(b"\n", start)
        if j < 0:
            self.buf = data[start:]
            self._check_tail(maxlen)
            return
        self.buf = data[j + 1:]
        self._check_tail(maxlen)
        self._chunk(data, start, j + 1, at)

    def _check_tail(self, maxlen: int) -> None:
        if len(self.buf) > maxlen:  # no newline within the cap: discard until the next one
            self.route.counter.failed("too_long")
            self.skipping = len(self.buf)
            self.buf = b""

    def flush(self) -> None:
        """Held-back bytes are complete lines (EOF in oneshot, flush timeout live)."""
        self._refresh()
        self.skipping = 0
        if self.buf:
            buf, self.buf = self.buf + b"\n", b""
            self._chunk(buf, 0, len(buf), self.offset - len(buf) + 1)
        for msg in self.joiner.flush():
            try:
                self._message(msg)
            except Exception as e:  # the error boundary, as in _chunk
                self._raised(self.offset, e)

    # ---- chunks of complete lines -----------------------------------------------------------

    def _refresh(self) -> None:
        """After a config reload: the new config's stages, extractors made again."""
        r = self._current()
        if self._gen != r.generation:
            self.route, self._gen = r, r.generation
            self._fast = self._slow = self._narrow = None

    def _chunk(self, buf: bytes, start: int, end: int, at: int) -> None:
        """Complete lines buf[start:end] (ending in a newline), decoded without copying them;
        buf[0] is at byte `at` of the file.

        The error boundary: nothing a line holds may stop the exporter. A chunk whose fast
        path raises (having counted nothing: the count stage counts last) is read again line by
        line; a line that raises there too is counted as reason="internal" and skipped."""
        try:
            if self._fast_chunk(buf, start, end):
                return
        except Exception as e:
            self.route.chunk_raised.report(self.path, at + start, e)
        pos = at + start
        for line in buf[start:end].split(b"\n")[:-1]:
            try:
                self._line(line)
            except Exception as e:
                self._raised(pos, e)
            pos += len(line) + 1

    def _raised(self, offset: int, exc: Exception) -> None:
        """A line that raised: counted as reason="internal", skipped, reported."""
        self.route.counter.failed("internal")
        self.route.raised.report(self.path, offset, exc)

    def _fast_chunk(self, buf: bytes, start: int, end: int) -> bool:
        """The chunk counted whole by a fast path; False when it must be read line by line."""
        if self.fmt is None:
            self._detect(buf[start:min(end, start + _HEAD_BYTES)])
        fast = {"json": self._json_lines, "cri": self._cri_lines}.get(self.fmt or "")
        return bool(fast) and self.trace is None \
            and _short_lines(buf, start, end, self.route.max_line) and fast(buf, start, end)

    def _json_lines(self, buf: bytes, start: int, end: int, records: int | None = None) -> bool:
        """The fast path: JSON lines decoded as one call into partial Structs. False, with
        nothing counted, when some line is bad or blank (the per-line path then counts and skips
        it), or when `records` is given and is not the number of records."""
        ex = self._fast or self._json_extractor(buf[start:min(end, start + _HEAD_BYTES)], True)
        view = buf if start == 0 and end == len(buf) else memoryview(buf)[start:end]
        recs = None
        if self._narrow is not None:
            try:
                recs = self._narrow.shape.decoder.decode_lines(view)  # type: ignore[union-attr]
                ex = self._narrow
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                pass
        if recs is None:
            try:
                recs = ex.shape.decoder.decode_lines(view)  # type: ignore[union-attr]
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                return False  # a bad line, not a missing duration: the narrow Struct stays
            self._narrow = None
        # msgspec skips the fields it does not read without checking their UTF-8:
        # checked here (free for ASCII) so a bad line counts as the per-line path does
        if (records is not None and len(recs) != records) or not (
                buf.isascii() or decode.valid_utf8(view)):
            return False
        # the count stage checks that they are one record per line: msgspec also reads two
        # objects on one line, which the per-line path counts as invalid
        return self.route.counter.chunk(ex, recs, buf, start, end)

    def _cri_lines(self, buf: bytes, start: int, end: int) -> bool:
        """CRI lines that are all whole (F) messages, with no partial of either stream pending:
        the prefixes are cut from the whole chunk in one call (the loop's cut_cri) and
        the messages take the JSON fast path, instead of unwrapping, sniffing and decoding to a
        dict line by line. The number of prefixes cut must equal the number of records, which
        must equal the number of lines, so any line that is not such an F line (a P chunk,
        garbage, a non-JSON message) sends the chunk to the per-line path."""
        if self.inner not in (None, "json") or self.joiner.parts or self.joiner.overflow:
            return False
        body, cut = self.route.cut_cri(memoryview(buf)[start:end])
        return cut > 0 and self._json_lines(body, 1, len(body), cut)

    def _detect(self, chunk: bytes) -> None:
        maxlen = self.route.max_line
        for line in chunk.split(b"\n", _DETECT_LINES)[:_DETECT_LINES]:
            line = line.strip()
            if not line or len(line) > maxlen:  # over-long lines are skipped, never detected
                continue
            if envelope.looks_cri(line):
                self.fmt = "cri"
            elif envelope.looks_docker(line):
                self.fmt = "docker"
            elif line.startswith(b"{"):
                self.fmt = "json"
            elif self.route.regex is not None and decode.matches(self.route.regex, line):
                self.fmt = "regex"
            elif decode.looks_logfmt(line):
                self.fmt = "logfmt"
            else:
                self.fmt = "text" if self.route.regex is None else "regex"
            return

    def _json_extractor(self, chunk: bytes, struct: bool) -> Extractor:
        """Detect the preset (unless configured) and which level/component fields this file
        uses, from its first decodable records."""
        sample = []
        for line in chunk.split(b"\n", _DETECT_LINES)[:_DETECT_LINES]:
            try:
                sample.append(decode.json_dict(line))
            except decode.DecodeFailure:
                continue
        if self.preset is None and sample:
            self.preset = detect(sample[0])
        preset = self.preset or "generic"
        if not struct:
            self._slow = self.route.extractors.get(preset, False)
            return self._slow
        self._fast = self.route.extractors.get(preset, True, sample)
        # the file's duration field in every line (as in genlog's, or any request log): a
        # Struct of only the fields read decodes ~30% faster; the first line without it sends
        # its chunk, and the file's later ones, back to the full Struct
        first = self._fast.duration_path
        self._narrow = None
        if first is not None and "." not in first and not self._fast.full:
            self._narrow = self.route.extractors.get(preset, True, sample, narrow=True)
        return self._fast

    def _line(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            return
        if len(line) > self.route.max_line:
            self.route.counter.failed("too_long")
            return
        fmt = self.fmt
        if fmt == "cri" or fmt == "docker":
            try:
                stream, msg, final = (envelope.unwrap_cri(line) if fmt == "cri"
                                      else envelope.unwrap_docker(line))
                whole = self.joiner.add(stream, msg, final, len(line) + 1)
            except envelope.BadEnvelope:
                self.route.counter.failed("invalid_envelope")
                return
            except envelope.TooLong:
                self.route.counter.failed("too_long")
                return
            if whole is not None:
                self._message(whole)
            return
        self._message(line, fmt)

    def _message(self, msg: bytes, fmt: str | None = None) -> None:
        """One whole message (envelope removed) through decode and the record path."""
        if fmt is None or fmt in ("cri", "docker", "auto"):
            fmt = self.inner or self._sniff(msg)
        try:
            if fmt == "json":
                ex = self._slow or self._json_extractor(msg, False)
                rec: Any = decode.json_dict(msg)
            else:
                ex = self._slow_dict()
                if fmt == "logfmt":
                    rec = decode.logfmt(msg)
                elif fmt == "regex" and self.route.regex is not None:
                    rec = self.route.regex(msg)
                else:
                    rec = decode.text_record(msg)
        except decode.DecodeFailure as e:
            self.route.counter.failed(e.reason)
            return
        if self.trace is not None:
            self.trace.append(self.route.counter.explain(ex, rec, fmt))
        else:
            self.route.counter.records(ex, [rec])

    def _slow_dict(self) -> Extractor:
        return self.route.extractors.get("generic", False)

    def _sniff(self, msg: bytes) -> str:
        s = msg.lstrip()
        if s.startswith(b"{"):
            return "json"
        if self.route.regex is not None and decode.matches(self.route.regex, s):
            return "regex"
        if decode.looks_logfmt(s):
            return "logfmt"
        return "text" if self.route.regex is None else "regex"
