"""Recovery (issue 12, docs/FORMAT.md §5 and §6): recovery records a verifier checks,
abandoned segments shipped as evidence (torn first lines included), and a writer that starts
from head.json plus whatever segments the writer and the shipper left behind."""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from pipeline.cold import ColdSettings, open_store
from pipeline.hot.segment import iter_lines, list_segments, segment_name
from pipeline.hot.writer import HotLog
from pipeline.record import Kind, Record, RecordError, encode_record, parse_record
from pipeline.ship.ledger import Ledger
from pipeline.ship.shipper import Shipper
from tests.hot.test_crash import crash_writer
from tests.hotutil import PYTHON, REPO, assert_clean, records, verify

STREAM = "crash"  # the stream tests.hot.test_crash.crash_writer writes


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([PYTHON, "-m", "pipeline", *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)


def record_ends(path: Path) -> list[tuple[int, Record]]:
    """(end offset, record) of every complete record of a segment."""
    out = []
    for off, line in iter_lines(path):
        try:
            out.append((off + len(line), parse_record(line)))
        except RecordError:
            break
    return out


def forge_recovery(d: Path, victim: Path, valid: int, seq: int, prev: str, reason: str) -> Path:
    """What an attacker with write access to the hot directory (no keys) can do without
    clearing the append-only attribute: start a new segment whose recovery record declares
    everything after ``valid`` in ``victim`` torn."""
    torn = victim.read_bytes()[valid:]
    data = {"reason": reason, "abandoned": [{"segment": victim.name, "valid_bytes": valid, "torn_bytes": len(torn),
                                             "torn_sha256": hashlib.sha256(torn).hexdigest()}]}
    line, _h = encode_record(STREAM.encode(), seq, b"2026-12-06T10:00:00.000000Z", Kind.RECOVERY.value,
                             prev.encode(), orjson.dumps(data))
    forged = d / segment_name(seq, 1 if (d / segment_name(seq)).exists() else 0)
    forged.write_bytes(line)
    return forged


@pytest.mark.parametrize("reason", ["unclean-shutdown", "write-error"])
def test_recovery_record_declaring_complete_records_torn_is_a_finding(hot_dir: Path, reason: str) -> None:
    crash_writer(hot_dir, 20)
    d = hot_dir / STREAM
    (active,) = list_segments(d)
    ends = record_ends(active)
    end9, rec9 = ends[9]
    forge_recovery(d, active, end9, 10, rec9.hash, reason)
    rep = verify(d)
    assert [f.reason for f in rep.findings] == ["recovery-drops-records"], rep.findings
    assert rep.findings[0].seq == 10 and rep.findings[0].offset == end9
    res = cli("verify", "--hot", str(hot_dir))
    assert res.returncode == 1 and "recovery-drops-records" in res.stdout, res.stdout + res.stderr


def test_recovery_record_declaring_a_whole_segment_torn_is_a_finding(hot_dir: Path) -> None:
    """valid_bytes 0 on a segment whose first record continues the chain: the whole segment cut."""
    receipts = crash_writer(hot_dir, 6, seal=True)
    crash_writer(hot_dir, 0)
    d = hot_dir / STREAM
    crash_writer(hot_dir, 5)
    victim = list_segments(d)[-1]
    first = record_ends(victim)[0][1]
    assert first.seq == receipts[-1][0] + 2
    forge_recovery(d, victim, 0, first.seq, first.prev, "unclean-shutdown")
    rep = verify(d)
    assert [f.reason for f in rep.findings] == ["recovery-drops-records"], rep.findings


def test_genuine_torn_tail_is_still_accepted(hot_dir: Path) -> None:
    """The check does not flag what a crash really leaves: an incomplete last line."""
    crash_writer(hot_dir, 8)
    d = hot_dir / STREAM
    (active,) = list_segments(d)
    with open(active, "ab") as f:
        f.write(b'{"v":1,"stream":"crash","seq":8,"ts":"2026-')
    with HotLog(hot_dir, STREAM, heartbeat_interval=0, segment_window=0) as log:
        log.append({"after": 1})
    rep = assert_clean(d)
    assert any(n.kind == "recovered" for n in rep.notes)


# ------------------------------------------------------------------ shipping abandoned segments


def file_shipper(hot: Path, cold: Path, retention: float = 0.0) -> Shipper:
    store = open_store(f"file://{cold}", ColdSettings(allow_unlocked=True, retention_days=1))
    return Shipper(hot, store, hot_retention=retention, concurrency=1)


def cold_segment(cold: Path, name: str) -> bytes:
    (path,) = [p for p in cold.rglob(f"{name}*") if ".meta" not in p.parts]
    raw = path.read_bytes()
    return zstandard.ZstdDecompressor().stream_reader(raw).read() if path.suffix == ".zst" else raw


def test_abandoned_segment_with_torn_first_line_is_shipped_evicted_and_the_writer_restarts(
        hot_dir: Path, tmp_path: Path) -> None:
    receipts = crash_writer(hot_dir, 5, seal=True)
    d = hot_dir / STREAM
    seal_seq = receipts[-1][0] + 1
    torn = d / segment_name(seal_seq + 1)
    torn.write_bytes(b'{"v":1,"stream":"crash","se')  # the crash tore the next segment's first line
    with HotLog(hot_dir, STREAM, heartbeat_interval=0, segment_window=0) as log:
        after = log.append({"after": 1})
        log.close(seal=False)
    assert after.segment == segment_name(seal_seq + 1, 1)

    cold = tmp_path / "cold"
    shipper = file_shipper(hot_dir, cold)
    summary = shipper.run_once()
    assert summary.errors == [] and not shipper.status()["unshippable"], shipper.status()
    ledger = Ledger(hot_dir)
    states = {e.segment: e for e in ledger.entries(stream=STREAM)}
    assert states[torn.name].state == "evicted", states[torn.name]
    assert states[torn.name].records == 0 and states[torn.name].first_seq == seal_seq + 1
    assert states[segment_name(0)].state == "evicted"
    # the torn bytes reached cold storage byte for byte, as evidence
    assert cold_segment(cold, torn.name) == b'{"v":1,"stream":"crash","se'
    assert not torn.exists()

    # the writer starts from head.json and the segment that remains, crash after crash
    more = crash_writer(hot_dir, 3)
    assert more[0][0] == after.seq + 1
    crash_writer(hot_dir, 2)
    res = cli("verify", "--hot", str(hot_dir))
    assert res.returncode == 0, res.stdout + res.stderr
    res = cli("seal", "--hot", str(hot_dir), "--stream", STREAM)
    assert res.returncode == 0, res.stdout + res.stderr
    shipper.run_once()
    res = cli("verify-tier", "--hot", str(hot_dir), "--cold", f"file://{cold}", "--allow-unlocked",
              "--heartbeat-interval", "0", "--deep")
    assert res.returncode == 0, res.stdout + res.stderr
    # an auditor without the host accounts for it too (a segment of no record, linked to both
    # neighbours), from the metadata and from the content
    from pipeline.checkpoint import Signer

    vkey = tmp_path / "log.pub"
    vkey.write_text(Signer.generate("example.com/worm").verifier().to_string() + "\n")
    for deep in ([], ["--deep"]):
        res = cli("verify-tier", "--cold-only", "--cold", f"file://{cold}", "--vkey", str(vkey),
                  "--allow-unlocked", "--heartbeat-interval", "0", *deep)
        assert res.returncode == 0 and torn.name in res.stdout, res.stdout + res.stderr


def test_writer_restarts_after_every_sealed_segment_was_evicted(hot_dir: Path, tmp_path: Path) -> None:
    """Downtime longer than hot_retention, then a crash in the first window: before, the writer
    refused to start ("no sealed segment or head.json to continue from")."""
    crash_writer(hot_dir, 4, seal=True)
    crash_writer(hot_dir, 4, seal=True)
    open_seg = crash_writer(hot_dir, 3)  # the crash leaves an open segment after the seals
    cold = tmp_path / "cold"
    file_shipper(hot_dir, cold).run_once()  # the downtime: every sealed segment shipped and evicted
    d = hot_dir / STREAM
    assert [p.name for p in list_segments(d)] == [open_seg[0][2]]
    got = crash_writer(hot_dir, 2)
    assert got[0][0] == open_seg[-1][0] + 2  # after a recovery record in the same segment
    res = cli("seal", "--hot", str(hot_dir), "--stream", STREAM)
    assert res.returncode == 0, res.stdout + res.stderr
    res = cli("verify", "--hot", str(hot_dir))
    assert res.returncode == 0, res.stdout + res.stderr


def test_clean_close_head_names_the_open_segment_and_is_cleared_on_reopen(hot_dir: Path) -> None:
    d = hot_dir / STREAM
    with HotLog(hot_dir, STREAM, heartbeat_interval=0, segment_window=0) as log:
        log.append({"a": 1})
        log.seal()
        r = log.append({"a": 2})
        log.close(seal=False)
    head = orjson.loads((d / "head.json").read_bytes())
    assert head["closed_cleanly"] is True and head["next_seq"] == r.seq + 1
    assert head["segment"] == r.segment and head["segment_first_seq"] == r.seq
    assert head["tree_size"] == head["next_seq"]
    log = HotLog(hot_dir, STREAM, heartbeat_interval=0, segment_window=0)
    try:
        # while a writer has the stream open, the head must not claim a clean close
        assert "closed_cleanly" not in orjson.loads((d / "head.json").read_bytes())
        log.append({"a": 3})
    finally:
        log.close()
    assert_clean(d)


# ------------------------------------------------------------------ crash loop with eviction

LOOP_CHILD = r"""
import sys, threading
from pipeline.cold import ColdSettings, open_store
from pipeline.hot.factory import open_hotlog
from pipeline.ship.shipper import Shipper
hot, cold = sys.argv[1], sys.argv[2]
log = open_hotlog(hot, "loop", durability="group", segment_window=0.25, heartbeat_interval=0,
                  segment_max_bytes=8192)
store = open_store("file://" + cold, ColdSettings(allow_unlocked=True, retention_days=1))
shipper = Shipper(hot, store, hot_retention=0.0, concurrency=1)
stop = threading.Event()
threading.Thread(target=shipper.run_forever, args=(stop, 0.05), daemon=True).start()
sys.stdout.write("READY\n"); sys.stdout.flush()
i = 0
while True:
    r = log.append({"i": i, "pad": "p" * (i % 90)})
    sys.stdout.write(f"{r.seq} {r.hash}\n"); sys.stdout.flush()   # acknowledged
    i += 1
"""


def run_loop_child(hot: Path, cold: Path, rng: random.Random, early: bool = False) -> dict[int, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([PYTHON, "-c", LOOP_CHILD, str(hot), str(cold)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=REPO)
    assert proc.stdout is not None
    buf = b""
    if early:
        # a kill during start-up and recovery (the randomness of the moment, not a wait)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        return {}
    deadline = time.monotonic() + 60
    while b"READY\n" not in buf:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            _out, err = proc.communicate()
            raise AssertionError(f"the writer did not start: {err.decode()[-3000:]}")
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            buf += os.read(proc.stdout.fileno(), 65536)
    time.sleep(rng.uniform(0.05, 0.9))
    proc.send_signal(signal.SIGKILL)
    out, _err = proc.communicate(timeout=30)
    acked = {}
    for line in (buf + out).decode().splitlines(keepends=True):
        if line.endswith("\n") and line != "READY\n":
            seq, h = line.split()
            acked[int(seq)] = h
    return acked


def all_records(hot: Path, cold: Path, stream: str) -> dict[int, Any]:
    """Every record of the stream, from cold objects and the hot segments left (hot wins:
    it holds the newest)."""
    out: dict[int, Any] = {}
    for path in sorted(cold.rglob("seg-*")):
        if ".meta" in path.parts:
            continue
        raw = path.read_bytes()
        body = zstandard.ZstdDecompressor().stream_reader(raw).read() if path.suffix == ".zst" else raw
        for line in body.splitlines(keepends=True):
            try:
                rec = parse_record(line)
            except RecordError:
                break
            out.setdefault(rec.seq, []).append(rec.hash)
    for rec in records(hot / stream):
        out.setdefault(rec.seq, []).append(rec.hash)
    return out


@pytest.mark.slow
def test_crash_loop_with_zero_hot_retention_always_restarts(tmp_path: Path) -> None:
    """Writer and shipper with hot_retention = 0 s, killed with SIGKILL again and again: every
    restart succeeds (no state they leave behind wedges the stream), `pipeline verify` passes,
    and no acknowledged event is lost."""
    hot, cold = tmp_path / "hot", tmp_path / "cold"
    rng = random.Random(f"loop-{os.getpid()}-{time.time_ns()}")
    acked: dict[int, str] = {}
    for run in range(12):
        # every third run is killed during start-up; the run after it must start
        for seq, h in run_loop_child(hot, cold, rng, early=run % 3 == 1).items():
            assert acked.setdefault(seq, h) == h, f"seq {seq} acknowledged twice with different hashes"
        res = cli("verify", "--hot", str(hot))
        assert res.returncode == 0, res.stdout + res.stderr
    assert len(acked) > 100
    ledger = Ledger(hot)
    assert ledger.counts()["evicted"] > 0, "nothing was evicted: the test did not exercise eviction"
    ledger.close()
    with HotLog(hot, "loop", heartbeat_interval=0, segment_window=0) as log:
        log.append({"final": True})
    file_shipper(hot, cold).run_once()
    res = cli("verify", "--hot", str(hot))
    assert res.returncode == 0, res.stdout + res.stderr
    have = all_records(hot, cold, "loop")
    lost = [s for s, h in acked.items() if h not in have.get(s, [])]
    assert not lost, f"acknowledged events lost: {lost[:10]}"


# ------------------------------------------------------------------ a failed fsync


def test_failed_fsync_answers_durability_unknown_and_keeps_the_chain_honest(
        hot_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a failed fsync, retrying it proves nothing (Linux reports a writeback error
    once), and the complete lines are in the file, so a restart would find them valid: the
    writer neither says "stored" nor "not stored" but "durability unknown", and the recovery
    record's valid length is where the complete records end (the same as start-up's)."""
    import errno

    from pipeline import _accel
    from pipeline.hot.writer import HotLogError

    real = _accel.fsync
    fail = {"armed": False}

    def flaky(fd: int) -> None:
        if fail["armed"]:
            fail["armed"] = False
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(_accel, "fsync", flaky)
    d = hot_dir / STREAM
    with HotLog(hot_dir, STREAM, durability="fsync", heartbeat_interval=0, segment_window=0) as log:
        before = [log.append({"i": i}) for i in range(3)]
        fail["armed"] = True
        with pytest.raises(HotLogError, match="durability unknown"):
            log.append({"i": "unknown"})
        after = log.append({"i": "after"})
    recs = {r.seq: r for r in records(d)}
    assert all(recs[r.seq].hash == r.hash for r in [*before, after])
    assert recs[3].data == {"i": "unknown"}  # in the chain: the recovery record continues from it
    recovery = recs[4]
    assert recovery.kind == "recovery" and recovery.prev == recs[3].hash
    (entry,) = recovery.data["abandoned"]
    assert entry["torn_bytes"] == 0
    assert_clean(d)


def test_sealed_clean_close_then_eviction_then_restart_continues_the_chain(hot_dir: Path, tmp_path: Path) -> None:
    """A drained sidecar (close with seal) whose segments were all shipped and evicted: the
    next start continues the chain from head.json (not from seq 0)."""
    with HotLog(hot_dir, STREAM, heartbeat_interval=0, segment_window=0) as log:
        last = [log.append({"i": i}) for i in range(5)][-1]
    file_shipper(hot_dir, tmp_path / "cold").run_once()
    assert list_segments(hot_dir / STREAM) == []
    with HotLog(hot_dir, STREAM, heartbeat_interval=0, segment_window=0) as log:
        r = log.append({"after": 1})
    assert r.seq == last.seq + 2  # after the seal
    res = cli("verify", "--hot", str(hot_dir))
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("mode", ["group", "fsync", "os"])
@pytest.mark.parametrize("cut", [0, 3, 7])
def test_failed_write_keeps_exactly_the_complete_lines_it_left(
        hot_dir: Path, monkeypatch: pytest.MonkeyPatch, mode: str, cut: int) -> None:
    """A write that fails after ``cut`` complete lines and half of the next: those lines are
    acknowledged, the rest refused, and the recovery record's valid length is where the
    complete lines end, which is what start-up would find in the file."""
    import errno

    from pipeline.hot import writer as writer_mod
    from pipeline.hot.writer import HotLogError

    real = writer_mod._write_chunks
    armed = {"on": False}

    def failing_write(fd: int, chunks: list[bytes]) -> None:
        if not armed["on"]:
            real(fd, chunks)
            return
        armed["on"] = False
        real(fd, chunks[:cut])
        os.write(fd, chunks[cut][: len(chunks[cut]) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_mod, "_write_chunks", failing_write)
    d = hot_dir / STREAM
    log = HotLog(hot_dir, STREAM, durability=mode, heartbeat_interval=0, segment_window=0, background=False)
    try:
        warm = log.append_many([{"w": i} for i in range(4)])
        log.sync()  # (os mode acknowledges at write; without a background thread, at sync)
        armed["on"] = True
        batch = log.append_prepared_many([orjson.dumps({"b": i}) for i in range(10)])
        with pytest.raises(HotLogError):
            log.sync()  # the flush that fails
        outcomes: list[Any] = []
        for r in batch:
            assert not isinstance(r, HotLogError)  # all queued: the failure comes at the write
            try:
                log.wait_durable(r, timeout=0)
                outcomes.append(r)
            except HotLogError as exc:
                outcomes.append(exc)
        stored = [o for o in outcomes if not isinstance(o, Exception)]
        assert len(stored) == cut, outcomes
        assert all(isinstance(o, HotLogError) and "not stored" in str(o) for o in outcomes[cut:])
        after = log.append({"after": 1})
    finally:
        log.close()
    recs = {r.seq: r for r in records(d)}
    for r in [*warm, *stored, after]:
        assert recs[r.seq].hash == r.hash
    recovery = recs[warm[-1].seq + cut + 1]
    assert recovery.kind == "recovery" and recovery.data["reason"] == "write-error"
    (entry,) = recovery.data["abandoned"]
    seg = d / entry["segment"]
    ends = record_ends(seg)
    assert entry["valid_bytes"] == ends[-1][0]  # the end of the last complete record
    assert ends[-1][1].seq == warm[-1].seq + cut
    assert entry["torn_bytes"] > 0
    assert_clean(d)


@pytest.mark.parametrize("cut", [1, 3])
def test_failed_write_of_a_seal_abandons_the_segment_at_its_complete_records(
        hot_dir: Path, monkeypatch: pytest.MonkeyPatch, cut: int) -> None:
    """The failed write carried the segment's last records and its seal (cut 3: all three
    events complete, the seal torn): the segment is abandoned where the complete records end."""
    import errno

    from pipeline.hot import writer as writer_mod
    from pipeline.hot.writer import HotLogError

    real = writer_mod._write_chunks
    armed = {"on": False}

    def failing_write(fd: int, chunks: list[bytes]) -> None:
        if not armed["on"]:
            real(fd, chunks)
            return
        armed["on"] = False
        real(fd, chunks[:cut])
        os.write(fd, chunks[cut][:40])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_mod, "_write_chunks", failing_write)
    d = hot_dir / STREAM
    log = HotLog(hot_dir, STREAM, heartbeat_interval=0, segment_window=0, background=False)
    try:
        warm = log.append_many([{"w": i} for i in range(4)])
        pending = log.append_many([{"p": i} for i in range(3)], wait=False)
        armed["on"] = True
        with pytest.raises(HotLogError):
            log.seal()
        ok = []
        for r in pending:
            try:
                log.wait_durable(r, timeout=0)
                ok.append(r)
            except HotLogError:
                pass
        assert ok == pending[:cut]
        after = log.append({"after": 1})
    finally:
        log.close()
    recs = {r.seq: r for r in records(d)}
    for r in [*warm, *ok, after]:
        assert recs[r.seq].hash == r.hash
    recovery = recs[ok[-1].seq + 1]
    (entry,) = recovery.data["abandoned"]
    assert entry["valid_bytes"] == record_ends(d / entry["segment"])[-1][0]
    assert_clean(d)
