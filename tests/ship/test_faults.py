"""Faults that must never hang or wedge the shipper (issue 13), against moto's server over
HTTP through a switchable gate (tests/ship/gate.py): a request that hangs for one
segment, a bucket without Object Lock that the operator then fixes, deadlines."""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pipeline.cold import ColdSettings, open_store
from pipeline.cold.retry import Deadline, bounded_by
from pipeline.config import load_config
from pipeline.hot.segment import list_segments
from pipeline.ship.shipper import Shipper
from pipeline.sidecar import Sidecar
from tests.netutil import free_port
from tests.ship.conftest import make_bucket, s3_client
from tests.ship.gate import Gate
from tests.ship.test_shipper import write_events


@pytest.fixture
def gate(moto_endpoint: str) -> Iterator[Gate]:
    u = urlsplit(moto_endpoint)
    g = Gate(u.hostname or "127.0.0.1", u.port or 80)
    yield g
    g.close()


def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_hung_request_for_one_segment_does_not_stop_the_others(hot_dir: Path, gate: Gate,
                                                                 locked_bucket: str) -> None:
    write_events(hot_dir, 800, max_bytes=16 * 1024)
    segs = [p.name for p in list_segments(hot_dir / "app")]
    assert len(segs) >= 6
    victim = segs[1]
    gate.hang_matching = [victim]  # its PUT and any HEAD of its key never get an answer
    store = open_store(f"s3://{locked_bucket}/p?endpoint_url={gate.url}",
                       ColdSettings(retention_days=1, read_timeout=60.0))
    shipper = Shipper(hot_dir, store, hot_retention=0.0, concurrency=2)
    t0 = time.monotonic()
    try:
        def others_done() -> bool:
            shipper.tick()
            counts = shipper.ledger.counts()
            return counts["evicted"] == len(segs) - 1

        # every other segment is shipped, verified and evicted while the victim's PUT hangs
        _wait(others_done, 30, "the other segments to ship")
        assert time.monotonic() - t0 < 30
        assert gate.hung >= 1
        entry = shipper.ledger.get("app", victim)
        assert entry is not None and entry.state == "uploading"
        assert shipper.in_flight() == 1
        assert (hot_dir / "app" / victim).exists()
        # the service recovers: the held request fails, the segment is retried and ships
        gate.hang_matching = []
        gate.release()
        shipper.ledger.record_failure("app", victim, "test: retry now", 0.0)  # skip the backoff

        def victim_done() -> bool:
            shipper.tick()
            e = shipper.ledger.get("app", victim)
            return e is not None and e.state == "evicted"

        _wait(victim_done, 30, "the victim to ship once the service answers")
    finally:
        shipper.deadline.set(time.monotonic())
        gate.release()
        store.close()


def test_deadline_bounds_a_hanging_request_and_the_retry_budget(gate: Gate, locked_bucket: str) -> None:
    gate.mode = "hang"
    store = open_store(f"s3://{locked_bucket}/p?endpoint_url={gate.url}",
                       ColdSettings(retention_days=1, read_timeout=60.0, retry_max_seconds=120.0))
    deadline = Deadline()
    deadline.set(time.monotonic() + 1.0)
    t0 = time.monotonic()
    from pipeline.cold.errors import ColdUnavailableError

    with bounded_by(deadline), pytest.raises(ColdUnavailableError):
        store.stat("p/app/seg-00000000000000000000.jsonl.zst")
    # a 1 s deadline, not 60 s of read timeout nor 120 s of retries (the margin is for a loaded machine)
    assert time.monotonic() - t0 < 10.0
    # down (connection reset every time): the retry budget ends with the deadline too
    gate.mode = "reset"
    gate.release()
    deadline.set(time.monotonic() + 1.0)
    t0 = time.monotonic()
    with bounded_by(deadline), pytest.raises(ColdUnavailableError):
        store.stat("p/app/seg-00000000000000000000.jsonl.zst")
    assert 0.5 < time.monotonic() - t0 < 10.0
    store.close()


def _sidecar_config(tmp: Path, url: str) -> Path:
    cfg = tmp / "pipeline.toml"
    cfg.write_text(
        "[hot]\n"
        f'dir = "{tmp / "hot"}"\nstream = "app"\nsegment_window = "1s"\nhot_retention = "0s"\n'
        "[cold]\n"
        f'url = "{url}"\nretention_days = 1\n'
        "[ops]\n"
        f'listen = "127.0.0.1:{free_port()}"\nshutdown_grace = "5s"\n')
    return cfg


def _readyz(sc: Sidecar) -> tuple[int, str]:
    assert sc.ops is not None
    host, port = sc.ops.address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_bucket_without_object_lock_fails_readiness_until_the_operator_fixes_it(
        tmp_path: Path, s3_endpoint: str, caplog: pytest.LogCaptureFixture) -> None:
    bucket = make_bucket(s3_endpoint, lock=False)
    url = f"s3://{bucket}/sc?endpoint_url={s3_endpoint}&region=us-east-1"
    config = load_config(_sidecar_config(tmp_path, url))
    # the lock state is re-read every second here (30 s by default)
    store = open_store(url, ColdSettings(retention_days=1, lock_recheck_seconds=1.0))
    sc = Sidecar(config, store=store, ship_interval=0.2)
    caplog.set_level(logging.INFO, logger="pipeline")
    sc.start()
    try:
        assert sc.hotlog is not None
        for i in range(50):
            sc.hotlog.append({"n": i})
        sc.hotlog.seal()

        def refused() -> bool:
            return _readyz(sc)[0] == 503

        _wait(refused, 20, "/readyz to fail")
        code, body = _readyz(sc)
        assert code == 503 and "Object Lock" in body and "put-object-lock-configuration" in body, body
        time.sleep(3)  # several re-checks: still one ERROR line, not one per attempt
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "refuses uploads" in r.getMessage()]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert "put-object-lock-configuration" in errors[0].getMessage()
        assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.ERROR)
        assert sc.shipper is not None and sc.shipper.ledger.counts()["confirmed"] == 0

        # the operator enables Object Lock on the bucket: no restart
        c = s3_client(s3_endpoint)
        c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        c.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})

        def recovered() -> bool:
            assert sc.shipper is not None
            counts = sc.shipper.ledger.counts()
            return _readyz(sc)[0] == 200 and counts["evicted"] >= 1

        _wait(recovered, 20, "shipping to resume and /readyz to recover")
        objs = c.list_objects_v2(Bucket=bucket, Prefix="sc/app/").get("Contents", [])
        head = c.head_object(Bucket=bucket, Key=objs[0]["Key"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert any("accepts uploads again" in r.getMessage() for r in caplog.records)
    finally:
        sc.drain(grace=10)


def test_one_error_line_per_state_change_when_cold_storage_is_down(hot_dir: Path, gate: Gate,
                                                                   locked_bucket: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    write_events(hot_dir, 300, max_bytes=16 * 1024)
    gate.mode = "reset"
    store = open_store(f"s3://{locked_bucket}/p?endpoint_url={gate.url}",
                       ColdSettings(retention_days=1, retry_max_seconds=0.5))
    shipper = Shipper(hot_dir, store, hot_retention=0.0, concurrency=2)
    caplog.set_level(logging.DEBUG, logger="pipeline.ship")
    stop = threading.Event()
    loop = threading.Thread(target=shipper.run_forever, args=(stop, 0.1), daemon=True)
    loop.start()
    try:
        _wait(lambda: shipper.ledger.counts()["sealed"] == 0 and all(
            e.attempts >= 1 for e in shipper.ledger.entries(states=("uploading",))), 20, "attempts")
        time.sleep(1.5)
        warn = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warn) == 1 and "unavailable" in warn[0].getMessage(), [r.getMessage() for r in warn]
        gate.mode = "pass"
        for e in shipper.ledger.entries(states=("uploading",)):
            shipper.ledger.record_failure(e.stream, e.segment, "test: retry now", 0.0)
        _wait(lambda: shipper.ledger.counts()["evicted"] == len(shipper.ledger.entries()), 30, "recovery")
        assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        stop.set()
        loop.join(10)
        store.close()


def test_wrong_retention_mode_is_a_refusal_that_holds_uploads_until_fixed(
        hot_dir: Path, gate: Gate, locked_bucket: str, caplog: pytest.LogCaptureFixture) -> None:
    write_events(hot_dir, 600, max_bytes=16 * 1024)
    n_segs = len(list_segments(hot_dir / "app"))
    # something between the shipper and the bucket turns COMPLIANCE into GOVERNANCE
    gate.rewrite = [(b"COMPLIANCE", b"GOVERNANCE")]
    store = open_store(f"s3://{locked_bucket}/p?endpoint_url={gate.url}",
                       ColdSettings(retention_days=1, lock_recheck_seconds=1.0))
    shipper = Shipper(hot_dir, store, hot_retention=0.0, concurrency=1)
    caplog.set_level(logging.INFO, logger="pipeline.ship")
    try:
        def first_refused() -> bool:
            shipper.tick()
            return shipper.ledger.counts()["quarantined"] >= 1

        # the first segment is uploaded, found not locked as required and quarantined: the refusal
        _wait(first_refused, 60, "the first segment to be quarantined")
        # then one probe per second while refused, not the whole backlog run into the wall:
        # probes start at least lock_recheck_seconds (1 s) apart and one at a time, so a window
        # of `window` s sees at most int(window) + 1 of them start, plus one already running
        before = shipper.ledger.counts()["quarantined"]
        started = time.monotonic()
        while time.monotonic() < started + 2.5:
            shipper.tick()
            time.sleep(0.1)
        window = time.monotonic() - started
        # a probe started in the window may still be running: its outcome is counted too
        _wait(lambda: shipper.in_flight() == 0, 60, "the last probe to end")
        counts = shipper.ledger.counts()
        assert counts["quarantined"] - before <= int(window) + 2, (counts, before, window)
        assert counts["confirmed"] + counts["evicted"] == 0, counts
        problem = shipper.problem()
        assert problem is not None and "GOVERNANCE" in problem and "Object Lock" in problem, problem
        lines = [r for r in caplog.records if r.levelno >= logging.ERROR and "did not lock" in r.getMessage()]
        assert len(lines) == 1
        quarantined = {e.segment for e in shipper.ledger.entries(states=("quarantined",))}
        for seg in quarantined:  # kept: never evicted
            assert (hot_dir / "app" / seg).exists()

        gate.rewrite = []  # fixed

        def shipped() -> bool:
            shipper.tick()
            c = shipper.ledger.counts()
            return c["evicted"] == n_segs - len(quarantined)

        _wait(shipped, 30, "the rest of the backlog to ship once fixed")
        assert shipper.problem() is None
        assert shipper.ledger.counts()["quarantined"] == len(quarantined)
    finally:
        store.close()
