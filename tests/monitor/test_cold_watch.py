"""The ledger side of the cold watch, against a real ledger read through the read-only view:
cold lag, quarantine, a hot file deleted outside eviction, an eviction without a confirmed
cold copy.  (Objects in cold storage: tests/monitor/test_scenarios.py.)"""

from __future__ import annotations

import time
from pathlib import Path

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
