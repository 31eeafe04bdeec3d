"""OTLP/HTTP logs (``POST /v1/logs``): OTLP log records as events, and OTLP answers.

docs/INGEST.md §5 specifies the endpoint, docs/FORMAT.md §3.1 the event each LogRecord
becomes.  This module only decodes and encodes: the events it produces go through the
same accept path as NDJSON bodies (``IngestServer.ingest_body``: the log's sanitiser,
durability before the answer, backpressure), as JSON text, one event per LogRecord.

Memory is the reason for the shape of the decoders.  A whole ``ExportLogsServiceRequest``
is never parsed at once: an empty LogRecord is 2 bytes on the wire and a parsed message
object is some hundred, so 10 MiB of them would cost gigabytes.  The request is walked
at the wire level instead (protobuf: tags and lengths; JSON: the three levels of
objects and arrays above the records, delimited without being parsed), and each log
record, resource and scope is parsed alone and converted, in chunks of at most
``CHUNK_EVENTS`` records and ``CHUNK_BYTES`` of their encoding, so what is alive at once
is the body plus one chunk.  A piece larger than twice the event limit is refused without
being parsed (its event could not be stored anyway), and the events a request expands to
(resource and scope are copied into every event) are limited to ``EXPANSION`` times
``max_request_bytes`` (counted by ``IngestServer.ingest_body`` on the sanitised events).

Speed is the reason events leave this module as Python objects, not JSON text: the
sanitiser takes them as they are (``Sanitiser.prepare_events_many``) and serialises each
once, where JSON text would be serialised here and parsed again there.  Only a record
larger than ``_BIG_PIECE`` leaves as JSON text, so that ingest sanitises it one at a time
in the process like any big event.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from pipeline._accel import native as _native
from pipeline.errors import PipelineError
from pipeline.format import strictjson
from pipeline.ingest.body import CHUNK_BYTES, CHUNK_EVENTS, BodyError, _value_end
from pipeline.sanitise import InvalidEvent

if TYPE_CHECKING:
    from pipeline.ingest.server import RequestResult

__all__ = ["EXPANSION", "JSON", "LOGS_PATH", "PROTOBUF", "answer", "error_answer", "framing_for", "iter_events"]

LOGS_PATH = "/v1/logs"
PROTOBUF = "otlp-protobuf"  # framings, as pipeline.ingest.body names its own
JSON = "otlp-json"
CONTENT_TYPES = {PROTOBUF: "application/x-protobuf", JSON: "application/json"}
_FRAMINGS = {v: k for k, v in CONTENT_TYPES.items()}
EXPANSION = 2  # events of one request: at most this many times max_request_bytes of JSON text
MAX_DEPTH = 64  # AnyValue nesting converted; deeper is refused (the event could not be stored)
_JSON_MAX_DEPTH = 5 * MAX_DEPTH + 8  # OTLP/JSON spends five JSON levels on one kvlist level
_BIG_PIECE = 64 << 10  # pieces larger than this are converted one at a time in the process
_LISTED_IN_MESSAGE = 5  # refused records named in a partial_success error_message
_MAX_GROUPS = 100  # unknown protobuf groups nested in each other (protobuf's own limit)


def framing_for(content_type: str | None) -> str | None:
    """``PROTOBUF`` or ``JSON`` for a ``Content-Type`` (parameters ignored), None otherwise."""
    if content_type is None:
        return None
    return _FRAMINGS.get(content_type.split(";", 1)[0].strip().lower())


@functools.cache
def _pb() -> Any:
    # imported on first use: processes that never serve /v1/logs do not load protobuf
    from google.protobuf import json_format
    from google.rpc import error_details_pb2, status_pb2
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.logs.v1 import logs_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2

    class Pb:
        LogRecord = logs_pb2.LogRecord
        Resource = resource_pb2.Resource
        Scope = common_pb2.InstrumentationScope
        Response = logs_service_pb2.ExportLogsServiceResponse
        Status = status_pb2.Status
        BadRequest = error_details_pb2.BadRequest

    Pb.json_format = json_format  # type: ignore[attr-defined]
    return Pb


# ------------------------------------------------------------------ one record, as an event


class _Refused(PipelineError):
    """A piece that decodes but cannot become an event: refused (partial_success)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _any(v: Any, depth: int) -> Any:
    """An AnyValue as JSON (docs/FORMAT.md §3.1)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    return _non_string(v, kind, depth)


def _non_string(v: Any, kind: str | None, depth: int) -> Any:
    if kind == "int_value" or kind == "bool_value":
        return getattr(v, kind)
    if kind == "kvlist_value":
        return _kvs(v.kvlist_value.values, depth + 1)
    if kind == "array_value":
        if depth >= MAX_DEPTH:
            raise _Refused("too-deep", f"a value nests deeper than {MAX_DEPTH} levels")
        return [_any(x, depth + 1) for x in v.array_value.values]
    if kind == "double_value":
        d = v.double_value
        # the profile holds no NaN or Infinity: spelled as OTLP/JSON (proto3 JSON) spells them
        return d if math.isfinite(d) else _NON_FINITE.get(d, "NaN")
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    if kind is None:  # no value, or no value field at all
        return None
    raise _Refused("bad-otlp", f"{kind} refers to a string table, which log records do not have")


def _kvs(kvs: Any, depth: int) -> dict[str, Any]:
    """KeyValues (attributes, a kvlist) as a JSON object, members in their order."""
    if depth > MAX_DEPTH:
        raise _Refused("too-deep", f"a value nests deeper than {MAX_DEPTH} levels")
    out: dict[str, Any] = {}
    for kv in kvs:  # the hot loop of OTLP ingest: one upb access per step
        key = kv.key
        if not key and kv.key_strindex:
            raise _Refused("bad-otlp", "key_strindex refers to a string table, which log records do not have")
        v = kv.value
        kind = v.WhichOneof("value")
        out[key] = v.string_value if kind == "string_value" else _non_string(v, kind, depth)
    if len(out) != len(kvs):
        # OTLP: keys MUST be unique; keeping one of the values would alter the record
        seen: set[str] = set()
        at = next(i for i, kv in enumerate(kvs) if kv.key in seen or seen.add(kv.key))  # type: ignore[func-returns-value]
        raise _Refused("duplicate-key", f"key #{at + 1} of an attribute list repeats an earlier key")
    return out


class _Clock:
    """RFC 3339 text of Unix nanoseconds (UTC, nine fractional digits: exact)."""

    __slots__ = ("prefix", "second")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def text(self, ns: int) -> str:
        s, frac = divmod(ns, 1_000_000_000)
        if s != self.second:  # records of one batch mostly share their second
            self.second = s
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
        return f"{self.prefix}.{frac:09d}Z"


def _declined(body: bytes, start: int, end: int, resource: Any, scope: Any) -> dict[str, Any] | None:
    """Without the C accelerator every record is parsed by protobuf and converted below."""
    return None


# The event of the protobuf record body[start:end] when it is shown to be simple, else None
# (then protobuf's parse and _event decide): pipeline/_native.c, exact on what it accepts.
_fast_event: Callable[[bytes, int, int, Any, Any], dict[str, Any] | None] = (
    _native.otlp_event if _native is not None else _declined)


def _event(rec: Any, clock: _Clock, resource: Any, scope: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {}
    if rec.time_unix_nano:
        ev["time"] = clock.text(rec.time_unix_nano)
    if rec.observed_time_unix_nano:
        ev["observed_time"] = clock.text(rec.observed_time_unix_nano)
    if rec.severity_number:
        ev["severity_number"] = rec.severity_number
    if rec.severity_text:
        ev["severity_text"] = rec.severity_text
    if rec.event_name:
        ev["event_name"] = rec.event_name
    if rec.HasField("body"):
        ev["body"] = _any(rec.body, 1)
    if rec.attributes:
        ev["attributes"] = _kvs(rec.attributes, 2)
    if rec.dropped_attributes_count:
        ev["dropped_attributes_count"] = rec.dropped_attributes_count
    if rec.trace_id:
        ev["trace_id"] = rec.trace_id.hex()
    if rec.span_id:
        ev["span_id"] = rec.span_id.hex()
    if rec.flags:
        ev["flags"] = rec.flags
    if resource is not None:
        ev["resource"] = resource
    if scope is not None:
        ev["scope"] = scope
    return ev


def _resource(res: Any, schema_url: str) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    if res is not None:
        if res.attributes:
            out["attributes"] = _kvs(res.attributes, 3)
        if res.dropped_attributes_count:
            out["dropped_attributes_count"] = res.dropped_attributes_count
        if res.entity_refs:
            out["entity_refs"] = [_entity_ref(e) for e in res.entity_refs]
    if schema_url:
        out["schema_url"] = schema_url
    # one object shared by the group's events: the sanitiser reads it, never alters it
    return out or None


def _entity_ref(e: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {}
    for name in ("type", "id_keys", "description_keys", "schema_url"):
        value = getattr(e, name)
        if value:
            ref[name] = value if isinstance(value, str) else list(value)
    return ref


def _scope(scope: Any, schema_url: str) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    if scope is not None:
        if scope.name:
            out["name"] = scope.name
        if scope.version:
            out["version"] = scope.version
        if scope.attributes:
            out["attributes"] = _kvs(scope.attributes, 3)
        if scope.dropped_attributes_count:
            out["dropped_attributes_count"] = scope.dropped_attributes_count
    if schema_url:
        out["schema_url"] = schema_url
    # one object shared by the group's events: the sanitiser reads it, never alters it
    return out or None


# ------------------------------------------------------------------ the request, piece by piece


def iter_events(body: bytes, framing: str,
                max_piece: int) -> Iterator[list[tuple[int, dict[str, Any] | bytes | InvalidEvent]]]:
    """Yield ``[(record number from 1, event), ...]`` chunks in request order, each event
    a JSON object (a dict of JSON values, for ``Sanitiser.prepare_events_many``), or JSON
    text for a record larger than ``_BIG_PIECE`` on the wire, or why it is refused.  Raises
    BodyError (400) when the request cannot be decoded.

    ``max_piece``: a log record, resource or scope longer than this on the wire is
    refused as too-large without being parsed."""
    pb = _pb()
    walk = _walk_protobuf if framing == PROTOBUF else _walk_json
    clock = _Clock()
    chunk: list[tuple[int, dict[str, Any] | bytes | InvalidEvent]] = []
    size = 0  # encoded size of the chunk's records: their objects are some multiple of it
    n = 0
    for resource, scope, records in walk(body, pb, max_piece):
        group = _group(resource, scope)
        for wire_size, rec in records:
            n += 1
            item: dict[str, Any] | bytes | InvalidEvent
            try:
                if type(rec) is _Refused:
                    raise rec
                if isinstance(group, InvalidEvent):
                    if type(rec) is tuple:  # refused with its group, but an undecodable one is a 400
                        _parse_pb(pb.LogRecord, body[rec[0]:rec[1]], "log record")
                    item = group
                elif type(rec) is tuple:  # a protobuf record, body[start:end]: C when it can
                    start, end = rec
                    converted = _fast_event(body, start, end, *group)
                    item = converted if converted is not None else \
                        _event(_parse_pb(pb.LogRecord, body[start:end], "log record"), clock, *group)
                elif type(rec) is _Big:
                    with _big_lock():  # parsed and converted one at a time in the process
                        item = orjson.dumps(_event(rec.parse(), clock, *group))
                else:
                    item = _event(rec, clock, *group)
            except _Refused as exc:
                item = InvalidEvent(exc.reason, exc.detail)
            chunk.append((n, item))
            size += len(item) if type(item) is bytes else wire_size
            if len(chunk) >= CHUNK_EVENTS or size >= CHUNK_BYTES:
                yield chunk
                chunk, size = [], 0
    if chunk:
        yield chunk


def _group(resource: Callable[[], Any], scope: Callable[[], Any]) -> tuple[Any, Any] | InvalidEvent:
    """The resource and scope of a group's records, or why none of them can be stored."""
    made = []
    for what, make in (("resource", resource), ("scope", scope)):
        try:
            made.append(make())
        except _Refused as exc:
            return InvalidEvent(exc.reason, f"the record's {what} cannot be stored: {exc.detail}")
    return made[0], made[1]


# (resource, scope, log records): the first two parse and convert when called; the records
# are (encoded size, record): a parsed LogRecord (JSON), the (start, end) of a protobuf
# record in the body, or a _Refused, or a _Big to parse under the lock (size 0: these two
# leave as an InvalidEvent or as JSON text, not as objects)
_Group = tuple[Callable[[], Any], Callable[[], Any], Iterator[tuple[int, Any]]]


class _Big:
    """A log record larger than ``_BIG_PIECE``, parsed only when its turn comes."""

    __slots__ = ("parse",)

    def __init__(self, parse: Callable[[], Any]) -> None:
        self.parse = parse


def _big_lock() -> Any:
    from pipeline.ingest.server import _big_events

    return _big_events


def _too_large(what: str, size: int, limit: int) -> _Refused:
    return _Refused("too-large", f"{what} is {size} bytes, over twice the event limit ({limit})")


def _guarded(size: int, parse: Callable[[], Any]) -> Any:
    if size <= _BIG_PIECE:
        return parse()
    # Parsing and converting a large piece costs many times its size in objects for
    # pathological shapes: one at a time in the process, like big NDJSON events
    with _big_lock():
        return parse()


# ------------------------------------------------------------------ protobuf wire walk


class _Wire:
    """Protobuf wire format, just enough to walk the three message levels above a log
    record: varints, lengths, skipping unknown fields (groups included)."""

    @staticmethod
    def varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
        result = shift = 0
        while pos < end:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result, pos
            shift += 7
            if shift >= 70:
                break
        raise BodyError(400, "the request is not valid protobuf: a bad varint")

    @classmethod
    def fields(cls, buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """(field number, wire type, start, end) of each field in ``buf[pos:end]``: for a
        length-delimited field, start..end is its payload."""
        varint = cls.varint
        while pos < end:
            key = buf[pos]
            if key < 0x80:
                pos += 1
            else:
                key, pos = varint(buf, pos, end)
            field, wt = key >> 3, key & 7
            if field == 0:
                raise BodyError(400, "the request is not valid protobuf: field number 0")
            if wt == 2:
                ln = buf[pos] if pos < end else 0x80
                if ln < 0x80:
                    pos += 1
                else:
                    ln, pos = varint(buf, pos, end)
                stop = pos + ln
            elif wt == 0:
                _v, stop = varint(buf, pos, end)
            elif wt == 1:
                stop = pos + 8
            elif wt == 5:
                stop = pos + 4
            elif wt == 3:
                stop = cls.group_end(buf, pos, end, field)
            else:
                raise BodyError(400, f"the request is not valid protobuf: wire type {wt}")
            if stop > end:
                raise BodyError(400, "the request is not valid protobuf: a field runs past its message")
            yield field, wt, pos, stop
            pos = stop

    @classmethod
    def group_end(cls, buf: bytes, pos: int, end: int, field: int) -> int:
        """Where a (deprecated) group ends: skipped like any unknown field, up to its
        END_GROUP tag.  Iterative, and nested at most ``_MAX_GROUPS`` deep (protobuf's
        parser stops at 100 levels too)."""
        open_groups = [field]
        while pos < end:
            key, pos = cls.varint(buf, pos, end)
            number, wt = key >> 3, key & 7
            if wt == 4:
                if number != open_groups.pop():
                    break
                if not open_groups:
                    return pos
            elif wt == 3:
                if len(open_groups) >= _MAX_GROUPS:
                    raise BodyError(400, "the request is not valid protobuf: groups nested too deep")
                open_groups.append(number)
            elif wt == 0:
                _v, pos = cls.varint(buf, pos, end)
            elif wt == 1:
                pos += 8
            elif wt == 5:
                pos += 4
            elif wt == 2:
                ln, pos = cls.varint(buf, pos, end)
                pos += ln
            else:
                break
        raise BodyError(400, "the request is not valid protobuf: an unterminated group")


def _fields_native(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``_Wire.fields`` with the common fields read in C, some hundred at a time (bounded:
    a body of empty records has millions); from the first one C leaves to it, the Python
    walk goes on (and skips or refuses as it does)."""
    assert _native is not None
    while pos < end:
        got = _native.wire_fields(buf, pos, end, 256)
        if got is None:
            yield from _Wire.fields(buf, pos, end)
            return
        batch, pos = got
        yield from batch


_fields = _fields_native if _native is not None else _Wire.fields


def _walk_protobuf(body: bytes, pb: Any, max_piece: int) -> Iterator[_Group]:
    fields = _fields
    for f, wt, rs, re_ in fields(body, 0, len(body)):
        if f != 1 or wt != 2:
            continue  # unknown fields are skipped, as protobuf parsers do
        resource = bytearray()
        res_url = ""
        # first pass: resource and schema_url, wherever they are (fields come in any order;
        # a repeated embedded message is merged: its encodings concatenated)
        for g, gwt, s, e in fields(body, rs, re_):
            if gwt == 2 and g == 1:
                resource += body[s:e]
            elif gwt == 2 and g == 3:
                res_url = _utf8(body, s, e)
        for g, gwt, ss, se in fields(body, rs, re_):
            if g == 2 and gwt == 2:
                yield _protobuf_group(body, ss, se, bytes(resource), res_url, pb, max_piece)


def _protobuf_group(body: bytes, ss: int, se: int, resource: bytes, res_url: str, pb: Any,
                    max_piece: int) -> _Group:
    fields = _fields
    scope = bytearray()
    scope_url = ""
    for g, gwt, s, e in fields(body, ss, se):
        if gwt == 2 and g == 1:
            scope += body[s:e]
        elif gwt == 2 and g == 3:
            scope_url = _utf8(body, s, e)

    def parse_resource() -> Any:
        if len(resource) > max_piece:
            raise _too_large("resource", len(resource), max_piece)
        return _guarded(len(resource), lambda: _resource(_parse_pb(pb.Resource, resource, "resource"), res_url))

    def parse_scope() -> Any:
        if len(scope) > max_piece:
            raise _too_large("scope", len(scope), max_piece)
        return _guarded(len(scope), lambda: _scope(_parse_pb(pb.Scope, bytes(scope), "scope"), scope_url))

    def records() -> Iterator[tuple[int, Any]]:
        for g, gwt, s, e in fields(body, ss, se):
            if g == 2 and gwt == 2:
                if e - s <= _BIG_PIECE:
                    yield e - s, (s, e)  # parsed (or not) by iter_events
                elif e - s > max_piece:
                    yield 0, _too_large("log record", e - s, max_piece)
                else:
                    yield 0, _Big(lambda s=s, e=e: _parse_pb(pb.LogRecord, body[s:e], "log record"))  # type: ignore[misc]

    return parse_resource, parse_scope, records()


def _parse_pb(cls: Any, data: bytes, what: str) -> Any:
    from google.protobuf.message import DecodeError

    try:
        return cls.FromString(data)
    except DecodeError:
        # the parser's message can quote the input: name the piece only
        raise BodyError(400, f"the request is not valid protobuf: a {what} cannot be decoded") from None


def _utf8(body: bytes, s: int, e: int) -> str:
    try:
        return body[s:e].decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError(400, "the request is not valid protobuf: a string is not UTF-8") from None


# ------------------------------------------------------------------ JSON walk

_WS = re.compile(rb"[ \t\r\n]*+")
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.S)
# lowerCamelCase per OTLP/JSON; protobuf's JSON parser also takes the proto names
_NAMES = {
    "resourceLogs": "resource_logs", "resource_logs": "resource_logs", "resource": "resource",
    "scopeLogs": "scope_logs", "scope_logs": "scope_logs", "schemaUrl": "schema_url", "schema_url": "schema_url",
    "scope": "scope", "logRecords": "log_records", "log_records": "log_records",
}
_ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id")
_ENUM_FIELDS = ("severityNumber", "severity_number")


def _bad_json(detail: str) -> BodyError:
    return BodyError(400, f"the request is not valid OTLP/JSON: {detail}")


def _skip_ws(buf: bytes, pos: int) -> int:
    return _WS.match(buf, pos).end()  # type: ignore[union-attr]


def _members(buf: bytes, pos: int, end: int, wanted: set[str]) -> tuple[dict[str, tuple[int, int]], int]:
    """Spans of the wanted members of the JSON object at ``pos`` (by proto name), and
    where the object ends.  Values are delimited, not parsed."""
    if buf[pos:pos + 1] != b"{":
        raise _bad_json("an object was expected")
    spans: dict[str, tuple[int, int]] = {}
    pos = _skip_ws(buf, pos + 1)
    if buf[pos:pos + 1] == b"}":
        return spans, pos + 1
    while True:
        m = _STRING.match(buf, pos, end)
        if m is None:
            raise _bad_json("a member name was expected")
        try:
            key = orjson.loads(m.group())
        except orjson.JSONDecodeError:
            raise _bad_json("a member name is not a valid JSON string") from None
        pos = _skip_ws(buf, m.end())
        if buf[pos:pos + 1] != b":":
            raise _bad_json("':' was expected after a member name")
        pos = _skip_ws(buf, pos + 1)
        stop = _value_end(buf, pos, end, end - pos)
        if isinstance(stop, str):
            raise _bad_json(stop)
        name = _NAMES.get(key)
        if name in wanted:
            if name in spans:
                raise _bad_json(f"member {name} appears twice")
            spans[name] = (pos, stop)
        pos = _skip_ws(buf, stop)
        c = buf[pos:pos + 1]
        if c == b"}":
            return spans, pos + 1
        if c != b",":
            raise _bad_json("',' or '}' was expected after a member")
        pos = _skip_ws(buf, pos + 1)


def _elements(buf: bytes, span: tuple[int, int] | None) -> Iterator[tuple[int, int]]:
    """Spans of the elements of the JSON array at ``span`` (null: none)."""
    if span is None:
        return
    pos, end = span
    if buf[pos:end] == b"null":
        return
    if buf[pos:pos + 1] != b"[":
        raise _bad_json("an array was expected")
    pos = _skip_ws(buf, pos + 1)
    if buf[pos:pos + 1] == b"]":
        return
    while True:
        stop = _value_end(buf, pos, end, end - pos)
        if isinstance(stop, str):
            raise _bad_json(stop)
        yield pos, stop
        pos = _skip_ws(buf, stop)
        c = buf[pos:pos + 1]
        if c == b"]":
            return
        if c != b",":
            raise _bad_json("',' or ']' was expected after an array element")
        pos = _skip_ws(buf, pos + 1)


def _json_value(buf: bytes, span: tuple[int, int] | None) -> Any:
    if span is None:
        return None
    try:
        return strictjson.loads(buf[span[0]:span[1]], max_depth=_JSON_MAX_DEPTH)
    except orjson.JSONDecodeError:
        raise _bad_json("a value is not valid JSON") from None
    except strictjson.ProfileError as exc:
        if exc.reason == "too-deep":
            raise _Refused("too-deep", f"a value nests deeper than {MAX_DEPTH} levels") from None
        raise _bad_json(exc.detail) from None


def _json_string(buf: bytes, span: tuple[int, int] | None) -> str:
    value = _json_value(buf, span)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad_json("schemaUrl is not a string")
    return value


def _from_json(pb: Any, cls: Any, value: Any, what: str) -> Any:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad_json(f"a {what} is not an object")
    for key in _ENUM_FIELDS:  # OTLP/JSON: enums MUST be integers (protobuf's parser would take names)
        if key in value and not (type(value[key]) is int or value[key] is None):
            raise _bad_json(f"{key} of a {what} is not an integer")
    for key in _ID_FIELDS:  # OTLP/JSON: trace and span ids are hex, not base64
        hex_id = value.get(key)
        if isinstance(hex_id, str):
            try:
                value[key] = base64.b64encode(bytes.fromhex(hex_id)).decode("ascii")
            except ValueError:
                raise _bad_json(f"{key} of a {what} is not hex") from None
    try:
        return pb.json_format.ParseDict(value, cls(), ignore_unknown_fields=True, max_recursion_depth=_JSON_MAX_DEPTH)
    except (pb.json_format.ParseError, binascii.Error, ValueError, TypeError):
        raise _bad_json(f"a {what} does not match the OTLP schema") from None


def _from_json_piece(pb: Any, body: bytes, s: int, e: int) -> Any:
    return _from_json(pb, pb.LogRecord, _json_value(body, (s, e)), "log record")


def _walk_json(body: bytes, pb: Any, max_piece: int) -> Iterator[_Group]:
    pos = _skip_ws(body, 0)
    end = len(body)
    if pos == end:
        raise _bad_json("the body is empty")
    top, stop = _members(body, pos, end, {"resource_logs"})
    if _skip_ws(body, stop) != end:
        raise _bad_json("content after the request object")
    for rs, re_ in _elements(body, top.get("resource_logs")):
        rl, _ = _members(body, rs, re_, {"resource", "scope_logs", "schema_url"})
        res_url = _json_string(body, rl.get("schema_url"))
        res_span = rl.get("resource")
        for ss, se in _elements(body, rl.get("scope_logs")):
            sl, _ = _members(body, ss, se, {"scope", "log_records", "schema_url"})
            yield _json_group(body, pb, max_piece, res_span, res_url, sl)


def _json_group(body: bytes, pb: Any, max_piece: int, res_span: tuple[int, int] | None, res_url: str,
                sl: dict[str, tuple[int, int]]) -> _Group:
    scope_url = _json_string(body, sl.get("schema_url"))
    scope_span = sl.get("scope")

    def piece(span: tuple[int, int] | None, cls: Any, what: str) -> Any:
        if span is not None and span[1] - span[0] > max_piece:
            raise _too_large(what, span[1] - span[0], max_piece)
        size = span[1] - span[0] if span is not None else 0
        return _guarded(size, lambda: _from_json(pb, cls, _json_value(body, span), what))

    def records() -> Iterator[tuple[int, Any]]:
        for s, e in _elements(body, sl.get("log_records")):
            if e - s > max_piece:
                yield 0, _too_large("log record", e - s, max_piece)
                continue
            try:
                parse = functools.partial(_from_json_piece, pb, body, s, e)
                yield (e - s, parse()) if e - s <= _BIG_PIECE else (0, _Big(parse))
            except _Refused as exc:
                yield 0, exc

    return (lambda: _resource(piece(res_span, pb.Resource, "resource"), res_url),
            lambda: _scope(piece(scope_span, pb.Scope, "scope"), scope_url), records())


# ------------------------------------------------------------------ answers


def _encode(pb: Any, msg: Any, framing: str) -> bytes:
    if framing == PROTOBUF:
        return bytes(msg.SerializeToString())
    return orjson.dumps(pb.json_format.MessageToDict(msg))


def error_answer(status: int, message: str, framing: str | None,
                 violations: list[tuple[str, str]] | None = None) -> tuple[bytes, str]:
    """A ``google.rpc.Status`` for a 4xx/5xx answer, encoded like the request (JSON when
    the request's encoding is not known), and its Content-Type."""
    fmt = framing or JSON
    pb = _pb()
    msg = pb.Status(message=message)
    if violations:
        bad = pb.BadRequest()
        for field, description in violations:
            bad.field_violations.add(field=field, description=description)
        msg.details.add().Pack(bad)
    return _encode(pb, msg, fmt), CONTENT_TYPES[fmt]


def answer(result: RequestResult, framing: str) -> tuple[int, bytes, str, dict[str, str]]:
    """The OTLP answer to an ingest result: (status, body, Content-Type, headers).

    200 with an ExportLogsServiceResponse, ``partial_success`` set when some records were
    refused (the others are durable); 400 when every record was refused (the sender must
    not retry); 429 and 503 keep their ``Retry-After``; nothing else is retryable."""
    pb = _pb()
    body = result.body
    if result.status == 200:
        resp = pb.Response()
        rejected = body.get("rejected", 0)
        if rejected:
            resp.partial_success.rejected_log_records = rejected
            resp.partial_success.error_message = _refusal_text(body, stored=True)
        return 200, _encode(pb, resp, framing), CONTENT_TYPES[framing], {}
    if result.no_events:
        # OTLP: "If the server receives an empty request (a request that does not carry any
        # telemetry data) the server SHOULD respond with success."
        return 200, _encode(pb, pb.Response(), framing), CONTENT_TYPES[framing], {}
    if result.status == 422:
        violations = [("resource_logs.scope_logs.log_records", f"log record #{e['event']}: {e['error']}")
                      for e in body.get("errors", [])]
        data, ctype = error_answer(400, _refusal_text(body, stored=False), framing, violations)
        return 400, data, ctype, {}
    message = str(body.get("error", "error"))
    maybe = body.get("maybe_stored")
    if maybe:
        message += (f"; records with seqs {maybe['first_seq']}..{maybe['last_seq']} may be stored: a retry can "
                    "store them twice")
    data, ctype = error_answer(result.status, message, framing)
    headers = {k: v for k, v in result.headers.items() if result.status in (429, 503) or k != "Retry-After"}
    return result.status, data, ctype, headers


def _refusal_text(body: dict[str, Any], *, stored: bool) -> str:
    rejected = body.get("rejected", 0)
    reasons = ", ".join(f"{k}: {v}" for k, v in body.get("reasons", {}).items())
    listed = "; ".join(f"#{e['event']}: {e['error']}" for e in body.get("errors", [])[:_LISTED_IN_MESSAGE])
    what = (f"{rejected} log record(s) refused and not stored, the others are stored" if stored else
            f"every log record was refused ({rejected}); nothing was stored")
    return f"{what} ({reasons}); records counted from 1 in request order: {listed}"
