"""One timestamp parser (pipeline.format.record.ts_epoch / valid_ts) for the whole code base:
the same seconds the five parsers it replaced computed, and the C verifier's arithmetic."""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.format.record import ts_epoch, valid_ts

moments = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999))


def _fmt(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ").rjust(27, "0")


@given(moments)
def test_the_seconds_are_those_the_old_parsers_computed(d: datetime) -> None:
    ts = _fmt(d)
    assert valid_ts(ts)
    # what verify.chain, verify.tier and the writer computed (and the C verifier computes)
    old = float(calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))) + int(ts[20:26]) / 1e6
    assert ts_epoch(ts) == old
    # what verify.hot and fss computed: the same time, to the last bit or one ulp apart
    exact = d.replace(tzinfo=UTC).timestamp()
    assert abs(ts_epoch(ts) - exact) <= abs(exact) * 2**-52 + 1e-9


def test_the_second_before_the_epoch_is_a_real_time() -> None:
    # timegm gives -1 for it: the cache must not mistake that for "unknown"
    assert valid_ts("1969-12-31T23:59:59.000000Z")
    assert ts_epoch("1969-12-31T23:59:59.500000Z") == -0.5
    assert ts_epoch("1969-12-31T23:59:59.500000Z") == -0.5  # again, from the cache


@pytest.mark.parametrize("ts", [
    "2026-02-29T00:00:00.000000Z",  # no such day
    "2026-11-02T24:00:00.000000Z",
    "2026-11-02T10:20:60.000000Z",  # no leap seconds
    "2026-11-02T10:20:30Z",  # no fraction
    "2026-11-02 10:20:30.123456Z",
    "2026-11-02T10:20:30.123456+00:00",
    "２026-11-02T10:20:30.123456Z",  # digits of another script
    "",
])
def test_anything_else_is_refused_by_both(ts: str) -> None:
    assert not valid_ts(ts)
    with pytest.raises(ValueError):
        ts_epoch(ts)


def test_no_other_module_parses_timestamps() -> None:
    """Record times are parsed by ts_epoch only (strptime/timegm were the five other ways)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "pipeline"
    found = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if p.parts[-2] != "format" and any(s in p.read_text() for s in ("strptime(", "timegm("))]
    assert found == [], f"timestamps parsed outside pipeline.format.record: {found}"
