"""Read-order races: a finding derived from two reads of state that the writer and the
shipper change concurrently must not be false when a legitimate action lands between the
reads.  Each test injects that action deterministically between the two reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.cli import main
from pipeline.cold import ColdSettings, open_store
from pipeline.hot.tree import TreeStore
from pipeline.hot.writer import HotLog
from pipeline.ship.shipper import Shipper
from pipeline.verify.tier import TierVerifier
from tests.tierutil import build_hot, ship_hot


def _tier(hot: Path, url: str) -> list[str]:
    return ["verify-tier", "--hot", str(hot), "--cold", url, "--allow-unlocked", "--heartbeat-interval", "0",
            "--json"]


def test_segment_shipped_between_the_cold_listing_and_the_ledger_read_is_not_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The shipper uploads and confirms a segment after verify-tier listed cold storage and
    before it read the ledger: the ledger says confirmed, the listing (older) lacks the
    object.  The object is there; nothing is missing."""
    side = build_hot(tmp_path, segments=1, events_per_segment=5)
    url = f"file://{tmp_path / 'cold'}"
    settings = ColdSettings(allow_unlocked=True)
    ship_hot(side, url, settings)
    log = HotLog(side.hot, "app", tree_store=TreeStore(side.hot / "app"), heartbeat_interval=0, segment_window=0,
                 immutable="off")
    for i in range(5):
        log.append({"n": 100 + i})
    log.seal()
    log.close()
    real = TierVerifier._list_all
    shipped: list[int] = []

    def list_then_ship(self: TierVerifier, streams: Any) -> Any:
        out = real(self, streams)
        if not shipped:
            store = open_store(url, settings)
            shipper = Shipper(side.hot, store, hot_retention=1e9, index=False)
            shipped.append(shipper.run_once().confirmed)
            shipper.close()
            store.close()
        return out

    monkeypatch.setattr(TierVerifier, "_list_all", list_then_ship)
    rc = main(_tier(side.hot, url))
    doc = orjson.loads(capsys.readouterr().out)
    assert shipped == [1]
    assert rc == 0, doc["findings"]


def test_seal_written_between_the_scan_and_the_head_read_is_not_a_missing_tail(
        hot_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pipeline verify`` of an active stream: the writer appends and seals after the
    segments were scanned and before head.json was read.  head.json is written after the
    seal it names is durable, so it then names records the (older) scan never saw: that is
    not a removed tail."""
    from pipeline.verify import chain

    log = HotLog(hot_dir, "app", heartbeat_interval=0, segment_window=0, immutable="off")
    try:
        for i in range(3):
            log.append({"n": i})
        log.seal()
        log.append({"n": 3})
        real = chain.scan_all
        sealed: list[Path | None] = []

        def scan_then_seal(paths: Any, *a: Any, **kw: Any) -> Any:
            out = real(paths, *a, **kw)
            if not sealed:
                log.append({"n": 4})
                sealed.append(log.seal())
            return out

        monkeypatch.setattr(chain, "scan_all", scan_then_seal)
        assert main(["verify", "--hot", str(hot_dir)]) == 0
        assert sealed and sealed[0] is not None
    finally:
        log.close()



@pytest.mark.parametrize("when", ["before", "after"])
def test_segment_evicted_around_the_listing_is_not_a_missing_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """``pipeline verify`` with the sidecar running: the shipper evicts the oldest segment
    just before the stream is listed (so after a ledger read that preceded the listing: the
    evicted prefix did not include it, a false missing-start) or just after it (the listed
    file is gone when it is scanned).  The hot tier legitimately starts after it."""
    from pipeline.format import segment as segment_mod
    from pipeline.verify import chain

    side = build_hot(tmp_path, segments=2, events_per_segment=5)
    url = f"file://{tmp_path / 'cold'}"
    settings = ColdSettings(allow_unlocked=True)
    ship_hot(side, url, settings)
    log = HotLog(side.hot, "app", heartbeat_interval=0, segment_window=0, immutable="off")
    log.append({"n": 100})  # the active segment: head.json has moved past both sealed ones
    log.close(seal=False)
    real = segment_mod.list_segments
    evicted: list[int] = []

    def evict() -> None:
        if not evicted:
            store = open_store(url, settings)
            shipper = Shipper(side.hot, store, hot_retention=0.0, index=False)
            evicted.append(shipper.evict())
            shipper.close()
            store.close()

    def listing(d: Any) -> Any:
        if when == "before":
            evict()
        out = real(d)
        if when == "after":
            evict()
        return out

    monkeypatch.setattr(chain, "list_segments", listing)
    monkeypatch.setattr(segment_mod, "list_segments", listing)
    assert main(["verify", "--hot", str(side.hot)]) == 0
    assert evicted == [2]


def _rotation_halfway(tmp_path: Path, hot: Path) -> tuple[Path, bytes, Path, bytes]:
    """A stream caught in rotation: the writer has opened the next segment but not yet written
    the old one's seal (it writes the seal, then the next segment's records, in one flush).
    Returns (old segment, its seal line, next segment, its records) still to be written."""
    src = tmp_path / "src"
    log = HotLog(src, "app", heartbeat_interval=0, segment_window=0, immutable="off")
    for i in range(3):
        log.append({"n": i})
    log.seal()
    log.append({"n": 3})
    log.append({"n": 4})
    log.close(seal=False)
    from pipeline.format.segment import list_segments

    old_src, new_src = list_segments(src / "app")
    *records, seal = old_src.read_bytes().splitlines(keepends=True)
    (hot / "app").mkdir(parents=True)
    old, new = hot / "app" / old_src.name, hot / "app" / new_src.name
    old.write_bytes(b"".join(records))
    new.write_bytes(b"")
    return old, seal, new, new_src.read_bytes()


def _flush_after_scanning(monkeypatch: pytest.MonkeyPatch, old: Path, seal: bytes, new: Path,
                          records: bytes) -> list[bool]:
    """The writer's flush (the old segment's seal, then the next one's first records) right
    after the verifier has scanned the old segment; the list says it happened."""
    from pipeline.verify import chain

    real = chain.scan_segment
    flushed: list[bool] = []

    def scan_then_flush(path: Any, *a: Any, **kw: Any) -> Any:
        out = real(path, *a, **kw)
        if Path(path) == old and not flushed:
            with open(old, "ab") as f:
                f.write(seal)
            with open(new, "ab") as f:
                f.write(records)
            flushed.append(True)
        return out

    monkeypatch.setattr(chain, "scan_segment", scan_then_flush)
    return flushed


def test_seal_written_between_the_scans_of_two_segments_is_not_a_truncation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pipeline verify`` during a rotation: the old segment is read before its seal is
    written, the next one after the flush that wrote the seal and then its first records.
    The old segment is not truncated: read again after the next one, it is sealed."""

    old, seal, new, records = _rotation_halfway(tmp_path, tmp_path / "hot")
    flushed = _flush_after_scanning(monkeypatch, old, seal, new, records)
    assert main(["verify", "--hot", str(tmp_path / "hot")]) == 0
    assert flushed


def test_seal_written_between_the_scans_of_two_segments_is_not_a_truncation_in_verify_tier(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The same rotation while verify-tier (host mode) reads the hot files."""
    from pipeline.ship.ledger import Ledger

    hot = tmp_path / "hot"
    old, seal, new, records = _rotation_halfway(tmp_path, hot)
    Ledger(hot).close()  # a shipper that has not shipped anything yet
    (tmp_path / "cold").mkdir()
    flushed = _flush_after_scanning(monkeypatch, old, seal, new, records)
    rc = main(_tier(hot, f"file://{tmp_path / 'cold'}"))
    doc = orjson.loads(capsys.readouterr().out)
    assert flushed
    assert rc == 0, doc["findings"]


def _witnessed_and_shipped(tmp_path: Path, *, segments: int) -> tuple[Path, HotLog, Any, Path, str]:
    """Stream "app" under ``tmp_path/hot`` with a checkpoint emitter and a directory witness:
    ``segments`` sealed segments of five events, a checkpoint after each, all shipped to a
    file:// store and confirmed.  (hot, the open log, the emitter, the public key file, the
    store's URL); the caller closes the log."""
    from pipeline.checkpoint import Signer, write_key_pair
    from pipeline.hot.checkpoints import CheckpointEmitter
    from pipeline.witness.directory import DirectoryWitness

    hot = tmp_path / "hot"
    stream_dir = hot / "app"
    signer = Signer.generate("example.com/worm")
    _key, pub = write_key_pair(signer, tmp_path / "pub")
    tree = TreeStore(stream_dir)
    log = HotLog(hot, "app", tree_store=tree, heartbeat_interval=0, segment_window=0, immutable="off")
    em = CheckpointEmitter(log, stream_dir, signer, tree_store=tree, origin="example.com/worm/app",
                           witnesses=[DirectoryWitness(tmp_path / "witness", verifiers=[signer.verifier()])],
                           interval=3600)
    url = f"file://{tmp_path / 'cold'}"
    try:
        for seg in range(segments):
            for i in range(5):
                log.append({"i": seg * 10 + i})
            log.seal()
            em.emit()
        store = open_store(url, ColdSettings(allow_unlocked=True))
        shipper = Shipper(hot, store, hot_retention=1e9, index=False)
        assert shipper.run_once().confirmed == segments
        shipper.close()
        store.close()
    except BaseException:
        log.close()
        raise
    return hot, log, em, pub, url


def test_checkpoint_published_between_the_log_and_the_witness_reads_is_not_a_rollback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """verify-tier reads the log's checkpoints, then the witness's; the emitter stores a new
    checkpoint, then hands it to the witness, in between: the witness holds a newer one than
    the log's that was read, which is not a rollback."""
    from pipeline.format.layout import unescape_origin

    hot, log, em, pub, url = _witnessed_and_shipped(tmp_path, segments=2)
    try:
        real = unescape_origin
        emitted: list[bool] = []

        def emit_then_read(name: str) -> str:  # the first step of reading the witness directory
            if not emitted:
                log.append({"i": 100})
                log.seal()
                emitted.append(em.emit() is not None)
            return real(name)

        monkeypatch.setattr("pipeline.verify.tier.unescape_origin", emit_then_read)
        rc = main([*_tier(hot, url), "--vkey", str(pub), "--witness-dir", str(tmp_path / "witness")])
        doc = orjson.loads(capsys.readouterr().out)
    finally:
        log.close()
    assert emitted == [True]
    assert rc == 0, doc["findings"]


def test_checkpoint_of_the_active_segment_is_not_ahead_of_the_log(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The emitter signs the durable tree every interval, sealed or not; head.json moves only at
    seals.  A checkpoint (and its witness) covering records of the active segment is not ahead
    of a log whose active segment holds those records."""
    hot, log, em, pub, url = _witnessed_and_shipped(tmp_path, segments=1)
    try:
        log.append({"i": 100})
        log.sync()
        assert em.emit() is not None  # an interval's checkpoint: the active segment's record included
        rc = main([*_tier(hot, url), "--vkey", str(pub), "--witness-dir", str(tmp_path / "witness")])
        doc = orjson.loads(capsys.readouterr().out)
    finally:
        log.close()
    assert rc == 0, doc["findings"]


@pytest.mark.parametrize("slow", [0, 1])
def test_segment_still_uploading_behind_a_confirmed_one_is_pending_not_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], slow: int) -> None:
    """Upload threads run in parallel: a later segment can be confirmed while an earlier one is
    still uploading (or retrying).  The cold listing then has a hole the ledger, read after it,
    holds as in flight with its hot copy present: pending (docs/VERIFY-TIER.md), not a
    missing-segment (or, for the first segment, a missing-start)."""
    from pipeline.format.segment import list_segments

    hot = tmp_path / "hot"
    log = HotLog(hot, "app", heartbeat_interval=0, segment_window=0, immutable="off")
    for seg in range(3):
        for i in range(3):
            log.append({"i": seg * 10 + i})
        log.seal()
    log.close()
    uploading = list_segments(hot / "app")[slow].name
    url = f"file://{tmp_path / 'cold'}"
    store = open_store(url, ColdSettings(allow_unlocked=True))
    real = store.put_segment

    def put(stream: str, segment: str, *a: Any, **kw: Any) -> Any:
        if segment == uploading:
            raise ConnectionError("still uploading (a slow request, retried)")
        return real(stream, segment, *a, **kw)

    monkeypatch.setattr(store, "put_segment", put)
    shipper = Shipper(hot, store, hot_retention=1e9, index=False)
    assert shipper.run_once().confirmed == 2
    shipper.close()
    store.close()
    capsys.readouterr()
    rc = main(_tier(hot, url))
    doc = orjson.loads(capsys.readouterr().out)
    assert rc == 0, doc["findings"]
    states = {s["segment"]: s["status"] for s in doc["streams"][0]["segments"]}
    assert states[uploading] == "pending"
