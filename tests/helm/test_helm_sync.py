"""The chart's copies of rules/ and dashboards/ (helm/tailpage/files) never drift."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helmkit import CHART, ROOT

SCRIPT = ROOT / "scripts" / "sync-chart"
SETS = (("rules", "*.yml"), ("dashboards", "*.json"))


def test_chart_copies_equal_the_top_level_files() -> None:
    for directory, pattern in SETS:
        sources = {p.name: p.read_bytes() for p in (ROOT / directory).glob(pattern)}
        copies = {p.name: p.read_bytes() for p in (CHART / "files" / directory).glob(pattern)}
        stale = sorted(set(copies) ^ set(sources)) + sorted(
            n for n in set(copies) & set(sources) if copies[n] != sources[n])
        assert not stale, f"files/{directory} drifted ({stale}): run scripts/sync-chart"


def test_check_mode_agrees() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr


def _tree(tmp_path: Path) -> Path:
    """A repository skeleton with the script, top-level files and the chart's files/."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "sync-chart")
    for directory, _ in SETS:
        (tmp_path / directory).mkdir()
        (tmp_path / "helm" / "tailpage" / "files" / directory).mkdir(parents=True)
    return tmp_path


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(root / "scripts" / "sync-chart"), *args],
                          capture_output=True, text=True, timeout=60)


def test_sync_adds_updates_and_deletes_and_check_sees_each(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    files = root / "helm" / "tailpage" / "files"
    (root / "rules" / "a.yml").write_text("groups: []\n")
    (root / "dashboards" / "d.json").write_text('{"title": "d"}\n')
    (root / "rules" / "notes.txt").write_text("not a rule file\n")
    (files / "rules" / "gone.yml").write_text("groups: []\n")

    check = _run(root, "--check")
    assert check.returncode == 1
    assert "rules/a.yml needs add" in check.stderr and "gone.yml needs delete" in check.stderr
    assert not (files / "rules" / "a.yml").exists()  # --check changes nothing

    assert _run(root).returncode == 0
    assert (files / "rules" / "a.yml").read_text() == "groups: []\n"
    assert (files / "dashboards" / "d.json").read_text() == '{"title": "d"}\n'
    assert not (files / "rules" / "gone.yml").exists()
    assert not (files / "rules" / "notes.txt").exists()
    assert _run(root, "--check").returncode == 0

    (root / "rules" / "a.yml").write_text("groups: [{name: x, rules: []}]\n")
    check = _run(root, "--check")
    assert check.returncode == 1 and "a.yml needs update" in check.stderr
    assert _run(root).returncode == 0
    assert (files / "rules" / "a.yml").read_bytes() == (root / "rules" / "a.yml").read_bytes()
