"""Regression tests for bugs found in review: each reproduces the original failure."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import orjson
import pytest

from pipeline.hot.segment import list_segments
from pipeline.hot.writer import HotLog
from pipeline.record import GENESIS_HASH, encode_record, parse_record
from pipeline.ship.ledger import Ledger, StateConflict
from pipeline.verify.chain import verify_stream


def test_failed_head_write_after_a_durable_seal_does_not_fork_the_chain(hot_dir: Path) -> None:
    log = HotLog(hot_dir, "s", heartbeat_interval=0, segment_window=0, background=False)
    for i in range(5):
        log.append({"i": i})
    pending = [log.append({"i": i}, wait=False) for i in range(5, 8)]
    real = log._store_head
    calls = {"n": 0}

    def failing_head(*a: object, **k: object) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(*a, **k)  # type: ignore[arg-type]

    log._store_head = failing_head  # type: ignore[method-assign]
    log.seal()  # the seal and records 5..7 are fsynced before head.json fails: they stay
    for r in pending:
        log.wait_durable(r, timeout=5)
    log.append({"after": True})
    log.close()
    report = verify_stream(hot_dir / "s", workers=1)
    assert report.ok, report.findings
    reopened = HotLog(hot_dir, "s", heartbeat_interval=0)
    reopened.append({"reopened": True})
    reopened.close()
    assert verify_stream(hot_dir / "s", workers=1).ok


def test_impossible_timestamp_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    line, _ = encode_record("s", 0, b"2026-13-45T99:99:99.000000Z", "event", GENESIS_HASH.encode(), b"{}")
    (d / "seg-00000000000000000000.jsonl").write_bytes(line)
    report = verify_stream(d, workers=1)
    assert [f.reason for f in report.findings] == ["bad-field"]


def test_non_ascii_digits_in_ts_are_rejected_by_both_parsers() -> None:
    body_ts = "２０２６-11-21T10:00:00.000001Z".encode()
    line, _ = encode_record("s", 0, body_ts, "event", GENESIS_HASH.encode(), b"{}")
    from pipeline.record import RecordError, parse_fields

    assert parse_fields(line) is None
    with pytest.raises(RecordError) as exc:
        parse_record(line)
    assert exc.value.reason == "bad-field"


def test_close_racing_appends_leaves_no_waiter_blocked(hot_dir: Path) -> None:
    import threading

    from pipeline.hot.writer import HotLogError

    for trial in range(10):
        log = HotLog(hot_dir, f"c{trial}", heartbeat_interval=0)
        stop = threading.Event()
        stuck: list[str] = []

        def worker(lg: HotLog = log) -> None:
            while not stop.is_set():
                try:
                    lg.append({"x": 1})
                except HotLogError:
                    return

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        log.close()
        stop.set()
        for t in threads:
            t.join(timeout=10)
            if t.is_alive():
                stuck.append(t.name)
        assert not stuck, f"trial {trial}: appenders still blocked after close()"
        assert verify_stream(hot_dir / f"c{trial}", workers=1).ok


def test_ledger_transitions_are_compare_and_set(tmp_path: Path) -> None:
    from pipeline.hot.segment import SegmentManifest

    led = Ledger(tmp_path)
    m = SegmentManifest("s", "seg-00000000000000000000.jsonl", 0, 3, 4, 10, "a" * 64, "b" * 64, "0" * 64,
                        "c" * 64, True, "", "")
    led.add(m)
    led.set_state("s", m.segment, "uploading", expect=("sealed",))
    led.set_state("s", m.segment, "evicted")  # another shipper got further
    with pytest.raises(StateConflict):
        led.set_state("s", m.segment, "uploaded", expect=("uploading",))
    assert led.get("s", m.segment).state == "evicted"  # type: ignore[union-attr]


def test_unsealed_segment_is_not_shipped_while_its_seal_is_still_queued(hot_dir: Path) -> None:
    from pipeline.ship.shipper import Shipper

    log = HotLog(hot_dir, "app", heartbeat_interval=0, segment_window=0, segment_max_bytes=8192,
                 background=False)
    for i in range(15):
        log.append({"i": i, "pad": "x" * 200})
    log.sync()
    first = list_segments(hot_dir / "app")
    while len(list_segments(hot_dir / "app")) == len(first):
        log.append({"more": True, "pad": "y" * 200}, wait=False)  # rotation opens the next file ...
    # ... while the old segment's last records and seal are only queued in memory
    shipper = Shipper(hot_dir, store=None, hot_retention=0.0)  # type: ignore[arg-type]
    shipper.discover()
    rotated = first[-1].name
    assert shipper.ledger.get("app", rotated) is None, "a half-written segment was taken for shipping"
    log.sync()
    shipper.discover()
    entry = shipper.ledger.get("app", rotated)
    assert entry is not None and entry.sealed
    assert entry.sha256 == hashlib.sha256((hot_dir / "app" / rotated).read_bytes()).hexdigest()
    log.close()


def test_eviction_refuses_a_hot_copy_that_differs_from_what_was_confirmed(hot_dir: Path) -> None:
    from pipeline.hot import attr
    from pipeline.ship.shipper import Shipper

    with HotLog(hot_dir, "app", heartbeat_interval=0) as log:
        log.append({"a": 1})
    seg = list_segments(hot_dir / "app")[0]
    shipper = Shipper(hot_dir, store=None, hot_retention=0.0)  # type: ignore[arg-type]
    shipper.discover()
    shipper.ledger.set_state("app", seg.name, "confirmed", confirmed_at=0.0)
    attr.clear_protection(seg)
    with open(seg, "ab") as f:
        f.write(orjson.dumps({"appended": "after confirmation"}) + b"\n")
    assert shipper.evict() == 0
    assert seg.exists()
    assert shipper.ledger.get("app", seg.name).state == "quarantined"  # type: ignore[union-attr]
