"""TLS for every TCP ingest listener (HTTP, syslog, RELP): one place for the settings,
building the server context, reloading the certificate when its files change, and the
sender's authenticated identity (docs/INGEST.md §6).

- ``TlsSettings`` is what ``[ingest]`` says: ``tls_cert`` + ``tls_key`` (the server's
  certificate chain and key), ``client_ca`` (mutual TLS: a client must present a
  certificate issued by one of these CAs), ``allowed_clients`` (optional: the identities
  let in), ``allow_plaintext``.
- ``ServerTls`` owns the live context.  Reload without restart: the listening socket keeps
  one *front* context whose SNI callback, run at the start of every handshake, switches
  the connection to the *current* context.  The current context is rebuilt from the files
  when their modification time, size or inode changed (checked at most once per second,
  during a handshake): a fully built and checked new context, swapped in one assignment,
  so that a half-rotated pair (new certificate, old key) never serves a handshake: the old
  context keeps serving until the pair matches again.  Open connections keep the session
  they negotiated.
- Identity: a client certificate's SAN URIs (SPIFFE IDs), SAN DNS names and subject CN.
  With ``allowed_clients`` a connection is let in only when one of them is listed
  (``uri:``/``dns:``/``cn:`` prefixes, or a bare value matching any kind), and the matching
  one is its identity; without it, the first SAN URI, else the first SAN DNS name, else
  the CN.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.errors import PipelineError

__all__ = ["PeerIdentity", "ServerTls", "TlsConfigError", "TlsSettings", "is_loopback_listen", "sender_field"]

log = logging.getLogger("pipeline.ingest.tls")

_RELOAD_CHECK_INTERVAL = 1.0  # seconds between looks at the files, at most
_KINDS = ("uri", "dns", "cn")
SENDER_KEY = "_sender"  # the reserved event key ingest sets (docs/FORMAT.md §1.2)


class TlsConfigError(PipelineError, ValueError):
    """Certificate settings that cannot work; the message names the key."""


@dataclass(frozen=True)
class TlsSettings:
    cert: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None
    allowed_clients: tuple[str, ...] = ()
    allow_plaintext: bool = False

    @property
    def enabled(self) -> bool:
        return self.cert is not None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def problems(self) -> list[str]:
        """What is wrong, one line per problem naming the key (empty when fine).  Builds a
        context, so every file is read and the pair checked, as at start."""
        out: list[str] = []
        if (self.cert is None) != (self.key is None):
            out.append("ingest.tls_cert and ingest.tls_key: set both or neither")
            return out
        if self.cert is None:
            if self.client_ca is not None:
                out.append("ingest.client_ca: mutual TLS needs ingest.tls_cert and ingest.tls_key")
            if self.allowed_clients:
                out.append("ingest.allowed_clients: needs mutual TLS (ingest.client_ca, tls_cert, tls_key)")
            return out
        if self.allowed_clients and self.client_ca is None:
            out.append("ingest.allowed_clients: needs ingest.client_ca (clients without a certificate "
                       "have no identity to check)")
        for entry in self.allowed_clients:
            kind, sep, value = entry.partition(":")
            if sep and kind in _KINDS and not value:
                out.append(f"ingest.allowed_clients: empty identity in {entry!r}")
        try:
            build_context(self)
        except TlsConfigError as exc:
            out.append(str(exc))
        return out


def build_context(settings: TlsSettings) -> ssl.SSLContext:
    """A server context for ``settings`` (TLS 1.2 minimum), or TlsConfigError naming the key."""
    assert settings.cert is not None and settings.key is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    for key, path in (("ingest.tls_cert", settings.cert), ("ingest.tls_key", settings.key),
                      ("ingest.client_ca", settings.client_ca)):
        if path is None:
            continue
        try:
            with open(path, "rb") as f:
                head = f.read(1 << 20)
        except OSError as exc:
            raise TlsConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
        if b"-----BEGIN" not in head:
            raise TlsConfigError(f"{key}: {path} is not a PEM file")
    try:
        ctx.load_cert_chain(str(settings.cert), str(settings.key))
    except ssl.SSLError as exc:
        raise TlsConfigError(f"ingest.tls_cert / ingest.tls_key: cannot load the certificate and key "
                             f"({settings.cert}, {settings.key}): {_ssl_reason(exc)}") from None
    except OSError as exc:
        raise TlsConfigError(f"ingest.tls_cert: {exc.strerror or exc}") from None
    if settings.client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(settings.client_ca))
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(f"ingest.client_ca: cannot load CA certificates from {settings.client_ca}: "
                                 f"{_ssl_reason(exc)}") from None
        if not ctx.get_ca_certs():
            raise TlsConfigError(f"ingest.client_ca: no CA certificate in {settings.client_ca}")
        ctx.verify_mode = ssl.CERT_REQUIRED
    _check_not_expired(settings.cert)
    return ctx


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _check_not_expired(cert_path: Path) -> None:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (ValueError, OSError) as exc:
        raise TlsConfigError(f"ingest.tls_cert: cannot parse {cert_path}: {exc}") from None
    now = time.time()
    if cert.not_valid_after_utc.timestamp() < now:
        raise TlsConfigError(f"ingest.tls_cert: the certificate in {cert_path} expired on "
                             f"{cert.not_valid_after_utc.isoformat()}")
    if cert.not_valid_before_utc.timestamp() > now + 300:
        raise TlsConfigError(f"ingest.tls_cert: the certificate in {cert_path} is not valid before "
                             f"{cert.not_valid_before_utc.isoformat()}")


def _stamp(paths: Iterable[Path | None]) -> tuple[Any, ...]:
    out: list[Any] = []
    for p in paths:
        if p is None:
            continue
        try:
            st = os.stat(p)  # follows symlinks: Kubernetes Secrets swap a ..data symlink
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


@dataclass(frozen=True)
class PeerIdentity:
    """Who sent: ``auth`` is ``x509``, ``token``, ``local`` or ``none``; ``id`` the identity
    (certificate identity, token name; empty for ``local``/``none``); ``peer`` the network
    address (empty for the Unix socket)."""

    auth: str
    id: str = ""
    peer: str = ""

    def field_bytes(self) -> bytes:
        """``"_sender":{...}`` (no braces around): what ingest puts first in each event."""
        return sender_field(self)


def sender_field(identity: PeerIdentity) -> bytes:
    value: dict[str, str] = {"auth": identity.auth}
    if identity.id:
        value["id"] = identity.id
    if identity.peer:
        value["peer"] = identity.peer
    return b'"' + SENDER_KEY.encode() + b'":' + orjson.dumps(value)


def certificate_identities(cert: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, value) for a peer certificate as ``SSLObject.getpeercert()`` returns it:
    SAN URIs, then SAN DNS names, then the subject CNs."""
    out: list[tuple[str, str]] = []
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI":
            out.append(("uri", value))
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS":
            out.append(("dns", value))
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                out.append(("cn", value))
    return out


class ServerTls:
    """The TLS side of the TCP listeners: the context to listen with, reloads, identity."""

    def __init__(self, settings: TlsSettings) -> None:
        if not settings.enabled:
            raise ValueError("ServerTls needs tls_cert and tls_key")
        problems = settings.problems()
        if problems:
            raise TlsConfigError("; ".join(problems))
        self.settings = settings
        self._files = (settings.cert, settings.key, settings.client_ca)
        self._lock = threading.Lock()
        self._current = build_context(settings)
        self._stamp = _stamp(self._files)
        self._checked = time.monotonic()
        self.reloads = 0
        self.reload_failures = 0
        self._allowed = self._parse_allowed(settings.allowed_clients)
        # the listening sockets keep this one; each handshake is moved to the current one
        front = build_context(settings)
        front.sni_callback = self._on_hello
        self.front = front

    @staticmethod
    def _parse_allowed(entries: tuple[str, ...]) -> list[tuple[str | None, str]]:
        out: list[tuple[str | None, str]] = []
        for e in entries:
            kind, sep, value = e.partition(":")
            if sep and kind in _KINDS:
                out.append((kind, value))
            else:
                out.append((None, e))
        return out

    def _on_hello(self, sslobj: Any, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        # called by OpenSSL at the start of every handshake, with or without SNI
        self.maybe_reload()
        sslobj.context = self._current
        return None

    def maybe_reload(self, *, force: bool = False) -> bool:
        """Rebuild the context if the files changed; True when a new one is in use."""
        now = time.monotonic()
        if not force and now - self._checked < _RELOAD_CHECK_INTERVAL:
            return False
        with self._lock:
            self._checked = now
            stamp = _stamp(self._files)
            if stamp == self._stamp and not force:
                return False
            try:
                ctx = build_context(self.settings)
            except TlsConfigError as exc:
                # mid-rotation (new certificate, key not yet written) or a bad file: keep
                # serving with the last good pair, and look again on a later handshake
                self.reload_failures += 1
                log.warning("ingest: TLS certificate reload failed; still serving the previous certificate",
                            extra={"error": str(exc)})
                return False
            self._current = ctx
            self._stamp = stamp
            self.reloads += 1
        log.info("ingest: TLS certificate reloaded", extra={"cert": str(self.settings.cert)})
        return True

    def identify(self, transport: Any) -> tuple[PeerIdentity | None, str]:
        """The identity of a TLS connection's client, or (None, why it is refused).
        Without mutual TLS every client is ``none`` with its address."""
        peer = peer_address(transport)
        if not self.settings.mutual:
            return PeerIdentity("none", "", peer), ""
        ssl_obj = transport.get_extra_info("ssl_object")
        cert = ssl_obj.getpeercert() if ssl_obj is not None else None
        if not cert:
            return None, "no client certificate"
        ids = certificate_identities(cert)
        if not self._allowed:
            if not ids:
                return None, "client certificate has no SAN URI, SAN DNS name or CN"
            return PeerIdentity("x509", ids[0][1], peer), ""
        for kind, value in ids:
            for want_kind, want in self._allowed:
                if value == want and (want_kind is None or want_kind == kind):
                    return PeerIdentity("x509", value, peer), ""
        shown = ", ".join(f"{k}:{v}" for k, v in ids[:4]) or "none"
        return None, f"client identity not allowed ({shown})"


def peer_address(transport: Any) -> str:
    addr = transport.get_extra_info("peername")
    if isinstance(addr, tuple) and addr:
        return str(addr[0])
    return ""


def is_loopback_listen(host: str) -> bool | None:
    """Whether a listener on ``host`` is reachable only from this host (None: the name
    does not resolve, which the configuration check reports on its own)."""
    from pipeline.config import listen_addresses

    if host in ("", "*"):
        return False
    try:
        addrs = listen_addresses(host)
    except OSError:
        return None
    return all(ipaddress.ip_address(a.split("%")[0]).is_loopback for _f, a in addrs)


def plaintext_problem(key: str, listen: str, settings: TlsSettings) -> str | None:
    """The refusal for a listener reachable from the network without TLS, or None."""
    from pipeline.config import parse_listen

    if settings.enabled or settings.allow_plaintext:
        return None
    host, _port = parse_listen(listen)
    if is_loopback_listen(host) is not False:
        return None
    return (f"{key}: a listener on {host} without TLS is reachable from the network; set ingest.tls_cert and "
            "ingest.tls_key (and ingest.client_ca for mutual TLS), listen on 127.0.0.1, or set "
            "ingest.allow_plaintext = true")

