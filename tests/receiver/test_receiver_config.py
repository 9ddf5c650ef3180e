"""Config loading, routing and the CLI commands (real subprocesses, real files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from receiver import config as config_mod
from receiver.config import ConfigError, parse_duration
from receiver.route import route, severity

EXE = Path(sys.executable).parent / "tailpage-receiver"

ISSUE_EXAMPLE = """
listen: 127.0.0.1:9097
auth: {bearer_token_file: token}
store: sqlite:///var/receiver.db
channels:
  slack:     {url: "${SLACK_URL}"}
  email:     {url: "mailtos://user:pass@example.com?to=oncall@example.com"}
  sms:       {url: "twilio://AC123:token@15551234567/15557654321"}
  pagerduty: {url_file: pd-url}
routes:
  - match: {severity: critical}
    channels: [pagerduty, sms, slack, email]
    escalate:
      - {after: 15m, channels: [sms, email]}
      - {after: 30m, channels: [pagerduty]}
  - match_re: {component: "pay.*"}
    channels: [slack]
    continue: true
  - match: {severity: high}
    channels: [slack, email]
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "token").write_text("tok-from-file\n")
    (tmp_path / "pd-url").write_text("pagerduty://integration@apikey\n")
    p = tmp_path / "receiver.yml"
    p.write_text(text)
    return p


def test_issue_example_loads_with_env_files_and_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("SLACK_URL", "slack://T1/B2/C3")
    cfg = config_mod.load(write(tmp_path, ISSUE_EXAMPLE))
    assert cfg.auth.bearer_token == "tok-from-file"
    assert cfg.channels["slack"].url == "slack://T1/B2/C3"
    assert cfg.channels["pagerduty"].url == "pagerduty://integration@apikey"
    assert {n: c.kind for n, c in cfg.channels.items()} == {
        "slack": "slack",
        "email": "email",
        "sms": "sms",
        "pagerduty": "pagerduty",
    }
    assert cfg.delivery.max_age_s == 86400 and cfg.delivery.workers == 4  # schema defaults
    assert cfg.max_body_bytes == 64 * 1024 * 1024  # a 10,000-alert group is ~11 MB
    assert cfg.shutdown_grace_s == 10
    r = route(cfg, {"severity": "P0", "component": "payments"})
    assert r.channels == ("pagerduty", "sms", "slack", "email")
    assert [(s.after_s, s.channels) for s in r.escalation] == [
        (900, ("sms", "email")),
        (1800, ("pagerduty",)),
    ]
    # match_re is anchored; continue: true falls through to the next match
    assert route(cfg, {"severity": "error", "component": "payments"}).channels == ("slack", "email")
    assert route(cfg, {"severity": "error", "component": "xpayments"}).channels == (
        "slack",
        "email",
    )
    assert route(cfg, {"severity": "low"}).channels == ()


def test_severity_aliases_and_default_policy():
    for value, want in [
        ("P0", "critical"),
        ("page", "critical"),
        ("error", "high"),
        ("P1", "high"),
        ("warning", "medium"),
        ("P2", "medium"),
        ("info", "low"),
        ("P3", "low"),
        ("CRITICAL", "critical"),
        ("bogus", "unknown"),
    ]:
        assert severity({"severity": value}) == want
    cfg = config_mod.from_dict(
        {
            "channels": {
                "slack": {"url": "slack://T1/B2/C3"},
                "ops-mail": {"url": "mailto://u:p@example.com"},
                "pagerduty": {"url": "pagerduty://a@b"},
            }
        }
    )
    assert route(cfg, {"severity": "critical"}).channels == ("pagerduty", "slack", "ops-mail")
    assert route(cfg, {"severity": "high"}).channels == ("slack", "ops-mail")
    assert route(cfg, {"severity": "warning"}).channels == ("slack",)
    assert route(cfg, {"severity": "info"}).channels == ()
    assert route(cfg, {}).channels == ("slack",)  # unknown severity is never silently dropped


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        ("listen: 9097\n", "listen", "HOST:PORT"),
        (
            "channels: {a: {url: 'slack://SECRETVALUE'}}\nroutes: [{channels: [b]}]\n",
            "routes[0].channels[0]",
            "no channel 'b'",
        ),
        ("channels: {a: {url: 42}}\n", "channels.a.url", "a non-empty string"),
        ("delivery: {max_age: soon}\n", "delivery.max_age", "a duration"),
        ("shutdown_grace: 10\n", "shutdown_grace", "a duration"),
        ("max_body_bytes: 100\n", "max_body_bytes", "bytes >= 1024"),
        ("routes: [{match: {x: y}}]\n", "routes[0]", "'channels' is a required property"),
        ("channels: {a: {url: '${NOPE_NOT_SET}'}}\n", "channels.a.url", "NOPE_NOT_SET to be set"),
        (
            "auth: {bearer_token_file: /nonexistent/token}\n",
            "auth.bearer_token_file",
            "readable file",
        ),
        (
            "routes: [{match_re: {a: '('}, channels: []}]\n",
            "routes[0].match_re.a",
            "regular expression",
        ),
        ("bogus_key: 1\n", "", "'bogus_key' was unexpected"),
        ("listen: [unclosed\n", "", "valid YAML"),
    ],
)
def test_errors_name_file_key_and_expectation_without_values(tmp_path, text, path, expected):
    p = tmp_path / "bad.yml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        config_mod.load(p)
    assert e.value.file == str(p) and e.value.path == path
    assert expected in e.value.expected
    assert "SECRETVALUE" not in str(e.value)
    out = subprocess.run([str(EXE), "check-config", str(p)], capture_output=True, text=True)
    assert out.returncode == 2
    assert str(p) in out.stderr and expected in out.stderr and "SECRETVALUE" not in out.stderr


def test_durations():
    assert parse_duration("1h30m") == 5400 and parse_duration("500ms") == 0.5
    with pytest.raises(ValueError):
        parse_duration("15 minutes")


def test_cli_check_config_routes_and_send_test(tmp_path, monkeypatch):
    cfg = write(tmp_path, ISSUE_EXAMPLE.replace("${SLACK_URL}", "console://"))
    out = subprocess.run([str(EXE), "check-config", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 0 and "OK (4 channels" in out.stdout
    out = subprocess.run(
        [str(EXE), "routes", str(cfg), "severity=page", "component=payments"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "severity: critical" in out.stdout
    assert "channels: pagerduty, sms, slack, email" in out.stdout
    assert "escalate 2: after 1800s if not acknowledged -> pagerduty" in out.stdout
    out = subprocess.run(
        [str(EXE), "send-test", "--config", str(cfg), "slack"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "[LOW] TailpageTest — tailpage-receiver" in out.stdout and "sent" in out.stdout
    out = subprocess.run(
        [str(EXE), "send-test", "--config", str(cfg), "nope"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "no channel 'nope'" in out.stderr


def test_send_test_failure_does_not_leak_the_url(tmp_path):
    p = tmp_path / "c.yml"
    p.write_text(
        yaml.safe_dump({"channels": {"hook": {"url": "json://127.0.0.1:1/TOPSECRETPATH"}}})
    )
    out = subprocess.run(
        [str(EXE), "send-test", "--config", str(p), "hook"], capture_output=True, text=True
    )
    assert out.returncode == 1 and "FAILED" in out.stderr
    assert "TOPSECRETPATH" not in out.stderr + out.stdout


def test_secret_files_for_basic_auth_channels_and_the_store(tmp_path):
    (tmp_path / "pw").write_text("basic-pw\n")
    (tmp_path / "dbpw").write_text("db:p@ss/word\n")
    (tmp_path / "hook").write_text("json://127.0.0.1:9/HOOKSECRET\n")
    p = tmp_path / "c.yml"
    p.write_text(
        "auth: {basic: {username: am, password_file: pw}}\n"
        "store: postgresql://tailpage@db.example:5432/tailpage\n"
        "store_password_file: dbpw\n"
        "channels: {hook: {url_file: hook, rate_limit: {burst: 3, per: 1m}}}\n"
    )
    cfg = config_mod.load(p)  # relative *_file paths are relative to the config file
    assert (cfg.auth.username, cfg.auth.password) == ("am", "basic-pw")
    assert "basic-pw" not in repr(cfg.auth)
    assert cfg.store == "postgresql://tailpage:db%3Ap%40ss%2Fword@db.example:5432/tailpage"
    assert "p%40ss" not in config_mod.redact_dsn(cfg.store)
    assert "p%40ss" not in repr(cfg) and "basic-pw" not in repr(cfg) and "HOOK" not in repr(cfg)
    hook = cfg.channels["hook"]
    assert hook.url == "json://127.0.0.1:9/HOOKSECRET" and "HOOKSECRET" not in repr(hook)
    assert (hook.kind, hook.rate_burst, hook.rate_per_s) == ("chat", 3, 0.05)

    p.write_text("store_password_file: dbpw\n")  # SQLite has no password
    with pytest.raises(ConfigError) as e:
        config_mod.load(p)
    assert e.value.path == "store_password_file"
    p.write_text("auth: {basic: {username: am, password: a, password_file: pw}}\n")
    with pytest.raises(ConfigError) as e:
        config_mod.load(p)
    assert e.value.path == "auth.basic" and "exactly one" in e.value.expected
    p.write_text("auth: {bearer_token: a, bearer_token_file: pw}\n")
    with pytest.raises(ConfigError) as e:
        config_mod.load(p)
    assert e.value.path == "auth" and "exactly one" in e.value.expected
    (tmp_path / "empty").write_text("\n")
    p.write_text("channels: {a: {url_file: empty}}\n")
    with pytest.raises(ConfigError) as e:
        config_mod.load(p)
    assert e.value.path == "channels.a.url_file" and "non-empty" in e.value.expected


def test_env_expansion_defaults_and_literal_dollar(tmp_path, monkeypatch):
    monkeypatch.setenv("TP_HOOK_HOST", "127.0.0.1")
    monkeypatch.delenv("TP_UNSET", raising=False)
    p = tmp_path / "c.yml"
    p.write_text(
        "listen: ${TP_LISTEN:-127.0.0.1:19097}\n"
        "channels: {a: {url: 'json://${TP_HOOK_HOST}/x?p=$$1${TP_UNSET:-}'}}\n"
    )
    cfg = config_mod.load(p)
    assert (cfg.listen_host, cfg.listen_port) == ("127.0.0.1", 19097)
    assert cfg.channels["a"].url == "json://127.0.0.1/x?p=$1"


def test_sqlite_store_urls():
    from receiver.store.base import sqlite_path

    assert sqlite_path("sqlite:///var/lib/tailpage/receiver.db") == "/var/lib/tailpage/receiver.db"
    assert sqlite_path("sqlite:////tmp/x/r.db") == "/tmp/x/r.db"
    assert sqlite_path("sqlite:///./var/receiver.db") == "./var/receiver.db"
    assert sqlite_path("sqlite:///../data/r.db") == "../data/r.db"
    assert config_mod.from_dict({}).store == "sqlite:///./var/receiver.db"
