"""Alert channels against real receivers: the signed webhook over HTTP, e-mail to a local SMTP
server (aiosmtpd), de-duplication, re-sending while firing, resolution, failures counted."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.monitor.alerts import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AlertBook,
    Channel,
    EmailTransport,
    WebhookTransport,
    sign_webhook,
    verify_webhook,
)
from pipeline.monitor.config import EmailChannel, WebhookChannel
from pipeline.monitor.findings import MonitorFinding
from tests.monitor.conftest import Receiver


def _finding(seq: int = 7, segment: str = "seg-00000000000000000000.jsonl") -> MonitorFinding:
    return MonitorFinding("hash-mismatch", "app", segment, f"record {seq} altered", seq, "hot")


def test_webhook_body_is_signed_and_deduplicated(tmp_path: Path, receiver: Receiver) -> None:
    secret = tmp_path / "secret"
    secret.write_text("hunter2-but-longer\n")
    ch = Channel(WebhookTransport(WebhookChannel(url=receiver.url + "/hook", secret_file=secret,
                                                 resend_interval=10.0), "test"))
    book = AlertBook()
    t = 1_800_000_000.0
    book.update([_finding()], t)
    assert ch.deliver(book, t, None)
    book.update([_finding(seq=8)], t + 1)  # the same condition, newer evidence: not sent again yet
    assert ch.deliver(book, t + 1, None)
    assert len(receiver.posts) == 1
    book.update([_finding(seq=9)], t + 11)  # re-sent while firing, after resend_interval
    assert ch.deliver(book, t + 11, None)
    book.update([], t + 12)  # cleared: resolved once
    assert ch.deliver(book, t + 12, None)
    assert ch.deliver(book, t + 13, None)
    assert len(receiver.posts) == 3
    statuses = [a["status"] for a in receiver.alerts("/hook")]
    assert statuses == ["firing", "firing", "resolved"]
    assert receiver.alerts("/hook")[1]["annotations"]["seq"] == "9"
    for _path, headers, body in receiver.posts:
        ts = headers[TIMESTAMP_HEADER]
        # the documented signing input: timestamp "." body, HMAC-SHA256 with the stripped secret
        assert headers[SIGNATURE_HEADER] == sign_webhook(b"hunter2-but-longer", ts, body)
        assert verify_webhook(b"hunter2-but-longer", ts, body, headers[SIGNATURE_HEADER])
        assert not verify_webhook(b"other", ts, body, headers[SIGNATURE_HEADER])
        assert not verify_webhook(b"hunter2-but-longer", ts, body + b" ", headers[SIGNATURE_HEADER])
    resolved = receiver.alerts("/hook")[2]
    assert resolved["endsAt"] is not None and resolved["labels"]["alertname"] == "WormLogTampered"


def test_failed_send_is_retried_next_cycle(tmp_path: Path, receiver: Receiver) -> None:
    secret = tmp_path / "secret"
    secret.write_text("k")
    ch = Channel(WebhookTransport(WebhookChannel(url=receiver.url, secret_file=secret), "test"))
    book = AlertBook()
    book.update([_finding()], 100.0)
    receiver.status = 503
    assert not ch.deliver(book, 100.0, None)
    receiver.status = 200
    assert ch.deliver(book, 101.0, None)
    assert [a["status"] for a in receiver.alerts()] == ["firing", "firing"]  # the first attempt was refused
    assert ch.deliver(book, 102.0, None)
    assert len(receiver.posts) == 2


def test_alert_book_survives_a_restart(tmp_path: Path) -> None:
    book = AlertBook()
    book.update([_finding()], 10.0)
    again = AlertBook.from_dict(json.loads(json.dumps(book.to_dict())))
    assert again.update([_finding()], 20.0) == []  # still firing: not a new alert
    assert again.firing()[0].starts_at == 10.0
    again.update([], 30.0)
    assert again.alerts[_finding().key].ends_at == 30.0


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, list[Any]]]:
    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    from tests.netutil import free_port

    port = free_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield port, received
    finally:
        ctl.stop()


def test_email_reaches_a_real_smtp_server(smtp_server: tuple[int, list[Any]]) -> None:
    port, received = smtp_server
    ch = Channel(EmailTransport(EmailChannel(host="127.0.0.1", port=port, sender="worm@example.com",
                                             to=("soc@example.com",)), "test"))
    book = AlertBook()
    book.update([_finding()], time.time())
    assert ch.deliver(book, time.time(), None)
    book.update([], time.time())
    assert ch.deliver(book, time.time(), None)
    assert len(received) == 2
    first = received[0].content.decode()
    assert received[0].rcpt_tos == ["soc@example.com"]
    assert "FIRING WormLogTampered" in first and "seq: 7" in first and "reason: hash-mismatch" in first
    assert "RESOLVED WormLogTampered" in received[1].content.decode()


def test_email_to_a_closed_port_fails_without_losing_the_alert() -> None:
    from tests.netutil import free_port

    ch = Channel(EmailTransport(EmailChannel(host="127.0.0.1", port=free_port(), sender="a@b", to=("c@d",),
                                             timeout=2.0), "test"))
    book = AlertBook()
    book.update([_finding()], 1.0)
    assert not ch.deliver(book, 1.0, None)
    assert ch.due(book, 2.0)  # still due


@pytest.mark.slow
def test_alertmanager_gets_labels_evidence_and_the_real_ends_at_on_resolution(alertmanager: Any,
                                                                             receiver: Receiver) -> None:
    """Debian's Alertmanager (API v2): a firing alert is held with an endsAt four re-send intervals
    ahead (here four hours), so the prompt "resolved" at the receiver can only come from the
    monitor sending the real endsAt when the condition cleared."""
    from pipeline.monitor.alerts import AlertmanagerTransport, iso
    from pipeline.monitor.config import AlertmanagerChannel

    ch = Channel(AlertmanagerTransport(AlertmanagerChannel(url=alertmanager.url), 3600.0, "worm-pipeline-monitor://t"))
    book = AlertBook()
    t0 = time.time()
    book.update([_finding(seq=41)], t0)
    assert ch.deliver(book, t0, None)
    fired = receiver.wait_for(lambda a: a["status"] == "firing", 20, "/am")
    assert fired["labels"] == {"alertname": "WormLogTampered", "severity": "critical", "stream": "app",
                               "code": "hash-mismatch", "service": "worm-pipeline",
                               "segment": "seg-00000000000000000000.jsonl", "where": "hot"}
    ev = fired["annotations"]
    assert (ev["stream"], ev["segment"], ev["seq"], ev["reason"]) == ("app", "seg-00000000000000000000.jsonl",
                                                                      "41", "hash-mismatch")
    held = [a for a in alertmanager.alerts() if a["labels"].get("alertname") == "WormLogTampered"]
    assert len(held) == 1 and held[0]["status"]["state"] == "active"
    assert held[0]["endsAt"] > iso(t0 + 3 * 3600)  # kept while the monitor re-sends
    # re-sent at the next cycle? no: de-duplicated until resend_interval
    assert ch.due(book, t0 + 60) == []
    t1 = time.time()
    book.update([], t1)
    assert [a.key for a in ch.due(book, t1)] == [_finding().key]
    assert ch.deliver(book, t1, None)
    resolved = receiver.wait_for(lambda a: a["status"] == "resolved", 20, "/am")
    assert resolved["labels"]["code"] == "hash-mismatch"
    assert resolved["endsAt"].startswith(iso(t1)[:19])  # the time it cleared, not the four hours ahead
    assert ch.due(book, t1 + 1) == []  # resolved once
