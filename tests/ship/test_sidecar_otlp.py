"""`pipeline run` as a real process takes OTLP/HTTP logs from the real OpenTelemetry SDK
(issue 17 §1): every record acknowledged is in cold storage once, verified, and the
requests are counted under ``transport="otlp"``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.ship.test_sidecar import Sidecar, cold_events


def test_sdk_logs_through_the_sidecar_to_cold_storage(tmp_path: Path, s3_endpoint: str,
                                                      locked_bucket: str) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    sc = Sidecar(tmp_path, s3_endpoint, locked_bucket)
    sc.start()
    try:
        provider = LoggerProvider(resource=Resource.create({"service.name": "ledger"}), shutdown_on_exit=False)
        exporter = OTLPLogExporter(endpoint=f"http://127.0.0.1:{sc.http_port}/v1/logs", timeout=30,
                                   compression=Compression.Gzip)
        provider.add_log_record_processor(BatchLogRecordProcessor(exporter, schedule_delay_millis=50,
                                                                  max_export_batch_size=100))
        logger = provider.get_logger("ledger.audit", "1.0.0")
        n = 300
        for i in range(n):
            logger.emit(body=f"entry {i}", attributes={"i": i, "api_token": "tok-secret"})
        assert provider.force_flush(30_000)
        provider.shutdown()
        status, metrics = sc.get("/metrics")
        assert status == 200
        assert 'worm_ingest_requests_total{code="200",transport="otlp"}' in metrics
    finally:
        assert sc.stop() == 0
    events, report = cold_events(s3_endpoint, locked_bucket, tmp_path / "cold" / "app")
    assert report.ok, report
    counts = Counter(e["data"]["attributes"]["i"] for e in events if "attributes" in e["data"])
    assert counts == Counter(range(n)), "every record in cold storage exactly once"
    first = next(e["data"] for e in events if e["data"].get("body") == "entry 0")
    assert first["attributes"]["api_token"] == "[REDACTED:secret-key]"
    assert first["resource"]["attributes"]["service.name"] == "ledger"
    assert first["scope"] == {"name": "ledger.audit", "version": "1.0.0"}
