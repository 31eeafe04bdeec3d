"""IngestServer over a real HotLog: Unix socket and HTTP, durability before acks, limits,
authentication, backpressure, socket permissions, concurrency, stop."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.hot.segment import iter_lines
from pipeline.hot.writer import HotLog
from pipeline.ingest.server import IngestServer
from tests.hotutil import FsyncSpy, records, wait_for, without_sender

STREAM = "app"


# ------------------------------------------------------------------ helpers


class Flag:
    """A switchable backpressure source."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.calls = 0

    def __call__(self) -> str | None:
        self.calls += 1
        return self.reason


class Metrics:
    def __init__(self) -> None:
        self.appended = [0, 0]
        self.rejected: dict[str, int] = {}
        self.requests: dict[tuple[str, str], int] = {}
        self.acks: list[tuple[str, float]] = []
        self.handshake_failures: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def observe_appended(self, events: int, nbytes: int) -> None:
        with self._lock:
            self.appended[0] += events
            self.appended[1] += nbytes

    def observe_rejected(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + count

    def observe_request(self, transport: str, code: str) -> None:
        with self._lock:
            self.requests[(transport, code)] = self.requests.get((transport, code), 0) + 1

    def observe_ack(self, transport: str, seconds: float) -> None:
        with self._lock:
            self.acks.append((transport, seconds))

    def observe_tls_handshake_failure(self, listener: str, reason: str) -> None:
        with self._lock:
            self.handshake_failures.append((listener, reason))


@pytest.fixture
def hotlog(hot_dir: Path) -> Iterator[HotLog]:
    log = HotLog(hot_dir, STREAM, durability="group", heartbeat_interval=0, segment_window=0)
    yield log
    log.close()


def events_in_log(hot_dir: Path) -> list[dict[str, Any]]:
    return [without_sender(r.data) for r in records(hot_dir / STREAM) if r.kind == "event"]


def by_seq(hot_dir: Path) -> dict[int, Any]:
    return {r.seq: r for r in records(hot_dir / STREAM)}


def connect(path: Path, timeout: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    return s


def read_answers(sock: socket.socket, n: int) -> list[dict[str, Any]]:
    buf = b""
    while buf.count(b"\n") < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return [json.loads(x) for x in buf.splitlines()]


def post(addr: tuple[str, int], body: bytes, headers: dict[str, str] | None = None,
         method: str = "POST", path: str = "/v1/events") -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=10)
    try:
        h = {"Content-Type": "application/x-ndjson"}
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data) if data else None
    finally:
        conn.close()


def raw_http(addr: tuple[str, int], request: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(request)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
        return out


MIXED = b"\n".join([
    b'{"user":"alice","action":"login"}',
    b'{"user": broken',
    b'{"user":"bob","action":"logout"}',
    b'[1,2,3]',
    b'{"x":NaN}',
    b'{"user":"carol","password":"hunter2"}',
]) + b"\n"


def check_mixed(results: list[dict[str, Any]], hot_dir: Path) -> None:
    assert [r["ok"] for r in results] == [True, False, True, False, False, True]
    assert results[1]["line"] == 2 and results[1]["error"].startswith("bad-json: ")
    assert results[3]["line"] == 4 and results[3]["error"].startswith("not-an-object: ")
    assert results[4]["line"] == 5 and results[4]["error"].startswith("bad-json: ")
    recs = by_seq(hot_dir)
    good = [r for r in results if r["ok"]]
    assert [r["seq"] for r in good] == sorted(r["seq"] for r in good)
    for r, user in zip(good, ["alice", "bob", "carol"], strict=True):
        rec = recs[r["seq"]]
        assert rec.hash == r["hash"] and rec.data["user"] == user
    assert recs[good[2]["seq"]].data["password"] == "[REDACTED:secret-key]"  # sanitised on the way in


# ------------------------------------------------------------------ Unix socket


def test_socket_mixed_batch(hot_dir: Path, hotlog: HotLog, tmp_path: Path) -> None:
    metrics = Metrics()
    path = tmp_path / "ingest.sock"
    with IngestServer(hotlog, socket_path=path, metrics=metrics) as srv:
        with connect(path) as s:
            s.sendall(MIXED)
            results = read_answers(s, 6)
            # line numbers continue across batches on one connection
            s.sendall(b'{"n":1}\n\n{bad\n')  # the blank line gets no answer
            more = read_answers(s, 2)
        assert srv.socket_path == path
    check_mixed(results, hot_dir)
    assert len(events_in_log(hot_dir)) == 4
    assert more[0]["ok"] and more[1] == {"ok": False, "line": 8, "error": more[1]["error"]}
    assert metrics.appended[0] == 4
    assert metrics.rejected == {"bad-json": 3, "not-an-object": 1}
    # one acknowledgement latency per batch that stored something (two batches here)
    assert [t for t, _s in metrics.acks] == ["unix", "unix"] and all(s >= 0 for _t, s in metrics.acks)
    assert not path.exists()  # removed at stop


def test_socket_ack_only_after_fsync(hot_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FsyncSpy(monkeypatch)
    # a long group interval: without waiting for durability the answer would come first
    log = HotLog(hot_dir, STREAM, durability="group", group_interval=0.3, heartbeat_interval=0, segment_window=0)
    path = tmp_path / "ingest.sock"
    try:
        with IngestServer(log, socket_path=path), connect(path) as s:
            for i in range(5):
                s.sendall(b'{"i":%d}\n{"j":%d}\n' % (i, i))
                answers = read_answers(s, 2)
                # right when the answer arrives: both records are in the file, and an fsync of
                # that file already covered them
                seg = hot_dir / STREAM / log.active_segment.name  # type: ignore[union-attr]
                ends = {}
                for off, line in iter_lines(seg):
                    ends[orjson.loads(line)["seq"]] = off + len(line)
                for a in answers:
                    assert a["ok"] and a["seq"] in ends
                    assert spy.covered(seg, ends[a["seq"]]), (i, a, spy.calls[-3:])
    finally:
        log.close()


class GatedLog:
    """Delegates to a HotLog but holds wait_durable until the gate opens."""

    def __init__(self, log: HotLog) -> None:
        self.log = log
        self.gate = threading.Event()
        self.waiting = 0  # calls held at the gate so far
        self._lock = threading.Lock()

    def append_prepared(self, data_json: bytes, *, wait: bool) -> Any:
        return self.log.append_prepared(data_json, wait=wait)

    def wait_durable(self, receipt: Any, timeout: float | None = None) -> None:
        with self._lock:
            self.waiting += 1
        assert self.gate.wait(60)
        self.log.wait_durable(receipt, timeout)


def test_no_answer_before_durable(hot_dir: Path, hotlog: HotLog, tmp_path: Path) -> None:
    gated = GatedLog(hotlog)
    path = tmp_path / "ingest.sock"
    with IngestServer(gated, socket_path=path, http_listen="127.0.0.1:0") as srv, connect(path) as s:
        s.sendall(b'{"a":1}\n')
        s.settimeout(0.4)
        with pytest.raises(TimeoutError):
            s.recv(100)
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.append(post(srv.http_address, b'{"b":2}\n')))  # type: ignore[arg-type]
        t.start()
        t.join(0.4)
        assert t.is_alive() and not got  # HTTP waits too
        gated.gate.set()
        s.settimeout(10)
        assert read_answers(s, 1)[0]["ok"]
        t.join(10)
        assert got[0][0] == 200 and got[0][2]["accepted"] == 1


def test_socket_backpressure_blocks_reading(hot_dir: Path, hotlog: HotLog, tmp_path: Path) -> None:
    flag = Flag()
    flag.reason = "hot disk above high-water mark"
    path = tmp_path / "ingest.sock"
    with IngestServer(hotlog, socket_path=path, backpressure=flag), connect(path) as s:
        s.sendall(b'{"blocked":1}\n')
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(100)
        assert hotlog.next_seq == 0  # not even read, so not appended
        # keep writing: the kernel buffers fill and the client's own writes block
        s.setblocking(False)
        sent = 0
        with pytest.raises(BlockingIOError):
            for _ in range(100000):
                sent += s.send(b'{"filler":"' + b"x" * 1000 + b'"}\n')
        assert hotlog.next_seq == 0
        flag.reason = None
        s.setblocking(True)
        s.settimeout(20)
        total = 1 + sent // 1015 + (1 if sent % 1015 else 0)
        answers = read_answers(s, total)
        assert len(answers) == total and all(a["ok"] for a in answers)
    assert len(events_in_log(hot_dir)) == total
    assert flag.calls > 1


def test_socket_oversize_line_and_unterminated_last_line(hot_dir: Path, hotlog: HotLog, tmp_path: Path) -> None:
    path = tmp_path / "ingest.sock"
    with IngestServer(hotlog, socket_path=path, max_request_bytes=2048, max_event_bytes=1024), connect(path) as s:
        big = b'{"big":"' + b"y" * 5000 + b'"}\n'
        s.sendall(big + b'{"after":1}\n')
        answers = read_answers(s, 2)
        assert answers[0]["ok"] is False and answers[0]["line"] == 1
        assert answers[0]["error"].startswith("too-large: ")
        assert answers[1]["ok"] is True
        # over max_event_bytes but under max_request_bytes: the sanitiser refuses it
        s.sendall(b'{"mid":"' + b"z" * 1500 + b'"}\n')
        assert read_answers(s, 1)[0]["error"].startswith("too-large: ")
        s.sendall(b'{"last":true}')  # no newline: taken when the client half-closes
        s.shutdown(socket.SHUT_WR)
        assert read_answers(s, 1)[0]["ok"] is True
    assert [e for e in events_in_log(hot_dir)] == [{"after": 1}, {"last": True}]


@pytest.mark.parametrize("mode", [0o600, 0o660, 0o666])
def test_socket_mode_whatever_the_umask(hotlog: HotLog, tmp_path: Path, mode: int) -> None:
    path = tmp_path / "ingest.sock"
    for umask in (0o000, 0o077):
        old = os.umask(umask)
        try:
            srv = IngestServer(hotlog, socket_path=path, socket_mode=mode).start()
        finally:
            os.umask(old)
        try:
            st = os.stat(path)
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == mode, (oct(st.st_mode), umask)
            assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ingest-")] == []
        finally:
            srv.stop(1)
        assert not path.exists()


def test_stale_socket_replaced_live_socket_and_files_refused(hotlog: HotLog, tmp_path: Path) -> None:
    path = tmp_path / "ingest.sock"
    # stale: a socket file nobody listens on (its process died)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    assert path.exists()
    with IngestServer(hotlog, socket_path=path) as srv, connect(path) as s:
        s.sendall(b'{"ok":1}\n')
        assert read_answers(s, 1)[0]["ok"]
        # live: another server refuses to take the path over
        with pytest.raises(OSError, match="another process is listening"):
            IngestServer(hotlog, socket_path=path).start()
        assert not srv.stopping
    regular = tmp_path / "not-a-socket"
    regular.write_text("keep me")
    with pytest.raises(FileExistsError):
        IngestServer(hotlog, socket_path=regular).start()
    assert regular.read_text() == "keep me"


# ------------------------------------------------------------------ HTTP


def test_http_mixed_batch_is_refused_whole(hot_dir: Path, hotlog: HotLog) -> None:
    """A request is atomic (docs/INGEST.md): one refused event and nothing is stored, with a
    non-retryable 422 that lists the refused events; the good ones alone are then stored."""
    metrics = Metrics()
    with IngestServer(hotlog, http_listen="127.0.0.1:0", metrics=metrics) as srv:
        addr = srv.http_address
        assert addr is not None and addr[0] == "127.0.0.1" and addr[1] > 0
        status, headers, body = post(addr, MIXED)
        assert status == 422 and headers["content-type"] == "application/json"
        assert (body["accepted"], body["rejected"]) == (0, 3)
        assert body["reasons"] == {"bad-json": 2, "not-an-object": 1}
        assert [e["event"] for e in body["errors"]] == [2, 4, 5]
        assert body["errors"][0]["error"].startswith("bad-json: ")
        assert "broken" not in json.dumps(body)  # the request's bytes are never echoed
        assert events_in_log(hot_dir) == []
        good = b"\n".join(line for line in MIXED.split(b"\n") if line.startswith(b'{"user":"'))
        status, _, body = post(addr, good)
    assert status == 200 and body["accepted"] == 3
    recs = by_seq(hot_dir)
    assert [recs[s].data["user"] for s in range(body["first_seq"], body["last_seq"] + 1)] == ["alice", "bob", "carol"]
    assert recs[body["last_seq"]].hash == body["last_hash"]
    assert recs[body["last_seq"]].data["password"] == "[REDACTED:secret-key]"  # sanitised on the way in
    assert metrics.requests == {("http", "422"): 1, ("http", "200"): 1}
    assert metrics.rejected == {"bad-json": 2, "not-an-object": 1}


def test_http_json_seq_and_plain_json(hot_dir: Path, hotlog: HotLog) -> None:
    with IngestServer(hotlog, http_listen=("127.0.0.1", 0)) as srv:
        addr = srv.http_address
        assert addr is not None
        st, _, body = post(addr, b'\x1e{"a":1}\n\x1e{"b":2}\n', {"Content-Type": "application/json-seq"})
        assert st == 200 and body["accepted"] == 2
        st, _, body = post(addr, b'{"c":3}', {"Content-Type": "application/json; charset=utf-8"})
        assert st == 200 and body["accepted"] == 1
        st, _, body = post(addr, b"<xml/>", {"Content-Type": "application/xml"})
        assert st == 415
        st, _, body = post(addr, b"\n \n", {"Content-Type": "application/json"})
        assert st == 400 and body["accepted"] == 0  # nothing stored is never a 2xx
    assert events_in_log(hot_dir) == [{"a": 1}, {"b": 2}, {"c": 3}]


def test_http_token(hot_dir: Path, hotlog: HotLog) -> None:
    with IngestServer(hotlog, http_listen="127.0.0.1:0", token="t0ken-xyz") as srv:
        addr = srv.http_address
        assert addr is not None
        st, h, body = post(addr, b'{"a":1}\n')
        assert st == 401 and h["www-authenticate"].startswith("Bearer ")
        assert "token" in body["error"]
        st, h, _ = post(addr, b'{"a":1}\n', {"Authorization": "Bearer wrong"})
        assert st == 401 and 'error="invalid_token"' in h["www-authenticate"]
        st, _, _ = post(addr, b'{"a":1}\n', {"Authorization": "Basic dDBrZW4teHl6"})  # no "user:"
        assert st == 401
        st, _, _ = post(addr, b'{"a":1}\n', {"Authorization": "Basic " + base64.b64encode(b"u:wrong").decode()})
        assert st == 401
        st, _, body = post(addr, b'{"a":2}\n', {"Authorization": "bearer t0ken-xyz"})
        assert st == 200 and body["accepted"] == 1
        # Basic with the token as the password, for clients that only speak Basic
        basic = "Basic " + base64.b64encode(b"anyone:t0ken-xyz").decode()
        st, _, body = post(addr, b'{"a":3}\n', {"Authorization": basic})
        assert st == 200 and body["accepted"] == 1
    assert events_in_log(hot_dir) == [{"a": 2}, {"a": 3}]


def test_http_limits_and_errors(hot_dir: Path, hotlog: HotLog) -> None:
    with IngestServer(hotlog, http_listen="127.0.0.1:0", max_request_bytes=4096, max_event_bytes=1024) as srv:
        addr = srv.http_address
        assert addr is not None
        # 413 without reading the body: the headers announce 10 MB and none of it is sent
        t0 = time.monotonic()
        resp = raw_http(addr, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
                              b"Content-Type: application/x-ndjson\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 413 ") and time.monotonic() - t0 < 3
        # and with the body actually sent (bigger than the limit): still a clean 413
        st, _, body = post(addr, b'{"x":"' + b"a" * 20000 + b'"}\n')
        assert st == 413 and "over the limit of 4096" in body["error"]
        # Expect: 100-continue is refused before the body is invited
        resp = raw_http(addr, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n"
                              b"Expect: 100-continue\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in resp
        resp = raw_http(addr, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 411 ")
        # chunked bodies are read (and bounded by max_request_bytes like any other)
        resp = raw_http(addr, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                              b"Connection: close\r\n\r\n8\r\n{\"a\":1}\n\r\n0\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 200 ")
        big = b'{"x":"' + b"c" * 1000 + b'"}\n'
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(big), big) for _ in range(5)) + b"0\r\n\r\n"
        resp = raw_http(addr, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                              b"Connection: close\r\n\r\n" + chunked)
        assert resp.startswith(b"HTTP/1.1 413 ")
        st, h, _ = post(addr, b"", method="GET")
        assert st == 405 and h["allow"] == "POST"
        st, _, _ = post(addr, b"{}", path="/v2/other")
        assert st == 404
        st, _, _ = post(addr, b"", method="GET", path="/")
        assert st == 404
        # an event over max_event_bytes inside an acceptable request: the request is refused
        st, _, body = post(addr, b'{"x":"' + b"b" * 2000 + b'"}\n{"ok":1}\n')
        assert st == 422 and body["errors"][0]["error"].startswith("too-large: ")
        st, _, body = post(addr, b'{"ok":1}\n')
        assert st == 200
    assert events_in_log(hot_dir) == [{"a": 1}, {"ok": 1}]


def test_http_backpressure_429(hot_dir: Path, hotlog: HotLog) -> None:
    flag = Flag()
    with IngestServer(hotlog, http_listen="127.0.0.1:0", backpressure=flag) as srv:
        addr = srv.http_address
        assert addr is not None
        flag.reason = "hot disk above high-water mark"
        st, h, body = post(addr, b'{"a":1}\n')
        assert st == 429 and int(h["retry-after"]) >= 1
        assert body["error"] == "backpressure: hot disk above high-water mark"
        flag.reason = None
        st, _, body = post(addr, b'{"a":2}\n')
        assert st == 200
    assert events_in_log(hot_dir) == [{"a": 2}]


def test_http_stop_503_and_storage_failure(hot_dir: Path, tmp_path: Path) -> None:
    log = HotLog(hot_dir, STREAM, durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(log, http_listen="127.0.0.1:0", socket_path=tmp_path / "s.sock").start()
    addr = srv.http_address
    assert addr is not None
    log.close()  # the log fails every append from now on
    st, h, body = post(addr, b'{"a":1}\n{"a":2}\n')
    assert st == 503 and h["retry-after"] == "1"
    assert body["error"].startswith("unavailable: ") and "maybe_stored" not in body
    with connect(tmp_path / "s.sock") as s:
        s.sendall(b'{"a":1}\n')
        assert read_answers(s, 1)[0]["error"].startswith("unavailable: ")
    # while stopping: 503 (exercised on the handler directly; the listener closes at once)
    srv._stopping.set()
    try:
        st, _, body = post(addr, b'{"a":1}\n')
        assert st == 503 and body["error"].startswith("stopping")
    finally:
        srv.stop(1)
    with pytest.raises(OSError):
        post(addr, b'{"a":1}\n')


def test_stop_lets_inflight_batches_finish(hot_dir: Path, hotlog: HotLog, tmp_path: Path) -> None:
    gated = GatedLog(hotlog)
    path = tmp_path / "s.sock"
    srv = IngestServer(gated, socket_path=path, http_listen="127.0.0.1:0").start()
    addr = srv.http_address
    assert addr is not None
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(post(addr, b'{"late":1}\n')))
    t.start()
    s = connect(path)
    s.sendall(b'{"late":2}\n')
    # both batches are now waiting for durability (waited for: a fixed sleep could end first
    # on a loaded machine, and a batch arriving after stop() began would be refused)
    wait_for(lambda: gated.waiting == 2, timeout=30, what="both batches to wait for durability")
    stopper = threading.Thread(target=srv.stop, args=(30,))
    stopper.start()
    wait_for(lambda: not path.exists(), timeout=30, what="stop() to close the socket")  # no longer accepting
    assert stopper.is_alive()  # but waiting for the in-flight batches
    gated.gate.set()
    stopper.join(30)
    t.join(30)
    assert got[0][0] == 200 and got[0][2]["accepted"] == 1
    assert read_answers(s, 1)[0]["ok"]
    s.close()
    assert sorted(e["late"] for e in events_in_log(hot_dir)) == [1, 2]


# ------------------------------------------------------------------ concurrency


def test_concurrent_clients(hot_dir: Path, hotlog: HotLog, tmp_path: Path) -> None:
    path = tmp_path / "ingest.sock"
    n_sock, n_http, per_client, per_batch = 6, 3, 300, 25
    seqs: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def sock_client(c: int) -> None:
        try:
            with connect(path) as s:
                for b in range(0, per_client, per_batch):
                    lines = b"".join(b'{"client":"s%d","i":%d}\n' % (c, i) for i in range(b, b + per_batch))
                    s.sendall(lines)
                    answers = read_answers(s, per_batch)
                    assert len(answers) == per_batch and all(a["ok"] for a in answers)
                    with lock:
                        seqs.extend(a["seq"] for a in answers)
        except BaseException as exc:
            errors.append(exc)

    def http_client(c: int, addr: tuple[str, int]) -> None:
        try:
            for b in range(0, per_client, per_batch):
                body = b"".join(b'{"client":"h%d","i":%d}\n' % (c, i) for i in range(b, b + per_batch))
                st, _, res = post(addr, body)
                assert st == 200 and res["accepted"] == per_batch
                # one request's events are appended together: consecutive seqs
                assert res["last_seq"] - res["first_seq"] == per_batch - 1
                with lock:
                    seqs.extend(range(res["first_seq"], res["last_seq"] + 1))
        except BaseException as exc:
            errors.append(exc)

    with IngestServer(hotlog, socket_path=path, http_listen="127.0.0.1:0") as srv:
        addr = srv.http_address
        assert addr is not None
        threads = [threading.Thread(target=sock_client, args=(c,)) for c in range(n_sock)]
        threads += [threading.Thread(target=http_client, args=(c, addr)) for c in range(n_http)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors, errors
    total = (n_sock + n_http) * per_client
    assert len(seqs) == total == len(set(seqs))
    events = events_in_log(hot_dir)
    assert len(events) == total
    for c in [f"s{i}" for i in range(n_sock)] + [f"h{i}" for i in range(n_http)]:
        # per client, order of acknowledgement is order in the log
        assert [e["i"] for e in events if e["client"] == c] == list(range(per_client))


def test_constructor_checks(hotlog: HotLog) -> None:
    with pytest.raises(ValueError, match="socket_path, http_listen"):
        IngestServer(hotlog)
    with pytest.raises(ValueError, match="empty bearer token"):
        IngestServer(hotlog, http_listen="127.0.0.1:0", token="")


def test_from_config(hot_dir: Path, hotlog: HotLog, tmp_path: Path) -> None:
    from pipeline.config import load_config

    token = tmp_path / "token"
    token.write_text("abc123\n")
    token.chmod(0o600)
    cfg = load_config(None, {"PIPELINE_HOT_DIR": str(hot_dir), "PIPELINE_INGEST_SOCKET": str(tmp_path / "i.sock"),
                             "PIPELINE_INGEST_SOCKET_MODE": "0600", "PIPELINE_INGEST_HTTP": "127.0.0.1:0",
                             "PIPELINE_INGEST_TOKEN_FILE": str(token), "PIPELINE_INGEST_MAX_REQUEST_BYTES": "2048",
                             "PIPELINE_INGEST_MAX_EVENT_BYTES": "1024"})
    with IngestServer.from_config(hotlog, cfg.ingest) as srv:
        assert stat.S_IMODE(os.stat(tmp_path / "i.sock").st_mode) == 0o600
        addr = srv.http_address
        assert addr is not None
        assert post(addr, b'{"a":1}\n')[0] == 401
        assert post(addr, b'{"a":1}\n', {"Authorization": "Bearer abc123"})[0] == 200
        assert post(addr, b"x" * 3000, {"Authorization": "Bearer abc123"})[0] == 413
