"""monitor.toml validation, the verb's exit codes, and the metric names other tools match."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from pipeline.config import ConfigError
from pipeline.hot.segment import list_segments
from pipeline.hot.writer import HotLog
from pipeline.monitor.config import load_monitor_config
from pipeline.monitor.runner import Monitor
from tests.monitor.conftest import Receiver, write_toml

REPO = Path(__file__).resolve().parents[2]

# the names deploy/prometheus's rules and the dashboard use (issue 19): exactly these
METRICS = ["worm_monitor_lag_records", "worm_monitor_lag_seconds", "worm_monitor_last_verified_seq",
           "worm_monitor_findings_total", "worm_monitor_findings_active",
           "worm_monitor_last_witness_check_timestamp_seconds", "worm_monitor_last_cycle_timestamp_seconds",
           "worm_monitor_cycle_duration_seconds", "worm_monitor_alert_send_failures_total",
           "worm_monitor_build_info"]


def _base(tmp_path: Path, hot: Path, url: str) -> dict[str, dict[str, object]]:
    (tmp_path / "secret").write_text("k")
    return {"monitor": {"state_dir": str(tmp_path / "state"), "listen": "127.0.0.1:0", "interval": "1s",
                        "trailing_delay": "0s"},
            "hot": {"dir": str(hot)},
            "webhook": {"url": url, "secret_file": str(tmp_path / "secret")}}


def test_every_problem_is_reported_with_its_key(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path / "m.toml", {
        "monitor": {"interval": "soon", "trailing": "1s"},
        "hot": {"silence_factor": 0.5},
        "witness": {"locations": ["https://witness.example/"]},
        "email": {"host": "mail", "from": "a@b", "to": ["not-an-address"]},
    })
    with pytest.raises(ConfigError) as e:
        load_monitor_config(cfg)
    text = str(e.value)
    for expected in ("monitor.state_dir: required", "monitor.interval: expected a duration",
                     'monitor.trailing: unknown key (did you mean "trailing_delay"?)', "hot.silence_factor",
                     "witness.locations", "no read endpoint", "email.to",
                     "hot.dir: required"):
        assert expected in text, (expected, text)
    cfg = write_toml(tmp_path / "w.toml", {"monitor": {"state_dir": "s"}, "hot": {"dir": "/h"},
                                          "witness": {"locations": ["file:///w"]},
                                          "alertmanager": {"url": "http://am:9093"}})
    with pytest.raises(ConfigError, match=r"witness\.vkey: required"):
        load_monitor_config(cfg)


def test_once_exit_codes_and_metric_names(tmp_path: Path, hot_dir: Path, receiver: Receiver) -> None:
    log = HotLog(hot_dir, "app", segment_window=0, heartbeat_interval=0)
    for i in range(50):
        log.append({"i": i})
    log.close()
    cfg_path = write_toml(tmp_path / "m.toml", _base(tmp_path, hot_dir, receiver.url))
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def once() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pipeline", "monitor", "--config", str(cfg_path), "--once"],
                              capture_output=True, text=True, env=env, timeout=60)

    p = once()
    assert p.returncode == 0, p.stdout + p.stderr
    seg = list_segments(hot_dir / "app")[0]
    from pipeline.hot import attr

    attr.clear_protection(seg)
    data = bytearray(seg.read_bytes())
    data[data.index(b'"i":20') + 4] ^= 1
    seg.write_bytes(bytes(data))
    p = once()
    assert p.returncode == 1, p.stdout + p.stderr
    assert "hash-mismatch" in p.stdout and "seq=20" in p.stdout
    assert any(a["labels"]["code"] == "hash-mismatch" for a in receiver.alerts())
    bad = write_toml(tmp_path / "bad.toml", {"monitor": {}})
    p = subprocess.run([sys.executable, "-m", "pipeline", "monitor", "--config", str(bad), "--once"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and "monitor.state_dir: required" in p.stderr
    # the metrics endpoint, names exactly as documented, process_* included
    m = Monitor(load_monitor_config(cfg_path))
    try:
        m.cycle()
        host, port = m.metrics_address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        for name in METRICS:
            assert f"# TYPE {name} " in text, name
        assert "process_cpu_seconds_total" in text
        assert 'worm_monitor_findings_active{code="hash-mismatch"} 1.0' in text
        assert 'worm_monitor_last_verified_seq{stream="app"}' in text
    finally:
        m.close()


def test_second_monitor_on_the_same_state_is_refused(tmp_path: Path, hot_dir: Path, receiver: Receiver) -> None:
    from pipeline.monitor.state import StateError

    cfg = load_monitor_config(write_toml(tmp_path / "m.toml", _base(tmp_path, hot_dir, receiver.url)))
    m = Monitor(cfg, serve_metrics=False)
    try:
        with pytest.raises(StateError, match="in use by another monitor"):
            Monitor(cfg, serve_metrics=False)
    finally:
        m.close()


def test_docs_name_every_code_alert_and_key() -> None:
    """docs/MONITOR.md lists every monitor-only code, every alert name and every config key."""
    from pipeline.monitor.config import _SCHEMA
    from pipeline.monitor.findings import _ALERTNAMES, MONITOR_CODES

    doc = (REPO / "docs" / "MONITOR.md").read_text()
    for code in MONITOR_CODES:
        assert f"`{code}`" in doc, code
    for name in [*_ALERTNAMES, "WormMonitorWatchdog"]:
        assert f"`{name}`" in doc, name
    for section, keys in _SCHEMA.items():
        for key in keys:
            # `monitor.interval`, `.watchdog` after a section's first key, `[email] host`, `from`
            assert re.search(rf"(`{section}\.|`\.|\[{section}\] |`){key}`", doc), f"{section}.{key}"
    for name in METRICS:
        assert f"`{name}" in doc, name
