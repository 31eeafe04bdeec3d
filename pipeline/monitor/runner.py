"""``Monitor``: one cycle every ``monitor.interval`` -- trail each stream, watch cold storage and
the witnesses, turn what was found into alerts, deliver them, save the position, update the
metrics.  Nothing here writes outside ``monitor.state_dir``."""

from __future__ import annotations

import logging
import socket
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.config import parse_listen
from pipeline.monitor.alerts import (
    AlertBook,
    AlertmanagerTransport,
    Channel,
    EmailTransport,
    WebhookTransport,
    watchdog_alert,
)
from pipeline.monitor.cold import ColdState, ColdWatcher
from pipeline.monitor.config import MonitorConfig
from pipeline.monitor.findings import MonitorFinding
from pipeline.monitor.hot import StreamTrail, TrailState
from pipeline.monitor.metrics import MonitorMetrics
from pipeline.monitor.state import StateDir
from pipeline.monitor.witness import WitnessState, WitnessWatcher
from pipeline.ship.ledger import LedgerView, open_ledger_readonly

log = logging.getLogger("pipeline.monitor")


class Monitor:
    def __init__(self, cfg: MonitorConfig, *, serve_metrics: bool = True) -> None:
        self.cfg = cfg
        self.state = StateDir(cfg.state_dir)
        self.metrics = MonitorMetrics()
        self.instance = socket.gethostname()
        self.book = AlertBook.from_dict(self.state.load("alerts") or {})
        self.channels = self._channels()
        for ch in self.channels:
            ch.load(self.state.load(f"channel-{ch.transport.name}") or {})
        self.trails: dict[str, StreamTrail] = {}
        self.cold: ColdWatcher | None = None
        if cfg.cold.url is not None or cfg.hot.dir is not None:
            self.cold = ColdWatcher(cfg.cold, cfg.hot.dir, cfg.hot.streams,
                                    ColdState.from_dict(self.state.load("cold") or {}), self._open_store())
        self.witness: WitnessWatcher | None = None
        if cfg.witness.locations and cfg.hot.dir is not None:
            self.witness = WitnessWatcher(cfg.witness, cfg.hot.dir,
                                          WitnessState.from_dict(self.state.load("witness") or {}))
        self._witness_due = 0.0
        self.failed_channels: list[str] = []  # channels whose delivery failed in the last cycle
        self._witness_findings: dict[str, list[MonitorFinding]] = {}
        self._server: Any = None
        if serve_metrics:
            host, port = parse_listen(cfg.listen)
            self._server, _thread = self.metrics.serve(host, port)

    @property
    def metrics_address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def _channels(self) -> list[Channel]:
        c = self.cfg
        out = []
        if c.alertmanager is not None:
            out.append(Channel(AlertmanagerTransport(c.alertmanager, c.resend_interval,
                                                     f"worm-pipeline-monitor://{socket.gethostname()}")))
        if c.webhook is not None:
            out.append(Channel(WebhookTransport(c.webhook, socket.gethostname())))
        if c.email is not None:
            out.append(Channel(EmailTransport(c.email, socket.gethostname())))
        return out

    def _open_store(self) -> Any:
        if self.cfg.cold.url is None:
            return None
        from pipeline.cold import ColdSettings, open_store

        c = self.cfg.cold
        settings = ColdSettings(retention_days=c.retention_days, allow_unlocked=c.allow_unlocked,
                                retry_max_seconds=c.retry_max_seconds)
        return open_store(self.cfg.cold.url, settings)

    def _streams(self) -> list[str]:
        hot = self.cfg.hot.dir
        if hot is None:
            return []
        if self.cfg.hot.streams:
            return list(self.cfg.hot.streams)
        from pipeline.format.segment import list_streams

        return list_streams(hot)

    def _trail(self, stream: str) -> StreamTrail:
        t = self.trails.get(stream)
        if t is None:
            assert self.cfg.hot.dir is not None
            st = TrailState.from_dict(self.state.load(f"stream-{stream}") or {})
            t = self.trails[stream] = StreamTrail(self.cfg.hot.dir, stream, self.cfg.hot, self.cfg.trailing_delay, st)
        return t

    def cycle(self) -> list[MonitorFinding]:
        """One pass; returns what is currently found."""
        t0 = time.monotonic()
        now = time.time()
        findings: list[MonitorFinding] = []
        ledger: LedgerView | None = None
        hot = self.cfg.hot.dir
        try:
            if hot is not None:
                try:
                    ledger = open_ledger_readonly(hot)
                except Exception as exc:
                    findings.append(MonitorFinding("hot-unreadable", "", "", f"cannot read the shipper's ledger: "
                                                   f"{exc}", None, "ledger"))
            findings += self._hot(ledger, now)
            if self.cold is not None:
                try:
                    res = self.cold.cycle(ledger)
                    findings += res.findings
                except Exception as exc:
                    log.exception("monitor: cold watch failed")
                    findings.append(MonitorFinding("hot-unreadable", "", "", f"cold watch failed: {exc}", None,
                                                   "ledger"))
                self.state.save("cold", self.cold.state.to_dict())
        finally:
            if ledger is not None:
                ledger.close()
        findings += self._witnesses(now)
        self._alert(findings, now)
        self.metrics.last_cycle.set(time.time())
        self.metrics.cycle_seconds.observe(time.monotonic() - t0)
        return findings

    def _hot(self, ledger: LedgerView | None, now: float) -> list[MonitorFinding]:
        out: list[MonitorFinding] = []
        hb = self.cfg.hot.heartbeat_interval
        for stream in self._streams():
            trail = self._trail(stream)
            try:
                res = trail.cycle(ledger)
            except (OSError, sqlite3.Error) as exc:
                out.append(MonitorFinding("hot-unreadable", stream, "", f"cannot read stream {stream}: {exc}", None,
                                          "hot"))
                continue
            self.state.save(f"stream-{stream}", trail.state.to_dict())
            out += res.findings
            quiet = now - res.last_write if res.last_write is not None else None
            if quiet is not None and quiet > self.cfg.hot.silence_factor * hb:
                out.append(MonitorFinding("silence", stream, "", f"no record and no heartbeat written for "
                                          f"{quiet:.0f} s (heartbeat interval {hb:g} s x silence_factor "
                                          f"{self.cfg.hot.silence_factor:g}): the writer stopped or is suppressed",
                                          res.head_seq, "hot"))
            m = self.metrics
            if res.verified_seq is not None:
                m.last_verified_seq.labels(stream=stream).set(res.verified_seq)
            if res.head_seq is not None:
                verified = res.verified_seq if res.verified_seq is not None else -1
                m.lag_records.labels(stream=stream).set(max(0, res.head_seq - verified))
            if res.head_ts is not None and res.verified_ts is not None:
                m.lag_seconds.labels(stream=stream).set(max(0.0, res.head_ts - res.verified_ts))
        return out

    def _witnesses(self, now: float) -> list[MonitorFinding]:
        if self.witness is None:
            return []
        if now >= self._witness_due:
            self._witness_due = now + self.cfg.witness.interval
            for stream in self._streams():
                try:
                    found, ok = self.witness.check(stream)
                except Exception as exc:
                    found, ok = [MonitorFinding("witness-unreadable", stream, "", f"witness check failed: {exc}",
                                                None, "witness")], False
                self._witness_findings[stream] = found
                if ok:
                    self.metrics.last_witness_check.labels(stream=stream).set(time.time())
            self.state.save("witness", self.witness.state.to_dict())
        return [f for fs in self._witness_findings.values() for f in fs]

    def _alert(self, findings: list[MonitorFinding], now: float) -> None:
        before = {a.key for a in self.book.firing()}
        started = self.book.update(findings, now)
        for a in started:
            if a.key not in before:
                self.metrics.findings_total.labels(code=a.labels["code"]).inc()
                log.warning("monitor: %s %s", a.labels["alertname"], a.annotations.get("description", ""),
                            extra={"code": a.labels["code"], "stream": a.labels.get("stream")})
        self.metrics.set_active(dict(Counter(f.code for f in {f.key: f for f in findings}.values())))
        dog = watchdog_alert(now, self.cfg.watchdog_seconds, self.instance)
        self.failed_channels = []
        for ch in self.channels:
            if not ch.deliver(self.book, now, dog):
                self.metrics.send_failures.labels(channel=ch.transport.name).inc()
                self.failed_channels.append(ch.transport.name)
            self.state.save(f"channel-{ch.transport.name}", ch.to_dict())
        self.state.save("alerts", self.book.to_dict())

    def run(self, stop: Any) -> None:
        """Cycle until ``stop()`` is true (a flag set by a signal handler)."""
        while not stop():
            t0 = time.monotonic()
            try:
                self.cycle()
            except Exception:
                log.exception("monitor: cycle failed")
            while not stop() and time.monotonic() - t0 < self.cfg.interval:
                time.sleep(min(0.1, self.cfg.interval))

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self.cold is not None and self.cold.store is not None:
            self.cold.store.close()
        self.state.close()


def run_state_paths(cfg: MonitorConfig) -> list[Path]:
    """What the monitor writes (for the read-only check in the docs and tests)."""
    return [cfg.state_dir]
