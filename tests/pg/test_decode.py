"""The one rendering of a row (WAL and table must agree for every type) and pgoutput decoding."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest

from pipeline.pg.decode import (
    BOOL,
    INT8,
    JSON,
    JSONB,
    Decoder,
    ProtocolError,
    format_lsn,
    parse_lsn,
    pg_time,
    render_value,
)
from tests.pg.conftest import AuditDb, chain_events
from tests.pg.server import wait_for
from tests.pg.test_source import tailing


def test_values_are_exact_or_text() -> None:
    assert render_value(INT8, "9223372036854775807") == 9223372036854775807
    assert render_value(BOOL, "t") is True and render_value(BOOL, "f") is False
    assert render_value(JSONB, '{"a": 1, "b": [1, 2], "c": "x.5"}') == {"a": 1, "b": [1, 2], "c": "x.5"}
    assert render_value(JSONB, '{"f": 1.10}') == '{"f": 1.10}'  # 1.10 would become 1.1
    assert render_value(JSONB, '{"f": 1.5}') == {"f": 1.5}  # exact: round-trips
    assert render_value(JSONB, '{"n": 123456789012345678901234567890}') == '{"n": 123456789012345678901234567890}'
    assert render_value(JSON, '{"a":1,  "a": 2}') == '{"a":1,  "a": 2}'  # json keeps what was written
    assert render_value(25, "2026-12-06 18:37:49+00") == "2026-12-06 18:37:49+00"
    assert render_value(INT8, None) is None


def test_lsn_and_time() -> None:
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert pg_time(0) == "2000-01-01T00:00:00.000000Z"
    assert pg_time(1_000_001) == "2000-01-01T00:00:01.000001Z"


def test_unknown_messages_are_refused_not_skipped() -> None:
    d = Decoder()
    with pytest.raises(ProtocolError, match="unknown pgoutput message"):
        d.decode(b"Z\x00")
    with pytest.raises(ProtocolError, match="before its Relation message"):
        d.decode(b"I" + struct.pack(">I", 99) + b"N" + struct.pack(">H", 0))


TYPES = """CREATE TABLE audit.kinds (
    id bigserial PRIMARY KEY, i2 smallint, i4 integer, n numeric, f8 double precision, f4 real, b boolean,
    t text, vc varchar(10), ts timestamptz, tsn timestamp, d date, iv interval, by bytea, u uuid, arr text[],
    j json, jb jsonb, ip inet, m money, tm time)"""
ROW = """INSERT INTO audit.kinds (i2, i4, n, f8, f4, b, t, vc, ts, tsn, d, iv, by, u, arr, j, jb, ip, m, tm) VALUES
    (-2, 2147483647, 12345678901234567890.000100, 0.1, 1.5, true, E'quote '' and \\\\ and \\n and ü', 'x',
     '2026-12-06 18:37:49.123456+02', '2026-12-06 18:37:49', '2026-12-06', '1 day 02:03:04', '\\xdeadbeef',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', ARRAY['a', 'b c'], '{"k":  1.10}', '{"k": 1.10, "z": [1, 2]}',
     '10.0.0.1/24', 12.34, '12:34:56.789'),
    (NULL, NULL, NULL, 'NaN', '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     '{"n": 1}', NULL, NULL, NULL)"""


def test_every_type_renders_alike_from_the_wal_and_from_the_table(audit_db: AuditDb, tmp_path: Path) -> None:
    """A table of many types, published like the audit table: the source's rendering and
    pg verify's rendering of the same rows must agree, or verify would report every row."""
    with contextlib.closing(audit_db.connect()) as su:
        su.execute(TYPES)
        su.execute("ALTER PUBLICATION audit_events_chain ADD TABLE audit.kinds")
        su.execute("SET TimeZone = 'America/New_York'")  # the writer's session settings do not matter
        su.execute(ROW)
    hot = tmp_path / "hot"
    with tailing(audit_db, hot) as src:
        assert wait_for(lambda: src.rows_written >= 2, 10)  # durable: then the chain holds them
        row = next(e for e in chain_events(hot) if e.get("table") == "audit.kinds")["row"]
        assert row["ts"] == "2026-12-06 16:37:49.123456+00" and row["n"] == "12345678901234567890.000100"
        assert row["jb"] == '{"k": 1.10, "z": [1, 2]}' and row["by"] == "\\xdeadbeef" and row["b"] is True
        assert row["t"] == "quote ' and \\ and \n and ü"
        from pipeline.pg.install import Target
        from pipeline.pg.reconcile import VerifyOptions, verify

        class KindsTarget(Target):
            def tables(self) -> list[str]:
                return ["audit.kinds"]

        report = verify(audit_db.dsn, VerifyOptions(target=KindsTarget(), hot=hot, wait=20))
    assert report.ok, [f.to_dict() for f in report.findings]
    assert report.tables["audit.kinds"]["rows"] == 2 and report.tables["audit.kinds"]["logged"] == 2
