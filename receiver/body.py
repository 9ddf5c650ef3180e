"""Reading a webhook body: Content-Encoding decoded here, the size limit applied after decoding.

The app serves with aiohttp's auto_decompress off (app.py), so the handler sees the bytes as sent
and decides: an unknown or corrupt encoding is a 400 with the reason (aiohttp would answer 400
itself for br/zstd, uncounted, or raise into a 500 for corrupt gzip), and a small gzip that
inflates past the limit is cut off after `limit + 1` bytes of output (no zip bomb: memory stays
about one limit).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from aiohttp import web

SUPPORTED_ENCODINGS = ("gzip", "deflate", "identity")
_STEP = 1 << 20


@dataclass
class BodyError(Exception):
    """Why a body is refused: HTTP status, metric reason label, message for the sender."""

    status: int
    reason: str
    message: str


def _decoder(encoding: str, first: bytes) -> zlib._Decompress:
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    # RFC 9110 deflate is the zlib format; some senders use raw deflate (no zlib header)
    zlib_header = len(first) > 0 and first[0] & 0x0F == 8
    return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)


async def read_body(request: web.Request, limit: int) -> bytearray:
    """The decoded body, at most `limit` bytes (before and after decoding), or BodyError."""
    too_large = BodyError(413, "too_large", f"body larger than {limit} bytes")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
    if encoding not in (*SUPPORTED_ENCODINGS, "x-gzip"):
        shown = encoding[:40].encode("ascii", "replace").decode()
        raise BodyError(
            400,
            "encoding",
            f"unsupported Content-Encoding {shown!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})",
        )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    out = bytearray()  # orjson reads a bytearray as is: no copy of a body of tens of MB
    raw = 0
    d: zlib._Decompress | None = None
    try:
        async for chunk in request.content.iter_any():
            raw += len(chunk)
            if raw > limit:
                raise too_large
            if encoding == "identity":
                out += chunk
                continue
            if d is None:
                d = _decoder(encoding, chunk)
            data = chunk
            while data:
                if d.eof:
                    raise BodyError(400, "encoding", f"data after the end of the {encoding} stream")
                # at most 1 MiB per step: no second copy of a big body in flight
                out += d.decompress(data, min(_STEP, limit + 1 - len(out)))
                if len(out) > limit:
                    raise BodyError(413, "too_large", f"body larger than {limit} bytes decoded")
                data = d.unconsumed_tail
            if d.unused_data:
                raise BodyError(400, "encoding", f"data after the end of the {encoding} stream")
    except zlib.error as e:
        raise BodyError(400, "encoding", f"body is not valid {encoding}: {e}") from e
    except web.RequestPayloadError as e:  # e.g. a broken chunked transfer encoding
        raise BodyError(400, "bad_body", f"cannot read the body: {e}") from e
    if d is not None and not d.eof:
        raise BodyError(400, "encoding", f"body is not valid {encoding}: the stream is truncated")
    return out
