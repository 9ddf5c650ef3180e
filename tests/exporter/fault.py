"""A fault injected into the line path, for the error-boundary tests (test_boundary.py): the
classify stage's `fingerprint.normalize` raises for an error line whose message carries MARK.

Injected because no known input raises any more (the last one, a message nested just under the
decoder's limit, is read as an ordinary error since `errors._text` was fixed), while the boundary
still guards against the bugs nobody has found yet. In-process the tests monkeypatch with
`wrap`; a `oneshot` or `run` subprocess gets this file as `fault.py` beside a `sitecustomize.py`
calling `install()`, on PYTHONPATH, so the same patch is made at interpreter start."""

from __future__ import annotations

from collections.abc import Callable

MARK = "injected-fault-7f3e"  # in the message of the lines that raise
SECRET = "s3cr3t-in-the-exception"  # in the exception's message: must never be logged


class InjectedFault(Exception):
    pass


def wrap(normalize: Callable[[str], str]) -> Callable[[str], str]:
    def faulty(message: str) -> str:
        if MARK in message:
            raise InjectedFault(f"{SECRET}: {message}")
        return normalize(message)
    return faulty


def install() -> None:
    from exporter import fingerprint

    fingerprint.normalize = wrap(fingerprint.normalize)  # type: ignore[assignment]
