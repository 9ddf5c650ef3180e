"""The two implementations of the JSON fast path's loop, for tests that run on both: the C loop
(exporter._tally) and its pure-Python twin (exporter/tally.py), chosen as the exporter chooses,
by TAILPAGE_PURE_PYTHON when a Pipeline is made."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from exporter import tally

LOOPS = ["C loop", "pure Python"]


@contextmanager
def on(name: str) -> Iterator[None]:
    """Pipelines made inside run on loop `name`; the C one is skipped when it is not built."""
    if name == "C loop" and tally._c_loop() is None:
        pytest.skip("exporter._tally is not built (no C compiler when installed)")
    old = os.environ.get("TAILPAGE_PURE_PYTHON")
    os.environ["TAILPAGE_PURE_PYTHON"] = "1" if name == "pure Python" else "0"
    try:
        assert tally.loop().name == name
        yield
    finally:
        if old is None:
            del os.environ["TAILPAGE_PURE_PYTHON"]
        else:
            os.environ["TAILPAGE_PURE_PYTHON"] = old
