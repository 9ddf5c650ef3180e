"""Extract stage: which fields of a record play which role (level, component, durations;
message, error type, stack, trace id for errors), per preset and per record shape.

An Extractor holds the getters for one preset over one kind of record: a msgspec Struct of only
the fields needed (the hot path; exporter/decode.JsonShape) or a plain dict (the per-line
path, explain, and error lines decoded again in full). Extractors makes them from the config
and shares them between files of the same preset and field layout.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from exporter import decode
from exporter.classify import to_seconds
from exporter.config import Config
from exporter.presets import PRESETS, Preset

if TYPE_CHECKING:
    from exporter._tally import CacheEntry

_UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
_FLOAT_MAX = sys.float_info.max
_CACHE_MAX = 16384  # per-shape plans are cleared when this full


def seconds(v: Any, mul: float, unit: str) -> float | None:
    """A duration field's value in seconds, None when it is no duration. An integer no float
    can hold (JSON allows 4,300 digits) is none: multiplying it would raise OverflowError."""
    t = type(v)
    if t is int and not -_FLOAT_MAX <= v <= _FLOAT_MAX:
        return None
    if (t is float or t is int) and v >= 0:
        return v * mul
    return to_seconds(v, unit)


def _first_of(getters: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    if len(getters) == 1:
        return getters[0]

    def first(r: Any) -> Any:
        for g in getters:
            v = g(r)
            if v is not None:
                return v
        return None
    return first


def _dict_first(paths: list[str]) -> Callable[[dict[str, Any]], Any]:
    """The first of `paths` present in a dict record. One C-level disjointness test answers
    for the common case (none of a role's many candidate keys is there) without a lookup per
    candidate: error records are read for five roles, each with up to fifteen names."""
    getters = [(p, p.split(".", 1)[0], decode.dict_getter(p) if "." in p else None)
               for p in paths]
    keys = frozenset(k for p, head, _ in getters for k in (p, head))

    def first(d: dict[str, Any]) -> Any:
        if keys.isdisjoint(d):
            return None
        for p, head, g in getters:
            if g is None:
                v = d.get(p)
            elif p in d or head in d:
                v = g(d)
            else:
                continue
            if v is not None:
                return v
        return None
    return first


@dataclass(frozen=True)
class Fields:
    """What the extractors read from the config: the `fields` overrides, component, exemplar
    and duration fields; whether user metrics are configured (their records need every field)
    and the paths the rules and user metrics read."""

    config: dict[str, Any]
    user: bool
    extra_paths: tuple[str, ...]


class Extractors:
    """The extractors of one config, made on first use and shared by files with the same
    preset and field layout."""

    def __init__(self, config: Config, user: bool, extra_paths: list[str]) -> None:
        self.fields = Fields(config.data, user, tuple(extra_paths))
        self.durations = tuple(d["path"] for d in config["durations"])
        self._made: dict[tuple[Any, ...], Extractor] = {}

    def get(self, preset: str, struct: bool, sample: list[dict[str, Any]] | None = None,
            narrow: bool = False) -> Extractor:
        """For `struct` records, `sample` (a file's first records, as dicts) narrows the level
        and component candidates to those it uses and picks its duration field. narrow: only
        the level, component and duration fields of the sample, that duration required."""
        level = component = duration = None
        if struct and sample:
            probe = self.get(preset, False)
            level = _present(probe.level_paths, sample)
            component = _present(probe.component_paths, sample)
            durs = _present(self.durations, sample)
            duration = durs[0] if durs else None
        key = (preset, struct, level, component, duration, narrow)
        ex = self._made.get(key)
        if ex is None:
            ex = self._made[key] = Extractor(self.fields, PRESETS[preset], struct, level,
                                             component, duration, narrow)
            if struct:
                ex.whole = self.get(preset, False)
        return ex


class Extractor:
    """Getters for one preset over one record kind.

    struct=True is the hot path: a msgspec Struct with only the fields every line needs (level,
    component, durations; the level and component candidates narrowed to those seen in the
    file's first records). Error lines are then decoded again in full, as a dict, for the
    error-only fields. With user metrics the Struct carries every field they and the rules use.
    """

    def __init__(self, fields: Fields, preset: Preset, struct: bool,
                 level: tuple[str, ...] | None = None,
                 component: tuple[str, ...] | None = None,
                 duration: str | None = None, narrow: bool = False) -> None:
        cfg = fields.config
        over = cfg["fields"]
        pick = {k: list(over.get(k) or getattr(preset, k)) for k in
                ("level", "message", "error_type", "stack")}
        pick["error_message"] = list(preset.error_message)
        pick["component"] = list(over.get("component")
                                 or [*preset.component, *cfg["component_fields"]])
        pick["trace_id"] = list(over.get("trace_id") or cfg["exemplar_fields"])
        if level:
            pick["level"] = list(level)
        if component:
            pick["component"] = list(component)
        durations = [(d["path"], d["unit"]) for d in cfg["durations"]]
        if narrow:  # only `duration`, required: the others are never read when it is set
            durations = [(p, u) for p, u in durations if p == duration]
        hot = ("level", "component")
        if struct and not fields.user:
            roles = {k: v for k, v in pick.items() if k in hot}
            extra = []
        else:
            roles = pick
            extra = list(fields.extra_paths)
        paths = [p for ps in roles.values() for p in ps] + [p for p, _ in durations] + extra
        self.preset = preset
        self.full = not struct or fields.user  # has every field errors need
        # what error lines decoded again in full (as dicts) are read with: set by Extractors
        self.whole: Extractor = self
        if struct:
            self.shape: decode.JsonShape | None = decode.JsonShape(
                paths, duration if narrow else None)
            mk = self.shape.getter
        else:
            self.shape = None
            mk = decode.dict_getter
        self.get: dict[str, Callable[[Any], Any]] = {p: mk(p) for p in dict.fromkeys(paths)}
        self.level_paths = tuple(dict.fromkeys(pick["level"]))
        self.component_paths = tuple(dict.fromkeys(pick["component"]))
        if struct:
            g = {k: _first_of([self.get[p] for p in dict.fromkeys(ps)])
                 for k, ps in roles.items()}
        else:
            g = {k: _dict_first(list(dict.fromkeys(ps))) for k, ps in roles.items()}
        self.level, self.component = g["level"], g["component"]
        if self.full:
            self.roles = _roles(*(g[k] for k in _ROLES))
            if not struct:
                self.roles = _dict_roles([list(dict.fromkeys(pick[k])) for k in _ROLES],
                                         self.roles)
        self.default_level = preset.default_level
        # (raw level, raw component) -> (level, component, its key, is error); per extractor
        # since a missing level means `info` for Serilog and `unknown` elsewhere
        self.lc_cache: dict[tuple[Any, Any], CacheEntry] = {}
        # record -> the cache's key. The C loop reads it from the Struct's two slots when the
        # file names its level and component with one plain key each (found in its first
        # records): `tally_key` is then those fields, else this callable
        self.lc: Callable[[Any], tuple[Any, Any]]
        self.tally_key: Any
        lc = [(self.level_paths if level else ()), (self.component_paths if component else ())]
        if self.shape is not None and all(len(ps) == 1 and "." not in ps[0] for ps in lc):
            self.lc = attrgetter(self.shape.attr[lc[0][0]], self.shape.attr[lc[1][0]])
            self.tally_key = (self.shape.field(lc[0][0]), self.shape.field(lc[1][0]))
        else:
            g_level, g_comp = self.level, self.component
            self.lc = self.tally_key = lambda r: (g_level(r), g_comp(r))
        # the duration field this file's first records use is read first, in the C loop; the
        # configured order applies when it is absent
        self.duration_first: tuple[Any, float, str] | None = None
        self.duration_path = duration
        if duration is not None:
            unit = next(u for p, u in durations if p == duration)
            first = self.shape.field(duration) if self.shape is not None else self.get[duration]
            self.duration_first = (first, _UNIT[unit], unit)
        dur = [(self.get[p], _UNIT[u], u) for p, u in durations]
        # (getter of every duration attribute, what it returns when none is set); no getter
        # when no other duration field can be set
        self.duration_fields: tuple[Callable[[Any], Any] | None, Any] = (None, None)
        if self.shape is not None and durations and not narrow:
            attrs = list(dict.fromkeys(self.shape.attr[k] for p, _ in durations
                                       for k in ((p, p.split(".")[0]) if "." in p else (p,))))
            self.duration_fields = ((attrgetter(*attrs), (None,) * len(attrs)) if len(attrs) > 1
                                    else (attrgetter(attrs[0]), None))

        def duration(r: Any) -> float | None:
            for getter, mul, unit in dur:
                v = getter(r)
                if v is not None:
                    return seconds(v, mul, unit)
            return None
        self.duration = duration

    def roles_of(self, recs: list[Any]) -> list[Roles]:
        """Each error record's message, error message, error type, stack and trace id."""
        return list(map(self.roles, recs))


_ROLES = ("message", "error_message", "error_type", "stack", "trace_id")
Roles = tuple[Any, Any, Any, Any, Any]  # an error record's values for _ROLES


def _roles(*getters: Callable[[Any], Any]) -> Callable[[Any], Roles]:
    m, em, et, st, tr = getters
    return lambda r: (m(r), em(r), et(r), st(r), tr(r))


def _dict_roles(paths: list[list[str]], slow: Callable[[Any], Roles]) -> Callable[[Any], Roles]:
    """Roles of a dict record: records of one shape (the same keys in the same order, as a
    logger writes them) hold each role under the same candidate, so its plan (per role the
    first candidate that may be there: a key of the record, or a dotted path whose head is one;
    "" when none) fetches all five in one call, the dotted ones (pino's `err.type`) by their
    getters.
    The first candidate that may be there is the one the candidate-by-candidate getters would
    return unless it holds null: such a record, or a shape with a flat dotted key, takes them."""
    Walk = tuple[int, str, str | None, Callable[[Any], Any]]  # role, head, its one key, getter
    Plan = tuple[tuple[str, ...], int, tuple[Walk, ...]]
    plans: dict[tuple[str, ...], Plan | None] = {}

    def plan(shape: tuple[str, ...]) -> Plan | None:
        there = set(shape)
        if "" in there:
            return None
        keys: list[str] = []
        walks: list[Walk] = []
        for role, cands in enumerate(paths):
            for p in cands:
                if "." in p:
                    if p in there:  # a flat key with a dot in it: the getters decide
                        return None
                    head, *rest = p.split(".")
                    if head in there:
                        keys.append("")  # not a key: fetched below
                        walks.append((role, head, rest[0] if len(rest) == 1 else None,
                                      decode.dict_getter(p)))
                        break
                elif p in there:
                    keys.append(p)
                    break
            else:
                keys.append("")
        return tuple(keys), keys.count("") - len(walks), tuple(walks)

    def roles(r: dict[str, Any]) -> Roles:
        shape = tuple(r)
        p = plans.get(shape, False)
        if p is False:
            if len(plans) >= _CACHE_MAX:
                plans.clear()
            p = plans[shape] = plan(shape)
        if p is not None:
            keys, absent, walks = p
            if not walks:
                vals = tuple(map(r.get, keys))
                if vals.count(None) == absent:
                    return vals  # type: ignore[return-value]
                return slow(r)
            got = list(map(r.get, keys))
            for i, head, key, g in walks:
                v = r[head]
                # one level into an object, as the getter would go; anything else by the getter
                got[i] = v.get(key) if key is not None and type(v) is dict else g(r)
            if got.count(None) == absent:
                return tuple(got)  # type: ignore[return-value]
        return slow(r)
    return roles


def _present(paths: tuple[str, ...], sample: list[dict[str, Any]]) -> tuple[str, ...] | None:
    """The candidate paths found in a sample of records, in order; None (keep all) if none is:
    a file's logger names its level and component fields the same way on every line."""
    getters = [(p, decode.dict_getter(p)) for p in paths]
    found = tuple(p for p, g in getters if any(g(r) is not None for r in sample))
    return found or None
