"""The image recipe, checked without a Docker engine: what it copies exists and is not ignored,
the programs it and the chart run are the package's console scripts, the final stage is slim
and non-root."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from helmkit import CHART, ROOT

DOCKERFILE = ROOT / "helm" / "Dockerfile"
BUILD_TOOLS = ("build-essential", "gcc", "g++", "make", "libpq-dev", "python3-dev", "cargo")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def stages() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    out: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            out.append(Stage(base, name))
        elif op == "ARG" and not out:
            k, _, v = rest.partition("=")
            args[k] = v
        elif out:
            out[-1].instructions.append((op, rest))
    return args, out


def dockerignore_excludes(path: str) -> bool:
    """Docker's rules: patterns in order, the last match wins, `!` re-includes, and a pattern
    that matches a parent directory matches everything under it."""
    excluded = False
    parts = path.split("/")
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(p, pattern[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern)
                      for i in range(1, len(parts) + 1))
        if hit:
            excluded = not negate
    return excluded


def copy_sources(stage: Stage) -> list[str]:
    out = []
    for op, rest in stage.instructions:
        if op in ("COPY", "ADD") and "--from=" not in rest:
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            out.extend(words[:-1])
    return out


def test_multi_stage_with_the_same_python_in_both() -> None:
    _, st = stages()
    assert len(st) >= 2
    build, final = st[0], st[-1]
    assert build.name
    # The virtualenv copied across points at the base image's interpreter: same base.
    assert final.base == build.base
    assert re.match(r"python:3\.1[1-9]-slim", final.base)
    assert ("COPY", f"--from={build.name} /opt/tailpage /opt/tailpage") in final.instructions


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    _, st = stages()
    sources = [s for stage in st for s in copy_sources(stage)]
    assert {"pyproject.toml", "exporter", "receiver"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such file"
        assert not dockerignore_excludes(src), f"COPY {src}: excluded by .dockerignore"
        if (ROOT / src).is_dir():
            for f in (ROOT / src).rglob("*.py"):
                rel = f.relative_to(ROOT).as_posix()
                if "__pycache__" not in rel:
                    assert not dockerignore_excludes(rel), rel


def test_dockerignore_keeps_the_context_small() -> None:
    for heavy in (".venv/bin/python", ".git/HEAD", "tests/helm/test_helm_image.py",
                  "exporter/__pycache__/x.pyc", "bench/out/x.json", "var/receiver.db"):
        assert dockerignore_excludes(heavy), heavy


def test_package_data_the_programs_need_is_copied() -> None:
    """pip install . in the image only sees the COPYed directories: the JSON Schemas the
    programs load at start must be inside them."""
    _, st = stages()
    copied = {s.rstrip("/") for s in copy_sources(st[0])}
    for schema in ROOT.glob("*/config.schema.json"):
        assert schema.parent.name in copied


def test_final_stage_runs_as_non_root_without_build_tools() -> None:
    _, st = stages()
    final = st[-1]
    users = [rest for op, rest in final.instructions if op == "USER"]
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can verify it
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["receiver"]["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["exporter"]["securityContext"]["runAsUser"] == int(uid)
    runs = " ".join(rest for op, rest in final.instructions if op == "RUN")
    assert "apt-get install" not in runs and "pip install" not in runs
    assert not any(re.search(rf"\b{re.escape(t)}\b", runs) for t in BUILD_TOOLS)


def test_programs_named_are_the_packages_console_scripts() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"tailpage-exporter", "tailpage-receiver"} <= set(scripts)
    text = DOCKERFILE.read_text()
    named = set(re.findall(r"\btailpage-[a-z]+\b", text))
    assert named and named <= set(scripts)
    for target in scripts.values():  # the modules behind them are in the COPYed packages
        module = target.split(":")[0]
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
    chart_cmds: set[str] = set()
    for tpl in (CHART / "templates").glob("*"):
        chart_cmds |= set(re.findall(r"command: \[([\w-]+)", tpl.read_text()))
    assert chart_cmds == {"tailpage-exporter", "tailpage-receiver", "python"}
    assert chart_cmds - {"python"} <= set(scripts)


def test_files_the_programs_load_survive_pip_install() -> None:
    """`pip install .` keeps a package's non-Python files only when they match package-data:
    every such file in the COPYed packages must, and every file opened through
    importlib.resources must exist there."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["*"]
    _, st = stages()
    copied = [ROOT / s.rstrip("/") for s in copy_sources(st[0]) if (ROOT / s).is_dir()]
    for package in copied:
        for f in package.rglob("*"):
            # C sources are compiled by setup.py; .so files are a local build's output
            if f.is_dir() or f.suffix in (".py", ".pyc", ".c", ".so") or "__pycache__" in f.parts:
                continue
            rel = f.relative_to(ROOT).as_posix()
            assert (f.parent / "__init__.py").is_file(), f"{rel}: not inside a package"
            assert any(fnmatch.fnmatch(f.name, p) for p in patterns), (
                f"{rel}: not matched by package-data {patterns}: pip install drops it")
        for src in package.rglob("*.py"):
            for pkg, name in re.findall(
                    r'resources\.files\("([\w.]+)"\)\.joinpath\("([^"]+)"\)', src.read_text()):
                assert (ROOT / pkg.replace(".", "/") / name).is_file(), f"{src}: {pkg}/{name}"


@pytest.mark.slow
def test_the_build_context_builds_a_wheel_with_the_c_loop(tmp_path: Path) -> None:
    """What the build stage does, without Docker: the files its COPYs take from the context
    (what .dockerignore lets through), built by pip into a wheel that holds the compiled
    exporter._tally, which imports and counts."""
    _, st = stages()
    ctx = tmp_path / "context"
    for src in copy_sources(st[0]):
        path = ROOT / src
        for f in [path] if path.is_file() else sorted(path.rglob("*")):
            rel = f.relative_to(ROOT).as_posix()
            if f.is_file() and not dockerignore_excludes(rel):
                (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, ctx / rel)
    assert not list(ctx.rglob("*.so"))  # nothing prebuilt came along
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                          str(tmp_path / "dist"), str(ctx)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("tailpage-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert any(re.fullmatch(r"exporter/_tally\..*\.so", n) for n in names), names
        assert "exporter/config.schema.json" in names
        z.extractall(tmp_path / "unpacked")
    probe = ("import exporter._tally as t, sys; "
             "assert t.__file__.startswith(sys.argv[1]), t.__file__; "
             "print(t.lines(b'a\\nb\\n', 0, 4, [1]))")
    ran = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "unpacked")],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "unpacked")},
                         cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "(2, [b'b'])"


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _docker_engine(), reason="no Docker engine: the recipe tests stand in")
def test_image_builds_and_runs_both_programs_as_non_root() -> None:
    tag = "tailpage:test-build"
    build = subprocess.run(["docker", "build", "-f", str(DOCKERFILE), "-t", tag, str(ROOT)],
                           capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    try:
        for program in ("tailpage-exporter", "tailpage-receiver"):
            run = subprocess.run(["docker", "run", "--rm", "--network", "none", tag, program,
                                  "--help"], capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stderr
        uid = subprocess.run(["docker", "run", "--rm", "--network", "none", tag, "id", "-u"],
                             capture_output=True, text=True, timeout=120)
        assert uid.stdout.strip() == "10001"
        cc = subprocess.run(["docker", "run", "--rm", "--network", "none", tag, "sh", "-c",
                             "command -v gcc || command -v cc"], capture_output=True, timeout=120)
        assert cc.returncode != 0, "a compiler in the final image"
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)
