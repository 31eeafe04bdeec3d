"""``[source.postgres]``: every committed row of the audit table into the hot chain, once.

How it reads.  A logical replication slot (plugin ``pgoutput``, the publication that
``pipeline pg install`` creates) is streamed (``pipeline/pg/stream.py``: START_REPLICATION
from the slot's confirmed position), which sends the changes of transactions in commit
order, each transaction whole.  One read ends where the WAL was flushed when it began, so
every commit before it is in it.  The events are appended to the hot log and waited for
until they are durable (fsynced), and only then is the end of the last transaction written
confirmed to the server (a standby status update), which moves the slot.

Why it cannot skip.  The slot decides what is sent again, by LSN: a transaction is
delivered again as long as the slot's ``confirmed_flush_lsn`` is not past its commit
record, whatever its rows' ids are (rows of a BIGSERIAL table commit out of id order; a
slot does not care).  The slot is only confirmed to the end of a commit record (or a
logical message of our own prefix, which ``pg verify`` writes) that was read and made durable before, or,
with no transaction open, to the server's keepalive position (every commit record before it
was decoded and sent ahead of the keepalive), so every transaction committed before that
point is in the chain.  A write that fails ends
the stream: what it sent comes again on the next one.  PostgreSQL keeps the WAL the slot
needs across its own restarts; a slot that is dropped, invalidated
(``max_slot_wal_keep_size``) or moved by someone else (possible only while no stream holds
it) is reported, and the gap recorded in the chain, never skipped silently.

Why it cannot duplicate.  Between "durable" and "confirmed" the process can die; the next
stream then sends transactions that are already in the chain.  Every event carries its
transaction's commit LSN and its index ``n`` within the transaction; the source starts
from the newest such position it finds in the chain itself (scanning the stream's hot
segments from the newest) and in its position file (``<hot>/.pg-source/<slot>.json``,
written after each durable batch, before the confirmation), and skips every change at or
before it.  The position only ever comes from what is durable, so it is never ahead of
the chain.

Event (``data`` of a record; docs/POSTGRES.md):
``{"source":"postgres","slot":..,"table":"audit.events","op":"insert","pk":{"id":42},
"lsn":"0/1A2B3C8","n":0,"commit_time":"2026-..Z","xid":1234,"row":{...}}``; UPDATE and
DELETE (possible only past the triggers) add ``old``, TRUNCATE lists ``tables``; a gap
is ``{"source":"postgres","slot":..,"op":"gap","from_lsn":..,"to_lsn":..,"lsn":..,"n":-1,
"reason":..}``.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.format.files import atomic_write
from pipeline.pg import PgError, require_psycopg
from pipeline.pg.decode import (
    PG_EPOCH,
    SESSION_SETTINGS,
    UNCHANGED_TOAST,
    Begin,
    Change,
    Commit,
    Decoder,
    ProtocolError,
    Relation,
    format_lsn,
    parse_lsn,
    row_json,
)
from pipeline.pg.install import (
    ROW_TRIGGER,
    TRUNCATE_TRIGGER,
    Target,
    event_trigger_states,
    primary_key,
    trigger_states,
)
from pipeline.pg.stream import ReplicationStream, with_timeouts

log = logging.getLogger("pipeline.pg.source")

POSITION_DIR = ".pg-source"
MESSAGE_PREFIX = "worm-pipeline"
# a read's changes are written (appended, made durable) in parts of at most this many rows
# or, counting the pgoutput messages they came in, this many bytes: a backlog of large rows
# (pgoutput sends a value of up to 1 GB whole) must not all be held at once
_WRITE_CHUNK = 4096
WRITE_BYTES = 2 << 20
# how long one read waits for the server to reach the WAL position of the read's start
# (normally a round trip; bounded so that a stuck server cannot hold the loop)
READ_WAIT = 2.0
SLOT_BUSY_GRACE = 10.0  # seconds the slot may be held by another process before it is a read-error
_NOT_OURS = -1  # _advanced_xid when the slot's position was found, not set by this process
PROBLEMS = ("wal-level", "slot-missing", "slot-lost", "behind-retention", "triggers-disabled", "decode-error",
            "chain-write", "position-file", "read-error")


@dataclass(frozen=True)
class SourceSettings:
    dsn: str
    schema: str = "audit"
    table: str = "events"
    slot: str | None = None
    publication: str | None = None
    poll_interval: float = 0.2
    batch_rows: int = 10000  # pgoutput messages per read at most: BEGIN, Relation, rows, COMMIT
    check_interval: float = 10.0

    @property
    def target(self) -> Target:
        return Target(self.schema, self.table)

    @property
    def slot_name(self) -> str:
        return self.slot or self.target.slot

    @property
    def publication_name(self) -> str:
        return self.publication or self.target.publication


@dataclass(frozen=True, order=True)
class Position:
    """The newest change in the chain: (commit LSN, index in its transaction)."""

    lsn: int
    n: int


def register_metrics(registry: Any) -> _Metrics:
    """The source's metrics in ``registry`` (the sidecar's, when it starts the source)."""
    return _Metrics(registry)


class _Metrics:
    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge

        self.rows = Counter("worm_pg_rows_total", "Rows (and other changes) of the audit tables written to the "
                            "chain by the PostgreSQL source, by table and operation.", ["table", "op"],
                            registry=registry)
        self.gaps = Counter("worm_pg_gaps_total", "WAL ranges the PostgreSQL source could not read (slot dropped, "
                            "invalidated or advanced by someone else) and restarts of its positions (a restore, a "
                            "promotion); each is recorded in the chain.",
                            registry=registry)
        self.up = Gauge("worm_pg_source_up", "1 while the PostgreSQL source is connected and reading, else 0.",
                        registry=registry)
        self.lag_seconds = Gauge("worm_pg_source_lag_seconds", "Age of the newest commit written to the chain "
                                 "when the last read ended behind the WAL; 0 when caught up.", registry=registry)
        self.lag_bytes = Gauge("worm_pg_source_lag_bytes", "WAL bytes between the slot and the server's current "
                               "position.", registry=registry)
        self.problem = Gauge("worm_pg_source_problem", "1 while the PostgreSQL source has this problem (slot "
                             "missing or lost, behind retention, triggers disabled, wal_level, ...).",
                             ["problem"], registry=registry)
        for p in PROBLEMS:
            self.problem.labels(problem=p)


class PostgresSource:
    """Tails ``settings``' table into ``hotlog``.  ``start()`` finds the position (chain,
    position file, slot) and starts the reading thread; ``stop()`` ends it.  ``problem()``
    is the readiness answer: None, or why the source cannot keep its promise now."""

    def __init__(self, settings: SourceSettings, hotlog: Any, *, registry: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.hotlog = hotlog
        self.slot = settings.slot_name
        self.publication = settings.publication_name
        self.tables = set(settings.target.tables())
        from prometheus_client import CollectorRegistry

        self.metrics = _Metrics(registry if registry is not None else CollectorRegistry())
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._problems: dict[str, str] = {}
        self.position: Position | None = None
        self._advanced_to: int | None = None  # the LSN this process last moved the slot to
        # what lies at _advanced_to: the xid of the transaction whose commit record ends there,
        # None for the source's own message, _NOT_OURS when the slot was found there
        self._advanced_xid: int | None = _NOT_OURS
        self._end_lsn: int | None = None  # end of the last transaction made durable
        self._last_seq: int | None = None  # the chain seq of the newest event written
        self._timeline: str | None = None  # the WAL timeline the positions belong to
        self._last_check = 0.0
        self.rows_written = 0
        self._up = True
        self._pkeys: dict[str, list[str]] = {}
        self._busy_since: float | None = None  # since when the slot has been in use by another process
        self.decoder = Decoder()
        self._stream: ReplicationStream | None = None  # the slot's stream, while this process holds it
        self._begin: Begin | None = None  # the transaction being read (a read may end inside one)
        self._index = 0  # the next change's index in it

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> PostgresSource:
        require_psycopg()
        self.position, self._end_lsn, self._last_seq = self._find_position()
        log.info("postgres source starting", extra={"slot": self.slot, "table": self.settings.target.qualified,
                                                    "position": self._describe_position()})
        self._thread = threading.Thread(target=self._run, name="pg-source", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()

    def problem(self) -> str | None:
        problems = self._problems.copy()  # called from the ops thread; copy() is atomic
        if not problems:
            return None
        return "postgres source: " + "; ".join(problems.values())

    def _set_problem(self, code: str, message: str | None) -> None:
        before = self._problems.get(code)
        if message is None:
            if before is not None:
                del self._problems[code]
                log.info("postgres source: resolved", extra={"problem": code})
                self.metrics.problem.labels(problem=code).set(0)
            return
        self._problems[code] = message
        self.metrics.problem.labels(problem=code).set(1)
        if before != message:
            log.error("postgres source: %s", message, extra={"problem": code, "slot": self.slot})

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                conn = self._connection()
                if self._clock() - self._last_check >= self.settings.check_interval:
                    self._check(conn)
                    self._last_check = self._clock()
                if "slot-missing" in self._problems or "slot-lost" in self._problems \
                        or "wal-level" in self._problems:
                    self._stop.wait(self.settings.poll_interval * 5)
                    self._last_check = 0.0  # look again soon
                    continue
                got = self.poll_once()
                self._set_problem("read-error", None)
                self._busy_since = None
                self._set_problem("decode-error", None)
                backoff = 0.5
                if got < self.settings.batch_rows:
                    # caught up: the next read after poll_interval, not at the next row (each
                    # read costs a query, a round trip and two fsyncs, whatever it carries)
                    self._stop.wait(self.settings.poll_interval)
            except ProtocolError as exc:
                self._set_problem("decode-error", f"cannot decode the slot's changes: {exc}")
                self._stop.wait(5.0)
            except PgError as exc:
                if not self._problems.keys() & {"chain-write", "position-file"}:
                    self._set_problem("chain-write", str(exc))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:
                psycopg = require_psycopg()
                if not isinstance(exc, psycopg.Error):
                    log.exception("postgres source: unexpected failure; retrying")
                else:
                    self._on_db_error(exc)
                self._close()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _on_db_error(self, exc: Any) -> None:
        text = (str(exc).strip().splitlines() or [""])[0]
        sqlstate = getattr(exc, "sqlstate", None)
        if "does not exist" in text and "replication slot" in text:
            self._slot_missing()
            return
        if "can no longer get changes" in text or "invalidated" in text:
            self._set_problem("slot-lost", f"slot {self.slot} was invalidated (it fell behind "
                                           "max_slot_wal_keep_size): rows committed since "
                                           f"{self._describe_position()} may never reach the chain; run pipeline pg "
                                           "install to recreate it (the gap is then recorded) and pipeline pg verify")
            return
        if sqlstate == "55000" and "wal_level" in text:
            self._set_problem("wal-level", text)
            return
        if sqlstate == "55006" and "replication slot" in text:
            # "is active for PID n": held by another process for a moment (pg verify peeking
            # it; the stream of a killed sidecar still ending); only a holder that
            # stays is a problem (a consumer of its own reads and moves it)
            now = time.monotonic()
            if self._busy_since is None:
                self._busy_since = now
                log.info("postgres source: slot %s in use by another process, retrying: %s", self.slot, text)
            if now - self._busy_since < SLOT_BUSY_GRACE:
                return
            # (psycopg calls it an OperationalError, which below would only mean an outage)
            self._set_problem("read-error", f"cannot read slot {self.slot}: {text} (for more than "
                                            f"{SLOT_BUSY_GRACE:g} s: another consumer holds the slot; what it "
                                            "confirms is recorded as a gap)")
            return
        psycopg = require_psycopg()
        if not isinstance(exc, psycopg.OperationalError):
            # the server answered and refused (a missing publication, a permission): tailing
            # cannot go on until someone acts; an outage (OperationalError) only waits
            self._set_problem("read-error", f"cannot read slot {self.slot}: {text}")
            return
        if self._up:  # once per outage
            log.warning("postgres source: database unavailable, retrying: %s", text, extra={"slot": self.slot})
        self._up = False
        self.metrics.up.set(0)

    def _slot_missing(self) -> None:
        self._set_problem("slot-missing", f"replication slot {self.slot} does not exist (dropped?): rows committed "
                                          f"since {self._describe_position()} are not being tailed; run pipeline pg "
                                          "install to recreate it (the gap is then recorded in the chain) and "
                                          "pipeline pg verify")

    def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        psycopg = require_psycopg()
        conn = psycopg.connect(with_timeouts(self.settings.dsn), autocommit=True,
                               application_name="worm-pipeline source")
        for stmt in SESSION_SETTINGS:
            conn.execute(stmt)
        self._conn = conn
        self._up = True
        self.metrics.up.set(1)
        log.info("postgres source connected", extra={"slot": self.slot})
        self._prepare_slot(conn)
        return conn

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # ------------------------------------------------------------------ the slot

    def _prepare_slot(self, conn: Any) -> None:
        """On every (re)connection: wal_level, the slot's existence, and whether it moved
        past the chain while nobody was watching (then a gap event is written)."""
        level = conn.execute("SHOW wal_level").fetchone()[0]
        if level != "logical":
            self._set_problem("wal-level", f"wal_level is {level!r}: the source needs wal_level = logical "
                                           "(ALTER SYSTEM SET wal_level = logical; restart PostgreSQL)")
            return
        self._set_problem("wal-level", None)
        row = self._slot_row(conn)
        if row is None and self.position is None:
            # nothing was ever tailed by this slot: creating it loses nothing the chain had
            lsn = conn.execute("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')",
                               (self.slot,)).fetchone()[0]
            log.warning("postgres source: created slot %s at %s (rows committed before it are not tailed; "
                        "pg verify names any)", self.slot, lsn)
            row = self._slot_row(conn)
        if row is None:
            self._slot_missing()
            return
        self._set_problem("slot-missing", None)
        self._judge_slot(conn, row)

    def _slot_row(self, conn: Any) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = conn.execute(
            "SELECT confirmed_flush_lsn::text, wal_status, plugin, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, "
            "substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8), "
            "pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::int8 "
            "FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)).fetchone()
        return row

    def _judge_slot(self, conn: Any, row: tuple[Any, ...]) -> None:
        confirmed_text, wal_status, plugin, lag, timeline = row[:5]
        if plugin != "pgoutput":
            raise ProtocolError(f"slot {self.slot} uses {plugin}; the source reads pgoutput")
        self.metrics.lag_bytes.set(lag or 0)
        if wal_status == "lost":
            self._set_problem("slot-lost", f"slot {self.slot} was invalidated (wal_status lost): WAL it needed is "
                                           "gone; run pipeline pg install to recreate it, then pipeline pg verify")
            return
        self._set_problem("slot-lost", None)
        self._set_problem("behind-retention", None if wal_status != "unreserved" else
                          f"slot {self.slot} is past max_slot_wal_keep_size (wal_status unreserved): the WAL it "
                          "needs may be removed at the next checkpoint")
        if self._stream is not None:
            # held by this process's stream: nobody else can move it, and it shows the
            # confirmations the server has taken so far, which may trail those sent
            return
        confirmed = parse_lsn(confirmed_text) if confirmed_text else 0
        # the chain accounts for everything up to the later of where this process moved the
        # slot and the end of the last durable transaction (or mark): a slot moved up to there
        # skipped nothing (e.g. a killed process's last confirmation, arriving late)
        known = max((x for x in (self._advanced_to, self._end_lsn) if x is not None), default=None)
        # the slot where this process last confirmed the server's decoded position (past its
        # last commit or mark): _advanced_to keeps naming the record _same_history can check
        at_own_keepalive = self._advanced_to is not None and confirmed == self._end_lsn \
            and confirmed > self._advanced_to
        before, self._timeline = self._timeline, timeline
        if before is not None and timeline != before:
            # a point-in-time restore or a promotion: LSNs after the fork do not order against
            # the positions in the chain, so skipping "at or before the position" could skip
            # new rows; start from the slot instead (a repeat is reported, a skip could not be)
            self._record_mark("reset", self.position.lsn if self.position else 0, confirmed,
                              f"the database's WAL timeline changed from {before} to {timeline} (a restore or a "
                              f"promotion): reading restarts at slot {self.slot}'s {format_lsn(confirmed)}")
        elif self._advanced_to is not None and confirmed < self._advanced_to and self._same_history(conn):
            # PostgreSQL writes a slot's confirmed position to disk only at the next
            # checkpoint: after a crash the slot is back there, and the WAL still holds what
            # was read (so too when the stream ended before the server took the last
            # confirmation). The positions stand: the transactions come again and are skipped.
            log.warning("postgres source: slot %s went back from %s to %s (a database crash, or a confirmation the "
                        "server did not take; the WAL still holds what was read): its transactions are read again "
                        "and skipped", self.slot,
                        format_lsn(self._advanced_to), format_lsn(confirmed))
        elif self._advanced_to is not None and confirmed < self._advanced_to:
            self._record_mark("reset", self._advanced_to, confirmed,
                              f"slot {self.slot} went back from {format_lsn(self._advanced_to)} to "
                              f"{format_lsn(confirmed)} (recreated on a restored database?): reading restarts there")
        elif known is not None and confirmed > known:
            self._record_mark("gap", known, confirmed, f"slot {self.slot} starts at {format_lsn(confirmed)}, past the "
                                                       f"end of the last transaction in the chain ({format_lsn(known)})"
                                                       ": it was recreated or advanced by someone else")
        if confirmed != self._advanced_to and not at_own_keepalive:
            self._advanced_to, self._advanced_xid = confirmed, _NOT_OURS

    def _same_history(self, conn: Any) -> bool:
        """Whether the WAL from the slot on still holds what this process read up to where it
        last moved the slot: the commit record of the same transaction (xid) ending exactly
        there, or the source's own message there.  True after a crash of PostgreSQL; false
        when the slot was recreated on a database restored to an earlier point (the WAL
        there is another history).  Only Begin, Commit and Message messages are sent."""
        target, xid = self._advanced_to, self._advanced_xid
        assert target is not None
        if xid == _NOT_OURS:
            # this process has not moved the slot: as at a start, the position file and the
            # chain decide what is already logged
            return True
        sql = ("SELECT pg_wal_lsn_diff(lsn, '0/0')::int8, data FROM pg_logical_slot_peek_binary_changes(%s, "
               "%s::pg_lsn, NULL, 'proto_version', '1', 'publication_names', %s, 'messages', 'true') "
               "WHERE get_byte(data, 0) IN (66, 67, 77)")  # B, C, M
        decoder = Decoder()
        begin_xid: int | None = None
        with conn.transaction(), conn.cursor(name="worm_pg_history", binary=True) as cur:
            cur.itersize = 5000
            cur.execute(sql, (self.slot, format_lsn(target + 1), self.publication))
            for row_lsn, data in cur:
                item = decoder.decode(data)
                if isinstance(item, Begin):
                    begin_xid = item.xid
                elif isinstance(item, Commit):
                    if item.end_lsn == target and xid is not None and begin_xid == xid:
                        return True
                elif isinstance(item, Change) and item.prefix == MESSAGE_PREFIX and int(row_lsn) == target \
                        and xid is None:
                    return True
        return False

    def _record_mark(self, op: str, from_lsn: int, to_lsn: int, reason: str) -> None:
        """A gap (WAL the source could not read) or a reset (positions start over) in the
        chain; the chain's position becomes (to_lsn, -1), never lower for a gap."""
        event = {"source": "postgres", "slot": self.slot, "op": op, "from_lsn": format_lsn(from_lsn),
                 "to_lsn": format_lsn(to_lsn), "lsn": format_lsn(to_lsn), "n": -1, "reason": reason}
        pos = Position(to_lsn, -1)
        if op == "gap" and self.position is not None and self.position > pos:
            # a gap noticed after rows past it were written: what is in the chain stays skipped
            pos = self.position
        self._write([(event, pos)])
        self._end_lsn = to_lsn
        self._save_position()
        self.metrics.gaps.inc()
        log.error("postgres source: %s recorded in the chain: %s", op, reason, extra={"slot": self.slot})

    def _check(self, conn: Any) -> None:
        """The periodic look at what the source cannot see in the WAL: the triggers'
        state (a superuser may disable them), the slot's retention and lag."""
        target = self.settings.target
        found = trigger_states(conn, target)
        bad = []
        for table in target.tables():
            for name in (ROW_TRIGGER, TRUNCATE_TRIGGER):
                state = found.get((table, name))
                if state is None:
                    bad.append(f"{table}.{name} missing")
                    continue
                if state[0] != "A":
                    bad.append(f"{table}.{name} not enabled ALWAYS ({state[0]})")
                if state[1]:  # e.g. its function replaced by one that lets the change through
                    bad.append(f"{table}.{name} altered ({'; '.join(state[1])})")
        events = event_trigger_states(conn, target)
        for name in (target.event_trigger, target.event_trigger + "_drop"):
            evt = events.get(name)
            if evt is None:  # dropped: DROP EVENT TRIGGER is not itself recorded
                bad.append(f"event trigger {name} missing")
                continue
            if evt[0] != "A":
                bad.append(f"event trigger {name} not enabled ALWAYS ({evt[0]})")
            if evt[1]:
                bad.append(f"event trigger {name} altered ({'; '.join(evt[1])})")
        self._set_problem("triggers-disabled", None if not bad else
                          "audit table triggers disabled, missing or altered: " + ", ".join(bad))
        row = self._slot_row(conn)
        if row is None:
            self._slot_missing()
            return
        if "slot-missing" in self._problems:
            self._set_problem("slot-missing", None)
        self._judge_slot(conn, row)

    # ------------------------------------------------------------------ reading

    def poll_once(self) -> int:
        """Read what the slot's stream holds, up to where the WAL was flushed when the call
        began (at most ``batch_rows`` messages), write it to the chain, make it durable and
        confirm it to the slot.  Returns the number of messages read."""
        try:
            return self._poll()
        except BaseException:
            # what was read and not made durable must come again: only a new stream (from
            # the slot's confirmed position) sends it again
            stream, self._stream = self._stream, None
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
            raise

    def _poll(self) -> int:
        conn = self._connection()
        if self._problems.keys() & {"slot-missing", "slot-lost", "wal-level"}:
            return 0
        slot_row = self._slot_row(conn)
        if slot_row is None:
            self._slot_missing()
            return 0
        # not streaming: where the slot is, before reading: moved by someone else (or
        # recreated) since this process last moved it, rows were skipped: the gap goes into
        # the chain first.  Streaming: only retention and lag (the slot is held by the stream)
        self._judge_slot(conn, slot_row)
        if "slot-lost" in self._problems:
            return 0
        stream = self._stream
        if stream is None:
            stream = self._open_stream(conn, slot_row)
            if stream is None:
                return 0
        target = int(slot_row[5])  # everything committed before this call began is read in it
        pending: list[tuple[dict[str, Any], Position]] = []
        pending_bytes = 0
        n_messages = 0
        advance_to: int | None = None
        advance_xid: int | None = None
        newest_commit: Commit | None = None
        give_up = time.monotonic() + READ_WAIT
        decode = self.decoder.decode
        insert_row = self.decoder.insert_row
        while n_messages < self.settings.batch_rows:
            got = stream.read(0.0)
            if got is None:
                if stream.sent_lsn >= target or time.monotonic() >= give_up:
                    break
                stream.request_position()  # how far the server has decoded: its answer ends the wait
                got = stream.read(min(0.05, max(0.0, give_up - time.monotonic())))
                if got is None:
                    continue
            n_messages += 1
            lsn, data = got
            if data[0] == 73 and self._begin is not None:  # "I": the common message, in one pass
                fast = insert_row(data)
                if fast is not None:
                    txn = self._begin
                    pos = Position(txn.commit_lsn, self._index)
                    self._index += 1
                    if self.position is not None and pos <= self.position:
                        continue  # already in the chain
                    pending.append((self._insert_event(fast[0], fast[1], txn, pos), pos))
                    pending_bytes += len(data)
                    if len(pending) >= _WRITE_CHUNK or pending_bytes >= WRITE_BYTES:
                        self._write(pending)
                        pending, pending_bytes = [], 0
                    continue
            item = decode(data)
            if item is None:
                continue
            if isinstance(item, Begin):
                self._begin, self._index = item, 0
            elif isinstance(item, Commit):
                begin = self._begin
                if begin is None:
                    raise ProtocolError("COMMIT without BEGIN")
                newest_commit = item
                advance_to = item.end_lsn  # once everything read so far is durable
                advance_xid = begin.xid
                self._begin = None
                stream.sent_lsn = max(stream.sent_lsn, item.end_lsn)
            elif item.op == "message":
                if self._begin is None and item.prefix == MESSAGE_PREFIX:
                    advance_to = item.message_lsn  # pg verify's mark: everything before it was read
                    advance_xid = None
                    stream.sent_lsn = max(stream.sent_lsn, lsn)
            else:
                begin = self._begin
                if begin is None:
                    raise ProtocolError(f"{item.op} outside a transaction")
                pos = Position(begin.commit_lsn, self._index)
                self._index += 1
                if self.position is not None and pos <= self.position:
                    continue  # already in the chain: written before a crash, before the confirmation
                pending.append((self._event(item, begin, pos), pos))
                pending_bytes += len(data)
                if len(pending) >= _WRITE_CHUNK or pending_bytes >= WRITE_BYTES:  # bounded memory
                    self._write(pending)
                    pending, pending_bytes = [], 0
        if pending:
            self._write(pending)
        # how far the server has decoded, when no transaction is open on the stream: every
        # commit record starting before it was decoded and so sent before it (walsender.c:
        # sentPtr is the end of the last record decoded, and a keepalive follows the data
        # queued before it), and all of that is durable now.  Confirming it skips nothing,
        # and a commit to another table (pgoutput skips it, and PostgreSQL sends a keepalive
        # at its end for a synchronous standby) does not wait for the audit table's next row.
        reached = stream.sent_lsn if self._begin is None else 0
        if advance_to is not None and (self._advanced_to is None or advance_to > self._advanced_to):
            # every change read is durable now: first the position file, then the slot
            self._end_lsn = max(advance_to, reached)
            self._save_position()
            self._confirm(self._end_lsn)
            # (the record there, for _same_history: the commit or the mark, not the keepalive)
            self._advanced_to, self._advanced_xid = advance_to, advance_xid
        elif reached > max(stream.confirmed, self._end_lsn or 0):
            self._end_lsn = reached
            self._save_position()
            self._confirm(reached)
        # more to read: the batch was full, or the server had not decoded to where the WAL
        # was when the read began (READ_WAIT ran out: it is still working through a backlog)
        behind = n_messages >= self.settings.batch_rows or stream.sent_lsn < target
        self._after_poll(newest_commit, behind)
        return n_messages

    def _open_stream(self, conn: Any, slot_row: tuple[Any, ...]) -> ReplicationStream | None:
        """START_REPLICATION on the slot (from its confirmed position).  From then on the
        slot is held by this process: only a move between the look above and the start
        remains to be caught, by looking again."""
        stream = ReplicationStream(self.settings.dsn, self.slot, self.publication, SESSION_SETTINGS)
        try:
            again = self._slot_row(conn)
            if again is not None and again[0] != slot_row[0]:
                self._judge_slot(conn, again)  # (moved forward by someone else: a gap)
        except BaseException:
            stream.close()  # not yet self._stream: nothing else would end it (the slot stays held)
            raise
        if again is None:
            stream.close()
            self._slot_missing()
            return None
        stream.confirmed = parse_lsn(again[0]) if again[0] else 0  # never confirm behind the slot
        self._stream = stream
        self.decoder = Decoder()  # a stream sends each relation's Relation message before its first change
        self._begin, self._index = None, 0
        return stream

    def _confirm(self, lsn: int) -> None:
        """Tell the server the chain holds everything up to ``lsn``: the slot may move there."""
        assert self._stream is not None
        self._stream.confirm(lsn)

    def _after_poll(self, newest_commit: Commit | None, behind: bool) -> None:
        if behind:
            if newest_commit is not None:  # (else: the lag last measured stands)
                t = newest_commit.ts / 1e6 + PG_EPOCH  # pgoutput's microseconds since 2000-01-01 UTC
                self.metrics.lag_seconds.set(max(0.0, self._clock() - t))
            return
        self.metrics.lag_seconds.set(0.0)

    def _insert_event(self, rel: Relation, row: dict[str, Any], begin: Begin, pos: Position) -> dict[str, Any]:
        """``_event`` for an INSERT whose row ``Decoder.insert_row`` rendered: the same
        event, key for key (tests/pg/test_decode_insert.py compares them)."""
        table = rel.qualified_name
        return {"source": "postgres", "slot": self.slot, "table": table, "op": "insert",
                "pk": {k: row.get(k) for k in self._primary_key(table, rel.columns)},
                "lsn": begin.lsn_text, "n": pos.n, "commit_time": begin.commit_time, "xid": begin.xid, "row": row}

    def _event(self, ch: Change, begin: Begin, pos: Position) -> dict[str, Any]:
        rel = ch.relation
        assert rel is not None
        event: dict[str, Any] = {"source": "postgres", "slot": self.slot, "table": rel.qualified, "op": ch.op}
        if ch.op == "truncate":
            event["tables"] = [r.qualified for r in ch.truncated]
            event["pk"] = None
        new = _row(rel, ch.new) if ch.new is not None else None
        old = None
        if ch.old is not None:
            old = _key_row(rel, ch.old) if ch.old_is_key else _row(rel, ch.old)
        if ch.op != "truncate":
            full = new if new is not None else old
            assert full is not None
            # the table's primary key (REPLICA IDENTITY FULL marks every column as "key")
            event["pk"] = {name: full.get(name) for name in self._primary_key(rel.qualified, rel.columns)}
        event["lsn"] = begin.lsn_text
        event["n"] = pos.n
        event["commit_time"] = begin.commit_time
        event["xid"] = begin.xid
        if new is not None:
            event["row"] = new
        if old is not None:
            event["old"] = old
        return event

    def _primary_key(self, table: str, columns: list[Any]) -> list[str]:
        key = self._pkeys.get(table)
        if key is None:
            key = primary_key(self._connection(), table) or [c.name for c in columns]
            self._pkeys[table] = key
        return key

    # ------------------------------------------------------------------ writing

    def _write(self, items: list[tuple[dict[str, Any], Position]]) -> None:
        """Append, wait until durable, then (only then) move the in-memory position."""
        from pipeline.hot.writer import HotLogError
        from pipeline.sanitise import InvalidEvent

        sanitiser = self.hotlog.sanitiser
        prepared: list[bytes] = []
        for event, _pos in items:
            try:
                prepared.append(sanitiser.prepare(event))
            except InvalidEvent as exc:
                prepared.append(sanitiser.prepare(_unloggable(event, exc)))
        results = self.hotlog.append_prepared_many(prepared)
        durable = 0
        failure: BaseException | None = None
        for i, r in enumerate(results):
            if isinstance(r, HotLogError):
                failure = r
                break
            durable = i + 1
        if durable:
            try:
                self.hotlog.wait_durable(results[durable - 1])
            except Exception as exc:  # find the durable prefix: durability is monotonic in seq
                failure = exc
                durable = self._durable_prefix(results[:durable])
        if durable:
            self.position = items[durable - 1][1]
            self._last_seq = results[durable - 1].seq
            counts: dict[tuple[str, str], int] = {}
            for event, _pos in items[:durable]:
                key = (event.get("table", ""), event["op"])
                counts[key] = counts.get(key, 0) + 1
                if event["op"] in ("update", "delete", "truncate"):
                    log.error("postgres source: %s on %s written to the chain: the audit table was changed past "
                              "its triggers", event["op"].upper(), event.get("table"),
                              extra={"pk": event.get("pk"), "lsn": event.get("lsn")})
            for (table, op), n in counts.items():
                self.metrics.rows.labels(table=table, op=op).inc(n)
            self.rows_written += durable
        if failure is not None:
            self._set_problem("chain-write", f"could not write to the hot chain: {failure}")
            raise PgError(f"could not write to the hot chain: {failure}")
        self._set_problem("chain-write", None)

    def _durable_prefix(self, receipts: list[Any]) -> int:
        n = 0
        for r in receipts:
            try:
                self.hotlog.wait_durable(r, timeout=0)
            except Exception:
                break
            n += 1
        return n

    # ------------------------------------------------------------------ the position

    def _position_file(self) -> Path:
        return Path(self.hotlog.hot_dir) / POSITION_DIR / f"{self.hotlog.stream}.{self.slot}.json"

    def _save_position(self) -> None:
        """After the events are durable and before the slot moves: the position, the end
        of the last durable transaction and its chain seq (fsynced, renamed in place)."""
        if self.position is None:
            return
        path = self._position_file()
        body = orjson.dumps({"slot": self.slot, "stream": self.hotlog.stream, "lsn": format_lsn(self.position.lsn),
                             "n": self.position.n, "end_lsn": format_lsn(self._end_lsn or 0), "seq": self._last_seq,
                             "timeline": self._timeline})
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            atomic_write(path, body, mode=0o600)
        except OSError as exc:
            # the slot cannot move until it is written: rows keep reaching the chain (the
            # stream sends them again after a restart, and the chain's events decide), but
            # the WAL piles up behind the slot; readiness says so
            self._set_problem("position-file", f"cannot write the position file {path}: {exc}; the slot is not "
                                               "moved until it can be written")
            raise PgError(f"cannot write the position file {path}: {exc}") from exc
        self._set_problem("position-file", None)

    def _find_position(self) -> tuple[Position | None, int | None, int | None]:
        """The newest change of this slot that is durable: the later of the chain's newest
        event (scanned from the newest segment back, stopping at the file's seq) and the
        position file.  Returns (position, end LSN of the last whole transaction, seq)."""
        saved = self._read_position_file()
        stop_seq = saved[2] if saved is not None else None
        found = newest_event(Path(self.hotlog.dir), self.slot, stop_seq=stop_seq)
        best: tuple[Position | None, int | None, int | None] = (None, None, None)
        if saved is not None:
            best = saved
        if found is not None:
            seq, data = found
            pos = Position(parse_lsn(data["lsn"]), int(data["n"]))
            if best[0] is None or pos > best[0]:
                # the end of its transaction is not in the event; the file's end LSN (or
                # none) stays the reference for "moved by someone else"
                best = (pos, best[1], seq)
        return best

    def _read_position_file(self) -> tuple[Position, int, int | None] | None:
        path = self._position_file()
        try:
            d = orjson.loads(path.read_bytes())
            self._timeline = d.get("timeline")
            return Position(parse_lsn(d["lsn"]), int(d["n"])), parse_lsn(d["end_lsn"]), d.get("seq")
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("postgres source: ignoring unreadable position file %s (%s); the chain decides", path, exc)
            return None

    def _describe_position(self) -> str:
        if self.position is None:
            return "the start of the slot"
        return f"commit {format_lsn(self.position.lsn)} (change {self.position.n})"


def _row(rel: Any, values: list[Any]) -> dict[str, Any]:
    cols = rel.columns
    if UNCHANGED_TOAST not in values:  # the common case (only an UPDATE can leave a value out)
        return row_json(cols, values)
    out = row_json(cols, [None if v is UNCHANGED_TOAST else v for v in values])
    unchanged = [c.name for c, v in zip(cols, values, strict=True) if v is UNCHANGED_TOAST]
    for name in unchanged:
        out[name] = {"unchanged_toast": True}
    return out


def _key_row(rel: Any, values: list[Any]) -> dict[str, Any]:
    """An old tuple of kind 'K' carries every column, NULL except the key's."""
    full = _row(rel, values)
    return {c.name: full[c.name] for c in rel.key_columns} if rel.key_columns else full


def _unloggable(event: dict[str, Any], exc: Exception) -> dict[str, Any]:
    """A row the log cannot hold as it is (over max_event_bytes, or refused by the JSON
    profile): its existence, key, position and the SHA-256 of its JSON go in instead."""
    import hashlib

    row = event.pop("row", None)
    old = event.pop("old", None)
    event["unloggable"] = {"reason": str(exc)[:200],
                           "row_sha256": hashlib.sha256(orjson.dumps(row, option=orjson.OPT_SORT_KEYS)).hexdigest(),
                           "old_sha256": None if old is None else
                           hashlib.sha256(orjson.dumps(old, option=orjson.OPT_SORT_KEYS)).hexdigest()}
    return event


def newest_event(stream_dir: Path, slot: str, *, stop_seq: int | None = None) -> tuple[int, dict[str, Any]] | None:
    """The newest record of ``stream_dir`` that is an event of the PostgreSQL source for
    ``slot`` (with a position): (seq, data).  Reads segments from the newest back, each
    from its end, and stops after the segment holding ``stop_seq`` (a position file's)."""
    from pipeline.format.record import RecordError, parse_record
    from pipeline.format.segment import list_segments, parse_segment_name

    needle = b'"slot":' + orjson.dumps(slot)
    for path in reversed(list_segments(stream_dir)):
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    continue
                buf: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (FileNotFoundError, ValueError):
            continue
        try:
            end = len(buf)
            while True:
                at = buf.rfind(needle, 0, end)
                if at < 0:
                    break
                start = buf.rfind(b"\n", 0, at) + 1
                stop = buf.find(b"\n", at)
                end = start
                if stop < 0:
                    continue  # a torn last line
                try:
                    rec = parse_record(bytes(buf[start:stop + 1]))
                except RecordError:
                    continue
                data = rec.data
                if (rec.kind == "event" and data.get("source") == "postgres" and data.get("slot") == slot
                        and isinstance(data.get("lsn"), str) and isinstance(data.get("n"), int)):
                    return rec.seq, data
                if end == 0:
                    break
        finally:
            buf.close()
        parsed = parse_segment_name(path.name)
        if stop_seq is not None and parsed is not None and parsed[0] <= stop_seq:
            break
    return None
