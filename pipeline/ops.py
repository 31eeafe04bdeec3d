"""Operations endpoints: Prometheus ``/metrics``, ``/healthz`` and ``/readyz``.

``Metrics`` owns a dedicated ``CollectorRegistry``: the global default registry would mix
in whatever the embedding application registers, and two pipelines in one process (tests,
``pipeline quickstart``) would collide on metric names.

Probes.  ``/healthz`` answers "is this process working at all" (liveness: a failing answer
gets the container restarted), ``/readyz`` answers "should traffic be sent here now"
(readiness: while draining, under backpressure, while cold storage refuses uploads or the
shipper's ledger cannot be written, the sidecar is alive but not ready; cold storage that is
only unreachable does not make it unready, since the hot tier is the buffer for outages).
Both are callables supplied by the process that wires things up; they return
``(ok, reason)`` and the reason is the 503 body, so that ``kubectl describe`` shows why.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import choose_encoder

__all__ = ["SEGMENT_STATES", "Metrics", "OpsServer"]

log = logging.getLogger("pipeline.ops")

SEGMENT_STATES = ("sealed", "uploading", "uploaded", "verified", "confirmed", "evicted", "quarantined")
# Uploads of segments up to 64 MiB over a WAN: tens of milliseconds to minutes.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# Acknowledgements wait for a group commit (an fsync): sub-millisecond to a slow disk's seconds.
_ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Check = Callable[[], tuple[bool, str]]


class Metrics:
    """Every metric of the pipeline, in one registry.  Thread-safe (prometheus_client's
    metrics are).  Implements ``pipeline.ingest.server.IngestMetrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_appended = Counter("worm_events_appended_total", "Events appended to the hot tier.",
                                       registry=r)
        self.bytes_appended = Counter("worm_bytes_appended_total",
                                      "Bytes of event JSON appended to the hot tier.", registry=r)
        self.events_rejected = Counter("worm_events_rejected_total", "Events refused, by reason.",
                                       ["reason"], registry=r)
        self.segments = Gauge("worm_segments", "Segments known to the shipper, by state.", ["state"], registry=r)
        self.upload_seconds = Histogram("worm_upload_seconds", "Time to upload one segment to the cold tier.",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.verify_seconds = Histogram("worm_verify_seconds", "Time to verify one uploaded segment.",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.upload_retries = Counter("worm_upload_retries_total", "Segment uploads retried after a failure.",
                                      registry=r)
        self.cold_lag_seconds = Gauge("worm_cold_lag_seconds",
                                      "Age of the oldest sealed segment not yet confirmed in the cold tier "
                                      "(0 when none).", registry=r)
        self.verification_failures = Counter("worm_verification_failures_total",
                                             "Uploaded segments whose cold copy did not verify.", registry=r)
        self.hot_disk_used_ratio = Gauge("worm_hot_disk_used_ratio",
                                         "Fraction of the hot tier's file system in use (0..1).", registry=r)
        self.ingest_requests = Counter("worm_ingest_requests_total",
                                       "Ingest requests (HTTP, OTLP) and batches (Unix socket, syslog, RELP), "
                                       "by transport and result.",
                                       ["transport", "code"], registry=r)
        self.ingest_ack_seconds = Histogram(
            "worm_ingest_ack_seconds",
            "Time from reading an ingest request (HTTP body, Unix-socket batch, syslog/RELP "
            "batch) to its durable acknowledgement, by transport: the durability latency senders see.",
            ["transport"], buckets=_ACK_BUCKETS, registry=r)
        self.tls_handshake_failures = Counter(
            "worm_ingest_tls_handshake_failures_total",
            "TLS handshakes the sidecar refused or that did not complete, by listener (http, syslog, relp) "
            "and reason (unknown_ca, expired, no_certificate, ...; docs/INGEST.md section 6.4).",
            ["listener", "reason"], registry=r)
        self.backpressure_active = Gauge("worm_backpressure_active",
                                         "1 while ingest is held back (hot disk above high water), else 0.",
                                         registry=r)
        # What operators alert on beyond the pipeline's own counters: the process (CPU, memory,
        # open files, start time: process_*), which build runs, and when the background work
        # last succeeded -- a stalled seal, checkpoint or witness loop shows as an age that grows.
        ProcessCollector(registry=r)
        from pipeline import __version__

        self.build_info = Gauge("worm_build_info", "Always 1; the running worm-pipeline version in a label.",
                                ["version"], registry=r)
        self.build_info.labels(version=__version__).set(1)
        # Labelled, and created only for what is configured, so that a sidecar without
        # signing has no checkpoint series for an "is it stalled" alert to fire on.
        self.last_seal = Gauge("worm_last_seal_timestamp_seconds",
                               "Unix time of the stream's newest segment seal (the process start until the first).",
                               ["stream"], registry=r)
        self.last_checkpoint = Gauge("worm_last_checkpoint_timestamp_seconds",
                                     "Unix time the origin's newest signed checkpoint was saved "
                                     "(the process start until the first).", ["origin"], registry=r)
        self.last_witness_publish = Gauge("worm_last_witness_publish_timestamp_seconds",
                                          "Unix time a witness last accepted a checkpoint (the process start "
                                          "until the first), by witness.",
                                          ["witness"], registry=r)
        self.witness_failures = Counter("worm_witness_publish_failures_total",
                                        "Checkpoints a witness refused or could not be sent, by witness.",
                                        ["witness"], registry=r)
        # present from the first scrape, so that dashboards and alerts see 0, not "no data"
        for state in SEGMENT_STATES:
            self.segments.labels(state=state)

    # -- ingest (IngestMetrics) ---------------------------------------------------------

    def observe_appended(self, events: int, nbytes: int) -> None:
        self.events_appended.inc(events)
        self.bytes_appended.inc(nbytes)

    def observe_rejected(self, reason: str, count: int = 1) -> None:
        self.events_rejected.labels(reason=reason).inc(count)

    def observe_request(self, transport: str, code: str) -> None:
        self.ingest_requests.labels(transport=transport, code=code).inc()

    def observe_ack(self, transport: str, seconds: float) -> None:
        self.ingest_ack_seconds.labels(transport=transport).observe(seconds)

    def observe_tls_handshake_failure(self, listener: str, reason: str) -> None:
        self.tls_handshake_failures.labels(listener=listener, reason=reason).inc()

    def declare_tls_listeners(self, listeners: list[str]) -> None:
        """Create the refusal series of each TLS listener at 0, so that the first refusal is
        an increase a rate() sees (a series born at 1 is not)."""
        from pipeline.ingest.handshake import REASONS

        for listener in listeners:
            for reason in REASONS:
                self.tls_handshake_failures.labels(listener=listener, reason=reason)

    # -- writer and checkpoints ---------------------------------------------------------

    # The "last success" gauges start at the process start rather than 0, so that an alert on
    # their age measures "no success since X" and does not fire at once on a fresh process.

    def declare_stream(self, stream: str) -> None:
        self.last_seal.labels(stream=stream).set_to_current_time()

    def observe_seal(self, info: Any) -> None:
        """A seal listener (``HotLog.add_seal_listener``): stamps the stream's last seal time."""
        self.last_seal.labels(stream=info.stream).set_to_current_time()

    def checkpoint_observer(self, origin: str) -> Callable[[int], None]:
        """The ``on_checkpoint`` callback of an origin's ``CheckpointEmitter``."""
        gauge = self.last_checkpoint.labels(origin=origin)
        gauge.set_to_current_time()
        return lambda _size: gauge.set_to_current_time()

    def observe_witness(self, witness: str, ok: bool) -> None:
        if ok:
            self.last_witness_publish.labels(witness=witness).set_to_current_time()
        else:
            self.witness_failures.labels(witness=witness).inc()

    def declare_witnesses(self, names: list[str]) -> None:
        """Create every configured witness's series at start, so that an alert on the age of
        the last publish also fires for a witness that never accepts one."""
        for name in names:
            self.last_witness_publish.labels(witness=name).set_to_current_time()
            self.witness_failures.labels(witness=name)

    # -- shipper ------------------------------------------------------------------------

    def set_segments(self, counts: Mapping[str, int]) -> None:
        """Set every state's count (states missing from ``counts`` are 0)."""
        unknown = set(counts) - set(SEGMENT_STATES)
        if unknown:
            raise ValueError(f"unknown segment state(s): {', '.join(sorted(unknown))}")
        for state in SEGMENT_STATES:
            self.segments.labels(state=state).set(counts.get(state, 0))

    def observe_upload(self, seconds: float) -> None:
        self.upload_seconds.observe(seconds)

    def observe_verify(self, seconds: float, *, ok: bool = True) -> None:
        self.verify_seconds.observe(seconds)
        if not ok:
            self.verification_failures.inc()

    def observe_upload_retry(self) -> None:
        self.upload_retries.inc()

    def set_cold_lag(self, seconds: float) -> None:
        self.cold_lag_seconds.set(max(0.0, seconds))

    def set_hot_disk_used(self, ratio: float) -> None:
        self.hot_disk_used_ratio.set(ratio)

    def set_backpressure(self, active: bool) -> None:
        self.backpressure_active.set(1 if active else 0)

    def watch_backpressure(self, source: Callable[[], str | None]) -> Callable[[], str | None]:
        """Wrap a backpressure source (as given to ``IngestServer``) so that every answer
        also sets ``worm_backpressure_active``."""

        def wrapped() -> str | None:
            reason = source()
            self.backpressure_active.set(0 if reason is None else 1)
            return reason

        return wrapped

    def track(self, gauge: Gauge, fn: Callable[[], float]) -> None:
        """Compute ``gauge`` at scrape time (e.g. cold lag from the ledger, disk use from
        statvfs) instead of pushing values: the scrape then never shows a stale value."""
        gauge.set_function(fn)

    def track_redactions(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Export ``worm_redactions_total{rule}`` from ``source`` (the log's
        ``Sanitiser.counts.snapshot``) at scrape time: every rule is present from the first
        scrape (0 until it fires), custom rules once they have fired."""
        from pipeline.sanitise import BUILTIN_RULES

        class _Redactions:
            def collect(self) -> Any:
                family = CounterMetricFamily("worm_redactions", "Values and keys redacted, by the rule that fired.",
                                             labels=["rule"])
                counts = dict.fromkeys(BUILTIN_RULES, 0)
                counts.update(source())
                for rule, n in sorted(counts.items()):
                    family.add_metric([rule], n)
                yield family

        self.registry.register(_Redactions())

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for an ``Accept`` header: (body, content type)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], ops: OpsServer) -> None:
        self.ops = ops
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "worm-pipeline-ops"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("ops http: " + format, *args)  # probes every few seconds: not INFO noise

    def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
               headers: Mapping[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _probe(self, check: Check, name: str) -> None:
        try:
            ok, reason = check()
        except Exception as exc:  # a crashing check is a failing check, not a 500 with a traceback
            log.warning("ops: %s check raised", name, exc_info=True)
            ok, reason = False, f"{name} check failed: {type(exc).__name__}: {exc}"
        if ok:
            self._reply(200, b"ok\n")
        else:
            self._reply(503, (reason or "not ok").encode("utf-8", "replace") + b"\n")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        ops = self.server.ops
        if path == "/metrics":
            try:
                body, ctype = ops.metrics.render(self.headers.get("Accept", ""))
            except Exception as exc:  # a failing set_function callback must not kill the scrape thread
                log.warning("ops: rendering metrics failed", exc_info=True)
                self._reply(500, f"metrics failed: {exc}\n".encode())
                return
            self._reply(200, body, ctype)
        elif path == "/healthz":
            self._probe(ops.health, "health")
        elif path == "/readyz":
            self._probe(ops.ready, "readiness")
        else:
            self._reply(404, b"not found: try /metrics, /healthz, /readyz\n")

    do_HEAD = do_GET

    def _not_allowed(self) -> None:
        self._reply(405, b"method not allowed\n", headers={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed


class OpsServer:
    """HTTP server for ``/metrics``, ``/healthz`` and ``/readyz`` on ``listen``
    ("host:port" or a tuple; port 0 picks a free port, see ``address``)."""

    def __init__(self, listen: str | tuple[str, int], metrics: Metrics, health: Check, ready: Check) -> None:
        if isinstance(listen, str):
            from pipeline.config import parse_listen

            listen = parse_listen(listen)
        self.metrics = metrics
        self.health = health
        self.ready = ready
        self._listen = listen
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> OpsServer:
        if self._server is not None:
            raise RuntimeError("OpsServer already started")
        self._server = _Server(self._listen, self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="ops-http", daemon=True)
        self._thread.start()
        host, port = self.address
        log.info("ops endpoints listening", extra={"address": f"{host}:{port}"})
        return self

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("OpsServer not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(5)

    def __enter__(self) -> OpsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
