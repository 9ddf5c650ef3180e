"""The line path, glued: bytes of a file -> envelope -> decode -> preset -> level -> classify ->
fingerprint -> aggregate. `oneshot` and the live tailer both feed raw file bytes to a Source.

Hot path (plain JSON files, and CRI files of whole JSON messages once their prefixes are cut):
a whole chunk of complete lines is decoded by one msgspec `decode_lines` call into Structs
holding only the needed fields, which exporter._tally (C) counts; error lines are then decoded
again in full and classified by `Pipeline.classify`, the one loop every error line goes
through. Anything unusual in a chunk (a malformed line, an over-long line, a CRI partial) sends
that chunk through the per-line path, which counts and skips the bad lines and handles the rest
the same way.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import sys
import time
import traceback
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry

from exporter import decode, envelope, fingerprint, levels, tally
from exporter.aggregate import Aggregate, Bounded, Histograms
from exporter.classify import Decision, Facts, Match, Rules, to_seconds, type_from_stack
from exporter.config import Config
from exporter.expose import LineCollector
from exporter.presets import PRESETS, Preset, detect

log = logging.getLogger("exporter.pipeline")
_UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
_FLOAT_MAX = sys.float_info.max
_CACHE_MAX = 16384  # per-value caches (level names, components) are cleared when this full
_DETECT_LINES = 200  # how many lines of a file's first chunk may be tried to detect its format
_HEAD_BYTES = 256 * 1024  # format and preset detection look at most this much of a chunk
UNKNOWN = "unknown"


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


def seconds(v: Any, mul: float, unit: str) -> float | None:
    """A duration field's value in seconds, None when it is no duration. An integer no float
    can hold (JSON allows 4,300 digits) is none: multiplying it would raise OverflowError."""
    t = type(v)
    if t is int and not -_FLOAT_MAX <= v <= _FLOAT_MAX:
        return None
    if (t is float or t is int) and v >= 0:
        return v * mul
    return to_seconds(v, unit)


def _nothing(_: Any) -> None:
    return None


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


@dataclass
class UserMetric:
    family: Bounded | Histograms
    match: Match | None
    cfg: dict[str, Any]


class Extractor:
    """Getters for one preset over one record kind.

    struct=True is the hot path: a msgspec Struct with only the fields every line needs (level,
    component, durations; the level and component candidates narrowed to those seen in the
    file's first records). Error lines are then decoded again in full, as a dict, for the
    error-only fields. With user metrics the Struct carries every field they and the rules use.
    """

    def __init__(self, pipe: Pipeline, preset: Preset, struct: bool,
                 level: tuple[str, ...] | None = None,
                 component: tuple[str, ...] | None = None,
                 duration: str | None = None, narrow: bool = False) -> None:
        cfg = pipe.config.data
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
        if struct and not pipe.user:
            roles = {k: v for k, v in pick.items() if k in hot}
            extra = []
        else:
            roles = pick
            extra = [*pipe.rules.paths, *pipe.user_paths]
        paths = [p for ps in roles.values() for p in ps] + [p for p, _ in durations] + extra
        self.preset = preset
        self.full = not struct or bool(pipe.user)  # has every field errors need
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
        self.lc_cache: dict[tuple[Any, Any], tuple[str, str, tuple[str], bool]] = {}
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
        # (getter of every duration attribute, what it returns when none is set)
        self.duration_fields: tuple[Callable[[Any], Any], Any] = (_nothing, None)
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
# an error record decided, to count: (level, decision, component, error type, fingerprint,
# raw trace id, normalised message)
Planned = tuple[str, Decision, str, str, str, Any, str]


def _roles(*getters: Callable[[Any], Any]) -> Callable[[Any], Roles]:
    m, em, et, st, tr = getters
    return lambda r: (m(r), em(r), et(r), st(r), tr(r))


def _dict_roles(paths: list[list[str]], slow: Callable[[Any], Roles]) -> Callable[[Any], Roles]:
    """Roles of a dict record: records of one shape (the same keys in the same order, as a
    logger writes them) hold each role under the same candidate key, so its plan (the keys,
    "" for a role none of whose candidates is there) fetches all five in one call. A record
    with null under a planned key, or a shape where a dotted candidate is in play, takes the
    candidate-by-candidate getters."""
    plans: dict[tuple[str, ...], tuple[tuple[str, ...], int] | None] = {}

    def plan(shape: tuple[str, ...]) -> tuple[tuple[str, ...], int] | None:
        there = set(shape)
        if "" in there:
            return None
        keys = []
        for cands in paths:
            for p in cands:
                if "." in p:
                    if p in there or p.split(".")[0] in there:
                        return None
                elif p in there:
                    keys.append(p)
                    break
            else:
                keys.append("")
        return tuple(keys), keys.count("")

    def roles(r: dict[str, Any]) -> Roles:
        shape = tuple(r)
        p = plans.get(shape, False)
        if p is False:
            if len(plans) >= _CACHE_MAX:
                plans.clear()
            p = plans[shape] = plan(shape)
        if p is not None:
            vals = tuple(map(r.get, p[0]))
            if vals.count(None) == p[1]:
                return vals  # type: ignore[return-value]
        return slow(r)
    return roles


def _present(paths: tuple[str, ...], sample: list[dict[str, Any]]) -> tuple[str, ...] | None:
    """The candidate paths found in a sample of records, in order; None (keep all) if none is:
    a file's logger names its level and component fields the same way on every line."""
    getters = [(p, decode.dict_getter(p)) for p in paths]
    found = tuple(p for p, g in getters if any(g(r) is not None for r in sample))
    return found or None


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    return msgspec.json.encode(v).decode() if isinstance(v, dict | list) else str(v)


class Reporter:
    """Logs an exception the error boundary caught at most once a minute, naming the file, the
    byte offset and where the exporter raised, never the line's content (it may hold secrets,
    and so may the exception's message)."""

    EVERY = 60.0  # seconds

    def __init__(self, what: str, outcome: str) -> None:
        self.what, self.outcome = what, outcome
        self.last = -self.EVERY
        self.unreported = 0

    def report(self, path: str, offset: int, exc: Exception) -> None:
        self.unreported += 1
        now = time.monotonic()
        if now - self.last < self.EVERY:
            return
        self.last = now
        tb = traceback.extract_tb(exc.__traceback__)
        at = f"{os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else "?"
        log.error("%s: %s at byte %d raised %s (%s); %s. %d such since the last report",
                  path, self.what, offset, type(exc).__name__, at, self.outcome, self.unreported)
        self.unreported = 0


class Pipeline:
    def __init__(self, config: Config) -> None:
        limits = config["limits"]
        self.agg = Aggregate(limits["max_series_per_metric"], config["duration_buckets"])
        self.seen = fingerprint.Seen(limits["fingerprint_memory"])
        self.user_labels: dict[str, tuple[str, ...]] = {}
        self.user_help: dict[str, str] = {}
        self.collector = LineCollector(self.agg, self.user_labels, self.user_help)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.raised = Reporter("a line", "skipped; counted in "
                               'tailpage_exporter_parse_failures_total{reason="internal"}')
        self.chunk_raised = Reporter("a chunk", "read again line by line")
        self.loop = tally.loop()  # the C loop or its pure-Python twin
        self.reload(config)

    def reload(self, config: Config) -> None:
        """Swap classification config (rules, presets, fields, user metrics) keeping all counts.
        Sources opened before keep working: they rebuild their extractors on next use."""
        self.config = config
        self.max_line = config["max_line_bytes"]
        self.max_label = config["limits"]["max_label_length"]
        self.rules = Rules(config["rules"], config["fallback"])
        self.default_component = config["default_component"]
        self._setup_user_metrics(config)
        self._extractors: dict[tuple[Any, ...], Extractor] = {}
        self._level_cache: dict[Any, str] = {}
        self._label_cache: dict[Any, tuple[str, tuple[str]]] = {}
        self._fp_cache: dict[tuple[str, str, str], str] = {}
        self._norm_cache: dict[str, str] = {}
        self._etype_cache: dict[str, str] = {}
        self.generation = getattr(self, "generation", 0) + 1

    def _setup_user_metrics(self, config: Config) -> None:
        limit = config["limits"]["max_series_per_metric"]
        self.user: list[UserMetric] = []
        self.user_paths: list[str] = []
        for m in config["metrics"]:
            name = m["name"]
            labels = tuple(m["labels"])
            hist = m["type"] == "histogram"
            fam = self.agg.user.get(name)
            if fam is None or self.user_labels.get(name) != labels or \
                    isinstance(fam, Histograms) != hist:
                free = [i for i, k in enumerate(labels) if k != "level"]
                fam = (Histograms(name, m["buckets"], limit, free, self.agg.dropped) if hist
                       else Bounded(name, limit, free, self.agg.dropped))
                self.agg.user[name] = fam
            self.user_labels[name] = labels
            self.user_help[name] = m["help"]
            when = m.get("when")
            match = Match(when) if when else None
            if match:
                self.user_paths.extend(match.paths)
            paths = [p for k, p in m["labels"].items()
                     if not (p in ("level", "component") and k == p)]
            self.user_paths.extend(paths)
            if "value" in m:
                self.user_paths.append(m["value"])
            self.user.append(UserMetric(fam, match, m))

    def extractor(self, preset: str, struct: bool, sample: list[dict[str, Any]] | None = None,
                  narrow: bool = False) -> Extractor:
        """Extractors are shared by files with the same preset and field layout. narrow: only
        the level, component and duration fields of the sample, that duration required."""
        level = component = duration = None
        if struct and sample:
            probe = self.extractor(preset, False)
            level = _present(probe.level_paths, sample)
            component = _present(probe.component_paths, sample)
            durs = _present(tuple(d["path"] for d in self.config["durations"]), sample)
            duration = durs[0] if durs else None
        key = (preset, struct, level, component, duration, narrow)
        ex = self._extractors.get(key)
        if ex is None:
            ex = self._extractors[key] = Extractor(self, PRESETS[preset], struct, level,
                                                   component, duration, narrow)
        return ex

    def open(self, path: str, offset: int = 0) -> Source:
        """A Source for one file, whose first byte fed is at `offset` in the file (what the
        error boundary's log names a line by)."""
        fmt = self.config["format"]
        for inp in self.config["inputs"]:
            if "format" in inp and fnmatch.fnmatch(path, inp["path"]):
                fmt = inp["format"]
                break
        return Source(self, path, fmt, offset)

    # ---- per record -------------------------------------------------------------------------

    def _label(self, raw: Any) -> tuple[str, tuple[str]]:
        """A free-text label value made safe: ids, emails, IPs scrubbed, length capped."""
        if raw is None or raw == "":
            return self.default_component, (self.default_component,)
        if isinstance(raw, dict | list | bool):
            return self.default_component, (self.default_component,)
        v = fingerprint.scrub(str(raw), self.max_label)
        return v, (v,)

    def records(self, ex: Extractor, recs: list[Any]) -> None:
        """Count lines and durations; classify errors (records holding every field). Whatever
        can raise runs before the first count changes, so a batch is counted whole or not at
        all (the error boundary then reads it again line by line)."""
        lvl_cache = self._level_cache
        lab_cache = self._label_cache
        g_level, g_comp, g_dur = ex.level, ex.component, ex.duration
        errs = levels.ERROR_LEVELS
        user = self.user
        rows = []
        error_recs: list[Any] = []
        error_rows: list[tuple[str, str, None, bool]] = []
        error_durations: list[float | None] = []
        user_adds: list[tuple[Bounded | Histograms, tuple[str, ...], float]] = []
        for r in recs:
            raw = g_level(r)
            level = lvl_cache.get(raw) if type(raw) is str else None
            if level is None:
                level = self._level(raw, ex)
            craw = g_comp(r)
            comp = lab_cache.get(craw) if type(craw) is str else None
            if comp is None:
                comp = self._comp(craw)
            d = g_dur(r)
            rows.append((level, comp[1], d))
            if level in errs:
                error_recs.append(r)
                error_rows.append((level, comp[0], None, True))
                error_durations.append(d)
            if user:
                self._user(ex, r, level, comp[0], d, user_adds)
        planned = self.plan_errors(ex, error_recs, error_rows, error_durations)
        # counted: nothing below raises
        agg = self.agg
        counts = agg.lines
        hv = agg.durations.values
        slot = agg.durations.slot
        buckets = agg.durations.buckets
        for level, ckey, d in rows:
            counts[level] += 1
            if d is not None:
                h = hv.get(ckey) or slot(ckey)
                h[bisect_left(buckets, d)] += 1
                h[-1] += d
        self.count_errors(planned)
        for fam, key, v in user_adds:
            if isinstance(fam, Histograms):
                fam.observe(key, v)
            else:
                fam.add(key, v)

    def records_fast(self, ex: Extractor, recs: list[Any], buf: bytes, start: int,
                     end: int) -> bool:
        """The hot loop over partial Structs, one per line of buf[start:end]; False, with
        nothing counted, when they are not one per line. exporter._tally counts each record
        whose (raw level, raw component) pair is cached and whose duration is a plain number;
        the others (`odd`) are counted here one by one. Error lines are then decoded again in
        full and classified, in line order (the last one's trace id is the exemplar). As in
        `records`, nothing is counted until nothing more can raise."""
        if not ex.lc_cache:  # a new extractor: its pairs cached first, so C counts them all
            try:
                for key in set(map(ex.lc, recs)):
                    self._lc_entry(ex, key)
            except TypeError:  # a dict where a name should be: such records go the odd way
                pass
        g_d, mul, _ = ex.duration_first or (None, 1.0, "s")
        any_dur, no_dur = ex.duration_fields
        hist = self.agg.durations
        groups, odd, errors = self.loop.tally(recs, ex.tally_key, ex.lc_cache, g_d, mul,
                                           None if any_dur is _nothing else any_dur, no_dur,
                                           hist.buckets)
        wanted = [e[0] for e in errors]
        if odd:  # odd records may be errors too: their lines are picked as well
            wanted = sorted(wanted + odd)
        nlines, picked = self.loop.lines(buf, start, end, wanted)
        if nlines != len(recs):
            return False
        odd_rows = []
        if odd:
            line_at = dict(zip(wanted, picked, strict=True))
            for i in odd:
                odd_rows.append(self._record_fast(ex, recs[i], i, errors))
            errors.sort(key=itemgetter(0))
            picked = [line_at[e[0]] for e in errors]
        planned = self.errors(ex.preset.name, errors, picked) if errors else []
        # counted: nothing below raises
        counts = self.agg.lines
        hv, slot = hist.values, hist.slot
        for (level, _, ckey, _), n, bucket_counts, total in groups:
            counts[level] += n
            if bucket_counts is not None:
                h = hv.get(ckey) or slot(ckey)
                for b, c in enumerate(bucket_counts):
                    h[b] += c
                h[-1] += total
        for level, ckey, d in odd_rows:
            counts[level] += 1
            if d is not None:
                hist.observe(ckey, d)
        self.count_errors(planned)
        return True

    def _record_fast(self, ex: Extractor, r: Any, i: int,
                     errors: list[tuple[int, Any, float | None]]
                     ) -> tuple[str, tuple[str], float | None]:
        """One record exporter._tally left over: a new (level, component) pair, a duration
        that is not a plain non-negative number, or another duration field than the first.
        Its (level, component key, duration) to count; an error is added to `errors`."""
        key = ex.lc(r)
        try:
            entry = ex.lc_cache[key]
        except (KeyError, TypeError):  # new pair, or a dict/list where a name should be
            entry = self._lc_entry(ex, key)
        d = ex.duration(r)
        if entry[3]:
            errors.append((i, entry, d))
        return entry[0], entry[2], d

    def _lc_entry(self, ex: Extractor, lc: tuple[Any, Any]) -> tuple[str, str, tuple[str], bool]:
        raw, craw = lc
        level = self._level(raw, ex)
        comp, ckey = self._label(craw)
        entry = (level, comp, ckey, level in levels.ERROR_LEVELS)
        # numbers (pino/bunyan levels) are cached too, except 0 and 1, which equal False/True
        if (raw is None or type(raw) is str or (type(raw) in (int, float) and raw > 1)) \
                and (craw is None or type(craw) is str):
            if len(ex.lc_cache) >= _CACHE_MAX:
                ex.lc_cache.clear()
            ex.lc_cache[lc] = entry
        return entry

    def _level(self, raw: Any, ex: Extractor) -> str:
        if raw is None and ex.default_level:
            return ex.default_level
        level = levels.normalize(raw)
        if type(raw) is str:
            if len(self._level_cache) >= _CACHE_MAX:
                self._level_cache.clear()
            self._level_cache[raw] = level
        return level

    def _comp(self, raw: Any) -> tuple[str, tuple[str]]:
        comp = self._label(raw)
        if type(raw) is str:
            if len(self._label_cache) >= _CACHE_MAX:
                self._label_cache.clear()
            self._label_cache[raw] = comp
        return comp

    def facts(self, ex: Extractor, r: Any, level: str, comp: str, d: float | None) -> Facts:
        """What the rules look at, for explain and user metrics' `match`."""
        text, etype = self._text_type(ex.roles(r))
        getters = ex.get
        return Facts(level, text, etype, comp, d, lambda p: getters[p](r))

    def _text_type(self, roles: Roles) -> tuple[str, str]:
        """An error record's text (message, and error message if another) and error type."""
        msg, errmsg, et, stack, _ = roles
        msg = msg if type(msg) is str else _text(msg)
        text = f"{msg} {errmsg}" if isinstance(errmsg, str) and errmsg and errmsg != msg else msg
        etype = None
        if et is not None and not isinstance(et, dict | list | bool):
            etype = str(et)
        if not etype and isinstance(stack, str):
            etype = type_from_stack(stack)
        if not etype and isinstance(errmsg, str):
            etype = type_from_stack(errmsg) if ":" in errmsg.split("\n", 1)[0] else None
        if not etype:
            return text, UNKNOWN
        scrubbed = self._etype_cache.get(etype)
        if scrubbed is None:
            scrubbed = fingerprint.scrub(etype, self.max_label)
            if len(self._etype_cache) >= _CACHE_MAX:
                self._etype_cache.clear()
            self._etype_cache[etype] = scrubbed
        return text, scrubbed

    def plan_errors(self, ex: Extractor, recs: list[Any], entries: Iterable[tuple[Any, ...]],
                    durations: Iterable[float | None]) -> list[Planned]:
        """Error records, each with its (level, component label, ...) cache entry and its
        duration: decide severity and category and fingerprint each, counting nothing yet
        (`count_errors` does). Every error line of every path comes through this one loop,
        which is why it is written flat: it runs for each error line of a file."""
        getters, text_type, et_cache = ex.get, self._text_type, self._etype_cache
        decide = self.rules.decide
        need_get = bool(self.rules.fields)
        norms, fps = self._norm_cache, self._fp_cache
        out: list[Planned] = []
        for r, rs, (level, comp, _, _), d in zip(recs, ex.roles_of(recs), entries, durations,
                                                 strict=True):
            msg, errmsg, et, _, trace = rs
            if type(msg) is str and errmsg is None and type(et) is str \
                    and (etype := et_cache.get(et)) is not None:
                text = msg  # the common case, as _text_type would have it
            else:
                text, etype = text_type(rs)
            get = (lambda p, r=r: getters[p](r)) if need_get else None
            dec = decide(level, text, etype, comp, d, get)
            norm = norms.get(text)
            if norm is None:
                norm = fingerprint.normalize(text)
                if len(norms) >= _CACHE_MAX:
                    norms.clear()
                norms[text] = norm
            # keyed by the normalised message, which ids do not vary: few keys
            fkey = (norm, etype, comp)
            fp = fps.get(fkey)
            if fp is None:
                fp = fingerprint.fingerprint(norm, etype, comp)
                if len(fps) >= _CACHE_MAX:
                    fps.clear()
                fps[fkey] = fp
            out.append((level, dec, comp, etype, fp, trace, norm))
        return out

    def count_errors(self, planned: list[Planned],
                     detail: list[dict[str, Any]] | None = None) -> None:
        """Count planned error records; keep each series' last trace id as its exemplar. With
        `detail`, what was decided is appended to it per record (explain)."""
        agg = self.agg
        seen = self.seen
        errs, by_fp, new_fps, exemplars = (agg.errors, agg.by_fingerprint,
                                           agg.fingerprints_new, agg.exemplars)
        ev, bv = errs.values, by_fp.values
        now = time.time()
        for level, dec, comp, etype, fp, trace, norm in planned:
            key = (level, dec.severity, dec.category, comp, etype)
            if key in ev:
                ev[key] += 1
            else:
                key = errs.add(key)
            if (type(trace) is str and trace) or type(trace) is int:  # JSON gives exact types
                exemplars[key] = (str(trace)[:64], now)
            bkey = (fp, comp, etype)
            if bkey in bv:
                bv[bkey] += 1
            else:
                bkey = by_fp.add(bkey)
            new = seen.first_sighting(fp)
            if new:
                new_fps.add((dec.severity, dec.category, comp))
            if detail is not None:
                detail.append({"error_type": etype, "decision": dec, "normalized": norm,
                               "fingerprint": fp, "error_labels": key,
                               "fingerprint_labels": bkey, "new": new, "trace_id": trace})

    def errors(self, preset: str, errors: list[tuple[int, Any, float | None]],
               lines: list[bytes]) -> list[Planned]:
        """The error lines of a fast chunk, in line order, decoded in one call and planned."""
        recs = decode.JSON.decode_lines(b"\n".join(lines))
        return self.plan_errors(self.extractor(preset, False), recs, map(itemgetter(1), errors),
                                map(itemgetter(2), errors))

    def _user(self, ex: Extractor, r: Any, level: str, comp: str, d: float | None,
              out: list[tuple[Bounded | Histograms, tuple[str, ...], float]]) -> None:
        """What the user metrics add for one record, appended to `out` (counted later)."""
        facts: Facts | None = None
        for m in self.user:
            cfg = m.cfg
            if m.match is not None:
                if facts is None:
                    facts = self.facts(ex, r, level, comp, d)
                if not m.match(facts):
                    continue
            labels = []
            for lname, path in cfg["labels"].items():
                if path == "level" and lname == "level":
                    labels.append(level)
                elif path == "component" and lname == "component":
                    labels.append(comp)
                else:
                    v = ex.get[path](r)
                    labels.append(UNKNOWN if v is None or isinstance(v, dict | list)
                                  else fingerprint.scrub(str(v), self.max_label))
            key = tuple(labels)
            if "value" in cfg:
                v = ex.get[cfg["value"]](r)
                if isinstance(v, str):
                    try:
                        v = float(v)
                    except ValueError:
                        continue
                if not isinstance(v, int | float) or isinstance(v, bool) or v != v \
                        or not -_FLOAT_MAX <= v <= _FLOAT_MAX:  # no float holds it
                    continue
                v = v * cfg["scale"]
            else:
                v = cfg["scale"]
            out.append((m.family, key, v))

    def failed(self, reason: str, n: int = 1) -> None:
        self.agg.fail(reason, n)

    def line_raised(self, path: str, offset: int, exc: Exception) -> None:
        """The error boundary: a line the line path raised on is counted and skipped."""
        self.agg.fail("internal")
        self.raised.report(path, offset, exc)

    # ---- explain ----------------------------------------------------------------------------

    def explain(self, line: bytes, fmt: str | None = None) -> dict[str, Any]:
        """Everything the pipeline decides about one line, for `tailpage-exporter explain`.
        Runs the real path on a throwaway Pipeline so the caller's counts are untouched."""
        probe = Pipeline(self.config)
        src = probe.open("<explain>")
        if fmt:
            src.fmt = fmt
        src.trace = []
        src.feed(line.rstrip(b"\n") + b"\n")
        src.flush()
        out: dict[str, Any] = {"format": src.fmt, "preset": src.preset}
        if not src.trace:
            out["parse_failure"] = next(iter(probe.agg.failures), "empty")
            return out
        rec = src.trace[-1]
        out.update(rec)
        return out


def _short_lines(buf: bytes, start: int, end: int, maxlen: int) -> bool:
    """No line of buf[start:end] is longer than maxlen. A longer line would cover a whole
    aligned block of maxlen/2 bytes, so one find per block rules it out; only a block without a
    newline needs the exact per-line check."""
    if end - start <= maxlen + 1:
        return True
    step = max(1, maxlen // 2)
    for pos in range(start, end, step):
        if buf.find(b"\n", pos, min(pos + step, end)) < 0:
            break
    else:
        return True
    prev = start
    while (j := buf.find(b"\n", prev, end)) >= 0:
        if j - prev > maxlen:
            return False
        prev = j + 1
    return True


class Source:
    """One file's state: format, preset, the unterminated tail, the partials being joined."""

    def __init__(self, pipe: Pipeline, path: str, fmt: str, offset: int = 0) -> None:
        self.pipe = pipe
        self.path = path
        self.offset = offset  # in the file, of the next byte fed
        self.fmt: str | None = None if fmt == "auto" else fmt
        self.inner: str | None = None  # format inside a CRI/docker envelope ("auto" per message)
        cfg_preset = pipe.config["preset"]
        self.preset: str | None = None if cfg_preset == "auto" else cfg_preset
        self.buf = b""
        self.skipping = 0  # bytes of an over-long line being discarded (0: not discarding)
        self.joiner = envelope.Joiner(pipe.max_line)
        self.trace: list[dict[str, Any]] | None = None  # explain collects per-record details
        self._gen = 0
        self._fast: Extractor | None = None
        self._narrow: Extractor | None = None
        self._slow: Extractor | None = None
        self._regex: Callable[[bytes], dict[str, Any]] | None = None

    @property
    def pending(self) -> int:
        return len(self.buf) + self.skipping + self.joiner.pending

    def feed(self, data: bytes) -> None:
        if not data:
            return
        maxlen = self.pipe.max_line
        at = self.offset  # of data[0] in the file
        self.offset += len(data)
        if self.skipping:
            i = data.find(b"\n")
            if i < 0:
                self.skipping += len(data)
                return
            data = data[i + 1:]
            at += i + 1
            self.skipping = 0
        start = 0
        if self.buf:  # the held-back line completed by data's first line: a chunk of its own
            i = data.find(b"\n")
            if i < 0:
                self.buf += data
                self._check_tail(maxlen)
                return
            head, self.buf = self.buf + data[:i + 1], b""
            self._chunk(head, 0, len(head), at - len(head) + i + 1)
            start = i + 1
        j = data.rfind(b"\n", start)
        if j < 0:
            self.buf = data[start:]
            self._check_tail(maxlen)
            return
        self.buf = data[j + 1:]
        self._check_tail(maxlen)
        self._chunk(data, start, j + 1, at)

    def _check_tail(self, maxlen: int) -> None:
        if len(self.buf) > maxlen:  # no newline within the cap: discard until the next one
            self.pipe.failed("too_long")
            self.skipping = len(self.buf)
            self.buf = b""

    def flush(self) -> None:
        """Held-back bytes are complete lines (EOF in oneshot, flush timeout live)."""
        self.skipping = 0
        if self.buf:
            buf, self.buf = self.buf + b"\n", b""
            self._chunk(buf, 0, len(buf), self.offset - len(buf) + 1)
        for msg in self.joiner.flush():
            try:
                self._message(msg)
            except Exception as e:  # the error boundary, as in _chunk
                self.pipe.line_raised(self.path, self.offset, e)

    # ---- chunks of complete lines -----------------------------------------------------------

    def _refresh(self) -> None:
        if self._gen != self.pipe.generation:
            self._gen = self.pipe.generation
            self._fast = self._slow = self._narrow = None
            regex = self.pipe.config["regex"]
            self._regex = decode.regex_decoder(regex) if regex else None

    def _chunk(self, buf: bytes, start: int, end: int, at: int) -> None:
        """Complete lines buf[start:end] (ending in a newline), decoded without copying them;
        buf[0] is at byte `at` of the file.

        The error boundary: nothing a line holds may stop the exporter. A chunk whose fast
        path raises (having counted nothing: the count stage counts last) is read again line by
        line; a line that raises there too is counted as reason="internal" and skipped."""
        try:
            if self._fast_chunk(buf, start, end):
                return
        except Exception as e:
            self.pipe.chunk_raised.report(self.path, at + start, e)
        pos = at + start
        for line in buf[start:end].split(b"\n")[:-1]:
            try:
                self._line(line)
            except Exception as e:
                self.pipe.line_raised(self.path, pos, e)
            pos += len(line) + 1

    def _fast_chunk(self, buf: bytes, start: int, end: int) -> bool:
        """The chunk counted whole by a fast path; False when it must be read line by line."""
        self._refresh()
        if self.fmt is None:
            self._detect(buf[start:min(end, start + _HEAD_BYTES)])
        fast = {"json": self._json_lines, "cri": self._cri_lines}.get(self.fmt or "")
        return bool(fast) and self.trace is None \
            and _short_lines(buf, start, end, self.pipe.max_line) and fast(buf, start, end)

    def _json_lines(self, buf: bytes, start: int, end: int, records: int | None = None) -> bool:
        """The fast path: JSON lines decoded as one call into partial Structs. False, with
        nothing counted, when some line is bad or blank (the per-line path then counts and skips
        it), or when `records` is given and is not the number of records."""
        ex = self._fast or self._json_extractor(buf[start:min(end, start + _HEAD_BYTES)], True)
        view = buf if start == 0 and end == len(buf) else memoryview(buf)[start:end]
        recs = None
        if self._narrow is not None:
            try:
                recs = self._narrow.shape.decoder.decode_lines(view)  # type: ignore[union-attr]
                ex = self._narrow
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                pass
        if recs is None:
            try:
                recs = ex.shape.decoder.decode_lines(view)  # type: ignore[union-attr]
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                return False  # a bad line, not a missing duration: the narrow Struct stays
            self._narrow = None
        # msgspec skips the fields it does not read without checking their UTF-8:
        # checked here (free for ASCII) so a bad line counts as the per-line path does
        if (records is not None and len(recs) != records) or not (
                buf.isascii() or decode.valid_utf8(view)):
            return False
        # one record per line: msgspec also skips blank lines and reads two objects on one
        # line, which the per-line path counts as invalid; it keeps error lines findable too
        if ex.full:
            if len(recs) != self.pipe.loop.lines(buf, start, end, ())[0]:
                return False
            self.pipe.records(ex, recs)
            return True
        return self.pipe.records_fast(ex, recs, buf, start, end)

    def _cri_lines(self, buf: bytes, start: int, end: int) -> bool:
        """CRI lines that are all whole (F) messages, with no partial of either stream pending:
        the prefixes are cut from the whole chunk in one C call (exporter._tally.cut_cri) and
        the messages take the JSON fast path, instead of unwrapping, sniffing and decoding to a
        dict line by line. The number of prefixes cut must equal the number of records, which
        must equal the number of lines, so any line that is not such an F line (a P chunk,
        garbage, a non-JSON message) sends the chunk to the per-line path."""
        if self.inner not in (None, "json") or self.joiner.parts or self.joiner.overflow:
            return False
        body, cut = self.pipe.loop.cut_cri(memoryview(buf)[start:end])
        return cut > 0 and self._json_lines(body, 1, len(body), cut)

    def _detect(self, chunk: bytes) -> None:
        maxlen = self.pipe.max_line
        for line in chunk.split(b"\n", _DETECT_LINES)[:_DETECT_LINES]:
            line = line.strip()
            if not line or len(line) > maxlen:  # over-long lines are skipped, never detected
                continue
            if envelope.looks_cri(line):
                self.fmt = "cri"
            elif envelope.looks_docker(line):
                self.fmt = "docker"
            elif line.startswith(b"{"):
                self.fmt = "json"
            elif self._regex is not None and decode.matches(self._regex, line):
                self.fmt = "regex"
            elif decode.looks_logfmt(line):
                self.fmt = "logfmt"
            else:
                self.fmt = "text" if self._regex is None else "regex"
            return

    def _json_extractor(self, chunk: bytes, struct: bool) -> Extractor:
        """Detect the preset (unless configured) and which level/component fields this file
        uses, from its first decodable records."""
        sample = []
        for line in chunk.split(b"\n", _DETECT_LINES)[:_DETECT_LINES]:
            try:
                sample.append(decode.json_dict(line))
            except decode.DecodeFailure:
                continue
        if self.preset is None and sample:
            self.preset = detect(sample[0])
        preset = self.preset or "generic"
        if not struct:
            self._slow = self.pipe.extractor(preset, False)
            return self._slow
        self._fast = self.pipe.extractor(preset, True, sample)
        # the file's duration field in every line (as in genlog's, or any request log): a
        # Struct of only the fields read decodes ~30% faster; the first line without it sends
        # its chunk, and the file's later ones, back to the full Struct
        first = self._fast.duration_path
        self._narrow = None
        if first is not None and "." not in first and not self.pipe.user:
            self._narrow = self.pipe.extractor(preset, True, sample, narrow=True)
        return self._fast

    def _line(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            return
        if len(line) > self.pipe.max_line:
            self.pipe.failed("too_long")
            return
        fmt = self.fmt
        if fmt == "cri" or fmt == "docker":
            try:
                stream, msg, final = (envelope.unwrap_cri(line) if fmt == "cri"
                                      else envelope.unwrap_docker(line))
                whole = self.joiner.add(stream, msg, final, len(line) + 1)
            except envelope.BadEnvelope:
                self.pipe.failed("invalid_envelope")
                return
            except envelope.TooLong:
                self.pipe.failed("too_long")
                return
            if whole is not None:
                self._message(whole)
            return
        self._message(line, fmt)

    def _message(self, msg: bytes, fmt: str | None = None) -> None:
        """One whole message (envelope removed) through decode and the record path."""
        if fmt is None or fmt in ("cri", "docker", "auto"):
            fmt = self.inner or self._sniff(msg)
        try:
            if fmt == "json":
                ex = self._slow or self._json_extractor(msg, False)
                rec: Any = decode.json_dict(msg)
            else:
                ex = self._slow_dict()
                if fmt == "logfmt":
                    rec = decode.logfmt(msg)
                elif fmt == "regex" and self._regex is not None:
                    rec = self._regex(msg)
                else:
                    rec = decode.text_record(msg)
        except decode.DecodeFailure as e:
            self.pipe.failed(e.reason)
            return
        if self.trace is not None:
            self._explain(ex, rec, fmt)
        else:
            self.pipe.records(ex, [rec])

    def _slow_dict(self) -> Extractor:
        return self.pipe.extractor("generic", False)

    def _sniff(self, msg: bytes) -> str:
        s = msg.lstrip()
        if s.startswith(b"{"):
            return "json"
        if self._regex is not None and decode.matches(self._regex, s):
            return "regex"
        if decode.looks_logfmt(s):
            return "logfmt"
        return "text" if self._regex is None else "regex"

    def _explain(self, ex: Extractor, rec: dict[str, Any], fmt: str) -> None:
        pipe = self.pipe
        raw = ex.level(rec)
        level = pipe._level(raw, ex)
        comp = pipe._comp(ex.component(rec))[0]
        d = ex.duration(rec)
        out: dict[str, Any] = {"inner_format": fmt, "fields": rec, "raw_level": raw,
                               "level": level, "component": comp, "duration_seconds": d}
        if level in levels.ERROR_LEVELS:
            details: list[dict[str, Any]] = []
            pipe.count_errors(pipe.plan_errors(ex, [rec], [(level, comp, None, True)], [d]),
                              details)
            res = details[0]
            dec = res["decision"]
            out.update(error_type=res["error_type"], severity=dec.severity,
                       category=dec.category, severity_rule=dec.rule,
                       category_rule=dec.category_rule, normalized_message=res["normalized"],
                       fingerprint=res["fingerprint"], exemplar_trace_id=res["trace_id"],
                       labels={"tailpage_errors_total": dict(zip(
                           ("level", "severity", "category", "component", "error_type"),
                           res["error_labels"], strict=True)),
                           "tailpage_errors_by_fingerprint_total": dict(zip(
                               ("fingerprint", "component", "error_type"),
                               res["fingerprint_labels"], strict=True))})
        else:
            out["labels"] = {"tailpage_log_lines_total": {"level": level}}
            if d is not None:
                out["labels"]["tailpage_request_duration_seconds"] = {"component": comp}
        pipe.agg.lines[level] += 1
        self.trace.append(out)  # type: ignore[union-attr]
