"""The sidecar process: writer, ingest, shipper, checkpoints and ops endpoints together.

``pipeline run --config FILE`` builds a ``Sidecar`` from the validated configuration and
runs it until SIGTERM (drain: stop accepting, seal, ship within the grace period, exit 0)
or SIGINT.  SIGHUP reloads the configuration: settings that can change live are applied
(hot retention, high-water mark, upload concurrency, log format); the others need a
restart and are reported as such.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline.cold import open_store
from pipeline.cold.base import ColdStore
from pipeline.config import Config, load_config
from pipeline.hot.factory import open_configured_hotlog
from pipeline.hot.writer import HotLog, HotLogError
from pipeline.ops import Metrics, OpsServer
from pipeline.ship.ledger import Entry
from pipeline.ship.shipper import Listener, Shipper

log = logging.getLogger("pipeline.sidecar")

LIVE_KEYS = {"hot.hot_retention", "hot.high_water_percent", "cold.upload_concurrency", "ops.log_format",
             "ops.shutdown_grace", "signing.checkpoint_interval", "sanitise.enabled", "sanitise.marker",
             "sanitise.extra_keys", "sanitise.key_patterns", "sanitise.value_patterns", "sanitise.keep",
             "sanitise.disable", "encryption.recipients", "encryption.clear_fields"}


class Sidecar:
    def __init__(self, config: Config, *, store: ColdStore | None = None, ship_interval: float = 1.0) -> None:
        config.require("cold.url")
        self.config = config
        self.ship_interval = ship_interval
        self.metrics = Metrics()
        self._store = store
        self._stop_shipping = threading.Event()
        self._stopped = threading.Event()
        self._draining = False
        self._started = False
        self.hotlog: HotLog | None = None
        self.shipper: Shipper | None = None
        self.ingest: Any = None
        self.ops: OpsServer | None = None
        self.emitter: Any = None
        self.pg_source: Any = None  # [source.postgres]: pipeline.pg.source.PostgresSource
        self._ship_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Sidecar:
        try:
            return self._start()
        except BaseException:
            # leave nothing half-started: no bound sockets, the stream unlocked and clean
            ingest, ops, emitter, hotlog = self.ingest, self.ops, self.emitter, self.hotlog
            steps: list[Callable[[], object]] = []
            if self.pg_source is not None:
                steps.append(self.pg_source.stop)
            if ingest is not None:
                steps.append(lambda: ingest.stop(grace=0.5))
            if ops is not None:
                steps.append(ops.stop)
            if emitter is not None:
                steps.append(lambda: emitter.stop(final=False))
            if hotlog is not None:
                steps.append(lambda: hotlog.close(seal=False))
            for step in steps:
                try:
                    step()
                except Exception:
                    log.exception("cleanup after a failed start")
            raise

    def _start(self) -> Sidecar:
        cfg = self.config
        self.hotlog = open_configured_hotlog(cfg)  # with its [sanitise] rules, used on every path
        self.metrics.track_redactions(self.hotlog.sanitiser.counts.snapshot)
        self.metrics.declare_stream(self.hotlog.stream)
        self.hotlog.add_seal_listener(self.metrics.observe_seal)
        store = self._store or open_store(str(cfg.cold.url), cfg.cold.settings())
        self._store = store
        m = self.metrics
        listener = Listener(
            on_state=lambda entry, state: None,
            on_upload=lambda seconds, nbytes: m.observe_upload(seconds),
            on_failure=self._on_failure,
        )
        from pipeline.format.checkpoint import configured_signer

        # [signing] key_file, or PIPELINE_SIGNING_KEY (a Kubernetes secretKeyRef): docs/PROOFS.md.
        # It signs the checkpoints and the manifest index's parts (docs/INDEX.md "Signature").
        signer = configured_signer(cfg.signing.key_file)
        self.shipper = Shipper(cfg.hot.dir, store, hot_retention=cfg.hot.hot_retention,
                               concurrency=cfg.cold.upload_concurrency,
                               high_water_percent=cfg.hot.high_water_percent, streams=[cfg.hot.stream],
                               listener=listener, index_signer=signer,
                               index_origin=cfg.signing.origin or cfg.hot.stream)
        shipper = self.shipper
        m.track(m.cold_lag_seconds, shipper.cold_lag)
        m.track(m.hot_disk_used_ratio, shipper.disk_used_ratio)
        if signer is not None:
            from pipeline.hot.checkpoints import CheckpointEmitter

            witnesses = open_witnesses(cfg.signing.witnesses)
            m.declare_witnesses([w.name for w in witnesses])
            self.emitter = CheckpointEmitter(self.hotlog, Path(cfg.hot.dir) / cfg.hot.stream, signer,
                                             tree_store=self.hotlog.tree_store,  # type: ignore[arg-type]
                                             origin=cfg.signing.origin, witnesses=witnesses,
                                             interval=cfg.signing.checkpoint_interval,
                                             on_witness=m.observe_witness)
            self.emitter.on_checkpoint = m.checkpoint_observer(self.emitter.origin)
            self.emitter.start()
        if any(x is not None for x in (cfg.ingest.socket, cfg.ingest.http, cfg.ingest.syslog, cfg.ingest.relp)):
            from pipeline.ingest.server import IngestServer

            self.ingest = IngestServer.from_config(self.hotlog, cfg.ingest, backpressure=self.backpressure,
                                                   metrics=m).start()
            if self.ingest.tls is not None:
                m.declare_tls_listeners([k for k, v in (("http", cfg.ingest.http), ("syslog", cfg.ingest.syslog),
                                                        ("relp", cfg.ingest.relp)) if v is not None])
        if cfg.postgres.dsn is not None:
            from pipeline.pg.source import PostgresSource

            # an input like ingest: its events go through the log's sanitiser into the chain
            self.pg_source = PostgresSource(cfg.postgres.settings(), self.hotlog, registry=m.registry).start()
        self.ops = OpsServer(cfg.ops.listen, m, health=self.health, ready=self.ready).start()
        self._ship_thread = threading.Thread(target=self._ship_loop, name="shipper", daemon=True)
        self._ship_thread.start()
        self._started = True
        log.info("sidecar started", extra={"stream": cfg.hot.stream, "hot": str(cfg.hot.dir),
                                           "durability": cfg.hot.durability})
        return self

    def _on_failure(self, entry: Entry, reason: str) -> None:
        if reason == "quarantined":
            self.metrics.observe_verify(0.0, ok=False)
        else:
            self.metrics.observe_upload_retry()

    def _ship_loop(self) -> None:
        shipper = self.shipper
        assert shipper is not None
        shipper.run_forever(self._stop_shipping, self.ship_interval,
                            after_pass=lambda summary: self.metrics.set_segments(shipper.ledger.counts()))

    def backpressure(self) -> str | None:
        reason = self.shipper.backpressure() if self.shipper else None
        self.metrics.set_backpressure(reason is not None)
        return reason

    def health(self) -> tuple[bool, str]:
        if self.hotlog is None:
            return False, "writer not started"
        if self._ship_thread is not None and not self._ship_thread.is_alive() and not self._draining:
            return False, "shipper thread stopped"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if not self._started:
            return False, "starting"
        if self._draining:
            return False, "draining: not accepting events"
        problem = self.shipper.problem() if self.shipper else None
        if problem:
            return False, problem
        problem = self.pg_source.problem() if self.pg_source is not None else None
        if problem:  # a dropped slot, disabled triggers...: rows may not reach the chain
            return False, problem
        reason = self.backpressure()
        if reason:
            outage = self.shipper.conditions.get("unavailable") if self.shipper else None
            # shipping is what frees the disk: say when it is waiting for cold storage
            return False, reason + (f"; {outage}" if outage else "")
        return True, "ok"

    def drain(self, grace: float | None = None) -> bool:
        """Stop accepting, seal the active segment, ship what can be shipped within the
        grace period.  Returns True when nothing was left pending."""
        grace = self.config.ops.shutdown_grace if grace is None else grace
        deadline = time.monotonic() + grace
        self._draining = True
        log.info("draining", extra={"grace_seconds": grace})
        if self.shipper is not None:
            # from now on every retry budget, backoff and socket timeout of cold-storage work,
            # including uploads already in flight, ends with the grace period
            self.shipper.deadline.set(deadline)
        if self.ingest is not None:
            self.ingest.stop(grace=min(5.0, grace / 4))
        if self.pg_source is not None:
            self.pg_source.stop(timeout=min(10.0, grace / 4))  # what it wrote is durable; the slot resumes
        if self.hotlog is not None:
            try:
                self.hotlog.seal()
            except (OSError, HotLogError) as exc:  # e.g. the disk is full: the next start explains it
                log.error("could not seal the active segment during drain: %s", exc)
            except Exception:
                log.exception("could not seal the active segment during drain")
        self._stop_shipping.set()
        if self._ship_thread is not None:
            self._ship_thread.join(timeout=max(0.0, deadline - time.monotonic()))
        pending = 1
        if self._ship_thread is not None and self._ship_thread.is_alive():
            # the loop never waits for an upload, so this is a pass stuck elsewhere (the
            # ledger, discovery): a second pass would race it; the next start resumes
            log.warning("grace period used up by a shipper pass in progress")
        elif self.shipper is not None:
            try:
                while time.monotonic() < deadline:
                    # waits for uploads in flight too, but never past the deadline: those still
                    # running then are daemon threads, and the next start resumes their segments
                    summary = self.shipper.run_once(deadline=deadline)
                    pending = summary.pending
                    if pending == 0:
                        break
                    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                self.metrics.set_segments(self.shipper.ledger.counts())
            except Exception:
                log.exception("shipping during the drain failed; the next start resumes")
            if self.shipper.in_flight():
                log.warning("grace period over with %d upload(s) in flight; the next start resumes them",
                            self.shipper.in_flight())
            else:
                self.shipper.close()
        emitter = self.emitter
        if emitter is not None:
            # the final checkpoint is signed and saved locally at once, but publishing it to
            # witnesses is network work: it too must end with the grace period
            _run_until("final checkpoint", lambda: emitter.stop(final=True), deadline)
        if self.hotlog is not None:
            self.hotlog.close(seal=False)
        if self.ops is not None:
            self.ops.stop()
        if self._store is not None:
            self._store.close()
        self._stopped.set()
        log.info("drained", extra={"pending_segments": pending})
        return pending == 0

    def reload(self, new: Config) -> list[str]:
        """Apply what can change live; return the keys that need a restart."""
        old = self.config
        before = _flatten(old)
        changed = [k for k, v in _flatten(new).items() if before.get(k) != v]
        needs_restart = [k for k in changed if k not in LIVE_KEYS]
        if self.shipper is not None:
            self.shipper.hot_retention = new.hot.hot_retention
            self.shipper.high_water_percent = float(new.hot.high_water_percent)
            self.shipper.concurrency = new.cold.upload_concurrency
        if self.emitter is not None:
            self.emitter.interval = new.signing.checkpoint_interval
        if self.hotlog is not None and new.sanitise != old.sanitise:
            self.hotlog.sanitiser.reconfigure(new.sanitise.rules(), redact=new.sanitise.enabled)
        if self.hotlog is not None and new.encryption != old.encryption:
            self.hotlog.set_encryption(new.encryption.settings())  # from the next segment on
        from pipeline.logsetup import setup_logging

        setup_logging(new.ops.log_format)
        self.config = _merge_live(old, new)
        log.info("configuration reloaded", extra={"changed": changed, "need_restart": needs_restart})
        return needs_restart


def _run_until(what: str, step: Callable[[], object], deadline: float, floor: float = 0.5) -> None:
    """Run ``step`` on a daemon thread and wait for it until ``deadline`` (at least
    ``floor`` seconds): a drain step that hangs must not keep the process past its grace."""

    def run() -> None:
        try:
            step()
        except Exception:
            log.exception("%s failed during the drain", what)

    t = threading.Thread(target=run, name=f"drain-{what.replace(' ', '-')}", daemon=True)
    t.start()
    t.join(max(floor, deadline - time.monotonic()))
    if t.is_alive():
        log.warning("%s still running when the grace period ended; not waiting for it", what)


def open_witnesses(locations: tuple[str, ...]) -> list[Any]:
    """Witnesses from their configured locations: ``file:///dir`` (a directory the host
    cannot rewrite, e.g. another mount), ``s3://bucket/prefix[?endpoint_url=..&region=..]``
    (credentials from the standard chain: give the witness bucket its own role), or an
    ``http(s)://`` C2SP tlog-witness endpoint."""
    from urllib.parse import parse_qs, urlsplit

    out: list[Any] = []
    for loc in locations:
        parts = urlsplit(loc)
        if parts.scheme == "file":
            from pipeline.witness.directory import DirectoryWitness

            out.append(DirectoryWitness(Path(parts.path)))
        elif parts.scheme == "s3":
            import boto3

            from pipeline.witness.s3 import S3Witness

            q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            client = boto3.client("s3", endpoint_url=q.get("endpoint_url"), region_name=q.get("region"))
            out.append(S3Witness(client, parts.hostname or "", parts.path.strip("/") or "witness"))
        else:
            from pipeline.witness.http import HttpWitness

            out.append(HttpWitness(loc))
    return out


def _flatten(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section in ("hot", "cold", "ingest", "ops", "signing", "sanitise", "postgres", "encryption"):
        obj = getattr(cfg, section)
        for k, v in vars(obj).items():
            out[f"{section}.{k}"] = v
    return out


def _merge_live(old: Config, new: Config) -> Config:
    import dataclasses

    return dataclasses.replace(
        old,
        hot=dataclasses.replace(old.hot, hot_retention=new.hot.hot_retention,
                                high_water_percent=new.hot.high_water_percent),
        cold=dataclasses.replace(old.cold, upload_concurrency=new.cold.upload_concurrency),
        ops=dataclasses.replace(old.ops, log_format=new.ops.log_format, shutdown_grace=new.ops.shutdown_grace),
        signing=dataclasses.replace(old.signing, checkpoint_interval=new.signing.checkpoint_interval),
        sanitise=new.sanitise,
        encryption=new.encryption,
    )


def run(config_path: Path | None) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    from pipeline.logsetup import setup_logging

    config = load_config(config_path)
    setup_logging(config.ops.log_format)
    sidecar = Sidecar(config).start()
    # Signal handlers only set plain flags: a handler runs on the main thread between two
    # bytecodes, possibly inside threading.Event.wait() while it holds the Event's lock, so
    # calling Event.set() from a handler can deadlock (two signals back to back did).
    flags = {"terminate": False, "reload": False}

    def on_term(signum: int, frame: FrameType | None) -> None:
        flags["terminate"] = True

    def on_hup(signum: int, frame: FrameType | None) -> None:
        flags["reload"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    while not flags["terminate"]:
        time.sleep(0.2)
        if flags["reload"] and not flags["terminate"]:
            flags["reload"] = False
            try:
                sidecar.reload(load_config(config_path))
            except Exception as exc:  # a bad reload keeps the running configuration
                log.error("configuration reload refused: %s", exc)
    if not sidecar.drain():
        log.warning("grace period over with segments still pending; the next start resumes them")
    return 0
