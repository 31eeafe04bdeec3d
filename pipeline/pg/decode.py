"""pgoutput (protocol version 1) messages, and the one rendering of a row as JSON.

The source streams the slot (``START_REPLICATION ... (proto_version '1',
publication_names pub, messages 'true')``, pipeline/pg/stream.py); each XLogData message
carries one pgoutput message (PostgreSQL documentation, "Logical Replication Message
Formats").  A stream sends a Relation message before the first change of each table (and
again when the table changes), so the column names and type OIDs are always known; the
source starts a new ``Decoder`` with every stream.  (``pg verify`` and the source's crash
check still peek with ``pg_logical_slot_peek_binary_changes``, one message per row.)

Values arrive as the text their type's output function writes, exactly what ``SELECT``
returns in text format, so ``row_json`` can render a row read from the WAL and a row read
from the table the same way (the reconciliation depends on that).  Output functions depend
on a few settings, which both sides fix with ``SESSION_SETTINGS``.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline._accel import native as _native
from pipeline.errors import PipelineError

# Output functions of timestamptz, date, interval, float and bytea depend on these: the
# source and the reconciliation set them identically on every connection.
SESSION_SETTINGS = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
)

# type OIDs rendered as JSON values rather than as their text
BOOL, INT8, INT2, INT4, OID, JSON, JSONB = 16, 20, 21, 23, 26, 114, 3802
_INTEGERS = frozenset({INT8, INT2, INT4, OID})
PG_EPOCH = 946684800  # 2000-01-01T00:00:00Z, PostgreSQL's epoch, in Unix seconds
_PG_EPOCH_US = PG_EPOCH * 1_000_000


def format_lsn(lsn: int) -> str:
    """PostgreSQL's spelling of an LSN: ``16/B374D848``."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    hi, sep, lo = text.partition("/")
    if not sep:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(hi, 16) << 32) | int(lo, 16)


def pg_time(us: int) -> str:
    """A pgoutput timestamp (microseconds since 2000-01-01 UTC) as RFC 3339 UTC."""
    seconds, micros = divmod(us + _PG_EPOCH_US, 1_000_000)
    prefix = _SECOND_PREFIX.get(seconds)
    if prefix is None:
        if len(_SECOND_PREFIX) > 4096:
            _SECOND_PREFIX.clear()
        prefix = _dt.datetime.fromtimestamp(seconds, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _SECOND_PREFIX[seconds] = prefix
    return f"{prefix}.{micros:06d}Z"


_SECOND_PREFIX: dict[int, str] = {}


def render_value(type_oid: int, text: str | None) -> Any:
    """One column value as JSON: NULL as null, booleans and integers as JSON booleans and
    numbers, ``json``/``jsonb`` as the JSON value when that value is exactly what
    PostgreSQL wrote, every other value (and any JSON that would not be exact: ``1.10``,
    a ``json`` column's own whitespace or duplicate keys, an integer outside the log's
    JSON profile) as its text.  So the log always holds exactly the row's value, never a
    rounded one."""
    if text is None:
        return None
    if type_oid in _INTEGERS:
        return int(text)
    if type_oid == BOOL:
        return text == "t"
    if type_oid == JSONB and _FLOATISH.search(text) is None:
        # jsonb's text is canonical (no duplicate keys, no insignificant whitespace); without
        # a fraction or exponent every number is an integer, which the log's JSON profile
        # reads exactly within [-2**63, 2**64-1] and refuses beyond it (orjson alone would
        # turn a larger one into a float)
        from pipeline.format.strictjson import ProfileError, loads

        try:
            return loads(text.encode())
        except (orjson.JSONDecodeError, ProfileError):
            return text
    if type_oid in (JSON, JSONB):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        again = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), allow_nan=False)
        return value if again == text and _in_profile(value) else text
    return text


# a digit followed by "." or an exponent: a number that may not survive a float (or a
# string that merely looks like one, which then takes the exact round-trip check)
_FLOATISH = re.compile(r"[0-9][.eE]")


def _in_profile(value: Any) -> bool:
    from pipeline.format.strictjson import INT_MAX, INT_MIN

    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return True
    if isinstance(value, int):
        return INT_MIN <= value <= INT_MAX
    if isinstance(value, list):
        return all(_in_profile(v) for v in value)
    if isinstance(value, dict):
        return all(_in_profile(v) for v in value.values())
    return False


def row_json(columns: Sequence[Column], values: Sequence[str | None]) -> dict[str, Any]:
    """A row as JSON (``render_value`` per column; text columns, the common case, as they are)."""
    if len(columns) != len(values):
        raise ProtocolError(f"{len(values)} values for {len(columns)} columns")
    out: dict[str, Any] = {}
    for c, v in zip(columns, values):  # noqa: B905 - lengths checked above
        out[c.name] = v if v is None or c.type_oid not in _CONVERTED else render_value(c.type_oid, v)
    return out


_CONVERTED = frozenset({BOOL, INT8, INT2, INT4, OID, JSON, JSONB})

# the kinds of pg_insert_row (pipeline/_native.c): 0 text as it is, 1 int(text), 2 text == "t",
# 3 text, then render_value
_KIND_TEXT, _KIND_INT, _KIND_BOOL, _KIND_RENDER = 0, 1, 2, 3


def _kind(type_oid: int) -> int:
    if type_oid in _INTEGERS:
        return _KIND_INT
    if type_oid == BOOL:
        return _KIND_BOOL
    return _KIND_RENDER if type_oid in _CONVERTED else _KIND_TEXT


def _py_insert_row(msg: bytes, names: tuple[str, ...], kinds: bytes, /) -> dict[str, Any] | None:
    """The Python reference of ``pg_insert_row``: the row of an INSERT message with every
    value text or NULL, integers and booleans converted, kind-3 values left as text; None
    where ``Decoder.decode`` must decide."""
    if len(msg) < 8 or msg[0] != 73 or msg[5] != 78 or ((msg[6] << 8) | msg[7]) != len(names) \
            or len(kinds) != len(names):
        return None
    pos, end = 8, len(msg)
    row: dict[str, Any] = {}
    for name, kind in zip(names, kinds):  # noqa: B905 - the caller builds both from one relation
        if pos >= end:
            return None
        tag = msg[pos]
        pos += 1
        if tag == 110:  # 'n'
            row[name] = None
            continue
        if tag != 116 or end - pos < 4:  # 't'
            return None
        size = int.from_bytes(msg[pos:pos + 4], "big")
        pos += 4
        if size > end - pos:
            return None
        raw = msg[pos:pos + size]
        pos += size
        if kind == _KIND_INT:
            if _PG_INTEGER.fullmatch(raw) is None:
                return None
            row[name] = int(raw)
        elif kind == _KIND_BOOL:
            if raw not in (b"t", b"f"):
                return None
            row[name] = raw == b"t"
        else:
            row[name] = raw.decode("utf-8", "replace")
    return row if pos == end else None


_PG_INTEGER = re.compile(rb"-?[0-9]{1,20}")
# bound once: the C accelerator's or the Python reference (same results; tests/pg/test_decode.py)
_insert_row = _native.pg_insert_row if _native is not None else _py_insert_row


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    key: bool = False


@dataclass(slots=True)
class Relation:
    oid: int
    schema: str
    name: str
    columns: list[Column] = field(default_factory=list)
    # for Decoder.insert_row: the column names, their kinds, the columns render_value decides
    names: tuple[str, ...] = ()
    kinds: bytes = b""
    rendered: tuple[Column, ...] = ()
    qualified_name: str = ""

    def __post_init__(self) -> None:
        self.names = tuple(c.name for c in self.columns)
        self.kinds = bytes(_kind(c.type_oid) for c in self.columns)
        self.rendered = tuple(c for c in self.columns if _kind(c.type_oid) == _KIND_RENDER)
        self.qualified_name = f"{self.schema}.{self.name}"

    @property
    def qualified(self) -> str:
        return self.qualified_name

    @property
    def key_columns(self) -> list[Column]:
        return [c for c in self.columns if c.key]


UNCHANGED_TOAST = object()  # an UPDATE's unchanged out-of-line value: not sent


@dataclass(slots=True)
class Change:
    """One decoded message that becomes an event: a row change, a TRUNCATE, or a logical
    message (``op`` = ``message``; the source's own keep-alive marks)."""

    op: str  # insert | update | delete | truncate | message
    relation: Relation | None
    new: list[Any] | None = None  # text values (None = NULL, UNCHANGED_TOAST)
    old: list[Any] | None = None  # old key or full old row (REPLICA IDENTITY FULL)
    old_is_key: bool = False
    truncated: list[Relation] = field(default_factory=list)
    prefix: str = ""
    content: bytes = b""
    message_lsn: int = 0


@dataclass(slots=True)
class Begin:
    commit_lsn: int  # the commit record's LSN (pgoutput's "final LSN")
    commit_time: str
    xid: int
    lsn_text: str = ""

    def __post_init__(self) -> None:
        self.lsn_text = format_lsn(self.commit_lsn)


@dataclass(slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int  # the end of the commit record: where the slot may be advanced to
    ts: int  # pgoutput's commit timestamp (microseconds since 2000-01-01 UTC)


class ProtocolError(PipelineError, ValueError):
    """A message this decoder does not understand (a newer protocol, a corrupt row)."""


class Decoder:
    """Turns pgoutput messages into ``Begin``, ``Change`` and ``Commit`` objects."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}

    def decode(self, msg: bytes) -> Begin | Commit | Change | None:
        kind = msg[:1]
        if kind == b"I":  # the common case first
            (relid,) = struct.unpack_from(">I", msg, 1)
            if msg[5] != 78:  # "N"
                raise ProtocolError("INSERT without a new tuple")
            new, _ = self._tuple(msg, 6)
            return Change("insert", self._rel(relid), new=new)
        if kind == b"B":
            final_lsn, ts, xid = struct.unpack_from(">QqI", msg, 1)
            return Begin(final_lsn, pg_time(ts), xid)
        if kind == b"C":
            _flags, commit_lsn, end_lsn, ts = struct.unpack_from(">BQQq", msg, 1)
            return Commit(commit_lsn, end_lsn, ts)
        if kind == b"R":
            self._relation(msg)
            return None
        if kind == b"U":
            (relid,) = struct.unpack_from(">I", msg, 1)
            pos, old, old_is_key = 5, None, False
            if msg[pos:pos + 1] in (b"K", b"O"):
                old_is_key = msg[pos:pos + 1] == b"K"
                old, pos = self._tuple(msg, pos + 1)
            if msg[pos:pos + 1] != b"N":
                raise ProtocolError("UPDATE without a new tuple")
            new, _ = self._tuple(msg, pos + 1)
            return Change("update", self._rel(relid), new=new, old=old, old_is_key=old_is_key)
        if kind == b"D":
            (relid,) = struct.unpack_from(">I", msg, 1)
            tag = msg[5:6]
            if tag not in (b"K", b"O"):
                raise ProtocolError("DELETE without an old tuple")
            old, _ = self._tuple(msg, 6)
            return Change("delete", self._rel(relid), old=old, old_is_key=tag == b"K")
        if kind == b"T":
            nrels, _options = struct.unpack_from(">IB", msg, 1)
            relids = struct.unpack_from(f">{nrels}I", msg, 6)
            rels = [self._rel(r) for r in relids]
            return Change("truncate", rels[0] if rels else None, truncated=rels)
        if kind == b"M":
            _flags, lsn = struct.unpack_from(">BQ", msg, 1)
            prefix, pos = _cstring(msg, 10)
            (n,) = struct.unpack_from(">I", msg, pos)
            return Change("message", None, prefix=prefix, content=bytes(msg[pos + 4:pos + 4 + n]), message_lsn=lsn)
        if kind in (b"Y", b"O"):  # a type's name, a replication origin: nothing to log
            return None
        raise ProtocolError(f"unknown pgoutput message {kind!r}")

    def insert_row(self, msg: bytes) -> tuple[Relation, dict[str, Any]] | None:
        """An INSERT's relation and its row as ``row_json`` renders it, in one pass (the
        common message); None for anything ``decode`` must decide (then call it)."""
        rel = self.relations.get(int.from_bytes(msg[1:5], "big"))
        if rel is None:
            return None
        row = _insert_row(msg, rel.names, rel.kinds)
        if row is None:
            return None
        for c in rel.rendered:
            text = row[c.name]
            if text is not None:
                row[c.name] = render_value(c.type_oid, text)
        return rel, row

    def _rel(self, relid: int) -> Relation:
        rel = self.relations.get(relid)
        if rel is None:
            raise ProtocolError(f"change for relation {relid} before its Relation message")
        return rel

    def _relation(self, msg: bytes) -> None:
        (relid,) = struct.unpack_from(">I", msg, 1)
        schema, pos = _cstring(msg, 5)
        name, pos = _cstring(msg, pos)
        pos += 1  # replica identity setting
        (ncols,) = struct.unpack_from(">H", msg, pos)
        pos += 2
        cols = []
        for _ in range(ncols):
            flags = msg[pos]
            cname, pos = _cstring(msg, pos + 1)
            type_oid, _typmod = struct.unpack_from(">Ii", msg, pos)
            pos += 8
            cols.append(Column(cname, type_oid, bool(flags & 1)))
        self.relations[relid] = Relation(relid, schema, name, cols)

    @staticmethod
    def _tuple(msg: bytes, pos: int) -> tuple[list[Any], int]:
        n = (msg[pos] << 8) | msg[pos + 1]
        pos += 2
        out: list[Any] = []
        append = out.append
        for _ in range(n):
            kind = msg[pos]
            pos += 1
            if kind == 116:  # 't': text
                size = int.from_bytes(msg[pos:pos + 4], "big")
                pos += 4
                append(msg[pos:pos + size].decode("utf-8", "replace"))
                pos += size
            elif kind == 110:  # 'n': NULL
                append(None)
            elif kind == 117:  # 'u': unchanged TOAST
                append(UNCHANGED_TOAST)
            else:
                raise ProtocolError(f"tuple value kind {chr(kind)!r} (binary mode is not requested)")
        return out, pos


def _cstring(msg: bytes, pos: int) -> tuple[str, int]:
    end = msg.index(b"\x00", pos)
    return bytes(msg[pos:end]).decode("utf-8", "replace"), end + 1
