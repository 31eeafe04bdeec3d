"""Deep verification's stream scanner (``pipeline.cold.codec.SegmentScanner``) applies the
format's longest line (docs/FORMAT.md §1, check 2) like ``scan_segment`` and
``build_manifest``: a record of exactly the limit is a record, one byte more is
``bad-line``, and a tail without a newline past the limit is counted, not held."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from pipeline.cold.codec import SegmentScanner
from pipeline.format.record import MAX_LINE_BYTES, RecordError, encode_record, parse_record
from tests.hotutil import writable_first_segment

TS = b"2026-12-07T08:00:00.000000Z"
CHUNK = 1 << 20


def _segment_bytes(tmp_path: Path) -> tuple[str, bytes, bytes]:
    seg = writable_first_segment(tmp_path / "hot", sealed=False)
    data = seg.read_bytes()
    return seg.name, data, parse_record(data.splitlines(keepends=True)[-1]).hash.encode()


def _feed(scanner: SegmentScanner, data: bytes) -> None:
    for i in range(0, len(data), CHUNK):
        scanner.feed(data[i : i + CHUNK])


def _record(n: int, seq: int, prev: bytes) -> bytes:
    base, _ = encode_record("app", seq, TS, "event", prev, b'{"pad":""}')
    line, _ = encode_record("app", seq, TS, "event", prev, b'{"pad":"' + b"p" * (n - len(base)) + b'"}')
    assert len(line) == n
    return line


def test_the_longest_record_is_scanned_and_one_byte_more_is_bad_line(tmp_path: Path) -> None:
    name, data, last_hash = _segment_bytes(tmp_path)
    scanner = SegmentScanner(name)
    _feed(scanner, data + _record(MAX_LINE_BYTES, 5, last_hash))
    got = scanner.finish()
    assert (got.records, got.last_seq, got.torn_bytes) == (6, 5, 0)

    scanner = SegmentScanner(name)
    with pytest.raises(RecordError) as e:
        _feed(scanner, data + _record(MAX_LINE_BYTES + 1, 5, last_hash))
    assert e.value.reason == "bad-line" and str(MAX_LINE_BYTES + 1) in e.value.detail


@pytest.mark.parametrize("newline", [False, True], ids=["torn", "then-newline"])
def test_a_tail_past_the_limit_is_counted_not_held(tmp_path: Path, newline: bool) -> None:
    name, data, _ = _segment_bytes(tmp_path)
    scanner = SegmentScanner(name)
    _feed(scanner, data)
    tail = 96 << 20
    tracemalloc.start()
    try:
        for _ in range(tail // CHUNK):
            scanner.feed(b"t" * CHUNK)
        if newline:
            with pytest.raises(RecordError) as e:
                scanner.feed(b"t\nmore")
            assert e.value.reason == "bad-line" and str(tail + 2) in e.value.detail
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * MAX_LINE_BYTES + 4 * CHUNK, peak  # the held start of the line: not 96 MiB
    if not newline:
        got = scanner.finish()
        assert got.records == 5 and got.torn_bytes == tail and got.size == len(data) + tail
