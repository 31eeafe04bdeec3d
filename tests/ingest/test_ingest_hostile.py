"""The HTTP ingest server under hostile input, in a process of its own (as in the sidecar):
malformed framing headers, garbage, slow senders, idle connections, many concurrent
clients, a big body under backpressure.  Throughout, the server stays up, a good client
is served, and its stderr holds only structured log lines (tests/ingestproc.py checks)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from pipeline.hot.writer import HotLog
from tests.hotutil import records, without_sender
from tests.ingestproc import ProcServer, ingest_process, post

GOOD = b'{"user":"good","action":"check"}\n'


def good_client_served(srv: ProcServer) -> None:
    status, _, body = post(srv.addr, GOOD, timeout=10)
    assert status == 200 and body["accepted"] == 1


def raw(addr: tuple[str, int], request: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(request)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out


def stored_events(hot: Path) -> list[dict[str, object]]:
    log = HotLog(hot, "app", heartbeat_interval=0, segment_window=0)  # recovers; the child has exited
    log.close(seal=False)
    return [without_sender(r.data, required=False) for r in records(hot / "app") if r.kind == "event"]


HEAD = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
BODY = b'{"smuggled":1}\n'

MALFORMED = {
    "conflicting Content-Length": HEAD + b"Content-Length: 15\r\nContent-Length: 16\r\n\r\n" + BODY + b"x",
    "repeated Content-Length": HEAD + b"Content-Length: 15\r\nContent-Length: 15\r\n\r\n" + BODY,
    "Content-Length 1_5": HEAD + b"Content-Length: 1_5\r\n\r\n" + BODY,
    "Content-Length +15": HEAD + b"Content-Length: +15\r\n\r\n" + BODY,
    "Content-Length -1": HEAD + b"Content-Length: -1\r\n\r\n" + BODY,
    "Content-Length 0x0f": HEAD + b"Content-Length: 0x0f\r\n\r\n" + BODY,
    "Content-Length and chunked": HEAD + b"Content-Length: 15\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  b"f\r\n" + BODY + b"\r\n0\r\n\r\n",
    "bad chunk size": HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + BODY + b"\r\n0\r\n\r\n",
    "garbage request line": b"GARBAGE <script>alert(1)</script> HTTP/9\r\n\r\n",
    "no HTTP version": b"POST /v1/events\r\n\r\n",
    "binary (TLS hello)": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03<script>" + bytes(range(32)),
    "space in header name": HEAD + b"Content Length: 15\r\n\r\n" + BODY,
    "header line over 8 KiB": HEAD + b"X-Junk: " + b"<script>" * 2000 + b"\r\nContent-Length: 15\r\n\r\n" + BODY,
}


def test_malformed_requests_refused_with_json(tmp_path: Path) -> None:
    with ingest_process(tmp_path, 1 << 20) as srv:
        for name, request in MALFORMED.items():
            resp = raw(srv.addr, request)
            head, _, body = resp.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else None
            assert status is not None and 400 <= status < 500, (name, resp[:200])
            assert b"content-type: application/json" in head.lower(), name
            # never the request's bytes in the answer (no reflection, no HTML)
            assert b"<script>" not in resp and b"smuggled" not in resp and b"GARBAGE" not in resp, name
            assert body.startswith(b'{"error":'), name
            good_client_served(srv)
        assert srv.alive()
    assert stored_events(srv.hot) == [{"user": "good", "action": "check"}] * len(MALFORMED)


def test_slowloris_cannot_hold_slots(tmp_path: Path) -> None:
    """Slow senders (headers a byte at a time, or a body that never finishes) are cut off
    at request_timeout, counted from a request's first byte; meanwhile good clients are
    served, even with the connection cap full of slow senders."""
    with ingest_process(tmp_path, 1 << 20, "--request-timeout", "2", "--max-connections", "40") as srv:
        slow: list[socket.socket] = []
        for i in range(60):  # more than the cap
            s = socket.socket()
            s.settimeout(10)
            try:
                s.connect(srv.addr)
                headers_only = b"POST /v1/events HTTP/1.1\r\nHost: x\r\n"
                s.sendall(headers_only if i % 2 else HEAD + b"Content-Length: 1000\r\n\r\n{")
            except OSError:
                s.close()
                continue
            slow.append(s)
        t0 = time.monotonic()
        closed_at: dict[int, float] = {}
        open_at: dict[int, float] = {}  # when each was last seen still open
        while time.monotonic() - t0 < 30 and len(closed_at) < len(slow):
            for i, s in enumerate(slow):
                if i in closed_at:
                    continue
                try:
                    s.sendall(b"X")  # one more byte: the request is never complete
                    s.setblocking(False)
                    try:
                        if s.recv(4096) == b"":
                            closed_at[i] = time.monotonic() - t0
                    except BlockingIOError:
                        open_at[i] = time.monotonic() - t0
                    except OSError:
                        closed_at[i] = time.monotonic() - t0
                    finally:
                        s.setblocking(True)
                except OSError:
                    closed_at[i] = time.monotonic() - t0
            if len(closed_at) < len(slow):
                good_client_served(srv)
            time.sleep(0.2)
        for s in slow:
            s.close()
        assert len(closed_at) == len(slow), f"{len(slow) - len(closed_at)} slow connections still open"
        # none still open past the timeout plus the sweep interval and slack.  Judged by when each
        # was last seen open, not when a later look found it closed: how often this loop looks
        # (a good client served between looks) depends on the machine's speed.
        assert max(open_at.values(), default=0.0) < 2 + 3, sorted(open_at.values())[-5:]
        good_client_served(srv)


def test_two_thousand_idle_connections(tmp_path: Path) -> None:
    """2,000 idle connections against a cap of 256: the server holds at most the cap (the
    longest-idle one makes room for a newcomer) and a good client is served."""
    with ingest_process(tmp_path, 1 << 20, "--max-connections", "256") as srv:
        idle: list[socket.socket] = []
        try:
            for _ in range(2000):
                s = socket.socket()
                s.settimeout(5)
                s.connect(srv.addr)
                idle.append(s)
            time.sleep(0.5)
            good_client_served(srv)
            assert srv.open_fds() < 256 + 64
            # a second round of idle connections later: still served
            time.sleep(0.3)
            good_client_served(srv)
        finally:
            for s in idle:
                s.close()
        good_client_served(srv)


def test_five_hundred_concurrent_posts(tmp_path: Path) -> None:
    """500 clients POST at once (listen backlog 1024): every one gets a 200, none a reset,
    and every event is in the log."""
    n, per = 500, 4
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(n)

    with ingest_process(tmp_path, 1 << 20) as srv:
        def client(c: int) -> None:
            body = b"".join(b'{"client":%d,"i":%d}\n' % (c, i) for i in range(per))
            try:
                start.wait(30)
                status, _, answer = post(srv.addr, body, timeout=60)
                with lock:
                    results.append(status)
                assert answer["accepted"] == per
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        good_client_served(srv)
    assert not errors, errors[:3]
    assert results == [200] * n
    events = stored_events(srv.hot)
    assert len(events) == n * per + 1


def test_big_body_under_backpressure_gets_429(tmp_path: Path) -> None:
    """A 4 MiB body sent while backpressure is on: the client can send it all and reads a
    429 with Retry-After (no broken pipe, no reset); nothing is stored; once backpressure
    clears the same request is stored."""
    flag = tmp_path / "backpressure"
    flag.touch()
    body = b"".join(b'{"n":%d,"pad":"%s"}\n' % (i, b"p" * 200) for i in range(4 * 1024 * 1024 // 220))
    assert len(body) > 4_000_000
    with ingest_process(tmp_path, 8 << 20, "--backpressure-file", str(flag)) as srv:
        for _ in range(3):
            status, headers, answer = post(srv.addr, body)
            assert status == 429 and int(headers["retry-after"]) >= 1
            assert answer["error"] == "backpressure: test flag set"
        flag.unlink()
        status, _, answer = post(srv.addr, body)
        assert status == 200 and answer["accepted"] == body.count(b"\n")
