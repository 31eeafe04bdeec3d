"""The exact bytes OTLP records are stored as (docs/FORMAT.md §3.1), pinned.

A stored event is hashed into the chain: a faster decoder that changed one byte of what a
record becomes (a key order, a number's spelling, an escape) would make the same request
verify differently than before.  This test decodes one fixed request holding every kind of
field (every AnyValue type, nested kvlists and arrays, bytes, ids, resource and scope with
attributes and entity refs, severity, both timestamps, values the JSON profile cannot hold,
values the sanitiser redacts, records it refuses) through ingest's own path into a real
hot log, and compares each stored event's JSON text, byte for byte, with what the decoder
produced when the test was written.  Over protobuf and over OTLP/JSON: the same bytes.
"""

from __future__ import annotations

import base64
import math
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from pipeline.hot.writer import HotLog
from pipeline.ingest import otlp
from pipeline.ingest.server import IngestServer
from pipeline.ingest.tls import PeerIdentity
from tests.hotutil import records
from tests.ingest.otlputil import any_value, kv

STREAM = "app"
T0 = 1_765_000_000_123_456_789  # 2025-12-06T05:46:40.123456789Z


def kvs(items: dict[str, Any]) -> list[common_pb2.KeyValue]:
    return [kv(k, v) for k, v in items.items()]


EVERY_KIND: dict[str, Any] = {
    "s": "text", "empty": "", "unicode": "значение ✓ 😀 \u2028", "escapes": 'quote " backslash \\ nul \x00 tab \t',
    "int": 42, "zero": 0, "neg": -7, "int64.max": 2**63 - 1, "int64.min": -(2**63),
    "t": True, "f": False,
    "double": 0.1, "third": 1 / 3, "big": 1e300, "tiny": 5e-324, "negzero": -0.0, "whole": 3.0,
    "nan": math.nan, "inf": math.inf, "-inf": -math.inf,
    "bytes": b"\x00\x01\xfe\xff", "empty.bytes": b"", "nothing": None,
    "array": [1, "two", 3.5, False, None, b"\x07", [], {}],
    "kvlist": {"inner": {"deeper": [{"k": "v"}, [1, [2, [3]]]], "n": None}, "list": ["a", {"b": 1}]},
}


def full_record() -> logs_pb2.LogRecord:
    rec = logs_pb2.LogRecord(time_unix_nano=T0, observed_time_unix_nano=T0 + 1_000, severity_text="ERROR",
                             event_name="user.login", trace_id=bytes(range(16)), span_id=bytes(range(8, 16)),
                             flags=0x101, dropped_attributes_count=3)
    rec.severity_number = 17  # type: ignore[assignment]
    rec.body.kvlist_value.values.extend(kvs({"message": "failed login", "nested": EVERY_KIND}))
    rec.attributes.extend(kvs(EVERY_KIND))
    rec.attributes.append(kv("ключ", "unicode key"))
    return rec


def fixed_request() -> logs_service_pb2.ExportLogsServiceRequest:
    req = logs_service_pb2.ExportLogsServiceRequest()
    rl = req.resource_logs.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
    rl.resource.attributes.extend(kvs({"service.name": "orders", "service.instance.id": b"\x01\x02",
                                       "k8s.pod.uid": 12345, "deploy": {"region": "eu", "zones": ["a", "b"]}}))
    rl.resource.dropped_attributes_count = 2
    rl.resource.entity_refs.add(type="service", id_keys=["service.name", "service.namespace"],
                                      description_keys=["service.version"], schema_url="https://e")
    rl.resource.entity_refs.add(type="host", id_keys=["host.id"])
    sl = rl.scope_logs.add(schema_url="https://s")
    sl.scope.name, sl.scope.version = "orders.audit", "1.2.3"
    sl.scope.attributes.extend(kvs({"lib.api_key": "not-a-real-key", "lib.kind": "audit"}))
    sl.scope.dropped_attributes_count = 1

    sl.log_records.append(full_record())
    sl.log_records.append(logs_pb2.LogRecord())  # nothing set: resource and scope only
    no_value = logs_pb2.LogRecord(observed_time_unix_nano=1)  # no time; body set without a value
    no_value.body.SetInParent()
    sl.log_records.append(no_value)
    secrets = logs_pb2.LogRecord(time_unix_nano=T0, severity_text="WARN")
    secrets.body.string_value = ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl "
                                 "from postgres://app:s3cret@db/x key AKIAIOSFODNN7EXAMPLE")
    secrets.attributes.extend(kvs({"password": "hunter2", "note": "login with password=hunter2 ok",
                                   "card": 4111111111111111, "card.text": "4111 1111 1111 1111",
                                   "nested": {"token": "abc", "ok": "fine"}}))
    sl.log_records.append(secrets)
    dup = logs_pb2.LogRecord(time_unix_nano=T0)
    dup.attributes.extend([kv("same", 1), kv("same", 2)])
    sl.log_records.append(dup)  # refused: duplicate-key
    odd = logs_pb2.LogRecord(time_unix_nano=17_000_000_000_000_000_000 + 9, trace_id=b"\xab\xcd\xef",
                             span_id=b"\x00")
    odd.severity_number = 1000  # type: ignore[assignment]  # not in the enum: kept as sent
    odd.body.array_value.values.extend([any_value(b"\xff" * 5), any_value("x")])
    sl.log_records.append(odd)

    plain = rl.scope_logs.add()  # no scope, no schema: no "scope" key
    plain.log_records.append(logs_pb2.LogRecord(time_unix_nano=T0 + 5, severity_text="INFO"))
    plain.log_records[0].body.string_value = "plain scope"

    rl2 = req.resource_logs.add(schema_url="https://only-a-schema")
    sl2 = rl2.scope_logs.add()
    sl2.scope.name = "only-a-name"
    rec = sl2.log_records.add(time_unix_nano=1, severity_text="DEBUG")
    rec.body.int_value = -1

    rl3 = req.resource_logs.add()  # an empty resource: no "resource" key
    rl3.resource.SetInParent()
    rec = rl3.scope_logs.add().log_records.add()
    rec.body.double_value = math.inf
    return req


def json_body(req: logs_service_pb2.ExportLogsServiceRequest) -> bytes:
    """OTLP/JSON of ``req``: proto3 JSON with hex trace and span ids."""
    doc = json_format.MessageToDict(req, use_integers_for_enums=True)

    def hexed(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (base64.b64decode(v).hex() if k in ("traceId", "spanId") else hexed(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [hexed(x) for x in node]
        return node

    return orjson.dumps(hexed(doc))


SENDER = PeerIdentity("x509", "spiffe://example.org/exporter", "127.0.0.1")

# What fixed_request() is stored as: each event's JSON text (the record's "data"), one a
# line, in order.  Written by the decoder of commit dc64b22 (before the OTLP fast path).
# Never regenerate it to make this test pass: a difference is a change of the stored
# format (docs/FORMAT.md §3.1), which records already in logs do not follow.
EXPECTED = (Path(__file__).parent / "otlp_stored_events.jsonl").read_bytes().split(b"\n")[:-1]
EXPECTED_REFUSED = [(5, "duplicate-key")]


def stored_data(hot: Path) -> list[bytes]:
    out = []
    for r in records(hot / STREAM):
        if r.kind == "event":
            line = r.line
            out.append(line[line.index(b',"data":') + 8:line.rindex(b',"hash":')])
    return out


@pytest.mark.parametrize("use_c", [True, False], ids=["C", "python"])
@pytest.mark.parametrize("framing", [otlp.PROTOBUF, otlp.JSON])
def test_stored_bytes_are_pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, framing: str,
                                 use_c: bool) -> None:
    """With and without the C conversion of protobuf records (pipeline._native.otlp_event)."""
    if use_c:
        if os.environ.get("PIPELINE_NO_NATIVE") == "1":
            pytest.skip("the C accelerator is off on purpose (PIPELINE_NO_NATIVE=1)")
        assert otlp._fast_event is not otlp._declined, "the C accelerator is not built"
    else:
        monkeypatch.setattr(otlp, "_fast_event", otlp._declined)
    req = fixed_request()
    body = req.SerializeToString() if framing == otlp.PROTOBUF else json_body(req)
    log = HotLog(tmp_path, STREAM, durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(log, http_listen="127.0.0.1:0")  # not started: ingest_body is the request's path
    try:
        result = srv.ingest_body([body], framing, SENDER, partial=True)
    finally:
        log.close(seal=False)
    assert result.status == 200, result.body
    assert [(e["event"], e["error"].split(":")[0]) for e in result.body["errors"]] == EXPECTED_REFUSED
    got = stored_data(tmp_path)
    assert len(got) == len(EXPECTED)
    for i, (line, want) in enumerate(zip(got, EXPECTED, strict=True)):
        assert line == want, f"event {i}:\n got {line!r}\nwant {want!r}"
