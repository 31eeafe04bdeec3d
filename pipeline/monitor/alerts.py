"""Alerts: from the monitor's findings to Alertmanager, a signed webhook and e-mail.

``AlertBook`` turns each cycle's findings into alerts: a finding's condition (its ``key``)
that appears *fires* (``startsAt`` = when first seen), stays firing while later cycles still
find it, and *resolves* (``endsAt`` = when it was last gone) when a cycle no longer does.
The book is saved with the monitor's state, so a restart neither re-fires what was already
firing nor forgets to resolve it.

Each channel sends what is due for it and remembers what it delivered: a new or resolved
alert at the next cycle, a firing one again every ``resend_interval`` of the channel.  A
failed send is retried at the next cycle (and counted in
``worm_monitor_alert_send_failures_total{channel}``); one channel's failure never holds
another's alerts.  The wire formats are in docs/MONITOR.md ("Alert channels").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import smtplib
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol

from pipeline.errors import PipelineError
from pipeline.monitor.config import AlertmanagerChannel, EmailChannel, WebhookChannel
from pipeline.monitor.findings import ERROR, MonitorFinding, alertname_for

log = logging.getLogger("pipeline.monitor")

WATCHDOG = "WormMonitorWatchdog"
RESOLVED_KEEP = 86400.0  # a resolved alert is forgotten a day after it resolved
SIGNATURE_HEADER = "X-Worm-Signature"
TIMESTAMP_HEADER = "X-Worm-Timestamp"


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Alert:
    key: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None = None  # None while firing

    @property
    def firing(self) -> bool:
        return self.ends_at is None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "labels": self.labels, "annotations": self.annotations,
                "starts_at": self.starts_at, "ends_at": self.ends_at}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Alert:
        return cls(d["key"], dict(d["labels"]), dict(d["annotations"]), float(d["starts_at"]), d.get("ends_at"))


def alert_for(f: MonitorFinding, now: float) -> Alert:
    labels = {"alertname": alertname_for(f.code), "severity": "critical" if f.severity == ERROR else "warning",
              "stream": f.stream, "code": f.code, "service": "worm-pipeline"}
    if f.segment:
        labels["segment"] = f.segment
    if f.where:
        labels["where"] = f.where
    annotations = {"summary": f"{f.code}: {f.stream or 'monitor'}{'/' + f.segment if f.segment else ''}",
                   "description": f.message, "stream": f.stream, "segment": f.segment,
                   "seq": "" if f.seq is None else str(f.seq), "reason": f.code, "where": f.where}
    return Alert(f.key, labels, annotations, now)


@dataclass
class AlertBook:
    alerts: dict[str, Alert] = field(default_factory=dict)

    def update(self, findings: Sequence[MonitorFinding], now: float) -> list[Alert]:
        """Apply one cycle's findings; returns the alerts that started firing."""
        current: dict[str, MonitorFinding] = {}
        for f in findings:
            current.setdefault(f.key, f)
        started = []
        for key, f in current.items():
            fresh = alert_for(f, now)
            old = self.alerts.get(key)
            if old is None or not old.firing:
                self.alerts[key] = fresh
                started.append(fresh)
            else:
                old.annotations = fresh.annotations  # the latest evidence (seq, message)
        for key, a in list(self.alerts.items()):
            if key not in current and a.firing:
                a.ends_at = now
            elif a.ends_at is not None and now - a.ends_at > RESOLVED_KEEP:
                del self.alerts[key]
        return started

    def firing(self) -> list[Alert]:
        return [a for a in self.alerts.values() if a.firing]

    def to_dict(self) -> dict[str, Any]:
        return {"alerts": [a.to_dict() for a in self.alerts.values()]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlertBook:
        return cls({a["key"]: Alert.from_dict(a) for a in d.get("alerts", [])})


class SendError(PipelineError):
    pass


class Transport(Protocol):
    name: str
    resend_interval: float
    watchdog: bool

    def send(self, alerts: Sequence[Alert], now: float) -> None: ...


@dataclass
class Channel:
    """A transport plus what it has delivered: key -> (status, when)."""

    transport: Transport
    sent: dict[str, tuple[str, float]] = field(default_factory=dict)

    def due(self, book: AlertBook, now: float) -> list[Alert]:
        out = []
        for a in book.alerts.values():
            last = self.sent.get(a.key)
            if a.firing:
                if last is None or last[0] != "firing" or now - last[1] >= self.transport.resend_interval:
                    out.append(a)
            elif last is not None and last[0] == "firing":
                out.append(a)  # resolved: tell whoever was told it fired
        return out

    def deliver(self, book: AlertBook, now: float, watchdog: Alert | None) -> bool:
        """Send what is due; False when the transport failed (retried next cycle)."""
        due = self.due(book, now)
        extra = [watchdog] if watchdog is not None and self.transport.watchdog else []
        if not due and not extra:
            return True
        try:
            self.transport.send(due + extra, now)
        except SendError as exc:
            log.warning("monitor: alert channel %s failed: %s", self.transport.name, exc)
            return False
        for a in due:
            self.sent[a.key] = ("firing" if a.firing else "resolved", now)
        for key in [k for k in self.sent if k not in book.alerts]:
            del self.sent[key]
        return True

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in self.sent.items()}

    def load(self, d: dict[str, Any]) -> None:
        self.sent = {k: (str(v[0]), float(v[1])) for k, v in d.items()}


def watchdog_alert(now: float, ttl: float, instance: str) -> Alert:
    """The dead-man's switch: always firing while the monitor runs, each send ending ``ttl``
    later, so the receiver sees it resolve once the monitor stops sending (docs/MONITOR.md)."""
    return Alert(WATCHDOG, {"alertname": WATCHDOG, "severity": "none", "service": "worm-pipeline",
                            "instance": instance},
                 {"summary": "the worm-pipeline monitor is running",
                  "description": "Always firing while `pipeline monitor` runs; route it to a dead-man's-switch "
                                 "receiver, which alarms when it stops (docs/MONITOR.md)."},
                 now, now + ttl)


# ---------------------------------------------------------------------------- transports


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    req = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - the configured URL
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            resp.read()
    except urllib.error.HTTPError as exc:
        raise SendError(f"{url}: HTTP {exc.code}: {exc.read()[:200].decode('utf-8', 'replace')}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise SendError(f"{url}: {exc}") from exc


class AlertmanagerTransport:
    """Prometheus Alertmanager API v2: ``POST <url>/api/v2/alerts`` with a JSON list of
    ``{labels, annotations, startsAt, endsAt, generatorURL}``.  A firing alert's ``endsAt``
    is ``ttl`` ahead (4 re-sends), as Prometheus does, so Alertmanager keeps it while the
    monitor re-sends and lets it lapse if the monitor dies (the watchdog says so)."""

    name = "alertmanager"

    def __init__(self, cfg: AlertmanagerChannel, resend_interval: float, generator: str) -> None:
        self.url = cfg.url + "/api/v2/alerts"
        self.timeout = cfg.timeout
        self.watchdog = cfg.watchdog
        self.resend_interval = resend_interval
        self.generator = generator

    def payload(self, alerts: Sequence[Alert], now: float) -> list[dict[str, Any]]:
        out = []
        for a in alerts:
            ends = a.ends_at if a.ends_at is not None else now + 4 * self.resend_interval
            out.append({"labels": a.labels, "annotations": {k: v for k, v in a.annotations.items() if v},
                        "startsAt": iso(a.starts_at), "endsAt": iso(ends), "generatorURL": self.generator})
        return out

    def send(self, alerts: Sequence[Alert], now: float) -> None:
        _post(self.url, json.dumps(self.payload(alerts, now)).encode(), {}, self.timeout)


def sign_webhook(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 over ``<timestamp> "." <body>`` (docs/MONITOR.md)."""
    return "sha256=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def verify_webhook(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver runs (also a reference for other languages)."""
    return hmac.compare_digest(sign_webhook(secret, timestamp, body), signature)


class WebhookTransport:
    name = "webhook"

    def __init__(self, cfg: WebhookChannel, instance: str) -> None:
        self.url = cfg.url
        self.secret = cfg.secret()
        self.timeout = cfg.timeout
        self.resend_interval = cfg.resend_interval
        self.watchdog = cfg.watchdog
        self.instance = instance

    def body(self, alerts: Sequence[Alert], now: float) -> bytes:
        doc = {"version": "worm-pipeline/monitor-webhook/v1", "monitor": self.instance, "sent_at": iso(now),
               "alerts": [{"status": "firing" if a.firing else "resolved", "key": a.key, "labels": a.labels,
                           "annotations": a.annotations, "startsAt": iso(a.starts_at),
                           "endsAt": iso(a.ends_at) if a.ends_at is not None else None} for a in alerts]}
        return json.dumps(doc, sort_keys=True).encode()

    def send(self, alerts: Sequence[Alert], now: float) -> None:
        body = self.body(alerts, now)
        ts = str(int(now))
        _post(self.url, body, {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign_webhook(self.secret, ts, body)},
              self.timeout)


class EmailTransport:
    name = "email"
    watchdog = False  # a dead-man's switch needs a receiver that alarms on absence: not a mailbox

    def __init__(self, cfg: EmailChannel, instance: str) -> None:
        self.cfg = cfg
        self.resend_interval = cfg.resend_interval
        self.instance = instance
        self.password = cfg.password_file.read_text().strip() if cfg.password_file else None

    def message(self, alerts: Sequence[Alert], now: float) -> EmailMessage:
        firing = [a for a in alerts if a.firing]
        resolved = [a for a in alerts if not a.firing]
        msg = EmailMessage()
        msg["Subject"] = (f"[worm-pipeline] {len(firing)} firing, {len(resolved)} resolved: "
                          + ", ".join(sorted({a.labels.get('alertname', '') for a in alerts}))[:150])
        msg["From"] = self.cfg.sender
        msg["To"] = ", ".join(self.cfg.to)
        lines = [f"worm-pipeline monitor {self.instance}, {iso(now)}", ""]
        for title, group in (("FIRING", firing), ("RESOLVED", resolved)):
            for a in group:
                lines.append(f"{title} {a.labels.get('alertname')} ({a.labels.get('severity')})")
                for k in ("stream", "segment", "seq", "reason", "where", "description"):
                    if a.annotations.get(k):
                        lines.append(f"  {k}: {a.annotations[k]}")
                lines.append(f"  since: {iso(a.starts_at)}" + (f", resolved {iso(a.ends_at)}" if a.ends_at else ""))
                lines.append("")
        msg.set_content("\n".join(lines))
        return msg

    def send(self, alerts: Sequence[Alert], now: float) -> None:
        c = self.cfg
        try:
            with smtplib.SMTP(c.host, c.port, timeout=c.timeout) as smtp:
                if c.starttls:
                    smtp.starttls()
                if c.username and self.password is not None:
                    smtp.login(c.username, self.password)
                smtp.send_message(self.message(alerts, now))
        except (smtplib.SMTPException, OSError) as exc:
            raise SendError(f"smtp {c.host}:{c.port}: {exc}") from exc
