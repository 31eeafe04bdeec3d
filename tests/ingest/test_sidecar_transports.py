"""`pipeline run` with syslog and RELP listeners under mutual TLS: the configuration keys
reach the listeners, syslog messages go through the log's sanitiser, the sender's
identity is stored, and the transports are counted in the metrics."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time
from pathlib import Path

from tests.hotutil import records
from tests.ingest.certs import CA
from tests.ingest.transport import free_port
from tests.ship.conftest import make_bucket
from tests.ship.test_sidecar import Sidecar


def test_pipeline_run_with_syslog_and_relp_over_mutual_tls(tmp_path: Path, moto_endpoint: str) -> None:
    s3_endpoint, locked_bucket = moto_endpoint, make_bucket(moto_endpoint)
    ca = CA(tmp_path)
    server = ca.server()
    client = ca.issue("client", dns=("node-1.example.net",))
    syslog_port, relp_port = free_port(), free_port()
    sc = Sidecar(tmp_path, s3_endpoint, locked_bucket)
    ingest = sc.sections["ingest"]
    assert isinstance(ingest, dict)
    ingest.update({"syslog": f"127.0.0.1:{syslog_port}", "relp": f"127.0.0.1:{relp_port}",
                                  "tls_cert": str(server.cert), "tls_key": str(server.key),
                                  "client_ca": str(ca.path), "allowed_clients": ["dns:node-1.example.net"]})
    sc.write_config()
    sc.start()
    try:
        # a client without a certificate: refused at the handshake, counted (docs/INGEST.md 6.4)
        anonymous = ssl.create_default_context(cafile=str(ca.path))
        with anonymous.wrap_socket(socket.create_connection(("127.0.0.1", relp_port)),
                                   server_hostname="localhost") as s, contextlib.suppress(ssl.SSLError, OSError):
            s.sendall(b"1 open 0\n")
            assert s.recv(100) == b""
        ctx = ssl.create_default_context(cafile=str(ca.path))
        ctx.load_cert_chain(str(client.cert), str(client.key))
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", syslog_port)), server_hostname="localhost") as s:
            s.sendall(b"<38>1 2026-12-06T18:00:00Z node-1 login 77 - [login@32473 password=\"hunter2\"] "
                      b"user bob logged in with token=ghp_abcdefghijklmnopqrstuvwxyz0123456789\n")
            s.shutdown(socket.SHUT_WR)
            while s.recv(100):
                pass
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", relp_port)), server_hostname="localhost") as s:
            offers = b"relp_version=0\nrelp_software=test\ncommands=syslog"
            s.sendall(b"1 open %d %s\n" % (len(offers), offers))
            assert s.recv(200).startswith(b"1 rsp ")
            msg = b"<38>1 - node-1 relp - - - over relp"
            s.sendall(b"2 syslog %d %s\n" % (len(msg), msg))
            assert s.recv(100) == b"2 rsp 6 200 OK\n"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            evs = [r.data for r in records(sc.hot / "app") if r.kind == "event"]
            if len(evs) >= 2:
                break
            time.sleep(0.1)
        status, metrics = sc.get("/metrics")
    finally:
        sc.stop()
    sender = {"auth": "x509", "id": "node-1.example.net", "peer": "127.0.0.1"}
    first = next(e for e in evs if e.get("app_name") == "login")
    assert first["_sender"] == sender
    assert first["structured_data"] == {"login@32473": {"password": "[REDACTED:secret-key]"}}
    assert "ghp_" not in first["message"] and "[REDACTED:" in first["message"]
    relp = next(e for e in evs if e.get("app_name") == "relp")
    assert relp["_sender"] == sender and relp["message"] == "over relp"
    assert status == 200
    assert 'worm_ingest_requests_total{code="ok",transport="syslog"}' in metrics \
        or 'worm_ingest_requests_total{transport="syslog",code="ok"}' in metrics, metrics[-3000:]
    failures = {(m["listener"], m["reason"]): float(m["value"]) for m in re.finditer(
        r'worm_ingest_tls_handshake_failures_total\{listener="(?P<listener>\w+)",reason="(?P<reason>\w+)"\} '
        r'(?P<value>[0-9.e+]+)', metrics)}
    # every reason of each TLS listener is there from the start; the refusal is counted once
    assert {k: v for k, v in failures.items() if v} == {("relp", "no_certificate"): 1.0}, failures
    assert {("syslog", "unknown_ca"), ("http", "timeout"), ("relp", "closed")} <= set(failures), failures
    for kind in ("syslog", "relp"):  # stored batches are timed like HTTP requests
        assert re.search(rf'worm_ingest_ack_seconds_count\{{transport="{kind}"\}} [1-9]', metrics), kind
