"""Container envelopes as Kubernetes stores them: CRI (`<time> <stream> <P|F> <msg>`, partial
chunks joined until F) and docker json-file (`log` chunks without a trailing newline joined).
The messages inside are real logger output from tests/exporter/samples."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from exporter_helpers import failures, levels, metrics
from prometheus_client.parser import text_string_to_metric_families

from exporter import config, envelope
from exporter.pipeline import Pipeline

SAMPLES = Path(__file__).parent / "samples"
EXE = shutil.which("tailpage-exporter", path=os.path.dirname(sys.executable))
TS = b"2026-11-23T12:40:21.123456789Z"
DOCKER_MAX = 16384  # docker json-file splits a line into chunks of this many bytes


def make(**cfg: Any) -> Pipeline:
    return Pipeline(config.Config(config.validate(cfg, "<test>")))


def feed(pipe: Pipeline, data: bytes, step: int | None = None, path: str = "pod.log") -> str:
    src = pipe.open(path)
    step = step or max(1, len(data))
    for i in range(0, len(data), step):
        src.feed(data[i:i + step])
    src.flush()
    return src.fmt or ""




def errors(pipe: Pipeline) -> set[tuple[str, str]]:
    return {(dict(k)["component"], dict(k)["error_type"])
            for k in metrics(pipe).get("tailpage_errors_total", {})}


def cri(msg: bytes, stream: bytes = b"stdout", tag: bytes = b"F") -> bytes:
    return TS + b" " + stream + b" " + tag + b" " + msg + b"\n"


def cri_split(msg: bytes, sizes: list[int], stream: bytes = b"stdout") -> list[bytes]:
    """The message as the runtime writes a long line: P chunks, then the F one."""
    out, pos = [], 0
    for n in sizes:
        out.append(cri(msg[pos:pos + n], stream, b"P"))
        pos += n
    out.append(cri(msg[pos:], stream, b"F"))
    return out


def docker(log: str, stream: str = "stdout") -> bytes:
    return json.dumps({"log": log, "stream": stream, "time": TS.decode()}).encode() + b"\n"


def docker_split(msg: str, stream: str = "stdout") -> list[bytes]:
    """As dockerd's json-file driver writes a long line: 16 KiB pieces without the newline."""
    pieces = [msg[i:i + DOCKER_MAX] for i in range(0, len(msg), DOCKER_MAX)]
    return [docker(p, stream) for p in pieces[:-1]] + [docker(pieces[-1] + "\n", stream)]


def sample_lines(name: str) -> list[bytes]:
    return (SAMPLES / name).read_bytes().splitlines()


# ---- CRI ------------------------------------------------------------------------------------

@pytest.mark.parametrize("step", [None, 1, 50], ids=["whole", "1-byte-reads", "50-byte-reads"])
def test_cri_partials_joined_until_f(step: int | None) -> None:
    """pino's error record (with its stack) split into three P chunks and an F: one record,
    with the error type read from the joined JSON."""
    pino = sample_lines("pino.log")
    err = pino[4]
    assert len(err) > 600
    data = b"".join([cri(pino[2]), *cri_split(err, [100, 1, 400]), cri(pino[6])])
    pipe = make()
    assert feed(pipe, data, step) == "cri"
    assert levels(pipe) == {"info": 1, "error": 1, "fatal": 1}
    assert errors(pipe) == {("checkout", "Error"), ("checkout", "unknown")}
    assert failures(pipe) == {}


def test_cri_streams_join_separately() -> None:
    """The runtime interleaves stdout and stderr; each stream's chunks join on their own.
    (The logger preset is detected per file: one container, one logger.)"""
    a = sample_lines("bunyan.log")[4]  # error, Error ECONNREFUSED
    b = sample_lines("bunyan.log")[5]  # error, PaymentDeclinedError
    out_a = cri_split(a, [200, 200], b"stdout")
    out_b = cri_split(b, [150], b"stderr")
    data = b"".join([out_a[0], out_b[0], out_a[1], out_b[1], out_a[2]])
    pipe = make()
    feed(pipe, data)
    assert levels(pipe) == {"error": 2}
    assert errors(pipe) == {("billing", "Error"), ("billing", "PaymentDeclinedError")}


def test_cri_messages_parsed_by_their_own_format() -> None:
    """Inside the envelope the message format is found per message: JSON, logfmt, plain text."""
    data = b"".join([
        cri(b"Starting app version 1.2.3"),
        cri(sample_lines("logrus-logfmt.log")[4]),
        cri(sample_lines("zerolog.log")[5]),
        cri(b""),  # an empty line the app printed: no record
        cri(b"   "),
        TS + b" stdout F:x-tag " + sample_lines("slog.log")[3] + b"\n",  # tags after F
    ])
    pipe = make()
    assert feed(pipe, data) == "cri"
    assert levels(pipe) == {"unknown": 1, "error": 2, "warning": 1}
    assert errors(pipe) == {("billing", "unknown"), ("search", "PaymentDeclinedError")}
    assert failures(pipe) == {}


def test_cri_bad_envelope_line_counted_and_next_line_counts() -> None:
    data = b"".join([cri(b'{"level":"info","msg":"a"}'),
                     b"this is not a CRI line\n",
                     b"2026-11-23T12:40:21Z stdin X nonsense\n",
                     cri(b'{"level":"error","msg":"b"}')])
    pipe = make(format="cri")
    feed(pipe, data)
    assert levels(pipe) == {"info": 1, "error": 1}
    assert failures(pipe) == {"invalid_envelope": 2}


def test_cri_partials_past_the_cap_counted_once_then_next_message_counts() -> None:
    big = b'{"level":"error","msg":"' + b"x" * 3000 + b'"}'
    data = b"".join([*cri_split(big, [500] * 5), cri(b'{"level":"info","msg":"after"}')])
    pipe = make(max_line_bytes=1024)
    feed(pipe, data)
    assert failures(pipe) == {"too_long": 1}
    assert levels(pipe) == {"info": 1}


def test_cri_final_chunk_pushing_past_the_cap() -> None:
    big = b'{"level":"error","msg":"' + b"x" * 1500 + b'"}'
    pipe = make(max_line_bytes=1024)
    feed(pipe, b"".join([*cri_split(big, [800]), cri(b'{"level":"warn","msg":"ok"}')]))
    assert failures(pipe) == {"too_long": 1}
    assert levels(pipe) == {"warning": 1}


def test_cri_partial_without_final_is_flushed() -> None:
    """At EOF (oneshot) or after the flush timeout (live) a held partial is a message."""
    pipe = make()
    src = pipe.open("pod.log")
    src.feed(cri(b'{"level":"error",', tag=b"P") + cri(b'"msg":"cut off"}', tag=b"P"))
    assert levels(pipe) == {}
    assert src.pending > 0
    src.flush()
    assert levels(pipe) == {"error": 1}
    assert src.pending == 0


# ---- docker json-file -----------------------------------------------------------------------

@pytest.mark.parametrize("step", [None, 3, 5000], ids=["whole", "3-byte-reads", "5000-byte"])
def test_docker_16k_chunks_joined(step: int | None) -> None:
    """A 40 KB winston record (error with a long field) as dockerd splits it: three json-file
    lines, the last ending in a newline."""
    rec = json.loads(sample_lines("winston.log")[7])
    rec["request_body"] = "y" * 40000
    long = json.dumps(rec)
    chunks = docker_split(long, "stderr")
    assert len(chunks) == 3
    data = b"".join([docker(sample_lines("winston.log")[4].decode() + "\n"), *chunks,
                     docker(sample_lines("winston.log")[5].decode() + "\r\n")])
    pipe = make()
    assert feed(pipe, data, step) == "docker"
    assert levels(pipe) == {"info": 1, "warning": 1, "error": 1}
    assert errors(pipe) == {("orders", "PaymentDeclinedError")}
    assert failures(pipe) == {}


def test_docker_streams_join_separately() -> None:
    a = sample_lines("pino.log")[5].decode()
    b = sample_lines("zap.log")[3].decode()
    data = b"".join([docker(a[:300], "stdout"), docker(b[:100], "stderr"),
                     docker(a[300:] + "\n", "stdout"), docker(b[100:] + "\n", "stderr")])
    pipe = make()
    feed(pipe, data)
    assert levels(pipe) == {"error": 2}
    assert errors(pipe) == {("checkout", "PaymentDeclinedError"), ("checkout", "unknown")}


def test_docker_bad_lines_counted_and_skipped() -> None:
    good = docker('{"level":"error","msg":"boom","error_type":"E"}\n')
    data = b"".join([good,
                     good[:40] + b"\n",  # truncated envelope
                     b'{"log": 42, "stream": "stdout"}\n',  # wrong type
                     b'{"log":"\xff\xfe\\n","stream":"stdout"}\n',  # not UTF-8
                     docker("\n"),  # an empty line the app printed: nothing
                     good])
    pipe = make(format="docker")
    feed(pipe, data)
    assert levels(pipe) == {"error": 2}
    assert failures(pipe) == {"invalid_envelope": 3}


def test_docker_made_up_streams_do_not_grow_the_joiner() -> None:
    """Only stdout and stderr exist; any other name joins as one stream, so a hostile file
    holds at most three partial buffers, each bounded by the line cap."""
    pipe = make(max_line_bytes=4096)
    src = pipe.open("pod.log")
    src.feed(b"".join(docker("z" * 100, f"s{i}") for i in range(2000)))
    assert len(src.joiner.parts) <= 3
    assert src.pending <= 3 * 4096 + 65536
    assert failures(pipe) == {"too_long": 1}


# ---- the joiner itself ----------------------------------------------------------------------

def test_joiner_pending_counts_raw_bytes_held() -> None:
    j = envelope.Joiner(100)
    assert j.add(b"stdout", b"ab", False, 40) is None
    assert j.add(b"stderr", b"x", False, 30) is None
    assert j.pending == 70
    assert j.add(b"stdout", b"cd", True, 40) == b"abcd"
    assert j.pending == 30
    assert j.flush() == [b"x"]
    assert j.pending == 0


def test_unwrap_functions() -> None:
    assert envelope.unwrap_cri(TS + b" stderr P hello world") == (b"stderr", b"hello world",
                                                                  False)
    assert envelope.unwrap_docker(b'{"log":"a\\r\\n","stream":"stderr"}') == ("stderr", b"a",
                                                                             True)
    assert envelope.unwrap_docker(b'{"log":"a"}') == ("", b"a", False)
    assert envelope.unwrap_cri(TS + b" stdout F") == (b"stdout", b"", True)
    assert envelope.unwrap_cri(TS + b" stdout F:a:b x") == (b"stdout", b"x", True)
    for bad in (b"2026-11-23 stdout F x", TS + b" stdout Fx", TS + b" stdin F x",
                TS + b" stdout X x"):
        with pytest.raises(envelope.BadEnvelope):
            envelope.unwrap_cri(bad)
    with pytest.raises(envelope.BadEnvelope):
        envelope.unwrap_docker(b'{"stream":"stdout"}')
    assert envelope.looks_docker(docker("x\n"))
    assert not envelope.looks_docker(b'{"level":"info","log":"x"}')
    assert envelope.looks_cri(cri(b"x"))


# ---- the command line -----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["cri", "docker"])
def test_oneshot_cli_format_flag(tmp_path: Path, fmt: str) -> None:
    lines = sample_lines("python-json-logger.log")
    if fmt == "cri":
        data = b"".join(cri(ln) for ln in lines)
    else:
        data = b"".join(docker(ln.decode() + "\n") for ln in lines)
    f = tmp_path / "0.log"
    f.write_bytes(data)
    out = subprocess.run([EXE, "oneshot", "--format", fmt, str(f)], capture_output=True,
                         timeout=120, check=True).stdout.decode()
    fams = {f.name: f for f in text_string_to_metric_families(out)}
    got = {s.labels["level"]: s.value for s in fams["tailpage_log_lines"].samples if s.value}
    assert got == {"debug": 1, "info": 1, "warning": 1, "error": 2, "fatal": 1}
    types = {s.labels["error_type"] for s in fams["tailpage_errors"].samples}
    assert types == {"ConnectionRefusedError", "PaymentDeclinedError", "unknown"}
