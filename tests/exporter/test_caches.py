"""The error path's caches never change a result: normalised texts and rule masks cached under a
message's digit key (digits 2-9 as 1) equal what the uncached code computes, for any text, and a
varied error corpus gives identical metrics with caches cold, warm and switched off."""

from __future__ import annotations

import json
import random
import re

import pytest
from exporter_helpers import samples
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import classify, config, fingerprint, rule_regexes
from exporter.classify import type_from_stack
from exporter.expose import render
from exporter.fingerprint import digit_key, normalize, normalize_uncached
from exporter.pipeline import Pipeline
from exporter.rule_regexes import digit_uniform

_TO_ONE = str.maketrans("23456789", "11111111")

# what ids, addresses, tokens and stacks are made of, digits and hex letters often
_ALPHABET = st.sampled_from(
    [*"0123456789abcdefxyzABCDEFXYZ_-.:@/'\"` \n\t,;|=+()[]",
     "0x", "://", "http", "٣", "٩", "é", "\r", "\x0b", "\x1c", "\u2028", "Traceback", "    at "])
TEXT = st.lists(_ALPHABET, max_size=60).map("".join)


@settings(max_examples=1000, deadline=None)
@given(TEXT)
def test_normalize_is_blind_to_which_digit_1_to_9(text: str) -> None:
    assert normalize_uncached(text) == normalize_uncached(text.translate(_TO_ONE))
    assert normalize(text) == normalize_uncached(text)


# dense in hex ids, tokens (20+ word characters with two digits) and their neighbours
HEXY = st.lists(st.sampled_from([*"0123456789abcdefABCDEF", *"0123456789abcdef", *"gxzG_-. :@/'",
                                 "0x", "\u0663", "\u00e9", "-4", "::"]),
                max_size=90).map("".join)


@settings(max_examples=1500, deadline=None)
@given(HEXY, st.randoms(use_true_random=False))
def test_normalize_is_blind_to_a_hex_ids_letters_and_digits(text: str, rnd) -> None:
    """What the hex-id key relies on: a run of hex letters and digits (six or more, with both)
    normalises the same with its characters replaced by any others of that kind, keeping its
    length, its having two digits or one, and its having a letter."""
    def twin(m: re.Match[str]) -> str:
        run = m.group()
        digits = sum(c.isdigit() for c in run)
        if digits in (0, len(run)):
            return run
        ones = min(2, digits) if digits <= 2 else rnd.randint(2, len(run) - 1)
        chars = [rnd.choice("0123456789") for _ in range(ones)] + \
                [rnd.choice("abcdefABCDEF") for _ in range(len(run) - ones)]
        rnd.shuffle(chars)
        return "".join(chars)

    other = fingerprint._HEX_RUN.sub(twin, text)
    assert normalize_uncached(other) == normalize_uncached(text)
    assert normalize(text) == normalize_uncached(text)
    assert normalize(other) == normalize_uncached(other)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(TEXT, st.text(alphabet="0123456789abcdefABCDEFgxyz -_é٣\ud800", max_size=40)))
def test_has_hex6_finds_what_the_regex_finds(text: str) -> None:
    assert fingerprint.has_hex6(digit_key(text)) == bool(fingerprint._HEX6.search(text))


def test_hex_ids_share_a_cache_entry() -> None:
    fingerprint._cache.clear()
    assert normalize("timeout calling sku 8f3a2b1c") == "timeout calling sku <hex>"
    assert normalize("timeout calling sku 77c0e19d") == "timeout calling sku <hex>"
    assert len(fingerprint._cache) == 1
    assert normalize("timeout calling sku deface") == "timeout calling sku deface"  # a word


def test_a_hex_id_with_two_digits_can_make_a_token_and_one_digit_not() -> None:
    fingerprint._cache.clear()
    assert normalize("key ghijklmnopqrs_abcde1f") == "key ghijklmnopqrs_<hex>"
    assert normalize("key ghijklmnopqrs_abc1e1f") == "key <token>"
    assert normalize("key ghijklmnopqrs_ab9c1e1f") == "key <token>"


def test_digit_key_is_the_mapping_and_keeps_zero() -> None:
    assert digit_key("order 4812 at 0x9f") == b"order 1111 at 0x1f"
    assert digit_key("a٣b") == "a٣b".encode()  # only ASCII digits are mapped
    assert normalize("span 0x7f3a99") == "span <hex>"
    # "7x" is no hex prefix: not the "0x" result cached just before
    assert normalize("span 7x7f3a99") == normalize_uncached("span 7x7f3a99") != "span <hex>"


@pytest.mark.parametrize("pattern", [r"\d+ failed", r"[0-9]", r"[^0-9]x", r"[a-z]+\b", "0x",
                                     r"timeout after \d{1,3}ms", r"(?=\w)\W?", "."])
def test_digit_uniform_accepts(pattern: str) -> None:
    assert digit_uniform(pattern)


@pytest.mark.parametrize("pattern", ["7", r"[1-5]", r"[^3]", r"(\d)\1", r"[0-3a]",
                                     "(?P<a>x)(?(a)1)", "(unclosed"])
def test_digit_uniform_rejects(pattern: str) -> None:
    assert not digit_uniform(pattern)


RULE_PATTERNS = [r["when"]["message"] for r in config.load()["rules"] if "message" in r["when"]]


@settings(max_examples=400, deadline=None)
@given(TEXT, st.sampled_from([*RULE_PATTERNS, r"error \d+", r"\d\d\d", r"[0-9]{4}", "0x\\w+"]))
def test_a_uniform_regex_finds_the_same_in_the_digit_mapped_text(text: str, pattern: str) -> None:
    assert digit_uniform(pattern)
    rx = re.compile(pattern, re.IGNORECASE)
    assert bool(rx.search(text)) == bool(rx.search(text.translate(_TO_ONE)))


def _type_from_stack_reference(stack: str) -> str | None:
    """The implementation before it stopped building the list of non-blank lines."""
    lines = [ln for ln in stack.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    candidate = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    if len(lines) > 1 and classify._GO_FRAME.match(lines[1]):
        return None
    m = classify._EXC.match(candidate)
    if m is None:
        return None
    name = m.group(1).rsplit(".", 1)[-1]
    if name in ("at", "File", "Traceback") or len(name) < 2:
        return None
    return name


STACK_LINE = st.sampled_from(["Traceback (most recent call last):", '  File "a.py", line 3',
                              "ValueError: bad 3", "java.lang.IllegalStateException: x",
                              "    at f (a.js:1:2)", "\tmain.go:42 +0x1d", "  ", "", "Error",
                              "Caused by: x.Y: z", "SocketException (111): refused", "at"])
SEP = st.sampled_from(["\n", "\r\n", "\r", "\x0b", "\x1c", "\u2028", "\n\n", " \n"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(STACK_LINE, SEP), max_size=8), st.sampled_from(["", " ", "\n", "\t"]))
def test_type_from_stack_equals_the_reference(parts: list[tuple[str, str]], pad: str) -> None:
    stack = pad + "".join(a + b for a, b in parts) + pad
    assert type_from_stack(stack) == _type_from_stack_reference(stack)


# an exception line's name is cached by the line up to its first colon: any text after it
NAME_HEAD = st.sampled_from(["ValueError", "x.Y", "Caused by", "Caused by: a.B", "  E", "at",
                             "SocketException (111)", "Error", "a b", "", "\t$x", "Traceback"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(NAME_HEAD, TEXT), min_size=1, max_size=4), st.booleans())
def test_exception_line_cache_equals_the_reference(lines: list[tuple[str, str]],
                                                   traceback: bool) -> None:
    body = "\n".join(f"{head}{tail}" for head, tail in lines)
    stack = f"Traceback (most recent call last):\n  File \"a.py\"\n{body}" if traceback else body
    for _ in range(2):  # cold, then from the cache
        assert type_from_stack(stack) == _type_from_stack_reference(stack)


# ---- whole pipeline: cold, warm and uncached give the same metrics ------------------------

TYPES = ["DatabaseConnectionError", "TimeoutError", "PaymentDeclined", "KeyError", "Http2Error",
         "psycopg.errors.UniqueViolation", "RateLimitExceeded", "ValueError"]
TEMPLATES = ["database connection failed: host db-{n}.internal", "payment processing failed "
             "for order {n}", "timeout after {n}ms calling sku {h}", "rate limit exceeded for "
             "client {n}", "unauthorized access from 10.{n}.3.{n}", "key session_{h}{n} missing",
             "user {n}@example.com denied", "request {u} failed with code {n}",
             "token {t} rejected", "error ٣{n} in shard {n}", "out of memory at 0x{h}",
             "connection pool exhausted ({n}/{n})", "value '{n}' invalid", "plain failure"]


def _corpus(seed: int, n: int) -> bytes:
    rnd = random.Random(seed)

    def msg() -> str:
        return rnd.choice(TEMPLATES).format(
            n=rnd.choice([rnd.randint(0, 9), rnd.randint(10, 999), rnd.randint(1, 10**9)]),
            h=f"{rnd.getrandbits(rnd.choice([24, 32, 48])):x}",
            u=f"{rnd.getrandbits(32):08x}-{rnd.getrandbits(16):04x}-4{rnd.getrandbits(12):03x}-"
              f"a{rnd.getrandbits(12):03x}-{rnd.getrandbits(48):012x}",
            t="".join(rnd.choice("abcXYZ0123456789_") for _ in range(24)))

    lines = []
    for i in range(n):
        et, m, comp = rnd.choice(TYPES), msg(), rnd.choice(["api", "db", "worker-2"])
        shape = i % 3
        if shape == 0:  # flat, string level
            rec = {"level": rnd.choice(["error", "fatal", "info"]), "component": comp,
                   "message": m, "error_type": et, "duration_ms": rnd.randint(1, 9000)}
        elif shape == 1:  # pino, nested err
            rec = {"level": rnd.choice([50, 60, 30]), "time": i, "pid": 1, "hostname": "h",
                   "component": comp, "err": {"type": et, "message": m, "stack": f"{et}: {m}\n"
                                              "    at f (a.js:1:2)"},
                   "msg": rnd.choice([m, "request errored"])}
        else:  # python exc_info
            rec = {"levelname": rnd.choice(["ERROR", "CRITICAL"]), "name": comp, "message": m,
                   "exc_info": "Traceback (most recent call last):\n  File \"a.py\", line 1, "
                               f"in f\n    g()\n{et}: {m}"}
        lines.append(json.dumps(rec, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode()


def _metrics(data: list[bytes]) -> dict:
    pipe = Pipeline(config.Config(config.validate({}, "<test>")))
    for i, part in enumerate(data):
        src = pipe.open(f"app{i}.log")
        src.feed(part)
        src.flush()
    return samples(render(pipe.registry, False).decode())


def test_metrics_identical_with_caches_cold_warm_and_off(monkeypatch) -> None:
    data = [_corpus(seed, 3000) for seed in (1, 2, 3)]
    fingerprint._cache.clear()
    cold = _metrics(data)
    warm = _metrics(data)  # the normalisation cache is the module's: warm from the run before
    assert len(fingerprint._cache) > 0
    monkeypatch.setattr(fingerprint, "normalize", fingerprint.normalize_uncached)
    monkeypatch.setattr(classify, "digit_uniform", lambda _: False)  # no keyed rule masks
    off = _metrics(data)
    assert cold == warm == off
    errors = {k: v for k, v in cold.items() if k[0] == "tailpage_errors_total"}
    assert len(errors) > 50 and sum(errors.values()) > 5000  # a varied corpus, mostly errors


# ---- required literals: a text without any of them cannot match --------------------------

LITERAL_TEXT = st.lists(st.sampled_from(
    [*"abcdefgiklmnoprstuwxyzABCKOS0159 -_:.'", "payment ", "failed", "connection ", "refused",
     "OOM", "out of", "memory", "Time", "rate limit", "unauthoriSed", "csrf",
     "\u017f", "\u212a", "é"]),  # long s and Kelvin sign match s and k case-insensitively
    max_size=25).map("".join)


@settings(max_examples=500, deadline=None)
@given(LITERAL_TEXT, st.sampled_from([*RULE_PATTERNS, r"a(b|c)+d", r"(?:x|yz)\w+q", r"ab?c",
                                      r"(?-i:Payment) x", r"s[a-c]{2,}k", r"\bK\b"]))
def test_a_text_without_the_required_literals_does_not_match(text: str, pattern: str) -> None:
    lits = rule_regexes.required_literals(pattern)
    assert lits is not None
    rx = re.compile(pattern, re.IGNORECASE)
    skipped = text.isascii() and not any(x in text.lower() for x in lits)
    if skipped:
        assert not rx.search(text)
    assert rule_regexes.Searcher([(1, rx, lits)])(text) == (1 if rx.search(text) else 0)


ALL_RULES = [re.compile(p, re.IGNORECASE) for p in
             [*RULE_PATTERNS, r"a(b|c)+d", r"x*", r"(?:x|yz)\w+q", r"\bK\b"]]


@settings(max_examples=500, deadline=None)
@given(LITERAL_TEXT)
def test_a_searcher_finds_what_every_regex_finds(text: str) -> None:
    searched = [(1 << i, rx, rule_regexes.required_literals(rx.pattern))
                for i, rx in enumerate(ALL_RULES)]
    expect = sum(1 << i for i, rx in enumerate(ALL_RULES) if rx.search(text))
    assert rule_regexes.Searcher(searched)(text) == expect


# ---- roles planned per record shape equal the candidate-by-candidate getters ---------------

ROLE_PATHS = [["msg", "message"], ["err.message", "error"], ["err.type", "err.name", "type"],
              ["err.stack", "stack"], ["trace.id", "reqId"]]
_VALUES = st.one_of(st.none(), st.text(max_size=3), st.integers(0, 3),
                    st.lists(st.text(max_size=2), max_size=2))
_ERR = st.one_of(_VALUES, st.dictionaries(st.sampled_from(["type", "name", "message", "stack",
                                                           "0", "id"]), _VALUES, max_size=4))
RECORD = st.dictionaries(st.sampled_from(["msg", "message", "err", "error", "type", "stack",
                                          "reqId", "trace", "err.type", "", "level"]),
                         _ERR, max_size=7)


@settings(max_examples=1500, deadline=None)
@given(st.lists(RECORD, min_size=1, max_size=6))
def test_roles_planned_per_shape_equal_the_getters(records: list[dict]) -> None:
    from exporter import extract

    slow = extract._roles(*(extract._dict_first(ps) for ps in ROLE_PATHS))
    planned = extract._dict_roles(ROLE_PATHS, slow)
    for r in records + records:  # the second time each shape's plan is cached
        assert planned(r) == slow(r)
