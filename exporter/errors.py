"""Classify stage, for error records: their text and error type (from the roles the extract
stage found), the rules' severity and category (exporter/classify.Rules), their fingerprint
(exporter/fingerprint); then counted into the aggregate, with the trace id kept as exemplar.

In two steps, so that nothing is counted until nothing more can raise: `plan` decides (and may
raise on a hostile record), `count` only adds to the aggregate's dicts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import msgspec

from exporter import decode, fingerprint
from exporter.aggregate import Aggregate
from exporter.classify import Decision, Facts, Rules, type_from_stack
from exporter.extract import Extractor, Roles

if TYPE_CHECKING:
    from exporter._tally import Error

UNKNOWN = "unknown"
_CACHE_MAX = 16384  # per-value caches (fingerprints, error types) cleared when full
# an error record decided, to count: (level, decision, component, error type, fingerprint,
# raw trace id, normalised message)
Planned = tuple[str, Decision, str, str, str, Any, str]


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if not isinstance(v, dict | list):
        return str(v)
    try:
        return msgspec.json.encode(v).decode()
    except RecursionError:  # nested just under the decoder's limit: decoded, too deep to encode
        return "<nested too deep>"


class ErrorClassifier:
    """Decides and counts error records for one config (rules, label length); its caches go
    with it on reload, the aggregate and the fingerprint memory stay."""

    def __init__(self, rules: Rules, max_label: int, agg: Aggregate,
                 seen: fingerprint.Seen) -> None:
        self.rules, self.max_label, self.agg, self.seen = rules, max_label, agg, seen
        self._fp_cache: dict[tuple[str, str, str], str] = {}
        self._memo: dict[tuple[Any, str, str, str], tuple[int, str, str]] = {}
        self._etype_cache: dict[str, str] = {}

    def plan(self, ex: Extractor, recs: list[Any], entries: Iterable[tuple[Any, ...]],
             durations: Iterable[float | None]) -> list[Planned]:
        """Error records, each with its (level, component label, ...) cache entry and its
        duration: decide severity and category and fingerprint each, counting nothing yet
        (`count` does). Every error line of every path comes through this one loop,
        which is why it is written flat: it runs for each error line of a file."""
        getters, text_type, et_cache = ex.get, self.text_type, self._etype_cache
        rules = self.rules
        premask, finish = rules.premask, rules.finish
        need_get = bool(rules.fields)
        normalize, fps, memo = fingerprint.normalize, self._fp_cache, self._memo
        # what depends on the message only through its digit key (the rules' premask when
        # they allow it, the normalised text, the fingerprint) is memoised under that key
        digit_key = fingerprint.digit_key if rules.by_digit_key else str
        out: list[Planned] = []
        for r, rs, (level, comp, _, _), d in zip(recs, ex.roles_of(recs), entries, durations,
                                                 strict=True):
            msg, errmsg, et, stack, trace = rs
            if type(msg) is str and type(et) is str and (etype := et_cache.get(et)) is not None \
                    and (errmsg is None or type(errmsg) is str):
                # the common cases (pino's err.message too), as text_type would have them
                text = f"{msg} {errmsg}" if errmsg and errmsg != msg else msg
            elif et is None and errmsg is None and type(msg) is str and type(stack) is str and (
                    (etype := type_from_stack(stack)) is None  # type: ignore[assignment]
                    or (etype := et_cache.get(etype)) is not None):
                # the type only in a traceback (python-json-logger's exc_info)
                text, etype = msg, etype or UNKNOWN
            else:
                text, etype = text_type(rs)
            mkey = (digit_key(text), etype, comp, level)
            known = memo.get(mkey)
            if known is None:
                m = premask(level, text, etype, comp)
                norm = normalize(text)  # cached under the text's digit key: ids vary
                # keyed by the normalised message, which ids do not vary: few keys
                fkey = (norm, etype, comp)
                fp = fps.get(fkey)
                if fp is None:
                    fp = fingerprint.fingerprint(norm, etype, comp)
                    if len(fps) >= _CACHE_MAX:
                        fps.clear()
                    fps[fkey] = fp
                if len(memo) >= _CACHE_MAX:
                    memo.clear()
                known = memo[mkey] = (m, norm, fp)
            m, norm, fp = known
            get = (lambda p, r=r: getters[p](r)) if need_get else None
            out.append((level, finish(m, level, d, get), comp, etype, fp, trace, norm))
        return out

    def count(self, planned: list[Planned], detail: list[dict[str, Any]] | None = None) -> None:
        """Count planned error records; keep each series' last trace id as its exemplar. With
        `detail`, what was decided is appended to it per record (explain)."""
        agg, seen = self.agg, self.seen
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

    def plan_lines(self, ex: Extractor, errors: list[Error], lines: list[bytes]) -> list[Planned]:
        """The error lines of a fast chunk, in line order, with their records' (index, cache
        entry, duration) from the loop: decoded again in full, in one call, and planned."""
        recs = decode.JSON.decode_lines(b"\n".join(lines))
        return self.plan(ex.whole, recs, map(itemgetter(1), errors), map(itemgetter(2), errors))

    def facts(self, ex: Extractor, r: Any, level: str, comp: str, d: float | None) -> Facts:
        """What the rules look at, for explain and user metrics' `match`."""
        text, etype = self.text_type(ex.roles(r))
        getters = ex.get
        return Facts(level, text, etype, comp, d, lambda p: getters[p](r))

    def text_type(self, roles: Roles) -> tuple[str, str]:
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
