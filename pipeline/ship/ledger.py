"""The shipper's durable ledger of segment states (SQLite, WAL mode, synchronous=FULL).

Lifecycle of one segment::

    sealed -> uploading -> uploaded -> verified -> confirmed -> evicted
                  \\-> (failure: stays, retried with backoff)      quarantined (kept, reported)

Every state is written (and committed durably) *before* the step it announces is acted
on, and every step is idempotent, so a restart after ``kill -9`` at any moment converges:
a segment in ``uploading`` is uploaded again with a create-only put, which finds the object
already there and verifies it instead of writing a second one; eviction happens only from
``confirmed``.  The ledger lives in ``<hot>/.ship/ledger.sqlite``: the shipper's own state,
separate from the writer's stream directories.

A full hot disk must never stop the ledger: recording "confirmed" and "evicted" is what
frees space.  So the ledger keeps its space *inside its own files*, where no other writer
can take it: ``reserve_bytes`` (4 MiB, or 1/32 of a small file system) of free pages in the
database file (written once, then freed: SQLite reuses free pages before it grows the
file), and a write-ahead log that is checkpointed every 128 pages and never shrunk below
1 MiB, so that it is rewritten in place instead of growing.  The free pages are topped up
when they fall below half and the disk has room.  (docs/ARCHITECTURE.md)
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from pipeline.errors import PipelineError
from pipeline.format.layout import LEDGER_DIR as LEDGER_DIR  # the layout owns the names
from pipeline.format.layout import LEDGER_FILE as LEDGER_FILE
from pipeline.format.layout import ledger_path, parse_segment_name

log = logging.getLogger("pipeline.ship.ledger")

T = TypeVar("T")

STATES = ("sealed", "uploading", "uploaded", "verified", "confirmed", "evicted", "quarantined")
ACTIVE_STATES = ("sealed", "uploading", "uploaded", "verified")
# Free pages kept in the database file: ~1.5 KB of ledger growth per segment, so thousands
# of segments can be confirmed and evicted on a full disk.
DEFAULT_RESERVE_BYTES = 4 << 20
# The WAL is checkpointed after 128 pages (512 KiB at 4 KiB pages) and kept at 1 MiB: a
# transaction never needs it to grow while checkpoints complete (one connection: they do).
WAL_AUTOCHECKPOINT_PAGES = 128
WAL_SIZE_LIMIT = 1 << 20
_SQLITE_FULL = 13
_SQLITE_IOERR = 10

_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    stream         TEXT NOT NULL,
    segment        TEXT NOT NULL,
    first_seq      INTEGER NOT NULL,
    last_seq       INTEGER NOT NULL,
    records        INTEGER NOT NULL,
    size           INTEGER NOT NULL,
    sha256         TEXT NOT NULL,
    merkle_root    TEXT NOT NULL,
    first_prev     TEXT NOT NULL,
    last_hash      TEXT NOT NULL,
    sealed         INTEGER NOT NULL,
    first_ts       TEXT NOT NULL DEFAULT '',
    last_ts        TEXT NOT NULL DEFAULT '',
    state          TEXT NOT NULL,
    cold_key       TEXT,
    stored_sha256  TEXT,
    stored_size    INTEGER,
    lock_status    TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    next_attempt   REAL NOT NULL DEFAULT 0,
    discovered_at  REAL NOT NULL,
    confirmed_at   REAL,
    evicted_at     REAL,
    updated_at     REAL NOT NULL,
    PRIMARY KEY (stream, segment)
);
CREATE INDEX IF NOT EXISTS segments_state ON segments(state, first_seq);
CREATE TABLE IF NOT EXISTS reserve (id INTEGER PRIMARY KEY, pad BLOB);
-- The manifest index (docs/INDEX.md): one row per index part the shipper wrote or is writing.
-- state 'writing': the part's rows are chosen (segments.index_part) and the PUT may have run;
-- 'stored': the object was created (or found) and verified.  Chain: prev_sha256 = sha256 of
-- part - 1 of the same stream.
CREATE TABLE IF NOT EXISTS index_parts (
    stream       TEXT NOT NULL,
    part         INTEGER NOT NULL,
    key          TEXT NOT NULL,
    dt           TEXT NOT NULL,
    prev_sha256  TEXT NOT NULL,
    sha256       TEXT,
    size         INTEGER,
    rows         INTEGER NOT NULL,
    state        TEXT NOT NULL,
    created_at   REAL NOT NULL,
    stored_at    REAL,
    PRIMARY KEY (stream, part)
);
CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       REAL NOT NULL,
    stream   TEXT NOT NULL,
    segment  TEXT NOT NULL,
    state    TEXT NOT NULL,
    detail   TEXT
);
"""


@dataclass(frozen=True)
class Entry:
    stream: str
    segment: str
    first_seq: int
    last_seq: int
    records: int
    size: int
    sha256: str
    merkle_root: str
    first_prev: str
    last_hash: str
    sealed: bool
    first_ts: str
    last_ts: str
    state: str
    cold_key: str | None
    stored_sha256: str | None
    stored_size: int | None
    lock_status: str | None
    attempts: int
    last_error: str | None
    next_attempt: float
    discovered_at: float
    confirmed_at: float | None
    evicted_at: float | None
    updated_at: float
    # the seal's stream tree size and root (None for abandoned, unsealed segments, and rows
    # written before the index existed); the index part key this segment's row went to
    tree_size: int | None = None
    tree_root: str | None = None
    index_part: str | None = None


# Columns added after the first release: added to an existing ledger when it is opened.
_ADDED_COLUMNS = (("tree_size", "INTEGER"), ("tree_root", "TEXT"), ("index_part", "TEXT"))


@dataclass(frozen=True)
class IndexPart:
    """One row of ``index_parts`` (docs/INDEX.md)."""

    stream: str
    part: int
    key: str
    dt: str
    prev_sha256: str
    sha256: str | None
    size: int | None
    rows: int
    state: str
    created_at: float
    stored_at: float | None


class StateConflict(PipelineError, RuntimeError):
    """The segment was not in the state this step expected: another shipper (a second
    process, or a slow thread) moved it first.  The step must not be acted on."""


def default_reserve(directory: Path) -> int:
    """4 MiB, or 1/32 of a small file system (at least 256 KiB): a reserve must not take a
    test tmpfs or a tiny volume for itself."""
    st = os.statvfs(directory)
    return min(DEFAULT_RESERVE_BYTES, max(256 << 10, st.f_blocks * st.f_frsize // 32))


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's "database or disk is full" (or an I/O error, which ENOSPC can also surface as)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)
    return "disk is full" in str(exc) or "disk I/O error" in str(exc)


class Ledger:
    """Thread-safe; one connection guarded by a lock (SQLite serialises writers anyway).

    ``write_error`` is None while writes succeed, else why the last one failed (the
    shipper reports it in ``/readyz`` and logs it once)."""

    def __init__(self, hot_dir: str | Path, *, reserve_bytes: int | None = None) -> None:
        self.path = ledger_path(hot_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.reserve_bytes = default_reserve(self.path.parent) if reserve_bytes is None else max(0, reserve_bytes)
        self.write_error: str | None = None
        self._reserve_short = False
        self._lock = threading.Lock()
        self._db = self._connect()
        self.ensure_reserve()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed state survives power loss, which is what "written before it is
            # acted on" needs (NORMAL in WAL mode may lose the last commits).
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            db.executescript(_SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(segments)").fetchall()}
            for name, kind in _ADDED_COLUMNS:
                if name not in have:
                    db.execute(f"ALTER TABLE segments ADD COLUMN {name} {kind}")
            db.execute("CREATE INDEX IF NOT EXISTS segments_index_part ON segments(index_part)")
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- the space reserve ---------------------------------------------------------------

    def reserved_bytes(self) -> int:
        """Bytes of free pages in the database file (what ledger growth uses first)."""
        with self._lock:
            pages = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
            size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        return pages * size

    def ensure_reserve(self) -> bool:
        """Top the free pages up to ``reserve_bytes`` when they fell below half and the disk
        has room for twice the shortfall.  Returns True when the reserve is in place."""
        if self.reserve_bytes == 0:
            return True
        have = self.reserved_bytes()
        if have >= self.reserve_bytes // 2:
            return True
        need = self.reserve_bytes - have
        st = os.statvfs(self.path.parent)
        if st.f_bavail * st.f_frsize < 2 * need + WAL_SIZE_LIMIT:
            if not self._reserve_short:
                self._reserve_short = True
                log.warning("the shipper ledger's space reserve is down to %d bytes and the hot disk has no "
                            "room to restore it: shipping must free space first", have)
            return False
        try:
            with self._lock:
                # Written, checkpointed into the database file, then freed: the pages are then
                # really allocated on disk (freed pages that were never written may not be).
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute("INSERT INTO reserve (pad) VALUES (zeroblob(?))", (need,))
                    self._db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self._db.execute("DELETE FROM reserve")
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.OperationalError as exc:
            log.warning("could not reserve %d bytes for the shipper ledger: %s", need, exc)
            return False
        if self._reserve_short:
            self._reserve_short = False
            log.info("the shipper ledger's space reserve is back in place (%d bytes)", self.reserved_bytes())
        return True

    # ---- transactions --------------------------------------------------------------------

    def _write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """``body`` in one IMMEDIATE transaction, rolled back on any error (including a
        failing COMMIT).  ``write_error`` says whether the ledger can be written."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = body(self._db)
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                self.write_error = f"cannot write the shipper ledger {self.path}: {exc}" + (
                    " (the hot disk is full and the ledger's reserve is used up: free space on it)"
                    if is_disk_full(exc) else "")
                raise
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            self.write_error = None
            return result

    def add(self, manifest: Any, now: float | None = None, seal: tuple[int, str] | None = None) -> bool:
        """Record a newly sealed segment (``seal``: its seal's tree size and root).  Returns
        False if it was already known."""
        t = time.time() if now is None else now
        tree_size, tree_root = seal if seal is not None else (None, None)

        def body(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "INSERT OR IGNORE INTO segments (stream, segment, first_seq, last_seq, records, size, sha256, "
                "merkle_root, first_prev, last_hash, sealed, first_ts, last_ts, state, discovered_at, updated_at, "
                "tree_size, tree_root) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'sealed',?,?,?,?)",
                (manifest.stream, manifest.segment, manifest.first_seq, manifest.last_seq, manifest.records,
                 manifest.size, manifest.sha256, manifest.merkle_root, manifest.first_prev, manifest.last_hash,
                 int(manifest.sealed), manifest.first_ts, manifest.last_ts, t, t, tree_size, tree_root),
            )
            if cur.rowcount:
                db.execute("INSERT INTO events (at, stream, segment, state, detail) VALUES (?,?,?,?,?)",
                           (t, manifest.stream, manifest.segment, "sealed", None))
            return bool(cur.rowcount)

        return self._write(body)

    def set_state(self, stream: str, segment: str, state: str, *, detail: str | None = None,
                  expect: tuple[str, ...] | None = None, **fields: Any) -> None:
        """Move a segment to ``state``.  With ``expect``, only from one of those states (a
        compare-and-set inside the transaction), else StateConflict.  A callable field value
        (a clock) is called inside the write transaction, so that values taken that way are in
        commit order."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        allowed = {"cold_key", "stored_sha256", "stored_size", "lock_status", "attempts", "last_error",
                   "next_attempt", "confirmed_at", "evicted_at"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"unknown ledger fields {bad}")
        t = time.time()
        cols = ["state = ?", "updated_at = ?"] + [f"{k} = ?" for k in fields]
        where = "stream = ? AND segment = ?"
        if expect:
            where += f" AND state IN ({','.join('?' * len(expect))})"

        def body(db: sqlite3.Connection) -> None:
            values = [v() if callable(v) else v for v in fields.values()]
            args: list[Any] = [state, t, *values, stream, segment, *(expect or ())]
            cur = db.execute(f"UPDATE segments SET {', '.join(cols)} WHERE {where}", args)  # noqa: S608
            if not cur.rowcount:
                row = db.execute("SELECT state FROM segments WHERE stream = ? AND segment = ?",
                                 (stream, segment)).fetchone()
                if row is None:
                    raise KeyError(f"{stream}/{segment} is not in the ledger")
                raise StateConflict(f"{stream}/{segment} is {row[0]}, not {' or '.join(expect or ())}: "
                                    f"another shipper moved it; not setting {state}")
            db.execute("INSERT INTO events (at, stream, segment, state, detail) VALUES (?,?,?,?,?)",
                       (t, stream, segment, state, detail))

        self._write(body)

    def record_failure(self, stream: str, segment: str, error: str, next_attempt: float) -> None:
        def body(db: sqlite3.Connection) -> None:
            db.execute("UPDATE segments SET attempts = attempts + 1, last_error = ?, next_attempt = ?, "
                       "updated_at = ? WHERE stream = ? AND segment = ?",
                       (error, next_attempt, time.time(), stream, segment))
            db.execute("INSERT INTO events (at, stream, segment, state, detail) VALUES (?,?,?,?,?)",
                       (time.time(), stream, segment, "retry", error))

        self._write(body)

    def get(self, stream: str, segment: str) -> Entry | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM segments WHERE stream = ? AND segment = ?",
                                   (stream, segment)).fetchone()
        return _entry(row) if row else None

    def entries(self, *, states: tuple[str, ...] | None = None, stream: str | None = None) -> list[Entry]:
        q = "SELECT * FROM segments"
        args: list[Any] = []
        where = []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if stream:
            where.append("stream = ?")
            args.append(stream)
        if where:
            q += " WHERE " + " AND ".join(where)
        q += " ORDER BY first_seq, segment"
        with self._lock:
            rows = self._db.execute(q, args).fetchall()
        return [_entry(r) for r in rows]

    # ---- the manifest index (docs/INDEX.md) -------------------------------------------------

    def unindexed(self, stream: str, limit: int) -> list[Entry]:
        """Confirmed (or since evicted) segments of ``stream`` whose index row is not yet
        chosen for a part, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM segments WHERE stream = ? AND state IN ('confirmed', 'evicted') "
                "AND index_part IS NULL ORDER BY first_seq, segment LIMIT ?", (stream, limit)).fetchall()
        return [_entry(r) for r in rows]

    def index_streams(self) -> list[str]:
        """Streams with confirmed segments not yet indexed, or an index part still being written."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT stream FROM segments WHERE state IN ('confirmed', 'evicted') "
                "AND index_part IS NULL UNION SELECT stream FROM index_parts WHERE state = 'writing' "
                "ORDER BY 1").fetchall()
        return [str(r[0]) for r in rows]

    def index_parts(self, stream: str, *, state: str | None = None) -> list[IndexPart]:
        q = "SELECT * FROM index_parts WHERE stream = ?"
        args: list[Any] = [stream]
        if state:
            q += " AND state = ?"
            args.append(state)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY part", args).fetchall()
        return [IndexPart(**dict(r)) for r in rows]

    def index_rows(self, key: str) -> list[Entry]:
        """The segments whose rows index part ``key`` holds, in row order."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM segments WHERE index_part = ? ORDER BY first_seq, segment",
                                    (key,)).fetchall()
        return [_entry(r) for r in rows]

    def begin_index_part(self, part: IndexPart, segments: list[str]) -> None:
        """Choose ``segments`` as the rows of ``part`` (state 'writing'), in one transaction,
        before the part is uploaded: after a crash the same rows are written again."""
        def body(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO index_parts (stream, part, key, dt, prev_sha256, sha256, size, rows, state, "
                       "created_at, stored_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (part.stream, part.part, part.key, part.dt, part.prev_sha256, part.sha256, part.size,
                        part.rows, "writing", part.created_at, None))
            for name in segments:
                cur = db.execute("UPDATE segments SET index_part = ? WHERE stream = ? AND segment = ? "
                                 "AND index_part IS NULL", (part.key, part.stream, name))
                if not cur.rowcount:
                    raise StateConflict(f"{part.stream}/{name} is already indexed: not writing it twice")

        self._write(body)

    def finish_index_part(self, stream: str, part: int, sha256: str, size: int, now: float) -> None:
        """The part's object is stored and verified: its SHA-256 is the chain's next link."""
        def body(db: sqlite3.Connection) -> None:
            db.execute("UPDATE index_parts SET state = 'stored', sha256 = ?, size = ?, stored_at = ? "
                       "WHERE stream = ? AND part = ?", (sha256, size, now, stream, part))

        self._write(body)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM segments GROUP BY state").fetchall()
        out = dict.fromkeys(STATES, 0)
        out.update({r[0]: r[1] for r in rows})
        return out

    def evicted_prefix(self, stream: str, present: Collection[str] | None = None) -> tuple[int, str] | None:
        """(next seq, last hash) after the evicted segments at the start of ``stream``:
        where the hot tier legitimately begins.  None if nothing was evicted.  A segment whose
        hot file is still there (a crash between recording the eviction and the unlink, which
        the next pass repeats) is still part of the hot tier: the prefix ends before it.
        ``present``: the segment names a listing of the stream taken BEFORE this call (then
        "still there" means listed): the shipper records ``evicted`` before it unlinks, so a
        file the listing lacks has its eviction in the rows read here, and the prefix agrees
        with that listing whatever the shipper evicts meanwhile."""
        last: tuple[int, str] | None = None
        stream_dir = self.path.parent.parent / stream
        # stream order is (first seq, attempt): seg-N.1.jsonl follows seg-N.jsonl, which
        # the text order of the names does not give
        for e in sorted(self.entries(stream=stream), key=lambda x: parse_segment_name(x.segment) or (x.first_seq, 0)):
            there = (stream_dir / e.segment).exists() if present is None else e.segment in present
            if e.state != "evicted" or there:
                break
            last = (e.last_seq + 1, e.last_hash)
        return last


def _entry(row: sqlite3.Row) -> Entry:
    d = dict(row)
    d["sealed"] = bool(d["sealed"])
    return Entry(**d)


class LedgerView(Ledger):
    """The shipper's ledger, opened strictly read-only (SQLite ``mode=ro``), for readers:
    ``verify``, ``verify-tier``, ``status``, ``export`` and the monitor, which an auditor or
    a monitor runs on a read-only mount of the hot tier and without write access.

    ``Ledger`` creates the schema, migrates and sets the journal mode: all writes, which
    fail on a read-only file system (``pipeline verify`` once exited 2 there).  This view
    shares the ledger's row type and queries and never writes.  SQLite reads a WAL database
    on a read-only file system as long as the writer keeps its ``-wal``/``-shm`` files (the
    shipper does while it runs); after a clean shutdown removed them, the file is read as
    immutable.  A ledger written before a column was added reads with that column's default
    (``Entry``'s defaults), without migrating it."""

    _conn: sqlite3.Connection

    def __init__(self, hot_dir: str | Path) -> None:  # no super().__init__: that creates and writes
        self.path = ledger_path(hot_dir)
        self.reserve_bytes = 0
        self.write_error = None
        self._reserve_short = False
        self._lock = threading.Lock()
        self._immutable = False
        self._db = self._connect()

    @property
    def _db(self) -> sqlite3.Connection:
        # Opened as immutable (no shipper ran), the connection never reads the WAL of a shipper
        # that started since: its rows would be missing from reads made after it wrote them (a
        # monitor cycle's hot listing, then this view: an eviction looked like a deletion).  So
        # once a WAL exists, every read goes through a connection that reads it.
        if self._immutable and Path(f"{self.path}-wal").exists():
            stale, self._conn = self._conn, self._connect()
            stale.close()
        return self._conn

    @_db.setter
    def _db(self, db: sqlite3.Connection) -> None:
        self._conn = db

    def _connect(self) -> sqlite3.Connection:
        self._immutable = False
        db = self._open("mode=ro")
        try:
            db.execute("SELECT 1 FROM segments LIMIT 1").fetchall()
        except sqlite3.OperationalError:
            db.close()
            if Path(f"{self.path}-wal").exists():
                raise
            # No writer: the shipper stopped cleanly and removed its -wal/-shm files, which a
            # reader on a read-only file system cannot create.  Without a WAL the database
            # file is complete, and nothing changes it until a shipper starts (``_db`` then
            # reconnects).
            db = self._open("mode=ro&immutable=1")
            self._immutable = True
        return db

    def _open(self, flags: str) -> sqlite3.Connection:
        db = sqlite3.connect(f"file:{quote(str(self.path))}?{flags}", uri=True, check_same_thread=False,
                             isolation_level=None, timeout=10)
        db.row_factory = sqlite3.Row
        return db

    def ensure_reserve(self) -> bool:
        return True

    def _query(self, sql: str, args: tuple[object, ...]) -> list[Entry]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_entry(r) for r in rows]

    def landed_since(self, watermark: float, limit: int) -> list[Entry]:
        """Rows whose cold copy was confirmed after ``watermark`` (epoch s), oldest first."""
        return self._query("SELECT * FROM segments WHERE confirmed_at IS NOT NULL AND confirmed_at > ? "
                           "AND state IN ('confirmed', 'evicted') ORDER BY confirmed_at LIMIT ?", (watermark, limit))

    def evicted_since(self, watermark: float, limit: int) -> list[Entry]:
        """Rows evicted after ``watermark`` (epoch s), oldest first."""
        return self._query("SELECT * FROM segments WHERE state = 'evicted' AND evicted_at IS NOT NULL "
                           "AND evicted_at > ? ORDER BY evicted_at LIMIT ?", (watermark, limit))

    def shipped_after(self, stream: str, first_seq: int, limit: int) -> list[Entry]:
        """Confirmed or evicted rows in (stream, first_seq) order after the given one: the
        rolling re-check of objects that landed earlier."""
        return self._query("SELECT * FROM segments WHERE state IN ('confirmed', 'evicted') AND "
                           "(stream > ? OR (stream = ? AND first_seq > ?)) ORDER BY stream, first_seq LIMIT ?",
                           (stream, stream, first_seq, limit))

    def not_evicted(self) -> list[Entry]:
        """Rows whose hot copy should still exist (bounded by the hot retention)."""
        return self._query("SELECT * FROM segments WHERE state != 'evicted' ORDER BY stream, first_seq", ())


def open_ledger_readonly(hot_dir: str | Path) -> LedgerView | None:
    """The ledger read-only; None when the hot tier has no ledger (nothing was shipped yet,
    or no shipper)."""
    if not ledger_path(hot_dir).exists():
        return None
    return LedgerView(hot_dir)
