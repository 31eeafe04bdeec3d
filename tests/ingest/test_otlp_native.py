"""The C conversion of protobuf log records (``pipeline._native.otlp_event``) against the
Python reference (protobuf's parse, then ``otlp._event``).

The C function may decline (None: the Python path decides) but whatever it accepts must
become exactly the event the Python path builds, byte for byte once serialised, and it
must accept nothing protobuf's parser would refuse.  Checked on random records of every
field kind, on the edge cases of each rule it declines on, and on random corruptions of
valid encodings.
"""

from __future__ import annotations

import math
import os
import random
import struct
from typing import Any

import orjson
import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from pipeline._accel import native
from pipeline.ingest import otlp
from pipeline.ingest.body import BodyError

if native is None:
    pytestmark = pytest.mark.skip(reason="the C accelerator is not built or is off (PIPELINE_NO_NATIVE=1)")
    if os.environ.get("PIPELINE_NO_NATIVE") != "1":
        raise RuntimeError("pipeline._native is not built: run setup.py build_ext --inplace")

RESOURCE = {"attributes": {"service.name": "svc"}, "schema_url": "https://r"}
SCOPE = {"name": "lib"}


def reference(data: bytes, resource: Any = RESOURCE, scope: Any = SCOPE) -> bytes | str:
    """The event JSON the Python path makes of one encoded record, or why it cannot."""
    try:
        rec = logs_pb2.LogRecord.FromString(data)
    except DecodeError:
        return "undecodable"
    try:
        return orjson.dumps(otlp._event(rec, otlp._Clock(), resource, scope))
    except otlp._Refused as exc:
        return exc.reason


def fast(data: bytes, resource: Any = RESOURCE, scope: Any = SCOPE) -> bytes | None:
    assert native is not None
    pad = b"\xff\x00junk"  # the record is a span inside a larger body
    out = native.otlp_event(pad + data + pad, len(pad), len(pad) + len(data), resource, scope)
    return None if out is None else orjson.dumps(out)


def check(data: bytes) -> bool:
    """C accepts only what Python accepts, with the same bytes; returns whether C accepted."""
    got = fast(data)
    if got is None:
        return False
    want = reference(data)
    assert got == want, (data.hex(), got, want)
    return True


# ------------------------------------------------------------------ random records


def rand_str(rng: random.Random) -> str:
    pool = ["", "a", "text", "ключ", "✓", "😀", "\x00", '"', "\\", "\u2028", "é" * 3, "password=x", "\x7f"]
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, 4)))


def rand_double(rng: random.Random) -> float:
    return rng.choice([0.0, -0.0, 0.1, 1 / 3, 1e300, -1e-300, 5e-324, math.nan, math.inf, -math.inf,
                       rng.uniform(-1e6, 1e6), float(2**53), 3.0])


def rand_any(rng: random.Random, depth: int) -> common_pb2.AnyValue:
    v = common_pb2.AnyValue()
    kind = rng.randrange(9 if depth < 6 else 7)
    if kind == 0:
        v.string_value = rand_str(rng)
    elif kind == 1:
        v.bool_value = rng.random() < 0.5
    elif kind == 2:
        v.int_value = rng.choice([0, 1, -1, 2**63 - 1, -(2**63), rng.randint(-(2**40), 2**40)])
    elif kind == 3:
        v.double_value = rand_double(rng)
    elif kind == 4:
        v.bytes_value = rng.randbytes(rng.randint(0, 7))
    elif kind == 5:
        pass  # no value
    elif kind == 6:
        v.string_value = ""
    elif kind == 7:
        v.array_value.SetInParent()
        v.array_value.values.extend(rand_any(rng, depth + 1) for _ in range(rng.randint(0, 3)))
    else:
        v.kvlist_value.SetInParent()
        v.kvlist_value.values.extend(rand_kvs(rng, depth + 1))
    return v


def rand_kvs(rng: random.Random, depth: int) -> list[common_pb2.KeyValue]:
    keys = rng.sample(["a", "b", "", "ключ", "x.y", "password", "😀", "k" * 20], rng.randint(0, 4))
    out = []
    for k in keys:
        kv = common_pb2.KeyValue(key=k)
        if rng.random() < 0.9:
            kv.value.CopyFrom(rand_any(rng, depth))
        out.append(kv)
    return out


def rand_record(rng: random.Random) -> logs_pb2.LogRecord:
    rec = logs_pb2.LogRecord()
    u64 = [0, 1, 999_999_999, 1_000_000_000, 1_765_000_000_123_456_789, 2**64 - 1, 951_782_400 * 10**9,
           rng.randrange(2**64)]
    if rng.random() < 0.8:
        rec.time_unix_nano = rng.choice(u64)
    if rng.random() < 0.8:
        rec.observed_time_unix_nano = rng.choice(u64)
    if rng.random() < 0.7:
        rec.severity_number = rng.choice([0, 1, 9, 24, 1000, -1, -(2**31), 2**31 - 1])  # type: ignore[assignment]
    if rng.random() < 0.5:
        rec.severity_text = rand_str(rng)
    if rng.random() < 0.3:
        rec.event_name = rand_str(rng)
    if rng.random() < 0.8:
        rec.body.CopyFrom(rand_any(rng, 1))
    rec.attributes.extend(rand_kvs(rng, 1))
    if rng.random() < 0.3:
        rec.dropped_attributes_count = rng.choice([0, 1, 2**32 - 1])
    if rng.random() < 0.6:
        rec.trace_id = rng.randbytes(rng.choice([16, 16, 0, 3]))
    if rng.random() < 0.6:
        rec.span_id = rng.randbytes(rng.choice([8, 8, 0, 1]))
    if rng.random() < 0.4:
        rec.flags = rng.choice([0, 1, 0x101, 2**32 - 1])
    return rec


def test_random_records_convert_exactly() -> None:
    rng = random.Random(1701)
    accepted = 0
    for _ in range(3000):
        accepted += check(rand_record(rng).SerializeToString())
    assert accepted == 3000  # well-formed records within the depth limit: all take the C path


def test_records_in_field_order_other_than_the_serialisers() -> None:
    """Fields come in any order on the wire; attributes interleaved with other fields."""
    rng = random.Random(7)
    for _ in range(300):
        rec = rand_record(rng)
        rec.attributes.extend(rand_kvs(rng, 1))
        pieces = []
        for fd, value in rec.ListFields():
            repeated = fd.name == "attributes"
            for one in (value if repeated else [value]):
                single = logs_pb2.LogRecord()
                if repeated:
                    getattr(single, fd.name).append(one)
                elif fd.message_type is not None:
                    getattr(single, fd.name).CopyFrom(one)
                else:
                    setattr(single, fd.name, one)
                pieces.append(single.SerializeToString())
        rng.shuffle(pieces)
        data = b"".join(pieces)
        if check(data):
            continue
        # declined only because a repeated key came together from two attribute lists
        assert reference(data) == "duplicate-key", data.hex()


# ------------------------------------------------------------------ what it declines


def tag(field: int, wt: int) -> bytes:
    return varint(field << 3 | wt)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def ld(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + varint(len(payload)) + payload


def any_of(**kw: Any) -> bytes:
    return bytes(common_pb2.AnyValue(**kw).SerializeToString())


DECLINED = {
    "time twice (the last one wins)": tag(1, 1) + bytes(8) + tag(1, 1) + struct.pack("<Q", 5),
    "severity_text twice": ld(3, b"a") + ld(3, b"b"),
    "body twice (merged)": ld(5, any_of(string_value="a")) + ld(5, any_of(int_value=1)),
    "two values in one AnyValue (the last one wins)": ld(5, any_of(string_value="a") + any_of(int_value=3)),
    "two kvlists in one AnyValue (merged)": ld(5, ld(6, ld(1, ld(1, b"a"))) + ld(6, ld(1, ld(1, b"b")))),
    "a key twice in one KeyValue": ld(6, ld(1, b"a") + ld(1, b"b")),
    "key_strindex": ld(6, tag(3, 0) + b"\x01" + ld(2, any_of(int_value=1))),
    "string_value_strindex": ld(5, tag(8, 0) + b"\x02"),
    "an unknown field": ld(3, b"INFO") + tag(99, 0) + b"\x01",
    "a field with another wire type": tag(3, 0) + b"\x01",
    "a group": tag(20, 3) + tag(20, 4),
    "invalid UTF-8 in a string": ld(3, b"\xff"),
    "a UTF-8 surrogate in a key": ld(6, ld(1, b"\xed\xa0\x80")),
    "a bool that is not 0 or 1": ld(5, tag(2, 0) + b"\x02"),
    "severity_number outside int32": tag(2, 0) + varint(2**31),
    "dropped_attributes_count outside uint32": tag(7, 0) + varint(2**32),
    "a varint of 11 bytes": tag(2, 0) + b"\x81" * 10 + b"\x01",
    "a 10-byte varint over 64 bits": tag(2, 0) + b"\xff" * 9 + b"\x02",
    "a length past the end": tag(3, 2) + b"\x05ab",
    "a truncated fixed64": tag(1, 1) + b"\x01\x02",
    "field number 0": b"\x02\x00",
    "a repeated attribute key": ld(6, ld(1, b"k")) + ld(6, ld(1, b"k")),
    "a repeated kvlist key": ld(5, ld(6, ld(1, ld(1, b"k")) + ld(1, ld(1, b"k")))),
    "an ArrayValue field other than values": ld(5, ld(5, tag(2, 0) + b"\x01")),
}


@pytest.mark.parametrize("name", list(DECLINED))
def test_declines(name: str) -> None:
    data = DECLINED[name]
    assert fast(data) is None
    reference(data)  # the Python path decides (an event, a refusal, or a 400), without surprises


def test_nesting_past_the_fast_limit_is_declined_and_python_decides() -> None:
    def nested(levels: int) -> bytes:
        v = any_of(string_value="leaf")
        for i in range(levels):
            v = ld(5, ld(1, v)) if i % 2 else ld(6, ld(1, ld(1, b"k") + ld(2, v)))
        return ld(5, v)

    assert check(nested(15))  # 16 levels of values: converted in C
    assert fast(nested(16)) is None
    assert isinstance(reference(nested(16)), bytes)


def test_accepted_edge_values() -> None:
    """What upb accepts and C converts itself, the same way."""
    cases = [
        b"",  # an empty record
        tag(1, 1) + struct.pack("<Q", 2**64 - 1) + tag(11, 1) + struct.pack("<Q", 1),  # year 2554; 1 ns
        tag(1, 1) + struct.pack("<Q", 0),  # time encoded as 0: absent
        tag(2, 0) + varint(2**64 - 2**31),  # severity -2**31, sign-extended
        tag(2, 0) + b"\x89\x80\x80\x80\x00",  # a non-minimal varint
        ld(3, b""),  # an empty string, encoded: absent
        ld(5, b""),  # a body without a value: null
        ld(5, ld(7, b"")),  # empty bytes: ""
        ld(5, ld(5, b"")) + ld(6, b""),  # an empty array; an attribute with no key and no value
        ld(6, ld(1, b"a")) + ld(3, b"x") + ld(6, ld(1, b"b")),  # attributes around another field
        ld(9, bytes(16)) + ld(10, b"\xff") + tag(8, 5) + b"\x01\x00\x00\x80",
    ]
    for data in cases:
        assert check(data), data.hex()


def test_resource_and_scope_absent() -> None:
    data = rand_record(random.Random(3)).SerializeToString()
    for res, sc in ((None, None), (RESOURCE, None), (None, SCOPE)):
        got = fast(data, res, sc)
        assert got is not None and got == reference(data, res, sc)


def test_corrupted_encodings_never_accept_what_python_would_not() -> None:
    rng = random.Random(99)
    accepted = declined = 0
    for _ in range(4000):
        data = bytearray(rand_record(rng).SerializeToString())
        for _m in range(rng.randint(1, 3)):
            op = rng.randrange(4)
            at = rng.randint(0, len(data))
            if op == 0 and data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                data[at:at] = bytes([rng.randrange(256)])
            elif op == 2:
                del data[at:at + rng.randint(1, 4)]
            else:
                del data[at:]
        if check(bytes(data)):
            accepted += 1
        else:
            declined += 1
    assert accepted > 100 and declined > 100, (accepted, declined)  # both sides exercised


def test_span_and_argument_errors() -> None:
    assert native is not None
    with pytest.raises(ValueError, match="span"):
        native.otlp_event(b"abc", 2, 5, None, None)
    with pytest.raises(TypeError):
        native.otlp_event(bytearray(b""), 0, 0, None, None)
    assert native.otlp_event(b"xyz", 1, 1, None, None) == {}


def test_timestamps_over_the_whole_fixed64_range() -> None:
    """RFC 3339 text of every kind of nanosecond count: leap days, century years, the last
    nanosecond of a day and of the range (year 2554), as otlp._Clock writes it."""
    rng = random.Random(64)
    days = [0, 59, 60, 365, 10_957, 11_016, 11_017, 47_541, 47_542, 2**64 // 86_400_000_000_000]
    values = [d * 86_400_000_000_000 + off for d in days for off in (0, 1, 86_399_999_999_999)]
    values += [rng.randrange(2**64) for _ in range(5000)] + [2**64 - 1]
    for ns in values:
        if 0 < ns < 2**64:
            data = tag(11, 1) + struct.pack("<Q", ns)
            assert check(data), ns


# ------------------------------------------------------------------ the wire walk


def walk(fields: Any, buf: bytes) -> tuple[list[tuple[int, int, int, int]], str | None]:
    """The fields a walk yields, and the error it ends with (None: none)."""
    out: list[tuple[int, int, int, int]] = []
    try:
        for f in fields(buf, 0, len(buf)):
            out.append(f)
    except BodyError as exc:
        return out, str(exc)
    return out, None


def rand_message(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(0, 12)):
        field = rng.choice([1, 2, 3, 15, 16, 2047, 2**29 - 1])
        kind = rng.randrange(8)
        if kind == 0:
            parts.append(tag(field, 0) + varint(rng.choice([0, 1, 300, 2**63, 2**64 - 1])))
        elif kind == 1:
            parts.append(tag(field, 1) + rng.randbytes(8))
        elif kind == 2:
            parts.append(tag(field, 5) + rng.randbytes(4))
        elif kind == 3:
            parts.append(ld(field, rng.randbytes(rng.choice([0, 1, 127, 128, 300]))))
        elif kind == 4:
            parts.append(tag(field, 3) + tag(1, 0) + b"\x01" + tag(field, 4))  # a group
        elif kind == 5:
            parts.append(tag(field, 0) + b"\x80" * 9 + b"\x01")  # a 10-byte varint
        elif kind == 6:
            parts.append(b"\x80" * 9 + bytes([field << 3 & 0x7F | 2]) + b"\x00")  # a 10-byte key
        else:
            parts.append(bytes([rng.choice([0x00, 0x06, 0x07, 0x0C, 0x0E])]) + b"\x00")  # field 0, bad types
    return b"".join(parts)


def test_wire_fields_walk_like_python() -> None:
    """Same fields, same positions, same refusal at the same place, on valid and corrupted
    messages (batches cut anywhere: 256 fields per C call)."""
    rng = random.Random(5)
    for i in range(6000):
        buf = bytearray(rand_message(rng))
        if i % 2:
            for _m in range(rng.randint(1, 3)):
                at = rng.randint(0, len(buf))
                if rng.random() < 0.5 and buf:
                    buf[min(at, len(buf) - 1)] = rng.randrange(256)
                else:
                    del buf[at:]
        data = bytes(buf)
        assert walk(otlp._fields_native, data) == walk(otlp._Wire.fields, data), data.hex()
    many = ld(2, b"") * 1000 + tag(3, 0) + b"\x80" * 9 + b"\x01" + ld(2, b"x")  # C hands over at field 1001
    assert walk(otlp._fields_native, many) == walk(otlp._Wire.fields, many)
    assert len(walk(otlp._fields_native, many)[0]) == 1002


# ------------------------------------------------------------------ the hand-over to the sanitiser


def test_sanitiser_takes_events_as_objects_exactly_as_their_json_text() -> None:
    """``prepare_events_many`` (what OTLP ingest uses) gives the bytes, or the refusal,
    that ``prepare_json_many`` gives for the same event as JSON text: redaction included
    (secrets in values, keys and nested lists), size and depth limits included."""
    from pipeline.sanitise import InvalidEvent, Sanitiser

    assert native is not None
    rng = random.Random(11)
    secrets = ["password=hunter2", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "AKIAIOSFODNN7EXAMPLE",
               "4111 1111 1111 1111", "postgres://u:p4ss@h/db", "ghp_" + "a" * 36, "plain", ""]
    events = []
    for _ in range(1500):
        rec = rand_record(rng)
        for kv in rec.attributes:
            if rng.random() < 0.3:
                kv.value.string_value = rng.choice(secrets)
        if rng.random() < 0.2:
            rec.attributes.add(key=rng.choice(["api_key", "token", "x-auth-token", "note"])).value.string_value = \
                rng.choice(secrets)
        if rng.random() < 0.1:
            rec.attributes.add(key="card").value.int_value = 4111111111111111
        data = rec.SerializeToString()
        ev = native.otlp_event(data, 0, len(data), RESOURCE, SCOPE)
        assert ev is not None
        events.append(ev)
    deep: Any = "x"
    for _ in range(70):
        deep = [deep]
    events += [{"body": deep}, {"body": "y" * 5000}]
    for san in (Sanitiser(), Sanitiser(max_event_bytes=4096)):
        as_objects = san.prepare_events_many(events)
        as_text = san.prepare_json_many([orjson.dumps(e) for e in events])
        for got, want in zip(as_objects, as_text, strict=True):
            if isinstance(want, InvalidEvent):
                assert isinstance(got, InvalidEvent) and got.reason == want.reason, (got, want)
            else:
                assert got == want
        assert any(isinstance(x, InvalidEvent) for x in as_text)
        assert any(isinstance(x, bytes) and b"[REDACTED:" in x for x in as_text)
