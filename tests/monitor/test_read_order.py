"""Read-order races in the monitor: a legitimate action of the writer or the shipper landing
between two of the monitor's reads must not raise an alert.  Each test injects the action
deterministically between the reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pipeline.cold import ColdSettings, open_store
from pipeline.format import attr
from pipeline.hot.segment import list_segments
from pipeline.hot.writer import HotLog
from pipeline.monitor.config import HotWatch
from pipeline.monitor.findings import MonitorFinding
from pipeline.monitor.hot import StreamTrail, TrailState
from pipeline.ship.ledger import open_ledger_readonly
from pipeline.ship.shipper import Shipper


def test_abandoned_segment_evicted_while_the_trail_rechecks_it_is_not_truncated(
        hot_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipper evicts an abandoned segment (kept as evidence, shipped, confirmed): it
    clears the immutable attribute, then unlinks.  A trail cycle in between sees the verified
    segment's ctime changed and reads it again: it is unsealed, as it was when it was verified
    (its recovery record explains it), which is not a seal that went missing."""
    log = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    for i in range(25):
        log.append({"i": i})
    path = list_segments(hot_dir / "app")[-1]
    log.close(seal=False)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b'{"v":1,"stream":"app","seq":25,"ts":"2026')  # a crash in the middle of a line
    os.close(fd)
    log2 = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)  # explains it (recovery record)
    for i in range(10):
        log2.append({"i": 100 + i})
    log2.seal()
    log2.append({"i": 200})  # the active segment: head.json has moved past the others
    trail = StreamTrail(hot_dir, "app", HotWatch(dir=hot_dir, rescan_active=0), 0.0, TrailState())
    assert not trail.cycle(None).findings
    assert path.name in trail.state.verified_files  # verified, as abandoned

    real = attr.clear_protection
    during: list[list[MonitorFinding]] = []

    def clear_then_cycle(p: Any) -> None:
        real(p)
        if Path(p) == path:
            ledger = open_ledger_readonly(hot_dir)
            try:
                during.append(trail.cycle(ledger).findings)
            finally:
                if ledger is not None:
                    ledger.close()

    monkeypatch.setattr("pipeline.ship.shipper.attr.clear_protection", clear_then_cycle)
    store = open_store(f"file://{tmp_path / 'cold'}", ColdSettings(allow_unlocked=True))
    shipper = Shipper(hot_dir, store, hot_retention=0.0, index=False)
    try:
        summary = shipper.run_once()
    finally:
        shipper.close()
        store.close()
        log2.close()
    assert summary.failed == 0 and summary.quarantined == 0, summary.errors
    assert not path.exists() and len(during) == 1
    assert [(f.code, f.segment) for f in during[0]] == []
    assert [(f.code, f.segment) for f in trail.cycle(None).findings] == []  # and nothing sticky



def test_shipper_started_after_the_ledger_was_opened_then_evicting_is_not_a_deletion(hot_dir: Path,
                                                                                   tmp_path: Path) -> None:
    """The monitor, on a read-only mount of the hot tier, opens the ledger of a stopped shipper
    (no WAL files: read as immutable) at the start of its cycle; the sidecar starts, and its
    shipper's first pass evicts a confirmed segment (``evicted`` recorded, then the unlink)
    before the cold watch lists the hot tier.  The listing lacks the file; the ledger, read
    after it, must say evicted."""
    import time

    from pipeline.hot.segment import build_manifest
    from pipeline.monitor.cold import ColdState, ColdWatcher
    from pipeline.monitor.config import ColdWatch
    from pipeline.ship.ledger import Ledger
    from tests.hotutil import read_only_view

    log = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    for i in range(5):
        log.append({"i": i})
    log.close()
    seg = list_segments(hot_dir / "app")[0]
    ledger = Ledger(hot_dir)
    ledger.add(build_manifest(seg))
    ledger.set_state("app", seg.name, "confirmed", confirmed_at=time.time())
    ledger.close()  # a clean shutdown: the WAL files are gone
    with read_only_view(hot_dir, tmp_path / "ro") as ro:
        view = open_ledger_readonly(ro)  # the cycle's view, opened before the trails run
        assert view is not None
        shipper_ledger = Ledger(hot_dir)  # the sidecar starts; its first pass evicts
        try:
            shipper_ledger.set_state("app", seg.name, "evicted", evicted_at=time.time(), expect=("confirmed",))
            attr.clear_protection(seg)
            seg.unlink()
            watcher = ColdWatcher(ColdWatch(max_lag=60), ro, (), ColdState(), None)
            found = [(f.code, f.segment) for f in watcher.cycle(view).findings]
        finally:
            view.close()
            shipper_ledger.close()
    assert found == []


def test_segment_confirmed_while_a_later_one_was_confirmed_and_seen_is_still_checked(
        hot_dir: Path, tmp_path: Path) -> None:
    """Two upload threads confirm A and B: A takes its ``confirmed_at`` first, B commits first,
    and a monitor cycle in between reads B and moves its landing watermark to B's time.  A,
    committed next, must still be HEADed when it lands (not only by the rolling re-check)."""
    from pipeline.cold.errors import ObjectNotFoundError
    from pipeline.monitor.cold import ColdState, ColdWatcher
    from pipeline.monitor.config import ColdWatch

    log = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    for seg in range(2):
        for i in range(3):
            log.append({"i": seg * 10 + i})
        log.seal()
    log.close()
    store = open_store(f"file://{tmp_path / 'cold'}", ColdSettings(allow_unlocked=True))
    shipper = Shipper(hot_dir, store, hot_retention=1e9, concurrency=1, index=False)

    class Gone:
        """The monitor's view of cold storage: every object gone (so each HEAD is a finding)."""

        def stat(self, key: str) -> Any:
            raise ObjectNotFoundError(f"{key}: gone")

    watcher = ColdWatcher(ColdWatch(max_lag=3600, recheck_batch=0), hot_dir, (), ColdState(), Gone())

    def monitor_cycle() -> None:
        view = open_ledger_readonly(hot_dir)
        assert view is not None
        try:
            watcher.cycle(view)
        finally:
            view.close()

    try:
        shipper.discover()
        a, b = shipper.due()
        real = shipper.ledger.set_state
        interleaved: list[bool] = []

        def set_state(stream: str, segment: str, state: str, **kw: Any) -> None:
            if state == "confirmed" and segment == a.segment and not interleaved:
                interleaved.append(True)
                assert shipper.ship_one(b) == "confirmed"  # the other thread commits first
                monitor_cycle()
            real(stream, segment, state, **kw)

        shipper.ledger.set_state = set_state  # type: ignore[method-assign]
        assert shipper.ship_one(a) == "confirmed"
        monitor_cycle()
    finally:
        shipper.close()
        store.close()
    assert interleaved
    assert sorted(watcher.state.bad) == [f"app/{a.segment}", f"app/{b.segment}"]


def test_checkpoint_published_between_the_log_and_the_witness_reads_is_not_a_rollback(tmp_path: Path) -> None:
    """The emitter stores the log's new checkpoint, then hands it to the witnesses.  The witness
    watch reads the log's latest checkpoint, then the witness's: a checkpoint emitted in between
    is newer at the witness than the log's copy that was read, which is not a rollback."""
    from pipeline.checkpoint import Signer, write_key_pair
    from pipeline.hot.checkpoints import CheckpointEmitter
    from pipeline.hot.tree import TreeStore
    from pipeline.monitor.config import WitnessWatch
    from pipeline.monitor.witness import WitnessState, WitnessWatcher
    from pipeline.witness.directory import DirectoryWitness

    hot = tmp_path / "hot"
    stream_dir = hot / "app"
    signer = Signer.generate("example.com/worm")
    tree = TreeStore(stream_dir)
    log = HotLog(hot, "app", tree_store=tree, heartbeat_interval=0, segment_window=0, immutable="off")
    em = CheckpointEmitter(log, stream_dir, signer, tree_store=tree, origin="example.com/worm/app",
                           witnesses=[DirectoryWitness(tmp_path / "witness", verifiers=[signer.verifier()])],
                           interval=3600)
    try:
        for i in range(5):
            log.append({"i": i})
        log.seal()
        assert em.emit() is not None
        _key, pub = write_key_pair(signer, tmp_path / "pub")
        watcher = WitnessWatcher(WitnessWatch(locations=(f"file://{tmp_path / 'witness'}",), vkey=pub), hot,
                                 WitnessState())
        (_loc, witness), = watcher.witnesses
        real = witness.latest
        emitted: list[bool] = []

        def emit_then_read(origin: str) -> Any:
            if not emitted:
                for i in range(5):
                    log.append({"i": 10 + i})
                log.seal()
                emitted.append(em.emit() is not None)
            return real(origin)

        witness.latest = emit_then_read
        found, ok = watcher.check("app")
    finally:
        log.close()
    assert emitted == [True] and ok
    assert [(f.code, f.seq) for f in found] == []
