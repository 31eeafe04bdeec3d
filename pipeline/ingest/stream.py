"""Syslog over TCP/TLS (RFC 6587 framing, RFC 5425) and RELP listeners.

docs/INGEST.md §7 and §8 are the specification.  One event loop on a thread of its own
serves both; each connection has one worker task that stores its messages in arrival
order (a batch at a time, off the loop), so the events of a connection appear in the
chain in the order sent.  Reading pauses while a connection has more than
``_HIGH_WATER`` bytes of messages waiting, and while the log reports backpressure, so
memory per connection is bounded by that plus one frame (``max_syslog_frame``).

- Syslog (no acknowledgement in the protocol): a message is stored once received; what
  a client had sent when the connection broke may or may not have been stored, and the
  client cannot know.
- RELP: each ``syslog`` transaction is answered ``200 OK`` only once its event is durable.
  A client's unanswered transactions are resent by it after a reconnect (rsyslog's
  omrelp does), so nothing answered is ever lost; the ones stored but not answered when
  the sidecar died are stored again (docs/INGEST.md §8.3).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
import time
from collections import deque
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from pipeline._accel import native
from pipeline.ingest.handshake import listen_factory
from pipeline.ingest.loops import call_on_loop, new_loop, serve_in_thread, stop_loop_thread
from pipeline.ingest.syslog import FrameError, Framer, frame_events
from pipeline.ingest.tls import PeerIdentity, peer_address
from pipeline.sanitise import InvalidEvent

if TYPE_CHECKING:
    from pipeline.ingest.server import IngestServer

__all__ = ["RelpParser", "StreamFront"]

log = logging.getLogger("pipeline.ingest.stream")

_HIGH_WATER = 1 << 20  # bytes of received messages waiting per connection before reading pauses
_BATCH_EVENTS = 4096  # messages stored together (one wait for durability)
_WORKERS = 8
_RELP_SOFTWARE = b"worm-pipeline"
_RELP_MAX_HEADER = 64  # "TXNR SP COMMAND SP DATALEN SP": 9 + 1 + 32 + 1 + 9 + 1 digits and spaces
_BACKPRESSURE_POLL = 0.05
_RELP_HEAD = re.compile(rb"([0-9]{1,9}) ([A-Za-z]{1,32}) ([0-9]{1,9})[ \n]")
# what the start of a header can look like before all of it has arrived
_RELP_COMMANDS = {c.encode(): c for c in ("syslog", "open", "close", "rsp", "serverclose")}
_RELP_COPY_LIMIT = 1 << 19  # bytes: RelpParser.feed parses a copy of a buffer up to this size
# bound once: None without the C accelerator (or with PIPELINE_NO_NATIVE=1)
_relp_frames = native.relp_frames if native is not None else None
_RELP_HEAD_PREFIX = re.compile(rb"[0-9]{0,9}(?: (?:[A-Za-z]{0,32}(?: [0-9]{0,9})?)?)?")


class RelpParser:
    """RELP frames (``TXNR SP COMMAND SP DATALEN [SP DATA] LF``) from a byte stream:
    ``(txnr, command, data, error)``.  A ``syslog`` frame whose DATA is over ``max_frame``
    bytes comes out with its first ``max_frame`` bytes and an error (the rest is skipped),
    so memory stays bounded.  A malformed header raises FrameError (the session is over:
    nothing after it can be delimited)."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._skip = 0
        self._skip_frame: tuple[int, str] | None = None  # frame being skipped: answered after

    def feed(self, data: bytes) -> list[tuple[int, str, bytes, str | None]]:
        buf = self._buf
        buf += data
        n = len(buf)
        # parse a bytes copy when the buffer is small (the usual: one read plus a partial
        # frame), so that each frame's data is sliced once; a large buffer (a big frame
        # arriving read by read) is parsed in place, so the copying stays linear
        view: bytes | bytearray = bytes(buf) if n <= _RELP_COPY_LIMIT else buf
        out: list[tuple[int, str, bytes, str | None]] = []
        pos = 0
        match = _RELP_HEAD.match
        fast = _relp_frames if type(view) is bytes else None
        while pos < n:
            if fast is not None and not self._skip and self._skip_frame is None:
                # the C accelerator takes the run of complete, ordinary frames; what it stops
                # at (incomplete, empty, too large, malformed) is decided below
                frames, pos = fast(view, pos, self.max_frame + _RELP_MAX_HEADER)
                out += frames
                if pos >= n:
                    break
            if self._skip:
                k = min(self._skip, n - pos)
                self._skip -= k
                pos += k
                continue
            if self._skip_frame is not None:
                if buf[pos] != 0x0A:
                    raise FrameError("RELP frame not ended by LF")
                pos += 1
                self._skip_frame = None
                continue
            head = match(view, pos)
            if head is None:
                # incomplete (wait for more) unless it can no longer become a header
                if n - pos >= _RELP_MAX_HEADER or not _RELP_HEAD_PREFIX.fullmatch(buf, pos):
                    raise FrameError("malformed RELP frame header")
                break
            head_end = head.end() - 1  # the SP before DATA, or the LF of an empty frame
            txnr_b, command_b, length_b = head.groups()
            txnr, length = int(txnr_b), int(length_b)
            command = _RELP_COMMANDS.get(command_b) or command_b.decode("ascii")
            if buf[head_end] == 0x0A:
                if length != 0:
                    raise FrameError("RELP frame header ends before its data")
                out.append((txnr, command, b"", None))
                pos = head_end + 1
                continue
            start = head_end + 1
            if length > self.max_frame + _RELP_MAX_HEADER:
                if n - start < self.max_frame:
                    break
                out.append((txnr, command, bytes(buf[start:start + self.max_frame]),
                            f"too-large: RELP data of {length} bytes over max_syslog_frame ({self.max_frame}); "
                            f"the first {self.max_frame} bytes are kept"))
                self._skip = length - self.max_frame
                self._skip_frame = (txnr, command)
                pos = start + self.max_frame
                continue
            if n - start < length + 1:
                break
            if buf[start + length] != 0x0A:
                raise FrameError("RELP frame not ended by LF")
            out.append((txnr, command, bytes(view[start:start + length]), None))
            pos = start + length + 1
        del buf[:pos]
        return out


def _refusal_record(event: dict[str, Any], error: InvalidEvent) -> dict[str, Any]:
    """What is stored in place of a syslog event the sanitiser refused (never dropped)."""
    out: dict[str, Any] = {"syslog": "refused", "parse_error": f"{error.reason}: {error.detail}"[:300]}
    for key in ("facility", "severity", "hostname", "app_name", "procid", "msgid", "timestamp"):
        if key in event:
            out[key] = event[key]
    return out


class _Conn(asyncio.Protocol):
    def __init__(self, front: StreamFront, kind: str) -> None:
        self.front = front
        self.kind = kind
        self.transport: asyncio.Transport | None = None
        self.sender: PeerIdentity | None = None
        self.framer = Framer(front.ingest.max_syslog_frame)
        self.relp = RelpParser(front.ingest.max_syslog_frame)
        self.at = 0 if kind == "syslog" else 2  # where a queued item holds its frame
        # syslog: (frame, error); RELP: (txnr, command, data, error)
        self.queue: deque[Any] = deque()
        self.queued_bytes = 0
        self.paused = False
        self.closed = False
        self.opened = False  # RELP: "open" answered
        self.busy = False  # a batch is being stored
        self.draining = False  # the sidecar is stopping: no more reading, store what was read
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        tls = self.front.ingest.tls
        if tls is not None:
            self.sender, why = tls.identify(transport)
        else:
            self.sender, why = PeerIdentity("none", "", peer_address(transport)), ""
        if self.sender is None:
            self.front.refused(self.kind, peer_address(transport), why)
            transport.abort()
            return
        if not self.front.admit(self):
            transport.abort()
            return
        self.task = asyncio.get_running_loop().create_task(self._work())

    def data_received(self, data: bytes) -> None:
        try:
            items: list[Any] = self.relp.feed(data) if self.kind == "relp" else self.framer.feed(data)
        except FrameError as exc:
            self._framing_failed(str(exc))
            return
        self._enqueue(items)

    def eof_received(self) -> bool | None:
        if self.kind == "syslog":
            self._enqueue(self.framer.finish())
        return None  # close the transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.front.forget(self)
        self.wake.set()

    # ---------------------------------------------------------------- queue

    def _enqueue(self, items: list[Any]) -> None:
        if not items:
            return
        self.queue.extend(items)
        self.queued_bytes += sum(map(len, map(itemgetter(self.at), items)))
        if self.queued_bytes > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self.wake.set()

    def _framing_failed(self, why: str) -> None:
        # the stream cannot be delimited any more: record that (a syslog sender gets no answer)
        # and end the session; what was framed before is still stored, in order
        log.warning("ingest: %s framing error, connection closed", self.kind, extra={"error": why})
        if self.kind == "syslog":
            self.queue.append((b"", f"bad-framing: {why}; the connection was closed"))
        if self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self.closed = True
        self.wake.set()

    def _take(self) -> list[Any]:
        batch: list[Any] = []
        size = 0
        queue, at, relp = self.queue, self.at, self.kind == "relp"
        while queue and len(batch) < _BATCH_EVENTS and size < _HIGH_WATER:
            item = queue[0]
            if relp and item[1] != "syslog":
                # a command other than syslog is handled alone
                if not batch:
                    batch.append(queue.popleft())
                    size += len(item[2])
                break
            batch.append(queue.popleft())
            size += len(item[at])
        self.queued_bytes -= size
        return batch

    # ---------------------------------------------------------------- the worker

    async def _work(self) -> None:
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                while self.queue:
                    if self.kind == "relp" and self.transport is not None and self.transport.is_closing():
                        # unanswered transactions are resent by the client: storing them
                        # now would only make duplicates
                        self.queue.clear()
                        break
                    if not await self._batch():
                        return
                    if self.paused and self.queued_bytes < _HIGH_WATER // 2 and not self.closed \
                            and not self.draining and self.transport is not None:
                        self.paused = False
                        self.transport.resume_reading()
                if self.closed and not self.queue:
                    if self.transport is not None:
                        self.transport.close()
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ingest: %s connection failed", self.kind)
            if self.transport is not None:
                self.transport.abort()

    async def _batch(self) -> bool:
        ingest = self.front.ingest
        # (while draining for a stop, what was read is stored despite backpressure: at most
        # _HIGH_WATER bytes per connection, and dropping it would lose acknowledged syslog)
        while ingest.backpressure() is not None and not ingest.stopping and not self.draining:
            if not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            await asyncio.sleep(_BACKPRESSURE_POLL)
        batch = self._take()
        self.busy = True
        try:
            return await self._store(batch)
        finally:
            self.busy = False

    async def _store(self, batch: list[Any]) -> bool:
        ingest = self.front.ingest
        if self.kind == "relp" and batch[0][1] != "syslog":
            return self._relp_command(batch[0])
        if self.kind == "relp" and not self.opened:
            self._relp_answer(batch[0][0], b"500 session not opened")
            return self._close()
        # syslog items are (frame, error), RELP ones (txnr, command, data, error)
        events = frame_events(batch, self.at)
        if not ingest._enter():
            self._close(server_close=True)
            return False
        assert self.sender is not None
        started = time.monotonic()
        work = self.front.pool.submit(ingest.store_events, events, self.sender, _refusal_record)
        # the batch counts as in flight until the thread is done with it, even if this task
        # is cancelled meanwhile (stop() waits for in-flight batches before closing the log)
        work.add_done_callback(lambda _f: ingest._leave())
        failure = await asyncio.wrap_future(work)
        if failure is not None:
            # nothing to answer with in syslog; in RELP the unanswered transactions are
            # resent by the client: close either way, the next connection starts clean
            log.warning("ingest: %s messages not stored, connection closed", self.kind, extra={"error": failure})
            self.front.observe(self.kind, "503")
            if self.transport is not None:
                self.transport.abort()
            return False
        self.front.observe(self.kind, "ok")
        if ingest.metrics is not None:
            # syslog: to durable storage (nothing is answered); RELP: to the answers
            ingest.metrics.observe_ack(self.kind, time.monotonic() - started)
        if self.kind == "relp" and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(b"%d rsp 6 200 OK\n" % txnr for txnr, _c, _d, _e in batch))
        return True

    def _relp_command(self, item: tuple[int, str, bytes, str | None]) -> bool:
        txnr, command, data, _err = item
        if command == "open":
            offers = dict(line.partition(b"=")[::2] for line in data.split(b"\n") if line)
            if b"syslog" not in offers.get(b"commands", b"").split(b","):
                self._relp_answer(txnr, b"500 required command syslog not offered by the client")
                return self._close()
            self.opened = True
            self._relp_answer(txnr, b"200 OK\nrelp_version=0\nrelp_software=" + _RELP_SOFTWARE + b"\ncommands=syslog")
            return True
        if command == "close":
            self._relp_answer(txnr, b"")
            return self._close()
        self._relp_answer(txnr, b"500 unknown command")
        return True

    def _relp_answer(self, txnr: int, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"%d rsp %d %s\n" % (txnr, len(data), data) if data else b"%d rsp 0\n" % txnr)

    def _close(self, *, server_close: bool = False) -> bool:
        if self.transport is not None and not self.transport.is_closing():
            if server_close and self.kind == "relp":
                self.transport.write(b"0 serverclose 0\n")
            self.transport.close()
        self.queue.clear()
        return False

    def stop_reading(self) -> None:
        """The sidecar is stopping: read nothing more, store what was read."""
        self.draining = True
        if self.transport is not None and not self.paused and not self.transport.is_closing():
            self.paused = True
            self.transport.pause_reading()

    def server_close(self) -> None:
        """The sidecar is stopping: tell a RELP client (it resends what is unanswered)."""
        self._close(server_close=True)


class StreamFront:
    """The syslog and RELP listeners of an IngestServer."""

    def __init__(self, ingest: IngestServer, *, syslog: tuple[str, int] | None,
                 relp: tuple[str, int] | None) -> None:
        self.ingest = ingest
        self._listen = {k: v for k, v in (("syslog", syslog), ("relp", relp)) if v is not None}
        self._servers: dict[str, asyncio.AbstractServer] = {}
        self._bound: dict[str, tuple[str, int]] = {}
        self._conns: set[_Conn] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.pool = concurrent.futures.ThreadPoolExecutor(_WORKERS, thread_name_prefix="ingest-stream")
        self._refused_logged = -1e9
        self._refusals_logged: dict[tuple[str, str], float] = {}
        self._handshakes: set[asyncio.Task[None]] = set()  # TLS handshakes under way

    def address(self, kind: str) -> tuple[str, int] | None:
        return self._bound.get(kind)

    def start(self) -> StreamFront:
        self._loop = new_loop()
        try:
            self._thread = serve_in_thread(self._loop, "ingest-stream-loop", self._open, self._close_all)
        except BaseException:
            self.pool.shutdown(wait=False)
            raise
        return self

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        for kind, (host, port) in self._listen.items():
            # with TLS, the handshake is run per connection so that a refused one is seen
            factory = listen_factory(lambda kind=kind: _Conn(self, kind),  # type: ignore[misc]
                                     self.ingest.tls, self.ingest.handshake_refusals, kind,
                                     self.ingest.request_timeout, self._handshakes)
            try:
                server = await loop.create_server(factory, None if host in ("", "*") else host, port,
                                                  backlog=1024, reuse_address=True)
            except OSError as exc:
                from pipeline.ingest.server import _naming

                raise _naming(f"ingest.{kind}", f"cannot listen on {host}:{port}", exc) from exc
            self._servers[kind] = server
            sockname = server.sockets[0].getsockname()
            self._bound[kind] = (str(sockname[0]), int(sockname[1]))

    def admit(self, conn: _Conn) -> bool:
        if sum(1 for c in self._conns if c.kind == conn.kind) >= self.ingest.max_connections:
            now = time.monotonic()
            if now - self._refused_logged >= 10.0:
                log.warning("ingest: %s connection limit reached, connections refused", conn.kind,
                            extra={"max_connections": self.ingest.max_connections})
                self._refused_logged = now
            return False
        self._conns.add(conn)
        return True

    def refused(self, kind: str, peer: str, why: str) -> None:
        """A client let through the handshake but not allowed: counted, and logged at most
        once per 10 s per reason (a misconfigured forwarder reconnects every second)."""
        self.observe(kind, "403")
        now = time.monotonic()
        key = (kind, why)
        if now - self._refusals_logged.get(key, -1e9) >= 10.0:
            self._refusals_logged[key] = now
            if len(self._refusals_logged) > 1024:
                self._refusals_logged = {key: now}
            log.warning("ingest: %s connection refused", kind, extra={"peer": peer, "error": why})

    def forget(self, conn: _Conn) -> None:
        self._conns.discard(conn)

    def observe(self, kind: str, code: str) -> None:
        if self.ingest.metrics is not None:
            self.ingest.metrics.observe_request(kind, code)

    def _call(self, coro: Any, timeout: float) -> None:
        call_on_loop(self._loop, coro, timeout)

    def stop_listening(self) -> None:
        self._call(self._stop_listening(), 5.0)

    async def _stop_listening(self) -> None:
        for server in self._servers.values():
            server.close()

    def drain(self, timeout: float) -> None:
        """Before the sidecar stops: no new connections, no more reading, and the messages
        already received are stored (and, in RELP, answered) within ``timeout`` seconds.
        Syslog has no acknowledgement, so what the sidecar read must not be dropped."""
        self._call(self._drain(timeout), timeout + 1.0)

    async def _drain(self, timeout: float) -> None:
        await self._stop_listening()
        for conn in list(self._conns):
            conn.stop_reading()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(c.queue or c.busy for c in self._conns) and loop.time() < deadline:
            await asyncio.sleep(0.02)

    def close(self, timeout: float) -> None:
        stop_loop_thread(self._loop, self._thread, self._close_all(), timeout)
        self.pool.shutdown(wait=False)

    async def _close_all(self) -> None:
        for server in self._servers.values():
            server.close()
        for task in list(self._handshakes):
            task.cancel()
        for conn in list(self._conns):
            conn.server_close()
            if conn.task is not None:
                conn.task.cancel()

