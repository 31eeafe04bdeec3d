"""The ledger side of the cold watch, against a real ledger read through the read-only view:
cold lag, quarantine, a hot file deleted outside eviction, an eviction without a confirmed
cold copy.  (Objects in cold storage: on moto's S3 server below, and tests/monitor/test_scenarios.py on file://.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.hot import attr
from pipeline.hot.segment import build_manifest, list_segments
from pipeline.hot.writer import HotLog
from pipeline.monitor.cold import ColdState, ColdWatcher
from pipeline.monitor.config import ColdWatch
from pipeline.ship.ledger import Ledger, open_ledger_readonly


def test_ledger_conditions(hot_dir: Path) -> None:
    log = HotLog(hot_dir, "app", segment_window=0, segment_max_bytes=5000, heartbeat_interval=0)
    for i in range(200):
        log.append({"i": i, "m": "x" * 30})
    log.close()
    segs = list_segments(hot_dir / "app")[:4]
    ledger = Ledger(hot_dir)
    for p in segs:
        ledger.add(build_manifest(p), now=time.time() - 120)
    lagging, quarantined, deleted, unconfirmed = (p.name for p in segs)
    ledger.set_state("app", quarantined, "quarantined", last_error="object conflict")
    ledger.set_state("app", deleted, "confirmed", confirmed_at=time.time())
    ledger.set_state("app", unconfirmed, "evicted", evicted_at=time.time())
    ledger.close()
    attr.clear_protection(segs[2])
    segs[2].unlink()  # deleted on the host, outside eviction
    watcher = ColdWatcher(ColdWatch(max_lag=60), hot_dir, (), ColdState(), None)
    view = open_ledger_readonly(hot_dir)
    assert view is not None
    try:
        found = {(f.code, f.segment) for f in watcher.cycle(view).findings}
    finally:
        view.close()
    assert ("cold-lag", lagging) in found
    assert ("quarantined", quarantined) in found
    assert ("hot-segment-missing", deleted) in found
    assert ("evicted-without-cold-copy", unconfirmed) in found
    # the unconfirmed eviction stays reported (sticky), the rest is re-read each cycle
    view = open_ledger_readonly(hot_dir)
    assert view is not None
    try:
        again = {(f.code, f.segment) for f in watcher.cycle(view).findings}
    finally:
        view.close()
    assert again == found
    assert ColdState.from_dict(watcher.state.to_dict()).evicted_watermark == watcher.state.evicted_watermark


def test_ledger_of_a_stopped_shipper_is_read_through_a_read_only_mount(hot_dir: Path, tmp_path: Path) -> None:
    """A clean shutdown removes the WAL files, which a reader on a read-only file system cannot
    create: the view then reads the (complete) database file as immutable."""
    from tests.hotutil import read_only_view

    log = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    log.append({"i": 1})
    log.close()
    ledger = Ledger(hot_dir)
    ledger.add(build_manifest(list_segments(hot_dir / "app")[0]))
    ledger.close()
    assert not (hot_dir / ".ship" / "ledger.sqlite-wal").exists()
    with read_only_view(hot_dir, tmp_path / "ro") as ro:
        view = open_ledger_readonly(ro)
        assert view is not None
        try:
            assert [e.state for e in view.entries()] == ["sealed"]
        finally:
            view.close()


@pytest.mark.slow
def test_cold_objects_deleted_replaced_and_retention_shortened_on_s3(hot_dir: Path, moto_endpoint: str) -> None:
    """Objects the real shipper uploaded to moto's S3 server (over HTTP), changed afterwards the
    ways moto allows (it does not enforce COMPLIANCE): the current version deleted (a delete
    marker) while the hot copy still exists, a new version put over one, the retention of a third
    shortened.  New objects are checked once each; the rolling re-check finds the changes."""
    import datetime as dt

    from pipeline.cold import ColdSettings, open_store
    from pipeline.ship.shipper import Shipper
    from tests.ship.conftest import make_bucket, s3_client
    from tests.ship.test_shipper import write_events

    s3_endpoint, locked_bucket = moto_endpoint, make_bucket(moto_endpoint)
    write_events(hot_dir, 3000, max_bytes=64 * 1024)
    url = f"s3://{locked_bucket}/audit?endpoint_url={s3_endpoint}&region=us-east-1"
    shipper = Shipper(hot_dir, open_store(url, ColdSettings(retention_days=30)), hot_retention=3600.0)
    summary = shipper.run_once()
    shipper.ledger.close()
    n = summary.confirmed
    assert n >= 4 and summary.evicted == 0
    store = open_store(url, ColdSettings(retention_days=30))
    # first only what lands (recheck_batch 0), then with the rolling re-check, from the same state
    watchers = [ColdWatcher(ColdWatch(retention_days=30, recheck_batch=0), hot_dir, (), ColdState(), store)]

    def cycle() -> tuple[set[tuple[str, str]], int]:
        view = open_ledger_readonly(hot_dir)
        assert view is not None
        try:
            res = watchers[-1].cycle(view)
        finally:
            view.close()
        return {(f.code, f.segment) for f in res.findings}, res.checked

    try:
        found, checked = cycle()
        assert found == set() and checked == n  # each new object once
        found, checked = cycle()
        assert found == set() and checked == 0  # nothing new: no request
        view = open_ledger_readonly(hot_dir)
        assert view is not None
        try:
            rows = [e for e in view.entries() if e.state == "confirmed"][:3]
        finally:
            view.close()
        deleted, replaced, shortened = rows
        s3 = s3_client(s3_endpoint)
        s3.delete_object(Bucket=locked_bucket, Key=deleted.cold_key)
        s3.put_object(Bucket=locked_bucket, Key=replaced.cold_key, Body=b"not the segment")
        s3.put_object_retention(Bucket=locked_bucket, Key=shortened.cold_key, BypassGovernanceRetention=True,
                                Retention={"Mode": "COMPLIANCE",
                                           "RetainUntilDate": dt.datetime.now(dt.UTC) + dt.timedelta(days=2)})
        found, checked = cycle()
        assert found == set() and checked == 0  # (only new objects are checked here)
        watchers.append(ColdWatcher(ColdWatch(retention_days=30, recheck_batch=100), hot_dir, (), watchers[0].state,
                                    store))
        found, checked = cycle()
        assert checked == n  # the rolling re-check: every object once more, nothing new
        assert ("missing-object", deleted.segment) in found
        assert ("object-replaced", replaced.segment) in found or ("truncated-object", replaced.segment) in found
        assert ("retention-too-short", shortened.segment) in found
        assert {seg for _code, seg in found} == {deleted.segment, replaced.segment, shortened.segment}
    finally:
        store.close()


def test_first_segment_sealed_between_the_listing_and_the_ledger_read_is_not_missing(hot_dir: Path) -> None:
    """A stream's first segment enters the ledger after the watcher listed the hot tier but
    before it read the ledger: its file was there all along (a segment exists before it is
    sealed), so nothing is missing.  (Listing only the streams the ledger named lost it.)"""
    log = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    log.append({"i": 1})
    log.close()
    first = list_segments(hot_dir / "app")[0]
    Ledger(hot_dir).close()  # the ledger exists, still empty
    opened = open_ledger_readonly(hot_dir)
    assert opened is not None
    view = opened

    class SealedMeanwhile:
        """The read-only view, with the shipper recording the segment just before the first read
        that follows the hot listing."""

        def __init__(self) -> None:
            self.added = False

        def __getattr__(self, name: str) -> object:
            return getattr(view, name)

        def entries(self, **kw: object) -> object:
            if not self.added:
                writer = Ledger(hot_dir)
                writer.add(build_manifest(first))
                writer.close()
                self.added = True
            return view.entries(**kw)  # type: ignore[arg-type]

    watcher = ColdWatcher(ColdWatch(max_lag=60), hot_dir, (), ColdState(), None)
    try:
        found = [(f.code, f.segment) for f in watcher.cycle(SealedMeanwhile()).findings]  # type: ignore[arg-type]
    finally:
        view.close()
    assert found == []
