"""The one-pass INSERT rendering (``Decoder.insert_row``; C ``pg_insert_row`` and its Python
reference) against the general path (``Decoder.decode`` then ``row_json``): the same row
for every message it accepts, and None, never a different row, for anything else."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline._accel import native
from pipeline.pg.decode import (
    BOOL,
    INT2,
    INT4,
    INT8,
    JSON,
    JSONB,
    OID,
    Change,
    Column,
    Decoder,
    ProtocolError,
    Relation,
    _py_insert_row,
    row_json,
)

TEXT, TIMESTAMPTZ, NUMERIC = 25, 1184, 1700
TYPES = [INT8, INT4, INT2, OID, BOOL, JSON, JSONB, TEXT, TIMESTAMPTZ, NUMERIC]
RELID = 16385

# values as PostgreSQL writes them, and ones it never writes (the fast paths must decline
# those, or render them exactly as the general path does)
_text_values = st.one_of(
    st.sampled_from([b"0", b"-1", b"42", b"9223372036854775807", b"-9223372036854775808", b"99999999999999999999",
                     b"123456789012345678901", b"+5", b" 5", b"5 ", b"1_0", b"", b"-", b"0x10", b"\xd9\xa3",
                     b"t", b"f", b"true", b"T", b'{"a": 1}', b'{"f": 1.10}', b"[1, 2]", b"null",
                     b"2026-12-07 03:00:00+00", b"1.5e10", b"caf\xc3\xa9", b"\xff\xfe", b"a\x00b"]),
    st.binary(max_size=40),
    st.text(max_size=20).map(lambda t: t.encode()),
)
_values = st.one_of(st.none(), st.just("u"), _text_values)


def _message(values: list[bytes | str | None]) -> bytes:
    out = bytearray(b"I" + struct.pack(">I", RELID) + b"N" + struct.pack(">H", len(values)))
    for v in values:
        if v is None:
            out += b"n"
        elif v == "u":
            out += b"u"
        else:
            assert isinstance(v, bytes)
            out += b"t" + struct.pack(">I", len(v)) + v
    return bytes(out)


def _decoder(types: list[int]) -> Decoder:
    d = Decoder()
    d.relations[RELID] = Relation(RELID, "audit", "events", [Column(f"c{i}", t) for i, t in enumerate(types)])
    return d


def _general(d: Decoder, msg: bytes) -> dict[str, Any] | None:
    try:
        item = d.decode(msg)
    except (ProtocolError, IndexError, ValueError, struct.error):
        return None
    assert isinstance(item, Change) and item.relation is not None and item.new is not None
    if any(not isinstance(v, str | None) for v in item.new):  # an unchanged-TOAST marker
        return None
    return row_json(item.relation.columns, item.new)


def _canonical(type_oid: int) -> st.SearchStrategy[bytes | None]:
    """A value as PostgreSQL's output function writes one of this type (or NULL)."""
    if type_oid in (INT8, INT4, INT2, OID):
        values: st.SearchStrategy[bytes] = st.integers(-(2**63), 2**63 - 1).map(lambda n: str(n).encode())
    elif type_oid == BOOL:
        values = st.sampled_from([b"t", b"f"])
    elif type_oid in (JSON, JSONB):
        values = st.sampled_from([b'{"n": 1, "ok": true}', b"[1, 2.5]", b'"x"', b'{"f": 1.10}', b"{}"])
    else:
        values = st.text(max_size=20).map(lambda t: t.encode())
    return st.one_of(st.none(), values, values, values)


_columns = st.one_of(
    st.lists(st.tuples(st.sampled_from(TYPES), _values), min_size=1, max_size=8),  # anything
    st.lists(st.sampled_from(TYPES), min_size=1, max_size=8).flatmap(  # what PostgreSQL sends
        lambda types: st.tuples(*(st.tuples(st.just(t), _canonical(t)) for t in types)).map(list)),
)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_columns,
       st.sampled_from(["as-is", "truncated", "trailing", "short-count"]), st.integers(min_value=0, max_value=200))
def test_one_pass_matches_the_general_path(cols: list[tuple[int, Any]], damage: str, cut: int) -> None:
    types = [t for t, _ in cols]
    msg = _message([v for _, v in cols])
    if damage == "truncated":
        msg = msg[:max(1, min(len(msg) - 1, cut))]
    elif damage == "trailing":
        msg += b"x"
    elif damage == "short-count":
        msg = msg[:6] + struct.pack(">H", len(cols) - 1) + msg[8:]
    d = _decoder(types)
    rel = d.relations[RELID]
    reference = _py_insert_row(msg, rel.names, rel.kinds)
    if native is not None:
        assert native.pg_insert_row(msg, rel.names, rel.kinds) == reference
    fast = d.insert_row(msg)
    if fast is None:
        return
    assert damage == "as-is"  # a damaged message is never rendered
    general = _general(d, msg)
    assert fast[1] == general and list(fast[1]) == [c.name for c in rel.columns]
    for key in fast[1]:  # same types too (True is not 1)
        assert type(fast[1][key]) is type(general[key]) if general is not None else False


def test_canonical_values_take_the_one_pass() -> None:
    """What PostgreSQL writes is accepted (not declined to the slower path)."""
    d = _decoder([INT8, BOOL, JSONB, TEXT, INT4])
    msg = _message([b"-42", b"t", b'{"n": 1, "ok": true}', b"host-1", None])
    got = d.insert_row(msg)
    assert got is not None
    assert got[1] == {"c0": -42, "c1": True, "c2": {"n": 1, "ok": True}, "c3": "host-1", "c4": None}


@pytest.mark.skipif(native is None, reason="compares the C accelerator with the Python reference")
def test_the_accelerator_checks_its_arguments() -> None:
    with pytest.raises(TypeError):
        native.pg_insert_row(b"I", ["c0"], b"\x00")  # type: ignore[union-attr]
    assert native.pg_insert_row(b"I", ("c0",), b"") is None  # type: ignore[union-attr]


def test_the_one_pass_event_is_the_general_event_key_for_key(tmp_path: Any) -> None:
    """The source's INSERT event from the one-pass row and from decode()+_event: the same
    keys in the same order (the stored bytes follow the order) and the same values."""
    from prometheus_client import CollectorRegistry

    from pipeline import open_log
    from pipeline.pg.decode import Begin
    from pipeline.pg.source import Position, PostgresSource, SourceSettings

    d = _decoder([INT8, BOOL, JSONB, TEXT])
    d.relations[RELID].columns[0] = Column("c0", INT8, key=True)
    rel = d.relations[RELID] = Relation(RELID, "audit", "events", d.relations[RELID].columns)
    msg = _message([b"7", b"f", b'{"n": 1}', b"host"])
    log = open_log(tmp_path / "hot", "app")
    try:
        src = PostgresSource(SourceSettings(dsn="host=unused"), log, registry=CollectorRegistry())
        src._pkeys["audit.events"] = ["c0"]
        begin, pos = Begin(0x16B374D848, "2026-12-07T04:00:00.000000Z", 1234), Position(0x16B374D848, 0)
        fast = d.insert_row(msg)
        assert fast is not None
        general = d.decode(msg)
        assert isinstance(general, Change)
        one = src._insert_event(fast[0], fast[1], begin, pos)
        other = src._event(general, begin, pos)
        assert list(one.items()) == list(other.items())
        assert list(one["row"].items()) == list(other["row"].items()) and rel.qualified == "audit.events"
    finally:
        log.close()
