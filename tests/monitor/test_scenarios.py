"""Issue 19's scenarios with real components: `pipeline run` (the sidecar) writing and shipping,
`pipeline monitor` watching it through READ-ONLY bind mounts of the hot tier, the file://
cold store and the witness (writes through them fail with EROFS, even as root), Debian's
Alertmanager receiving the monitor's alerts, and the test's own webhook receiver behind it.
Each scenario ends with the alert observed at the receiver (and resolved where that applies)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.hot import attr
from pipeline.hot.segment import list_segments
from tests.hotutil import read_only_view
from tests.monitor.conftest import Alertmanager, MonitorProc, Receiver, monitor_process
from tests.netutil import free_port
from tests.ship.test_sidecar import Sidecar

pytestmark = pytest.mark.slow


def _sidecar(tmp_path: Path, cold: Path, **hot: Any) -> Sidecar:
    sc = Sidecar(tmp_path, "http://unused", "unused", hot={"segment_window": "1s", "heartbeat_interval": "1s",
                                                           "hot_retention": "1h", **hot})
    sc.sections["cold"] = {"url": f"file://{cold}", "retention_days": 1}
    sc.write_config()
    return sc


def _monitor_sections(tmp_path: Path, am: Alertmanager, hot_view: Path, cold_view: Path | None,
                      **extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {
        "monitor": {"interval": "300ms", "trailing_delay": "500ms", "resend_interval": "2s", "watchdog_ttl": "2s"},
        "hot": {"dir": str(hot_view), "heartbeat_interval": "1s", "silence_factor": 3, "rescan_active": "1s"},
        "cold": {"retention_days": 1, "max_lag": "4s", "recheck_batch": 50, "recheck_interval": "500ms",
                 "retry_max_seconds": "1s"},
        "alertmanager": {"url": am.url, "timeout": "2s"},
    }
    if cold_view is not None:
        sections["cold"]["url"] = f"file://{cold_view}"
    for k, v in extra.items():
        sections.setdefault(k, {}).update(v)
    return sections


# For the scenarios that assert no alert but theirs: the silence and cold-lag thresholds
# above (3 s without a record, 4 s to ship a segment) are for the scenarios that provoke
# them; a loaded machine (the second core busy, fsyncs queued behind another test's) can
# exceed them on a healthy stream and raise an alert that has nothing to do with the test.
QUIET_ELSEWHERE: dict[str, dict[str, Any]] = {"hot": {"silence_factor": 60}, "cold": {"max_lag": "10m"}}


@contextlib.contextmanager
def _stack(tmp_path: Path, am: Alertmanager, watch: dict[str, dict[str, Any]] | None = None,
           **hot: Any) -> Iterator[tuple[Sidecar, MonitorProc, Path, Path]]:
    """A running sidecar (file:// cold) and a monitor reading both tiers through read-only mounts
    (``watch``: changes to the monitor's sections)."""
    cold = tmp_path / "cold"
    cold.mkdir()
    sc = _sidecar(tmp_path, cold, **hot)
    sc.start()
    try:
        with read_only_view(sc.hot, tmp_path / "ro-hot") as hot_view, \
                read_only_view(cold, tmp_path / "ro-cold") as cold_view, \
                monitor_process(tmp_path, _monitor_sections(tmp_path, am, hot_view, cold_view,
                                                            **(watch or {}))) as mon:
            yield sc, mon, hot_view, cold
    finally:
        if sc.proc is not None and sc.proc.poll() is None:
            sc.stop(signal.SIGKILL)


def _feed(sc: Sidecar, batches: int, size: int = 50, pause: float = 0.1) -> None:
    for b in range(batches):
        status, _ = sc.post([{"batch": b, "i": i, "msg": "x" * 40} for i in range(size)])
        assert status == 200
        time.sleep(pause)


def _firing(alertname: str, code: str | None = None) -> Any:
    def pred(a: dict[str, Any]) -> bool:
        return bool(a.get("status") == "firing" and a["labels"].get("alertname") == alertname
                    and (code is None or a["labels"].get("code") == code))
    return pred


def _resolved(alertname: str) -> Any:
    def pred(a: dict[str, Any]) -> bool:
        return bool(a.get("status") == "resolved" and a["labels"].get("alertname") == alertname)
    return pred


def _unrelated(receiver: Receiver, segment: str | None) -> list[dict[str, Any]]:
    """Alerts other than the watchdog and those about ``segment``: false positives here."""
    return [a for a in receiver.alerts("/am") if a["labels"]["alertname"] != "WormMonitorWatchdog"
            and (segment is None or a["labels"].get("segment") != segment)]


def _sealed_segments(hot: Path) -> list[Path]:
    out = []
    for p in list_segments(hot / "app"):
        if attr.is_immutable(p):
            out.append(p)
    return out


def _flip(path: Path, offset: int) -> None:
    """What an attacker with root does: clear the attribute, change a byte, put it back."""
    flags_immutable = attr.is_immutable(path)
    attr.clear_protection(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))
    if flags_immutable:
        attr.protect_immutable(path)
    else:
        attr.protect_append_only(path)


def test_the_monitor_cannot_write_what_it_watches(tmp_path: Path, alertmanager: Alertmanager,
                                                  receiver: Receiver) -> None:
    """The read-only views are real: a write through them fails, and the monitor runs on them."""
    with _stack(tmp_path, alertmanager, QUIET_ELSEWHERE) as (sc, mon, hot_view, _cold):
        _feed(sc, 10)
        with pytest.raises(OSError) as e:
            (hot_view / "app" / "probe").write_text("x")
        assert e.value.errno == 30  # EROFS
        mon.wait_metric("worm_monitor_last_verified_seq", lambda v: v >= 400, 25, stream="app")
        time.sleep(2)  # a few more cycles over a healthy stream
        assert mon.metric("worm_monitor_findings_active", code="hash-mismatch") in (None, 0.0)
        assert mon.proc.poll() is None
        assert not _unrelated(receiver, None), "a healthy stream raised alerts"


def test_byte_flipped_in_a_sealed_hot_segment(tmp_path: Path, alertmanager: Alertmanager, receiver: Receiver) -> None:
    with _stack(tmp_path, alertmanager, QUIET_ELSEWHERE) as (sc, mon, _hot_view, _cold):
        _feed(sc, 15)
        mon.wait_metric("worm_monitor_last_verified_seq", lambda v: v >= 600, 25, stream="app")
        victim = _sealed_segments(sc.hot)[0]
        _flip(victim, 30)
        alert = receiver.wait_for(lambda a: _firing("WormLogTampered")(a) and a["labels"]["segment"] == victim.name,
                                  25, "/am")
        assert not _unrelated(receiver, victim.name), "alerts about anything but the flipped segment"
        assert alert["labels"]["stream"] == "app"
        from pipeline.verify.chain import REASONS

        assert alert["labels"]["code"] in REASONS  # which one depends on the byte hit
        assert alert["annotations"]["reason"] == alert["labels"]["code"]
        first_seq = int(victim.name.split("-")[1].split(".")[0])
        assert first_seq <= int(alert["annotations"]["seq"]) <= first_seq + 1000


def test_record_rewritten_in_the_active_segment(tmp_path: Path, alertmanager: Alertmanager,
                                                receiver: Receiver) -> None:
    # windows are aligned to the clock: with 30 s the active segment could be sealed between
    # the listing below and the flip (a sealed segment then, and another alert); 6 h windows
    # make a rotation during the test rare, and the check below names it if one happens
    with _stack(tmp_path, alertmanager, QUIET_ELSEWHERE, segment_window="6h") as (sc, mon, _hot_view, _cold):
        _feed(sc, 10)
        mon.wait_metric("worm_monitor_last_verified_seq", lambda v: v >= 300, 25, stream="app")
        active = list_segments(sc.hot / "app")[-1]
        assert not attr.is_immutable(active)
        data = active.read_bytes()
        at = data.index(b'"i":3,')
        _flip(active, at + 4)  # "i":3 -> "i":2: a valid record with a stale hash
        alert = receiver.wait_for(_firing("WormLogTampered", "hash-mismatch"), 25, "/am")
        assert alert["labels"]["segment"] == active.name
        assert not _unrelated(receiver, active.name)


def test_sidecar_killed_is_silence_and_resolves_when_it_writes_again(tmp_path: Path, alertmanager: Alertmanager,
                                                                     receiver: Receiver) -> None:
    with _stack(tmp_path, alertmanager) as (sc, mon, _hot_view, _cold):
        _feed(sc, 3)
        mon.wait_metric("worm_monitor_last_verified_seq", lambda v: v >= 100, 25, stream="app")
        sc.stop(signal.SIGKILL)
        alert = receiver.wait_for(_firing("WormStreamSilent"), 25, "/am")
        assert alert["labels"]["code"] == "silence" and alert["labels"]["stream"] == "app"
        sc.start()
        receiver.wait_for(_resolved("WormStreamSilent"), 30, "/am")


def test_cold_object_deleted_after_eviction_and_one_unlocked(tmp_path: Path, alertmanager: Alertmanager,
                                                             receiver: Receiver) -> None:
    """file:// lets root delete an object (clear the immutable attribute, unlink): with the hot
    copy evicted, the records survive nowhere."""
    with _stack(tmp_path, alertmanager, hot_retention="0s") as (sc, _mon, _hot_view, cold):
        _feed(sc, 10)
        ledger = sc.hot / ".ship" / "ledger.sqlite"
        deadline = time.monotonic() + 20
        evicted: list[str] = []
        while time.monotonic() < deadline and not evicted:
            with contextlib.closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)) as db:
                evicted = [r[0] for r in db.execute("SELECT cold_key FROM segments WHERE state = 'evicted' "
                                                    "ORDER BY first_seq")]
            time.sleep(0.2)
        assert evicted, "nothing was evicted"
        obj = next(p for p in cold.rglob("seg-*") if str(p).endswith(evicted[0]))
        attr.clear_protection(obj)
        obj.unlink()
        alert = receiver.wait_for(_firing("WormEvictedWithoutColdCopy"), 30, "/am")
        assert alert["labels"]["code"] == "evicted-without-cold-copy"
        assert f"/{alert['labels']['segment']}" in evicted[0]
        # another object unlocked (the file:// store's lock is the immutable attribute)
        other = next(p for p in sorted(cold.rglob("seg-*.zst")) if p != obj and ".meta" not in p.parts)
        attr.clear_protection(other)
        unlocked = receiver.wait_for(_firing("WormColdObjectInvalid", "not-locked"), 30, "/am")
        assert other.name.startswith(unlocked["labels"]["segment"])


def test_cold_storage_stopped_is_cold_lag_and_resolves_when_it_returns(tmp_path: Path, alertmanager: Alertmanager,
                                                                      receiver: Receiver) -> None:
    """moto's server (its own process) stopped: uploads fail, the ledger's rows stay in flight.
    Started again (on the same port, with the same bucket: moto keeps nothing), the shipper's
    retries land the segments and the cold-lag alert resolves at the receiver."""
    port = free_port()

    def start_moto() -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    moto = start_moto()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        from tests.ship.conftest import make_bucket

        deadline = time.monotonic() + 20
        while True:
            try:
                bucket = make_bucket(endpoint)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        sc = Sidecar(tmp_path, endpoint, bucket, hot={"segment_window": "1s", "heartbeat_interval": "1s",
                                                      "hot_retention": "1h"})
        sc.sections["cold"] = {"url": f"s3://{bucket}/sc?endpoint_url={endpoint}&region=us-east-1",
                               "retention_days": 1, "retry_max_seconds": "2s"}
        sc.write_config()
        sc.start()
        try:
            with read_only_view(sc.hot, tmp_path / "ro-hot") as hot_view:
                sections = _monitor_sections(tmp_path, alertmanager, hot_view, None)
                sections["cold"]["url"] = f"s3://{bucket}/sc?endpoint_url={endpoint}&region=us-east-1"
                with monitor_process(tmp_path, sections) as mon:
                    _feed(sc, 3)
                    mon.wait_metric("worm_monitor_last_verified_seq", lambda v: v >= 100, 25, stream="app")
                    moto.terminate()
                    moto.wait(10)
                    _feed(sc, 3)
                    alert = receiver.wait_for(_firing("WormColdLag"), 25, "/am")
                    assert alert["labels"]["code"] == "cold-lag"
                    assert "still" in alert["annotations"]["description"]
                    lagging = alert["labels"]["segment"]
                    # cold storage returns (empty: moto keeps nothing; the same bucket is made again, with
                    # Object Lock; the shipper sets each object's retention itself)
                    moto = start_moto()
                    from tests.ship.conftest import s3_client

                    deadline = time.monotonic() + 20
                    while True:
                        try:
                            c = s3_client(endpoint)
                            c.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
                            break
                        except Exception:
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.1)
                    receiver.wait_for(lambda a: _resolved("WormColdLag")(a) and a["labels"]["segment"] == lagging,
                                      90, "/am")
        finally:
            if sc.proc is not None and sc.proc.poll() is None:
                sc.stop(signal.SIGKILL)
    finally:
        if moto.poll() is None:
            moto.kill()
            moto.wait()


def test_witness_that_stops_accepting_goes_stale_then_recovers(tmp_path: Path, alertmanager: Alertmanager,
                                                               receiver: Receiver) -> None:
    from pipeline.checkpoint import Signer, write_key_pair

    signer = Signer.generate("example.com/audit")
    key_path, pub_path = write_key_pair(signer, tmp_path / "keys")
    witness = tmp_path / "witness"
    witness.mkdir()
    cold = tmp_path / "cold"
    cold.mkdir()
    sc = _sidecar(tmp_path, cold)
    sc.sections["signing"] = {"key_file": str(key_path), "checkpoint_interval": "500ms",
                              "witnesses": [f"file://{witness}"]}
    sc.write_config()
    sc.start()
    try:
        with read_only_view(sc.hot, tmp_path / "ro-hot") as hot_view, \
                read_only_view(witness, tmp_path / "ro-witness") as witness_view:
            sections = _monitor_sections(tmp_path, alertmanager, hot_view, None,
                                         witness={"locations": [f"file://{witness_view}"], "vkey": str(pub_path),
                                                  "max_lag": "2s", "interval": "300ms"})
            with monitor_process(tmp_path, sections) as mon:
                _feed(sc, 5)
                mon.wait_metric("worm_monitor_last_witness_check_timestamp_seconds", lambda v: v > 0, 25,
                                stream="app")
                # the witness stops accepting: its directory becomes read-only for the sidecar too
                with read_only_view(witness, witness):
                    for _ in range(10):
                        _feed(sc, 1)
                        time.sleep(0.4)
                    alert = receiver.wait_for(_firing("WormWitnessStale"), 25, "/am")
                    assert alert["labels"]["code"] == "witness-stale"
                    assert "witness" in alert["labels"]["where"]
                _feed(sc, 3)
                receiver.wait_for(_resolved("WormWitnessStale"), 30, "/am")
    finally:
        if sc.proc is not None and sc.proc.poll() is None:
            sc.stop(signal.SIGKILL)


def test_monitor_killed_watchdog_resolves_at_the_receiver(tmp_path: Path, alertmanager: Alertmanager,
                                                          receiver: Receiver) -> None:
    """The dead-man's switch: Alertmanager holds WormMonitorWatchdog while the monitor re-sends
    it; killed, the monitor stops, the alert's endsAt passes, the receiver is told it resolved."""
    with _stack(tmp_path, alertmanager) as (_sc, mon, _hot_view, _cold):
        receiver.wait_for(_firing("WormMonitorWatchdog"), 25, "/am")
        assert any(a["labels"]["alertname"] == "WormMonitorWatchdog" for a in alertmanager.alerts())
        os.kill(mon.proc.pid, signal.SIGKILL)
        mon.proc.wait(10)
        receiver.wait_for(_resolved("WormMonitorWatchdog"), 30, "/am")
