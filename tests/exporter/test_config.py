"""Config loading: the embedded defaults are valid against the shipped schema (so `oneshot`
without --config may skip validating them), defaults fill partial configs, ${ENV} expands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from exporter import config


def test_embedded_defaults_are_valid_against_the_schema() -> None:
    defaults = config.load(None).data
    jsonschema.Draft202012Validator(config.schema()).validate(defaults)
    # and the shipped rules cover the categories the issue names
    cats = {r.get("category") for r in defaults["rules"]}
    assert {"database", "payment", "security", "performance", "network", "external",
            "validation", "application"} <= cats


def test_partial_config_gets_every_default(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("limits: {max_series_per_metric: 7}\nrules: []\n")
    cfg = config.load(str(f))
    assert cfg["limits"] == {"max_series_per_metric": 7, "fingerprint_memory": 10000,
                             "max_label_length": 64}
    assert cfg["rules"] == []
    assert cfg["fallback"] == {"fatal": "critical", "error": "low", "category": "application"}
    assert cfg["format"] == "auto"


def test_env_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("default_component: ${APP_NAME}\nformat: ${LOG_FORMAT:-json}\n")
    monkeypatch.setenv("APP_NAME", "checkout")
    cfg = config.load(str(f))
    assert (cfg["default_component"], cfg["format"]) == ("checkout", "json")
    monkeypatch.delenv("APP_NAME")
    with pytest.raises(config.ConfigError) as e:
        config.load(str(f))
    assert e.value.key_path == "default_component" and "APP_NAME" in e.value.expected


def test_override_is_validated_like_the_file() -> None:
    with pytest.raises(config.ConfigError) as e:
        config.load(None, format="xml")
    assert e.value.key_path == "format"


BAD_CONFIGS = [
    "tail: {poll_interval: 10 parsecs}\n",
    "inputs: []\n",
    "inputs: [{path: /x, start_at: middle}]\n",
    "listen: nowhere\n",
    "rules: [{name: r, when: {level: error}, severity: urgent}]\n",
    "nope: 1\n",
    "default_component: 2026-01-02\n",  # a YAML date: not JSON, so checked in-process
    "fields: {1: level}\n",  # a non-string key: not JSON either
]


@pytest.mark.parametrize("text", BAD_CONFIGS)
def test_isolated_check_says_what_the_in_process_one_says(tmp_path: Path, text: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(config.ConfigError) as here:
        config.load(str(f))
    with pytest.raises(config.ConfigError) as child:
        config.load(str(f), isolated=True)
    assert (child.value.file, child.value.key_path, child.value.expected) == (
        here.value.file, here.value.key_path, here.value.expected)


def test_isolated_check_keeps_jsonschema_out_of_the_process(tmp_path: Path) -> None:
    """`run` validates in a child: the sidecar never imports jsonschema (memory it would keep)."""
    f = tmp_path / "c.yaml"
    f.write_text("inputs: [{path: /var/log/app/*.log}]\ntail: {poll_interval: 1s}\n")
    code = ("import sys; from exporter import config; "
            f"c = config.load({str(f)!r}, listen='127.0.0.1:0', isolated=True); "
            "print(c['tail']['poll_interval'], c['listen'], 'jsonschema' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["1s", "127.0.0.1:0", "False"], r.stderr
