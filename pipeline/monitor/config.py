"""``monitor.toml``: the monitor's own configuration (docs/MONITOR.md, "Configuration").

The monitor is a separate process with its own file, so nothing here is shared with the
sidecar's ``pipeline.toml``: a monitor on a central host watches hot tiers and buckets it
has only read access to.  Values use the sidecar's syntax (durations ``30s``/``5m``,
``host:port``, cold-store URLs without credentials) through the same parsers
(``pipeline.config``), and every problem is reported at once, naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import (
    ConfigError,
    _Bad,
    _boolean,
    _cold_url,
    _duration,
    _integer,
    _listen,
    _optional,
    _Parser,
    _path,
    _read_file,
    _show,
    _string,
    _string_list,
    _suggest,
)

__all__ = ["AlertmanagerChannel", "ColdWatch", "EmailChannel", "HotWatch", "MonitorConfig", "WebhookChannel",
           "WitnessWatch", "load_monitor_config"]


def _factor(v: Any, env: bool) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 1:
        raise _Bad("a number of at least 1 (how many heartbeat intervals of silence raise the alert)")
    return float(v)


def _start(v: Any, env: bool) -> str:
    if v not in ("beginning", "end"):
        raise _Bad('"beginning" (verify what the hot tier holds first) or "end" (only what is written from now)')
    return str(v)


def _witness_location(x: str) -> str | None:
    if x.startswith(("file:///", "s3://")):
        return None
    return ("the monitor reads a witness's stored checkpoints: file:///dir or s3://bucket/prefix (an http(s) "
            "tlog-witness has no read endpoint; watch its state directory or bucket instead)")


def _url(v: Any, env: bool) -> str:
    if not isinstance(v, str) or not v.startswith(("http://", "https://")):
        raise _Bad("an http:// or https:// URL")
    return v.rstrip("/")


def _recipients(v: Any, env: bool) -> tuple[str, ...]:
    items: tuple[str, ...] = _string_list("e-mail addresses")(v, env)
    bad = [x for x in items if "@" not in x]
    if bad or not items:
        raise _Bad("a non-empty list of e-mail addresses", _show(bad[0]) if bad else "an empty list")
    return items


_K = tuple[_Parser, Any, bool]  # parser, raw default (None: not set), required

_SCHEMA: dict[str, dict[str, _K]] = {
    "monitor": {
        "state_dir": (_path, None, True),
        "interval": (_duration(allow_zero=False), "5s", False),
        "trailing_delay": (_duration(), "2s", False),
        "listen": (_listen, "127.0.0.1:9465", False),
        "resend_interval": (_duration(allow_zero=False), "60s", False),
        "watchdog_ttl": (_optional(_duration(allow_zero=False)), "none", False),
    },
    "hot": {
        "dir": (_optional(_path), None, False),  # required: _cross_checks says why
        "streams": (_string_list("stream names"), (), False),
        "start": (_start, "beginning", False),
        "heartbeat_interval": (_duration(allow_zero=False), "60s", False),
        "silence_factor": (_factor, 3, False),
        "rescan_active": (_duration(), "60s", False),
        "fss_key": (_optional(_string()), None, False),
    },
    "cold": {
        "url": (_optional(_cold_url), None, False),
        "retention_days": (_integer(1, 36500), 2555, False),
        "allow_unlocked": (_boolean, False, False),
        "max_lag": (_duration(allow_zero=False), "15m", False),
        "recheck_batch": (_integer(0, 100000), 100, False),
        "recheck_interval": (_duration(allow_zero=False), "60s", False),
        "retry_max_seconds": (_duration(allow_zero=False), "10s", False),
    },
    "witness": {
        "locations": (_string_list("witness locations", _witness_location), (), False),
        "vkey": (_optional(_path), None, False),
        "origin": (_optional(_string()), None, False),
        "max_lag": (_duration(allow_zero=False), "5m", False),
        "interval": (_duration(allow_zero=False), "30s", False),
    },
    "alertmanager": {
        "url": (_url, None, True),
        "timeout": (_duration(allow_zero=False), "5s", False),
        "watchdog": (_boolean, True, False),
    },
    "webhook": {
        "url": (_url, None, True),
        "secret_file": (_path, None, True),
        "timeout": (_duration(allow_zero=False), "5s", False),
        "resend_interval": (_duration(allow_zero=False), "1h", False),
        "watchdog": (_boolean, False, False),
    },
    "email": {
        "host": (_string(), None, True),
        "port": (_integer(1, 65535), 25, False),
        "from": (_string(), None, True),
        "to": (_recipients, None, True),
        "starttls": (_boolean, False, False),
        "username": (_optional(_string()), None, False),
        "password_file": (_optional(_path), None, False),
        "timeout": (_duration(allow_zero=False), "10s", False),
        "resend_interval": (_duration(allow_zero=False), "4h", False),
    },
}
_OPTIONAL_SECTIONS = ("alertmanager", "webhook", "email")  # a channel is on when its section is present


@dataclass(frozen=True)
class HotWatch:
    dir: Path | None = None
    streams: tuple[str, ...] = ()
    start: str = "beginning"
    heartbeat_interval: float = 60.0
    silence_factor: float = 3.0
    rescan_active: float = 60.0
    fss_key: str | None = None


@dataclass(frozen=True)
class ColdWatch:
    url: str | None = None
    retention_days: int = 2555
    allow_unlocked: bool = False
    max_lag: float = 900.0
    recheck_batch: int = 100
    recheck_interval: float = 60.0
    retry_max_seconds: float = 10.0


@dataclass(frozen=True)
class WitnessWatch:
    locations: tuple[str, ...] = ()
    vkey: Path | None = None
    origin: str | None = None
    max_lag: float = 300.0
    interval: float = 30.0


@dataclass(frozen=True)
class AlertmanagerChannel:
    url: str
    timeout: float = 5.0
    watchdog: bool = True


@dataclass(frozen=True)
class WebhookChannel:
    url: str
    secret_file: Path
    timeout: float = 5.0
    resend_interval: float = 3600.0
    watchdog: bool = False

    def secret(self) -> bytes:
        key = self.secret_file.read_bytes().strip()
        if not key:
            raise ConfigError([f"webhook.secret_file: {self.secret_file} is empty"])
        return key


@dataclass(frozen=True)
class EmailChannel:
    host: str
    sender: str
    to: tuple[str, ...]
    port: int = 25
    starttls: bool = False
    username: str | None = None
    password_file: Path | None = None
    timeout: float = 10.0
    resend_interval: float = 14400.0


@dataclass(frozen=True)
class MonitorConfig:
    state_dir: Path
    interval: float = 5.0
    trailing_delay: float = 2.0
    listen: str = "127.0.0.1:9465"
    resend_interval: float = 60.0
    watchdog_ttl: float | None = None  # None: 3 x interval
    hot: HotWatch = field(default_factory=HotWatch)
    cold: ColdWatch = field(default_factory=ColdWatch)
    witness: WitnessWatch = field(default_factory=WitnessWatch)
    alertmanager: AlertmanagerChannel | None = None
    webhook: WebhookChannel | None = None
    email: EmailChannel | None = None
    source: Path | None = None

    @property
    def watchdog_seconds(self) -> float:
        return self.watchdog_ttl if self.watchdog_ttl is not None else 3 * self.interval


def load_monitor_config(path: Path) -> MonitorConfig:
    """Read and validate ``path``.  Raises ConfigError listing every problem."""
    problems: list[str] = []
    data = _read_file(path, problems)
    values: dict[str, dict[str, Any]] = {}
    for section, table in data.items():
        if section not in _SCHEMA:
            problems.append(f"[{section}]: unknown section{_suggest(section, _SCHEMA)}; expected one of "
                            f"{', '.join(_SCHEMA)}")
        elif not isinstance(table, dict):
            problems.append(f"{section}: expected a [{section}] table, got {_show(table)}")
    for section, keys in _SCHEMA.items():
        table = data.get(section)
        if not isinstance(table, dict):
            if section in _OPTIONAL_SECTIONS:
                continue
            table = {}
        for key in table:
            if key not in keys:
                problems.append(f"{section}.{key}: unknown key{_suggest(key, keys)}")
        out: dict[str, Any] = {}
        for key, (parse, default, required) in keys.items():
            label = f"{section}.{key}"
            if key in table:
                raw = table[key]
            elif required:
                problems.append(f"{label}: required, set it in [{section}]")
                continue
            else:
                raw = default
            if raw is None:
                out[key] = None
                continue
            try:
                out[key] = parse(raw, False)
            except _Bad as bad:
                problems.append(f"{label}: expected {bad.expected}, got {bad.shown or _show(raw)}")
        values[section] = out
    _cross_checks(values, problems)
    if problems:
        raise ConfigError(problems)
    return _build(values, path)


def _cross_checks(values: Mapping[str, Mapping[str, Any]], problems: list[str]) -> None:
    hot, witness = values.get("hot", {}), values.get("witness", {})
    if hot.get("dir") is None:
        problems.append("hot.dir: required, the hot tier mounted read-only (its segments, and the shipper's ledger "
                        "that drives the cold checks)")
    if witness.get("locations") and witness.get("vkey") is None:
        problems.append("witness.vkey: required with witness.locations (the log's checkpoint verifier key)")
    if not any(s in values for s in _OPTIONAL_SECTIONS):
        problems.append("[alertmanager], [webhook], [email]: configure at least one alert channel")
    email = values.get("email")
    if email and (email.get("username") is None) != (email.get("password_file") is None):
        problems.append("email.username, email.password_file: set both or neither")


def _build(values: dict[str, dict[str, Any]], path: Path) -> MonitorConfig:
    m = values["monitor"]
    am = values.get("alertmanager")
    wh = values.get("webhook")
    em = values.get("email")
    email = None
    if em:
        em = dict(em)
        email = EmailChannel(sender=em.pop("from"), **em)
    return MonitorConfig(
        state_dir=m["state_dir"], interval=m["interval"], trailing_delay=m["trailing_delay"], listen=m["listen"],
        resend_interval=m["resend_interval"], watchdog_ttl=m["watchdog_ttl"],
        hot=HotWatch(**values["hot"]), cold=ColdWatch(**values["cold"]), witness=WitnessWatch(**values["witness"]),
        alertmanager=AlertmanagerChannel(**am) if am else None, webhook=WebhookChannel(**wh) if wh else None,
        email=email, source=path)
