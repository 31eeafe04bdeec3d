"""TLS handshakes run by the sidecar itself, so that a refused one is seen (docs/INGEST.md §6.4).

asyncio's own server-side TLS (``create_server(ssl=...)``) hides a failed handshake: the
application protocol never sees the connection, and asyncio logs ``ssl.SSLError`` only in
debug mode.  A forwarder with a certificate from another CA then looks exactly like a
sidecar that is down.  So a TLS listener accepts plain TCP and runs the handshake with the
public ``loop.start_tls(..., server_side=True)``, which raises when the handshake fails:

- the failure is classified into one of ``REASONS`` (bounded: the label of
  ``worm_ingest_tls_handshake_failures_total{listener,reason}``; the raw OpenSSL message
  never becomes a label) and counted;
- a WARNING names the listener, the client's address and the reason in words, rate-limited
  per (listener, address, reason) and overall, so that a client retrying in a loop cannot
  flood the log; the table of addresses is capped.

After a successful handshake the TLS transport is given to the listener's protocol
(``connection_made``), exactly as ``create_server(ssl=...)`` would have done.

The client is told why.  When OpenSSL refuses a handshake it writes a fatal alert
(``unknown ca``, ``certificate required``, ...), which asyncio drops: on a failed handshake
it closes the socket without sending what OpenSSL wrote.  With public APIs only
(``SSLContext.sslobject_class``, ``SSLContext.wrap_bio``): the front context's TLS objects
are ``AlertingSSLObject``s, which answer a refusal once with "want read" (asyncio then sends
the pending bytes, the alert) and raise it on the next call; the connection is half-closed
so the client reads the alert, and closed after ``LINGER`` seconds if the client does not
close first.  A per-connection ``_Carrier`` context, handed to ``start_tls``, ties the TLS
object to its connection, so that the refusal reported is OpenSSL's, whichever way the
connection then ends.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.ingest.tls import peer_address

if TYPE_CHECKING:
    from pipeline.ingest.server import IngestMetrics
    from pipeline.ingest.tls import ServerTls

__all__ = ["REASONS", "AlertingSSLObject", "HandshakeRefusals", "TlsAcceptor", "classify", "listen_factory"]

log = logging.getLogger("pipeline.ingest.tls")

# The reason label's values (docs/INGEST.md §6.4).  "closed" is the client going away before
# the handshake finished (a TCP health check does that): counted, logged only at DEBUG.
REASONS = ("unknown_ca", "expired", "not_yet_valid", "no_certificate", "bad_certificate",
           "server_cert_rejected", "protocol", "not_tls", "timeout", "closed", "other")
QUIET_REASONS = frozenset({"closed"})

# X509_V_ERR_* codes (openssl/x509_vfy.h) of a chain that does not lead to a trusted CA
_UNKNOWN_CA_CODES = frozenset({2, 3, 18, 19, 20, 21, 24, 26, 27, 28})  # + 7 signature failure below
_EXPIRED_CODES = frozenset({10, 12})  # certificate / CRL has expired
_NOT_YET_VALID_CODES = frozenset({9, 11})
_NO_CERT_REASONS = frozenset({"PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"})
_PROTOCOL_REASONS = frozenset({"UNSUPPORTED_PROTOCOL", "NO_SHARED_CIPHER", "NO_PROTOCOLS_AVAILABLE",
                               "VERSION_TOO_LOW", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_SUITABLE_SIGNATURE_ALGORITHM",
                               "NO_SHARED_GROUPS", "NO_SHARED_SIGNATURE_ALGORITHMS", "WRONG_SSL_VERSION",
                               "UNKNOWN_PROTOCOL", "INAPPROPRIATE_FALLBACK"})
_NOT_TLS_REASONS = frozenset({"HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "WRONG_VERSION_NUMBER",
                              "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"})

LOG_INTERVAL = 60.0  # seconds between two lines for one (listener, address, reason)
GLOBAL_LINES = 20  # lines per GLOBAL_WINDOW across all addresses (many addresses cannot flood either)
GLOBAL_WINDOW = 60.0
MAX_PEERS = 1024  # addresses remembered for the per-address limit


def _words(reason: str) -> str:
    return reason.replace("_", " ").lower()


def classify(exc: BaseException | None) -> tuple[str, str]:
    """``(reason label, what happened in words)`` for the exception a failed server-side
    handshake raised (None: the connection was gone when the handshake returned)."""
    if exc is None:
        return "closed", "the client closed the connection during the handshake"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        message = getattr(exc, "verify_message", None)
        words = f"client certificate: {message}" if message else _words(getattr(exc, "reason", None) or "")
        if code in _EXPIRED_CODES:
            return "expired", words
        if code in _NOT_YET_VALID_CODES:
            return "not_yet_valid", words
        if code in _UNKNOWN_CA_CODES or code == 7:
            return "unknown_ca", words
        return "bad_certificate", words
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "closed", "the client closed the connection during the handshake"
    if isinstance(exc, ssl.SSLError):
        reason = str(getattr(exc, "reason", None) or "")  # absent on an SSLError not made by OpenSSL
        words = _words(reason) if reason else (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        if reason in _NO_CERT_REASONS:
            return "no_certificate", "the client sent no certificate (mutual TLS requires one)"
        if reason in _PROTOCOL_REASONS:
            return "protocol", f"no TLS version or cipher in common ({words}; TLS 1.2 is the minimum)"
        if reason in _NOT_TLS_REASONS:
            return "not_tls", f"the client does not speak TLS ({words})"
        if reason.startswith(("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")):
            # the client sent an alert: it refused the sidecar's certificate (or the handshake)
            return "server_cert_rejected", f"the client refused the handshake with the alert {words!r}"
        if reason in ("CERTIFICATE_VERIFY_FAILED", "BAD_CERTIFICATE", "CERT_LENGTH_MISMATCH"):
            return "bad_certificate", f"client certificate: {words}"
        return "other", words
    if isinstance(exc, ConnectionAbortedError):  # asyncio's ssl_handshake_timeout
        return "timeout", "the client did not complete the handshake in time"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, EOFError)):
        return "closed", "the client closed the connection during the handshake"
    if isinstance(exc, TimeoutError):
        return "timeout", "the client did not complete the handshake in time"
    return "other", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


class HandshakeRefusals:
    """Counts refused handshakes and logs them, rate-limited.  One per IngestServer, shared
    by its fronts (each on its own thread: hence the lock)."""

    def __init__(self, metrics: IngestMetrics | None, *, interval: float = LOG_INTERVAL,
                 global_lines: int = GLOBAL_LINES, global_window: float = GLOBAL_WINDOW,
                 max_peers: int = MAX_PEERS, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.interval = interval
        self.global_lines = global_lines
        self.global_window = global_window
        self.max_peers = max_peers
        self._clock = clock
        self._lock = threading.Lock()
        # (listener, peer, reason) -> [time of its last line, refusals not logged since]
        self._peers: OrderedDict[tuple[str, str, str], list[float]] = OrderedDict()
        self._window_start = -1e18
        self._window_lines = 0
        self._suppressed_elsewhere = 0  # refusals not logged because of the overall limit

    def refused(self, listener: str, peer: str, exc: BaseException | None) -> str:
        """Record one failed handshake; returns its reason label."""
        reason, words = classify(exc)
        if self.metrics is not None:
            self.metrics.observe_tls_handshake_failure(listener, reason)
        if reason in QUIET_REASONS:  # not a refusal: never takes a WARNING's place in the limits
            log.debug("ingest: %s TLS handshake with %s not completed (%s): %s", listener, peer or "?", reason, words,
                      extra={"listener": listener, "peer": peer, "reason": reason, "detail": words})
            return reason
        with self._lock:
            line = self._admit(listener, peer, reason)
        if line is None:
            return reason
        suppressed, suppressed_elsewhere = line
        extra: dict[str, Any] = {"listener": listener, "peer": peer, "reason": reason, "detail": words}
        if suppressed:
            extra["suppressed"] = suppressed  # refusals of this address not logged since its last line
        if suppressed_elsewhere:
            extra["suppressed_other_peers"] = suppressed_elsewhere
        log.warning("ingest: %s TLS handshake with %s refused (%s): %s", listener, peer or "?", reason, words,
                    extra=extra)
        return reason

    def _admit(self, listener: str, peer: str, reason: str) -> tuple[int, int] | None:
        """Whether to log now: (suppressed for this key, suppressed elsewhere), or None."""
        now = self._clock()
        key = (listener, peer, reason)
        entry = self._peers.get(key)
        if entry is not None:
            self._peers.move_to_end(key)
            if now - entry[0] < self.interval:
                entry[1] += 1
                return None
        if now - self._window_start >= self.global_window:
            self._window_start, self._window_lines = now, 0
        if self._window_lines >= self.global_lines:
            if entry is not None:
                entry[1] += 1
            else:
                self._suppressed_elsewhere += 1
            return None
        self._window_lines += 1
        suppressed = int(entry[1]) if entry is not None else 0
        self._peers[key] = [now, 0]
        self._peers.move_to_end(key)
        while len(self._peers) > self.max_peers:
            _key, (_t, lost) = self._peers.popitem(last=False)
            self._suppressed_elsewhere += int(lost)
        elsewhere, self._suppressed_elsewhere = self._suppressed_elsewhere, 0
        return suppressed, elsewhere


class _Handoff(asyncio.Protocol):
    """Stands in for the listener's protocol between the end of the handshake and the
    moment it is given the TLS transport: asyncio starts reading at once, so early data
    (an HTTP request sent with the client's Finished) is kept here and replayed."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None
        self.write_paused = False

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True  # the listener's protocol decides, once it has the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False

    def hand_over(self, app: asyncio.BaseProtocol, transport: asyncio.Transport) -> None:
        app.connection_made(transport)
        transport.set_protocol(app)
        if self.write_paused:
            app.pause_writing()
        if isinstance(app, asyncio.Protocol):
            for chunk in self.data:
                if transport.is_closing():
                    break
                app.data_received(chunk)
            if self.eof and not transport.is_closing() and not app.eof_received():
                transport.close()
        if self.lost is not None:
            app.connection_lost(self.lost[0])


class AlertingSSLObject(ssl.SSLObject):
    """The server-side TLS object of a listener connection (the front context's
    ``sslobject_class``).  When OpenSSL refuses the handshake it has written a fatal alert
    (``unknown ca``, ``certificate required``, ``certificate expired``, ``protocol
    version``) that asyncio would drop: asyncio sends what OpenSSL wrote only while a
    handshake waits for more data.  So the refusal is kept, reported to ``on_refused``, and
    the first time answered with "want read": asyncio sends the alert; the next call raises
    the refusal."""

    refusal: ssl.SSLError | None = None
    on_refused: Callable[[ssl.SSLError], None] | None = None

    def do_handshake(self) -> None:
        if self.refusal is not None:
            raise self.refusal
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, ssl.SSLEOFError, ssl.SSLZeroReturnError,
                ssl.SSLSyscallError):
            raise
        except ssl.SSLError as exc:
            if self.on_refused is None:
                raise
            self.refusal = exc
            self.on_refused(exc)
            raise ssl.SSLWantReadError("the refusal's alert is being sent") from exc


class _Carrier(ssl.SSLContext):
    """What ``start_tls`` is given in place of the front context: its ``wrap_bio`` makes the
    front context's TLS object and ties it to the connection's attempt.  Pooled: building an
    ``SSLContext`` costs ~0.4 ms, and a carrier is needed only until ``wrap_bio`` ran."""

    front: ssl.SSLContext
    pool: list[_Carrier]
    owner: _Attempt | None

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        sslobj = self.front.wrap_bio(incoming, outgoing, server_side=server_side, server_hostname=server_hostname,
                                     session=session)
        owner, self.owner = self.owner, None
        if owner is not None:
            if isinstance(sslobj, AlertingSSLObject):
                sslobj.on_refused = owner.refused
            _give_back(self)
        return sslobj


_POOL_MAX = 64


def _take_carrier(pool: list[_Carrier], front: ssl.SSLContext, owner: _Attempt) -> _Carrier:
    carrier = pool.pop() if pool else _Carrier(ssl.PROTOCOL_TLS_SERVER)
    carrier.front, carrier.pool, carrier.owner = front, pool, owner
    return carrier


def _give_back(carrier: _Carrier) -> None:
    carrier.owner = None
    if len(carrier.pool) < _POOL_MAX:
        carrier.pool.append(carrier)


LINGER = 1.0  # seconds a refused connection stays half-closed, so that the client reads the alert


class _Attempt:
    """One connection's handshake: the refusal OpenSSL made, if any."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.refusal: ssl.SSLError | None = None

    def refused(self, exc: ssl.SSLError) -> None:
        self.refusal = exc
        # after asyncio has written the alert: end our side, let the client read it and
        # close (its close or more data end the handshake at once), else close in LINGER s
        loop = asyncio.get_running_loop()
        loop.call_soon(self._half_close, loop)

    def _half_close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.transport.is_closing():
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
            loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()


class TlsAcceptor(asyncio.Protocol):
    """The protocol a TLS listener accepts plain TCP with: runs the handshake, reports a
    refusal (after sending the client its alert), or gives the TLS transport to
    ``make_app()``'s protocol."""

    def __init__(self, make_app: Callable[[], asyncio.BaseProtocol], tls: ServerTls, refusals: HandshakeRefusals,
                 listener: str, timeout: float, pending: set[asyncio.Task[None]], carriers: list[_Carrier]) -> None:
        self._make_app = make_app
        self._tls = tls
        self._refusals = refusals
        self._listener = listener
        self._timeout = timeout
        self._pending = pending
        self._carriers = carriers

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # nothing is read before start_tls owns the connection
        task = asyncio.get_running_loop().create_task(self._handshake(transport))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _handshake(self, transport: asyncio.Transport) -> None:
        peer = peer_address(transport)
        handoff = _Handoff()
        attempt = _Attempt(transport)
        carrier = _take_carrier(self._carriers, self._tls.front, attempt)
        loop = asyncio.get_running_loop()
        try:
            tls_transport = await loop.start_tls(transport, handoff, carrier, server_side=True,
                                                 ssl_handshake_timeout=self._timeout)
        except asyncio.CancelledError:  # the listener is closing
            transport.abort()
            raise
        except Exception as exc:  # start_tls has closed the connection
            self._refusals.refused(self._listener, peer, attempt.refusal or exc)
            return
        finally:
            if carrier.owner is attempt:  # wrap_bio never ran (cancelled early)
                _give_back(carrier)
        if tls_transport is None:  # the connection was closed (by the client, or after the alert)
            self._refusals.refused(self._listener, peer, attempt.refusal)
            return
        handoff.hand_over(self._make_app(), tls_transport)


def listen_factory(make_app: Callable[[], asyncio.BaseProtocol], tls: ServerTls | None,
                   refusals: HandshakeRefusals, listener: str, timeout: float,
                   pending: set[asyncio.Task[None]]) -> Callable[[], asyncio.BaseProtocol]:
    """The protocol factory for ``loop.create_server``: ``make_app`` itself without TLS."""
    if tls is None:
        return make_app
    tls.front.sslobject_class = AlertingSSLObject  # the same for every listener of this ServerTls
    carriers: list[_Carrier] = []  # this listener's (one event loop's) idle carriers
    return lambda: TlsAcceptor(make_app, tls, refusals, listener, timeout, pending, carriers)
