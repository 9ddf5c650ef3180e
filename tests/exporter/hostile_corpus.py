"""A corpus of hostile log input, generated (no multi-MB files committed): each case is bytes
some application or attacker could write into a followed file, with what the exporter must make
of it. Used by test_hostile.py (oneshot per case, and one live `run` fed the whole corpus).

Every file the tests build is good lines, the case, good lines, in the case's format. The good
lines carry component "goodline" (no case uses it) and a duration, so
`tailpage_request_duration_seconds_count{component="goodline"}` counts them exactly whatever
the hostile bytes turn into; the good error lines are `tailpage_errors_total` series with
component "goodline".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MIB = 1 << 20
BIG = "1" + "0" * 399  # a 400-digit integer: no float holds it
TIME = "2026-11-23T12:40:21.123456789Z"
GOOD_COMPONENT = "goodline"
GOOD = [
    {"level": "warn", "msg": "good line", "component": GOOD_COMPONENT, "duration_ms": 5},
    {"level": "error", "msg": "good failure", "component": GOOD_COMPONENT,
     "error_type": "GoodError", "duration_ms": 5},
]
# a regex config the regex cases run with; the good lines below match it
REGEX = (r"^(?P<level>[A-Z]+) \[(?P<component>[^\]]*)\] (?P<message>.*?)"
         r"(?: type=(?P<error_type>\w+))?(?: took=(?P<duration_ms>\S+))?$")


@dataclass(frozen=True)
class Case:
    name: str
    fmt: str  # json, logfmt, regex, cri, docker: the file's format, as `--format` names it
    data: bytes  # the hostile line(s), without a final newline
    fails: dict[str, int] | None = None  # parse failures it must cost; None: not asserted
    records: int | None = None  # records the hostile bytes make themselves; None: not asserted
    config: dict[str, Any] = field(default_factory=dict)
    first: bool = False  # the first line of its file (no good lines before it)

    def __str__(self) -> str:
        return self.name


def good_line(rec: dict[str, Any], fmt: str) -> bytes:
    """A good record in a file of format `fmt`."""
    js = json.dumps(rec, separators=(",", ":"))
    if fmt == "json":
        return js.encode()
    if fmt == "cri":
        return f"{TIME} stdout F {js}".encode()
    if fmt == "docker":
        return json.dumps({"log": js + "\n", "stream": "stdout", "time": TIME}).encode()
    if fmt == "logfmt":
        extra = f" error_type={rec['error_type']}" if "error_type" in rec else ""
        return (f'level={rec["level"]} msg="{rec["msg"]}" component={rec["component"]}'
                f'{extra} duration_ms={rec["duration_ms"]}').encode()
    if fmt == "regex":
        extra = f" type={rec['error_type']}" if "error_type" in rec else ""
        return (f'{rec["level"].upper()} [{rec["component"]}] {rec["msg"]}{extra}'
                f' took={rec["duration_ms"]}').encode()
    raise ValueError(fmt)


def good_block(fmt: str, n: int = 2) -> list[bytes]:
    """n rounds of the good lines (an info-ish and an error line each)."""
    return [good_line(g, fmt) for _ in range(n) for g in GOOD]


def file_bytes(case: Case, rounds: int = 2) -> bytes:
    """The file oneshot reads for a case: good lines, the case, good lines."""
    before = [] if case.first else good_block(case.fmt, rounds)
    return b"\n".join([*before, case.data, *good_block(case.fmt, rounds)]) + b"\n"


def config_for(case: Case) -> dict[str, Any]:
    cfg = dict(case.config)
    if case.fmt == "regex":
        cfg.setdefault("regex", REGEX)
    return cfg


def _j(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _cri(msg: bytes, stream: bytes = b"stderr", tag: bytes = b"F") -> bytes:
    return TIME.encode() + b" " + stream + b" " + tag + b" " + msg


def _docker(log: Any, stream: Any = "stderr", **more: Any) -> bytes:
    return _j({"log": log, "stream": stream, "time": TIME, **more})


def _json_cases() -> list[Case]:
    c: list[Case] = []

    def rec(name: str, obj: Any, records: int = 1, **kw: Any) -> None:
        c.append(Case(name, "json", obj if isinstance(obj, bytes) else _j(obj),
                      fails=kw.pop("fails", {}), records=records, **kw))

    def bad(name: str, data: bytes, reason: str, **kw: Any) -> None:
        c.append(Case(name, "json", data, fails={reason: 1}, records=0, **kw))

    # wrong JSON types for every field the presets read (generic preset: the union of names):
    # one case per field, one line per type (a line each keeps them apart in a traceback)
    odd = {"array": ["error", 1], "object": {"name": "error", "n": [1]}, "true": True,
           "null": None, "huge_int": int(BIG), "negative": -7, "float": 0.5, "empty": ""}
    fields = {
        "level": lambda v: {"level": v, "msg": "x", "component": "c"},
        "msg": lambda v: {"level": "error", "msg": v, "message": v, "component": "c"},
        "error_type": lambda v: {"level": "error", "msg": "boom", "error_type": v,
                                 "err": {"type": v, "name": v, "code": v}},
        "component": lambda v: {"level": "error", "msg": "boom", "component": v, "service": v,
                                "logger": v},
        "stack": lambda v: {"level": "error", "msg": "boom", "stack": v, "stacktrace": v,
                            "exception": v, "exc_info": v},
        "trace_id": lambda v: {"level": "error", "msg": "boom", "trace_id": v, "traceId": v,
                               "request_id": v},
        "duration": lambda v: {"level": "info", "component": "d", "duration_ms": v,
                               "latency_ms": v, "duration": v, "event": {"duration": v}},
    }
    for fname, make in fields.items():
        rec(f"{fname}_wrong_types", b"\n".join(_j(make(v)) for v in odd.values()),
            records=len(odd))
    rec("level_superscript_digit", {"level": "²", "msg": "x"})  # isdigit(), yet int() refuses
    rec("level_arabic_digits", {"level": "٣٠", "msg": "x"})
    rec("level_slog_huge_offset", {"level": "ERROR+" + BIG, "msg": "x"})
    rec("level_numeric_string_huge", {"level": BIG, "msg": "x"})
    rec("err_wrong_shapes", {"level": "error", "err": {"type": ["x"], "message": {"a": 1},
                                                       "stack": 123, "name": None}})
    rec("error_is_string_and_list", {"level": "error", "error": "x", "err": [1, {"type": 2}]})
    rec("error_object_wrong_types", {"level": "error", "error": {"type": None, "message": 7,
                                                                 "stack_trace": ["a"]}})
    rec("exception_list_of_junk", {"level": "error", "exception": [1, None, {"exc_type": {}}]})
    rec("exception_dict_not_list", {"level": "error", "exception": {"0": {"exc_type": "X"}}})
    rec("dotted_key_and_nested_disagree", {"level": "error", "error.type": {"x": 1},
                                           "error": {"type": "A"}, "log.level": ["x"]})
    # the line from the incident: a 400-digit duration
    rec("duration_400_digits", b'{"level":"info","component":"api","duration_ms":' +
        BIG.encode() + b"}")
    rec("duration_negative_400_digits", b'{"level":"error","msg":"m","duration_ms":-' +
        BIG.encode() + b"}")
    rec("duration_float_max", {"level": "info", "component": "d", "duration_s": 1.7e308})
    rec("duration_strings", {"level": "info", "component": "d", "duration_ms": "²",
                             "latency_ms": "NaN", "duration": "9" * 400 + "h",
                             "elapsed": "-inf", "took": "1e400"})
    rec("duration_go_string_huge", {"level": "info", "component": "d",
                                    "duration": "9" * 300 + "h" + "9" * 300 + "m"})
    rec("duration_underflow", b'{"level":"info","component":"d","duration_ms":1e-400}')
    rec("empty_object", b"{}")
    rec("duplicate_keys", b'{"level":"error","level":["x"],"level":{"a":1},"msg":"d"}')
    rec("escaped_nul_everywhere", {"\u0000": 1, "level": "error\u0000", "msg": "a\u0000b",
                                   "component": "\u0000", "error_type": "E\u0000"})
    rec("control_chars_in_labels", {"level": "error", "msg": "x", "component": "a\nb\"c\\",
                                    "error_type": "T\r\n# HELP x"})
    rec("fifty_thousand_keys", _j({"level": "error", "msg": "k", **{f"k{i}": i
                                                                    for i in range(50_000)}}))
    rec("three_mb_line_under_cap", _j({"level": "error", "msg": "x" * (3 * MIB),
                                       "component": "big"}),
        config={"max_line_bytes": 4 * MIB})
    rec("three_mb_stack_under_cap", _j({"level": "error", "msg": "s",
                                        "stack": "Error: x\n" + "    at f (a.js:1:1)\n" * 150_000}),
        config={"max_line_bytes": 4 * MIB})
    rec("crlf_line_ends", _j({"level": "error", "msg": "crlf"}) + b"\r\n" +
        _j({"level": "info", "msg": "crlf"}) + b"\r", records=2)
    # nested near the decoder's limit (which counts the interpreter's frames, so the depths
    # that decode move with the caller's stack: 900-999 covers oneshot, run and explain), in
    # the fields an error line's text and type are made of
    for fname in ("msg", "error", "error_type", "stack"):
        c.append(Case(f"{fname}_nested_near_the_limit", "json", b"\n".join(
            b'{"level":"error","%s":' % fname.encode() + b"[" * n + b"]" * n + b"}"
            for n in range(900, 1000, 1 if fname == "msg" else 4))))
    rec("nested_under_limit", b'{"level":"info","ctx":' + b'{"a":' * 500 + b"1" + b"}" * 500 +
        b"}")

    # a BOM (PowerShell, .NET): skipped at the start of a file; later in it, the line holding
    # it is invalid JSON
    rec("bom_first_line", b"\xef\xbb\xbf" + _j({"level": "error"}), first=True)
    bad("bom_mid_file", b"\xef\xbb\xbf" + _j({"level": "error"}), "invalid_json")
    bad("float_1e309", b'{"level":"error","msg":"x","duration_ms":1e309}', "invalid_json")
    bad("float_minus_1e309", b'{"level":-1e309}', "invalid_json")
    bad("nan_literal", b'{"level":"error","duration_ms":NaN}', "invalid_json")
    bad("infinity_literal", b'{"level":"error","duration_ms":Infinity}', "invalid_json")
    bad("inf_literal", b'{"level":"error","duration_ms":inf}', "invalid_json")
    bad("lone_surrogate_escape", b'{"level":"error","msg":"\\ud800","component":"\\udfff"}',
        "invalid_json")
    bad("three_mb_line_over_cap", _j({"level": "error", "msg": "x" * (3 * MIB)}), "too_long")
    bad("deep_objects_1e5", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "too_deep")
    bad("deep_arrays_1e5", b'{"level":"error","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "too_deep")
    bad("invalid_utf8_in_value", b'{"level":"error","msg":"caf\xe9"}', "invalid_utf8")
    bad("invalid_utf8_in_key", b'{"lev\xffel":"error"}', "invalid_utf8")
    bad("overlong_utf8", b'{"level":"error","msg":"\xc0\xaf"}', "invalid_utf8")
    bad("utf8_encoded_surrogate", b'{"level":"error","msg":"\xed\xa0\x80"}', "invalid_utf8")
    bad("raw_nul_in_string", b'{"level":"error","msg":"a\x00b"}', "invalid_json")
    bad("nul_bytes_line", b"\x00" * 1000, "invalid_json")
    bad("top_level_array", b'[{"level":"error"}]', "not_object")
    bad("top_level_string", b'"error"', "not_object")
    bad("top_level_number", b"42", "not_object")
    bad("top_level_null", b"null", "not_object")
    bad("top_level_true", b"true", "not_object")
    bad("truncated_object", b'{"level":"error","msg":"cut he', "invalid_json")
    bad("plain_text_in_json_file", b"Traceback (most recent call last):", "invalid_json")
    # glued objects, then a blank line (the incident's pipeline crash), and variants
    bad("glued_objects_then_blank", b'{"level":"error","msg":"x"}{"x":1}\n', "invalid_json")
    bad("glued_objects_spaced", b'{"level":"error"} {"level":"info"}', "invalid_json")
    bad("glued_many", b"{}" * 10_000, "invalid_json")
    bad("glued_by_lone_cr", b'{"level":"error"}\r{"level":"info"}', "invalid_json")
    c.append(Case("blank_lines_and_spaces", "json", b"\n  \n\t\n\r\n\n", fails={}, records=0))
    return c


def _logfmt_cases() -> list[Case]:
    return [
        Case("logfmt_no_pairs", "logfmt", b"just some words", {"invalid_logfmt": 1}, 0),
        Case("logfmt_unterminated_quote", "logfmt", b'level=error msg="never closed'),
        Case("logfmt_bad_escapes", "logfmt",
             rb'level=error msg="\x \u12 \UFFFFFFFF \ud800 \U0010ffff \"" component="\q"',
             {}, 1),
        Case("logfmt_odd_keys", "logfmt", b"= == =x level= msg=\"\" \"=\" k==v component==",
             None, None),
        Case("logfmt_level_superscript", "logfmt", "level=² msg=x".encode(), {}, 1),
        Case("logfmt_huge_durations", "logfmt",
             f"level=info component=d duration_ms={BIG} latency_ms=1e309 duration=NaN"
             .encode(), {}, 1),
        Case("logfmt_invalid_utf8", "logfmt", b"level=error msg=caf\xe9", {"invalid_utf8": 1}, 0),
        Case("logfmt_raw_nul", "logfmt", b"level=error msg=a\x00b component=\x00", {}, 1),
        Case("logfmt_fifty_thousand_pairs", "logfmt",
             b"level=error " + b" ".join(b"k%d=%d" % (i, i) for i in range(50_000)), {}, 1),
        Case("logfmt_three_mb_value", "logfmt", b"level=error msg=" + b"x" * (3 * MIB),
             {"too_long": 1}, 0),
    ]


def _regex_cases() -> list[Case]:
    return [
        Case("regex_mismatch", "regex", b"this matches nothing", {"regex_mismatch": 1}, 0),
        Case("regex_level_superscript", "regex", "² [c] x took=1".encode(), None, None),
        Case("regex_odd_duration", "regex",
             f"ERROR [c] boom type=X took={BIG}".encode(), {}, 1),
        Case("regex_unicode_digit_duration", "regex", "ERROR [c] boom took=٣".encode(), {}, 1),
        Case("regex_invalid_utf8", "regex", b"ERROR [c] caf\xe9", {"invalid_utf8": 1}, 0),
        Case("regex_empty_groups", "regex", b"ERROR [] ", {}, 1),
    ]


def _cri_cases() -> list[Case]:
    inner = _j({"level": "error", "msg": "in cri", "component": "c"})
    return [
        Case("cri_without_tag", "cri", TIME.encode() + b" stdout " + inner,
             {"invalid_envelope": 1}, 0),
        Case("cri_bad_timestamp", "cri", b"yesterday stdout F " + inner,
             {"invalid_envelope": 1}, 0),
        Case("cri_nonsense_timestamp", "cri", b"9999-99-99T99:99:99Z stdout F " + inner, {}, 1),
        Case("cri_unknown_stream", "cri", TIME.encode() + b" stdweird F " + inner,
             {"invalid_envelope": 1}, 0),
        Case("cri_bad_tag", "cri", TIME.encode() + b" stdout X " + inner,
             {"invalid_envelope": 1}, 0),
        Case("cri_extra_tags", "cri", TIME.encode() + b" stdout F:x:y:: " + inner, {}, 1),
        Case("cri_empty_message", "cri", TIME.encode() + b" stdout F", {}, 0),
        # partials on stderr (the good lines are on stdout) whose F never comes: EOF ends them
        Case("cri_p_without_f_json", "cri", _cri(inner, tag=b"P"), {}, 1),
        Case("cri_p_without_f_truncated", "cri",
             _cri(b'{"level":"error","msg":"cut', tag=b"P"), {"invalid_json": 1}, 0),
        Case("cri_p_storm_over_cap", "cri",
             b"\n".join([_cri(b'{"level":"error","msg":"', tag=b"P")] +
                        [_cri(b"y" * 16384, tag=b"P")] * 200 + [_cri(b'"}')]),
             {"too_long": 1}, 0),
        Case("cri_invalid_utf8_message", "cri", _cri(b'{"level":"error","msg":"\xff"}'),
             None, 0),
        Case("cri_nul_message", "cri", _cri(b"\x00" * 100), None, None),
        Case("cri_deep_message", "cri", _cri(b'{"a":' * 100_000 + b"}" * 100_000),
             {"too_deep": 1}, 0),
        Case("cri_glued_message", "cri", _cri(b'{"level":"error"}{"x":1}') + b"\n",
             {"invalid_json": 1}, 0),
        Case("cri_huge_duration", "cri",
             _cri(b'{"level":"info","component":"api","duration_ms":' + BIG.encode() + b"}"),
             {}, 1),
        Case("cri_logfmt_message", "cri", _cri(b"level=error msg=x duration_ms=" +
                                               BIG.encode()), {}, 1),
        Case("cri_truncated_prefix", "cri", TIME.encode()[:10], {"invalid_envelope": 1}, 0),
    ]


def _docker_cases() -> list[Case]:
    inner = json.dumps({"level": "error", "msg": "in docker", "component": "c"})
    return [
        Case("docker_log_number", "docker", _docker(123), {"invalid_envelope": 1}, 0),
        Case("docker_log_null", "docker", _docker(None), {"invalid_envelope": 1}, 0),
        Case("docker_log_object", "docker", _docker({"level": "error"}),
             {"invalid_envelope": 1}, 0),
        Case("docker_log_missing", "docker", _j({"stream": "stdout", "time": TIME}),
             {"invalid_envelope": 1}, 0),
        Case("docker_stream_object", "docker", _docker(inner + "\n", {"a": 1}),
             {"invalid_envelope": 1}, 0),
        Case("docker_stream_number", "docker", _docker(inner + "\n", 2),
             {"invalid_envelope": 1}, 0),
        Case("docker_made_up_stream", "docker", _docker(inner + "\n", "stdweird"), {}, 1),
        Case("docker_time_wrong_type", "docker", _docker(inner + "\n", time=[1, {}]), {}, 1),
        Case("docker_lone_surrogate_log", "docker", _docker("\ud800" + inner + "\n"),
             None, 0),
        Case("docker_partial_without_final", "docker", _docker(inner), {}, 1),
        Case("docker_partial_storm_over_cap", "docker",
             b"\n".join([_docker('{"level":"error","msg":"')] + [_docker("y" * 16384)] * 200 +
                        [_docker('"}\n')]), {"too_long": 1}, 0),
        Case("docker_top_level_array", "docker", b'[{"log":"x\\n"}]', {"invalid_envelope": 1},
             0),
        Case("docker_glued_in_log", "docker", _docker('{"level":"error"}{"x":1}\n'),
             {"invalid_json": 1}, 0),
        Case("docker_huge_duration_in_log", "docker",
             _docker('{"level":"info","component":"api","duration_ms":' + BIG + "}\n"), {}, 1),
        Case("docker_deep_log", "docker", _docker('{"a":' * 100_000 + "}" * 100_000 + "\n"),
             {"too_deep": 1}, 0),
        Case("docker_deep_envelope", "docker",
             b'{"log":"x\\n","stream":"stdout","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
             {"invalid_envelope": 1}, 0),
        Case("docker_log_newline_only", "docker", _docker("\n"), {}, 0),
    ]


def corpus() -> list[Case]:
    cases = [*_json_cases(), *_logfmt_cases(), *_regex_cases(), *_cri_cases(),
             *_docker_cases()]
    assert len({c.name for c in cases}) == len(cases), "case names are unique"
    return cases
