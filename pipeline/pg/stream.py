"""The streaming replication protocol for one logical slot, over libpq through psycopg's ``pq``.

Why hand-written: psycopg 3 has no replication support (psycopg2's
``LogicalReplicationConnection`` would mean a second driver).  What is needed is small
and fixed by PostgreSQL's documentation ("Streaming Replication Protocol"):

- a connection with ``replication=database``, on which ``START_REPLICATION SLOT s LOGICAL
  0/0 (options)`` switches to COPY BOTH mode; ``0/0`` means "from the slot's
  ``confirmed_flush_lsn``";
- from the server, CopyData messages: ``w`` XLogData (``w``, Int64 start, Int64 end, Int64
  send time, then one pgoutput message) and ``k`` keepalive (``k``, Int64 the server's
  sent position, Int64 send time, Byte1 reply requested);
- to the server, the standby status update ``r`` (``r``, Int64 written, Int64 flushed,
  Int64 applied, Int64 client time in microseconds since 2000-01-01, Byte1 reply
  requested).  The flushed position is what moves the slot's ``confirmed_flush_lsn``; the
  source sends only positions whose events are durable in the chain.  With the reply
  flag set the server answers at once with a keepalive carrying how far it has decoded.

Why streaming rather than ``pg_logical_slot_peek_binary_changes`` and
``pg_replication_slot_advance``: each SQL call starts decoding anew from the slot's
``restart_lsn``, which PostgreSQL moves only at a running-transactions record (about every
15 s), so each read decoded up to 15 s of WAL again and the advance decoded it once more.
A stream decodes every WAL record once.
"""

from __future__ import annotations

import contextlib
import math
import select
import struct
import time
from typing import Any

from pipeline.pg import require_psycopg
from pipeline.pg.decode import PG_EPOCH

_XLOGDATA = struct.Struct(">QQq")  # after the b"w"
_KEEPALIVE = struct.Struct(">QqB")  # after the b"k"
_STATUS = struct.Struct(">cQQQqB")


class ReplicationStream:
    """One ``START_REPLICATION`` of ``slot`` with pgoutput; ``read(timeout)`` gives the next
    pgoutput message (or None), ``confirm(lsn, reply=...)`` sends the flushed position."""

    def __init__(self, dsn: str, slot: str, publication: str, settings: tuple[str, ...],
                 *, application_name: str = "worm-pipeline source") -> None:
        psycopg = require_psycopg()
        from psycopg import pq
        from psycopg.conninfo import make_conninfo

        self._psycopg = psycopg
        self._pq = pq
        info = make_conninfo(with_timeouts(dsn), replication="database", application_name=application_name)
        self.pg: Any = pq.PGconn.connect(info.encode())
        self.sent_lsn = 0  # how far the server has decoded (its last keepalive)
        self.confirmed = 0  # the flushed position last sent
        self._reply_pending = False
        try:
            if self.pg.status != pq.ConnStatus.OK:
                raise psycopg.OperationalError(self._message())
            for stmt in settings:  # the output functions of the walsender's session (decode.py)
                self._exec(stmt)
            options = f"proto_version '1', publication_names {_literal(publication)}, messages 'true'"
            self.pg.send_query(f"START_REPLICATION SLOT {_identifier(slot)} LOGICAL 0/0 ({options})".encode())
            res = self.pg.get_result()
            if res is None or res.status != pq.ExecStatus.COPY_BOTH:
                raise self._error(res)
            self.pg.nonblocking = 1
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ reading

    def read(self, timeout: float) -> tuple[int, bytes] | None:
        """The next pgoutput message as (its WAL position, its bytes), waiting at most
        ``timeout`` seconds; None when nothing came (keepalives are taken on the way)."""
        deadline = None
        consumed = False
        while True:
            n, data = self.pg.get_copy_data(1)
            if n > 0:
                kind = data[0]
                if kind == 0x77:  # "w"
                    start, _end, _ts = _XLOGDATA.unpack_from(data, 1)
                    return start, bytes(data[25:])
                if kind == 0x6B:  # "k"
                    sent, _ts, reply = _KEEPALIVE.unpack_from(data, 1)
                    self.sent_lsn = max(self.sent_lsn, sent)
                    self._reply_pending = False
                    if reply:
                        self.confirm(self.confirmed)
                    continue
                raise self._psycopg.OperationalError(f"unexpected replication message {bytes(data[:1])!r}")
            if n < 0:
                raise self._error(self.pg.get_result())
            if not consumed:  # what the socket holds and libpq has not read yet
                consumed = True
                self.pg.consume_input()  # (raises psycopg's OperationalError on a lost connection)
                continue
            if deadline is None:
                deadline = time.monotonic() + timeout
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if _wait(self.pg.socket, select.POLLIN, left):
                consumed = False

    def request_position(self) -> None:
        """Ask the server how far it has decoded: its keepalive answer sets ``sent_lsn``."""
        if not self._reply_pending:
            self._reply_pending = True
            self.confirm(self.confirmed, reply=True)

    def confirm(self, lsn: int, *, reply: bool = False) -> None:
        """Send ``lsn`` as written, flushed and applied: the slot may move there."""
        self.confirmed = max(self.confirmed, lsn)
        now = int((time.time() - PG_EPOCH) * 1_000_000)
        msg = _STATUS.pack(b"r", self.confirmed, self.confirmed, self.confirmed, now, 1 if reply else 0)
        while (sent := self.pg.put_copy_data(msg)) != 1:
            if sent < 0:
                raise self._psycopg.OperationalError(self._message() or "could not send the standby status update")
            _wait(self.pg.socket, select.POLLOUT, 1.0)  # libpq's buffer is full (non-blocking mode)
        while (left := self.pg.flush()) != 0:
            if left < 0:
                raise self._psycopg.OperationalError(self._message() or "could not send the standby status update")
            _wait(self.pg.socket, select.POLLOUT, 1.0)  # the socket's buffer is full: wait until it takes the rest

    def close(self, timeout: float = 2.0) -> None:
        """End the stream (CopyDone, then the server's own end of it) so that the slot is
        released when this returns, then close the connection.  ``timeout`` bounds the wait
        for a server that does not answer; the connection is closed either way."""
        pg, self.pg = self.pg, None
        if pg is None:
            return
        try:
            with contextlib.suppress(self._psycopg.Error, OSError):  # closing: it goes either way
                self._end_copy(pg, time.monotonic() + timeout)
        finally:
            pg.finish()

    def _end_copy(self, pg: Any, deadline: float) -> None:
        if pg.status != self._pq.ConnStatus.OK or pg.put_copy_end() != 1:
            return
        while pg.flush() == 1 and _wait(pg.socket, select.POLLOUT, deadline - time.monotonic()):
            pass
        while time.monotonic() < deadline:
            n, _data = pg.get_copy_data(1)
            if n == 0:
                if _wait(pg.socket, select.POLLIN, deadline - time.monotonic()):
                    pg.consume_input()
                continue
            if n < 0:  # the server ended its side: the command's results follow
                while time.monotonic() < deadline and not _results_done(pg):
                    _wait(pg.socket, select.POLLIN, deadline - time.monotonic())
                    pg.consume_input()
                return

    # ------------------------------------------------------------------ errors

    def _exec(self, sql: str) -> None:
        res = self.pg.exec_(sql.encode())
        if res.status != self._pq.ExecStatus.COMMAND_OK:
            raise self._error(res)

    def _message(self) -> str:
        raw = self.pg.error_message if self.pg is not None else b""
        return bytes(raw).decode("utf-8", "replace").strip()

    def _error(self, res: Any) -> Exception:
        """The server's error as psycopg's exception class for its SQLSTATE (so callers
        tell "slot in use" (55006) and "slot missing" from an outage as for SQL)."""
        if res is not None and res.status == self._pq.ExecStatus.FATAL_ERROR:
            from psycopg.errors import error_from_result

            error: Exception = error_from_result(res, encoding="utf-8")
        else:
            error = self._psycopg.OperationalError(self._message() or "replication stream ended")
        return error


# a server that vanishes without a reset (a network partition) must not hold the source for
# the kernel's ~15 minutes of retransmissions: TCP keepalives on an idle connection, and a
# limit on unacknowledged data (libpq parameters; a DSN that sets its own keeps them)
TIMEOUTS = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3",
            "tcp_user_timeout": "30000"}


def with_timeouts(dsn: str) -> str:
    """``dsn`` with ``TIMEOUTS`` for every parameter it does not set itself."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    given = conninfo_to_dict(dsn)
    return make_conninfo(dsn, **{k: v for k, v in TIMEOUTS.items() if k not in given})


def _results_done(pg: Any) -> bool:
    """Take the results libpq has whole; True once the command has none left."""
    while not pg.is_busy():
        if pg.get_result() is None:
            return True
    return False


def _wait(fd: int, events: int, timeout: float) -> bool:
    """Whether ``fd`` became ready for ``events`` within ``timeout`` seconds (poll(2), not
    select(2): a sidecar may hold descriptors past FD_SETSIZE)."""
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(max(0, math.ceil(timeout * 1000))))


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
