"""The trail: resumed scans judge exactly what a full scan judges, read only what is new,
and a restart resumes from the saved position."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipeline.hot import attr
from pipeline.hot.segment import list_segments
from pipeline.hot.writer import HotLog
from pipeline.monitor.config import HotWatch
from pipeline.monitor.hot import StreamTrail, TrailState
from pipeline.verify.chain import ScanResume, scan_segment
from tests.hotutil import backdate

# The trailing delay of the tests about it: long enough that a write, its fsync and the next
# cycle always fit inside it on a loaded machine; "older than the delay" is made by moving
# the segment's mtime back (tests/hotutil.backdate), not by sleeping through it.
DELAY = 60.0


def _write(log: HotLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        log.append({"i": i, "msg": "m" * (i % 50)})
    log.sync()


def test_resumed_scans_equal_one_full_scan(hot_dir: Path) -> None:
    log = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    resume: ScanResume | None = None
    path = None
    for chunk in range(6):
        _write(log, 137, chunk * 137)
        path = list_segments(hot_dir / "app")[-1]
        # a limit in the middle of a line: the partial line is left for the next scan
        limit = path.stat().st_size - (17 if chunk < 5 else 0)
        part = scan_segment(path, "app", file_hash=False, resume=resume, limit=limit)
        assert not part.findings
        assert part.resume is not None
        resume = part.resume
    assert path is not None
    full = scan_segment(path, "app", file_hash=False)
    assert resume is not None
    assert (resume.last_seq, resume.last_hash, resume.records) == (full.last_seq, full.last_hash, full.records)
    assert resume.offset == full.valid_bytes
    assert ScanResume.from_dict(resume.to_dict()) == resume
    # sealing sends a resumed scan back to the start: the seal's tree frontiers are checked
    log.close()
    sealed = scan_segment(path, "app", file_hash=False, resume=resume)
    assert sealed.sealed and not sealed.findings


def test_resumed_scan_finds_what_a_full_scan_finds(hot_dir: Path) -> None:
    log = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    _write(log, 50)
    path = list_segments(hot_dir / "app")[-1]
    first = scan_segment(path, "app", file_hash=False)
    assert first.resume is not None
    _write(log, 50, 50)
    data = bytearray(path.read_bytes())
    at = data.index(b'"i":77,') + 4
    attr.clear_protection(path)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(b"8")
    attr.protect_append_only(path)
    resumed = scan_segment(path, "app", file_hash=False, resume=first.resume)
    full = scan_segment(path, "app", file_hash=False)
    assert [(f.reason, f.seq) for f in resumed.findings] == [(f.reason, f.seq) for f in full.findings]
    assert resumed.findings[0].reason == "hash-mismatch" and resumed.findings[0].seq == 77
    log.close()


def test_a_file_shorter_than_what_was_verified_is_a_finding(hot_dir: Path) -> None:
    log = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    _write(log, 20)
    path = list_segments(hot_dir / "app")[-1]
    first = scan_segment(path, "app", file_hash=False)
    assert first.resume is not None
    again = scan_segment(path, "app", file_hash=False, resume=first.resume, limit=first.resume.offset - 5)
    assert [f.reason for f in again.findings] == ["truncated"]
    log.close()


def _trail(hot: Path, state: TrailState, **kw: object) -> StreamTrail:
    opts = HotWatch(dir=hot, heartbeat_interval=1.0, rescan_active=0, **kw)  # type: ignore[arg-type]
    return StreamTrail(hot, "app", opts, 0.0, state)


def test_trail_cost_grows_with_new_data_and_a_restart_resumes(hot_dir: Path) -> None:
    log = HotLog(hot_dir, "app", segment_window=0, segment_max_bytes=20000, heartbeat_interval=0)
    _write(log, 2000)
    trail = _trail(hot_dir, TrailState())
    res = trail.cycle(None)
    assert not res.findings
    total = sum(p.stat().st_size for p in list_segments(hot_dir / "app"))
    assert res.verified_seq == res.head_seq
    # sealed segments are read twice at most (the active part, then in full at the seal)
    assert res.bytes_read <= 2 * total
    # nothing new: nothing read
    assert trail.cycle(None).bytes_read == 0
    # a restart from the saved state reads only what was appended since
    saved = trail.state.to_dict()
    _write(log, 30, 2000)
    new_bytes = sum(p.stat().st_size for p in list_segments(hot_dir / "app")) - total
    again = _trail(hot_dir, TrailState.from_dict(saved))
    res2 = again.cycle(None)
    assert not res2.findings
    assert res2.verified_seq == res2.head_seq
    assert res2.bytes_read <= 2 * new_bytes + 20000  # at most the segment sealed meanwhile, once more
    log.close()


def test_trailing_delay_holds_back_fresh_bytes(hot_dir: Path) -> None:
    log = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    _write(log, 10)
    opts = HotWatch(dir=hot_dir, rescan_active=0)
    trail = StreamTrail(hot_dir, "app", opts, DELAY, TrailState())
    assert trail.cycle(None).verified_seq is None  # first seen now: not yet older than the delay
    backdate(list_segments(hot_dir / "app")[-1], DELAY + 1)
    assert trail.cycle(None).verified_seq == 9
    log.close()


def test_changed_sealed_segment_is_read_again_and_stays_reported(hot_dir: Path) -> None:
    log = HotLog(hot_dir, "app", segment_window=0, segment_max_bytes=8000, heartbeat_interval=0)
    _write(log, 300)
    trail = _trail(hot_dir, TrailState())
    assert not trail.cycle(None).findings
    victim = list_segments(hot_dir / "app")[0]
    original = victim.read_bytes()
    attr.clear_protection(victim)
    with open(victim, "r+b") as f:
        f.seek(len(original) // 2)
        f.write(b"#")
    attr.protect_immutable(victim)
    found = trail.cycle(None).findings
    assert found and found[0].segment == victim.name and found[0].where == "hot"
    assert trail.cycle(None).findings  # sticky
    # restored from a good copy: the next full read clears it
    attr.clear_protection(victim)
    victim.write_bytes(original)
    attr.protect_immutable(victim)
    assert not trail.cycle(None).findings
    log.close()


def test_active_rescan_sees_a_rewrite_behind_the_position(hot_dir: Path) -> None:
    log = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    _write(log, 40)
    opts = HotWatch(dir=hot_dir, rescan_active=0.01)
    trail = StreamTrail(hot_dir, "app", opts, 0.0, TrailState())
    assert not trail.cycle(None).findings
    path = list_segments(hot_dir / "app")[-1]
    data = path.read_bytes()
    at = data.index(b'"i":5,') + 4
    attr.clear_protection(path)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(b"6")
    attr.protect_append_only(path)
    time.sleep(0.02)
    found = trail.cycle(None).findings
    assert [(f.code, f.seq) for f in found] == [("hash-mismatch", 5)]
    log.close()


def test_abandoned_segment_explained_by_recovery_passes(hot_dir: Path) -> None:
    """A crash leaves an unsealed segment; the writer's next start explains it with a recovery
    record: the trail follows the chain across it, as `pipeline verify` does."""
    log = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    _write(log, 25)
    trail = StreamTrail(hot_dir, "app", HotWatch(dir=hot_dir, rescan_active=0), 0.0, TrailState())
    assert not trail.cycle(None).findings
    path = list_segments(hot_dir / "app")[-1]
    # a crash: the process dies without sealing, in the middle of writing a line
    log.close(seal=False)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b'{"v":1,"stream":"app","seq":25,"ts":"2026')
    os.close(fd)
    log2 = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    _write(log2, 10, 100)
    trail.cycle(None)
    res = trail.cycle(None)
    assert not res.findings, [f.to_dict() for f in res.findings]
    assert res.verified_seq is not None and res.verified_seq >= 30
    log2.close()


@pytest.mark.parametrize("start", ["end"])
def test_start_at_the_end_skips_what_exists(hot_dir: Path, start: str) -> None:
    log = HotLog(hot_dir, "app", segment_window=0, segment_max_bytes=8000, heartbeat_interval=0)
    _write(log, 400)
    trail = StreamTrail(hot_dir, "app", HotWatch(dir=hot_dir, rescan_active=0, start=start), 0.0, TrailState())
    res = trail.cycle(None)
    assert not res.findings
    assert res.bytes_read < 8000 * 2
    log.close()


def test_missing_seal_waits_for_the_grace_then_is_truncated(hot_dir: Path) -> None:
    """Rotation opens the next segment before the old one's seal is written: an unsealed
    segment followed by one that does not start with a recovery record is judged only after
    ABANDON_GRACE without change (then: its seal was removed, `truncated`)."""
    log = HotLog(hot_dir, "app", segment_window=0, segment_max_bytes=6000, heartbeat_interval=0)
    _write(log, 120)
    log.close()
    first = list_segments(hot_dir / "app")[0]
    data = first.read_bytes()
    attr.clear_protection(first)
    first.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 1])  # the seal line removed
    trail = StreamTrail(hot_dir, "app", HotWatch(dir=hot_dir, rescan_active=0), 0.5, TrailState())
    old = time.time() - 5
    for p in list_segments(hot_dir / "app"):
        attr.clear_protection(p)  # (utime on an immutable file is refused too)
        os.utime(p, (old, old))
    assert trail.cycle(None).findings == []  # 5 s quiet: still within the grace
    long_ago = time.time() - 60
    os.utime(first, (long_ago, long_ago))
    found = trail.cycle(None).findings
    # as `pipeline verify` says it: the first ends without a seal, and the seal's seq is missing
    assert ("truncated", first.name) in [(f.code, f.segment) for f in found]
    assert {f.code for f in found} <= {"truncated", "missing-segment"}


def test_delay_never_invents_a_truncation(hot_dir: Path) -> None:
    """Bytes verified through the quiet-file shortcut (mtime older than the delay) are not
    "lost" when the file grows again within the delay (a false `truncated` once)."""
    log = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    _write(log, 10)
    path = list_segments(hot_dir / "app")[-1]
    trail = StreamTrail(hot_dir, "app", HotWatch(dir=hot_dir, rescan_active=0), DELAY, TrailState())
    backdate(path, DELAY + 1)
    assert trail.cycle(None).verified_seq == 9  # quiet for longer than the delay: all of it
    _write(log, 10, 10)  # grows again: its mtime is fresh
    res = trail.cycle(None)
    assert res.findings == [] and res.verified_seq == 9
    backdate(path, DELAY + 1)
    res = trail.cycle(None)
    assert res.findings == [] and res.verified_seq == 19
    # a real truncation below what was verified is still found
    attr.clear_protection(path)
    os.truncate(path, 100)
    assert [f.code for f in trail.cycle(None).findings] == ["truncated"]
    log.close()


def _rechain_one(hot: Path, victim: Path, index: int, data: dict[str, object]) -> None:
    """Re-write ONE already verified sealed segment as an attacker with root but no keys does:
    change record ``index``'s data, then re-hash every record after it and re-seal the segment
    (seal counts, Merkle root, tree root and frontiers recomputed, as the writer would).  The
    file alone then verifies; only its links to the next segment (and the hash the monitor saw)
    tell.  (tests/tierutil.rechain on a copy, of which only ``victim`` is put back.)"""
    import shutil

    from tests.tierutil import rechain

    copy = hot.parent / "rechain-copy"
    shutil.copytree(hot / "app", copy, ignore=shutil.ignore_patterns("LOCK"))
    for p in copy.iterdir():
        if p.is_file():
            attr.clear_protection(p)
    rechain(copy, (victim.name, index, data))
    forged = (copy / victim.name).read_bytes()
    assert forged != victim.read_bytes()
    assert not scan_segment(copy / victim.name, "app", file_hash=False).findings  # alone it verifies
    attr.clear_protection(victim)
    victim.write_bytes(forged)
    attr.protect_immutable(victim)


def test_a_verified_sealed_segment_rechained_is_found(hot_dir: Path) -> None:
    """A sealed segment the monitor already verified, re-written with a consistent chain and
    seal: its new content is valid on its own, so the re-read after its ctime changed must
    compare it with what was verified (and its links), or the rewrite goes unseen."""
    log = HotLog(hot_dir, "app", segment_window=0, segment_max_bytes=6000, heartbeat_interval=0)
    _write(log, 300)
    log.close()
    trail = _trail(hot_dir, TrailState())
    assert trail.cycle(None).findings == []
    segs = list_segments(hot_dir / "app")
    assert len(segs) >= 3
    victim = segs[1]
    original = victim.read_bytes()
    _rechain_one(hot_dir, victim, 3, {"i": -1, "msg": "forged"})
    found = trail.cycle(None).findings
    assert [(f.code, f.segment) for f in found] == [("hot-altered", victim.name)], [f.to_dict() for f in found]
    assert trail.cycle(None).findings  # sticky
    # and after a restart from the saved position, as well
    again = _trail(hot_dir, TrailState.from_dict(trail.state.to_dict()))
    assert victim.name in {f.segment for f in again.cycle(None).findings}
    # restored from a good copy: the next read finds what was verified, and clears it
    attr.clear_protection(victim)
    victim.write_bytes(original)
    attr.protect_immutable(victim)
    assert again.cycle(None).findings == []


def test_every_sealed_segment_rechained_after_verification_is_found(hot_dir: Path) -> None:
    """The whole log re-chained from one record on (tests/tierutil.rechain: every later record,
    seal and head.json recomputed): no link is broken any more, yet every segment the monitor
    verified now holds other records than it verified."""
    from tests.tierutil import rechain

    log = HotLog(hot_dir, "app", segment_window=0, segment_max_bytes=6000, heartbeat_interval=0)
    _write(log, 300)
    log.close()
    trail = _trail(hot_dir, TrailState())
    assert trail.cycle(None).findings == []
    segs = list_segments(hot_dir / "app")
    for p in segs:
        attr.clear_protection(p)
    rechain(hot_dir / "app", (segs[1].name, 2, {"i": -1}))
    for p in segs:
        attr.protect_immutable(p)
    found = {f.segment for f in trail.cycle(None).findings}
    assert {p.name for p in segs[1:]} <= found, found
    assert segs[0].name not in found


@pytest.mark.parametrize("field", ["merkle_root", "tree_root"])
def test_a_seal_whose_merkle_root_does_not_match_is_found(hot_dir: Path, field: str) -> None:
    """The seal line re-hashed (so the chain holds) with another segment Merkle root or stream
    tree root: the seal and Merkle checks of the trail find it, when the trail reaches the seal."""
    import orjson

    from pipeline.format.record import encode_record, parse_record

    log = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    _write(log, 60)
    trail = _trail(hot_dir, TrailState())
    assert trail.cycle(None).findings == []  # the active segment, verified up to here
    log.close()
    path = list_segments(hot_dir / "app")[-1]
    lines = path.read_bytes().splitlines(keepends=True)
    seal, before = parse_record(lines[-1]), parse_record(lines[-2])
    assert seal.kind == "seal"
    data = dict(seal.data, **{field: "ab" * 32})
    line, _digest = encode_record(seal.stream, seal.seq, seal.ts.encode(), seal.kind, before.hash.encode(),
                                  orjson.dumps(data))
    attr.clear_protection(path)
    path.write_bytes(b"".join(lines[:-1]) + line)
    attr.protect_immutable(path)
    found = trail.cycle(None).findings
    assert [(f.code, f.segment) for f in found] == [("seal-mismatch", path.name)], [f.to_dict() for f in found]
    assert field in found[0].message
