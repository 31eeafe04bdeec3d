"""Ingest for processes outside Python: NDJSON over a Unix domain socket and over HTTP.

Both transports share one rule: an event is acknowledged only once it is durable (per the
log's durability mode).  A batch is appended with ``wait=False`` and the server then waits
once, on the last receipt of the batch, before it answers; one fsync covers the batch.

Unix domain socket protocol (``SOCK_STREAM``)
---------------------------------------------
The client writes NDJSON: one JSON object per ``\\n``-terminated line.  The server reads
whatever is available (at most ``max_request_bytes`` per round), appends every valid line,
waits for durability, then writes one JSON line per input line, in order::

    {"ok":true,"seq":41,"hash":"9f2c..."}
    {"ok":false,"line":7,"error":"bad-json: unexpected character: line 1 column 2 (char 1)"}

``line`` counts lines from 1 since the connection was opened.  Blank lines are ignored and
get no answer.  A final line without ``\\n`` is accepted when the client half-closes
(``shutdown(SHUT_WR)``).  A line longer than ``max_request_bytes`` is answered with a
``too-large`` error and skipped up to its newline.  Clients must read answers while they
write (or write in bounded batches and read the answers of each): a client that only
writes eventually blocks the server's answers and then its own writes.

Authentication is by file permissions: the socket is created with ``socket_mode``
(default ``0660``) whatever the process umask, so only the owner and group can connect.

Backpressure: while ``backpressure()`` returns a reason (for example the hot disk is above
its high-water mark), the server stops reading from every connection.  Events already
read are still appended and acknowledged; new writes fill the kernel's socket buffer and
then block in the client, which is the desired effect: the application slows down
instead of events being dropped or the disk filling up.  Reading resumes by itself when
the reason clears.

HTTP
----
``POST /v1/events`` with an NDJSON body (``application/x-ndjson``; ``application/json-seq``
with its RS separators is tolerated) answers ``200`` with
``{"accepted":a,"rejected":r,"results":[...]}`` (the same objects as on the socket, ``line``
counted from 1 in the body).  ``401`` without the bearer token when one is configured,
``411`` without Content-Length, ``413`` when it is over ``max_request_bytes`` (the body is
not read), ``415`` for other content types, ``429`` with ``Retry-After`` under
backpressure, ``503`` while stopping or when the log cannot append at all.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import logging
import os
import select
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import orjson

from pipeline.sanitise import InvalidEvent, Sanitiser, sanitiser_of

__all__ = ["Appender", "IngestMetrics", "IngestServer", "ReceiptLike"]

log = logging.getLogger("pipeline.ingest")

EVENTS_PATH = "/v1/events"
_READ_CHUNK = 256 << 10  # one recv; more is gathered without blocking up to max_request_bytes
_POLL_INTERVAL = 0.05  # how often blocked readers re-check backpressure and stop
_SEND_TIMEOUT = 60.0  # a client that stops reading answers is dropped after this long
_ACCEPTED_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-seq",
                   "application/json", "text/plain")


class ReceiptLike(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def hash(self) -> str: ...


class Appender(Protocol):
    """What the server needs from the log: ``HotLog`` implements it."""

    def append_prepared(self, data_json: bytes, *, wait: bool) -> Any: ...

    def wait_durable(self, receipt: Any, timeout: float | None = None) -> None: ...


class IngestMetrics(Protocol):
    """Counters the server reports to (``pipeline.ops.Metrics`` implements it)."""

    def observe_appended(self, events: int, nbytes: int) -> None: ...

    def observe_rejected(self, reason: str, count: int = 1) -> None: ...

    def observe_request(self, transport: str, code: str) -> None: ...


class _Batch:
    """The outcome of one batch of lines, in input order."""

    __slots__ = ("accepted", "rejected", "results", "storage_failures")

    def __init__(self) -> None:
        self.results: list[bytes] = []  # one encoded JSON object (no newline) per line
        self.accepted = 0
        self.rejected = 0
        self.storage_failures = 0


def _ok(receipt: Any) -> bytes:
    return b'{"ok":true,"seq":%d,"hash":"%s"}' % (receipt.seq, receipt.hash.encode())


def _err(line_no: int, reason: str, detail: str) -> bytes:
    return orjson.dumps({"ok": False, "line": line_no, "error": f"{reason}: {detail}"})


class IngestServer:
    """NDJSON ingest over a Unix socket and/or localhost HTTP, acknowledging durable events.

    ``start()`` binds and serves on background threads; ``stop(grace)`` stops accepting and
    lets in-flight batches finish (up to ``grace`` seconds).  Thread-safe.

    ``backpressure`` is called before every socket read and HTTP request (and every 50 ms
    per blocked connection): it must be cheap, e.g. return a flag the shipper maintains."""

    def __init__(
        self,
        appender: Appender,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        socket_mode: int = 0o660,
        http_listen: str | tuple[str, int] | None = None,
        token: str | None = None,
        max_request_bytes: int = 10 << 20,
        max_event_bytes: int = 1 << 20,
        backpressure: Callable[[], str | None] = lambda: None,
        metrics: IngestMetrics | None = None,
        sanitiser: Sanitiser | None = None,
        max_connections: int = 1024,
    ) -> None:
        if socket_path is None and http_listen is None:
            raise ValueError("IngestServer needs socket_path, http_listen or both")
        if max_request_bytes < 1 or max_event_bytes < 1:
            raise ValueError("size limits must be positive")
        if token is not None and not token:
            raise ValueError("an empty bearer token would accept anything; pass None to disable")
        self.appender = appender
        self.socket_path = Path(socket_path) if socket_path is not None else None
        self.socket_mode = socket_mode
        if isinstance(http_listen, str):
            from pipeline.config import parse_listen

            http_listen = parse_listen(http_listen)
        self._http_listen = http_listen
        self._token = token.encode() if token is not None else None
        self.max_request_bytes = max_request_bytes
        self.max_event_bytes = max_event_bytes
        self.backpressure = backpressure
        self.metrics = metrics
        # the log's own sanitiser (HotLog.sanitiser), so ingest stores what append would
        self.sanitiser = sanitiser or sanitiser_of(appender, max_event_bytes)
        self.max_connections = max_connections

        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._started = False
        self._inflight = 0  # batches being appended or answered, both transports
        self._idle = threading.Condition(self._lock)
        self._unix_sock: socket.socket | None = None
        self._unix_ino: tuple[int, int] | None = None
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._http: _HTTPServer | None = None

    @classmethod
    def from_config(cls, appender: Appender, config: Any, *,
                    backpressure: Callable[[], str | None] = lambda: None,
                    metrics: IngestMetrics | None = None) -> IngestServer:
        """Build from a ``pipeline.config.IngestConfig`` (reads the token file now, so that
        a missing or empty token fails at start, not on the first request)."""
        return cls(appender, socket_path=config.socket, socket_mode=config.socket_mode,
                   http_listen=config.http, token=config.read_token(),
                   max_request_bytes=config.max_request_bytes, max_event_bytes=config.max_event_bytes,
                   backpressure=backpressure, metrics=metrics)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> IngestServer:
        with self._lock:
            if self._started:
                raise RuntimeError("IngestServer already started")
            self._started = True
        try:
            if self.socket_path is not None:
                self._unix_sock = self._bind_unix(self.socket_path)
                t = threading.Thread(target=self._accept_loop, name="ingest-unix-accept", daemon=True)
                t.start()
                self._threads.append(t)
            if self._http_listen is not None:
                self._http = _HTTPServer(self._http_listen, _Handler, self)
                t = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.2},
                                     name="ingest-http", daemon=True)
                t.start()
                self._threads.append(t)
        except BaseException:
            self.stop(0)
            raise
        log.info("ingest started", extra={"socket": str(self.socket_path) if self.socket_path else None,
                                          "http": self.http_address})
        return self

    @property
    def http_address(self) -> tuple[str, int] | None:
        """The bound (host, port): with port 0 in the configuration, the one the OS chose."""
        if self._http is None:
            return None
        host, port = self._http.server_address[:2]
        return str(host), int(port)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, let in-flight batches finish within ``grace`` seconds, then close
        every connection.  Events acknowledged before are durable; events read but not yet
        answered when grace runs out may or may not be in the log (the client retries)."""
        with self._lock:
            self._stopping.set()
        deadline = time.monotonic() + max(0.0, grace)
        if self._http is not None:
            self._http.shutdown()  # stops serve_forever: no new connections
            self._http.server_close()
        if self._unix_sock is not None:
            with contextlib.suppress(OSError):
                self._unix_sock.close()
            self._remove_socket_file()
        with self._idle:
            while self._inflight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("ingest stop: grace period over with batches in flight",
                                extra={"inflight": self._inflight})
                    break
                self._idle.wait(remaining)
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=max(0.1, deadline - time.monotonic()))

    def __enter__(self) -> IngestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the batch path

    def _enter(self) -> bool:
        """Register a batch.  False once stop() began: checked and counted under the same lock
        as stop() sets the flag, so no batch can slip in after stop() saw zero in flight (it
        would be appended after the drain sealed the segment, and never acknowledged)."""
        with self._lock:
            if self._stopping.is_set():
                return False
            self._inflight += 1
            return True

    def _leave(self) -> None:
        with self._idle:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.notify_all()

    def process(self, lines: list[tuple[int, bytes]]) -> _Batch:
        """Validate and append ``(line_no, raw)`` pairs, wait until the appended ones are
        durable, and return one result per pair.  Exposed for tests and embedding."""
        batch = _Batch()
        pending: list[tuple[int, Any, int]] = []  # (index in results, receipt, data bytes)
        prepared: list[tuple[int, int, bytes]] = []  # (index in results, line_no, data)
        checked = self.sanitiser.prepare_json_many([raw for _n, raw in lines])
        for (line_no, _raw), data in zip(lines, checked, strict=True):
            if isinstance(data, InvalidEvent):
                batch.results.append(_err(line_no, data.reason, data.detail))
                batch.rejected += 1
                if self.metrics is not None:
                    self.metrics.observe_rejected(data.reason)
                continue
            prepared.append((len(batch.results), line_no, data))
            batch.results.append(b"")  # filled in once durable
        many = getattr(self.appender, "append_prepared_many", None)
        outcomes: list[Any]
        if many is not None:
            # one lock acquisition for the whole batch instead of one per event
            outcomes = list(many([d for _i, _l, d in prepared]))
        else:
            outcomes = []
            for _i, _l, d in prepared:
                try:
                    outcomes.append(self.appender.append_prepared(d, wait=False))
                except Exception as exc:  # HotLogError and anything else: not in the log
                    outcomes.append(exc)
        for (idx, line_no, data), outcome in zip(prepared, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                batch.results[idx] = _err(line_no, "unavailable", _describe(outcome))
                batch.rejected += 1
                batch.storage_failures += 1
                if self.metrics is not None:
                    self.metrics.observe_rejected("unavailable")
                continue
            pending.append((idx, outcome, len(data)))
        if pending:
            self._wait_durable(batch, lines, pending)
        return batch

    def _wait_durable(self, batch: _Batch, lines: list[tuple[int, bytes]],
                      pending: list[tuple[int, Any, int]]) -> None:
        # Durability is monotonic in seq: once the last receipt is durable, all are.  When
        # it fails, the log rolled back what was not durable; ask receipt by receipt (the
        # durable ones return at once) so that each line gets the truth.
        try:
            self.appender.wait_durable(pending[-1][1])
            failed: dict[int, str] = {}
        except Exception as exc:
            log.warning("ingest: batch not durable", extra={"error": _describe(exc)})
            failed = {}
            for idx, receipt, _n in pending:
                try:
                    self.appender.wait_durable(receipt, timeout=0)
                except Exception as exc2:
                    failed[idx] = _describe(exc2)
        nbytes = 0
        for idx, receipt, n in pending:
            if idx in failed:
                batch.results[idx] = _err(lines[idx][0], "unavailable", failed[idx])
                batch.rejected += 1
                batch.storage_failures += 1
                if self.metrics is not None:
                    self.metrics.observe_rejected("unavailable")
            else:
                batch.results[idx] = _ok(receipt)
                batch.accepted += 1
                nbytes += n
        if self.metrics is not None and batch.accepted:
            self.metrics.observe_appended(batch.accepted, nbytes)

    # ------------------------------------------------------------------ Unix socket

    def _bind_unix(self, path: Path) -> socket.socket:
        self._clear_stale(path)
        # Bind inside a private 0700 directory, set the mode, then rename into place: the
        # socket is never reachable with umask-derived permissions, even for an instant,
        # and the process umask (shared with every thread) is left alone.
        tmpdir = tempfile.mkdtemp(prefix=".ingest-", dir=path.parent)
        tmp = os.path.join(tmpdir, "s")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(tmp)
            os.chmod(tmp, self.socket_mode)
            sock.listen(128)
            os.rename(tmp, path)
            st = os.stat(path)
            self._unix_ino = (st.st_dev, st.st_ino)
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(tmpdir)
        # closing a listening socket does not wake a thread blocked in accept(): poll instead
        sock.settimeout(_POLL_INTERVAL * 4)
        return sock

    @staticmethod
    def _clear_stale(path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(errno.EEXIST, f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            # nobody listens: left behind by a process that died
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        except OSError:
            pass  # e.g. EACCES: cannot tell, treat as in use
        finally:
            probe.close()
        raise OSError(errno.EADDRINUSE, f"another process is listening on {path}")

    def _remove_socket_file(self) -> None:
        # only if the path still names our socket: a newer process may have replaced it
        if self.socket_path is None or self._unix_ino is None:
            return
        with contextlib.suppress(OSError):
            st = os.lstat(self.socket_path)
            if (st.st_dev, st.st_ino) == self._unix_ino:
                os.unlink(self.socket_path)

    def _accept_loop(self) -> None:
        assert self._unix_sock is not None
        listener = self._unix_sock
        while not self._stopping.is_set():
            try:
                conn, _addr = listener.accept()
            except TimeoutError:
                continue  # the timeout only exists so that stop() is noticed
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)  # EMFILE and friends: do not spin
                continue
            with self._lock:
                too_many = len(self._conns) >= self.max_connections
                if not too_many:
                    self._conns.add(conn)
            if too_many:
                log.warning("ingest: connection limit reached", extra={"max_connections": self.max_connections})
                conn.close()
                continue
            t = threading.Thread(target=self._serve_conn, args=(conn,), name="ingest-unix-conn", daemon=True)
            t.start()

    def _serve_conn(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(_SEND_TIMEOUT)
            self._conn_loop(conn)
        except OSError as exc:
            if not self._stopping.is_set():
                log.info("ingest: connection closed", extra={"error": _describe(exc)})
        finally:
            with self._lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def _wait_readable(self, conn: socket.socket) -> bool:
        """Block until ``conn`` has data (or EOF) and backpressure is clear.  False to stop."""
        blocked_since: float | None = None
        while not self._stopping.is_set():
            reason = self.backpressure()
            if reason is not None:
                if blocked_since is None:
                    blocked_since = time.monotonic()
                    log.info("ingest: not reading (backpressure)", extra={"reason": reason})
                time.sleep(_POLL_INTERVAL)
                continue
            r, _, _ = select.select([conn], [], [], _POLL_INTERVAL)
            if r:
                return True
        return False

    def _conn_loop(self, conn: socket.socket) -> None:
        buf = bytearray()
        line_no = 0
        discarding = False  # inside an over-long line: drop bytes up to its newline
        limit = self.max_request_bytes
        eof = False
        while not eof:
            if not self._wait_readable(conn):
                return
            chunk = conn.recv(min(_READ_CHUNK, max(1, limit - len(buf))))
            if not chunk:
                eof = True
            else:
                buf += chunk
                # gather what is already there, without blocking, up to the limit
                # (a zero-timeout select, not MSG_DONTWAIT: on a socket with a timeout Python
                # polls for readability before every recv, whatever the flags)
                while len(buf) < limit and select.select([conn], [], [], 0)[0]:
                    more = conn.recv(min(_READ_CHUNK, limit - len(buf)))
                    if not more:
                        eof = True
                        break
                    buf += more
            lines: list[tuple[int, bytes]] = []
            start = 0
            while True:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    break
                raw = bytes(buf[start:nl])
                start = nl + 1
                if discarding:
                    discarding = False
                    continue
                raw = raw.rstrip(b"\r").lstrip(b"\x1e")
                if raw.strip():
                    line_no += 1
                    lines.append((line_no, raw))
            del buf[:start]
            if eof and buf and not discarding:
                raw = bytes(buf).rstrip(b"\r").lstrip(b"\x1e")
                if raw.strip():
                    line_no += 1
                    lines.append((line_no, raw))
                buf.clear()
            elif len(buf) >= limit:
                # a line that cannot fit: answer it now, skip the rest of it
                if not discarding:
                    line_no += 1
                    lines.append((line_no, b""))  # placeholder, answered below
                    discarding = True
                buf.clear()
            if lines:
                self._answer(conn, lines)

    def _answer(self, conn: socket.socket, lines: list[tuple[int, bytes]]) -> None:
        if not self._enter():
            with contextlib.suppress(OSError):
                conn.sendall(b"\n".join(_err(n, "unavailable", "stopping: the sidecar is shutting down")
                                        for n, _raw in lines) + b"\n")
            return
        try:
            oversize = [(i, n) for i, (n, raw) in enumerate(lines) if raw == b""]
            batch = self.process([p for p in lines if p[1] != b""])
            results = batch.results
            for i, n in oversize:  # in order, so earlier insertions keep later indexes right
                detail = f"line longer than max_request_bytes ({self.max_request_bytes})"
                results.insert(i, _err(n, "too-large", detail))
                if self.metrics is not None:
                    self.metrics.observe_rejected("too-large")
            # counted before the answer goes out: a client that reads the metrics after its
            # acknowledgement must find its request there
            if self.metrics is not None:
                self.metrics.observe_request("unix", "ok")
            conn.sendall(b"\n".join(results) + b"\n")
        finally:
            self._leave()

    # ------------------------------------------------------------------ HTTP

    def _check_token(self, header: str | None) -> bool:
        if self._token is None:
            return True
        if header is None:
            return False
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # constant time: the comparison must not reveal how many leading bytes matched
        return hmac.compare_digest(value.strip().encode(), self._token)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], ingest: IngestServer) -> None:
        self.ingest = ingest
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "worm-pipeline-ingest"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that sends headers or a body slowly does not hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:
        # the pipeline's own log, not stderr noise, and never mixed with the audit stream
        log.debug("http: " + format, *args)

    def _send(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None,
              *, close: bool = False) -> None:
        payload = orjson.dumps(body) + b"\n"
        # counted before the answer goes out: a client that reads the metrics after its
        # answer must find its request there
        metrics = self.server.ingest.metrics
        if metrics is not None:
            metrics.observe_request("http", str(code))
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    def _not_allowed(self) -> None:
        if self._path() == EVENTS_PATH:
            self._send(405, {"error": f"method {self.command} not allowed, use POST"}, {"Allow": "POST"})
        else:
            self._send(404, {"error": f"no such path, events go to POST {EVENTS_PATH}"})

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed

    def handle_expect_100(self) -> bool:
        # curl sends "Expect: 100-continue" before large bodies: refuse an oversized one
        # here, before the client sends it, instead of inviting it and then refusing it
        ingest = self.server.ingest
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0
        if length > ingest.max_request_bytes and self._path() == EVENTS_PATH:
            self._too_large(length)
            return False
        return super().handle_expect_100()

    def _too_large(self, length: int) -> None:
        ingest = self.server.ingest
        self._send(413, {"error": f"request body of {length} bytes is over the limit of "
                                  f"{ingest.max_request_bytes}"}, close=True)
        # Lingering close: closing a socket with unread input makes the kernel send RST,
        # which can destroy the 413 before the client reads it.  Half-close, then discard
        # (never store) a bounded amount of what the client had already sent.
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            budget = 1 << 20
            while budget > 0:
                chunk = self.connection.recv(min(65536, budget))
                if not chunk:
                    break
                budget -= len(chunk)

    def do_POST(self) -> None:
        ingest = self.server.ingest
        if self._path() != EVENTS_PATH:
            self._send(404, {"error": f"no such path, events go to POST {EVENTS_PATH}"}, close=True)
            return
        if ingest.stopping:
            self._send(503, {"error": "stopping: the sidecar is shutting down"}, {"Retry-After": "5"}, close=True)
            return
        if not ingest._check_token(self.headers.get("Authorization")):
            err = "invalid_token" if self.headers.get("Authorization") else "invalid_request"
            self._send(401, {"error": "unauthorized: a valid bearer token is required"},
                       {"WWW-Authenticate": f'Bearer realm="worm-pipeline", error="{err}"'}, close=True)
            return
        length_s = self.headers.get("Content-Length")
        if length_s is None or self.headers.get("Transfer-Encoding"):
            self._send(411, {"error": "length required: send Content-Length (chunked bodies are not accepted)"},
                       close=True)
            return
        try:
            length = int(length_s)
            if length < 0:
                raise ValueError
        except ValueError:
            self._send(400, {"error": f"bad Content-Length {length_s!r}"}, close=True)
            return
        if length > ingest.max_request_bytes:
            # the body is never read: close so that it is not taken for the next request
            self._too_large(length)
            return
        ctype = (self.headers.get("Content-Type") or "application/x-ndjson").split(";", 1)[0].strip().lower()
        if ctype not in _ACCEPTED_TYPES:
            self._send(415, {"error": f"unsupported content type {ctype!r}, send application/x-ndjson"}, close=True)
            return
        reason = ingest.backpressure()
        if reason is not None:
            self._send(429, {"error": f"backpressure: {reason}"}, {"Retry-After": "1"}, close=True)
            return
        if not ingest._enter():
            self._send(503, {"error": "stopping: the sidecar is shutting down"}, {"Retry-After": "5"}, close=True)
            return
        try:
            body = self.rfile.read(length)
            if len(body) != length:
                self.close_connection = True  # client went away mid-body; nothing was appended
                return
            lines = _split_body(body, json_seq=ctype == "application/json-seq")
            batch = ingest.process(lines)
            out = {"accepted": batch.accepted, "rejected": batch.rejected,
                   "results": [orjson.Fragment(r) for r in batch.results]}
            if batch.storage_failures and not batch.accepted:
                self._send(503, out, {"Retry-After": "1"})
            else:
                self._send(200, out)
        finally:
            ingest._leave()


def _split_body(body: bytes, *, json_seq: bool) -> list[tuple[int, bytes]]:
    parts = body.split(b"\x1e") if json_seq else body.split(b"\n")
    out: list[tuple[int, bytes]] = []
    n = 0
    for part in parts:
        raw = part.strip(b"\r\n\x1e") if json_seq else part.rstrip(b"\r").lstrip(b"\x1e")
        if raw.strip():
            n += 1
            out.append((n, raw))
    return out
