"""Ops endpoints over real HTTP (/metrics, /healthz, /readyz), metrics fed by a real
IngestServer, and the pipeline's own log setup."""

from __future__ import annotations

import http.client
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from pipeline.hot.writer import HotLog
from pipeline.ingest import AuditLogHandler, IngestServer
from pipeline.logsetup import setup_logging
from pipeline.ops import SEGMENT_STATES, Metrics, OpsServer


def get(addr: tuple[str, int], path: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class Probe:
    def __init__(self) -> None:
        self.ok, self.reason = True, ""

    def __call__(self) -> tuple[bool, str]:
        return self.ok, self.reason


@pytest.fixture
def ops() -> Iterator[tuple[OpsServer, Metrics, Probe, Probe]]:
    metrics = Metrics()
    health, ready = Probe(), Probe()
    with OpsServer("127.0.0.1:0", metrics, health, ready) as srv:
        yield srv, metrics, health, ready


def test_metrics_exposition(ops: tuple[OpsServer, Metrics, Probe, Probe]) -> None:
    srv, m, _, _ = ops
    st, h, body = get(srv.address, "/metrics")
    assert st == 200 and h["content-type"].startswith("text/plain; version=0.0.4")
    s = samples(body.decode())
    for state in SEGMENT_STATES:  # present (as 0) before the shipper reports anything
        assert s[("worm_segments", (("state", state),))] == 0
    assert s[("worm_events_appended_total", ())] == 0
    assert s[("worm_backpressure_active", ())] == 0

    m.observe_appended(10, 1234)
    m.observe_rejected("bad-json", 2)
    m.observe_request("http", "200")
    m.set_segments({"sealed": 3, "confirmed": 7, "quarantined": 1})
    m.observe_upload(0.3)
    m.observe_upload(12.0)
    m.observe_verify(0.2)
    m.observe_verify(0.4, ok=False)
    m.observe_upload_retry()
    m.set_cold_lag(42.5)
    m.set_hot_disk_used(0.87)
    m.set_backpressure(True)
    s = samples(get(srv.address, "/metrics")[2].decode())
    assert s[("worm_events_appended_total", ())] == 10
    assert s[("worm_bytes_appended_total", ())] == 1234
    assert s[("worm_events_rejected_total", (("reason", "bad-json"),))] == 2
    assert s[("worm_ingest_requests_total", (("code", "200"), ("transport", "http")))] == 1
    assert s[("worm_segments", (("state", "sealed"),))] == 3
    assert s[("worm_segments", (("state", "confirmed"),))] == 7
    assert s[("worm_segments", (("state", "quarantined"),))] == 1
    assert s[("worm_segments", (("state", "uploading"),))] == 0
    assert s[("worm_upload_seconds_count", ())] == 2 and s[("worm_upload_seconds_sum", ())] == 12.3
    assert s[("worm_upload_seconds_bucket", (("le", "0.5"),))] == 1
    assert s[("worm_verify_seconds_count", ())] == 2
    assert s[("worm_verification_failures_total", ())] == 1
    assert s[("worm_upload_retries_total", ())] == 1
    assert s[("worm_cold_lag_seconds", ())] == 42.5
    assert s[("worm_hot_disk_used_ratio", ())] == 0.87
    assert s[("worm_backpressure_active", ())] == 1
    # a dedicated registry: nothing leaks into the process-wide default one
    assert REGISTRY.get_sample_value("worm_events_appended_total") is None
    with pytest.raises(ValueError, match="bogus"):
        m.set_segments({"bogus": 1})


def test_scrape_time_gauges_and_openmetrics(ops: tuple[OpsServer, Metrics, Probe, Probe]) -> None:
    srv, m, _, _ = ops
    lag = [5.0]
    m.track(m.cold_lag_seconds, lambda: lag[0])
    assert samples(get(srv.address, "/metrics")[2].decode())[("worm_cold_lag_seconds", ())] == 5.0
    lag[0] = 90.0
    st, h, body = get(srv.address, "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert st == 200 and h["content-type"].startswith("application/openmetrics-text")
    assert b"worm_cold_lag_seconds 90.0" in body and body.rstrip().endswith(b"# EOF")


def test_watch_backpressure_sets_gauge() -> None:
    m = Metrics()
    reason: list[str | None] = [None]
    fn = m.watch_backpressure(lambda: reason[0])
    assert fn() is None and m.registry.get_sample_value("worm_backpressure_active") == 0
    reason[0] = "hot disk above high-water mark"
    assert fn() == "hot disk above high-water mark"
    assert m.registry.get_sample_value("worm_backpressure_active") == 1


def test_two_metrics_objects_do_not_collide() -> None:
    a, b = Metrics(), Metrics()
    a.observe_appended(1, 1)
    assert b.registry.get_sample_value("worm_events_appended_total") == 0
    assert a.registry.get_sample_value("worm_events_appended_total") == 1


def test_health_and_ready(ops: tuple[OpsServer, Metrics, Probe, Probe]) -> None:
    srv, _, health, ready = ops
    assert get(srv.address, "/healthz")[::2] == (200, b"ok\n")
    assert get(srv.address, "/readyz")[::2] == (200, b"ok\n")
    ready.ok, ready.reason = False, "hot disk above high-water mark (91% used)"
    st, h, body = get(srv.address, "/readyz")
    assert st == 503 and body == b"hot disk above high-water mark (91% used)\n"
    assert h["content-type"].startswith("text/plain")
    assert get(srv.address, "/healthz")[0] == 200  # alive though not ready
    health.ok, health.reason = False, "hot log failed: No space left on device"
    assert get(srv.address, "/healthz")[::2] == (503, b"hot log failed: No space left on device\n")
    st, _, body = get(srv.address, "/healthz", method="HEAD")
    assert st == 503 and body == b""


def test_raising_check_is_a_failing_check() -> None:
    def boom() -> tuple[bool, str]:
        raise RuntimeError("ledger locked")

    with OpsServer(("127.0.0.1", 0), Metrics(), boom, boom) as srv:
        st, _, body = get(srv.address, "/readyz")
        assert st == 503 and b"RuntimeError: ledger locked" in body
        assert get(srv.address, "/metrics")[0] == 200  # still serving


def test_unknown_paths_and_methods(ops: tuple[OpsServer, Metrics, Probe, Probe]) -> None:
    srv = ops[0]
    assert get(srv.address, "/")[0] == 404
    assert get(srv.address, "/metrics/x")[0] == 404
    st, h, _ = get(srv.address, "/metrics", method="POST")
    assert st == 405 and h["allow"] == "GET, HEAD"


def test_stop_releases_port() -> None:
    srv = OpsServer("127.0.0.1:0", Metrics(), Probe(), Probe()).start()
    addr = srv.address
    srv.stop()
    with pytest.raises(OSError):
        get(addr, "/healthz")


def test_ingest_feeds_metrics(hot_dir: Path, tmp_path: Path) -> None:
    metrics = Metrics()
    log = HotLog(hot_dir, "app", durability="group", heartbeat_interval=0, segment_window=0)
    try:
        with IngestServer(log, http_listen="127.0.0.1:0", socket_path=tmp_path / "s.sock",
                          metrics=metrics) as ing, OpsServer("127.0.0.1:0", metrics, Probe(), Probe()) as ops:
            addr = ing.http_address
            assert addr is not None
            conn = http.client.HTTPConnection(*addr, timeout=10)
            conn.request("POST", "/v1/events", body=b'{"a":1}\n{"b":2}\n{nope\n')
            resp = conn.getresponse()
            assert resp.status == 422  # a request with a refused event stores nothing
            resp.read()
            conn.request("POST", "/v1/events", body=b'{"a":1}\n{"b":2}\n')
            assert conn.getresponse().status == 200
            conn.close()
            handler = AuditLogHandler(socket_path=tmp_path / "s.sock")
            rec = logging.LogRecord("app", logging.INFO, __file__, 1, "hello", None, None)
            handler.handle(rec)
            handler.close()
            s = samples(get(ops.address, "/metrics")[2].decode())
    finally:
        log.close()
    assert s[("worm_events_appended_total", ())] == 3
    assert s[("worm_bytes_appended_total", ())] > 0
    assert s[("worm_events_rejected_total", (("reason", "bad-json"),))] == 1
    assert s[("worm_ingest_requests_total", (("code", "200"), ("transport", "http")))] == 1
    assert s[("worm_ingest_requests_total", (("code", "422"), ("transport", "http")))] == 1
    assert s[("worm_ingest_requests_total", (("code", "ok"), ("transport", "unix")))] == 1


# ------------------------------------------------------------------ own logs


@pytest.fixture(autouse=True)
def _restore_pipeline_logger() -> Iterator[None]:
    # setup_logging changes the process-wide "pipeline" logger; other tests (caplog) need it back
    lg = logging.getLogger("pipeline")
    saved = (list(lg.handlers), lg.level, lg.propagate)
    yield
    lg.handlers[:], lg.level, lg.propagate = saved


def test_json_logs_on_stream_not_propagated() -> None:
    buf = io.StringIO()
    root_records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            root_records.append(record)

    root_handler = Collect()
    logging.getLogger().addHandler(root_handler)  # e.g. an application's AuditLogHandler
    try:
        setup_logging("json", stream=buf)
        setup_logging("json", stream=buf)  # idempotent: one handler, not two
        lg = logging.getLogger("pipeline.ship")
        lg.warning("upload failed for %s", "seg-1", extra={"segment": "seg-1", "attempt": 3, "path": Path("/x")})
        try:
            1 / 0
        except ZeroDivisionError:
            lg.exception("crash")
        lg.debug("hidden at INFO")
    finally:
        logging.getLogger().removeHandler(root_handler)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    first: dict[str, Any] = json.loads(lines[0])
    assert first["level"] == "WARNING" and first["logger"] == "pipeline.ship"
    assert first["msg"] == "upload failed for seg-1"
    assert (first["segment"], first["attempt"], first["path"]) == ("seg-1", 3, "/x")
    assert first["ts"].endswith("Z")
    assert "ZeroDivisionError" in json.loads(lines[1])["exc"]
    assert root_records == []  # kept apart from whatever the application logs to


def test_text_logs() -> None:
    buf = io.StringIO()
    setup_logging("text", level="DEBUG", stream=buf)
    logging.getLogger("pipeline.ingest").info("backpressure on", extra={"reason": "hot disk full", "n": 2})
    line = buf.getvalue().strip()
    assert " INFO    pipeline.ingest: backpressure on " in line
    assert 'reason="hot disk full"' in line and "n=2" in line
    with pytest.raises(ValueError):
        setup_logging("xml")
