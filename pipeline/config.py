"""Sidecar configuration: a TOML file plus ``PIPELINE_<SECTION>_<KEY>`` environment variables.

Precedence is default < file < environment, so one file (a ConfigMap) can serve several
containers that differ only in a variable or two (``PIPELINE_HOT_STREAM`` per pod).

Everything is validated up front and every problem is reported at once: a sidecar that
starts with a half-valid configuration fails later, at 3 a.m., on the first upload.  Each
message names the key exactly as the user wrote it (``hot.durability`` in the file,
``PIPELINE_HOT_DURABILITY`` in the environment) and the value that was expected.

Secrets are never held here: ``ingest.token_file`` is a path, read by ``IngestConfig.read_token``
when the server starts, so printing a ``Config`` (``redacted_dict``) cannot leak it.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import ipaddress
import json
import math
import os
import re
import socket
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pipeline.errors import PipelineError
from pipeline.format.record import MAX_EVENT_BYTES
from pipeline.hot.options import DEFAULTS as LOG_DEFAULTS
from pipeline.hot.options import LogOptions

__all__ = [
    "ENV_PREFIX",
    "NON_CONFIG_ENV",
    "ColdConfig",
    "Config",
    "ConfigError",
    "HotConfig",
    "IngestConfig",
    "OpsConfig",
    "PostgresSourceConfig",
    "SanitiseConfig",
    "SigningConfig",
    "load_config",
    "parse_duration",
    "parse_listen",
]

ENV_PREFIX = "PIPELINE_"
# PIPELINE_* variables that are not configuration keys.  They are skipped rather than
# rejected as unknown; PIPELINE_SIGNING_KEY carries key material (pipeline.checkpoint) and
# must never be echoed, not even in an "unknown key" message.
NON_CONFIG_ENV = frozenset({"PIPELINE_SIGNING_KEY", "PIPELINE_CONFIG", "PIPELINE_NO_NATIVE"})

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_EXPECTED = "a duration like 30s, 5m, 1h (units ms, s, m, h, d)"
_ALLOWED_URL_QUERY = {"s3": {"endpoint_url", "region", "profile"}, "az": {"endpoint_url"}, "file": set()}


class ConfigError(PipelineError, ValueError):
    """The configuration is invalid.  ``problems`` holds one message per problem found."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        n = len(self.problems)
        head = "invalid configuration" if n == 1 else f"invalid configuration ({n} problems)"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))

    action = "fix these settings (file or PIPELINE_* environment variables) and start again"

    def diagnostics(self) -> str:
        """Every problem, one per line, for a person reading the sidecar's startup output."""
        return str(self) + "\nFix these settings (file or PIPELINE_* environment variables) and start again."

    def one_line(self) -> str:
        """The CLI's answer names every problem (one per line: each one is needed to fix the file)."""
        return self.diagnostics()


class _Bad(PipelineError):
    """A value did not parse.  ``expected`` completes "expected ...", ``shown`` the "got ..."."""

    def __init__(self, expected: str, shown: str | None = None) -> None:
        super().__init__(expected)
        self.expected = expected
        self.shown = shown


# ------------------------------------------------------------------------------ parsers


def parse_duration(text: str) -> float:
    """``"30s"`` -> 30.0 seconds.  Raises ValueError on anything else."""
    m = _DURATION_RE.match(text)
    if m is None:
        raise ValueError(f"expected {_DURATION_EXPECTED}, got {json.dumps(text)}")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` or ``"[::1]:9464"`` -> (host, port).  Raises ValueError."""
    host, sep, port_s = text.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise ValueError(f"expected host:port like 127.0.0.1:9464, got {json.dumps(text)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"expected an IPv6 host in brackets like [::1]:9464, got {json.dumps(text)}")
    port = int(port_s)
    if port > 65535:
        raise ValueError(f"expected a port between 0 and 65535, got {json.dumps(text)}")
    return host, port


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        from pipeline.cold.errors import mask_credentials

        return mask_credentials(json.dumps(value))  # a refused URL may carry user-info
    return repr(value)


def _mask(text: str) -> str:
    from pipeline.cold.errors import mask_credentials

    return mask_credentials(text)


_Parser = Callable[[Any, bool], Any]  # (value, from_env) -> typed value, or raise _Bad


def _string(*, nonempty: bool = True) -> _Parser:
    def p(v: Any, env: bool) -> str:
        if not isinstance(v, str):
            raise _Bad("a string")
        if nonempty and not v.strip():
            raise _Bad("a non-empty string")
        return v

    return p


def _witness_list(v: Any, env: bool) -> tuple[str, ...]:
    # a TOML array of strings, or (from the environment) a comma-separated list
    items = [x.strip() for x in v.split(",")] if isinstance(v, str) else v
    if not isinstance(items, list | tuple) or not all(isinstance(x, str) for x in items):
        raise _Bad("a list of witness locations (file:///dir, s3://bucket/prefix, https://host/path)")
    out = []
    for x in items:
        if not x:
            continue
        if not x.startswith(("file:///", "s3://", "http://", "https://")):
            raise _Bad("witness locations starting with file:///, s3://, http:// or https://", repr(x))
        out.append(x)
    return tuple(out)


def _optional(inner: _Parser) -> _Parser:
    # TOML has no null: "none" (or an empty value, handy for unsetting via the environment)
    # means "not set", which is how the defaults in the documentation are spelled.
    def p(v: Any, env: bool) -> Any:
        if isinstance(v, str) and v.strip().lower() in ("", "none"):
            return None
        return inner(v, env)

    return p


def _choice(*options: str) -> _Parser:
    def p(v: Any, env: bool) -> str:
        if not isinstance(v, str) or v not in options:
            raise _Bad(f"one of {', '.join(options)}")
        return v

    return p


def _integer(lo: int | None = None, hi: int | None = None) -> _Parser:
    if lo is not None and hi is not None:
        expected = f"an integer from {lo} to {hi}"
    elif lo is not None:
        expected = f"an integer of at least {lo}"
    else:
        expected = "an integer"

    def p(v: Any, env: bool) -> int:
        if env and isinstance(v, str) and re.fullmatch(r"\s*[+-]?\d+\s*", v):
            v = int(v)
        # bool is an int subclass: `retention_days = true` is a mistake, not 1
        if not isinstance(v, int) or isinstance(v, bool):
            raise _Bad(expected)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise _Bad(expected)
        return v

    return p


def _boolean(v: Any, env: bool) -> bool:
    if isinstance(v, bool):
        return v
    if env and isinstance(v, str):
        low = v.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
    raise _Bad("true or false")


def _duration(*, allow_zero: bool = True) -> _Parser:
    def p(v: Any, env: bool) -> float:
        # A bare number is refused on purpose: "60" could mean seconds or milliseconds.
        if not isinstance(v, str):
            raise _Bad(_DURATION_EXPECTED)
        try:
            seconds = parse_duration(v)
        except ValueError:
            raise _Bad(_DURATION_EXPECTED) from None
        if not math.isfinite(seconds) or (not allow_zero and seconds <= 0):
            raise _Bad("a duration greater than zero like 30s, 5m, 1h")
        return seconds

    return p


def _octal_mode(v: Any, env: bool) -> int:
    # A string, because TOML's 660 would silently be decimal 660 = 0o1224.
    if not isinstance(v, str) or not re.fullmatch(r"0?[0-7]{3}", v.strip()):
        raise _Bad('an octal permission string like "0660"')
    return int(v.strip(), 8)


def _listen(v: Any, env: bool) -> str:
    if not isinstance(v, str):
        raise _Bad("host:port like 127.0.0.1:9464")
    try:
        host, _port = parse_listen(v.strip())
    except ValueError as exc:
        raise _Bad(str(exc).removeprefix("expected ").rsplit(", got ", 1)[0]) from None
    if host not in ("localhost", "*"):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
                raise _Bad("host:port with an IP address or host name") from None
    return v.strip()


def _path(v: Any, env: bool) -> Path:
    if not isinstance(v, str) or not v.strip():
        raise _Bad("a file system path")
    if "\x00" in v:
        raise _Bad("a file system path without NUL characters")
    return Path(v).expanduser()


def _cold_url(v: Any, env: bool) -> str:
    expected = "a URL like s3://bucket/prefix?region=eu-west-1, az://account/container/prefix or file:///path"
    if not isinstance(v, str):
        raise _Bad(expected)
    try:
        parts = urlsplit(v.strip())
    except ValueError:
        raise _Bad(expected) from None
    scheme = parts.scheme.lower()
    if scheme not in _ALLOWED_URL_QUERY:
        raise _Bad(expected)
    from pipeline.cold.errors import url_has_credentials

    if parts.username or parts.password or url_has_credentials(v):
        # shown without the value: it would print the credentials we are refusing
        # (url_has_credentials also finds them in a nested endpoint_url)
        raise _Bad(expected + " without credentials (use the standard credential chains)", "a URL with credentials")
    if scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise _Bad("an absolute file URL like file:///var/lib/cold")
    elif not parts.netloc:
        raise _Bad(expected)
    elif scheme == "az" and len([s for s in parts.path.split("/") if s]) < 1:
        raise _Bad("az://account/container[/prefix]")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - _ALLOWED_URL_QUERY[scheme])
    if unknown:
        allowed = ", ".join(sorted(_ALLOWED_URL_QUERY[scheme])) or "none"
        raise _Bad(f"{scheme}:// URL parameters from: {allowed} (unknown: {', '.join(unknown)})")
    return v.strip()


def _env_list(v: Any, env: bool) -> Any:
    # from the environment a list is a JSON array, or comma-separated words
    if env and isinstance(v, str):
        text = v.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                raise _Bad("a JSON array of strings") from None
        return [x.strip() for x in text.split(",") if x.strip()]
    return v


def _string_list(what: str, check: Callable[[str], str | None] | None = None) -> _Parser:
    def p(v: Any, env: bool) -> tuple[str, ...]:
        items = _env_list(v, env)
        if not isinstance(items, list | tuple) or not all(isinstance(x, str) and x for x in items):
            raise _Bad(f"a list of {what}" + (" (from the environment: comma-separated or a JSON array)"
                                              if env else ""))
        for x in items:
            problem = check(x) if check else None
            if problem:
                raise _Bad(f"a list of {what}", f"{_show(x)} ({problem})")
        return tuple(items)

    return p


def _regex_problem(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"not a regular expression: {exc}"
    return None


def _rule_problem(name: str) -> str | None:
    from pipeline.sanitise import BUILTIN_RULES

    if name in BUILTIN_RULES:
        return None
    return f"no such rule{_suggest(name, BUILTIN_RULES)}; the built-in rules are {', '.join(BUILTIN_RULES)}"


def _recipient_problem(text: str) -> str | None:
    from pipeline.crypt.writer import EncryptionConfigError, parse_recipient

    try:
        parse_recipient(text)
    except EncryptionConfigError as exc:
        return str(exc)
    return None


def _clear_field_problem(name: str) -> str | None:
    from pipeline.crypt.scheme import ENC_FIELD

    return f"{ENC_FIELD!r} is reserved for the ciphertext" if name == ENC_FIELD else None


def _value_patterns(v: Any, env: bool) -> tuple[tuple[str, str], ...]:
    expected = 'a table of rule name = "regular expression"' + (
        ' (from the environment: a JSON object)' if env else "")
    if env and isinstance(v, str):
        try:
            v = json.loads(v) if v.strip() else {}
        except ValueError:
            raise _Bad(expected) from None
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise _Bad(expected)
    for name, pattern in v.items():
        problem = _regex_problem(pattern)
        if problem:
            raise _Bad(expected, f"{name} = {_show(pattern)} ({problem})")
    return tuple(v.items())


def _pg_dsn(v: Any, env: bool) -> str:
    expected = "a libpq connection string or postgresql:// URI without a password"
    if not isinstance(v, str) or not v.strip():
        raise _Bad(expected)
    # the password belongs in ~/.pgpass, a passfile= or PGPASSWORD, never in the configuration
    if re.search(r"(?i)(^|\s)password\s*=", v) or re.search(r"(?i)[?&]password=", v) \
            or re.match(r"(?i)^postgres(ql)?://[^/@]*:[^/@]*@", v):
        raise _Bad(expected + " (use ~/.pgpass, passfile=... or PGPASSWORD)", "a connection string with a password")
    return v.strip()


def _pg_identifier(v: Any, env: bool) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[a-z_][a-z0-9_]{0,47}", v):
        raise _Bad("a PostgreSQL name of 1-48 characters from a-z 0-9 _")
    return v


# ------------------------------------------------------------------------------ schema


@dataclass(frozen=True)
class _Key:
    parse: _Parser
    default: Any  # the raw (unparsed) default, exactly as documented; None = not set
    required: bool = False


_SCHEMA: dict[str, dict[str, _Key]] = {
    "hot": {
        "dir": _Key(_path, None, required=True),
        "stream": _Key(_string(), "app"),
        "durability": _Key(_choice("fsync", "group", "os"), "group"),
        "segment_window": _Key(_duration(), "5m"),
        "segment_max_bytes": _Key(_integer(4096), 67108864),
        "heartbeat_interval": _Key(_duration(), "60s"),
        "immutable": _Key(_choice("auto", "require", "off"), "auto"),
        "hot_retention": _Key(_duration(), "24h"),
        "high_water_percent": _Key(_integer(1, 99), 85),
    },
    "cold": {
        "url": _Key(_optional(_cold_url), None),
        "retention_days": _Key(_integer(1, 36500), 2555),
        "allow_unlocked": _Key(_boolean, False),
        "compression": _Key(_choice("zstd", "none"), "zstd"),
        "compression_level": _Key(_integer(1, 22), 1),
        "compression_threads": _Key(_integer(0, 64), 0),
        "storage_class": _Key(_optional(_string()), None),
        "sse": _Key(_optional(_choice("AES256", "aws:kms")), None),
        "kms_key_id": _Key(_optional(_string()), None),
        "upload_concurrency": _Key(_integer(1, 256), 4),
        "legal_hold": _Key(_boolean, False),
        "retry_max_seconds": _Key(_duration(allow_zero=False), "60s"),
    },
    "ingest": {
        "socket": _Key(_optional(_path), None),
        "socket_mode": _Key(_octal_mode, "0660"),
        "http": _Key(_optional(_listen), None),
        "token_file": _Key(_optional(_path), None),
        "max_request_bytes": _Key(_integer(1024), 10485760),
        "max_event_bytes": _Key(_integer(64, MAX_EVENT_BYTES), 1048576),
        "max_connections": _Key(_integer(1, 65536), 1024),
        "request_timeout": _Key(_duration(allow_zero=False), "30s"),
        # TLS for every TCP listener (http, syslog, relp): pipeline/ingest/tls.py, docs/INGEST.md §6
        "tls_cert": _Key(_optional(_path), None),
        "tls_key": _Key(_optional(_path), None),
        "client_ca": _Key(_optional(_path), None),
        "allowed_clients": _Key(_string_list("client identities (uri:, dns:, cn: or a bare value)"), ()),
        "allow_plaintext": _Key(_boolean, False),
        # syslog over TCP/TLS (RFC 5425/6587) and RELP: pipeline/ingest/syslog.py, docs/INGEST.md §7
        "syslog": _Key(_optional(_listen), None),
        "relp": _Key(_optional(_listen), None),
        "max_syslog_frame": _Key(_integer(480, 16 << 20), 65536),
    },
    "ops": {
        "listen": _Key(_listen, "127.0.0.1:9464"),
        "shutdown_grace": _Key(_duration(), "60s"),
        "log_format": _Key(_choice("json", "text"), "json"),
    },
    "signing": {
        "key_file": _Key(_optional(_path), None),
        "checkpoint_interval": _Key(_duration(allow_zero=False), "60s"),
        "origin": _Key(_optional(_string()), None),
        "witnesses": _Key(_witness_list, ()),
    },
    # redaction rules (pipeline.sanitise.Rules; docs/REDACTION.md); reloadable with SIGHUP
    "sanitise": {
        "enabled": _Key(_boolean, True),
        "marker": _Key(_string(), "[REDACTED:{rule}]"),
        "extra_keys": _Key(_string_list("key names"), ()),
        "key_patterns": _Key(_string_list("regular expressions", _regex_problem), ()),
        "value_patterns": _Key(_value_patterns, {}),
        "keep": _Key(_string_list("key names"), ()),
        "disable": _Key(_string_list("rule names", _rule_problem), ()),
    },
    # [source.postgres]: tail an audit table into the chain (pipeline/pg/source.py; docs/POSTGRES.md)
    "source.postgres": {
        "dsn": _Key(_optional(lambda v, env: _pg_dsn(v, env)), None),
        "schema": _Key(lambda v, env: _pg_identifier(v, env), "audit"),
        "table": _Key(lambda v, env: _pg_identifier(v, env), "events"),
        "slot": _Key(_optional(lambda v, env: _pg_identifier(v, env)), None),
        "publication": _Key(_optional(lambda v, env: _pg_identifier(v, env)), None),
        "poll_interval": _Key(_duration(allow_zero=False), "200ms"),
        "batch_rows": _Key(_integer(100, 1000000), 10000),
        "check_interval": _Key(_duration(allow_zero=False), "10s"),
    },
    # events encrypted to auditors (pipeline.crypt; docs/ENCRYPTION.md); reloadable with SIGHUP,
    # effective from the next segment
    "encryption": {
        "recipients": _Key(_string_list("age X25519 public keys (age1...)", _recipient_problem), ()),
        "clear_fields": _Key(_string_list("event field names", _clear_field_problem), ()),
    },
}
# configuration sections that are tables inside a table ([source.postgres]): the dotted
# section name -> the Config attribute holding it
_NESTED = {"source.postgres": "postgres"}


# ------------------------------------------------------------------------------ dataclasses


@dataclass(frozen=True)
class HotConfig:
    dir: Path
    stream: str = "app"
    # The writer's defaults are LogOptions' (pipeline/hot/options.py); the schema above
    # documents the same values, and tests/test_public_api.py checks that they agree.
    durability: str = LOG_DEFAULTS.durability
    segment_window: float = LOG_DEFAULTS.segment_window  # seconds; 0 = no time-based rotation
    segment_max_bytes: int = LOG_DEFAULTS.segment_max_bytes
    heartbeat_interval: float = LOG_DEFAULTS.heartbeat_interval  # seconds; 0 = no heartbeats
    immutable: str = "auto"
    hot_retention: float = 86400.0  # seconds a confirmed segment stays on the hot disk
    high_water_percent: int = 85

    def log_options(self) -> LogOptions:
        """The writer's options for this section (``pipeline.open_log(..., options=...)``)."""
        return LOG_DEFAULTS.replace(durability=self.durability, segment_window=self.segment_window,
                                    segment_max_bytes=self.segment_max_bytes,
                                    heartbeat_interval=self.heartbeat_interval, immutable=self.immutable)

    def hotlog_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``HotLog(dir, stream, **kwargs)``."""
        return self.log_options().writer_kwargs()


@dataclass(frozen=True)
class ColdConfig:
    url: str | None = None
    retention_days: int = 2555
    allow_unlocked: bool = False
    compression: str = "zstd"
    compression_level: int = 1  # measured faster and smaller than 3 on audit records (BENCHMARKS.md)
    compression_threads: int = 0  # see ColdSettings: memory per upload (docs/BENCHMARKS.md)
    storage_class: str | None = None
    sse: str | None = None  # None: the bucket's default encryption applies (docs/COLD.md)
    kms_key_id: str | None = None
    upload_concurrency: int = 4
    legal_hold: bool = False
    retry_max_seconds: float = 60.0  # retrying one cold-storage operation, in total

    def settings(self) -> Any:
        """The cold tier's ``ColdSettings`` for these values (imported lazily: the cold
        backends pull in boto3 and azure, which config loading should not pay for)."""
        from pipeline.cold.base import ColdSettings

        return ColdSettings(
            retention_days=self.retention_days,
            allow_unlocked=self.allow_unlocked,
            legal_hold=self.legal_hold,
            sse=self.sse,
            kms_key_id=self.kms_key_id,
            storage_class=self.storage_class,
            compression=self.compression,  # type: ignore[arg-type]  # validated: zstd | none
            compression_level=self.compression_level,
            compression_threads=self.compression_threads,
            retry_max_seconds=self.retry_max_seconds,
        )


@dataclass(frozen=True)
class IngestConfig:
    socket: Path | None = None
    socket_mode: int = 0o660
    http: str | None = None
    token_file: Path | None = None
    max_request_bytes: int = 10485760
    max_event_bytes: int = 1048576
    max_connections: int = 1024  # per transport
    request_timeout: float = 30.0  # seconds from a request's first byte to the end of its body
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    allowed_clients: tuple[str, ...] = ()
    allow_plaintext: bool = False
    syslog: str | None = None
    relp: str | None = None
    max_syslog_frame: int = 65536

    def tls_settings(self) -> Any:
        """The ``pipeline.ingest.tls.TlsSettings`` of every TCP listener."""
        from pipeline.ingest.tls import TlsSettings

        return TlsSettings(cert=self.tls_cert, key=self.tls_key, client_ca=self.client_ca,
                           allowed_clients=self.allowed_clients, allow_plaintext=self.allow_plaintext)

    def read_token(self) -> str | None:
        """The bearer token from ``token_file`` (surrounding whitespace stripped), or None."""
        if self.token_file is None:
            return None
        token = self.token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise ConfigError([f"ingest.token_file: expected a file holding a token, {self.token_file} is empty"])
        return token

    @property
    def http_address(self) -> tuple[str, int] | None:
        return parse_listen(self.http) if self.http else None


@dataclass(frozen=True)
class OpsConfig:
    listen: str = "127.0.0.1:9464"
    shutdown_grace: float = 60.0
    log_format: str = "json"

    @property
    def address(self) -> tuple[str, int]:
        return parse_listen(self.listen)


@dataclass(frozen=True)
class SigningConfig:
    key_file: Path | None = None
    checkpoint_interval: float = 60.0
    origin: str | None = None  # checkpoint origin line; default: the stream name
    witnesses: tuple[str, ...] = ()  # file:///dir, s3://bucket/prefix, https://witness/path


@dataclass(frozen=True)
class SanitiseConfig:
    enabled: bool = True
    marker: str = "[REDACTED:{rule}]"
    extra_keys: tuple[str, ...] = ()
    key_patterns: tuple[str, ...] = ()
    value_patterns: tuple[tuple[str, str], ...] = ()  # (rule name, regular expression)
    keep: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()

    def rules(self) -> Any:
        """The ``pipeline.sanitise.Rules`` for these settings."""
        from pipeline.sanitise import Rules

        return Rules(extra_keys=self.extra_keys, key_patterns=self.key_patterns,
                     value_patterns=self.value_patterns, keep=self.keep, disable=self.disable, marker=self.marker)

    def sanitiser(self, max_event_bytes: int) -> Any:
        """A ``pipeline.sanitise.Sanitiser`` with these rules (the log's own: pass it to
        ``open_hotlog(..., sanitiser=...)``, every path into the log then uses it)."""
        from pipeline.sanitise import Sanitiser

        return Sanitiser(redact=self.enabled, max_event_bytes=max_event_bytes, rules=self.rules())


@dataclass(frozen=True)
class PostgresSourceConfig:
    """[source.postgres]; the source runs when ``dsn`` is set."""

    dsn: str | None = None
    schema: str = "audit"
    table: str = "events"
    slot: str | None = None  # default <schema>_<table>_chain, as pipeline pg install names it
    publication: str | None = None  # default <schema>_<table>_chain
    poll_interval: float = 0.2
    batch_rows: int = 10000
    check_interval: float = 10.0

    def settings(self) -> Any:
        """The source's ``pipeline.pg.source.SourceSettings``."""
        from pipeline.pg.source import SourceSettings

        if self.dsn is None:
            raise ConfigError(["source.postgres.dsn: required to tail a PostgreSQL table"])
        return SourceSettings(dsn=self.dsn, schema=self.schema, table=self.table, slot=self.slot,
                              publication=self.publication, poll_interval=self.poll_interval,
                              batch_rows=self.batch_rows, check_interval=self.check_interval)


@dataclass(frozen=True)
class EncryptionConfig:
    recipients: tuple[str, ...] = ()  # age X25519 public keys; empty: events are written in clear
    clear_fields: tuple[str, ...] = ()  # event fields also kept in clear, for routing

    def settings(self) -> Any:
        """The writer's ``pipeline.crypt.writer.EncryptionSettings``, or None (no encryption)."""
        from pipeline.crypt.writer import EncryptionSettings

        return EncryptionSettings.of(self.recipients, self.clear_fields)


@dataclass(frozen=True)
class Config:
    hot: HotConfig
    cold: ColdConfig
    ingest: IngestConfig
    ops: OpsConfig
    signing: SigningConfig
    sanitise: SanitiseConfig = field(default_factory=SanitiseConfig)
    postgres: PostgresSourceConfig = field(default_factory=PostgresSourceConfig)  # [source.postgres]
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    source: Path | None = None  # the file read, if any
    # where each key's value came from: "default", "file" or the environment variable name
    origins: tuple[tuple[str, str], ...] = ()

    def origin(self, dotted: str) -> str:
        return dict(self.origins).get(dotted, "default")

    def require(self, *dotted_keys: str) -> None:
        """Raise ConfigError naming every key in ``dotted_keys`` that is not set.  Commands
        call this for what they need: ``pipeline run`` and ``ship`` need ``cold.url``."""
        missing = []
        for dotted in dotted_keys:
            section, key = dotted.split(".", 1)
            if getattr(getattr(self, section), key) is None:
                env = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
                missing.append(f"{dotted}: required here, set it in [{section}] or with {env}")
        if missing:
            raise ConfigError(missing)

    def redacted_dict(self) -> dict[str, dict[str, Any]]:
        """Plain data for printing (``pipeline config``, startup log).  Paths and durations are
        rendered as text; secrets are not in the config, and the token file's contents are
        never read here: only whether one is configured."""
        out: dict[str, dict[str, Any]] = {}
        for section in _SCHEMA:
            obj = getattr(self, _NESTED.get(section, section))
            entries: dict[str, Any] = {}
            for f in fields(obj):
                v = getattr(obj, f.name)
                if f.name == "socket_mode":
                    v = f"{v:04o}"
                elif isinstance(v, Path):
                    v = str(v)
                elif isinstance(_SCHEMA[section][f.name].default, str) and isinstance(v, float):
                    v = _format_duration(v)
                elif f.name == "value_patterns":
                    v = dict(v)
                entries[f.name] = v
            out[section] = entries
        from pipeline.cold.errors import mask_credentials

        if out["cold"]["url"] is not None:
            out["cold"]["url"] = mask_credentials(out["cold"]["url"])
        out["signing"]["witnesses"] = [mask_credentials(w) for w in out["signing"]["witnesses"]]
        if self.ingest.token_file is not None:
            out["ingest"]["token"] = "<redacted>"  # noqa: S105 - a placeholder, not a secret
        return out


def _format_duration(seconds: float) -> str:
    for unit in ("d", "h", "m", "s"):
        n = seconds / _UNIT_SECONDS[unit]
        if seconds and n == int(n):
            return f"{int(n)}{unit}"
    if seconds == 0:
        return "0s"
    return f"{round(seconds * 1000, 3):g}ms"


# ------------------------------------------------------------------------------ loading


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def load_config(path: Path | None, environ: Mapping[str, str] = os.environ) -> Config:
    """Read ``path`` (optional), apply ``PIPELINE_<SECTION>_<KEY>`` from ``environ``, validate.

    Raises ConfigError listing every problem.  ``cold.url`` may be unset here (``pipeline
    verify`` and friends need no cold store); callers that need it use ``Config.require``."""
    problems: list[str] = []
    # section -> key -> (raw value, label used in messages, origin, from_env)
    raw: dict[str, dict[str, tuple[Any, str, str, bool]]] = {s: {} for s in _SCHEMA}

    if path is not None:
        data = _unnest(_read_file(path, problems), problems)
        for section, table in data.items():
            if section not in _SCHEMA:
                problems.append(f"[{section}]: unknown section{_suggest(section, _SCHEMA)}; "
                                f"expected one of {', '.join(_SCHEMA)}")
                continue
            if not isinstance(table, dict):
                problems.append(f"{section}: expected a [{section}] table, got {_show(table)}")
                continue
            for key, value in table.items():
                label = f"{section}.{key}"
                if key not in _SCHEMA[section]:
                    problems.append(f"{label}: unknown key{_suggest(key, _SCHEMA[section])}")
                    continue
                raw[section][key] = (value, label, "file", False)

    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in NON_CONFIG_ENV:
            continue
        rest = name[len(ENV_PREFIX):]
        section_u, sep, key_u = rest.partition("_")
        section, key = section_u.lower(), key_u.lower()
        if section == "source":  # PIPELINE_SOURCE_POSTGRES_DSN -> [source.postgres] dsn
            sub, _, key = key.partition("_")
            section, section_u, key_u = f"source.{sub}", f"SOURCE_{sub.upper()}", key.upper()
        if section not in _SCHEMA or not sep:
            env_sections = [f"{ENV_PREFIX}{s.upper().replace('.', '_')}_" for s in _SCHEMA]
            hint = _suggest(f"{ENV_PREFIX}{section_u}_", env_sections)
            problems.append(f"{name}: unknown section {section_u!r}{hint}; "
                            f"expected PIPELINE_<SECTION>_<KEY> with SECTION one of "
                            f"{', '.join(s.upper().replace('.', '_') for s in _SCHEMA)}")
            continue
        if key not in _SCHEMA[section]:
            env_keys = [f"{ENV_PREFIX}{section_u}_{k.upper()}" for k in _SCHEMA[section]]
            problems.append(f"{name}: unknown key{_suggest(name, env_keys)}")
            continue
        raw[section][key] = (environ[name], name, name, True)

    values: dict[str, dict[str, Any]] = {s: {} for s in _SCHEMA}
    origins: list[tuple[str, str]] = []
    for section, keys in _SCHEMA.items():
        for key, spec in keys.items():
            label_default = f"{section}.{key}"
            if key in raw[section]:
                value, label, origin, from_env = raw[section][key]
                origins.append((label_default, origin))
            elif spec.required:
                problems.append(f"{label_default}: required, set it in [{section}] or with "
                                f"{ENV_PREFIX}{section.upper().replace('.', '_')}_{key.upper()}")
                continue
            else:
                value, label, from_env = spec.default, label_default, False
            if value is None:
                values[section][key] = None
                continue
            try:
                values[section][key] = spec.parse(value, from_env)
            except _Bad as bad:
                shown = _mask(bad.shown) if bad.shown is not None else _show(value)
                problems.append(f"{label}: expected {bad.expected}, got {shown}")

    # keys that failed to parse are absent from `values`; the cross checks skip them so that
    # one bad value does not hide an unrelated cross-key problem
    _cross_checks(values, raw, problems)
    if problems:
        raise ConfigError(problems)

    return Config(
        hot=HotConfig(**values["hot"]),
        cold=ColdConfig(**values["cold"]),
        ingest=IngestConfig(**values["ingest"]),
        ops=OpsConfig(**values["ops"]),
        signing=SigningConfig(**values["signing"]),
        sanitise=SanitiseConfig(**values["sanitise"]),
        postgres=PostgresSourceConfig(**values["source.postgres"]),
        encryption=EncryptionConfig(**values["encryption"]),
        source=path,
        origins=tuple(origins),
    )


def _unnest(data: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """``[source.postgres]`` arrives as {"source": {"postgres": {...}}}: make it the
    section "source.postgres" (unknown sources are reported like unknown sections)."""
    sources = data.pop("source", None)
    if sources is None:
        return data
    if not isinstance(sources, dict):
        problems.append(f"source: expected [source.<name>] tables, got {_show(sources)}")
        return data
    known = [s.split(".", 1)[1] for s in _NESTED]
    for name, table in sources.items():
        if f"source.{name}" not in _NESTED:
            problems.append(f"[source.{name}]: unknown source{_suggest(name, known)}; expected one of "
                            + ", ".join(f"[source.{k}]" for k in known))
            continue
        data[f"source.{name}"] = table
    return data


def _read_file(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        problems.append(f"{path}: configuration file not found")
    except IsADirectoryError:
        problems.append(f"{path}: expected a TOML file, got a directory")
    except PermissionError:
        problems.append(f"{path}: configuration file is not readable by this user (uid {os.getuid()})")
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: not valid TOML: {exc}")
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not valid UTF-8 TOML: {exc}")
    return {}


def _cross_checks(values: dict[str, dict[str, Any]], raw: dict[str, dict[str, tuple[Any, str, str, bool]]],
                  problems: list[str]) -> None:
    """Rules that involve more than one key, or the file system."""

    def label(section: str, key: str) -> str:
        entry = raw[section].get(key)
        return entry[1] if entry else f"{section}.{key}"

    cold, ingest, hot = values["cold"], values["ingest"], values["hot"]
    if cold.get("kms_key_id") is not None and cold.get("sse") not in (None, "aws:kms"):
        problems.append(f"{label('cold', 'kms_key_id')}: needs cold.sse = \"aws:kms\", got sse {_show(cold['sse'])}")
    if "max_event_bytes" in ingest and "max_request_bytes" in ingest \
            and ingest["max_event_bytes"] > ingest["max_request_bytes"]:
        problems.append(f"{label('ingest', 'max_event_bytes')}: expected at most ingest.max_request_bytes "
                        f"({ingest['max_request_bytes']}), got {ingest['max_event_bytes']}")
    if "stream" in hot:
        try:
            from pipeline.format.record import validate_stream_name

            validate_stream_name(hot["stream"])
        except ValueError:
            problems.append(f"{label('hot', 'stream')}: expected a stream name of 1-128 characters from "
                            f"A-Z a-z 0-9 . _ - starting with a letter or digit, got {_show(hot['stream'])}")
    hot_dir: Path | None = hot.get("dir")
    if hot_dir is not None and hot_dir.exists() and not hot_dir.is_dir():
        problems.append(f"{label('hot', 'dir')}: expected a directory, got a file at {hot_dir}")
    for section, key in (("ingest", "token_file"), ("signing", "key_file")):
        p = values[section].get(key)
        if p is None:
            continue
        try:
            st = p.stat()
        except OSError as exc:
            problems.append(f"{label(section, key)}: expected a readable file, got {_show(str(p))} "
                            f"({exc.strerror or exc})")
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append(f"{label(section, key)}: expected a regular file, got {_show(str(p))}")
        elif not os.access(p, os.R_OK):
            problems.append(f"{label(section, key)}: expected a file readable by uid {os.getuid()}, "
                            f"got {_show(str(p))}")
    _check_sanitise(values["sanitise"], label, problems)
    enc = values["encryption"]
    if enc.get("clear_fields") and not enc.get("recipients", ()):
        problems.append(f"{label('encryption', 'clear_fields')}: set, but encryption.recipients is empty "
                        "(nothing is encrypted, so nothing needs to be kept in clear)")
    sock = ingest.get("socket")
    if sock is not None and not sock.parent.is_dir():
        problems.append(f"{label('ingest', 'socket')}: expected a path in an existing directory, "
                        f"{sock.parent} does not exist")
    _ingest_safety(ingest, label, problems)


def _check_sanitise(values: dict[str, Any], label: Callable[[str, str], str], problems: list[str]) -> None:
    """[sanitise] as a whole: the rule set's own checks (rule names, a marker that names
    the rule and that no rule would redact again), each reported under its key."""
    # a key that failed to parse (already reported) is checked with its default
    rules = SanitiseConfig(**{k: v for k, v in values.items() if k != "enabled"}).rules()
    for problem in rules.problems():
        where, _, message = problem.partition(": ")
        key, dot, sub = where.partition(".")  # "value_patterns.name": the rule's own name kept
        where = (label("sanitise", key) if key in _SCHEMA["sanitise"] else "sanitise") + dot + sub
        problems.append(f"{where}: {message}")


def _ingest_safety(ingest: dict[str, Any], label: Callable[[str, str], str], problems: list[str]) -> None:
    """Settings that would expose the audit log: refused, each with one line naming the key
    (issue 13).  Mutual TLS does not exist yet, so a listener reachable from the network
    needs the bearer token."""
    mode = ingest.get("socket_mode")
    if mode is not None and ingest.get("socket") is not None and mode & stat.S_IRWXO:
        problems.append(f"{label('ingest', 'socket_mode')}: expected no access for others (like \"0660\" or "
                        f"\"0600\"), got \"{mode:04o}\": any local user could write events")
    token = ingest.get("token_file")
    if token is not None:
        with contextlib.suppress(OSError):  # a missing file is reported by the file checks
            st = token.stat()
            if stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_IRWXO:
                problems.append(f"{label('ingest', 'token_file')}: expected a file not accessible by others, "
                                f"{token} has mode {stat.S_IMODE(st.st_mode):04o}; chmod o-rwx it (0600 or 0640)")
    _tls_safety(ingest, label, problems)
    http = ingest.get("http")
    if http is None:
        return
    host, _port = parse_listen(http)
    try:
        addresses = listen_addresses(host)
    except OSError as exc:
        problems.append(f"{label('ingest', 'http')}: expected an address this host can listen on, "
                        f"got {_show(http)} ({exc.strerror or exc})")
        return
    for family, address in addresses:
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            probe.bind((address, 0))  # the address only: the port may be in use by a running sidecar
        except OSError as exc:
            problems.append(f"{label('ingest', 'http')}: expected an address of this host, cannot listen on "
                            f"{address} ({exc.strerror or exc})")
            return
        finally:
            probe.close()
    if ingest.get("token_file") is None and ingest.get("client_ca") is None \
            and not all(ipaddress.ip_address(a).is_loopback for _f, a in addresses):
        problems.append(f"{label('ingest', 'http')}: a listener on {host} is reachable from the network; "
                        "set ingest.client_ca (mutual TLS) or ingest.token_file (bearer token), "
                        "or listen on 127.0.0.1 or [::1]")
    settings = _tls_settings(ingest)
    if settings is not None:
        from pipeline.ingest.tls import plaintext_problem

        refusal = plaintext_problem(label("ingest", "http"), http, settings)
        if refusal is not None:
            problems.append(refusal)


def _tls_settings(ingest: dict[str, Any]) -> Any:
    """The ``TlsSettings`` of the parsed values, or None when a key failed to parse
    (already reported)."""
    from pipeline.ingest.tls import TlsSettings

    keys = ("tls_cert", "tls_key", "client_ca", "allowed_clients", "allow_plaintext")
    if not all(k in ingest for k in keys):
        return None
    return TlsSettings(cert=ingest["tls_cert"], key=ingest["tls_key"], client_ca=ingest["client_ca"],
                       allowed_clients=ingest["allowed_clients"], allow_plaintext=ingest["allow_plaintext"])


def _tls_safety(ingest: dict[str, Any], label: Callable[[str, str], str], problems: list[str]) -> None:
    """Certificate settings (every file read and the pair checked, as at start), and the
    plaintext rule for syslog and RELP: reachable from the network, they need TLS with
    client certificates (syslog has no other authentication) unless ``allow_plaintext``.
    (HTTP's plaintext rule is checked with its address, in ``_ingest_safety``.)"""
    from pipeline.ingest.tls import is_loopback_listen, plaintext_problem

    settings = _tls_settings(ingest)
    if settings is None:
        return
    for problem in settings.problems():
        where, sep, rest = problem.partition(": ")
        key = where.removeprefix("ingest.")
        problems.append((label("ingest", key) + sep + rest) if key in _SCHEMA["ingest"] else problem)
    for key in ("syslog", "relp"):
        listen = ingest.get(key)
        if listen is None:
            continue
        refusal = plaintext_problem(label("ingest", key), listen, settings)
        if refusal is not None:
            problems.append(refusal)
        elif settings.client_ca is None and not settings.allow_plaintext \
                and is_loopback_listen(parse_listen(listen)[0]) is False:
            problems.append(f"{label('ingest', key)}: a {key} listener reachable from the network needs client "
                            "certificates (syslog has no other authentication): set ingest.client_ca, listen on "
                            "127.0.0.1, or set ingest.allow_plaintext = true")


def listen_addresses(host: str) -> list[tuple[socket.AddressFamily, str]]:
    """The addresses a listener on ``host`` binds (``*`` or an empty host: every interface,
    IPv4 and IPv6).  Raises OSError when the name does not resolve."""
    if host in ("*", ""):
        return [(socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")]  # noqa: S104 - what "*" means
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    seen: list[tuple[socket.AddressFamily, str]] = []
    for family, _t, _p, _c, sockaddr in infos:
        entry = (family, str(sockaddr[0]))
        if family in (socket.AF_INET, socket.AF_INET6) and entry not in seen:
            seen.append(entry)
    if not seen:
        raise OSError(errno.EADDRNOTAVAIL, "no IPv4 or IPv6 address")
    return seen
