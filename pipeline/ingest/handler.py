"""``AuditLogHandler``: send Python ``logging`` records to the audit log.

Two ways to reach the log:

- ``socket_path=``: the sidecar's ingest socket (``pipeline.ingest.server``).  Each record
  is one NDJSON line; ``emit`` waits for the server's answer, so when a ``logger.info``
  call returns the event is durable in the hot tier.  A broken connection is reopened
  once per record; on failure ``handleError`` runs (logging's convention: the application
  keeps going, the error is printed when ``logging.raiseExceptions`` is true) unless
  ``raise_on_error=True``, for applications that must not continue without their audit
  trail.
- ``log=``: a ``HotLog`` in the same process: the record is appended directly.  By default
  (``wait=True``) the logging call returns once the record is durable, like in socket
  mode.  The wait happens *outside* ``logging``'s handler lock, which guards only the
  formatter (taken only to format a record's exception; the log is thread-safe): records
  logged concurrently from many threads share one group commit (one fsync), instead of
  waiting for an fsync each, one after the other.
  ``wait=False`` is the non-waiting mode: the logging call returns once the record is
  queued (in group mode it is durable within ``group_interval``, 10 ms by default);
  ``flush()`` -- which ``logging.shutdown()`` calls at exit -- waits until every record so
  far is durable and reports a record that could not be stored.  Records of concurrent
  threads are combined: each thread prepares its event (the sanitiser) on its own, puts it
  in the handler's queue and, if no other thread is appending, appends everything queued in
  one call (``HotLog.append_prepared_many``); otherwise it returns and the appending thread
  takes its record too.  Why: from 16 threads, a lock per record is held across the GIL's
  forced switches, and the threads then queue on it (a convoy; ~3x slower than one thread).  Use it where
  an application must not wait for the disk per log call and can lose the last few
  milliseconds of records in a power cut (the log itself stays verifiable: a crash is
  explained by a recovery record).

The event stored::

    {"ts": "2024-05-01T12:00:00.123456Z", "level": "INFO", "logger": "shop.orders",
     "message": "order placed", "audit": {...}, "exception": "Traceback ..."}

``audit`` is the caller's ``extra={"audit": {...}}`` (a dict), ``exception`` is present
when the record carries exception info.  Secrets are redacted like in any other event, by
the log's own sanitiser (``HotLog.sanitiser``, with its ``[sanitise]`` rules): with ``log=``
the handler appends through the log, which applies it; with ``socket_path=`` the sidecar
applies it on ingest.  In socket mode the handler also prepares each event locally
(``sanitiser=``, the built-in rules by default) so that an invalid event is refused before
it travels and no secret the built-in rules catch crosses the socket.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.errors import PipelineError
from pipeline.sanitise import DEFAULT_SANITISER, Sanitiser

__all__ = ["AuditLogError", "AuditLogHandler", "record_to_event"]

# non-waiting mode: records queued beyond this many, or beyond this many bytes of prepared
# events, a logging call appends them itself (waiting for the thread appending now): the
# queue's memory stays bounded, also with events of up to max_event_bytes each
MAX_QUEUED = 4096
MAX_QUEUED_BYTES = 8 << 20


class AuditLogError(PipelineError, RuntimeError):
    """A record could not be stored in the audit log (refused, or the log is unreachable)."""


_second: list[tuple[int, str]] = [(-1, "")]  # the last whole second formatted, and its text


def _rfc3339(created: float) -> str:
    """``created`` as RFC 3339 UTC with microseconds, rounded as ``datetime.fromtimestamp``
    rounds (half to even); the date and time part is formatted once per second."""
    whole = int(created // 1)
    us = round((created - whole) * 1e6)
    if us >= 1_000_000:
        whole, us = whole + 1, us - 1_000_000
    second, text = _second[0]  # one item, replaced whole: threads need no lock
    if second != whole:
        text = dt.datetime.fromtimestamp(whole, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0] = (whole, text)
    return f"{text}.{us:06d}Z"


def record_to_event(record: logging.LogRecord, formatter: logging.Formatter | None = None) -> dict[str, Any]:
    """The audit event for a log record (see the module docstring)."""
    event: dict[str, Any] = {
        "ts": _rfc3339(record.created),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
    }
    audit = getattr(record, "audit", None)
    if isinstance(audit, dict):
        event["audit"] = audit
    elif audit is not None:
        # keep it rather than drop it silently; the sanitiser refuses what JSON cannot hold
        event["audit"] = {"value": audit}
    if record.exc_info and record.exc_info[0] is not None:
        fmt = formatter or logging.Formatter()
        if not record.exc_text:
            record.exc_text = fmt.formatException(record.exc_info)
        event["exception"] = record.exc_text
    elif record.exc_text:
        event["exception"] = record.exc_text
    if record.stack_info:
        event["stack"] = record.stack_info
    return event


@dataclass(slots=True)
class _Queued:
    """A record of the non-waiting mode between its logging call and the log."""

    data: bytes  # the prepared event
    record: logging.LogRecord
    owner: int  # the thread that logged it
    refusal: Exception | None = None  # the log's refusal, for the owner to report


class AuditLogHandler(logging.Handler):
    """A ``logging.Handler`` writing each record as an audit event.  Thread-safe.  With
    ``log=`` the handler lock covers only formatting a record's exception, never appending
    it or waiting for its durability (see the module docstring)."""

    def __init__(
        self,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        log: Any = None,
        level: int = logging.NOTSET,
        timeout: float = 30.0,
        raise_on_error: bool = False,
        sanitiser: Sanitiser | None = None,
        wait: bool = True,
    ) -> None:
        super().__init__(level)
        if (socket_path is None) == (log is None):
            raise ValueError("AuditLogHandler needs exactly one of socket_path= or log=")
        if not wait and log is None:
            raise ValueError("wait=False needs log= (over the socket every record waits for the server's answer)")
        self.wait = wait
        self.socket_path = os.fspath(socket_path) if socket_path is not None else None
        self.log = log
        self.timeout = timeout
        self.raise_on_error = raise_on_error
        if log is not None and sanitiser is not None and sanitiser is not getattr(log, "sanitiser", sanitiser):
            raise ValueError("with log= the log's own sanitiser applies (HotLog.sanitiser); do not pass sanitiser=")
        self.sanitiser = getattr(log, "sanitiser", None) or sanitiser or DEFAULT_SANITISER
        self._last: Any = None  # the last answer: a Receipt (log=) or {"seq": .., "hash": ..} (socket)
        self._unflushed: Any = None  # wait=False: the newest receipt flush() has not waited for
        # wait=False: records waiting to be appended by whichever thread holds _append_lock;
        # refusals of other threads' records, for flush() (raise_on_error)
        self._queued: collections.deque[_Queued] = collections.deque()
        # bytes of the events in _queued; its own lock, as += is not atomic across threads
        self._queued_bytes = 0
        self._queued_bytes_lock = threading.Lock()
        self._append_lock = threading.Lock()
        self._appender: int | None = None  # the thread holding _append_lock
        self._refused: list[tuple[Exception, logging.LogRecord]] = []
        self._sock: socket.socket | None = None
        self._rfile: Any = None
        # logging.Handler.handle() already takes self.lock around emit; this one also
        # guards the connection against close() racing an emit from another thread.
        self._conn_lock = threading.Lock()

    @property
    def last_receipt(self) -> dict[str, Any] | None:
        """The last record's answer, ``{"seq": .., "hash": ..}`` (built when asked for: the
        non-waiting path must stay cheap)."""
        last = self._last
        if last is None or isinstance(last, dict):
            return last
        return {"seq": last.seq, "hash": last.hash}

    # ------------------------------------------------------------------ logging API

    def handle(self, record: logging.LogRecord) -> Any:
        """``logging.Handler.handle``, with the handler lock only around formatting an
        exception (the formatter is what it guards): building the event, appending (the log
        is thread-safe) and waiting for durability happen outside it."""
        if self.log is None:
            return super().handle(record)  # socket: one request and answer at a time
        rv: Any = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # Python 3.12+: a filter may return a record
            record = rv
        if rv:
            if record.exc_info:
                with self.lock:  # type: ignore[union-attr]  # (created by createLock) guards the formatter
                    event = self._event(record)
            else:  # the formatter is not used: no lock for 16 threads to queue on
                event = self._event(record)
            if event is not None:
                self._append(event, record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        if self.log is None:
            try:
                data = self.sanitiser.prepare(record_to_event(record, self.formatter))  # refuse bad events early
                self._last = self._send(data)
            except RecursionError:
                raise
            except Exception as exc:
                self._failed(exc, record)
            return
        event = self._event(record)
        if event is not None:
            self._append(event, record)

    def flush(self) -> None:
        """With ``wait=False``: wait until every record handled so far is durable; a record
        that could not be stored is reported (``AuditLogError`` with ``raise_on_error``)."""
        if self.log is None:
            return
        if self._appender == threading.get_ident():
            return  # called while this thread appends (the log logged): the append finishes first
        with self._append_lock:  # everything queued goes into the log first
            self._append_queued()
            receipt, self._unflushed = self._unflushed, None
            refused, self._refused = self._refused, []
        for exc, record in refused:
            self._report(exc, record)
        if receipt is None:
            return
        try:
            self.log.wait_durable(receipt, self.timeout)
        except Exception as exc:
            self._failed(exc, logging.makeLogRecord({"msg": "AuditLogHandler.flush: records before seq %d",
                                                     "args": (receipt.seq,)}))

    def _event(self, record: logging.LogRecord) -> dict[str, Any] | None:
        try:
            return record_to_event(record, self.formatter)
        except RecursionError:
            raise
        except Exception as exc:
            self._failed(exc, record)
            return None

    def _append(self, event: dict[str, Any], record: logging.LogRecord) -> None:
        """Append (and with ``wait``, wait until durable: records of concurrent threads share
        one fsync); a failure is reported for this record."""
        if not self.wait:
            self._append_combined(event, record)
            return
        try:
            receipt = self.log.append(event, wait=self.wait)
        except RecursionError:
            raise
        except Exception as exc:
            self._failed(exc, record)
            return
        self._last = receipt
        if not self.wait:
            self._unflushed = receipt

    def _append_combined(self, event: dict[str, Any], record: logging.LogRecord) -> None:
        """The non-waiting mode (module docstring): queue, and append what is queued unless
        another thread is doing so.  A refusal of this thread's record found while this
        thread appends is reported here; one found by another thread is reported there
        (``handleError``) or, with ``raise_on_error``, by the next ``flush()``."""
        try:
            data = self.sanitiser.prepare(event)  # the log's own sanitiser, on this thread
        except RecursionError:
            raise
        except Exception as exc:
            self._failed(exc, record)
            return
        queued = self._queued
        lock = self._append_lock
        if not queued and lock.acquire(blocking=False):
            # nobody else is appending or waiting to: this record alone, without the queue
            failure: Exception | None = None
            self._appender = threading.get_ident()
            try:
                self._last = self._unflushed = self.log.append_prepared(data, wait=False)
            except RecursionError:
                raise
            except Exception as exc:
                failure = exc
            finally:
                self._appender = None
                lock.release()
            if queued:
                self._take_queued()
            if failure is not None:
                self._report(failure, record)
            return
        item = _Queued(data, record, threading.get_ident())
        with self._queued_bytes_lock:
            self._queued_bytes += len(data)
        queued.append(item)
        self._take_queued()
        if item.refusal is not None:
            self._report(item.refusal, record)

    def _take_queued(self) -> None:
        """Append what is queued, until the queue is empty or another thread appends."""
        queued = self._queued
        lock = self._append_lock
        while queued:
            if ((len(queued) > MAX_QUEUED or self._queued_bytes > MAX_QUEUED_BYTES)
                    and self._appender != threading.get_ident()):
                lock.acquire()  # bounded: wait for the appending thread, then take the rest
            elif not lock.acquire(blocking=False):
                # another thread appends, and takes this record with the others (or this
                # one does, further up the stack: the log logged while appending)
                break
            self._appender = threading.get_ident()
            try:
                self._append_queued()
            finally:
                self._appender = None
                lock.release()
            # records queued while this thread appended, by threads that then found the lock
            # taken: the loop takes them (they rely on it)

    def _append_queued(self) -> None:
        """Append every queued record in one call (caller holds ``_append_lock``)."""
        queued = self._queued
        items = []
        while queued:
            items.append(queued.popleft())
        if not items:
            return
        with self._queued_bytes_lock:
            self._queued_bytes -= sum(len(item.data) for item in items)
        try:
            results: list[Any] = self.log.append_prepared_many([item.data for item in items])
        except Exception as exc:  # e.g. the log closed: none of them is in it
            results = [exc] * len(items)
        me = threading.get_ident()
        last = None
        for item, result in zip(items, results, strict=True):
            if not isinstance(result, Exception):
                last = result
            elif item.owner == me:
                item.refusal = result  # this thread's own record: reported by its logging call
            elif self.raise_on_error:
                self._refused.append((result, item.record))
            else:
                self._report(result, item.record)
        if last is not None:
            self._last = last
            self._unflushed = last

    def _report(self, exc: Exception, record: logging.LogRecord) -> None:
        """``_failed`` for a refusal found outside its ``except``: ``handleError`` prints the
        exception being handled."""
        try:
            raise exc
        except Exception:
            self._failed(exc, record)

    def _failed(self, exc: Exception, record: logging.LogRecord) -> None:
        if self.raise_on_error:
            if isinstance(exc, AuditLogError):
                raise exc
            raise AuditLogError(f"audit event not stored: {exc}") from exc
        self.handleError(record)

    def close(self) -> None:
        if self.log is not None:
            self.flush()
        with self._conn_lock:
            self._disconnect()
        super().close()

    # ------------------------------------------------------------------ socket

    def _connect(self) -> None:
        assert self.socket_path is not None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._rfile = sock.makefile("rb")

    def _disconnect(self) -> None:
        if self._rfile is not None:
            with contextlib.suppress(OSError):
                self._rfile.close()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self._rfile = None

    def _send(self, data: bytes) -> dict[str, Any]:
        with self._conn_lock:
            answer = None
            for attempt in (1, 2):
                fresh = False
                try:
                    if self._sock is None:
                        self._connect()
                        fresh = True
                    assert self._sock is not None
                    self._sock.sendall(data + b"\n")
                    answer = self._rfile.readline()
                    if not answer:
                        raise ConnectionResetError("the ingest server closed the connection")
                    break
                except OSError as exc:
                    self._disconnect()
                    # One retry on a connection that was already open: it may have gone
                    # stale (sidecar restarted).  A fresh connection that fails is reported.
                    # The event may then be stored twice (sent, server durable, answer lost);
                    # a duplicate in an audit log is visible, a loss is not.
                    if fresh or attempt == 2:
                        raise AuditLogError(f"ingest socket {self.socket_path}: {exc}") from exc
            assert answer is not None
        try:
            result = orjson.loads(answer)
        except orjson.JSONDecodeError as exc:
            with self._conn_lock:
                self._disconnect()  # out of step with the server: start over next time
            raise AuditLogError(f"unexpected answer from the ingest server: {answer[:200]!r}") from exc
        if not result.get("ok"):
            raise AuditLogError(f"the ingest server refused the event: {result.get('error')}")
        return {"seq": result["seq"], "hash": result["hash"]}
