"""The monitor's own metrics (docs/MONITOR.md, "Metrics"), in a registry of its own, served
on ``monitor.listen`` at ``/metrics``.  The names are fixed: the alert rules in
deploy/prometheus match them."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

from pipeline import __version__

_CYCLE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class MonitorMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        self.lag_records = Gauge("worm_monitor_lag_records", "Records written but not yet verified, by stream.",
                                 ["stream"], registry=r)
        self.lag_seconds = Gauge("worm_monitor_lag_seconds", "Time between the newest record written and the "
                                 "newest verified (record timestamps), by stream.", ["stream"], registry=r)
        self.last_verified_seq = Gauge("worm_monitor_last_verified_seq", "Seq of the newest verified record.",
                                       ["stream"], registry=r)
        self.findings_total = Counter("worm_monitor_findings_total", "Conditions found (each counted once, when it "
                                      "first appears), by finding code.", ["code"], registry=r)
        self.findings_active = Gauge("worm_monitor_findings_active", "Conditions currently found, by code.", ["code"],
                                     registry=r)
        self.last_witness_check = Gauge("worm_monitor_last_witness_check_timestamp_seconds",
                                        "When every witness of the stream was last read and compared.", ["stream"],
                                        registry=r)
        self.last_cycle = Gauge("worm_monitor_last_cycle_timestamp_seconds", "When the last cycle completed.",
                                registry=r)
        self.cycle_seconds = Histogram("worm_monitor_cycle_duration_seconds", "Duration of one monitor cycle.",
                                       buckets=_CYCLE_BUCKETS, registry=r)
        self.send_failures = Counter("worm_monitor_alert_send_failures_total", "Alert deliveries that failed "
                                     "(retried at the next cycle), by channel.", ["channel"], registry=r)
        self.build_info = Gauge("worm_monitor_build_info", "The monitor's version (always 1).", ["version"],
                                registry=r)
        self.build_info.labels(version=__version__).set(1)
        self._codes: set[str] = set()

    def set_active(self, counts: dict[str, int]) -> None:
        for code in self._codes - set(counts):
            self.findings_active.labels(code=code).set(0)
        for code, n in counts.items():
            self.findings_active.labels(code=code).set(n)
        self._codes |= set(counts)

    def serve(self, host: str, port: int) -> tuple[Any, Any]:
        from prometheus_client import start_http_server

        return start_http_server(port, addr=host, registry=self.registry)
