"""Fixtures for the chart tests (helpers live in helmkit.py, a name no other suite uses)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helmkit import CHART, EXAMPLE, parse, render_chart


@pytest.fixture(scope="session")
def render() -> Callable[[dict[str, Any] | None], list[dict[str, Any]]]:
    cache: dict[str, list[dict[str, Any]]] = {}

    def _render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        key = yaml.safe_dump(values)
        if key not in cache:
            cache[key] = parse(render_chart(CHART, values))
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def example_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """helm/examples/myapp with this chart as its dependency in charts/ (what `helm dependency
    build` puts there), so the example renders exactly as a user's chart would."""
    dest = tmp_path_factory.mktemp("example") / "myapp"
    shutil.copytree(EXAMPLE, dest)
    shutil.copytree(CHART, dest / "charts" / "tailpage")
    return dest
