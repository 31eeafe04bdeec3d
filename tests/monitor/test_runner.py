"""The monitor's cycle as a whole (pipeline/monitor/runner.py): its durable position in
monitor.state_dir (a restart neither re-reads what was verified nor re-sends what was
already delivered, and still resolves it), and the values of its own metrics."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.format.record import parse_fields
from pipeline.format.segment import read_last_line
from pipeline.hot import attr
from pipeline.hot.segment import list_segments
from pipeline.hot.writer import HotLog
from pipeline.monitor.config import MonitorConfig, load_monitor_config
from pipeline.monitor.runner import Monitor
from tests.hotutil import backdate
from tests.monitor.conftest import Receiver, write_toml


def _config(tmp_path: Path, hot: Path, receiver: Receiver, delay: str = "0s") -> MonitorConfig:
    (tmp_path / "secret").write_text("k")
    return load_monitor_config(write_toml(tmp_path / "monitor.toml", {
        "monitor": {"state_dir": str(tmp_path / "state"), "trailing_delay": delay},
        "hot": {"dir": str(hot), "rescan_active": "0s"},
        "webhook": {"url": receiver.url + "/hook", "secret_file": str(tmp_path / "secret"), "resend_interval": "1h"},
    }))


def _flip(path: Path, at: int) -> None:
    attr.clear_protection(path)
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))
    attr.protect_immutable(path)


def _sample(m: Monitor, name: str, **labels: str) -> float | None:
    value = m.metrics.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def test_a_restart_resumes_from_the_state_directory(tmp_path: Path, hot_dir: Path, receiver: Receiver) -> None:
    log = HotLog(hot_dir, "app", segment_window=0, segment_max_bytes=6000, heartbeat_interval=0)
    for i in range(300):
        log.append({"i": i, "msg": "m" * (i % 50)})
    log.close()
    victim = list_segments(hot_dir / "app")[0]
    original = victim.read_bytes()
    _flip(victim, original.index(b'"i":2,') + 4)
    cfg = _config(tmp_path, hot_dir, receiver)

    first = Monitor(cfg, serve_metrics=False)
    try:
        assert {(f.code, f.segment) for f in first.cycle()} == {("hash-mismatch", victim.name)}
        assert first.trails["app"]._bytes > 0  # it read the log
        first.cycle()
        assert _sample(first, "worm_monitor_findings_total", code="hash-mismatch") == 1.0  # counted once
        assert _sample(first, "worm_monitor_findings_active", code="hash-mismatch") == 1.0
        verified = _sample(first, "worm_monitor_last_verified_seq", stream="app")
        assert verified is not None and verified >= 290
    finally:
        first.close()
    assert [a["status"] for a in receiver.alerts("/hook")] == ["firing"]
    assert {p.name for p in cfg.state_dir.iterdir()} >= {"stream-app.json", "alerts.json", "channel-webhook.json",
                                                         "LOCK"}

    second = Monitor(cfg, serve_metrics=False)
    try:
        found = second.cycle()
        assert {(f.code, f.segment) for f in found} == {("hash-mismatch", victim.name)}  # still reported
        assert second.trails["app"]._bytes == 0  # nothing re-read: the position was kept
        assert [a["status"] for a in receiver.alerts("/hook")] == ["firing"]  # not fired again
        # new records after the restart: only they are read
        more = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
        for i in range(20):
            more.append({"i": 1000 + i})
        more.close()
        new = list_segments(hot_dir / "app")[-1]
        assert second.cycle() and second.trails["app"]._bytes <= 2 * new.stat().st_size
        last_line = read_last_line(new)
        head = parse_fields(last_line) if last_line else None
        assert head is not None
        assert _sample(second, "worm_monitor_last_verified_seq", stream="app") == float(head[1])  # caught up
        assert _sample(second, "worm_monitor_lag_records", stream="app") == 0.0
        # restored from a good copy: the restarted monitor resolves what the first one fired
        attr.clear_protection(victim)
        victim.write_bytes(original)
        attr.protect_immutable(victim)
        assert second.cycle() == []
    finally:
        second.close()
    statuses = [(a["status"], a["labels"]["code"]) for a in receiver.alerts("/hook")]
    assert statuses == [("firing", "hash-mismatch"), ("resolved", "hash-mismatch")]


def test_lag_metrics_follow_the_trailing_delay(tmp_path: Path, hot_dir: Path, receiver: Receiver) -> None:
    log = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    for i in range(50):
        log.append({"i": i})
    log.sync()
    # a trailing delay a write, its fsync and the next cycle always fit inside on a loaded
    # machine; "older than the delay" is made by moving the segment's mtime back, not slept
    # through (the silence alert, 3 heartbeat intervals of 60 s, stays far off)
    segment = list_segments(hot_dir / "app")[-1]
    backdate(segment, 61)  # older than the trailing delay: verified at the first cycle
    m = Monitor(_config(tmp_path, hot_dir, receiver, delay="60s"), serve_metrics=False)
    try:
        assert m.cycle() == []
        assert _sample(m, "worm_monitor_last_verified_seq", stream="app") == 49.0
        assert _sample(m, "worm_monitor_lag_records", stream="app") == 0.0
        assert _sample(m, "worm_monitor_lag_seconds", stream="app") == 0.0
        time.sleep(0.3)
        for i in range(50, 60):
            log.append({"i": i})
        log.sync()
        assert m.cycle() == []  # the new records are younger than the delay: not judged yet
        assert _sample(m, "worm_monitor_last_verified_seq", stream="app") == 49.0
        assert _sample(m, "worm_monitor_lag_records", stream="app") == 10.0
        lag_s = _sample(m, "worm_monitor_lag_seconds", stream="app")
        assert lag_s is not None and lag_s >= 0.3  # record 59 was written at least 0.3 s after 49
        backdate(segment, 61)
        assert m.cycle() == []
        assert _sample(m, "worm_monitor_last_verified_seq", stream="app") == 59.0
        assert _sample(m, "worm_monitor_lag_records", stream="app") == 0.0
        assert _sample(m, "worm_monitor_lag_seconds", stream="app") == 0.0
        last = _sample(m, "worm_monitor_last_cycle_timestamp_seconds")
        assert last is not None and last > time.time() - 60
    finally:
        m.close()
        log.close()
