"""A second host (a network namespace joined by a veth pair, iproute2): the non-loopback
plaintext refusal on a real interface address, and a remote client over mutual TLS whose
address and certificate identity are stored."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.hot.writer import HotLog
from pipeline.ingest.server import IngestServer
from pipeline.ingest.tls import TlsSettings
from tests.hotutil import records
from tests.ingest.certs import CA

REPO = Path(__file__).resolve().parents[2]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def remote_host() -> Iterator[tuple[str, str, str]]:
    """(namespace, this host's address, the namespace's address) on a private /30."""
    tag = secrets.token_hex(3)
    ns, host_if, peer_if = f"worm-{tag}", f"wh{tag}", f"wp{tag}"
    octet = 1 + secrets.randbelow(250)
    here, there = f"10.213.{octet}.1", f"10.213.{octet}.2"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        _ip("link", "set", peer_if, "netns", ns)
        _ip("addr", "add", f"{here}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", ns, "addr", "add", f"{there}/30", "dev", peer_if)
        _ip("-n", ns, "link", "set", peer_if, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield ns, here, there
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _in_ns(ns: str, code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, env=env, timeout=60)


def _check(tmp_path: Path, ingest: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(f'[hot]\ndir = "{tmp_path / "hot"}"\n[cold]\nurl = "file://{tmp_path / "cold"}"\n'
                   f"[ingest]\n{ingest}\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", str(cfg), "--check"],
                          capture_output=True, text=True, env=env, timeout=60)


def test_plaintext_on_an_interface_address_needs_allow_plaintext(
        tmp_path: Path, remote_host: tuple[str, str, str]) -> None:
    _ns, here, _there = remote_host
    out = _check(tmp_path, f'syslog = "{here}:6514"')
    assert out.returncode == 2
    assert f"ingest.syslog: a listener on {here} without TLS is reachable from the network" in out.stderr
    assert "ingest.allow_plaintext = true" in out.stderr
    assert _check(tmp_path, f'syslog = "{here}:6514"\nallow_plaintext = true').returncode == 0


def test_remote_client_over_mutual_tls(tmp_path: Path, remote_host: tuple[str, str, str]) -> None:
    ns, here, there = remote_host
    ca = CA(tmp_path)
    server = ca.issue("server", dns=("sidecar.example.net",), ips=(here,), server=True)
    client = ca.issue("client", dns=("node-7.example.net",))
    log = HotLog(tmp_path / "hot", "app", durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(log, http_listen=f"{here}:0", syslog_listen=f"{here}:0",
                       tls=TlsSettings(server.cert, server.key, ca.path, ("dns:node-7.example.net",))).start()
    try:
        assert srv.http_address is not None and srv.syslog_address is not None
        out = _in_ns(ns, f"""
            import http.client, socket, ssl
            ctx = ssl.create_default_context(cafile={str(ca.path)!r})
            ctx.load_cert_chain({str(client.cert)!r}, {str(client.key)!r})
            c = http.client.HTTPSConnection({here!r}, {srv.http_address[1]}, context=ctx, timeout=10)
            c.request("POST", "/v1/events", body=b'{{"from":"node-7"}}\\n')
            r = c.getresponse(); print(r.status, r.read().decode())
            s = ctx.wrap_socket(socket.create_connection(({here!r}, {srv.syslog_address[1]})), server_hostname={here!r})
            s.sendall(b"<38>1 2026-12-06T18:00:00Z node-7 sshd 9 - - login ok\\n"); s.close()
            # a client on that host without a certificate is refused
            bare = ssl.create_default_context(cafile={str(ca.path)!r})
            try:
                c2 = http.client.HTTPSConnection({here!r}, {srv.http_address[1]}, context=bare, timeout=10)
                c2.request("POST", "/v1/events", body=b'{{"from":"anonymous"}}\\n'); c2.getresponse().read()
                print("NOT REFUSED")
            except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected):
                print("refused")
        """)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("200 ") and "refused" in out.stdout and "NOT REFUSED" not in out.stdout
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len([r for r in records(tmp_path / "hot" / "app")
                                                   if r.kind == "event"]) < 2:
            time.sleep(0.05)
    finally:
        srv.stop(1)
        log.close()
    got = [r.data for r in records(tmp_path / "hot" / "app") if r.kind == "event"]
    sender = {"auth": "x509", "id": "node-7.example.net", "peer": there}
    assert got[0] == {"_sender": sender, "from": "node-7"}
    assert got[1]["_sender"] == sender and got[1]["message"] == "login ok" and got[1]["hostname"] == "node-7"
    assert len(got) == 2
