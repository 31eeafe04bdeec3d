"""The longest record line (docs/FORMAT.md §1, check 2): 33,554,432 bytes with its newline.
A line of exactly that length is a record like any other; one byte more is `bad-line`
whatever it holds (a valid hash, valid JSON), for the C fast path, the pure-Python path, the
slow parser and the independent verifier written from the document; and a hash-valid line
far over it is judged without being held.  The writer's side: nothing it takes can make a
line that long (tests/crypt/test_line_limit.py measures its largest line, encrypted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import _accel
from pipeline.format.record import MAX_LINE_BYTES, RecordError, encode_record, parse_fields, parse_record
from pipeline.verify import chain
from pipeline.verify.chain import scan_segment
from tests import independent_verifier as iv
from tests.hotutil import writable_first_segment
from tests.rss import traced_peak

TS = b"2026-12-07T08:00:00.000000Z"


def _record(n: int, seq: int, prev: bytes) -> tuple[bytes, bytes]:
    """A valid event record of exactly ``n`` bytes, its newline included."""
    base, _ = encode_record("app", seq, TS, "event", prev, b'{"pad":""}')
    assert n >= len(base)
    line, digest = encode_record("app", seq, TS, "event", prev, b'{"pad":"' + b"p" * (n - len(base)) + b'"}')
    assert len(line) == n
    return line, digest


def test_the_limit_is_the_documented_number() -> None:
    assert MAX_LINE_BYTES == 33_554_432 == iv.MAX_LINE
    text = (Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md").read_text()
    assert "longer than 33,554,432 bytes" in text


def test_parse_accepts_the_longest_line_and_rejects_one_byte_more() -> None:
    zero = b"0" * 64
    longest, _ = _record(MAX_LINE_BYTES, 0, zero)
    assert parse_fields(longest) is not None
    assert parse_record(longest).seq == 0
    iv.check_line(longest)
    over, _ = _record(MAX_LINE_BYTES + 1, 0, zero)
    assert parse_fields(over) is None
    with pytest.raises(RecordError) as e:
        parse_record(over)
    assert e.value.reason == "bad-line" and str(MAX_LINE_BYTES) in e.value.detail
    with pytest.raises(iv.Reject) as r:
        iv.check_line(over)
    assert r.value.reason == "bad-line"
    # an incomplete line is torn first, whatever its length (check 1 before check 2)
    with pytest.raises(RecordError) as e:
        parse_record(over[:-1])
    assert e.value.reason == "torn"


def _stream_with(tmp_path: Path, n: int) -> tuple[Path, int]:
    """Stream "app": five events, then a valid-in-every-other-way record of ``n`` bytes, then
    one more event; the offset of the long line."""
    seg = writable_first_segment(tmp_path / f"hot-{n}", sealed=False)
    last = parse_record(seg.read_bytes().splitlines(keepends=True)[-1])
    big, digest = _record(n, last.seq + 1, last.hash.encode())
    after, _ = encode_record("app", last.seq + 2, TS, "event", digest, b'{"n":"after"}')
    at = seg.stat().st_size
    with seg.open("ab") as f:
        f.write(big)
        f.write(after)
    return seg, at


@pytest.mark.parametrize("native", [True, False], ids=["native", "pure"])
def test_a_segment_with_the_longest_line_verifies_and_one_byte_more_is_bad_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    if not native:
        monkeypatch.setattr(chain, "_native", None)
    elif _accel.native is None:
        pytest.skip("the C accelerator is not in use")
    seg, _ = _stream_with(tmp_path, MAX_LINE_BYTES)
    scan = scan_segment(seg, "app")
    assert scan.findings == [] and scan.records == 7 and scan.valid_bytes == seg.stat().st_size
    assert iv.scan(seg, "app").findings == []

    seg, at = _stream_with(tmp_path, MAX_LINE_BYTES + 1)
    scan = scan_segment(seg, "app")
    assert [(f.code, f.seq, f.where) for f in scan.findings] == [("bad-line", 5, at)]
    assert str(MAX_LINE_BYTES) in scan.findings[0].message
    assert scan.records == 5 and scan.valid_bytes == at and scan.size == seg.stat().st_size
    assert iv.scan(seg, "app").findings == [(seg.name, "bad-line")]


@pytest.mark.parametrize("native", [True, False], ids=["native", "pure"])
def test_a_hash_valid_line_far_over_the_limit_is_judged_without_holding_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """A root attacker's 160 MiB record with a valid hash and valid JSON, in the active
    segment: before the limit, the verifier copied and parsed it (hundreds of MiB)."""
    if not native:
        monkeypatch.setattr(chain, "_native", None)
    elif _accel.native is None:
        pytest.skip("the C accelerator is not in use")
    seg, at = _stream_with(tmp_path, 160 << 20)
    scan, peak = traced_peak(lambda: scan_segment(seg, "app"))
    assert [(f.code, f.where) for f in scan.findings] == [("bad-line", at)]
    assert peak < 8 << 20, peak
