"""The HTTP side of ingest: aiohttp's low-level server on an event loop of its own thread.

Why aiohttp (docs/ARCHITECTURE.md): its parser is llhttp (Node.js's), strict about
framing (conflicting or malformed ``Content-Length``, ``Content-Length`` with
``Transfer-Encoding``, bad chunk sizes are errors), it decodes chunked bodies, streams
bodies with flow control, and one event loop holds thousands of idle connections without
a thread each.  What it does not do is added here: a connection cap, a whole-request
timeout (slow senders cannot hold a slot), JSON error answers that never echo request
bytes, a byte budget for bodies in memory, and running the blocking appends off the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from pipeline.ingest import otlp
from pipeline.ingest.body import BodyError, decode_content, framing_for
from pipeline.ingest.handshake import listen_factory
from pipeline.ingest.loops import call_on_loop, new_loop, serve_in_thread, stop_loop_thread
from pipeline.ingest.tls import PeerIdentity, peer_address

if TYPE_CHECKING:
    from pipeline.ingest.server import IngestServer, RequestResult

__all__ = ["EVENTS_PATH", "LOGS_PATH", "HttpFront", "request_sender"]

log = logging.getLogger("pipeline.ingest.http")

EVENTS_PATH = "/v1/events"
LOGS_PATH = otlp.LOGS_PATH  # OTLP/HTTP logs (docs/INGEST.md §5)
BACKLOG = 1024  # the kernel caps it at net.core.somaxconn
IDLE_TIMEOUT = 60.0  # an idle keep-alive connection is closed after this long
_SWEEP_INTERVAL = 0.5
_READ_BUFSIZE = 1 << 16  # per-connection read buffer (aiohttp pauses reading above ~2x this)
_WORKERS = 16  # requests being validated, appended or waiting for durability at once
_DISCARD_LIMIT = 1 << 20  # bytes read and dropped before a 413, so the answer is not lost to a reset
_ENCODINGS = {"", "identity", "gzip", "x-gzip", "deflate", "zstd"}
_SERVER_NAME = "worm-pipeline-ingest"
_STATUS_TEXT = {400: "bad request: the request is not valid HTTP/1.1",
                408: "request timeout", 413: "request line or headers too large",
                431: "request headers too large", 501: "not implemented"}


class _Conn(RequestHandler):
    """aiohttp's connection handler, plus what the cap, the sweeper and error answers need."""

    front: HttpFront
    busy_since: float | None = None  # first byte of the request being received
    in_handler = False
    working = False  # the request is being stored and answered: never shed
    last_active = 0.0
    # who is at the other end (TLS client certificate, or the address); None with a reason
    # in `refusal` when mutual TLS is on and the certificate's identity is not allowed
    peer: PeerIdentity | None = None
    refusal = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.last_active = time.monotonic()
        tls = self.front.ingest.tls
        if tls is not None:  # the handshake is complete when asyncio calls this
            self.peer, self.refusal = tls.identify(transport)
        else:
            self.peer = PeerIdentity("none", "", peer_address(transport))
        self.front.admit(self, transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.front.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.busy_since is None and data:
            self.busy_since = time.monotonic()
        super().data_received(data)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp's own answer reflects the offending bytes in text/html; ours never does,
        # and the log line carries the error class only.
        log.info("ingest: malformed HTTP request refused", extra={
            "status": status, "error": type(exc).__name__ if exc is not None else None})
        metrics = self.front.ingest.metrics
        if metrics is not None:
            metrics.observe_request("http", str(status))
        text = _STATUS_TEXT.get(status, "internal error" if status >= 500 else "bad request")
        resp = _json(status, {"error": text})
        resp.force_close()
        return resp


class _Server(web.Server):
    def __init__(self, front: HttpFront, **kwargs: Any) -> None:
        super().__init__(front.handle, **kwargs)
        self.front = front

    def __call__(self) -> RequestHandler:
        conn = _Conn(self, loop=self._loop, **self._kwargs)
        conn.front = self.front
        return conn


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return _raw(status, orjson.dumps(body) + b"\n", "application/json", headers)


def _raw(status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> web.Response:
    resp = web.Response(status=status, body=data, content_type=content_type)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Server"] = _SERVER_NAME
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


class _Budget:
    """Bytes of request bodies held in memory at once, across requests (event-loop side)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._cond = asyncio.Condition()

    async def acquire(self, n: int) -> None:
        n = min(n, self.total)
        async with self._cond:
            await self._cond.wait_for(lambda: self.free >= n)
            self.free -= n

    async def release(self, n: int) -> None:
        n = min(n, self.total)
        async with self._cond:
            self.free += n
            self._cond.notify_all()


class HttpFront:
    """Serves ``POST /v1/events`` for an IngestServer on ``address``."""

    def __init__(self, ingest: IngestServer, address: tuple[str, int]) -> None:
        self.ingest = ingest
        self._address = address
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._web: _Server | None = None
        self._conns: dict[_Conn, asyncio.BaseTransport] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(_WORKERS, thread_name_prefix="ingest-http")
        self._budget: _Budget | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()  # TLS handshakes under way
        self.bound: tuple[str, int] | None = None
        self._refused = 0  # connections refused at the cap since the last log line
        self._refused_logged = -1e9

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> HttpFront:
        _route_aiohttp_logs()
        self._loop = new_loop()
        try:
            self._thread = serve_in_thread(self._loop, "ingest-http-loop", self._open, self._close_all)
        except BaseException:
            self._pool.shutdown(wait=False)
            raise
        return self

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._budget = _Budget(self.ingest.max_request_bytes)
        # aiohttp's own log lines go to the pipeline's logger (structured), never to stderr raw
        self._web = _Server(self, logger=log, access_log=None, keepalive_timeout=IDLE_TIMEOUT, auto_decompress=False,
                            read_bufsize=_READ_BUFSIZE, max_line_size=8190, max_field_size=8190,
                            max_headers=100, lingering_time=1.0)
        host, port = self._address
        # with TLS, the handshake is run per connection so that a refused one is seen
        factory = listen_factory(self._web, self.ingest.tls, self.ingest.handshake_refusals, "http",
                                 self.ingest.request_timeout, self._handshakes)
        self._server = await loop.create_server(factory, None if host in ("", "*") else host, port,
                                                backlog=BACKLOG, reuse_address=True)
        sockname = self._server.sockets[0].getsockname()
        self.bound = (str(sockname[0]), int(sockname[1]))
        self._sweeper = loop.create_task(self._sweep())

    @property
    def address(self) -> tuple[str, int] | None:
        return self.bound

    def _call(self, coro: Any, timeout: float) -> None:
        call_on_loop(self._loop, coro, timeout)

    def stop_listening(self) -> None:
        """No new connections; open ones keep being served (stop drains them)."""
        self._call(self._stop_listening(), 5.0)

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()

    def close(self, timeout: float) -> None:
        """Close every connection and end the loop's thread."""
        stop_loop_thread(self._loop, self._thread, self._close_all(), timeout)
        self._pool.shutdown(wait=False)

    async def _close_all(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._handshakes):
            task.cancel()
        for transport in list(self._conns.values()):
            transport.close()

    # ------------------------------------------------------------------ connections

    def admit(self, conn: _Conn, transport: asyncio.BaseTransport) -> None:
        """Count a new connection.  At the cap, make room by shedding, in this order: the
        connection idle the longest; the one that has been sending its request's headers
        the longest (a real client sends them at once); the one that has been sending its
        body the longest.  A connection whose request is being stored or answered is never
        shed; only when every connection is in that state is the newcomer refused.  Idle
        sockets and slow senders therefore cannot lock a client out."""
        if len(self._conns) >= self.ingest.max_connections:
            victim = self._shed_candidate()
            if victim is None:
                now = time.monotonic()
                self._refused += 1
                if now - self._refused_logged >= 10.0:  # one line per 10 s, not one per connection
                    log.warning("ingest: HTTP connection limit reached, connections refused",
                                extra={"max_connections": self.ingest.max_connections, "refused": self._refused})
                    self._refused, self._refused_logged = 0, now
                _abort(transport)
                return
            _abort(self._conns.pop(victim))
        self._conns[conn] = transport

    def _shed_candidate(self) -> _Conn | None:
        idle = [c for c in self._conns if c.busy_since is None and not c.in_handler]
        if idle:
            return min(idle, key=lambda c: c.last_active)
        for receiving_body in (False, True):
            partial = [c for c in self._conns if c.busy_since is not None and not c.working
                       and c.in_handler == receiving_body]
            if partial:
                return min(partial, key=lambda c: c.busy_since or 0.0)
        return None

    def forget(self, conn: _Conn) -> None:
        self._conns.pop(conn, None)

    async def _sweep(self) -> None:
        """Close connections that take longer than ``request_timeout`` to send a request's
        headers (the handler enforces the same deadline on the body) or idle too long."""
        timeout = self.ingest.request_timeout
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL)
            now = time.monotonic()
            for conn, transport in list(self._conns.items()):
                if conn.in_handler:
                    continue
                if conn.busy_since is not None and now - conn.busy_since > timeout:
                    _abort(transport)
                elif conn.busy_since is None and now - conn.last_active > IDLE_TIMEOUT:
                    transport.close()

    # ------------------------------------------------------------------ requests

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        conn = request.protocol
        assert isinstance(conn, _Conn)
        conn.in_handler = True
        started = conn.busy_since or time.monotonic()
        try:
            resp = await self._dispatch(request, started + self.ingest.request_timeout)
        except TimeoutError:
            resp = self._answer(request, 408, {
                "error": f"request not received within {self.ingest.request_timeout:g} s"})
            resp.force_close()
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("ingest: HTTP request failed")
            resp = self._answer(request, 500, {"error": "internal error; nothing from this request was stored"})
            resp.force_close()
        finally:
            conn.in_handler = conn.working = False
            conn.busy_since = None
            conn.last_active = time.monotonic()
        metrics = self.ingest.metrics
        if metrics is not None and not resp.prepared:
            metrics.observe_request(_transport(request), str(resp.status))
        return resp

    async def _dispatch(self, request: web.BaseRequest, deadline: float) -> web.StreamResponse:
        ingest = self.ingest
        if request.version < (1, 0):  # HTTP/0.9 has no headers: nothing here can be checked
            return _closing(_json(400, {"error": "bad request: HTTP/1.0 or HTTP/1.1 required"}))
        conn = request.protocol
        assert isinstance(conn, _Conn)
        if conn.peer is None:
            # mutual TLS: a certificate from the right CA, but an identity not allowed;
            # before the path check, so that it covers every route (/v1/events, /v1/logs)
            return await self._refuse(request, deadline, 403, {"error": f"forbidden: {conn.refusal}"}, close=True)
        if request.path not in (EVENTS_PATH, LOGS_PATH):
            return await self._refuse(request, deadline, 404,
                                      {"error": f"no such path, events go to POST {EVENTS_PATH} "
                                                f"(OTLP log records to POST {LOGS_PATH})"})
        if request.method != "POST":
            return await self._refuse(request, deadline, 405,
                                      {"error": "method not allowed, use POST"}, {"Allow": "POST"})
        if ingest.stopping:
            return await self._refuse(request, deadline, 503, {"error": "stopping: the sidecar is shutting down"},
                                      {"Retry-After": "5"}, close=True)
        auth = request.headers.get("Authorization")
        if not ingest.check_authorization(auth):
            err = "invalid_token" if auth else "invalid_request"
            return await self._refuse(request, deadline, 401,
                                      {"error": "unauthorized: a valid bearer token is required"},
                                      {"WWW-Authenticate": f'Bearer realm="worm-pipeline", error="{err}"'}, close=True)
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        length = request.content_length
        if length is None and not chunked:
            return await self._refuse(request, deadline, 411,
                                      {"error": "length required: send Content-Length or a chunked body"}, close=True)
        limit = ingest.max_request_bytes
        if length is not None and length > limit:
            return await self._refuse(request, deadline, 413, {
                "error": f"request body of {length} bytes is over the limit of {limit}"}, close=True)
        framing = self._framing(request)
        if framing is None:
            return await self._refuse(request, deadline, 415, {"error": (
                "unsupported Content-Type: OTLP log records are application/x-protobuf or application/json"
                if request.path == LOGS_PATH else
                "unsupported Content-Type: send application/x-ndjson, application/json, "
                "application/json-seq or application/x-www-form-urlencoded")})
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in _ENCODINGS:
            return await self._refuse(request, deadline, 415, {
                "error": "unsupported Content-Encoding: send identity, gzip, deflate or zstd"})
        reason = ingest.backpressure()
        if reason is not None:
            # read (and drop) the body first: answering while the client is still sending
            # would reset the connection and lose the 429
            return await self._refuse(request, deadline, 429, {"error": f"backpressure: {reason}"},
                                      {"Retry-After": "1"}, discard_all=True)
        assert self._budget is not None
        reserve = length if length is not None and encoding in ("", "identity") else limit
        async with asyncio.timeout_at(_loop_deadline(deadline)):
            await self._budget.acquire(reserve)
        try:
            await self._continue(request)
            async with asyncio.timeout_at(_loop_deadline(deadline)):
                body = await _read_body(request, limit)
            if body is None:
                return _closing(self._answer(request, 413, {
                    "error": f"request body is over the limit of {limit} bytes"}))
            if not ingest._enter():
                return _closing(self._answer(request, 503, {"error": "stopping: the sidecar is shutting down"},
                                             {"Retry-After": "5"}))
            try:
                holder = [body]
                del body
                loop = asyncio.get_running_loop()
                conn.working = True
                result = await loop.run_in_executor(self._pool, self._work, holder, encoding, framing,
                                                    request_sender(request))
                resp = self._result(request, framing, result)
                # the answer goes out before the batch counts as finished: stop() waits for it
                if ingest.metrics is not None:
                    ingest.metrics.observe_request(_transport(request), str(resp.status))
                await resp.prepare(request)
                await resp.write_eof()
                return resp
            finally:
                ingest._leave()
        finally:
            await self._budget.release(reserve)

    def _work(self, holder: list[Any], encoding: str, framing: str, sender: PeerIdentity) -> RequestResult:
        from pipeline.ingest.server import RequestResult

        try:
            holder.append(decode_content(holder.pop(), encoding, self.ingest.max_request_bytes))
            # OTLP: the records that pass are stored and the refused ones counted in the
            # answer (partial_success), which OTLP senders read; NDJSON requests are atomic
            return self.ingest.ingest_body(holder, framing, sender, partial=framing in otlp.CONTENT_TYPES)
        except BodyError as exc:
            return RequestResult(exc.status, {"error": exc.message, "accepted": 0})

    @staticmethod
    def _framing(request: web.BaseRequest) -> str | None:
        if request.path == LOGS_PATH:
            return otlp.framing_for(request.headers.get("Content-Type"))
        return framing_for(request.headers.get("Content-Type"))

    def _answer(self, request: web.BaseRequest, status: int, body: dict[str, Any],
                headers: dict[str, str] | None = None) -> web.Response:
        """An answer that stores nothing: JSON, or for OTLP a google.rpc.Status encoded
        like the request (OTLP/HTTP: "the same Content-Type in the response")."""
        if request.path != LOGS_PATH:
            return _json(status, body, headers)
        data, ctype = otlp.error_answer(status, str(body.get("error", "")), self._framing(request))
        return _raw(status, data, ctype, headers)

    @staticmethod
    def _result(request: web.BaseRequest, framing: str, result: RequestResult) -> web.Response:
        if framing not in otlp.CONTENT_TYPES:
            return _json(result.status, result.body, result.headers)
        status, data, ctype, headers = otlp.answer(result, framing)
        return _raw(status, data, ctype, headers)

    @staticmethod
    async def _continue(request: web.BaseRequest) -> None:
        # invite the body only once the request is known to be acceptable
        if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def _refuse(self, request: web.BaseRequest, deadline: float, status: int, body: dict[str, Any],
                      headers: dict[str, str] | None = None, *, close: bool = False,
                      discard_all: bool = False) -> web.StreamResponse:
        """An answer without storing anything.  The body, if any, is read and dropped so
        that the client is not reset while it still sends: all of it (up to the limit)
        when the connection stays open, a bounded amount before closing.  A client that
        waits for ``100 Continue`` has sent nothing, so nothing is read."""
        resp = self._answer(request, status, body, headers)
        expecting = request.headers.get("Expect", "").lower() == "100-continue"
        if expecting or not request.can_read_body:
            if close or expecting:
                resp.force_close()
            return resp
        budget = self.ingest.max_request_bytes if discard_all else _DISCARD_LIMIT
        try:
            async with asyncio.timeout_at(_loop_deadline(min(deadline, time.monotonic() + (
                    self.ingest.request_timeout if discard_all else 0.5)))):
                while budget > 0:
                    chunk = await request.content.readany()
                    if not chunk:
                        break
                    budget -= len(chunk)
        except TimeoutError:
            close = True
        if close or budget <= 0 or not request.content.at_eof():
            resp.force_close()
        return resp


def request_sender(request: web.BaseRequest) -> PeerIdentity:
    """The authenticated sender of a request, for the events it stores (docs/INGEST.md §6):
    the client certificate's identity under mutual TLS, else the bearer token's name when a
    token is required, else ``none`` with the client's address.  Every route that stores
    events uses this (the request has passed the 403 and 401 checks in ``_dispatch``)."""
    conn = request.protocol
    peer = conn.peer if isinstance(conn, _Conn) else None
    if peer is None:
        raise RuntimeError("request_sender on a connection that was refused")
    if peer.auth == "x509":
        return peer
    ingest = conn.front.ingest if isinstance(conn, _Conn) else None
    if ingest is not None and ingest.token_required:
        return PeerIdentity("token", ingest.token_name, peer.peer)
    return peer


async def _read_body(request: web.BaseRequest, limit: int) -> bytearray | None:
    """The whole body (chunked or not), or None when it is over ``limit`` bytes."""
    length = request.content_length
    body = bytearray()
    content = request.content
    while True:
        chunk = await content.readany()
        if not chunk:
            break
        if len(body) + len(chunk) > limit:
            return None
        body += chunk
    if length is not None and len(body) != length:
        raise ConnectionResetError("the client sent less than its Content-Length")
    return body


def _transport(request: web.BaseRequest) -> str:
    """The ``transport`` label of ``worm_ingest_requests_total``."""
    return "otlp" if request.path == LOGS_PATH else "http"


def _abort(transport: asyncio.BaseTransport) -> None:
    # abort, not close: nothing is flushed to a peer that is being shed
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    else:
        transport.close()


def _closing(resp: web.Response) -> web.Response:
    resp.force_close()
    return resp


def _loop_deadline(deadline: float) -> float:
    """A ``time.monotonic()`` deadline on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


class _ToPipelineLog(logging.Handler):
    """Hands aiohttp's own log records (``aiohttp.*``) to the pipeline's logger, so that
    they come out structured like every other line, never as raw text on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        log.handle(record)


def _route_aiohttp_logs() -> None:
    lg = logging.getLogger("aiohttp")
    if not any(isinstance(h, _ToPipelineLog) for h in lg.handlers):
        lg.addHandler(_ToPipelineLog())
        lg.propagate = False


