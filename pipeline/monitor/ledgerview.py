"""The shipper's ledger, opened strictly read-only (SQLite ``mode=ro``).

``pipeline.ship.ledger.open_ledger_readonly`` opens the database read-write (it creates the
schema and sets the journal mode), which fails on the read-only mount the monitor is meant
to run with, and would need write access it must not have.  This view shares the ledger's
row type and queries (``Ledger.entries``, ``evicted_prefix``) and adds the incremental
queries the monitor needs; it never writes.  SQLite reads a WAL database on a read-only
file system as long as the writer keeps its ``-wal``/``-shm`` files (the shipper does while
it runs); after a clean shutdown removed them, the file is read as immutable.  docs/LEDGER.md
describes the tables.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from urllib.parse import quote

from pipeline.ship.ledger import ACTIVE_STATES, LEDGER_DIR, LEDGER_FILE, Entry, Ledger, _entry

__all__ = ["ACTIVE_STATES", "LedgerView", "open_ledger_view"]


class LedgerView(Ledger):
    def __init__(self, hot_dir: str | Path) -> None:  # no super().__init__: that creates and writes
        self.path = Path(hot_dir) / LEDGER_DIR / LEDGER_FILE
        self.reserve_bytes = 0
        self.write_error = None
        self._reserve_short = False
        self._lock = threading.Lock()
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = self._open("mode=ro")
        try:
            db.execute("SELECT 1 FROM segments LIMIT 1").fetchall()
        except sqlite3.OperationalError:
            db.close()
            if Path(f"{self.path}-wal").exists():
                raise
            # No writer: the shipper stopped cleanly and removed its -wal/-shm files, which a
            # reader on a read-only file system cannot create.  Without a WAL the database
            # file is complete, and nothing changes it until a shipper starts (the view is
            # opened afresh every cycle).
            db = self._open("mode=ro&immutable=1")
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


def open_ledger_view(hot_dir: str | Path) -> LedgerView | None:
    """None when the hot tier has no ledger (nothing was shipped yet, or no shipper)."""
    if not (Path(hot_dir) / LEDGER_DIR / LEDGER_FILE).exists():
        return None
    return LedgerView(hot_dir)
