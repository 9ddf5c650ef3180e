"""Process fixtures for the end-to-end suite, and the drill report writer.

Every process is started in its own process group and killed in a finalizer, also when the
test fails; on failure the last lines of each process's log are printed to help the reader.
Drill figures are written to test-output/e2e/<drill>.json and summarised at the end of the run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_harness import (
    REPO,
    REPORT_DIR,
    REPORTS_KEY,
    DrillReport,
    ProcGroup,
    Sinks,
    machine,
    save_report,
)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


def _failed(node) -> bool:
    return any(getattr(node, f"rep_{w}", None) is not None and getattr(node, f"rep_{w}").failed
               for w in ("setup", "call"))


@pytest.fixture
def group(request, tmp_path: Path) -> Iterator[ProcGroup]:
    g = ProcGroup(tmp_path)
    yield g
    if _failed(request.node):
        print(g.dump_logs())
    g.close()


@pytest.fixture
def sinks() -> Iterator[Sinks]:
    s = Sinks()
    yield s
    s.close()


@pytest.fixture
def drill(request) -> Iterator[Callable[[str, str], DrillReport]]:
    """drill(name, unit) -> DrillReport; written to test-output/e2e/ when the test ends."""
    made: list[DrillReport] = []
    t0 = time.monotonic()

    def make(name: str, unit: str) -> DrillReport:
        r = DrillReport(name, unit)
        made.append(r)
        return r

    yield make
    for r in made:
        r.seconds = r.seconds or time.monotonic() - t0
        r.notes.setdefault("test", request.node.nodeid)
        r.notes.setdefault("outcome", "failed" if _failed(request.node) else "passed")
        r.notes.setdefault("machine", machine())
        save_report(request.config, r)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    reports: list[DrillReport] = getattr(config, REPORTS_KEY, [])
    if not reports:
        return
    terminalreporter.section("tailpage e2e drills: written / delivered / duplicated / lost")
    for r in reports:
        terminalreporter.write_line(r.line())
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "summary.json").write_text(json.dumps(
        {"machine": machine(), "reports": [r.as_dict() for r in reports]}, indent=2) + "\n")
    terminalreporter.write_line(f"(JSON in {REPORT_DIR.relative_to(REPO)}/)")
