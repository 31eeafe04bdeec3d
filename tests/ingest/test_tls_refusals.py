"""Refused TLS handshakes are visible to the operator (pipeline/ingest/handshake.py,
docs/INGEST.md §6.4): real clients, real handshakes against the HTTP, syslog and RELP
listeners; the counter ``worm_ingest_tls_handshake_failures_total{listener,reason}`` and one
rate-limited WARNING naming the peer and the reason."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.hot.writer import HotLog
from pipeline.ingest.handshake import REASONS, HandshakeRefusals, _Handoff, classify
from pipeline.ingest.server import IngestServer
from pipeline.ingest.tls import TlsSettings
from pipeline.ops import Metrics
from tests.hotutil import records
from tests.ingest.certs import CA, SPIFFE, Issued, standard_pki

LISTENERS = ("http", "syslog", "relp")
METRIC = "worm_ingest_tls_handshake_failures_total"


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    return standard_pki(tmp_path)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno == logging.WARNING]


@pytest.fixture
def lines() -> Iterator[Lines]:
    logger = logging.getLogger("pipeline.ingest.tls")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def served(tmp_path: Path, pki: dict[str, Any]) -> Iterator[tuple[IngestServer, Path, Metrics]]:
    hot = tmp_path / "hot"
    metrics = Metrics()
    log = HotLog(hot, "app", durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(log, http_listen="127.0.0.1:0", syslog_listen="127.0.0.1:0", relp_listen="127.0.0.1:0",
                       tls=TlsSettings(pki["server"].cert, pki["server"].key, pki["ca"].path,
                                       allowed_clients=(f"uri:{SPIFFE}",)),
                       metrics=metrics, request_timeout=3).start()
    try:
        yield srv, hot, metrics
    finally:
        srv.stop(1)
        log.close()


def events(hot: Path) -> list[dict[str, Any]]:
    return [r.data for r in records(hot / "app") if r.kind == "event"] if (hot / "app").exists() else []


def client_ctx(ca: CA, issued: Issued | None, *, tls10: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.path))
    if tls10:  # an old client that speaks TLS 1.0 only (OpenSSL needs security level 0 for it)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if issued is not None:
        ctx.load_cert_chain(str(issued.cert), str(issued.key))
    return ctx


def address(srv: IngestServer, listener: str) -> tuple[str, int]:
    addr = {"http": srv.http_address, "syslog": srv.syslog_address, "relp": srv.relp_address}[listener]
    assert addr is not None
    return addr


def attempt(srv: IngestServer, listener: str, ctx: ssl.SSLContext, source: str = "127.0.0.1") -> bytes | str:
    """One connection as that listener's real clients make it: the answer (b"" when closed
    without a word), or the client's error as text."""
    host, port = address(srv, listener)
    raw = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
    try:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            if listener == "http":
                s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n{\"n\":1}\n")
            elif listener == "syslog":
                s.sendall(b"<13>1 - h a - - - refused?\n")
            else:
                offers = b"relp_version=0\nrelp_software=test\ncommands=syslog"
                s.sendall(b"1 open %d %s\n2 syslog 9 <13>hello\n" % (len(offers), offers))
            return s.recv(4096)
    except (ssl.SSLError, ConnectionError) as exc:
        return str(exc)
    finally:
        raw.close()


def count(metrics: Metrics, listener: str, reason: str) -> float:
    return metrics.registry.get_sample_value(METRIC, {"listener": listener, "reason": reason}) or 0.0


def wait_for(metrics: Metrics, listener: str, reason: str, n: float, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while count(metrics, listener, reason) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert count(metrics, listener, reason) == n, (listener, reason, count(metrics, listener, reason))


CASES = {  # who -> (reason label, words the log line must hold, the TLS alert the client reports)
    "foreign": ("unknown_ca", "unable to get local issuer certificate", "alert unknown ca"),
    "expired": ("expired", "certificate has expired", "alert certificate expired"),
    "none": ("no_certificate", "the client sent no certificate", "alert certificate required"),
    "tls10": ("protocol", "TLS 1.2 is the minimum", "alert protocol version"),
    # the client does not trust the sidecar's certificate: it sends the alert, the sidecar counts it
    "distrust": ("server_cert_rejected", "unknown ca", "certificate verify failed"),
}


def ctx_for(pki: dict[str, Any], who: str) -> ssl.SSLContext:
    if who == "tls10":
        return client_ctx(pki["ca"], pki["good"], tls10=True)
    if who == "distrust":
        return client_ctx(pki["other"], pki["good"])
    return client_ctx(pki["ca"], None if who == "none" else pki[who])


@pytest.mark.parametrize("who", list(CASES))
def test_refused_handshake_is_counted_and_logged(served: tuple[IngestServer, Path, Metrics], pki: dict[str, Any],
                                                 lines: Lines, who: str) -> None:
    srv, hot, metrics = served
    reason, words, alert = CASES[who]
    for listener in LISTENERS:
        seen = attempt(srv, listener, ctx_for(pki, who))
        assert isinstance(seen, str) and alert in seen, seen  # the client is told why, not just EOF
        wait_for(metrics, listener, reason, 1)
        logged = [r for r in lines.warnings() if getattr(r, "listener", None) == listener]
        assert len(logged) == 1, [r.getMessage() for r in logged]
        line = logged[0]
        assert (getattr(line, "peer", None), getattr(line, "reason", None)) == ("127.0.0.1", reason)
        assert words in line.getMessage() and "127.0.0.1" in line.getMessage() and listener in line.getMessage()
    # nothing else was counted, nothing stored
    others = {(lst, r): count(metrics, lst, r) for lst in LISTENERS for r in REASONS if r != reason}
    assert not any(others.values()), others
    time.sleep(0.2)
    assert events(hot) == []
    # the good client still gets in, on every listener, and its identity is stored
    good = client_ctx(pki["ca"], pki["good"])
    http_answer, relp_answer = attempt(srv, "http", good), attempt(srv, "relp", good)
    assert isinstance(http_answer, bytes) and http_answer.startswith(b"HTTP/1.1 200"), http_answer
    assert isinstance(relp_answer, bytes) and relp_answer.startswith(b"1 rsp "), relp_answer
    deadline = time.monotonic() + 10
    while len(events(hot)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e["_sender"]["id"] for e in events(hot)] == [SPIFFE, SPIFFE]


def test_a_client_retrying_in_a_loop_cannot_flood_the_log(served: tuple[IngestServer, Path, Metrics],
                                                          pki: dict[str, Any], lines: Lines) -> None:
    srv, hot, metrics = served
    ctx = client_ctx(pki["ca"], pki["foreign"])
    host, port = address(srv, "syslog")
    for _ in range(1000):
        raw = socket.create_connection((host, port), timeout=10)
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.recv(1)  # TLS 1.3: the refusal comes after the client's Finished
        except (ssl.SSLError, ConnectionError):
            pass
        finally:
            raw.close()
    wait_for(metrics, "syslog", "unknown_ca", 1000)
    assert len(lines.warnings()) == 1  # one line per address per minute
    # many addresses (127.0.0.0/8 is all loopback): the overall limit holds
    for i in range(2, 62):
        attempt(srv, "syslog", ctx, source=f"127.0.0.{i}")
    wait_for(metrics, "syslog", "unknown_ca", 1060)
    peers = [getattr(r, "peer", None) for r in lines.warnings()]
    assert len(peers) == 20 and peers[1] == "127.0.0.2"  # GLOBAL_LINES per minute
    assert events(hot) == []


def test_the_http_request_sent_with_the_clients_finished_is_not_lost(served: tuple[IngestServer, Path, Metrics],
                                                                     pki: dict[str, Any]) -> None:
    """The handshake's last flight and the first request in one TCP segment: the request
    is read by asyncio before the listener's protocol has the transport, and must reach it."""
    srv, hot, _metrics = served
    ctx = client_ctx(pki["ca"], pki["good"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(address(srv, "http"), timeout=10) as s:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    s.sendall(outgoing.read())
                incoming.write(s.recv(65536))
        body = b'{"n":1}\n'
        tls.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
        s.sendall(outgoing.read())  # Certificate, CertificateVerify, Finished and the request at once
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = s.recv(65536)
            assert data, answer
            incoming.write(data)
            with contextlib.suppress(ssl.SSLWantReadError):
                answer += tls.read(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert events(hot)[0]["_sender"] == {"auth": "x509", "id": SPIFFE, "peer": "127.0.0.1"}


def test_a_client_that_leaves_or_stalls_during_the_handshake(served: tuple[IngestServer, Path, Metrics],
                                                             lines: Lines) -> None:
    srv, _hot, metrics = served
    socket.create_connection(address(srv, "relp"), timeout=10).close()  # a TCP health check
    wait_for(metrics, "relp", "closed", 1)
    with socket.create_connection(address(srv, "http"), timeout=10) as s:  # plain HTTP on the TLS port
        s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not s.recv(100).startswith(b"HTTP")
    wait_for(metrics, "http", "not_tls", 1)
    with socket.create_connection(address(srv, "syslog"), timeout=10) as s:  # says nothing for too long
        s.settimeout(10)
        assert s.recv(100) == b""  # request_timeout is 3 s here
    wait_for(metrics, "syslog", "timeout", 1)
    assert [getattr(r, "reason", None) for r in lines.warnings()] == ["not_tls", "timeout"]
    assert [getattr(r, "reason", None) for r in lines.records if r.levelno == logging.DEBUG] == ["closed"]


def test_a_refused_client_that_does_not_close_is_closed_after_the_alert(
        served: tuple[IngestServer, Path, Metrics], pki: dict[str, Any], lines: Lines) -> None:
    """TLS 1.3: the client's handshake completes before the sidecar checks its certificate.
    It reads the alert, then the end of the stream (the sidecar half-closed), and the sidecar
    closes the connection itself about LINGER (1 s) later although the client stays."""
    srv, _hot, metrics = served
    s = client_ctx(pki["ca"], None).wrap_socket(  # no certificate
        socket.create_connection(address(srv, "relp"), timeout=10), server_hostname="localhost")
    try:
        started = time.monotonic()
        with pytest.raises(ssl.SSLError, match="alert certificate required"):
            s.recv(100)
        with socket.socket(fileno=os.dup(s.fileno())) as plain:
            plain.settimeout(10)  # the descriptor is non-blocking (the SSL socket's timeout)
            assert plain.recv(100) == b""  # FIN after the alert
        # the connection is still open (the count comes when it ends)...
        assert count(metrics, "relp", "no_certificate") == 0, [r.getMessage() for r in lines.records]
        wait_for(metrics, "relp", "no_certificate", 1, timeout=10)  # ...until the sidecar closes it
        elapsed = time.monotonic() - started
        assert 0.9 < elapsed < 9, elapsed
    finally:
        s.close()
    assert [getattr(r, "reason", None) for r in lines.warnings()] == ["no_certificate"], \
        [r.getMessage() for r in lines.records]


# ---------------------------------------------------------------- units


def test_the_log_limit_per_address_overall_and_its_memory() -> None:
    now = [0.0]
    seen: list[tuple[str, str]] = []

    class Recorder:
        def observe_tls_handshake_failure(self, listener: str, reason: str) -> None:
            seen.append((listener, reason))

    refusals = HandshakeRefusals(Recorder(), interval=60, global_lines=5, global_window=60, max_peers=3,  # type: ignore[arg-type]
                                 clock=lambda: now[0])
    logger = logging.getLogger("pipeline.ingest.tls")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        exc = ssl.SSLError(1, "x")
        for _ in range(10):
            refusals.refused("syslog", "10.0.0.1", exc)
        assert len(handler.records) == 1 and len(seen) == 10
        now[0] = 61
        refusals.refused("syslog", "10.0.0.1", exc)
        assert len(handler.records) == 2 and getattr(handler.records[-1], "suppressed", None) == 9
        for i in range(2, 10):  # 8 more addresses: 4 lines fit in this minute's budget of 5 (1 used)
            refusals.refused("syslog", f"10.0.0.{i}", exc)
        assert len(handler.records) == 6
        assert len(refusals._peers) == 3  # the table of addresses is capped
        now[0] = 130
        refusals.refused("syslog", "10.0.0.99", exc)
        assert getattr(handler.records[-1], "suppressed_other_peers", 0) == 4
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_classification_is_bounded() -> None:
    cases: list[BaseException | None] = [None, ssl.SSLError(1, "[SSL: SOMETHING_NEW] new"), ConnectionAbortedError(),
                                         ConnectionResetError(), RuntimeError("boom"), TimeoutError()]
    assert all(classify(c)[0] in REASONS for c in cases)
    assert classify(ConnectionAbortedError("SSL handshake is taking longer than 3 seconds"))[0] == "timeout"


def test_early_data_is_replayed_in_order_to_the_listeners_protocol() -> None:
    import asyncio

    got: list[Any] = []

    class App(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            got.append("made")

        def data_received(self, data: bytes) -> None:
            got.append(data)

        def eof_received(self) -> bool:
            got.append("eof")
            return False

        def connection_lost(self, exc: Exception | None) -> None:
            got.append("lost")

    class Transport(asyncio.Transport):
        def __init__(self) -> None:
            super().__init__()
            self.protocol: Any = None
            self.closed = False

        def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
            self.protocol = protocol

        def is_closing(self) -> bool:
            return self.closed

        def close(self) -> None:
            self.closed = True

    handoff = _Handoff()
    handoff.data_received(b"a")
    handoff.data_received(b"b")
    assert handoff.eof_received() is True
    transport, app = Transport(), App()
    handoff.hand_over(app, transport)
    assert got == ["made", b"a", b"b", "eof"] and transport.protocol is app and transport.closed


def test_the_carrier_pool_is_bounded() -> None:
    from pipeline.ingest import handshake

    pool: list[Any] = []
    front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    carriers = [handshake._take_carrier(pool, front, None) for _ in range(handshake._POOL_MAX + 10)]  # type: ignore[arg-type]
    for carrier in carriers:
        handshake._give_back(carrier)
    assert len(pool) == handshake._POOL_MAX
    again = handshake._take_carrier(pool, front, None)  # type: ignore[arg-type]
    assert again in carriers and len(pool) == handshake._POOL_MAX - 1
