"""Envelope stage: unwrap container runtime log lines and join their partial chunks.

CRI (containerd/CRI-O, /var/log/pods): `<RFC3339 time> <stdout|stderr> <P|F>[:more tags] <msg>`;
`P` chunks are joined until the `F` one. docker json-file: `{"log": "...", "stream", "time"}`;
a `log` without a trailing newline is a chunk (docker splits lines at 16 KiB) joined with the next
of the same stream. Each stream joins separately since the runtime interleaves them.
"""

from __future__ import annotations

import re

import msgspec

# the tag is P or F, optionally followed by ":"-separated tags; then a space, or the end when
# the message is empty
CRI_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\S+ (stdout|stderr) ([PF])(?::\S*)?(?: |$)")


class _Docker(msgspec.Struct, gc=False):
    log: str
    stream: str = ""


# docker writes only these two; any other value joins as "" so a hostile file cannot make the
# joiner hold a buffer per made-up stream name
_STREAMS = {"stdout": "stdout", "stderr": "stderr"}


_docker = msgspec.json.Decoder(_Docker)


class BadEnvelope(ValueError):
    pass


class TooLong(ValueError):
    pass


class Joiner:
    """Holds partial chunks per stream; `add` returns the whole message once complete."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.parts: dict[bytes | str, list[bytes]] = {}
        self.sizes: dict[bytes | str, int] = {}
        self.raw: dict[bytes | str, int] = {}  # raw envelope bytes held per stream, for `pending`
        self.overflow: set[bytes | str] = set()

    @property
    def pending(self) -> int:
        return sum(self.raw.values())

    def add(self, stream: bytes | str, chunk: bytes, final: bool, raw_len: int) -> bytes | None:
        """Returns the joined message when `final`; raises TooLong once for an oversize message."""
        if not final:
            if stream in self.overflow:
                self.raw[stream] = 0
                return None
            size = self.sizes.get(stream, 0) + len(chunk)
            if size > self.max_bytes:
                self._drop(stream)
                self.overflow.add(stream)
                raise TooLong(stream)
            self.parts.setdefault(stream, []).append(chunk)
            self.sizes[stream] = size
            self.raw[stream] = self.raw.get(stream, 0) + raw_len
            return None
        if stream in self.overflow:
            self.overflow.discard(stream)
            self.raw.pop(stream, None)
            return None
        parts = self.parts.pop(stream, None)
        self.sizes.pop(stream, None)
        self.raw.pop(stream, None)
        if parts is None:
            msg = chunk
        else:
            parts.append(chunk)
            msg = b"".join(parts)
            if len(msg) > self.max_bytes:
                raise TooLong(stream)
        # an empty message (a blank line the app printed) is no record, as in a plain file
        return msg if msg.strip() else None

    def _drop(self, stream: bytes | str) -> None:
        self.parts.pop(stream, None)
        self.sizes.pop(stream, None)
        self.raw.pop(stream, None)

    def flush(self) -> list[bytes]:
        """Everything held, as messages (partials whose final chunk never came)."""
        out = [m for p in self.parts.values() if (m := b"".join(p)).strip()]
        self.parts.clear()
        self.sizes.clear()
        self.raw.clear()
        self.overflow.clear()
        return out


def unwrap_cri(line: bytes) -> tuple[bytes, bytes, bool]:
    """(stream, message, final) or BadEnvelope."""
    m = CRI_LINE.match(line)
    if m is None:
        raise BadEnvelope("not a CRI line")
    return m.group(1), line[m.end():], m.group(2) == b"F"


def unwrap_docker(line: bytes) -> tuple[str, bytes, bool]:
    """(stream, message, final) or BadEnvelope."""
    try:
        d = _docker.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as e:
        raise BadEnvelope(str(e)) from None
    log = d.log
    final = log.endswith("\n")
    if final:
        log = log[:-2] if log.endswith("\r\n") else log[:-1]
    return _STREAMS.get(d.stream, ""), log.encode("utf-8", "surrogatepass"), final


def looks_cri(line: bytes) -> bool:
    return CRI_LINE.match(line) is not None


def looks_docker(line: bytes) -> bool:
    if not line.startswith(b'{"log":'):
        return False
    try:
        _docker.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False
    return True
