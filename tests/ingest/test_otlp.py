"""OTLP/HTTP logs (issue 17 §1): ``POST /v1/logs`` on the HTTP ingest server.

The real OpenTelemetry Python SDK (LoggerProvider, BatchLogRecordProcessor,
OTLPLogExporter) sends to a server process the test starts; raw HTTP covers the JSON
encoding, gzip, the status codes of the OTLP/HTTP specification and partial_success;
the wire walk is checked against protobuf's own parser of the whole request; the event
mapping against docs/FORMAT.md §3.1.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from pipeline.hot.writer import HotLog
from pipeline.ingest import otlp
from pipeline.ingest.server import IngestServer
from tests.hotutil import records, without_sender
from tests.ingest.certs import CA
from tests.ingest.otlputil import kv
from tests.ingestproc import ProcServer, ingest_process

STREAM = "app"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


# ------------------------------------------------------------------ helpers


def post(addr: tuple[str, int], body: bytes, content_type: str | None = PROTOBUF,
         headers: dict[str, str] | None = None, path: str = "/v1/logs",
         method: str = "POST") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=60)
    try:
        h = {} if content_type is None else {"Content-Type": content_type}
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def response(data: bytes, content_type: str = PROTOBUF) -> logs_service_pb2.ExportLogsServiceResponse:
    msg = logs_service_pb2.ExportLogsServiceResponse()
    if content_type == PROTOBUF:
        msg.ParseFromString(data)
    else:
        json_format.Parse(data, msg)
    return msg


def status(data: bytes, content_type: str = PROTOBUF) -> status_pb2.Status:
    msg = status_pb2.Status()
    if content_type == PROTOBUF:
        msg.ParseFromString(data)
    else:
        json_format.Parse(data, msg)
    return msg


def stored_raw(hot: Path) -> list[dict[str, Any]]:
    """The stored events as they are, ``_sender`` included."""
    return [r.data for r in records(hot / STREAM) if r.kind == "event"]


def stored(hot: Path) -> list[dict[str, Any]]:
    """The stored events without ``_sender`` (checked to be there and first)."""
    return [without_sender(d) for d in stored_raw(hot)]



def request(*records_: logs_pb2.LogRecord, resource: dict[str, Any] | None = None,
            scope: str = "lib") -> logs_service_pb2.ExportLogsServiceRequest:
    req = logs_service_pb2.ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(kv(k, v) for k, v in (resource or {"service.name": "svc"}).items())
    sl = rl.scope_logs.add()
    sl.scope.name = scope
    sl.log_records.extend(records_)
    return req


def record(i: int, **extra: Any) -> logs_pb2.LogRecord:
    rec = logs_pb2.LogRecord(time_unix_nano=1_700_000_000_000_000_000 + i, severity_text="INFO")
    rec.severity_number = 9  # type: ignore[assignment]
    rec.body.string_value = f"event {i}"
    rec.attributes.append(kv("i", i))
    for k, v in extra.items():
        rec.attributes.append(kv(k, v))
    return rec


@pytest.fixture
def server(hot_dir: Path) -> Iterator[tuple[IngestServer, Path]]:
    log = HotLog(hot_dir, STREAM, durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(log, http_listen="127.0.0.1:0", max_request_bytes=1 << 20, max_event_bytes=64 << 10).start()
    try:
        yield srv, hot_dir
    finally:
        srv.stop(5)
        log.close()


def addr_of(srv: IngestServer) -> tuple[str, int]:
    assert srv.http_address is not None
    return srv.http_address


# ------------------------------------------------------------------ the real SDK


@dataclass
class OtlpTarget:
    """Where the SDK sends, and how: one parameter of the SDK test (a mutual-TLS target
    is one more: the server started with certificates, the exporter given its files)."""

    endpoint: str
    exporter_kwargs: dict[str, Any]
    server: ProcServer
    hot: Path
    expect_in_event: dict[str, Any] = field(default_factory=dict)  # e.g. the sender identity mutual TLS adds


def _plain_target(tmp_path: Path, **kwargs: Any) -> Iterator[OtlpTarget]:
    with ingest_process(tmp_path, 4 << 20) as srv:
        host, port = srv.addr
        yield OtlpTarget(f"http://{host}:{port}/v1/logs", kwargs, srv, srv.hot,
                         {"_sender": {"auth": "none", "peer": "127.0.0.1"}})


SPIFFE = "spiffe://example.org/ns/payments/sa/exporter"


def _mtls_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpTarget]:
    """The sidecar with a server certificate and a client CA: the exporter presents a
    client certificate (SPIFFE ID in its SAN), which becomes each event's ``_sender``."""
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override the exporter's
    # certificate_file (a Session's verify loses to the environment; docs/FORWARDERS.md)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = CA(pki)
    server, client = ca.server(), ca.issue("exporter", uris=(SPIFFE,))
    with ingest_process(tmp_path, 4 << 20, "--tls-cert", str(server.cert), "--tls-key", str(server.key),
                        "--client-ca", str(ca.path), "--allowed-client", f"uri:{SPIFFE}") as srv:
        _host, port = srv.addr
        yield OtlpTarget(f"https://127.0.0.1:{port}/v1/logs",
                         {"certificate_file": str(ca.path), "client_key_file": str(client.key),
                          "client_certificate_file": str(client.cert), "compression": "gzip"},
                         srv, srv.hot, {"_sender": {"auth": "x509", "id": SPIFFE, "peer": "127.0.0.1"}})


TARGETS = {
    "plain": lambda tmp, _mp: _plain_target(tmp),
    "gzip": lambda tmp, _mp: _plain_target(tmp, compression="gzip"),
    "mtls": _mtls_target,
}


@pytest.fixture(params=list(TARGETS))
def otlp_target(request: pytest.FixtureRequest, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpTarget]:
    yield from TARGETS[request.param](tmp_path, monkeypatch)


def test_sdk_exporter_every_record_stored_once(otlp_target: OtlpTarget) -> None:
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    kwargs = dict(otlp_target.exporter_kwargs)
    if kwargs.get("compression") == "gzip":
        kwargs["compression"] = Compression.Gzip
    provider = LoggerProvider(resource=Resource.create({"service.name": "payments", "deployment.environment": "test"}),
                              shutdown_on_exit=False)
    exporter = OTLPLogExporter(endpoint=otlp_target.endpoint, timeout=30, **kwargs)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, schedule_delay_millis=50,
                                                              max_export_batch_size=100, max_queue_size=4096))
    logger = provider.get_logger("billing.audit", "2.1.0", attributes={"team": "ledger"})
    n = 700
    base = 1_765_000_000_000_000_000
    for i in range(n):
        ctx = set_span_in_context(NonRecordingSpan(SpanContext(
            trace_id=0x5B8EFFF798038103D269B633813FC000 + i, span_id=0xEEE19B7EC3C10000 + i, is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED))))
        logger.emit(timestamp=base + i, context=ctx, severity_number=SeverityNumber.WARN, severity_text="WARN",
                    body={"msg": f"refund {i}", "amount": i * 1.5},
                    attributes={"i": i, "user": "alice", "tags": ["a", "b"], "ok": i % 2 == 0,
                                "password": "hunter2"},
                    event_name="audit.refund")
    assert provider.force_flush(30_000)
    provider.shutdown()
    otlp_target.server.proc.stdin.close()  # type: ignore[union-attr]
    otlp_target.server.proc.wait(30)

    events = stored_raw(otlp_target.hot)
    by_i: dict[int, list[dict[str, Any]]] = {}
    for ev in events:
        by_i.setdefault(ev["attributes"]["i"], []).append(ev)
    assert sorted(by_i) == list(range(n)), "every record stored"
    assert all(len(v) == 1 for v in by_i.values()), "each exactly once"
    for i, (ev,) in by_i.items():
        assert ev["time"] == f"2025-12-06T05:46:40.{i:09d}Z"
        assert ev["observed_time"].endswith("Z")
        assert ev["severity_number"] == 13 and ev["severity_text"] == "WARN"
        assert ev["event_name"] == "audit.refund"
        assert ev["body"] == {"msg": f"refund {i}", "amount": i * 1.5}
        assert ev["attributes"] == {"i": i, "user": "alice", "tags": ["a", "b"], "ok": i % 2 == 0,
                                    "password": "[REDACTED:secret-key]"}
        for key, value in otlp_target.expect_in_event.items():
            assert ev[key] == value, key
        assert next(iter(ev)) == "_sender"  # docs/FORMAT.md §1.2: the first key
        assert ev["trace_id"] == f"{0x5B8EFFF798038103D269B633813FC000 + i:032x}"
        assert ev["span_id"] == f"{0xEEE19B7EC3C10000 + i:016x}"
        assert ev["flags"] == 1
        assert ev["resource"]["attributes"]["service.name"] == "payments"
        assert ev["resource"]["attributes"]["deployment.environment"] == "test"
        assert ev["scope"] == {"name": "billing.audit", "version": "2.1.0", "attributes": {"team": "ledger"}}
    segments = b"".join(p.read_bytes() for p in (otlp_target.hot / STREAM).glob("seg-*"))
    assert b"hunter2" not in segments


# ------------------------------------------------------------------ encodings

# The shape of the specification's example payload (opentelemetry-proto examples/logs.json:
# hex ids in upper case, every AnyValue kind, lowerCamelCase keys), with values of our own
# and what it leaves out: 64-bit integers as strings, an enum as an integer, bytes,
# schema URLs, a record without a timestamp, and an unknown field (MUST be ignored).
SPEC_SHAPED = {
    "resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
        "schemaUrl": "https://opentelemetry.io/schemas/1.26.0",
        "scopeLogs": [{
            "scope": {"name": "shop.audit", "version": "3.0.1",
                      "attributes": [{"key": "scope.attr", "value": {"stringValue": "s"}}]},
            "logRecords": [{
                "timeUnixNano": "1544712660300000000",
                "observedTimeUnixNano": 1544712660300000001,
                "severityNumber": 10,
                "severityText": "Information",
                "traceId": "5B8EFFF798038103D269B633813FC60C",
                "spanId": "EEE19B7EC3C1B174",
                "flags": 1,
                "body": {"stringValue": "order 42 paid"},
                "attributes": [
                    {"key": "string.attribute", "value": {"stringValue": "some string"}},
                    {"key": "boolean.attribute", "value": {"boolValue": True}},
                    {"key": "int.attribute", "value": {"intValue": "9223372036854775807"}},
                    {"key": "double.attribute", "value": {"doubleValue": 637.704}},
                    {"key": "bytes.attribute", "value": {"bytesValue": base64.b64encode(b"\x00\xff").decode()}},
                    {"key": "array.attribute", "value": {"arrayValue": {"values": [
                        {"stringValue": "many"}, {"intValue": 2}]}}},
                    {"key": "map.attribute", "value": {"kvlistValue": {"values": [
                        {"key": "some.map.key", "value": {"stringValue": "some value"}}]}}},
                    {"key": "empty.attribute", "value": {}},
                ],
                "someFutureField": {"ignored": True},
            }, {
                "body": {"stringValue": "no timestamp"},
            }],
        }],
    }],
}

SPEC_SHAPED_EVENTS = [{
    "time": "2018-12-13T14:51:00.300000000Z",
    "observed_time": "2018-12-13T14:51:00.300000001Z",
    "severity_number": 10,
    "severity_text": "Information",
    "body": "order 42 paid",
    "attributes": {"string.attribute": "some string", "boolean.attribute": True,
                   "int.attribute": 9223372036854775807, "double.attribute": 637.704, "bytes.attribute": "AP8=",
                   "array.attribute": ["many", 2], "map.attribute": {"some.map.key": "some value"},
                   "empty.attribute": None},
    "trace_id": "5b8efff798038103d269b633813fc60c",
    "span_id": "eee19b7ec3c1b174",
    "flags": 1,
    "resource": {"attributes": {"service.name": "checkout"}, "schema_url": "https://opentelemetry.io/schemas/1.26.0"},
    "scope": {"name": "shop.audit", "version": "3.0.1", "attributes": {"scope.attr": "s"}},
}, {
    "body": "no timestamp",
    "resource": {"attributes": {"service.name": "checkout"}, "schema_url": "https://opentelemetry.io/schemas/1.26.0"},
    "scope": {"name": "shop.audit", "version": "3.0.1", "attributes": {"scope.attr": "s"}},
}]


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_json_encoding_of_the_spec_shaped_payload(server: tuple[IngestServer, Path], encoding: str | None) -> None:
    srv, hot = server
    body = json.dumps(SPEC_SHAPED, indent=2).encode()
    headers = {}
    if encoding:
        body, headers = gzip.compress(body), {"Content-Encoding": encoding}
    code, h, data = post(addr_of(srv), body, "application/json; charset=utf-8", headers)
    assert code == 200, data
    assert h["content-type"].startswith(JSON)
    assert json.loads(data) == {}  # full success: partial_success unset
    assert stored(hot) == SPEC_SHAPED_EVENTS


def test_protobuf_and_json_give_the_same_events(server: tuple[IngestServer, Path]) -> None:
    srv, hot = server
    req = logs_service_pb2.ExportLogsServiceRequest()
    json_format.ParseDict(_hex_to_base64(SPEC_SHAPED), req, ignore_unknown_fields=True)
    code, h, data = post(addr_of(srv), req.SerializeToString())
    assert code == 200 and h["content-type"] == PROTOBUF
    assert not response(data).HasField("partial_success")
    assert stored(hot) == SPEC_SHAPED_EVENTS


def _hex_to_base64(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: (base64.b64encode(bytes.fromhex(v)).decode() if k in ("traceId", "spanId") else _hex_to_base64(v))
                for k, v in doc.items()}
    if isinstance(doc, list):
        return [_hex_to_base64(x) for x in doc]
    return doc


def test_values_the_json_profile_cannot_hold(server: tuple[IngestServer, Path]) -> None:
    """NaN and the infinities are spelled as OTLP/JSON spells them; bytes are base64;
    an unset body is null; a record without any timestamp has neither time key."""
    srv, hot = server
    rec = logs_pb2.LogRecord()
    rec.attributes.extend([kv("nan", math.nan), kv("inf", math.inf), kv("-inf", -math.inf), kv("neg0", -0.0),
                           kv("blob", b"\x00\x01\x02"), kv("big", -(2**63))])
    rec.body.SetInParent()
    code, _, data = post(addr_of(srv), request(rec).SerializeToString())
    assert code == 200, data
    (ev,) = stored(hot)
    assert ev["attributes"] == {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity", "neg0": -0.0, "blob": "AAEC",
                                "big": -(2**63)}
    assert ev["body"] is None
    assert "time" not in ev and "observed_time" not in ev


# ------------------------------------------------------------------ partial success and refusals


def test_partial_success_stores_the_others(server: tuple[IngestServer, Path]) -> None:
    srv, hot = server
    dup = record(1)
    dup.attributes.append(kv("i", 99))  # OTLP: keys MUST be unique
    strindex = record(2)
    strindex.attributes.add(key_strindex=3)  # a profiles-only string table reference
    big = record(3, blob="x" * (70 << 10))  # over max_event_bytes (64 KiB)
    req = request(record(0), dup, strindex, big, record(4))
    code, h, data = post(addr_of(srv), req.SerializeToString())
    assert code == 200, data
    assert "retry-after" not in h
    msg = response(data)
    assert msg.partial_success.rejected_log_records == 3
    text = msg.partial_success.error_message
    assert "#2: duplicate-key" in text and "#3: bad-otlp" in text and "#4: too-large" in text
    assert [ev["attributes"]["i"] for ev in stored(hot)] == [0, 4]


def _nested_json(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(levels):
        value = {"arrayValue": {"values": [value]}}
    return value


def test_nesting_limits(server: tuple[IngestServer, Path]) -> None:
    """JSON: a value nested past the event depth (64) refuses its record (too-deep).
    Protobuf: the parser stops at 100 message levels (about 48 of AnyValue), so a deeper
    record makes the request undecodable (400)."""
    srv, hot = server
    ok, deep = _nested_json(40), _nested_json(70)
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"body": ok}, {"body": deep}, {"body": {"stringValue": "flat"}}]}]}]}
    code, _, data = post(addr_of(srv), orjson.dumps(doc), JSON)
    assert code == 200, data
    msg = response(data, JSON)
    assert msg.partial_success.rejected_log_records == 1 and "#2: too-deep" in msg.partial_success.error_message
    evs = stored(hot)
    assert len(evs) == 2 and evs[1]["body"] == "flat"
    assert json.dumps(evs[0]["body"]).count("[") == 40
    deep_pb = common_pb2.AnyValue()
    json_format.ParseDict(_nested_json(55), deep_pb, max_recursion_depth=1000)  # building it is allowed
    body = _field(1, _field(2, _field(2, _field(5, deep_pb.SerializeToString()))))
    code, _, data = post(addr_of(srv), body)
    assert code == 400 and "cannot be decoded" in status(data).message
    assert len(stored(hot)) == 2


def test_every_record_refused_is_400_with_bad_request_details(server: tuple[IngestServer, Path]) -> None:
    srv, hot = server
    dup = record(1)
    dup.attributes.append(kv("i", 2))
    for ctype in (PROTOBUF, JSON):
        req = request(dup)
        body = (req.SerializeToString() if ctype == PROTOBUF else
                orjson.dumps(json_format.MessageToDict(req, use_integers_for_enums=True)))
        code, h, data = post(addr_of(srv), body, ctype)
        assert code == 400 and h["content-type"] == ctype and "retry-after" not in h
        st = status(data, ctype)
        assert "nothing was stored" in st.message
        bad = error_details_pb2.BadRequest()
        assert st.details[0].Unpack(bad)
        assert "log record #1: duplicate-key" in bad.field_violations[0].description
    assert stored(hot) == []


def test_empty_request_is_success(server: tuple[IngestServer, Path]) -> None:
    srv, hot = server
    for body, ctype in ((b"", PROTOBUF), (b"{}", JSON), (b'{"resourceLogs":[]}', JSON),
                        (b"\x0a\x00", PROTOBUF)):
        code, h, data = post(addr_of(srv), body, ctype)
        assert code == 200 and h["content-type"] == ctype, data
        assert not response(data, ctype).HasField("partial_success")
    assert stored(hot) == []


@pytest.mark.parametrize("body,ctype", [
    (b"\x0a\x05\x12\x03\x12\x01", PROTOBUF),  # a length running past its message
    (b"\x0a\x02\x12\xff", PROTOBUF),  # a truncated varint
    (b"\x0f", PROTOBUF),  # wire type 7
    (b"\x0b" * 1000, PROTOBUF),  # unknown groups nested 1,000 deep
    (b"\x0b\x14", PROTOBUF),  # a group closed by another field's END_GROUP
    (b"\x0a\x04\x12\x02\x12\x00\x0a\x02\x12\x01", PROTOBUF),  # the second ResourceLogs is cut short
    (request(record(0)).SerializeToString()[:-3], PROTOBUF),
    (b"\x0a\x06\x12\x04\x12\x02\x1a\x02", PROTOBUF),  # a LogRecord whose severity_text is cut
    (b"\x0a\x07\x12\x05\x12\x03\x1a\x01\xff", PROTOBUF),  # severity_text not UTF-8
    (b'{"resourceLogs":[', JSON),
    (b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"XYZ"}]}]}]}', JSON),
    (b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"loud"}]}]}]}', JSON),
    (b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":1,"stringValue":2}}]}]}]}', JSON),
    (b'{"resourceLogs":{}}', JSON),
    (b'[]', JSON),
    (b'{"resourceLogs":[]} {}', JSON),
])
def test_undecodable_request_is_400_and_stores_nothing(server: tuple[IngestServer, Path], body: bytes,
                                                        ctype: str) -> None:
    srv, hot = server
    good = request(record(7)).SerializeToString()
    if ctype == PROTOBUF:  # a good ResourceLogs first: nothing of it may be stored either
        body = good + body
    code, h, data = post(addr_of(srv), body, ctype)
    assert code == 400, data
    assert h["content-type"] == ctype and "retry-after" not in h
    assert "not valid" in status(data, ctype).message
    assert body[:40] not in data or len(body) < 4  # the answer does not echo the request
    assert stored(hot) == []


def test_status_codes(server: tuple[IngestServer, Path]) -> None:
    srv, hot = server
    addr = addr_of(srv)
    good = request(record(0)).SerializeToString()
    code, h, data = post(addr, good, "text/plain")
    assert code == 415 and h["content-type"] == JSON and "application/x-protobuf" in status(data, JSON).message
    code, h, _ = post(addr, good, None)
    assert code == 415
    code, h, _ = post(addr, good, PROTOBUF, {"Content-Encoding": "br"})
    assert code == 415 and h["content-type"] == PROTOBUF
    code, h, _ = post(addr, b"", PROTOBUF, method="GET")
    assert code == 405 and h["allow"] == "POST"
    code, h, data = post(addr, good, PROTOBUF, {"Content-Encoding": "gzip"})
    assert code == 400 and "gzip" in status(data).message
    code, h, data = post(addr, b"x" * ((1 << 20) + 1), PROTOBUF)
    assert code == 413 and h["content-type"] == PROTOBUF and "retry-after" not in h
    assert "over the limit" in status(data).message
    assert stored(hot) == []


def test_gzip_bomb_is_413(server: tuple[IngestServer, Path]) -> None:
    srv, hot = server
    bomb = gzip.compress(b"\x0a\x00" * (32 << 20))  # 64 MiB of empty ResourceLogs once inflated
    code, _, data = post(addr_of(srv), bomb, PROTOBUF, {"Content-Encoding": "gzip"})
    assert code == 413 and "decompressed body is over the limit" in status(data).message
    assert stored(hot) == []


def test_expansion_limit(hot_dir: Path) -> None:
    """Resource attributes are copied into every event: a request that expands past twice
    max_request_bytes is refused (413) before anything is stored."""
    log = HotLog(hot_dir, STREAM, durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(log, http_listen="127.0.0.1:0", max_request_bytes=256 << 10).start()
    try:
        req = request(*[logs_pb2.LogRecord() for _ in range(2000)], resource={"blob": "r" * 400})
        code, _, data = post(addr_of(srv), req.SerializeToString())
        assert code == 413 and "send smaller batches" in status(data).message
        assert stored(hot_dir) == []
    finally:
        srv.stop(5)
        log.close()


def test_backpressure_429_is_retryable(hot_dir: Path) -> None:
    log = HotLog(hot_dir, STREAM, durability="group", heartbeat_interval=0, segment_window=0)
    pressure: list[str | None] = ["hot disk above its high-water mark"]
    srv = IngestServer(log, http_listen="127.0.0.1:0", backpressure=lambda: pressure[0]).start()
    addr = addr_of(srv)
    try:
        code, h, data = post(addr, request(record(0)).SerializeToString())
        assert code == 429 and h["retry-after"] == "1" and h["content-type"] == PROTOBUF
        assert "backpressure" in status(data).message
        pressure[0] = None
        assert post(addr, request(record(1)).SerializeToString())[0] == 200
    finally:
        srv.stop(5)
    assert [ev["attributes"]["i"] for ev in stored(hot_dir)] == [1]
    log.close()


def test_storage_failure_is_503_with_retry_after(hot_dir: Path) -> None:
    log = HotLog(hot_dir, STREAM, durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(log, http_listen="127.0.0.1:0").start()
    try:
        log.close()  # the log cannot store any more
        code, h, data = post(addr_of(srv), request(record(0)).SerializeToString())
        assert code == 503 and h["retry-after"] == "1"
        assert "could not store" in status(data).message
    finally:
        srv.stop(5)


def test_redaction_scans_body_and_attributes(server: tuple[IngestServer, Path]) -> None:
    srv, hot = server
    rec = record(0, token="abc", note="login with password=hunter2 ok")
    rec.body.string_value = "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    req = request(rec, resource={"db.url": "postgres://app:s3cret@db/x"})
    assert post(addr_of(srv), req.SerializeToString())[0] == 200
    (ev,) = stored(hot)
    assert ev["attributes"]["token"] == "[REDACTED:secret-key]"
    assert ev["attributes"]["note"] == "login with password=[REDACTED:kv-secret] ok"
    assert "eyJ" not in ev["body"]
    assert ev["resource"]["attributes"]["db.url"] == "postgres://app:[REDACTED:url-credentials]@db/x"


# ------------------------------------------------------------------ the wire walk


def _reference_events(req: logs_service_pb2.ExportLogsServiceRequest) -> list[Any]:
    """The same mapping over protobuf's own parse of the whole request."""
    out: list[Any] = []
    clock = otlp._Clock()
    for rl in req.resource_logs:
        res = otlp._resource(rl.resource if rl.HasField("resource") else None, rl.schema_url)
        for sl in rl.scope_logs:
            sc = otlp._scope(sl.scope if sl.HasField("scope") else None, sl.schema_url)
            out.extend(orjson.loads(orjson.dumps(otlp._event(r, clock, res, sc))) for r in sl.log_records)
    return out


def _walked(body: bytes) -> list[Any]:
    out = []
    for chunk in otlp.iter_events(body, otlp.PROTOBUF, 1 << 20):
        for _n, item in chunk:
            assert isinstance(item, dict), item
            out.append(orjson.loads(orjson.dumps(item)))
    return out


def _field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2]) + _varint(len(payload)) + payload


def test_wire_walk_matches_protobufs_parser() -> None:
    """Fields in any order, a repeated resource (merged), unknown fields of every wire type
    (groups included), several groups: the walk reads what protobuf's parser reads."""
    r0 = record(0).SerializeToString()
    r1 = record(1, k="v").SerializeToString()
    res_a = kv("a", 1).SerializeToString()
    res_b = kv("b", "x").SerializeToString()
    scope = common_pb2.InstrumentationScope(name="s", version="1").SerializeToString()
    unknown = b"\x78\x05" + b"\x81\x01" + b"12345678" + b"\x8d\x01" + b"1234" + b"\x93\x01\x08\x01\x94\x01"
    scope_logs = _field(2, r0) + unknown + _field(1, scope) + _field(2, r1) + _field(3, b"https://s")
    resource_logs = (_field(2, scope_logs) + _field(1, _field(1, res_a)) + unknown + _field(3, b"https://r")
                     + _field(1, _field(1, res_b)) + _field(2, _field(2, r1)))
    body = _field(1, resource_logs) + unknown + _field(1, _field(2, _field(2, r0)))
    req = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
    expected = _reference_events(req)
    assert len(expected) == 4
    assert expected[0]["resource"] == {"attributes": {"a": 1, "b": "x"}, "schema_url": "https://r"}
    assert _walked(body) == expected


def test_wire_walk_on_sdk_encoded_batches() -> None:
    rng = __import__("random").Random(17)
    for _ in range(30):
        req = logs_service_pb2.ExportLogsServiceRequest()
        for _r in range(rng.randint(0, 3)):
            rl = req.resource_logs.add(schema_url=rng.choice(["", "u"]))
            if rng.random() < 0.7:
                rl.resource.attributes.append(kv("service.name", f"s{rng.randint(0, 9)}"))
            for _s in range(rng.randint(0, 3)):
                sl = rl.scope_logs.add()
                if rng.random() < 0.5:
                    sl.scope.name = "n"
                for i in range(rng.randint(0, 5)):
                    sl.log_records.append(record(i, x=rng.random(), flag=rng.random() < 0.5))
        body = req.SerializeToString()
        assert _walked(body) == _reference_events(req)


# ------------------------------------------------------------------ memory


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["empty records", "tiny attributes", "gzip bomb of empty records",
                                   "JSON empty records"])
def test_peak_rss_bounded_under_worst_otlp_bodies(tmp_path: Path, shape: str) -> None:
    """Protobuf's smallest pieces (2 bytes on the wire, hundreds as parsed objects) fill a
    request: the server's peak RSS stays within the bound of docs/INGEST.md §3.6."""
    from tests.ingest.test_ingest_memory import CONSTANT_KIB, EVENT, LIMIT

    if shape == "empty records":
        n = (LIMIT // 2) // 2  # half the limit: 524,288 records already take ~10 s to store
        headers: dict[str, str] = {}
        body = _field(1, _field(2, b"\x12\x00" * n))
    elif shape == "tiny attributes":  # each record as long as allowed, of 7-byte KeyValues with distinct keys
        alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        keys = (bytes([a, b, c]) for a in alphabet for b in alphabet for c in alphabet)
        rec = b"".join(b"\x32\x05\x0a\x03" + k for k, _ in zip(keys, range((2 * EVENT - 16) // 7), strict=False))
        one = _field(2, rec)
        count = (LIMIT - 32) // len(one)
        inner = one * count
        body, headers = _field(1, _field(2, inner)), {}
    elif shape == "JSON empty records":
        n = (LIMIT // 2) // 3  # half the limit: parsing OTLP/JSON costs ~10 us per record
        body = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[' + b",".join([b"{}"] * n) + b"]}]}]}"
        headers = {"Content-Type": JSON}
    else:
        n = (64 << 20) // 2
        raw = _field(1, _field(2, b"\x12\x00" * n))
        body, headers = gzip.compress(raw), {"Content-Encoding": "gzip"}
    assert len(body) <= LIMIT
    with ingest_process(tmp_path, LIMIT, "--max-event-bytes", str(EVENT)) as srv:
        assert post(srv.addr, request(record(0)).SerializeToString())[0] == 200
        base = srv.vm_hwm_kib()
        started = time.monotonic()
        code, _, data = post(srv.addr, body, headers.pop("Content-Type", PROTOBUF), headers)
        grown = srv.vm_hwm_kib() - base
        print(f"{shape}: {code} in {time.monotonic() - started:.1f} s, peak RSS +{grown >> 10} MiB")
        assert len(data) < 4096
    assert code in (200, 400, 413), data
    assert grown <= CONSTANT_KIB + 4 * (LIMIT >> 10), grown


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


# ------------------------------------------------------------------ the Collector's otlphttp exporter, replayed

COLLECTOR_HEADERS = {"User-Agent": "OpenTelemetry Collector Contrib/0.165.1 (linux/amd64)",
                     "Content-Encoding": "gzip", "Authorization": "Bearer coll-t0ken"}


def test_collector_otlphttp_wire_format(hot_dir: Path) -> None:
    """What the Collector's otlphttp exporter sends (exporter/otlphttpexporter/otlp.go: a
    protobuf ExportLogsServiceRequest, gzip by default, the configured headers) and what it
    reads back: a 2xx body parsed as ExportLogsServiceResponse by its Content-Type (exact
    match), a 4xx/5xx body as google.rpc.Status.  A real Collector runs in
    tests/ingest/test_otelcol.py (mutual TLS); this replay covers what that one does not:
    a bearer token, a partial success, a 401."""
    log = HotLog(hot_dir, STREAM, durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(log, http_listen="127.0.0.1:0", token="coll-t0ken", token_name="collector-token").start()
    try:
        addr = addr_of(srv)
        dup = record(2)
        dup.attributes.append(kv("i", 3))
        body = gzip.compress(request(record(0), record(1), dup).SerializeToString())
        code, h, data = post(addr, body, PROTOBUF, COLLECTOR_HEADERS)
        assert code == 200 and h["content-type"] == PROTOBUF
        assert response(data).partial_success.rejected_log_records == 1
        code, h, data = post(addr, body, PROTOBUF, {**COLLECTOR_HEADERS, "Authorization": "Bearer wrong"})
        assert code == 401 and h["content-type"] == PROTOBUF and "www-authenticate" in h
        assert "token" in status(data).message
        assert [ev["attributes"]["i"] for ev in stored(hot_dir)] == [0, 1]
        # the bearer token's name is the sender (docs/FORMAT.md §1.2), as for /v1/events
        assert [ev["_sender"] for ev in stored_raw(hot_dir)] == \
            [{"auth": "token", "id": "collector-token", "peer": "127.0.0.1"}] * 2
    finally:
        srv.stop(5)
        log.close()


def test_mutual_tls_identity_not_allowed_is_403_on_logs(tmp_path: Path, hot_dir: Path) -> None:
    """The allow-list of client identities covers /v1/logs like /v1/events: a certificate
    from the right CA with another identity gets a 403 (as a google.rpc.Status), and
    nothing is stored."""
    import ssl

    from pipeline.ingest.tls import TlsSettings

    pki = tmp_path / "pki"
    pki.mkdir()
    ca = CA(pki)
    server, stranger = ca.server(), ca.issue("stranger", uris=("spiffe://example.org/ns/x/sa/y",))
    log = HotLog(hot_dir, STREAM, durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(log, http_listen="127.0.0.1:0",
                       tls=TlsSettings(server.cert, server.key, ca.path, allowed_clients=(f"uri:{SPIFFE}",))).start()
    try:
        ctx = ssl.create_default_context(cafile=str(ca.path))
        ctx.load_cert_chain(str(stranger.cert), str(stranger.key))
        conn = http.client.HTTPSConnection("127.0.0.1", addr_of(srv)[1], context=ctx, timeout=10)
        try:
            conn.request("POST", "/v1/logs", body=request(record(0)).SerializeToString(),
                         headers={"Content-Type": PROTOBUF})
            resp = conn.getresponse()
            code, ctype, data = resp.status, resp.getheader("Content-Type"), resp.read()
        finally:
            conn.close()
        assert code == 403 and ctype == PROTOBUF
        assert "not allowed" in status(data).message
        assert not (hot_dir / STREAM).exists() or stored(hot_dir) == []
    finally:
        srv.stop(5)
        log.close()


def test_a_refused_resource_refuses_its_records_only(server: tuple[IngestServer, Path]) -> None:
    srv, hot = server
    bad = request(record(0), record(1))
    bad.resource_logs[0].resource.attributes.append(kv("service.name", "again"))
    good = request(record(2))
    bad.resource_logs.extend(good.resource_logs)
    code, _, data = post(addr_of(srv), bad.SerializeToString())
    assert code == 200, data
    msg = response(data)
    assert msg.partial_success.rejected_log_records == 2
    assert "#1: duplicate-key: the record's resource cannot be stored" in msg.partial_success.error_message
    assert [ev["attributes"]["i"] for ev in stored(hot)] == [2]


def test_an_undecodable_record_under_a_refused_resource_is_still_400(server: tuple[IngestServer, Path]) -> None:
    """A record refused with its resource is still decoded: a request with an undecodable
    record is undecodable (400, nothing stored), whatever else is wrong with it."""
    srv, hot = server
    req = request(record(0))
    req.resource_logs[0].resource.attributes.append(kv("service.name", "again"))
    good = request(record(1))
    req.resource_logs.extend(good.resource_logs)
    body = req.SerializeToString()
    rec = record(0).SerializeToString()
    at = body.index(rec)
    broken = body[:at] + b"\x1a\x7f" + body[at + 2:]  # a severity_text of 127 bytes: past the record
    assert len(broken) == len(body)
    code, _, data = post(addr_of(srv), broken)
    assert code == 400, data
    assert "cannot be decoded" in status(data).message
    assert stored(hot) == []
