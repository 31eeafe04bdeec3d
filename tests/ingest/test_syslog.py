"""Syslog parsing (RFC 5424, RFC 3164), RFC 6587 framing, RELP frames, and the plain
listeners end to end with a socket client: nothing received is dropped."""

from __future__ import annotations

import base64
import http.client
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.hot.writer import HotLog
from pipeline.ingest.server import IngestServer
from pipeline.ingest.stream import RelpParser
from pipeline.ingest.syslog import FrameError, Framer, parse_message
from tests.hotutil import records


def test_rfc5424_every_field() -> None:
    raw = (b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 8710 ID47 '
           b'[exampleSDID@32473 iut="3" eventSource="App" eventID="1011"][meta a="x\\"y\\]z\\\\" a="2"] '
           b'\xef\xbb\xbfAn application event')
    assert parse_message(raw) == {
        "syslog": "rfc5424", "facility": 20, "severity": 5, "timestamp": "2003-10-11T22:14:15.003Z",
        "hostname": "mymachine.example.com", "app_name": "evntslog", "procid": "8710", "msgid": "ID47",
        "structured_data": {"exampleSDID@32473": {"iut": "3", "eventSource": "App", "eventID": "1011"},
                            "meta": {"a": ['x"y]z\\', "2"]}},
        "message": "An application event"}


def test_rfc5424_nil_values_and_no_message() -> None:
    assert parse_message(b"<0>1 - - - - - -") == {"syslog": "rfc5424", "facility": 0, "severity": 0}


def test_rfc3164() -> None:
    assert parse_message(b"<34>Oct 11 22:14:15 mymachine su[77]: 'su root' failed") == {
        "syslog": "rfc3164", "facility": 4, "severity": 2, "timestamp": "Oct 11 22:14:15", "hostname": "mymachine",
        "app_name": "su", "procid": "77", "message": "'su root' failed"}
    assert parse_message(b"<13>Dec  6 08:00:01 kernel: boot") == {
        "syslog": "rfc3164", "facility": 1, "severity": 5, "timestamp": "Dec  6 08:00:01", "app_name": "kernel",
        "message": "boot"}


@pytest.mark.parametrize("raw,error", [
    (b"no pri at all", "no PRI"),
    (b"<999>1 - - - - - - x", "PRI 999 out of range"),
    (b"<13>1 yesterday host app - - - x", "RFC 5424: TIMESTAMP is not RFC 3339"),
    (b'<13>1 - host app - - [broken x', "RFC 5424: "),
    (b"<13>1 - host app - - -x", "RFC 5424: no space between STRUCTURED-DATA and MSG"),
])
def test_unparsable_kept_raw(raw: bytes, error: str) -> None:
    got = parse_message(raw)
    assert got["syslog"] == "unparsed" and got["parse_error"].startswith(error) and got["raw"] == raw.decode()


def test_bytes_that_are_not_utf8_are_kept() -> None:
    got = parse_message(b"<13>1 - h a - - - caf\xe9")
    assert got["message_b64"] == base64.b64encode(b"caf\xe9").decode()
    got = parse_message(b"\xff\xfe")
    assert got["raw_b64"] == base64.b64encode(b"\xff\xfe").decode()


def test_framing_octet_counting_and_lf_mixed() -> None:
    f = Framer(64)
    frames = f.feed(b"11 <13>1 - - -\n<13>lf frame\r\n8 <1>abcd")
    assert frames == [(b"<13>1 - - -", None), (b"<13>lf frame", None)]
    assert f.feed(b"e") == [(b"<1>abcde", None)]
    assert f.feed(b"<14>last without LF") == [] and f.finish() == [(b"<14>last without LF", None)]


def test_framing_bounds_memory() -> None:
    f = Framer(16)
    got = f.feed(b"100 " + b"x" * 40)
    assert len(got) == 1 and got[0][0] == b"x" * 16 and got[0][1] is not None and got[0][1].startswith("too-large")
    assert f.buffered <= 16 + 44
    assert f.feed(b"y" * 60 + b"<1>next\n") == [(b"<1>next", None)]  # the rest of the big frame skipped
    got = f.feed(b"<2>" + b"z" * 100)
    assert got[0][1] is not None and "without LF" in got[0][1] and f.buffered == 0
    assert f.feed(b"zzz\n<3>after\n") == [(b"<3>after", None)]
    with pytest.raises(FrameError):
        Framer(16).feed(b"12345678901234 x")


def test_relp_frames() -> None:
    p = RelpParser(64)
    assert p.feed(b"1 open 5 hello\n2 syslog 3 <1>\n3 close 0\n") == [
        (1, "open", b"hello", None), (2, "syslog", b"<1>", None), (3, "close", b"", None)]
    assert p.feed(b"4 syslog 10 0123") == [] and p.feed(b"456789\n") == [(4, "syslog", b"0123456789", None)]
    big = p.feed(b"5 syslog 1000 " + b"a" * 100)
    assert big[0][:3] == (5, "syslog", b"a" * 64) and big[0][3] is not None
    assert p.feed(b"a" * 900 + b"\n6 syslog 1 b\n") == [(6, "syslog", b"b", None)]
    for bad in (b"x syslog 1 a\n", b"1 syslog 5 abcdefg\n", b"1 sys-log 1 a\n"):
        with pytest.raises(FrameError):
            RelpParser(64).feed(bad)


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[tuple[IngestServer, Path]]:
    log = HotLog(tmp_path / "hot", "app", durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(log, http_listen="127.0.0.1:0", syslog_listen="127.0.0.1:0", relp_listen="127.0.0.1:0",
                       socket_path=tmp_path / "s.sock", token="s3cret", token_name="ingest-token",
                       max_syslog_frame=1024).start()
    try:
        yield srv, tmp_path / "hot"
    finally:
        srv.stop(1)
        log.close()


def _events(hot: Path, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        got = [r.data for r in records(hot / "app") if r.kind == "event"] if (hot / "app").exists() else []
        if len(got) >= n or time.monotonic() > deadline:
            return got


def test_plain_syslog_keeps_order_and_never_drops(plain: tuple[IngestServer, Path]) -> None:
    srv, hot = plain
    assert srv.syslog_address is not None
    with socket.create_connection(srv.syslog_address) as s:
        s.sendall(b"<13>1 - h a - - - one\n")
        s.sendall(b"%d <13>1 - h a - - - two\n" % len(b"<13>1 - h a - - - two\n"))
        s.sendall(b"garbage line\n")
        s.sendall(b"<13>" + b"x" * 3000 + b"\n")  # over max_syslog_frame: kept cut, marked
        s.sendall(b"<13>1 - h a - - - three\n")
    got = _events(hot, 5)
    assert [e.get("message") for e in got] == ["one", "two\n", None, None, "three"]
    assert got[2]["parse_error"].startswith("no PRI") and got[2]["raw"] == "garbage line"
    assert got[3]["parse_error"].startswith("too-large") and len(got[3]["raw"]) == 1024
    assert all(e["_sender"] == {"auth": "none", "peer": "127.0.0.1"} for e in got)


def test_relp_plain_session(plain: tuple[IngestServer, Path]) -> None:
    srv, hot = plain
    assert srv.relp_address is not None
    with socket.create_connection(srv.relp_address, timeout=10) as s:
        s.sendall(b"1 syslog 3 <1>\n")
        assert s.recv(100) == b"1 rsp 22 500 session not opened\n"
    with socket.create_connection(srv.relp_address, timeout=10) as s:
        offers = b"relp_version=0\nrelp_software=test\ncommands=syslog"
        s.sendall(b"1 open %d %s\n" % (len(offers), offers))
        assert s.recv(200).startswith(b"1 rsp ")
        msg = b"<13>1 - h a - - - relp"
        s.sendall(b"".join(b"%d syslog %d %s\n" % (i, len(msg), msg) for i in range(2, 12)))
        answers = b""
        while answers.count(b"\n") < 10:
            answers += s.recv(1000)
        assert answers == b"".join(b"%d rsp 6 200 OK\n" % i for i in range(2, 12))
        s.sendall(b"12 close 0\n")
        assert s.recv(100) == b"12 rsp 0\n"
    assert len(_events(hot, 10)) == 10  # answered: already durable


def test_relp_many_other_commands_do_not_stall_the_session(plain: tuple[IngestServer, Path]) -> None:
    """The bytes of commands other than syslog leave the connection's count of waiting
    bytes when they are handled: 3 MB of them (over the 1 MiB at which reading pauses)
    and the session still answers the syslog transaction that follows."""
    srv, hot = plain
    assert srv.relp_address is not None
    n = 3000
    with socket.create_connection(srv.relp_address, timeout=20) as s:
        offers = b"relp_version=0\nrelp_software=test\ncommands=syslog"
        s.sendall(b"1 open %d %s\n" % (len(offers), offers))
        assert s.recv(200).startswith(b"1 rsp ")
        msg = b"<13>1 - h a - - - after"
        s.sendall(b"".join(b"%d junk 1000 %s\n" % (i, b"j" * 1000) for i in range(2, n + 2))
                  + b"%d syslog %d %s\n" % (n + 2, len(msg), msg))
        answers = b""
        while not answers.endswith(b"%d rsp 6 200 OK\n" % (n + 2)):
            chunk = s.recv(1 << 16)
            assert chunk, answers[-200:]
            answers += chunk
        assert answers.count(b" rsp 19 500 unknown command\n") == n
    assert [e["message"] for e in _events(hot, 1)] == ["after"]


def test_sender_of_token_and_unix_socket(plain: tuple[IngestServer, Path], tmp_path: Path) -> None:
    srv, hot = plain
    assert srv.http_address is not None
    c = http.client.HTTPConnection(*srv.http_address, timeout=10)
    c.request("POST", "/v1/events", body=b'{"via":"http"}\n', headers={"Authorization": "Bearer s3cret"})
    assert c.getresponse().status == 200
    with socket.socket(socket.AF_UNIX) as u:
        u.connect(str(tmp_path / "s.sock"))
        u.sendall(b'{"via":"unix"}\n{"_sender":"forged"}\n')
        answers = b""
        while answers.count(b"\n") < 2:
            answers += u.recv(1000)
    assert b'"ok":false,"line":2,"error":"reserved-key: ' in answers
    got = _events(hot, 2)
    assert got == [{"_sender": {"auth": "token", "id": "ingest-token", "peer": "127.0.0.1"}, "via": "http"},
                   {"_sender": {"auth": "local", "id": f"uid:{os.getuid()}"}, "via": "unix"}]


class _SlowLog:
    """A HotLog whose appends take a while, so that received messages queue up."""

    def __init__(self, log: HotLog) -> None:
        self._log = log
        self.sanitiser = log.sanitiser

    def append_prepared(self, data: bytes, *, wait: bool) -> Any:
        return self._log.append_prepared(data, wait=wait)

    def append_prepared_many(self, items: list[bytes]) -> Any:
        time.sleep(0.5)
        return self._log.append_prepared_many(items)

    def wait_durable(self, receipt: Any, timeout: float | None = None) -> None:
        self._log.wait_durable(receipt, timeout)


def test_stop_stores_what_was_received(tmp_path: Path) -> None:
    """Syslog has no acknowledgement: a message the sidecar has read must be stored even
    when it stops right after (the listeners drain before the server refuses batches)."""
    log = HotLog(tmp_path / "hot", "app", durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(_SlowLog(log), syslog_listen="127.0.0.1:0").start()
    try:
        assert srv.syslog_address is not None
        with socket.create_connection(srv.syslog_address) as s:
            for i in range(5):
                s.sendall(b"".join(b"<13>1 - h a - - - m%d-%d\n" % (i, k) for k in range(200)))
                time.sleep(0.05)
            # the first message's batch is being stored (slowly), the others are read and
            # waiting in the connection's queue
            srv.stop(10)
    finally:
        log.close()
    got = [r.data["message"] for r in records(tmp_path / "hot" / "app") if r.kind == "event"]
    assert got == [f"m{i}-{k}" for i in range(5) for k in range(200)]
