"""`pipeline run` restarts after every sealed segment was evicted (issue 12, item 7): downtime
longer than hot_retention, then a crash in the first window, must not wedge the stream."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from pipeline.hot.segment import list_segments
from pipeline.ship.ledger import Ledger
from pipeline.verify.chain import verify_stream
from tests.conftest import mounted_tmpfs
from tests.ship.test_shipper import download_stream
from tests.ship.test_sidecar import REPO, Sidecar, cold_events, socket_send


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
        # the Unix socket answers every event with its seq and hash (HTTP answers a range)
        acks = socket_send(sc.sock, [{"tag": tag, "i": i} for i in range(n)])
        assert all(r["ok"] for r in acks), acks
        acked.extend((r["seq"], r["hash"]) for r in acks)

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


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tmpfs", "2m") as mnt:
        yield mnt


@pytest.mark.slow
def test_enospc_mid_request_then_kill_9_keeps_every_answer_true(
        tmp_path: Path, small_fs: Path, s3_endpoint: str, locked_bucket: str) -> None:
    """Issue 12, item 7, as reported: the hot disk nearly full, a 1,500-event request hits
    ENOSPC mid-flush, the sidecar is killed, then restarted.  Every line answered "not
    stored" stays out of the stream; every line answered with a receipt is in it."""
    import os
    import shutil

    from tests.hot.test_enospc import records_in_chain

    sc = Sidecar(tmp_path, s3_endpoint, locked_bucket,
                 hot={"segment_window": "60s", "hot_retention": "1h", "heartbeat_interval": "0s",
                      "segment_max_bytes": 4 << 20, "high_water_percent": 99})
    sc.hot = small_fs / "hot"
    hot_section = sc.sections["hot"]
    assert isinstance(hot_section, dict)
    hot_section["dir"] = str(sc.hot)
    sc.write_config()
    acked: dict[int, str | None] = {}  # seq -> its hash where the answer names it
    maybe: set[int] = set()  # seqs a 503 said may be stored
    refused: dict[int, str] = {}

    def post(events: list[dict[str, object]]) -> int:
        """HTTP ingest (docs/INGEST.md): 200 names the stored seq range and its last hash; a
        503 after a failure part-way names the range that may be stored; nothing else is."""
        code, doc = sc.post(events)
        if code == 200:
            for seq in range(doc["first_seq"], doc["last_seq"] + 1):
                acked.setdefault(seq, None)
            acked[doc["last_seq"]] = doc["last_hash"]
        elif code == 503:
            body = orjson.loads(doc["body"])
            if "maybe_stored" in body:
                maybe.update(range(body["maybe_stored"]["first_seq"], body["maybe_stored"]["last_seq"] + 1))
        return code

    sc.start()
    assert post([{"warm": i} for i in range(20)]) == 200
    st = os.statvfs(small_fs)
    (small_fs / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 160 * 1024))
    code = post([{"req": i, "pad": "q" * 260} for i in range(1500)])
    assert code in (200, 429, 503), code
    # what the log holds beyond the acknowledged and the maybe-stored ranges was answered
    # "not stored": it must never become part of the verified stream
    assert sc.proc is not None
    sc.proc.kill()
    sc.proc.wait()
    stream_dir = sc.hot / "app"
    for path in list_segments(stream_dir):
        for line in path.read_bytes().splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            rec = orjson.loads(line)
            if rec["kind"] == "event" and "req" in rec["data"] and rec["seq"] not in acked and rec["seq"] not in maybe:
                refused[rec["seq"]] = rec["hash"]  # written, but never acknowledged
    (small_fs / "filler").unlink()
    sc.start()
    assert post([{"after": i} for i in range(5)]) == 200
    assert sc.stop(signal.SIGTERM) == 0
    res = subprocess.run([sys.executable, "-m", "pipeline", "verify", "--hot", str(sc.hot)], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    # the whole stream: cold objects plus what is left hot
    whole = tmp_path / "whole" / "app"
    download_stream(s3_endpoint, locked_bucket, "sc/app/", whole)
    for path in list_segments(stream_dir):
        shutil.copyfile(path, whole / path.name)
    report = verify_stream(whole, workers=1)
    assert report.ok, report.findings[:3]
    chain = {r.seq: r.hash for r in records_in_chain(whole)}
    assert all(s in chain and h in (None, chain[s]) for s, h in acked.items()), "an acknowledged event is missing"
    kept = [s for s, h in refused.items() if chain.get(s) == h]
    assert not kept, f"events never acknowledged are part of the verified stream: {kept[:10]}"
