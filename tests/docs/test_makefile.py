"""The Makefile's two commands, dry-run (`make -n`): `make run` installs only what running needs
and nothing once its stamp is fresh; `make test` installs everything and builds the docs before
pytest, as CI (.ci/run) runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(*args: str) -> list[str]:
    # run as a top-level make even under `make test` (CI): an inherited MAKELEVEL/MAKEFLAGS
    # would add "Entering directory" lines and the outer make's flags
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    out = subprocess.run(["make", "--no-print-directory", "-n", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def test_make_run_installs_the_package_and_its_runtime_dependencies_only(tmp_path):
    # -W: as if pyproject.toml had just changed; a venv of our own so the real one is untouched
    lines = dry_run("-W", "pyproject.toml", f"VENV={tmp_path}/venv", "run")
    installs = [ln for ln in lines if " install " in ln and "/pip " in ln]
    assert installs[-1].endswith("pip install -q -e ."), lines
    assert not any("[" in ln for ln in installs), f"make run installs extras: {installs}"
    assert "scripts/install-system-packages --build" in " ".join(lines)
    assert lines[-1] == "scripts/run-local"


def test_a_second_make_run_installs_nothing(tmp_path):
    stamp = tmp_path / "venv" / "bin" / ".installed-run"
    stamp.parent.mkdir(parents=True)
    stamp.touch()  # newer than pyproject.toml, setup.py and _tally.c: nothing changed since
    assert dry_run(f"VENV={tmp_path}/venv", "run") == ["scripts/run-local"]


def test_make_test_installs_everything_and_builds_the_docs_before_pytest(tmp_path):
    lines = dry_run("-W", "pyproject.toml", f"VENV={tmp_path}/venv", "test")
    text = "\n".join(lines)
    assert "pip install -q -e '.[test,bench,docs]'" in text
    ruff, docs, pytest_ = (next(i for i, ln in enumerate(lines) if ln.endswith(cmd))
                           for cmd in ("ruff check .", "mkdocs build --strict", "bin/pytest"))
    assert ruff < docs < pytest_, lines
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci


def test_a_full_install_also_satisfies_make_run(tmp_path):
    venv = tmp_path / "venv"
    lines = dry_run("-W", "pyproject.toml", f"VENV={venv}", "setup")
    assert f"touch {venv}/bin/.installed {venv}/bin/.installed-run" in lines
