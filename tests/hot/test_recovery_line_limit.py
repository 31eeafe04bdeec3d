"""The writer's recovery at start-up and the verifier agree on the format's longest line
(docs/FORMAT.md §1, check 2; §5, the one rule for V): a record that continues the chain but
is one byte over the limit is not a record, so the segment is abandoned before it and the
line is kept as torn bytes (and reported, like any complete line that is not a record); a
record of exactly the limit is kept.  The recovery holds at
most about twice the limit, whatever the line's size."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.format.record import MAX_LINE_BYTES, encode_record, parse_record
from pipeline.format.segment import list_segments, read_first_record
from pipeline.hot.factory import open_hotlog
from pipeline.verify.chain import verify_stream
from tests.hotutil import writable_first_segment
from tests.rss import traced_peak

TS = b"2026-12-07T08:00:00.000000Z"


def _append_record(seg: Path, n: int) -> int:
    """Append a record of ``n`` bytes that continues the segment's chain; its offset."""
    last = parse_record(seg.read_bytes().splitlines(keepends=True)[-1])
    base, _ = encode_record("app", last.seq + 1, TS, "event", last.hash.encode(), b'{"pad":""}')
    line, _ = encode_record("app", last.seq + 1, TS, "event", last.hash.encode(),
                            b'{"pad":"' + b"p" * (n - len(base)) + b'"}')
    assert len(line) == n
    at = seg.stat().st_size
    with seg.open("ab") as f:
        f.write(line)
    return at


def _restart(hot: Path) -> int:
    """Open the writer (its recovery), append one event, close; the recovery's traced peak."""
    log, peak = traced_peak(lambda: open_hotlog(hot, "app", heartbeat_interval=0, immutable="off"))
    log.append({"after": "restart"})
    log.close()
    return peak


@pytest.mark.parametrize("n", [MAX_LINE_BYTES + 1, 96 << 20], ids=["one-byte-over", "96MiB"])
def test_a_chained_record_over_the_limit_is_torn_bytes_of_an_abandoned_segment(tmp_path: Path, n: int) -> None:
    hot = tmp_path / "hot"
    seg = writable_first_segment(hot, sealed=False)
    at = _append_record(seg, n)
    peak = _restart(hot)
    assert peak < 2 * MAX_LINE_BYTES + (8 << 20), peak  # the cap, its parts: not the line
    segs = list_segments(hot / "app")
    assert len(segs) == 2
    first = read_first_record(segs[1])
    assert first is not None and first.kind == "recovery"
    (entry,) = first.data["abandoned"]
    assert (entry["segment"], entry["valid_bytes"], entry["torn_bytes"]) == (seg.name, at, n)
    # the recovery explains the abandoned segment (no recovery-mismatch or -drops-records);
    # the over-long line stays reported, like any complete line that is not a record
    report = verify_stream(hot / "app")
    assert [(f.code, f.segment, f.where) for f in report.findings] == [("bad-line", seg.name, at)]
    assert report.records == 5 + 3  # five events; the recovery record, the event, the seal


def test_a_chained_record_of_exactly_the_limit_is_kept(tmp_path: Path) -> None:
    hot = tmp_path / "hot"
    seg = writable_first_segment(hot, sealed=False)
    _append_record(seg, MAX_LINE_BYTES)
    _restart(hot)
    segs = list_segments(hot / "app")
    assert len(segs) == 1  # continued: the last line is a complete record
    report = verify_stream(hot / "app")
    assert report.ok and report.findings == [], report.findings
    assert report.records == 5 + 1 + 3  # ... the long record; a recovery record, the event, the seal
