"""Count stage: each record's level, component and duration counted (tailpage_log_lines_total,
tailpage_request_duration_seconds), error records handed to the classify stage
(exporter/errors.py), user metrics computed; all added to the aggregate last.

Two ways in. `records`: the reference path in plain Python, for records holding every field
(the per-line path's dicts, and Structs when user metrics are configured). `chunk`: a chunk's
partial Structs, counted by the loop (exporter._tally in C, or its pure-Python twin
exporter/tally.py) for the records whose (level, component) pair is cached and whose duration is
a plain number; the rest (`odd`) one by one here, as `records` would.

Whatever can raise on a hostile record runs before the first count changes, so a batch is
counted whole or not at all: the source stage's error boundary then reads it line by line.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from exporter import fingerprint, levels
from exporter.aggregate import Aggregate, Bounded, Histograms
from exporter.classify import Facts, Match
from exporter.config import Config
from exporter.errors import UNKNOWN, ErrorClassifier
from exporter.extract import Extractor
from exporter.tally import Loop

if TYPE_CHECKING:
    from exporter._tally import CacheEntry, Error

_FLOAT_MAX = sys.float_info.max
_CACHE_MAX = 16384  # per-value caches (level names, components) are cleared when this full


@dataclass
class UserMetric:
    family: Bounded | Histograms
    match: Match | None
    cfg: dict[str, Any]


def user_metrics(config: Config, agg: Aggregate, labels_of: dict[str, tuple[str, ...]],
                 help_of: dict[str, str]) -> tuple[list[UserMetric], list[str]]:
    """The configured user metrics, and the field paths they read. Their families live in the
    aggregate, kept across reloads unless their labels or type change; their label names and
    help go to `labels_of` and `help_of` (what the exposition reads)."""
    limit = config["limits"]["max_series_per_metric"]
    out: list[UserMetric] = []
    paths: list[str] = []
    for m in config["metrics"]:
        name = m["name"]
        labels = tuple(m["labels"])
        hist = m["type"] == "histogram"
        fam = agg.user.get(name)
        if fam is None or labels_of.get(name) != labels or \
                isinstance(fam, Histograms) != hist:
            free = [i for i, k in enumerate(labels) if k != "level"]
            fam = (Histograms(name, m["buckets"], limit, free, agg.dropped) if hist
                   else Bounded(name, limit, free, agg.dropped))
            agg.user[name] = fam
        labels_of[name] = labels
        help_of[name] = m["help"]
        when = m.get("when")
        match = Match(when) if when else None
        if match:
            paths.extend(match.paths)
        label_paths = [p for k, p in m["labels"].items()
                       if not (p in ("level", "component") and k == p)]
        paths.extend(label_paths)
        if "value" in m:
            paths.append(m["value"])
        out.append(UserMetric(fam, match, m))
    return out, paths


class Counter:
    """Counts the records of one config into the aggregate (which outlives it: a reload makes
    a new Counter, with empty caches)."""

    def __init__(self, config: Config, agg: Aggregate, classifier: ErrorClassifier,
                 user: list[UserMetric], loop: Loop) -> None:
        self.agg, self.classifier, self.user, self.loop = agg, classifier, user, loop
        self.max_label = config["limits"]["max_label_length"]
        self.default_component = config["default_component"]
        self._level_cache: dict[Any, str] = {}
        self._label_cache: dict[Any, tuple[str, tuple[str]]] = {}

    def failed(self, reason: str, n: int = 1) -> None:
        """A line not counted, by reason (tailpage_exporter_parse_failures_total)."""
        self.agg.fail(reason, n)

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
        planned = self.classifier.plan(ex, error_recs, error_rows, error_durations)
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
        self.classifier.count(planned)
        for fam, key, v in user_adds:
            if isinstance(fam, Histograms):
                fam.observe(key, v)
            else:
                fam.add(key, v)

    def chunk(self, ex: Extractor, recs: list[Any], buf: bytes | memoryview, start: int,
              end: int) -> bool:
        """The records of the lines buf[start:end], decoded in one call: counted when they are
        one per line that is not blank; else False, with nothing counted (the source stage then
        reads the lines one by one)."""
        if ex.full:  # Structs of every field: counted as the per-line path counts dicts
            if len(recs) != self.loop.lines(buf, start, end, ())[0]:
                return False
            self.records(ex, recs)
            return True
        return self.records_fast(ex, recs, buf, start, end)

    def records_fast(self, ex: Extractor, recs: list[Any], buf: bytes | memoryview, start: int,
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
                                           any_dur, no_dur,
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
        planned = self.classifier.plan_lines(ex, errors, picked) if errors else []
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
        self.classifier.count(planned)
        return True

    def _record_fast(self, ex: Extractor, r: Any, i: int, errors: list[Error]
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

    def _lc_entry(self, ex: Extractor, lc: tuple[Any, Any]) -> CacheEntry:
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

    def _user(self, ex: Extractor, r: Any, level: str, comp: str, d: float | None,
              out: list[tuple[Bounded | Histograms, tuple[str, ...], float]]) -> None:
        """What the user metrics add for one record, appended to `out` (counted later)."""
        facts: Facts | None = None
        for m in self.user:
            cfg = m.cfg
            if m.match is not None:
                if facts is None:
                    facts = self.classifier.facts(ex, r, level, comp, d)
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

    def explain(self, ex: Extractor, rec: dict[str, Any], fmt: str) -> dict[str, Any]:
        """Everything decided about one record, for `tailpage-exporter explain`; counted as
        the line path counts it."""
        raw = ex.level(rec)
        level = self._level(raw, ex)
        comp = self._comp(ex.component(rec))[0]
        d = ex.duration(rec)
        out: dict[str, Any] = {"inner_format": fmt, "fields": rec, "raw_level": raw,
                               "level": level, "component": comp, "duration_seconds": d}
        if level in levels.ERROR_LEVELS:
            details: list[dict[str, Any]] = []
            self.classifier.count(
                self.classifier.plan(ex, [rec], [(level, comp, None, True)], [d]), details)
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
        self.agg.lines[level] += 1
        return out
