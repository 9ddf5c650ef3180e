"""Config loading: the embedded defaults are valid against the shipped schema (so `oneshot`
without --config may skip validating them), defaults fill partial configs, ${ENV} expands."""

from __future__ import annotations

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
