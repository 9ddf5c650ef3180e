"""Config: YAML file -> validated, defaulted, secret-resolved Config.

The JSON Schema (config.schema.json) is the one source of truth for keys, defaults and the
"expected ..." part of error messages (its `x-expected` annotations). Errors name the file and the
key path and never echo a value, because values may be secrets.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jsonschema
import yaml

SCHEMA: dict[str, Any] = json.loads(
    resources.files("receiver").joinpath("config.schema.json").read_text()
)

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A config problem: which file, which key, what was expected. Exit code 2."""

    def __init__(self, file: str, path: str, expected: str):
        self.file, self.path, self.expected = file, path, expected
        super().__init__(f"{file}: {path or '(top level)'}: {expected}")


def parse_duration(text: str) -> float:
    """'1h30m' -> 5400.0 seconds."""
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r}")
    return total


@dataclass(frozen=True)
class Channel:
    name: str
    url: str  # secret: never log, never put in a metric or an API answer
    kind: str
    rate_burst: int | None = None
    rate_per_s: float | None = None  # refill: burst tokens per `per`

    def __repr__(self) -> str:  # keep the URL out of tracebacks and logs
        return f"Channel(name={self.name!r}, kind={self.kind!r})"


@dataclass(frozen=True)
class EscalationStep:
    after_s: float
    channels: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    match: dict[str, str]
    match_re: dict[str, re.Pattern[str]]
    channels: tuple[str, ...]
    cont: bool
    escalate: tuple[EscalationStep, ...]


# No defaults on the fields that come from the file: the schema's `default`s are the only ones.
@dataclass(frozen=True)
class DeliverySettings:
    workers: int
    batch: int
    timeout_s: float
    lease_s: float
    poll_interval_s: float
    backoff_initial_s: float
    backoff_max_s: float
    max_age_s: float


@dataclass(frozen=True)
class Heartbeat:
    """A dead man's switch: a firing alert matching `match` is expected every `period`."""

    name: str
    match: dict[str, str]
    period_s: float
    grace_s: float
    labels: dict[str, str]  # of the HeartbeatMissing alert (severity defaults to critical)


@dataclass(frozen=True)
class Auth:
    bearer_token: str | None = None
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        return f"Auth(bearer={self.bearer_token is not None}, basic={self.username is not None})"


@dataclass
class Config:
    source: str
    listen_host: str
    listen_port: int
    external_url: str | None
    store: str = field(repr=False)  # may hold a password: log only redact_dsn(store)
    store_timeout_s: float
    shutdown_grace_s: float
    max_body_bytes: int
    auth: Auth
    channels: dict[str, Channel]
    routes: list[Route] | None  # None: the default severity policy
    delivery: DeliverySettings
    escalation_poll_s: float
    heartbeats: tuple[Heartbeat, ...] = ()


_KIND_BY_SCHEME = {
    "slack": "slack",
    "slacks": "slack",
    "mailto": "email",
    "mailtos": "email",
    "email": "email",
    "emails": "email",
    "pagerduty": "pagerduty",
    "pagerdutys": "pagerduty",
    "console": "console",
}
# apprise's SMS gateways: their messages are cut to 160 characters
_SMS_SCHEMES = frozenset(
    (
        "twilio",
        "sns",
        "vonage",
        "nexmo",
        "clicksend",
        "msgbird",
        "plivo",
        "sinch",
        "bulksms",
        "d7sms",
        "kavenegar",
        "messagebird",
        "burstsms",
        "smseagle",
        "httpsms",
        "seven",
        "46elks",
        "signal",
        "signals",
        "smsmgr",
        "threema",
        "voipms",
        "africas",
        "bulkvs",
        "infobip",
    )
)


def channel_kind(url: str) -> str:
    """Message style from the apprise URL scheme (config `kind` overrides)."""
    scheme = urlsplit(url).scheme.lower()
    return _KIND_BY_SCHEME.get(scheme) or ("sms" if scheme in _SMS_SCHEMES else "chat")


def redact_dsn(dsn: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db (for logs)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)  # user may be empty (libpq default)


# -- loading -----------------------------------------------------------------------------------


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        node: Any = SCHEMA
        for key in ref.removeprefix("#/").split("/"):
            node = node[key]
        return {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _expected(error: jsonschema.ValidationError) -> str:
    schema = _resolve(error.schema) if isinstance(error.schema, dict) else {}
    if error.validator in ("required", "additionalProperties", "propertyNames"):
        # these messages name keys only, never values
        hint = schema.get("x-expected")
        return error.message + (f" (expected {hint})" if hint else "")
    if schema.get("x-expected"):
        return f"expected {schema['x-expected']}"
    if error.validator == "type":
        return f"expected {error.validator_value}"
    if error.validator == "enum":
        return f"expected one of {', '.join(map(str, error.validator_value))}"
    if error.validator in ("minimum", "maximum", "minLength"):
        return f"expected {error.validator} {error.validator_value}"
    return f"invalid ({error.validator})"


def _apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    schema = _resolve(schema)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key, sub in props.items():
            sub_r = _resolve(sub)
            if key not in value and "default" in sub_r:
                value[key] = json.loads(json.dumps(sub_r["default"]))
            if key in value:
                value[key] = _apply_defaults(sub, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in props:
                    value[key] = _apply_defaults(extra, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_apply_defaults(schema["items"], v) for v in value]
    return value


def _expand_env(value: Any, file: str, parts: list) -> Any:
    """${VAR} and ${VAR:-default} in string values; $$ is a literal $."""
    if isinstance(value, dict):
        return {k: _expand_env(v, file, [*parts, k]) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, file, [*parts, i]) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        got = os.environ.get(name)
        if got is None:
            if default is None:
                raise ConfigError(
                    file, _path(parts), f"expected environment variable {name} to be set"
                )
            return default
        return got

    return _ENV.sub(sub, value)


def _read_secret(file: str, parts: list, path: str, base: Path) -> str:
    p = Path(path)
    if not p.is_absolute():
        p = base / p
    try:
        text = p.read_text().strip()
    except OSError as e:
        raise ConfigError(
            file, _path(parts), f"expected a readable file ({e.strerror}: {p})"
        ) from e
    if not text:
        raise ConfigError(file, _path(parts), f"expected a non-empty file ({p})")
    return text


def load(path: str | os.PathLike[str]) -> Config:
    file = str(path)
    try:
        text = Path(file).read_text()
    except OSError as e:
        raise ConfigError(file, "", f"expected a readable YAML file ({e.strerror})") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(file, "", f"expected valid YAML (syntax error at {where})") from e
    return from_dict({} if data is None else data, file, Path(file).resolve().parent)


def from_dict(data: Any, file: str = "(config)", base: Path | None = None) -> Config:
    base = base or Path.cwd()
    if not isinstance(data, dict):
        raise ConfigError(file, "", "expected a YAML mapping at the top level")
    data = _expand_env(data, file, [])
    errors = sorted(
        jsonschema.Draft202012Validator(SCHEMA).iter_errors(data),
        key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))),
    )
    if errors:
        e = errors[0]
        raise ConfigError(file, _path(e.absolute_path), _expected(e))
    data = _apply_defaults(SCHEMA, data)
    return _build(data, file, base)


def parse_listen(text: str, file: str) -> tuple[str, int]:
    """HOST:PORT (from the config or --listen) -> (host, port); an empty host is every interface."""
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        hint = SCHEMA["properties"]["listen"]["x-expected"]
        raise ConfigError(file, "listen", f"expected {hint}")
    if not 0 < int(port) < 65536:
        raise ConfigError(file, "listen", "expected a port between 1 and 65535")
    return host or "0.0.0.0", int(port)


def _build(d: dict[str, Any], file: str, base: Path) -> Config:
    host, port = parse_listen(d["listen"], file)

    auth = Auth()
    a = d.get("auth")
    if a is not None:
        kinds = [k for k in ("bearer_token", "bearer_token_file", "basic") if k in a]
        if len(kinds) != 1:
            raise ConfigError(
                file, "auth", "expected exactly one of bearer_token, bearer_token_file, basic"
            )
        if "bearer_token" in a:
            auth = Auth(bearer_token=a["bearer_token"])
        elif "bearer_token_file" in a:
            auth = Auth(
                bearer_token=_read_secret(
                    file, ["auth", "bearer_token_file"], a["bearer_token_file"], base
                )
            )
        else:
            b = a["basic"]
            if ("password" in b) == ("password_file" in b):
                raise ConfigError(
                    file, "auth.basic", "expected exactly one of password, password_file"
                )
            pw = b.get("password") or _read_secret(
                file, ["auth", "basic", "password_file"], b["password_file"], base
            )
            auth = Auth(username=b["username"], password=pw)

    channels: dict[str, Channel] = {}
    for name, c in d["channels"].items():
        if ("url" in c) == ("url_file" in c):
            raise ConfigError(file, f"channels.{name}", "expected exactly one of url, url_file")
        url = c.get("url") or _read_secret(
            file, ["channels", name, "url_file"], c["url_file"], base
        )
        rl = c.get("rate_limit")
        channels[name] = Channel(
            name=name,
            url=url,
            kind=c.get("kind") or channel_kind(url),
            rate_burst=rl["burst"] if rl else None,
            rate_per_s=(rl["burst"] / max(parse_duration(rl["per"]), 0.001)) if rl else None,
        )

    def known(names: list[str], parts: list) -> tuple[str, ...]:
        for i, n in enumerate(names):
            if n not in channels:
                raise ConfigError(
                    file,
                    _path([*parts, i]),
                    f"expected a channel defined under channels (no channel {n!r})",
                )
        return tuple(names)

    routes: list[Route] | None = None
    if "routes" in d:
        routes = []
        for i, r in enumerate(d["routes"]):
            rx = {}
            for label, pattern in (r.get("match_re") or {}).items():
                try:
                    rx[label] = re.compile(pattern)
                except re.error as e:
                    raise ConfigError(
                        file,
                        f"routes[{i}].match_re.{label}",
                        f"expected a valid regular expression ({e.msg})",
                    ) from e
            steps = tuple(
                sorted(
                    (
                        EscalationStep(
                            parse_duration(s["after"]),
                            known(s["channels"], ["routes", i, "escalate", j, "channels"]),
                        )
                        for j, s in enumerate(r.get("escalate") or [])
                    ),
                    key=lambda s: s.after_s,
                )
            )
            routes.append(
                Route(
                    match=dict(r.get("match") or {}),
                    match_re=rx,
                    channels=known(r["channels"], ["routes", i, "channels"]),
                    cont=r["continue"],
                    escalate=steps,
                )
            )

    store = d["store"]
    if "store_password_file" in d:
        if not store.startswith(("postgres://", "postgresql://")):
            raise ConfigError(
                file, "store_password_file", "expected only with a postgresql:// store"
            )
        pw = _read_secret(file, ["store_password_file"], d["store_password_file"], base)
        store = _with_password(store, pw)

    dl = d["delivery"]
    cfg = Config(
        source=file,
        listen_host=host,
        listen_port=port,
        external_url=d.get("external_url"),
        store=store,
        store_timeout_s=parse_duration(d["store_timeout"]),
        shutdown_grace_s=parse_duration(d["shutdown_grace"]),
        max_body_bytes=d["max_body_bytes"],
        auth=auth,
        channels=channels,
        routes=routes,
        delivery=DeliverySettings(
            workers=dl["workers"],
            batch=dl["batch"],
            timeout_s=parse_duration(dl["timeout"]),
            lease_s=parse_duration(dl["lease"]),
            poll_interval_s=parse_duration(dl["poll_interval"]),
            backoff_initial_s=parse_duration(dl["backoff_initial"]),
            backoff_max_s=parse_duration(dl["backoff_max"]),
            max_age_s=parse_duration(dl["max_age"]),
        ),
        escalation_poll_s=parse_duration(d["escalation"]["poll_interval"]),
    )
    cfg.heartbeats = _heartbeats(d.get("heartbeats") or [], file)
    return cfg


# set by the receiver on the HeartbeatMissing alert (receiver/heartbeat.py)
HEARTBEAT_OWN_LABELS = ("alertname", "heartbeat")


def _heartbeats(items: list[dict[str, Any]], file: str) -> tuple[Heartbeat, ...]:
    out: list[Heartbeat] = []
    for i, h in enumerate(items):
        if any(h["name"] == o.name for o in out):
            raise ConfigError(file, f"heartbeats[{i}].name", "expected a unique heartbeat name")
        for key in HEARTBEAT_OWN_LABELS:
            if key in h["labels"]:
                raise ConfigError(
                    file,
                    f"heartbeats[{i}].labels.{key}",
                    "expected no alertname or heartbeat label (the receiver sets them)",
                )
        period = parse_duration(h["period"])
        if period <= 0:
            raise ConfigError(file, f"heartbeats[{i}].period", "expected a duration above 0")
        out.append(
            Heartbeat(
                name=h["name"],
                match=dict(h["match"]),
                period_s=period,
                grace_s=parse_duration(h["grace"]),
                labels=dict(h["labels"]),
            )
        )
    return tuple(out)


def _with_password(dsn: str, password: str) -> str:
    # the netloc as written: libpq's multi-host lists (h1:5432,h2:5432) and [IPv6] stay intact
    parts = urlsplit(dsn)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:{quote(password, safe='')}@{hosts}").geturl()


def no_config_defaults() -> Config:
    """`run` with no --config: SQLite under ./var and a console channel for every severity."""
    return from_dict(
        {"channels": {"console": {"url": "console://"}}, "routes": [{"channels": ["console"]}]},
        "(built-in defaults)",
    )
