"""Real forwarders against the sidecar's syslog and RELP listeners, configured with the
snippets of docs/FORWARDERS.md: rsyslog omfwd over TLS (x509/name), rsyslog omrelp (TLS),
syslog-ng network(transport(tls)).  Every message sent is stored once, in order, with the
client certificate's identity in ``_sender``."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.ingest.certs import CA
from tests.ingest.transport import (
    Pki,
    doc_snippet,
    free_port,
    localise,
    rsyslogd,
    sidecar,
    start_sidecar,
    stop_sidecar,
    stored_events,
    syslog_ng,
    syslog_ng_available,
    wait_for,
)

CLIENT = "rsyslog.web-1.example.net"


def _ids(events: list[dict[str, Any]], prefix: str) -> list[int]:
    out = []
    for e in events:
        m = re.search(prefix + r"-(\d+)", e.get("message", ""))
        if m:
            out.append(int(m.group(1)))
    return out


def _app_lines(n: int, prefix: str) -> list[str]:
    # what an application hands rsyslog: RFC 3164-style lines with a tag
    return [f"<134>Dec  6 18:00:00 web-1 shop[42]: {prefix}-{i:06d} order placed" for i in range(n)]


@pytest.mark.slow
def test_rsyslog_omfwd_tls_x509_name(tmp_path: Path) -> None:
    pki = Pki.make(tmp_path / "pki", CLIENT)
    with sidecar(tmp_path / "hot", syslog="127.0.0.1:0", tls_cert=pki.server.cert, tls_key=pki.server.key,
                 client_ca=pki.ca.path, allowed_clients=[f"dns:{CLIENT}"]) as sc:
        action = localise(doc_snippet("rsyslog-omfwd-tls"), port=sc.port("syslog"),
                          files=pki.files("/etc/rsyslog.d/worm"))
        with rsyslogd(tmp_path / "rsyslog", action) as rs:
            rs.send(_app_lines(500, "fwd"))
            events = wait_for(lambda: [e for e in stored_events(sc.hot) if "fwd-" in e.get("message", "")]
                              if len(stored_events(sc.hot)) >= 500 else None, 60, "500 events")
    assert _ids(events, "fwd") == list(range(500))  # once each, in the order sent
    e = events[0]
    assert next(iter(e)) == "_sender"
    assert e["_sender"] == {"auth": "x509", "id": CLIENT, "peer": "127.0.0.1"}
    assert e["syslog"] == "rfc5424" and e["facility"] == 16 and e["severity"] == 6
    assert e["hostname"] == "web-1" and e["app_name"] == "shop" and e["procid"] == "42"


def _raw_count(hot: Path, needle: bytes) -> int:
    """Occurrences of ``needle`` in the stream's files as they are on disk (no verification)."""
    stream = hot / "app"
    return sum(p.read_bytes().count(needle) for p in stream.rglob("*") if p.is_file()) if stream.exists() else 0


def _relp_sidecar_cfg(pki: Pki, port: int) -> dict[str, Any]:
    return {"relp": f"127.0.0.1:{port}", "tls_cert": pki.server.cert, "tls_key": pki.server.key,
            "client_ca": pki.ca.path, "allowed_clients": [f"dns:{CLIENT}"]}


@pytest.mark.slow
def test_rsyslog_omrelp_tls(tmp_path: Path) -> None:
    pki = Pki.make(tmp_path / "pki", CLIENT)
    port = free_port()
    with sidecar(tmp_path / "hot", **_relp_sidecar_cfg(pki, port)) as sc:
        action = localise(doc_snippet("rsyslog-omrelp"), port=port, files=pki.files("/etc/rsyslog.d/worm"))
        with rsyslogd(tmp_path / "rsyslog", action) as rs:
            rs.send(_app_lines(1000, "relp"))
            wait_for(lambda: len(stored_events(sc.hot)) >= 1000, 60, "1000 events")
    events = stored_events(sc.hot)
    assert _ids(events, "relp") == list(range(1000))
    assert events[0]["_sender"] == {"auth": "x509", "id": CLIENT, "peer": "127.0.0.1"}


@pytest.mark.slow
def test_rsyslog_omrelp_survives_sidecar_kill9(tmp_path: Path) -> None:
    """kill -9 of the sidecar in the middle of a RELP stream: rsyslog resends what was not
    answered, so every message is in the log; a message appears twice only when it was
    stored before the kill and not yet answered (the second copy after the recovery)."""
    pki = Pki.make(tmp_path / "pki", CLIENT)
    port = free_port()
    hot = tmp_path / "hot"
    total = 40000
    sc = start_sidecar(hot, **_relp_sidecar_cfg(pki, port))
    try:
        action = localise(doc_snippet("rsyslog-omrelp"), port=port, files=pki.files("/etc/rsyslog.d/worm"))
        with rsyslogd(tmp_path / "rsyslog", action) as rs:
            rs.send(_app_lines(total, "k9"))
            # a cheap look at the raw segment bytes, not a parse of the whole log: the sidecar
            # stores tens of thousands of messages a second, and the kill must land mid-stream
            wait_for(lambda: _raw_count(hot, b"k9-") >= 2000, 60, "the stream to be under way")
            sc.kill9()
            stored_at_kill = len(stored_events(hot))
            assert stored_at_kill < total, "the stream ended before the kill: nothing was tested"
            time.sleep(1.0)
            sc = start_sidecar(hot, **_relp_sidecar_cfg(pki, port))
            wait_for(lambda: set(_ids(stored_events(hot), "k9")) >= set(range(total)), 120, "every message")
            time.sleep(2.0)  # anything still in flight lands now
    finally:
        stop_sidecar(sc)
    events = stored_events(hot)
    ids = _ids(events, "k9")
    assert set(ids) == set(range(total))  # nothing lost
    seen: set[int] = set()
    dup_positions = []
    for pos, i in enumerate(ids):
        if i in seen:
            dup_positions.append(pos)
        seen.add(i)
    # every duplicate is the resend of a message stored just before the kill: its first
    # copy is among the events stored before the kill, its second after
    for pos in dup_positions:
        first = ids.index(ids[pos])
        assert first < stored_at_kill <= pos, (first, stored_at_kill, pos)
    # and the log marks the place: a recovery record (unclean-shutdown) lies between the copies
    from tests.hotutil import records

    recs = records(hot / "app")
    recovery = [r.seq for r in recs if r.kind == "recovery"]
    assert len(recovery) == 1 and recs[recovery[0]].data["reason"] == "unclean-shutdown"
    event_seqs = [r.seq for r in recs if r.kind == "event"]
    for pos in dup_positions:
        assert event_seqs[ids.index(ids[pos])] < recovery[0] < event_seqs[pos]
    assert len(dup_positions) <= 128  # at most omrelp's window of unanswered transactions (windowSize, 128)
    # each connection's order is kept: before the kill and after it, ids increase
    before, after = ids[:stored_at_kill], [i for i in ids[stored_at_kill:]]
    assert before == sorted(before) and after == sorted(after)


@pytest.mark.slow
def test_syslog_ng_network_tls(tmp_path: Path) -> None:
    assert syslog_ng_available(), "syslog-ng is not unpacked: run tools/install-syslog-ng.sh"
    pki = Pki.make(tmp_path / "pki", "syslog-ng.web-2.example.net")
    with sidecar(tmp_path / "hot", syslog="127.0.0.1:0", tls_cert=pki.server.cert, tls_key=pki.server.key,
                 client_ca=pki.ca.path) as sc:
        dest = localise(doc_snippet("syslog-ng-tls"), port=sc.port("syslog"), files=pki.files("/etc/syslog-ng/worm"))
        with syslog_ng(tmp_path / "sng", dest, "d_worm") as in_port:
            import socket

            with socket.create_connection(("127.0.0.1", in_port), timeout=10) as s:
                s.sendall("".join(f"<134>Dec  6 18:00:00 web-2 shop[7]: sng-{i:06d} paid\n"
                                  for i in range(500)).encode())
            wait_for(lambda: len(stored_events(sc.hot)) >= 500, 60, "500 events")
    events = stored_events(sc.hot)
    assert _ids(events, "sng") == list(range(500))
    assert events[0]["_sender"]["id"] == "syslog-ng.web-2.example.net"
    assert events[0]["syslog"] == "rfc5424" and events[0]["app_name"] == "shop"


@pytest.mark.slow
def test_rsyslog_with_a_certificate_from_another_ca_is_refused_and_the_sidecar_says_so(tmp_path: Path) -> None:
    """rsyslog (GnuTLS) retrying with a client certificate another CA issued: nothing
    stored; the sidecar logs the refusal once, naming rsyslog's address and the reason,
    however often rsyslog retries (docs/INGEST.md §6.4)."""
    pki = Pki.make(tmp_path / "pki", CLIENT)
    other = CA(tmp_path / "pki", "other-ca")
    foreign = other.issue("foreign", dns=(CLIENT,), cn=CLIENT)
    files = {**pki.files("/etc/rsyslog.d/worm"), "/etc/rsyslog.d/worm/client.crt": foreign.cert,
             "/etc/rsyslog.d/worm/client.key": foreign.key}
    with sidecar(tmp_path / "hot", syslog="127.0.0.1:0", tls_cert=pki.server.cert, tls_key=pki.server.key,
                 client_ca=pki.ca.path, allowed_clients=[f"dns:{CLIENT}"]) as sc:
        action = localise(doc_snippet("rsyslog-omfwd-tls"), port=sc.port("syslog"), files=files)
        with rsyslogd(tmp_path / "rsyslog", action) as rs:
            for _ in range(3):  # rsyslog reconnects for each new batch after a failure
                rs.send(_app_lines(5, "refused"))
                time.sleep(1.5)

            def refusals() -> list[dict[str, Any]]:
                return [json.loads(line) for line in b"".join(sc.stderr).splitlines() if b"TLS handshake" in line]

            wait_for(refusals, 20, "the sidecar's refusal line")
            time.sleep(1)
    assert stored_events(sc.hot) == []
    lines = refusals()
    assert len(lines) == 1, lines
    assert {k: lines[0].get(k) for k in ("level", "listener", "peer", "reason")} == {
        "level": "WARNING", "listener": "syslog", "peer": "127.0.0.1", "reason": "unknown_ca"}, lines
