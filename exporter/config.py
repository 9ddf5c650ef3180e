"""Config stage: YAML in, validated dict with every default filled, out.

exporter/config.schema.json is the one source of truth: keys, defaults and the wording of errors
come from it. `${VAR}` and `${VAR:-default}` are expanded in string values before validation.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema

class ConfigError(Exception):
    """A config problem: which file, where in it, and what was expected."""

    def __init__(self, file: str, key_path: str, expected: str) -> None:
        self.file, self.key_path, self.expected = file, key_path, expected
        super().__init__(f"{file}: {key_path}: {expected}")


@dataclass
class Config:
    data: dict[str, Any]
    file: str = "<defaults>"

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def seconds(self, section: str, key: str) -> float:
        return parse_duration(self.data[section][key])


_DUR = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """"250ms" -> 0.25, "1m30s" -> 90.0. Raises ValueError on anything else."""
    pos, total = 0, 0.0
    text = text.strip()
    for m in _DUR.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 250ms, 5s, 1m30s)")
    return total


@cache
def schema() -> dict[str, Any]:
    # a plain file beside this module (package data): importlib.resources would add ~0.5 MB of
    # modules (zipfile among them) to the sidecar for this one read
    with open(os.path.join(os.path.dirname(__file__), "config.schema.json"), encoding="utf-8") as f:
        return json.load(f)


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(node: Any, file: str, path: str) -> Any:
    if isinstance(node, str):
        def sub(m: re.Match[str]) -> str:
            val = os.environ.get(m.group(1))
            if val is None or (val == "" and m.group(2) is not None):
                if m.group(2) is None:
                    raise ConfigError(file, path or "(top)",
                                      f"environment variable {m.group(1)} to be set "
                                      f"(or write ${{{m.group(1)}:-default}})")
                return m.group(2)
            return val
        return _ENV.sub(sub, node)
    if isinstance(node, dict):
        return {k: _expand(v, file, _join(path, k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, file, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _resolve(s: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in s:
        ref = s["$ref"]
        target: Any = schema()
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        s = {**target, **{k: v for k, v in s.items() if k != "$ref"}}
    return s


def _fill(node: Any, s: dict[str, Any]) -> None:
    """Fill defaults from the schema, depth first, into dicts present (or just defaulted)."""
    s = _resolve(s)
    if isinstance(node, dict):
        for key, sub in s.get("properties", {}).items():
            sub = _resolve(sub)
            if key not in node and "default" in sub:
                node[key] = json.loads(json.dumps(sub["default"]))
            if key in node:
                _fill(node[key], sub)
    elif isinstance(node, list) and isinstance(s.get("items"), dict):
        for item in node:
            _fill(item, s["items"])


def _key_path(err: jsonschema.ValidationError) -> str:
    out = ""
    for p in err.absolute_path:
        out = f"{out}[{p}]" if isinstance(p, int) else _join(out, p)
    return out or "(top)"


def _expected(err: jsonschema.ValidationError) -> str:
    sch = err.schema if isinstance(err.schema, dict) else {}
    desc = sch.get("description")
    if err.validator == "additionalProperties":
        allowed = sorted(sch.get("properties", {}))
        return f"{err.message}; known keys: {', '.join(allowed)}"
    if err.validator in ("pattern", "type") and desc and "pattern" in sch:
        # a string with a format (a duration, HOST:PORT): its description says what is expected
        return f"{desc}, got {err.instance!r}"
    return err.message


def validate(data: Any, file: str, isolated: bool = False) -> dict[str, Any]:
    """Expand env, validate against the schema, fill defaults, then the checks JSON Schema cannot
    express (regexes compile, the listen port is in range). `isolated`: the schema check runs in a
    child process (see check_in_child)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, "(top)", f"a mapping of settings, got {type(data).__name__}")
    data = _expand(data, file, "")
    # An empty config is the embedded defaults, valid by construction (a test checks the filled
    # defaults against the schema): `oneshot` without --config skips importing jsonschema, also
    # with only a valid --format override (checked against the schema's enum here).
    if data and not (data.keys() == {"format"}
                     and data["format"] in schema()["$defs"]["format"]["enum"]):
        error = check_in_child(data, file) if isolated else schema_error(data, file)
        if error is not None:
            raise error
    _fill(data, schema())
    _check_regexes(data, file)
    _check_listen(data["listen"], file)
    return data


def schema_error(data: Any, file: str) -> ConfigError | None:
    """What is wrong with `data` according to the schema, said as specifically as it can be."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(e.absolute_path), e.message))
    if not errors:
        return None
    err = jsonschema.exceptions.best_match(errors)
    while err.context:  # anyOf/oneOf: the most specific sub-error says most
        err = jsonschema.exceptions.best_match(err.context)
    return ConfigError(file, _key_path(err), _expected(err))


def check_in_child(data: dict[str, Any], file: str) -> ConfigError | None:
    """schema_error() in a short-lived child process (`python -m exporter.config`), so that
    jsonschema and all it imports (~3.7 MB resident) never live in the long-running sidecar.
    Same verdict, same words; checked here instead when the data would not survive the trip as
    JSON (YAML dates, non-string keys) or the child cannot run."""
    try:
        doc = json.dumps(data)
        same = json.loads(doc) == data
    except (TypeError, ValueError):
        same = False
    if not same:
        return schema_error(data, file)
    import subprocess
    import sys

    try:
        r = subprocess.run([sys.executable, "-m", "exporter.config"], input=doc,
                           capture_output=True, text=True, timeout=120, check=True)
        verdict = json.loads(r.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return schema_error(data, file)
    return None if verdict is None else ConfigError(file, verdict[0], verdict[1])


def parse_listen(listen: str) -> tuple[str | None, int]:
    """"HOST:PORT", "[::1]:PORT" or ":PORT" (all interfaces); the schema's pattern holds."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or None, int(port)


def _check_listen(listen: str, file: str) -> None:
    port = parse_listen(listen)[1]
    if not 0 <= port <= 65535:
        raise ConfigError(file, "listen", f"HOST:PORT with a port from 0 to 65535, got {port}")


def _check_regexes(data: dict[str, Any], file: str) -> None:
    def check(value: str | None, path: str) -> None:
        if value is None:
            return
        try:
            re.compile(value)
        except re.error as e:
            raise ConfigError(file, path, f"a valid regular expression: {e}") from None

    check(data.get("regex"), "regex")
    if data.get("format") == "regex" and not data.get("regex"):
        raise ConfigError(file, "regex", "a regex with named groups when format is regex")
    for kind in ("rules", "metrics"):
        for i, item in enumerate(data.get(kind, [])):
            for key in ("message", "error_type", "component"):
                check(item.get("when", {}).get(key), f"{kind}[{i}].when.{key}")


def load(path: str | None = None, *, format: str | None = None, listen: str | None = None,
         paths: list[str] | None = None, checkpoint: str | None = None,
         isolated: bool = False) -> Config:
    """Load and validate a config file (or the embedded defaults when path is None), applying
    command-line overrides before validation so they are checked like the file. `isolated`: see
    validate()."""
    file = path or "<defaults>"
    data: Any = {}
    if path is not None:
        import yaml  # only with a config file: ~12 ms of `oneshot` start-up otherwise

        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except OSError as e:
            raise ConfigError(file, "(file)", f"a readable file: {e.strerror}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "(document)"
            raise ConfigError(file, where, f"valid YAML: {getattr(e, 'problem', e)}") from None
        except UnicodeDecodeError:
            raise ConfigError(file, "(file)", "UTF-8 text") from None
    if data is None:
        data = {}
    if isinstance(data, dict):
        data = dict(data)
        if format is not None:
            data["format"] = format
        if listen is not None:
            data["listen"] = listen
        if paths:
            data["inputs"] = [{"path": p} for p in paths]
        if checkpoint is not None:
            data["checkpoint"] = {**(data.get("checkpoint") or {}), "path": checkpoint}
    return Config(validate(data, file, isolated), file)


if __name__ == "__main__":  # check_in_child's child: config data in on stdin, verdict out
    import sys

    found = schema_error(json.load(sys.stdin), "")
    json.dump(None if found is None else [found.key_path, found.expected], sys.stdout)
