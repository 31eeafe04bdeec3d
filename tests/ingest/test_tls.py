"""Mutual TLS on the HTTP and syslog listeners (pipeline/ingest/tls.py, docs/INGEST.md §6):
who gets in, what identity is stored, certificate rotation without restart, bad settings
refused at start."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.hot.writer import HotLog
from pipeline.ingest.server import IngestServer
from pipeline.ingest.tls import ServerTls, TlsConfigError, TlsSettings
from tests.hotutil import records
from tests.ingest.certs import CA, SPIFFE, Issued, standard_pki

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    return standard_pki(tmp_path)


@pytest.fixture
def served(tmp_path: Path, pki: dict[str, Any]) -> Iterator[tuple[IngestServer, Path]]:
    hot = tmp_path / "hot"
    log = HotLog(hot, "app", durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(log, http_listen="127.0.0.1:0", syslog_listen="127.0.0.1:0",
                       tls=TlsSettings(pki["server"].cert, pki["server"].key, pki["ca"].path,
                                       allowed_clients=(f"uri:{SPIFFE}",))).start()
    try:
        yield srv, hot
    finally:
        srv.stop(1)
        log.close()


def events(hot: Path) -> list[dict[str, Any]]:
    return [r.data for r in records(hot / "app") if r.kind == "event"] if (hot / "app").exists() else []


def client_ctx(ca: CA, issued: Issued | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.path))
    if issued is not None:
        ctx.load_cert_chain(str(issued.cert), str(issued.key))
    return ctx


def post(srv: IngestServer, ctx: ssl.SSLContext, body: bytes = b'{"n":1}\n') -> tuple[int, dict[str, Any]]:
    assert srv.http_address is not None
    conn = http.client.HTTPSConnection("127.0.0.1", srv.http_address[1], context=ctx, timeout=10)
    try:
        conn.request("POST", "/v1/events", body=body)
        resp = conn.getresponse()
        return resp.status, orjson.loads(resp.read())
    finally:
        conn.close()


def test_mutual_tls_stores_the_certificate_identity(served: tuple[IngestServer, Path], pki: dict[str, Any]) -> None:
    srv, hot = served
    status, body = post(srv, client_ctx(pki["ca"], pki["good"]), b'{"n":1}\n{"n":2}\n')
    assert status == 200 and body["accepted"] == 2
    assert events(hot) == [{"_sender": {"auth": "x509", "id": SPIFFE, "peer": "127.0.0.1"}, "n": 1},
                           {"_sender": {"auth": "x509", "id": SPIFFE, "peer": "127.0.0.1"}, "n": 2}]


def test_sender_cannot_forge_the_identity(served: tuple[IngestServer, Path], pki: dict[str, Any]) -> None:
    srv, hot = served
    status, body = post(srv, client_ctx(pki["ca"], pki["good"]),
                        b'{"n":1}\n{"_sender":{"auth":"x509","id":"spiffe://example.org/admin"}}\n')
    assert status == 422 and body["reasons"] == {"reserved-key": 1} and body["errors"][0]["event"] == 2
    assert events(hot) == []
    # nested deeper it is only data: the reserved key is the top-level one
    status, _ = post(srv, client_ctx(pki["ca"], pki["good"]), b'{"detail":{"_sender":"x"}}\n')
    assert status == 200 and events(hot)[0]["detail"] == {"_sender": "x"}


@pytest.mark.parametrize("who", ["none", "expired", "foreign"])
def test_clients_refused_at_the_handshake(served: tuple[IngestServer, Path], pki: dict[str, Any], who: str) -> None:
    srv, hot = served
    ctx = client_ctx(pki["other"] if who == "foreign" else pki["ca"], None if who == "none" else pki[who])
    if who == "foreign":  # trusts the server's CA, presents a certificate of another
        ctx = client_ctx(pki["ca"], pki["foreign"])
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        post(srv, ctx)
    assert srv.syslog_address is not None
    with pytest.raises((ssl.SSLError, ConnectionError)), \
            ctx.wrap_socket(socket.create_connection(srv.syslog_address, timeout=10), server_hostname="localhost") as s:
        s.sendall(b"<13>1 - h a - - - refused\n")
        assert s.recv(10) == b""  # TLS 1.3: the refusal arrives after the client's Finished
        raise ConnectionResetError("closed without a word")
    time.sleep(0.3)
    assert events(hot) == []


def test_identity_not_allowed(served: tuple[IngestServer, Path], pki: dict[str, Any]) -> None:
    srv, hot = served
    status, body = post(srv, client_ctx(pki["ca"], pki["stranger"]))
    assert status == 403 and "not allowed" in body["error"] and "spiffe://example.org/ns/x/sa/y" in body["error"]
    assert srv.syslog_address is not None
    with client_ctx(pki["ca"], pki["stranger"]).wrap_socket(
            socket.create_connection(srv.syslog_address, timeout=10), server_hostname="localhost") as s, \
            pytest.raises((ConnectionError, ssl.SSLError)):
        s.sendall(b"<13>1 - h a - - - not allowed\n")
        if s.recv(10) == b"":
            raise ConnectionResetError("closed")
    time.sleep(0.3)
    assert events(hot) == []


def _serial(sock: ssl.SSLSocket) -> str:
    cert = sock.getpeercert()
    assert cert is not None
    return str(cert["serialNumber"])


def test_rotation_while_clients_stay_connected(served: tuple[IngestServer, Path], pki: dict[str, Any]) -> None:
    srv, hot = served
    ctx = client_ctx(pki["ca"], pki["good"])
    assert srv.http_address is not None and srv.syslog_address is not None
    keep = http.client.HTTPSConnection("127.0.0.1", srv.http_address[1], context=ctx, timeout=10)
    keep.request("POST", "/v1/events", body=b'{"phase":"before"}\n')
    assert keep.getresponse().read() and keep.sock is not None
    old_serial = _serial(keep.sock)
    syslog = ctx.wrap_socket(socket.create_connection(srv.syslog_address, timeout=10), server_hostname="localhost")
    syslog.sendall(b"<13>1 - h a - - - before\n")
    # cert-manager writes the new pair (a renewal by the same CA)
    pki["ca"].server()
    time.sleep(1.1)  # the files are looked at once per second at most
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", srv.http_address[1]), timeout=10),
                         server_hostname="localhost") as fresh:
        assert _serial(fresh) != old_serial  # new handshakes get the new certificate
    keep.request("POST", "/v1/events", body=b'{"phase":"after"}\n')  # the old connection goes on
    assert keep.getresponse().status == 200
    syslog.sendall(b"<13>1 - h a - - - after\n")
    syslog.close()
    keep.close()
    deadline = time.monotonic() + 10
    while len(events(hot)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    got = [str(e.get("phase") or e.get("message")) for e in events(hot)]
    assert sorted(got) == ["after", "after", "before", "before"]
    assert srv.tls is not None and srv.tls.reloads == 1


def test_half_rotated_pair_keeps_the_old_certificate(tmp_path: Path, pki: dict[str, Any]) -> None:
    server = pki["server"]
    tls = ServerTls(TlsSettings(server.cert, server.key, pki["ca"].path))
    new = pki["ca"].issue("next", dns=("localhost",), server=True)
    shutil.copy(new.cert, server.cert)  # the certificate first, the key not yet
    assert not tls.maybe_reload(force=True) and tls.reload_failures == 1
    shutil.copy(new.key, server.key)
    assert tls.maybe_reload(force=True) and tls.reloads == 1


def test_bad_certificate_settings_fail_at_start(tmp_path: Path, pki: dict[str, Any]) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    server = pki["server"]
    cases = [
        (TlsSettings(garbage, server.key), "ingest.tls_cert: "),
        (TlsSettings(server.cert, pki["good"].key), "ingest.tls_cert / ingest.tls_key: cannot load"),
        (TlsSettings(server.cert, server.key, tmp_path / "missing.pem"), "ingest.client_ca: cannot read"),
        (TlsSettings(pki["expired"].cert, pki["expired"].key), "ingest.tls_cert: the certificate in .* expired on"),
    ]
    for settings, message in cases:
        with pytest.raises(TlsConfigError, match=message):
            ServerTls(settings)
    assert TlsSettings(None, None, pki["ca"].path).problems() == [
        "ingest.client_ca: mutual TLS needs ingest.tls_cert and ingest.tls_key"]


def _run_check(tmp_path: Path, ingest: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(f'[hot]\ndir = "{tmp_path / "hot"}"\n[cold]\nurl = "file://{tmp_path / "cold"}"\n'
                   f"[ingest]\n{ingest}\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", str(cfg), "--check"],
                          capture_output=True, text=True, env=env, timeout=60)


def test_run_check_finds_bad_certificates_and_plaintext(tmp_path: Path, pki: dict[str, Any]) -> None:
    server = pki["server"]
    out = _run_check(tmp_path, f'http = "127.0.0.1:0"\ntls_cert = "{server.cert}"\ntls_key = "{pki["good"].key}"')
    assert out.returncode == 2 and "ingest.tls_cert / ingest.tls_key: cannot load the certificate and key" in out.stderr
    out = _run_check(tmp_path, 'syslog = "0.0.0.0:6514"\nrelp = "0.0.0.0:2514"')
    assert out.returncode == 2
    assert "ingest.syslog: a listener on 0.0.0.0 without TLS" in out.stderr and "ingest.allow_plaintext" in out.stderr
    assert "ingest.relp: a listener on 0.0.0.0 without TLS" in out.stderr
    out = _run_check(tmp_path, f'syslog = "0.0.0.0:6514"\ntls_cert = "{server.cert}"\ntls_key = "{server.key}"')
    assert out.returncode == 2 and "ingest.syslog: a syslog listener reachable from the network needs client " \
                                   "certificates" in out.stderr
    out = _run_check(tmp_path, f'syslog = "0.0.0.0:6514"\ntls_cert = "{server.cert}"\ntls_key = "{server.key}"\n'
                               f'client_ca = "{pki["ca"].path}"\nallowed_clients = ["uri:{SPIFFE}"]')
    assert out.returncode == 0, out.stderr
    out = _run_check(tmp_path, 'syslog = "127.0.0.1:6514"\nrelp = "[::1]:2514"')  # loopback: plaintext is fine
    assert out.returncode == 0, out.stderr


def test_kubernetes_secret_symlink_swap_is_reloaded(tmp_path: Path, pki: dict[str, Any]) -> None:
    """A Secret volume: tls.crt -> ..data/tls.crt, and an update swaps the ..data symlink
    to a new timestamped directory (what the kubelet does)."""
    vol = tmp_path / "secret"
    vol.mkdir()

    def publish(issued: Issued, name: str) -> None:
        d = vol / name
        d.mkdir()
        shutil.copy(issued.cert, d / "tls.crt")
        shutil.copy(issued.key, d / "tls.key")
        tmp_link = vol / "..data_tmp"
        tmp_link.symlink_to(name)
        os.replace(tmp_link, vol / "..data")

    publish(pki["server"], "..2026_12_06_18_00_00.1")
    for f in ("tls.crt", "tls.key"):
        (vol / f).symlink_to(f"..data/{f}")
    tls = ServerTls(TlsSettings(vol / "tls.crt", vol / "tls.key", pki["ca"].path))
    assert not tls.maybe_reload(force=False)
    publish(pki["ca"].issue("renewed", dns=("localhost",), server=True), "..2026_12_06_19_00_00.2")
    time.sleep(1.05)
    assert tls.maybe_reload() and tls.reloads == 1
