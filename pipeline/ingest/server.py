"""Ingest for processes outside Python: events over a Unix domain socket, HTTP, syslog and
RELP (the last two in pipeline/ingest/stream.py), TLS for every TCP listener
(pipeline/ingest/tls.py).

docs/INGEST.md is the specification of the protocols (framings, encodings, answers, limits,
what a 2xx promises); this docstring only summarises.  Every event stored gets the
sender's authenticated identity as its first key, ``_sender`` (``with_sender``; an event
that brings its own is refused, ``reserved_key``).  The field is added as events are
handed to the log, not when they are validated: a body of tiny events would otherwise
hold ~20 times its size while it waits to be stored whole.

One rule for every transport: an event is acknowledged only once it is durable (per the
log's durability mode).  Events are appended with ``wait=False`` and the server then waits
once, on the last receipt, before it answers; one fsync covers many events.

- Unix socket: NDJSON in, one JSON answer line per input line, in order (``{"ok":true,
  "seq":..,"hash":..}`` or ``{"ok":false,"line":n,"error":"reason: detail"}``).  Lines are
  independent: each answer says what happened to its line.  Served by one thread per
  connection.
- HTTP (``POST /v1/events``, pipeline/ingest/http.py, aiohttp): a request is atomic.  Either
  every event of it is durable and the answer is ``200``, or none was stored and the answer
  says why (``422`` when some event is refused, never retried by forwarders).
- OTLP/HTTP (``POST /v1/logs``, pipeline/ingest/otlp.py): the same route through
  ``ingest_body``, but not atomic: the records that pass are stored and the refused ones
  counted in the answer (``partial_success``).  Its events get ``_sender`` too.

Memory is bounded by design: bodies are delimited and validated in chunks
(pipeline/ingest/body.py), validated events are packed into one buffer, per-line errors
are short byte strings, and HTTP answers carry counts and the seq range, not one receipt
per event.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from pipeline.format.record import MAX_EVENT_BYTES
from pipeline.ingest import otlp
from pipeline.ingest.body import BodyError, FramingError, iter_events
from pipeline.ingest.tls import SENDER_KEY, PeerIdentity, ServerTls, TlsSettings, sender_field
from pipeline.sanitise import InvalidEvent, Sanitiser, sanitiser_of

__all__ = ["Appender", "IngestMetrics", "IngestServer", "ReceiptLike", "RequestResult"]

log = logging.getLogger("pipeline.ingest")

_READ_CHUNK = 256 << 10  # one recv; more is gathered without blocking up to max_request_bytes
_POLL_INTERVAL = 0.05  # how often blocked readers re-check backpressure and stop
_SEND_TIMEOUT = 60.0  # a client that stops reading answers is dropped after this long
_SOCKET_BATCH_LINES = 16384  # socket lines answered together (one wait for durability)
_PREPARE_CHUNK = 2048  # lines validated and appended at once
_APPEND_CHUNK_BYTES = 256 << 10  # prepared events split out of the packed buffer at once
_APPEND_CHUNK_EVENTS = 1024  # prepared events handed to the log in one call
_BIG_EVENT = 64 << 10  # events with more JSON text than this are sanitised one chunk at a time
_big_events = threading.Lock()
MAX_LISTED_ERRORS = 20  # per HTTP answer: the first refused events, then counts only
_MAX_DETAIL = 160  # characters of an error's detail (never request bytes: see _err)
_SENDER_NEEDLE = b'"' + SENDER_KEY.encode() + b'"'
LOCAL_SENDER = PeerIdentity("local")


def reserved_key(data: bytes) -> InvalidEvent | None:
    """The refusal of a prepared event that has a top-level ``_sender`` of its own (the
    field is the sidecar's word about who sent, never the sender's), else None."""
    if _SENDER_NEEDLE in data and SENDER_KEY in orjson.loads(data):
        return InvalidEvent("reserved-key", f"{SENDER_KEY} is set by the sidecar (the authenticated sender); "
                                            "an event must not carry it")
    return None


def with_sender(data: bytes, stamp: bytes) -> bytes:
    """The prepared event with ``stamp`` (``sender_field(...)``) as its first key
    (docs/FORMAT.md §1.2).  Check ``reserved_key`` first."""
    if data == b"{}":
        return b"{" + stamp + b"}"
    return b"{" + stamp + b"," + data[1:]


def stamp_sender(data: bytes, stamp: bytes) -> bytes | InvalidEvent:
    """``reserved_key`` then ``with_sender``: for a path that holds few events at once."""
    return reserved_key(data) or with_sender(data, stamp)


class ReceiptLike(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def hash(self) -> str: ...


class Appender(Protocol):
    """What the server needs from the log: ``HotLog`` implements it (and, optionally,
    ``append_prepared_many`` and the ``sanitiser`` attribute)."""

    def append_prepared(self, data_json: bytes, *, wait: bool) -> Any: ...

    def wait_durable(self, receipt: Any, timeout: float | None = None) -> None: ...


class IngestMetrics(Protocol):
    """Counters the server reports to (``pipeline.ops.Metrics`` implements it)."""

    def observe_appended(self, events: int, nbytes: int) -> None: ...

    def observe_rejected(self, reason: str, count: int = 1) -> None: ...

    def observe_request(self, transport: str, code: str) -> None: ...

    def observe_ack(self, transport: str, seconds: float) -> None: ...

    def observe_tls_handshake_failure(self, listener: str, reason: str) -> None: ...


class _Batch:
    """The outcome of one batch of socket lines, in input order."""

    __slots__ = ("accepted", "rejected", "results", "started", "storage_failures")

    def __init__(self) -> None:
        self.started = time.monotonic()  # for the acknowledgement latency (worm_ingest_ack_seconds)
        self.results: list[bytes] = []  # one encoded JSON object (no newline) per line
        self.accepted = 0
        self.rejected = 0
        self.storage_failures = 0


@dataclass
class RequestResult:
    """The answer to one HTTP request: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    no_events: bool = False  # the body held no event at all (OTLP answers that with success)


def _ok(receipt: Any) -> bytes:
    return b'{"ok":true,"seq":%d,"hash":"%s"}' % (receipt.seq, receipt.hash.encode())


def _short(detail: str) -> str:
    # Details come from the parser and the sanitiser (positions, sizes, type names), never
    # from the request's bytes; they are still cut short so that answers stay small.
    return detail if len(detail) <= _MAX_DETAIL else detail[:_MAX_DETAIL - 3] + "..."


def _err(line_no: int, reason: str, detail: str) -> bytes:
    # formatted, not orjson.dumps'd whole: orjson's result keeps a 4 KiB allocation however
    # short it is, and a batch of bad lines holds thousands of these until answered
    return b'{"ok":false,"line":%d,"error":%s}' % (line_no, orjson.dumps(f"{reason}: {_short(detail)}"))


def _naming(key: str, what: str, exc: OSError) -> OSError:
    """The same error (same type, errno) with one line that names the setting."""
    detail = exc.strerror or str(exc)
    return type(exc)(exc.errno or errno.EADDRNOTAVAIL, f"{key}: {what}: {detail}")


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


def _unix_sender(conn: socket.socket) -> PeerIdentity:
    """``local``, with the connecting process's uid (SO_PEERCRED: the kernel's word)."""
    import struct

    try:
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
    except OSError:
        return LOCAL_SENDER
    return PeerIdentity("local", f"uid:{uid}")


class _Refusals:
    """Refused events of one request: counts per reason and the first few, compactly."""

    __slots__ = ("by_reason", "count", "listed")

    def __init__(self) -> None:
        self.count = 0
        self.by_reason: dict[str, int] = {}
        self.listed: list[dict[str, Any]] = []

    def add(self, event_no: int, reason: str, detail: str) -> None:
        self.count += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if len(self.listed) < MAX_LISTED_ERRORS:
            self.listed.append({"event": event_no, "error": f"{reason}: {_short(detail)}"})


class IngestServer:
    """Events over a Unix socket and/or HTTP, acknowledged once durable.

    ``start()`` binds and serves on background threads; ``stop(grace)`` stops accepting and
    lets in-flight batches finish (up to ``grace`` seconds).  Thread-safe.

    ``backpressure`` is called before every socket read and HTTP request (and every 50 ms
    per blocked connection): it must be cheap, e.g. return a flag the shipper maintains.

    The sanitiser is the log's own (``appender.sanitiser``, the default one otherwise): ingest
    never applies rules of its own making.  ``max_event_bytes`` is checked on top of it."""

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
        max_connections: int = 1024,
        request_timeout: float = 30.0,
        token_name: str = "token",  # noqa: S107 - the name of the token, not a token
        tls: TlsSettings | None = None,
        syslog_listen: str | tuple[str, int] | None = None,
        relp_listen: str | tuple[str, int] | None = None,
        max_syslog_frame: int = 65536,
    ) -> None:
        if socket_path is None and http_listen is None and syslog_listen is None and relp_listen is None:
            raise ValueError("IngestServer needs socket_path, http_listen, syslog_listen or relp_listen")
        if max_request_bytes < 1 or max_event_bytes < 1:
            raise ValueError("size limits must be positive")
        if max_event_bytes > MAX_EVENT_BYTES:
            raise ValueError(f"max_event_bytes {max_event_bytes} is over the log's limit of {MAX_EVENT_BYTES}")
        if max_connections < 1 or request_timeout <= 0:
            raise ValueError("max_connections and request_timeout must be positive")
        if token is not None and not token:
            raise ValueError("an empty bearer token would accept anything; pass None to disable")
        self.appender = appender
        self.socket_path = Path(socket_path) if socket_path is not None else None
        self.socket_mode = socket_mode
        from pipeline.config import parse_listen

        self._http_listen = parse_listen(http_listen) if isinstance(http_listen, str) else http_listen
        self._syslog_listen = parse_listen(syslog_listen) if isinstance(syslog_listen, str) else syslog_listen
        self._relp_listen = parse_listen(relp_listen) if isinstance(relp_listen, str) else relp_listen
        self.max_syslog_frame = max_syslog_frame
        self._token = token.encode() if token is not None else None
        self.token_name = token_name
        # every TCP listener's TLS (None: plaintext); building it reads and checks the files
        self.tls: ServerTls | None = ServerTls(tls) if tls is not None and tls.enabled else None
        self.max_request_bytes = max_request_bytes
        self.max_event_bytes = max_event_bytes
        self.backpressure = backpressure
        self.metrics = metrics
        from pipeline.ingest.handshake import HandshakeRefusals

        # refused TLS handshakes: counted and logged, rate-limited (pipeline/ingest/handshake.py)
        self.handshake_refusals = HandshakeRefusals(metrics)
        # the log's own sanitiser (HotLog.sanitiser), so ingest stores what append would
        self.sanitiser: Sanitiser = sanitiser_of(appender, max_event_bytes)
        self.max_connections = max_connections
        self.request_timeout = request_timeout

        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._started = False
        self._inflight = 0  # batches being appended or answered, both transports
        self._idle = threading.Condition(self._lock)
        self._unix_sock: socket.socket | None = None
        self._unix_ino: tuple[int, int] | None = None
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._http: Any = None  # pipeline.ingest.http.HttpFront
        self._streams: Any = None  # pipeline.ingest.stream.StreamFront (syslog, RELP)

    @classmethod
    def from_config(cls, appender: Appender, config: Any, *,
                    backpressure: Callable[[], str | None] = lambda: None,
                    metrics: IngestMetrics | None = None) -> IngestServer:
        """Build from a ``pipeline.config.IngestConfig`` (reads the token file now, so that
        a missing or empty token fails at start, not on the first request)."""
        return cls(appender, socket_path=config.socket, socket_mode=config.socket_mode,
                   http_listen=config.http, token=config.read_token(),
                   token_name=config.token_file.name if config.token_file is not None else "token",
                   max_request_bytes=config.max_request_bytes, max_event_bytes=config.max_event_bytes,
                   max_connections=config.max_connections, request_timeout=config.request_timeout,
                   tls=config.tls_settings(), syslog_listen=config.syslog, relp_listen=config.relp,
                   max_syslog_frame=config.max_syslog_frame,
                   backpressure=backpressure, metrics=metrics)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> IngestServer:
        with self._lock:
            if self._started:
                raise RuntimeError("IngestServer already started")
            self._started = True
        try:
            if self.socket_path is not None:
                try:
                    self._unix_sock = self._bind_unix(self.socket_path)
                except OSError as exc:
                    raise _naming("ingest.socket", f"cannot listen on {self.socket_path}", exc) from exc
                t = threading.Thread(target=self._accept_loop, name="ingest-unix-accept", daemon=True)
                t.start()
                self._threads.append(t)
            if self._http_listen is not None:
                from pipeline.ingest.http import HttpFront

                host, port = self._http_listen
                try:
                    self._http = HttpFront(self, self._http_listen).start()
                except OSError as exc:
                    raise _naming("ingest.http", f"cannot listen on {host}:{port}", exc) from exc
            if self._syslog_listen is not None or self._relp_listen is not None:
                from pipeline.ingest.stream import StreamFront

                self._streams = StreamFront(self, syslog=self._syslog_listen, relp=self._relp_listen).start()
        except BaseException:
            self.stop(0)
            raise
        log.info("ingest started", extra={"socket": str(self.socket_path) if self.socket_path else None,
                                          "http": self.http_address, "syslog": self.syslog_address,
                                          "relp": self.relp_address, "tls": self.tls is not None,
                                          "mutual_tls": self.tls is not None and self.tls.settings.mutual})
        return self

    @property
    def http_address(self) -> tuple[str, int] | None:
        """The bound (host, port): with port 0 in the configuration, the one the OS chose."""
        return self._http.address if self._http is not None else None

    @property
    def syslog_address(self) -> tuple[str, int] | None:
        return self._streams.address("syslog") if self._streams is not None else None

    @property
    def relp_address(self) -> tuple[str, int] | None:
        return self._streams.address("relp") if self._streams is not None else None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, let in-flight batches finish within ``grace`` seconds, then close
        every connection.  Events acknowledged before are durable; events read but not yet
        answered when grace runs out may or may not be in the log (the client retries)."""
        deadline = time.monotonic() + max(0.0, grace)
        if self._streams is not None:
            # syslog has no acknowledgement: store what was read before refusing batches
            self._streams.drain(max(0.0, grace) / 2)
        with self._lock:
            self._stopping.set()
        if self._http is not None:
            self._http.stop_listening()
        if self._streams is not None:
            self._streams.stop_listening()
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
        if self._http is not None:
            self._http.close(max(0.1, deadline - time.monotonic()))
        if self._streams is not None:
            self._streams.close(max(0.1, deadline - time.monotonic()))
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

    def _prepare(self, raws: list[Any], stamp: bytes | None) -> list[bytes | InvalidEvent]:
        """The log's sanitiser on each raw JSON text or event object (a dict: what the OTLP
        decoder builds), plus ingest's own ``max_event_bytes``.  An item that is already an
        InvalidEvent (a decoder refused it: an OTLP record with a repeated attribute key)
        stays refused.

        Parsing an event costs up to ~25x its text in Python objects for pathological
        shapes (a list of a million one-character strings): chunks holding a big event are
        sanitised one at a time in the process, so that concurrent requests cannot
        multiply that cost.  (A decoder hands a big event over as text for this reason.)"""
        if any(type(r) is not bytes for r in raws):
            texts = [r for r in raws if type(r) is bytes]
            objects = [r for r in raws if type(r) is dict]
            done = iter(self._prepare(texts, stamp)) if texts else iter(())
            built = iter(self._finish(self.sanitiser.prepare_events_many(objects), stamp)) if objects else iter(())
            return [next(done) if type(r) is bytes else next(built) if type(r) is dict else r for r in raws]
        if any(len(r) > _BIG_EVENT for r in raws):
            with _big_events:
                return self._prepare_unlocked(raws, stamp)
        return self._prepare_unlocked(raws, stamp)

    def _prepare_unlocked(self, raws: list[Any], stamp: bytes | None) -> list[bytes | InvalidEvent]:
        short = [r for r in raws if len(r) <= 2 * self.max_event_bytes]
        return self._finish(self.sanitiser.prepare_json_many(short) if len(short) == len(raws) else
                            [self._prepare_one(r) for r in raws], stamp)

    def _finish(self, prepared: list[bytes | InvalidEvent], stamp: bytes | None) -> list[bytes | InvalidEvent]:
        """Ingest's own rules on the sanitiser's output: its size limit, and the sender field."""
        limit = self.max_event_bytes
        out: list[bytes | InvalidEvent] = []
        for data in prepared:
            if isinstance(data, InvalidEvent):
                # The traceback holds the sanitiser's frame, whose list holds the exception:
                # a cycle only the garbage collector frees.  A body of bad lines would pile
                # them up (the cause of issue 13's 3,000 bytes per request byte).
                data.__traceback__ = None
            elif len(data) > limit:
                data = InvalidEvent("too-large", f"event is {len(data)} bytes serialised, over the limit of {limit}")
            else:
                # the sender field now (stamp), or when the event is handed to the log (None)
                data = reserved_key(data) or (with_sender(data, stamp) if stamp is not None else data)
            out.append(data)
        return out

    def _prepare_one(self, raw: bytes) -> bytes | InvalidEvent:
        if len(raw) > 2 * self.max_event_bytes:
            return InvalidEvent("too-large", f"event text is {len(raw)} bytes, over twice the limit of "
                                             f"{self.max_event_bytes}")
        try:
            return self.sanitiser.prepare_json(raw)
        except InvalidEvent as exc:
            return exc

    def _append(self, items: list[bytes]) -> list[Any]:
        """Append prepared events without waiting: a receipt or the exception per item."""
        many = getattr(self.appender, "append_prepared_many", None)
        if many is not None:
            # one lock acquisition for the whole batch instead of one per event
            return list(many(items))
        outcomes: list[Any] = []
        for d in items:
            try:
                outcomes.append(self.appender.append_prepared(d, wait=False))
            except Exception as exc:  # HotLogError and anything else: not in the log
                outcomes.append(exc)
        return outcomes

    def process(self, lines: list[tuple[int, bytes]], sender: PeerIdentity = LOCAL_SENDER) -> _Batch:
        """Validate and append ``(line_no, raw)`` pairs, wait until the appended ones are
        durable, and return one result per pair (the socket's semantics: lines are
        independent).  Lines are validated and appended ``_PREPARE_CHUNK`` at a time (what
        is alive per line is then only its answer), with one wait for durability at the
        end.  Exposed for tests and embedding; keep batches to some thousands of lines."""
        batch = _Batch()
        pending: list[tuple[int, Any, int]] = []  # (index in results, receipt, data bytes)
        stamp = sender_field(sender)
        for at in range(0, len(lines), _PREPARE_CHUNK):
            self._process_chunk(batch, lines, at, pending, stamp)
        if pending:
            self._wait_durable(batch, lines, pending)
        return batch

    def _process_chunk(self, batch: _Batch, lines: list[tuple[int, bytes]], at: int,
                       pending: list[tuple[int, Any, int]], stamp: bytes) -> None:
        part = lines[at:at + _PREPARE_CHUNK]
        prepared: list[tuple[int, int, bytes]] = []  # (index in results, line_no, data)
        checked = self._prepare([raw for _n, raw in part], stamp)
        for (line_no, _raw), data in zip(part, checked, strict=True):
            if isinstance(data, InvalidEvent):
                batch.results.append(_err(line_no, data.reason, data.detail))
                batch.rejected += 1
                if self.metrics is not None:
                    self.metrics.observe_rejected(data.reason)
                continue
            prepared.append((len(batch.results), line_no, data))
            batch.results.append(b"")  # filled in once durable
        del checked
        outcomes = self._append([d for _i, _l, d in prepared])
        for (idx, line_no, data), outcome in zip(prepared, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                batch.results[idx] = _err(line_no, "unavailable", _describe(outcome))
                batch.rejected += 1
                batch.storage_failures += 1
                if self.metrics is not None:
                    self.metrics.observe_rejected("unavailable")
                continue
            pending.append((idx, outcome, len(data)))

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
            self.metrics.observe_ack("unix", time.monotonic() - batch.started)

    # ------------------------------------------------------------------ stream transports

    def store_events(self, events: list[dict[str, Any]], sender: PeerIdentity,
                     on_refused: Callable[[dict[str, Any], InvalidEvent], dict[str, Any]]) -> str | None:
        """Syslog and RELP: store ``events`` in order and wait until they are durable.
        These protocols cannot answer per message, so an event the sanitiser refuses is
        replaced by ``on_refused(event, error)`` (a record saying what was refused), never
        dropped.  Returns None when every event is durable, else what failed (then some
        events may have been stored: the caller closes the connection).  Blocking: call it
        off the event loop, between ``_enter()`` and ``_leave()``."""
        stamp = sender_field(sender)
        prepared: list[bytes] = []
        nbytes = 0
        for event in events:
            data = self._prepare_event(event, stamp)
            if isinstance(data, InvalidEvent):
                if self.metrics is not None:
                    self.metrics.observe_rejected(data.reason)
                data = self._prepare_event(on_refused(event, data), stamp)
                if isinstance(data, InvalidEvent):  # the record of the refusal is ours: cannot happen
                    return f"refusal record refused: {data.reason}"
            prepared.append(data)
            nbytes += len(data)
        last: Any = None
        for i in range(0, len(prepared), _APPEND_CHUNK_EVENTS):
            for outcome in self._append(prepared[i:i + _APPEND_CHUNK_EVENTS]):
                if isinstance(outcome, BaseException):
                    return _describe(outcome)
                last = outcome
        if last is not None:
            try:
                self.appender.wait_durable(last)
            except Exception as exc:
                return _describe(exc)
        if self.metrics is not None:
            self.metrics.observe_appended(len(prepared), nbytes)
        return None

    def _prepare_event(self, event: dict[str, Any], stamp: bytes) -> bytes | InvalidEvent:
        try:
            data = self.sanitiser.prepare(event)
        except InvalidEvent as exc:
            exc.__traceback__ = None
            return exc
        if len(data) > self.max_event_bytes:
            return InvalidEvent("too-large", f"event is {len(data)} bytes serialised, over the limit of "
                                             f"{self.max_event_bytes}")
        return stamp_sender(data, stamp)

    # ------------------------------------------------------------------ one HTTP request

    def ingest_body(self, holder: list[bytes], framing: str, sender: PeerIdentity, *,
                    partial: bool = False) -> RequestResult:
        """Store every event of one decoded request body, or none (docs/INGEST.md).

        ``partial`` (OTLP, whose answer can say how many records were refused): store the
        events that pass and answer 200 with the refusals listed; only when none passes is
        nothing stored (422).  Either way the stored events are all durable or the answer
        is 503.

        ``holder`` is a one-item list with the body: it is emptied as soon as the events
        are validated, so that the body's memory is released before the events are
        appended.  Blocking (appends and the wait for durability): call it off the event
        loop, between ``_enter()`` and ``_leave()``.  Raises BodyError when an OTLP
        request cannot be decoded (400) or expands to too many bytes of events (413):
        nothing stored."""
        started = time.monotonic()
        body = holder.pop()
        packed = bytearray()  # every validated event, each followed by "\n" (never inside one)
        count = 0
        refused = _Refusals()
        stopped = False  # validation stopped early: more events may be refused than listed
        # OTLP copies resource and scope into every event: what a request expands to is
        # limited (docs/INGEST.md §5.4), counted as the events are kept
        max_expanded = otlp.EXPANSION * self.max_request_bytes if framing in (otlp.PROTOBUF, otlp.JSON) else None
        try:
            max_line = 2 * min(self.max_event_bytes, self.sanitiser.max_event_bytes)
            for chunk in self._chunks(body, framing, max_line):
                checked = self._prepare([raw for _n, raw in chunk], None)
                for (n, _raw), data in zip(chunk, checked, strict=True):
                    if isinstance(data, InvalidEvent):
                        refused.add(n, data.reason, data.detail)
                    elif partial or not refused.count:  # atomic: once one is refused nothing is stored
                        packed += data
                        packed += b"\n"
                        count += 1
                del checked, chunk
                if max_expanded is not None and len(packed) > max_expanded:
                    raise BodyError(413, f"the request's log records make more than {max_expanded} bytes of events "
                                         "(resource and scope are copied into each); send smaller batches")
                if refused.count >= MAX_LISTED_ERRORS and not partial:
                    # nothing will be stored: enough to tell the sender what to fix, without
                    # spending CPU on every line of a body of garbage
                    stopped = True
                    break
        except FramingError as exc:
            refused.add(exc.event, exc.reason, exc.detail)
            partial = False  # what follows the break cannot be delimited: refuse the request
        del body
        if self.metrics is not None:
            for reason, k in refused.by_reason.items():
                self.metrics.observe_rejected(reason, k)
        if refused.count and (not partial or not count):
            return RequestResult(422, {
                "error": f"{refused.count} event(s) refused; nothing from this request was stored "
                         "(fix or drop the refused events and send the others again)",
                "accepted": 0, "rejected": refused.count, "reasons": refused.by_reason,
                "errors": refused.listed, "checked_all": not stopped})
        if not count:
            return RequestResult(400, {"error": "no events in the request body; nothing was stored",
                                       "accepted": 0}, no_events=True)
        result = self._store_packed(packed, count, sender_field(sender))
        if self.metrics is not None and result.status == 200:
            transport = "otlp" if framing in (otlp.PROTOBUF, otlp.JSON) else "http"
            self.metrics.observe_ack(transport, time.monotonic() - started)
        if refused.count and result.status == 200:
            result.body.update({"rejected": refused.count, "reasons": refused.by_reason, "errors": refused.listed})
        return result

    def _chunks(self, body: bytes, framing: str, max_line: int) -> Iterator[list[tuple[int, Any]]]:
        if framing in (otlp.PROTOBUF, otlp.JSON):
            return otlp.iter_events(body, framing, max_line)
        return iter_events(body, framing, max_line)

    def _store_packed(self, packed: bytearray, count: int, stamp: bytes) -> RequestResult:
        first: Any = None
        last: Any = None
        failure: str | None = None
        pos = 0
        view = memoryview(packed)
        try:
            while pos < len(packed):
                stop = packed.find(b"\n", min(len(packed) - 1, pos + _APPEND_CHUNK_BYTES)) + 1
                region = bytes(view[pos:stop - 1]).split(b"\n")
                pos = stop
                # at most _APPEND_CHUNK_EVENTS per call: the log's queue is bounded between
                # calls (max_pending_bytes), not within one
                for i in range(0, len(region), _APPEND_CHUNK_EVENTS):
                    for outcome in self._append([with_sender(d, stamp) for d in region[i:i + _APPEND_CHUNK_EVENTS]]):
                        if isinstance(outcome, BaseException):
                            failure = _describe(outcome)
                            break
                        if first is None:
                            first = outcome
                        last = outcome
                    if failure is not None:
                        break
                if failure is not None:
                    break
        finally:
            view.release()
        if failure is None:
            try:
                self.appender.wait_durable(last)
            except Exception as exc:
                failure = _describe(exc)
        if failure is not None:
            log.warning("ingest: request not stored", extra={"error": failure})
            if self.metrics is not None:
                self.metrics.observe_rejected("unavailable", count)
            body: dict[str, Any] = {"error": f"unavailable: the log could not store this request: {failure}"}
            if first is not None:
                # Some events were handed to the log and may be durable: say so, a retry
                # may store them a second time (visible as duplicates, never a loss).
                body["maybe_stored"] = {"first_seq": first.seq, "last_seq": last.seq}
            return RequestResult(503, body, {"Retry-After": "1"})
        if self.metrics is not None:
            self.metrics.observe_appended(count, len(packed) - count)
        return RequestResult(200, {"accepted": count, "first_seq": first.seq, "last_seq": last.seq,
                                   "last_hash": last.hash})

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
            self._conn_loop(conn, _unix_sender(conn))
        except OSError as exc:
            if not self._stopping.is_set():
                log.info("ingest: connection closed", extra={"error": _describe(exc)})
        except Exception:  # into the structured log, never a raw traceback from the thread
            log.exception("ingest: connection failed")
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

    def _conn_loop(self, conn: socket.socket, sender: PeerIdentity) -> None:
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
            # Lines are taken and answered in batches of at most _SOCKET_BATCH_LINES: what a
            # round holds beyond the buffer itself is bounded whatever the lines look like.
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
                    if len(lines) >= _SOCKET_BATCH_LINES:
                        self._answer(conn, lines, sender)
                        lines = []
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
                self._answer(conn, lines, sender)

    def _answer(self, conn: socket.socket, lines: list[tuple[int, bytes]], sender: PeerIdentity) -> None:
        if not self._enter():
            with contextlib.suppress(OSError):
                conn.sendall(b"\n".join(_err(n, "unavailable", "stopping: the sidecar is shutting down")
                                        for n, _raw in lines) + b"\n")
            return
        try:
            oversize = [(i, n) for i, (n, raw) in enumerate(lines) if raw == b""]
            batch = self.process([p for p in lines if p[1] != b""], sender)
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

    # ------------------------------------------------------------------ HTTP authentication

    @property
    def token_required(self) -> bool:
        return self._token is not None

    def check_authorization(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the token: ``Bearer <token>``, or
        ``Basic`` with the token as the password (any user name), for clients that only
        speak Basic (Python's ``logging.handlers.HTTPHandler``, Fluent Bit's http_Passwd).
        Always true without a configured token."""
        if self._token is None:
            return True
        if header is None:
            return False
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "basic":
            import base64
            import binascii

            try:
                decoded = base64.b64decode(value.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                return False
            _user, colon, password = decoded.partition(b":")
            if not colon:
                return False
            value_b = password
        elif scheme.lower() == "bearer":
            try:
                value_b = value.encode("utf-8")
            except UnicodeEncodeError:
                return False
        else:
            return False
        # constant time: the comparison must not reveal how many leading bytes matched
        return hmac.compare_digest(value_b, self._token)
