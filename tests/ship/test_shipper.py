"""Shipper against moto's server over HTTP: ship, verify, confirm, evict, and converge."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard

from pipeline.cold import ColdSettings, open_store
from pipeline.format.layout import ledger_path
from pipeline.hot import attr
from pipeline.hot.segment import list_segments
from pipeline.hot.writer import HotLog
from pipeline.ship.ledger import Ledger
from pipeline.ship.shipper import Shipper
from pipeline.verify.chain import verify_stream
from tests.ship.conftest import make_bucket, s3_client

EVENT = {"actor": "svc", "action": "update", "resource": "orders/000123", "detail": "x" * 120}


def write_events(hot: Path, n: int, *, max_bytes: int = 256 * 1024, stream: str = "app") -> None:
    with HotLog(hot, stream, segment_max_bytes=max_bytes, heartbeat_interval=0) as log:
        for i in range(n):
            log.append(dict(EVENT, n=i), wait=False)
        log.sync()


def download_stream(endpoint: str, bucket: str, prefix: str, dest: Path) -> int:
    """Fetch every cold object of a stream, decompress it and lay it out as a hot stream dir."""
    c = s3_client(endpoint)
    dest.mkdir(parents=True)
    n = 0
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = c.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            name = obj["Key"].rsplit("/", 1)[1]
            if name.endswith(".zst"):
                body = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()
                name = name[:-4]
            (dest / name).write_bytes(body)
            n += 1
    return n


def test_end_to_end_100k_events_shipped_confirmed_evicted(hot_dir: Path, tmp_path: Path, s3_endpoint: str,
                                                         locked_bucket: str) -> None:
    write_events(hot_dir, 100_000, max_bytes=1 << 20)
    segments = list_segments(hot_dir / "app")
    assert len(segments) >= 20
    store = open_store(f"s3://{locked_bucket}/audit?endpoint_url={s3_endpoint}&region=us-east-1",
                       ColdSettings(retention_days=1))
    shipper = Shipper(hot_dir, store, hot_retention=0.0, concurrency=4)
    summary = shipper.run_once()
    sealed = len(segments)  # HotLog.close() sealed the newest one too
    assert summary.confirmed == sealed
    assert summary.failed == summary.quarantined == 0
    assert summary.evicted == sealed
    counts = shipper.ledger.counts()
    assert counts["evicted"] == sealed and counts["uploading"] == 0
    # what remains hot verifies, starting after the evicted prefix
    start = shipper.ledger.evicted_prefix("app")
    assert start is not None
    remaining = verify_stream(hot_dir / "app", start_seq=start[0], start_hash=start[1])
    assert remaining.ok, remaining.findings
    assert list_segments(hot_dir / "app") == []
    # full-chain check from the cold copies alone: every object once, the chain intact from seq 0
    cold = tmp_path / "from-cold" / "app"
    assert download_stream(s3_endpoint, locked_bucket, "audit/app/", cold) == sealed
    report = verify_stream(cold, workers=1)
    assert report.ok, report.findings[:3]
    assert report.first_seq == 0
    assert report.records == 100_000 + sealed  # every event once, plus one seal per segment
    # locks really hold: deleting a locked version is refused
    c = s3_client(s3_endpoint)
    key = f"audit/app/{segments[0].name}.zst"
    head = c.head_object(Bucket=locked_bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(Exception, match="AccessDenied"):
        c.delete_object(Bucket=locked_bucket, Key=key, VersionId=head["VersionId"])


def test_events_accounted_exactly(hot_dir: Path, tmp_path: Path, s3_endpoint: str, locked_bucket: str) -> None:
    write_events(hot_dir, 5000, max_bytes=64 * 1024)
    with HotLog(hot_dir, "app", heartbeat_interval=0) as log:  # close() seals the last segment
        log.append({"final": True})
    store = open_store(f"s3://{locked_bucket}/p?endpoint_url={s3_endpoint}", ColdSettings(retention_days=1))
    summary = Shipper(hot_dir, store, hot_retention=0.0).run_once()
    assert summary.pending == 0 and summary.failed == 0
    cold = tmp_path / "cold" / "app"
    download_stream(s3_endpoint, locked_bucket, "p/app/", cold)
    report = verify_stream(cold, workers=1)
    assert report.ok
    ns = []
    for seg in list_segments(cold):
        for line in seg.read_bytes().splitlines():
            if b'"kind":"event"' in line and b'"n":' in line:
                ns.append(int(line.split(b'"n":')[1].split(b"}")[0].split(b",")[0]))
    assert sorted(ns) == list(range(5000))


def test_nothing_unconfirmed_is_evicted_when_cold_is_down(hot_dir: Path, s3_endpoint: str,
                                                         locked_bucket: str) -> None:
    write_events(hot_dir, 3000, max_bytes=64 * 1024)
    before = {p.name: p.read_bytes() for p in list_segments(hot_dir / "app")}
    # an endpoint where nothing listens: every request fails after a short retry budget
    dead = "http://127.0.0.1:9"
    settings = ColdSettings(retention_days=1, retry_max_seconds=0.5, connect_timeout=0.5, read_timeout=0.5)
    clock = [time.time()]
    shipper = Shipper(hot_dir, open_store(f"s3://{locked_bucket}/p?endpoint_url={dead}", settings),
                      hot_retention=0.0, clock=lambda: clock[0])
    s1 = shipper.run_once()
    assert s1.confirmed == 0 and s1.failed == len(before) and s1.evicted == 0
    failing = shipper.status()["failing"]
    assert failing and all(f["attempts"] == 1 and f["last_error"] for f in failing)
    assert shipper.cold_lag() >= 0
    # still down a few passes later (time moves on past the backoff): reasons kept, nothing dropped
    for _ in range(3):
        clock[0] += 600
        shipper.run_once()
    assert all(p.read_bytes() == before[p.name] for p in list_segments(hot_dir / "app"))
    assert shipper.ledger.counts()["evicted"] == 0
    # the endpoint comes back: the same ledger converges
    clock[0] += 600
    back = Shipper(hot_dir, open_store(f"s3://{locked_bucket}/p?endpoint_url={s3_endpoint}",
                                       ColdSettings(retention_days=1)),
                   ledger=shipper.ledger, hot_retention=0.0, clock=lambda: clock[0])
    s2 = back.run_once()
    assert s2.confirmed == len(before)
    assert back.ledger.counts()["evicted"] == len(before)
    assert back.cold_lag() == 0


def test_tampered_hot_segment_is_quarantined_not_evicted(hot_dir: Path, s3_endpoint: str,
                                                         locked_bucket: str) -> None:
    write_events(hot_dir, 2000, max_bytes=64 * 1024)
    store = open_store(f"s3://{locked_bucket}/p?endpoint_url={s3_endpoint}", ColdSettings(retention_days=1))
    shipper = Shipper(hot_dir, store, hot_retention=0.0)
    shipper.discover()  # the ledger records the manifest at discovery ...
    victim = list_segments(hot_dir / "app")[1]
    attr.clear_protection(victim)
    data = bytearray(victim.read_bytes())
    data[100] ^= 1  # ... and the hot copy changes afterwards
    victim.write_bytes(bytes(data))
    summary = shipper.run_once()
    assert summary.quarantined == 1
    entry = shipper.ledger.get("app", victim.name)
    assert entry is not None and entry.state == "quarantined" and entry.last_error
    assert victim.exists()


def test_unlocked_bucket_fails_closed_and_is_retried(hot_dir: Path, s3_endpoint: str) -> None:
    bucket = make_bucket(s3_endpoint, lock=False)
    write_events(hot_dir, 500, max_bytes=32 * 1024)
    shipper = Shipper(hot_dir, open_store(f"s3://{bucket}/p?endpoint_url={s3_endpoint}",
                                          ColdSettings(retention_days=1)), hot_retention=0.0)
    summary = shipper.run_once()
    assert summary.confirmed == 0 and summary.failed > 0 and summary.evicted == 0
    assert any("Object Lock" in e for e in summary.errors)
    # allowed explicitly for development: ships, and the status says UNLOCKED
    dev = Shipper(hot_dir, open_store(f"s3://{bucket}/p?endpoint_url={s3_endpoint}",
                                      ColdSettings(retention_days=1, allow_unlocked=True)),
                  ledger=shipper.ledger, hot_retention=0.0, clock=lambda: time.time() + 3600)
    s2 = dev.run_once()
    assert s2.confirmed > 0
    assert all("UNLOCKED" in lock for _seg, _key, lock in s2.confirmed_keys)


def test_high_water_reports_backpressure_and_deletes_nothing(hot_dir: Path, s3_endpoint: str,
                                                             locked_bucket: str) -> None:
    write_events(hot_dir, 1000, max_bytes=32 * 1024)
    store = open_store(f"s3://{locked_bucket}/p?endpoint_url={s3_endpoint}", ColdSettings(retention_days=1))
    shipper = Shipper(hot_dir, store, hot_retention=3600.0, high_water_percent=1.0)  # disk is surely above 1%
    reason = shipper.backpressure()
    assert reason is not None and "high-water" in reason
    n = len(list_segments(hot_dir / "app"))
    summary = shipper.run_once()
    assert summary.evicted == 0  # confirmed but inside the hot retention: kept despite pressure
    assert len(list_segments(hot_dir / "app")) == n
    assert Shipper(hot_dir, store, high_water_percent=99.9).backpressure() is None


def _progress(hot_dir: Path) -> tuple[int, ...]:
    """How many segments stand in each state past sealed, evicted last.  Read-only, so
    polling it does not touch the ledger's reserve or take a writer's lock."""
    path = ledger_path(hot_dir)
    if not path.exists():
        return (0,) * 5
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        counts = dict(db.execute("SELECT state, COUNT(*) FROM segments GROUP BY state").fetchall())
    except sqlite3.OperationalError:  # the first run has not created the table yet
        return (0,) * 5
    finally:
        db.close()
    return tuple(counts.get(s, 0) for s in ("uploading", "uploaded", "verified", "confirmed", "evicted"))


SHIP_LOOP = r"""
import sys, time
from pipeline.cold import ColdSettings, open_store
from pipeline.ship.shipper import Shipper
store = open_store(sys.argv[2], ColdSettings(retention_days=1))
sh = Shipper(sys.argv[1], store, hot_retention=0.0, concurrency=3)
while True:
    s = sh.run_once()
    if s.pending == 0:
        print("DONE", flush=True)
        break
    time.sleep(0.05)
"""


def test_shipper_killed_at_random_points_converges(hot_dir: Path, tmp_path: Path, s3_endpoint: str,
                                                   locked_bucket: str) -> None:
    import random

    write_events(hot_dir, 20_000, max_bytes=96 * 1024)
    with HotLog(hot_dir, "app", heartbeat_interval=0):
        pass  # seal the last segment too
    segments = [p.name for p in list_segments(hot_dir / "app")]
    url = f"s3://{locked_bucket}/k?endpoint_url={s3_endpoint}"
    script = tmp_path / "ship_loop.py"
    script.write_text(SHIP_LOOP)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    rng = random.Random(7)
    kills = 0
    for _ in range(25):
        before = _progress(hot_dir)
        proc = subprocess.Popen([sys.executable, str(script), str(hot_dir), url], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        # Kill only once this run has moved some segment on, then at a random moment after:
        # a wall-clock kill alone lets a fast machine finish in one or two runs.
        deadline = time.monotonic() + 60
        while proc.poll() is None and _progress(hot_dir) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait()
        if _progress(hot_dir)[-1] == len(segments):
            break
    final = subprocess.run([sys.executable, str(script), str(hot_dir), url], env=env, capture_output=True,
                           timeout=300)
    assert b"DONE" in final.stdout
    assert kills >= 3
    counts = Ledger(hot_dir).counts()
    assert counts["evicted"] == len(segments) and counts["quarantined"] == 0
    keys = [o["Key"] for o in s3_client(s3_endpoint).list_object_versions(
        Bucket=locked_bucket, Prefix="k/app/").get("Versions", [])]
    assert sorted(keys) == sorted(f"k/app/{s}.zst" for s in segments)  # each exactly once, one version
    cold = tmp_path / "cold" / "app"
    download_stream(s3_endpoint, locked_bucket, "k/app/", cold)
    assert verify_stream(cold, workers=1).ok
