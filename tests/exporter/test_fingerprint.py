"""Fingerprints: normalisation placeholders, stability across ids, first-sighting memory bounded,
and no personal data in label values (unit level and through the whole pipeline)."""

from __future__ import annotations

import json
import tracemalloc
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import config
from exporter.expose import render
from exporter.fingerprint import Seen, fingerprint, normalize, scrub
from exporter.pipeline import Pipeline


def test_normalize_placeholders() -> None:
    msg = ("user bob.smith+x@example.co.uk from 10.0.12.3:8080 and fe80::1ff:fe23:4567:890a "
           "req 550e8400-e29b-41d4-a716-446655440000 key 'abc' name \"Bob\" see "
           "https://x.example/a?b=1 span 0x7f3a99 id 5f2b8c9d01e4 took 523ms order 42")
    assert normalize(msg) == (
        "user <email> from <ip> and <ip> req <uuid> key <str> name <str> see <url> "
        "span <hex> id <hex> took <n>ms order <n>")


def test_normalize_keeps_words_and_collapses_space() -> None:
    assert normalize("  connection   refused\n by  peer ") == "connection refused by peer"
    assert normalize("deface the facade") == "deface the facade"  # hex-looking words, no digit


def test_normalize_reads_only_the_head_of_huge_messages() -> None:
    huge = "boom " + "x" * 100_000
    assert len(normalize(huge)) <= 512


def test_fingerprint_stable_across_ids() -> None:
    def fp(msg: str) -> str:
        return fingerprint(normalize(msg), "PaymentDeclined", "payments")

    a = fp(f"payment failed for order 123 user alice@example.com req {uuid.uuid4()}")
    b = fp(f"payment failed for order 98765 user bob@example.org req {uuid.uuid4()}")
    assert a == b
    assert len(a) == 12 and int(a, 16) >= 0
    assert fp("refund failed for order 1") != a
    assert fingerprint(normalize("payment failed for order 1"), "Other", "payments") != \
        fingerprint(normalize("payment failed for order 1"), "PaymentDeclined", "payments")
    assert fingerprint("x", "T", "api") != fingerprint("x", "T", "web")


def test_fingerprint_is_stable_across_processes_and_versions() -> None:
    # a keyed hash, not hash(): the same error keeps its id after a restart or an upgrade, so
    # dashboards and "new error" alerts do not see every error as new
    assert fingerprint("payment failed for order <n>", "PaymentDeclined", "payments") == \
        "223c8246d1c9"


def test_seen_counts_first_sighting_once() -> None:
    s = Seen(3)
    assert [s.first_sighting(x) for x in "abab"] == [True, True, False, False]


def test_seen_is_bounded_and_evicts_least_recently_seen() -> None:
    s = Seen(3)
    for x in "abc":
        s.first_sighting(x)
    s.first_sighting("a")  # refresh a
    assert s.first_sighting("d") is True  # evicts b
    assert len(s) == 3
    assert s.first_sighting("a") is False
    assert s.first_sighting("b") is True  # forgotten, so new again


def test_seen_memory_does_not_grow_past_capacity() -> None:
    s = Seen(1000)
    tracemalloc.start()
    try:
        for i in range(2000):
            s.first_sighting(f"{i:012x}")
        after_fill, _ = tracemalloc.get_traced_memory()
        for i in range(2000, 50_000):
            s.first_sighting(f"{i:012x}")
        after_flood, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(s) == 1000
    assert after_flood - after_fill < 64 * 1024


def test_scrub_removes_personal_data() -> None:
    v = scrub("bob@example.com 10.1.2.3 550e8400-e29b-41d4-a716-446655440000 "
              "a1b2c3d4e5f6a7b8 1234567 ECONNREFUSED db-3", 200)
    for bad in ("bob", "example.com", "10.1.2.3", "550e8400", "a1b2c3d4e5f6a7b8", "1234567"):
        assert bad not in v
    assert "ECONNREFUSED" in v and "db-3" in v


def test_tokens_become_placeholders_but_class_names_stay() -> None:
    key = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV"
    assert scrub(f"BadKey {key}", 64) == "BadKey_<token>"
    assert normalize(f"invalid api key {key}") == "invalid api key <token>"
    assert normalize(f"bad jwt {jwt}") == "bad jwt <token>.<token>.<token>"
    assert fingerprint(normalize(f"invalid api key {key}"), "E", "c") == \
        fingerprint(normalize("invalid api key pk_test_9zX81abcDEFghiJKL0mnop2Q"), "E", "c")
    assert scrub("Http2ConnectionException", 64) == "Http2ConnectionException"
    assert scrub("io.grpc.StatusRuntimeException", 64) == "io.grpc.StatusRuntimeException"


def test_scrub_drops_a_fragment_cut_at_the_length_cap() -> None:
    # an email split by the cut is no longer an email to the pattern: it must not survive
    for pad in range(100, 140):
        v = scrub("<email>" * (pad // 7) + " alice.wonder@example.com", 64)
        assert "alice" not in v and "wonder" not in v


def test_scrub_caps_length_and_never_empty() -> None:
    assert len(scrub("x" * 500, 64)) == 64
    assert scrub("   ", 64) == "unknown"


emails = st.from_regex(r"[a-z]{3,8}\.[a-z]{2,6}@[a-z]{3,8}\.(com|org|io)", fullmatch=True)
ips = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(categories=("L", "N", "P", "Zs")), max_size=40),
       emails, ips)
def test_scrub_never_leaks_emails_or_ips(text: str, email: str, ip: str) -> None:
    v = scrub(f"{text} {email} {text} {ip}", 64)
    assert email not in v
    assert ip not in v


def test_no_personal_data_in_any_label_value(tmp_path) -> None:
    """Emails, IPs, user ids and tokens in component, error type, messages and user-metric labels
    never reach the exposition."""
    cfg = config.validate({"metrics": [{"name": "logins_total", "type": "counter",
                                        "labels": {"who": "user"}}]}, "<test>")
    pipe = Pipeline(config.Config(cfg))
    src = pipe.open("app.log")
    secrets = []
    for i in range(50):
        email = f"person{i}.name@corp{i}.example"
        ip = f"172.16.{i}.{i + 1}"
        token = f"{uuid.uuid4()}"
        uid = f"{9_000_000 + i}"
        secrets += [email, ip, token, uid]
        rec = {"level": "error", "message": f"login failed for {email} from {ip} token {token}",
               "error_type": f"AuthError {email}", "component": f"auth@{ip}",
               "user": f"{email}/{uid}", "trace_id": f"t{i}"}
        src.feed(json.dumps(rec).encode() + b"\n")
    src.flush()
    text = render(pipe.registry, False).decode()
    assert "tailpage_errors_total{" in text and "logins_total{" in text
    for s in secrets:
        assert s not in text, s
