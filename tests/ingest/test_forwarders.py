"""What forwarders send, byte for byte, and what is stored (docs/FORWARDERS.md).

The requests replay the wire formats of:
- Vector's ``http`` sink (src/sinks/http/encoder.rs and config.rs): codec ``json`` with its
  default framing is a JSON array ``[e1,e2]`` with ``Content-Type: application/json``;
  codec ``json`` with ``framing.method = "newline_delimited"`` is events joined by ``\\n``
  *without* a trailing newline, ``Content-Type: application/x-ndjson``; ``compression``
  gzip / zstd / zlib set ``Content-Encoding``; ``auth.strategy = "bearer"`` sends
  ``Authorization: Bearer``.  Vector retries 408, 429 and 5xx only.
- Fluent Bit's ``out_http`` (plugins/out_http/http.c, src/flb_pack.c): ``format json`` is a
  JSON array with ``application/json``; ``json_lines`` is each record followed by ``\\n``
  with ``application/x-ndjson``; ``json_stream`` is records concatenated with nothing in
  between, ``application/json``; each record carries ``json_date_key`` (default ``date``,
  a double); ``User-Agent: Fluent-Bit``; ``compress gzip|zstd``; ``http_User`` /
  ``http_Passwd`` send Basic.  Fluent Bit does not retry 4xx other than 408 and 429.
  ``format msgpack`` is not accepted (415).
- Python's ``logging.handlers.HTTPHandler``, the real one from the standard library.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import logging.handlers
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from pipeline.hot.writer import HotLog
from pipeline.ingest.server import IngestServer
from tests.hotutil import records, without_sender

STREAM = "app"
TOKEN = "fwd-t0ken-123"

VECTOR_EVENTS = [
    {"message": "user alice logged in", "host": "web-1", "source_type": "file",
     "timestamp": "2026-12-06T10:00:00.123456789Z", "file": "/var/log/auth.log"},
    {"message": "user bob read /ledger", "host": "web-1", "source_type": "file",
     "timestamp": "2026-12-06T10:00:01.000000001Z", "file": "/var/log/auth.log", "nested": {"k": [1, 2]}},
]
FLUENT_RECORDS = [
    {"date": 1765015200.123456, "log": "user alice logged in", "stream": "stdout"},
    {"date": 1765015201.5, "log": "user bob read /ledger", "stream": "stderr", "kubernetes": {"pod": "shop-0"}},
]


@pytest.fixture
def hotlog(hot_dir: Path) -> Iterator[HotLog]:
    log = HotLog(hot_dir, STREAM, durability="group", heartbeat_interval=0, segment_window=0)
    yield log
    log.close()


@pytest.fixture
def server(hotlog: HotLog) -> Iterator[IngestServer]:
    with IngestServer(hotlog, http_listen="127.0.0.1:0", token=TOKEN, max_request_bytes=1 << 20) as srv:
        yield srv


def stored(hot_dir: Path) -> list[dict[str, Any]]:
    return [without_sender(r.data) for r in records(hot_dir / STREAM) if r.kind == "event"]


class WireClient:
    """One keep-alive connection that writes requests exactly as given and parses answers."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.sock = socket.create_connection(addr, timeout=10)
        self.buf = b""

    def request(self, head: list[str], body: bytes) -> tuple[int, dict[str, str], Any]:
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        raw_head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw_head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        length = int(headers["content-length"])
        while len(self.buf) < length:
            self.buf += self._recv()
        data, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, json.loads(data)

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def compress(body: bytes, how: str | None) -> bytes:
    if how == "gzip":
        return gzip.compress(body)
    if how == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(body)
    if how == "deflate":  # Vector's "zlib"
        return zlib.compress(body)
    return body


# ------------------------------------------------------------------ Vector


def vector_request(addr: tuple[str, int], body: bytes, content_type: str, encoding: str | None) -> list[str]:
    head = ["POST /v1/events HTTP/1.1", f"content-type: {content_type}", f"content-length: {len(body)}",
            f"authorization: Bearer {TOKEN}", "user-agent: Vector/0.44.0 (x86_64-unknown-linux-gnu)",
            "accept-encoding: zstd,gzip,deflate,br", f"host: {addr[0]}:{addr[1]}"]
    if encoding:
        head.insert(1, f"content-encoding: {encoding}")
    return head


@pytest.mark.parametrize("compression", [None, "gzip", "zstd", "deflate"])
@pytest.mark.parametrize("codec", ["json", "ndjson"])
def test_vector_http_sink(hot_dir: Path, server: IngestServer, codec: str, compression: str | None) -> None:
    addr = server.http_address
    assert addr is not None
    encoded = [orjson.dumps(e) for e in VECTOR_EVENTS]
    if codec == "json":  # CharacterDelimited(',') framing wrapped in [ ]
        body, ctype = b"[" + b",".join(encoded) + b"]", "application/json"
    else:  # NewlineDelimited framing, trailing newline removed (encoder.rs)
        body, ctype = b"\n".join(encoded), "application/x-ndjson"
    wire = compress(body, compression)
    client = WireClient(addr)
    try:
        for _ in range(2):  # keep-alive: the same connection serves the next batch
            status, headers, answer = client.request(vector_request(addr, wire, ctype, compression), wire)
            assert status == 200, answer
            assert headers["content-type"] == "application/json"
            assert answer["accepted"] == 2 and answer["last_seq"] - answer["first_seq"] == 1
    finally:
        client.close()
    assert stored(hot_dir) == VECTOR_EVENTS * 2


def test_vector_refused_batch_is_not_retryable(hot_dir: Path, server: IngestServer) -> None:
    # One bad event (a string, not an object): 422, which Vector logs and does not retry,
    # and nothing of the batch is stored (so a retry by hand cannot duplicate anything).
    addr = server.http_address
    assert addr is not None
    body = b"[" + orjson.dumps(VECTOR_EVENTS[0]) + b',"just a string"]'
    client = WireClient(addr)
    try:
        status, _, answer = client.request(vector_request(addr, body, "application/json", None), body)
    finally:
        client.close()
    assert status == 422 and answer["errors"] == [{"event": 2, "error": answer["errors"][0]["error"]}]
    assert answer["errors"][0]["error"].startswith("not-an-object: ")
    assert stored(hot_dir) == []


# ------------------------------------------------------------------ Fluent Bit


def fluent_body(fmt: str) -> tuple[bytes, str]:
    encoded = [orjson.dumps(r) for r in FLUENT_RECORDS]
    if fmt == "json":
        return b"[" + b",".join(encoded) + b"]", "application/json"
    if fmt == "json_lines":
        return b"".join(e + b"\n" for e in encoded), "application/x-ndjson"
    return b"".join(encoded), "application/json"  # json_stream: nothing between records


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
@pytest.mark.parametrize("fmt", ["json", "json_lines", "json_stream"])
def test_fluent_bit_out_http(hot_dir: Path, server: IngestServer, fmt: str, compression: str | None) -> None:
    addr = server.http_address
    assert addr is not None
    body, ctype = fluent_body(fmt)
    wire = compress(body, compression)
    basic = base64.b64encode(f"fluent:{TOKEN}".encode()).decode()  # http_User / http_Passwd
    head = ["POST /v1/events HTTP/1.1", f"Host: {addr[0]}:{addr[1]}", f"Content-Length: {len(wire)}",
            f"Content-Type: {ctype}", f"Authorization: Basic {basic}", "User-Agent: Fluent-Bit"]
    if compression:
        head.append(f"Content-Encoding: {compression}")
    client = WireClient(addr)
    try:
        status, _, answer = client.request(head, wire)
    finally:
        client.close()
    assert status == 200, answer
    assert answer["accepted"] == 2
    assert stored(hot_dir) == FLUENT_RECORDS  # the date double survives exactly


def test_fluent_bit_msgpack_refused(hot_dir: Path, server: IngestServer) -> None:
    addr = server.http_address
    assert addr is not None
    body = b"\x92\xd7\x00\x00\x00\x00\x00\x00\x00\x00\x81\xa3log\xa2hi"
    client = WireClient(addr)
    try:
        status, _, answer = client.request(
            ["POST /v1/events HTTP/1.1", "Host: x", f"Content-Length: {len(body)}",
             "Content-Type: application/msgpack", f"Authorization: Bearer {TOKEN}"], body)
    finally:
        client.close()
    assert status == 415 and "Content-Type" in answer["error"]
    assert stored(hot_dir) == []


# ------------------------------------------------------------------ Python's HTTPHandler


def test_python_http_handler(hot_dir: Path, server: IngestServer) -> None:
    """The real ``logging.handlers.HTTPHandler``: a form-encoded POST of the LogRecord's
    attributes, Basic credentials (the token as the password).  Each record is one event
    holding the form's fields as strings."""
    addr = server.http_address
    assert addr is not None
    handler = logging.handlers.HTTPHandler(f"{addr[0]}:{addr[1]}", "/v1/events", method="POST",
                                           credentials=("app", TOKEN))
    logger = logging.getLogger("test.forwarders.httphandler")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    errors: list[logging.LogRecord] = []
    handler.handleError = errors.append  # type: ignore[method-assign,assignment]
    try:
        logger.info("order %s placed by %s", 42, "alice")
        logger.warning("card 4111 1111 1111 1111 used", extra={"password": "hunter2"})
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert errors == []
    events = stored(hot_dir)
    assert len(events) == 2
    first, second = events
    assert first["name"] == "test.forwarders.httphandler" and first["levelname"] == "INFO"
    assert first["msg"] == "order %s placed by %s" and first["args"] == "(42, 'alice')"
    assert all(isinstance(v, str) for v in first.values())
    # sanitised like any other event: a secret-looking field and a card number are redacted
    assert second["password"] == "[REDACTED:secret-key]"
    assert "4111" not in second["msg"]


def test_http_handler_without_credentials_refused(hot_dir: Path, server: IngestServer) -> None:
    addr = server.http_address
    assert addr is not None
    client = WireClient(addr)
    body = b"name=x&msg=hello"
    try:
        status, headers, _ = client.request(
            ["POST /v1/events HTTP/1.1", "Host: x", "Content-type: application/x-www-form-urlencoded",
             f"Content-length: {len(body)}"], body)
    finally:
        client.close()
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert stored(hot_dir) == []
