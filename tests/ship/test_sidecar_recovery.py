"""`pipeline run` restarts after every sealed segment was evicted (issue 12, item 7): downtime
longer than hot_retention, then a crash in the first window, must not wedge the stream."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.hot.segment import list_segments
from pipeline.ship.ledger import Ledger
from tests.ship.test_sidecar import REPO, Sidecar, cold_events


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_downtime_longer_than_hot_retention_then_a_crash_in_the_first_window(
        tmp_path: Path, s3_endpoint: str, locked_bucket: str) -> None:
    sc = Sidecar(tmp_path, s3_endpoint, locked_bucket,
                 hot={"segment_window": "60s", "hot_retention": "1s", "heartbeat_interval": "0s"})
    acked: list[tuple[int, str]] = []

    def post(tag: str, n: int) -> None:
        code, doc = sc.post([{"tag": tag, "i": i} for i in range(n)])
        assert code == 200 and doc["accepted"] == n, doc
        acked.extend((r["seq"], r["hash"]) for r in doc["results"])

    sc.start()
    post("first", 30)
    assert sc.stop(signal.SIGTERM) == 0  # drained: sealed and shipped
    time.sleep(1.5)  # the downtime: longer than hot_retention
    sc.start()
    post("second", 10)
    stream_dir = sc.hot / "app"
    # the first pass evicts every sealed segment; only the open one is left
    def only_the_open_segment_left() -> bool:
        ledger = Ledger(sc.hot)
        try:
            entries = ledger.entries(stream="app")
        finally:
            ledger.close()
        return bool(entries) and all(e.state == "evicted" for e in entries) and len(list_segments(stream_dir)) == 1

    _wait(only_the_open_segment_left, 30, "the sealed segments to be evicted")
    assert sc.proc is not None
    sc.proc.kill()  # a crash in the first window: no seal since the restart
    sc.proc.wait()
    sc.start()  # before the fix: "no sealed segment or head.json to continue from"
    post("third", 5)
    assert sc.stop(signal.SIGTERM) == 0
    res = subprocess.run([sys.executable, "-m", "pipeline", "verify", "--hot", str(sc.hot)], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    ledger = Ledger(sc.hot)
    assert ledger.counts()["quarantined"] == 0
    ledger.close()
    events, report = cold_events(s3_endpoint, locked_bucket, tmp_path / "cold" / "app")
    assert report.ok, report.findings[:3]
    have = {(e["seq"], e["hash"]) for e in events}
    assert set(acked) <= have, sorted(set(acked) - have)[:5]
