"""Rules evaluate digit-blind message regexes once per message with its digit runs collapsed
(exporter.classify.digit_blind). Property: for every regex judged blind, searching the message
and searching the collapsed message agree, and the Rules decisions equal a plain search of
every rule on the raw message."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import config
from exporter.classify import Rules, digit_blind

PATTERNS = [
    r"order \w+ failed", r"\bOOM\b", r"rate limit(ed)? exceeded", r"[a-z]+ \d+", r"^invalid ",
    r"x$", r"(?<!a)b", r"b(?!c)", r"[^a]b", r"a\Bb", r"\W+err", r"\D{2}", r"[!-/]x", r"[ -~]{3}",
    r"a.b", r"(?:ab|c)+d", r"\bv\b", r"port \S+", r"(?i)Db-", r"(?a)\W\w", r"\w{4}", r"x\w{2}",
    *[r["when"]["message"] for r in config.schema()["properties"]["rules"]["default"]
      if "message" in r["when"]],
]
TOKENS = ["x", "a", "b", "c", "v", "d", "12", "0", "7", "\u0660", " ", "-", "!", "_", "OOM", "Db",
          "err", "port", "order", "invalid", "exceeded", "rate limit"]
texts = st.lists(st.sampled_from(TOKENS), max_size=12).map("".join) | st.sampled_from([
    "database connection failed: host db-12.internal port 5432",
    "rate limit exceeded for client 403", "upstream timeout after 5000ms", "OOM 9 OOM9"])


def collapse(s: str) -> str:
    return re.sub(r"[0-9]+", "0", s)


def test_the_shipped_message_rules_are_all_blind() -> None:
    rules = config.schema()["properties"]["rules"]["default"]
    assert all(digit_blind(r["when"]["message"]) for r in rules if "message" in r["when"])
    assert not digit_blind(r"\d+") and not digit_blind(r"order 9") and not digit_blind("x?")


BLIND = [re.compile(p, re.IGNORECASE) for p in PATTERNS if digit_blind(p)]


@settings(max_examples=300, deadline=None, database=None)
@given(text=texts)
def test_blind_regexes_agree_on_collapsed_messages(text: str) -> None:
    for rx in BLIND:
        assert bool(rx.search(text)) == bool(rx.search(collapse(text))), rx.pattern


@settings(max_examples=200, deadline=None, database=None)
@given(msgs=st.lists(texts, min_size=1, max_size=8))
def test_rules_decide_as_a_plain_search_would(msgs: list[str]) -> None:
    spec = [{"name": f"r{i}", "when": {"message": p}, "severity": "high", "category": f"c{i}"}
            for i, p in enumerate(PATTERNS)]
    rules = Rules(spec, {"fatal": "critical", "error": "low", "category": "application"})
    for text in msgs:
        dec = rules.decide("error", text, "unknown", "api", None, None)
        first = next((i for i, p in enumerate(PATTERNS)
                      if re.compile(p, re.IGNORECASE).search(text)), None)
        assert dec.rule == ("fallback" if first is None else f"r{first}")
