"""Real PostgreSQL 15 for the PostgreSQL layer's tests (tests/pg/server.py).

``pg`` is one cluster for the session (initdb once, wal_level = logical); every test that
needs a database gets its own (``audit_db``: created, hardened with ``pg install``, dropped
with its slots afterwards).  ``pg_pair`` adds a second cluster, the replica, subscribed to
the primary's audit table over logical replication.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.pg.install import Target, install
from pipeline.pg.reconcile import connect
from tests.pg.server import PgInstance, running, wait_for


@pytest.fixture(scope="session")
def pg() -> Iterator[PgInstance]:
    with running() as inst:
        yield inst


@pytest.fixture(scope="session")
def pg_replica_instance() -> Iterator[PgInstance]:
    with running() as inst:
        yield inst


@dataclass
class AuditDb:
    inst: PgInstance
    name: str
    target: Target

    @property
    def dsn(self) -> str:
        return self.inst.dsn(self.name)

    def connect(self, user: str = "postgres") -> Any:
        return connect(self.inst.dsn(self.name, user))

    def insert(self, n: int = 1, *, actor: str = "alice", conn: Any = None) -> list[int]:
        own = conn is None
        c = conn or self.connect()
        try:
            rows = c.execute(f"INSERT INTO {self.target.qualified} (actor, action, target, detail) "
                             "SELECT %s, 'login', 'host-' || g, jsonb_build_object('n', g, 'ok', true) "
                             "FROM generate_series(1, %s) g RETURNING id", (actor, n)).fetchall()
            return [r[0] for r in rows]
        finally:
            if own:
                c.close()


def make_audit_db(inst: PgInstance, *, slot: bool = True) -> AuditDb:
    name = inst.create_database()
    db = AuditDb(inst, name, Target())
    with contextlib.closing(db.connect()) as conn:
        install(conn, db.target, slot=slot)
    return db


@pytest.fixture
def patient_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests that assert what one read by hand (``poll_once``) returned.  A read ends on
    the server's answer to its position request; READ_WAIT (2 s) only bounds a server that
    does not answer, and a walsender slow to start on a loaded machine could outlast it, so
    that the read returned with rows still to come.  A generous bound ends nothing sooner
    or later on a machine that answers."""
    monkeypatch.setattr("pipeline.pg.source.READ_WAIT", 60.0)


@pytest.fixture
def audit_db(pg: PgInstance) -> Iterator[AuditDb]:
    db = make_audit_db(pg)
    try:
        yield db
    finally:
        pg.drop_database(db.name)


@dataclass
class Pair:
    primary: AuditDb
    replica: AuditDb

    def wait_replicated(self, timeout: float = 30.0) -> bool:
        with contextlib.closing(self.primary.connect()) as p, contextlib.closing(self.replica.connect()) as r:
            want = p.execute(f"SELECT count(*), max(id) FROM {self.primary.target.qualified}").fetchone()

            def done() -> bool:
                got = r.execute(f"SELECT count(*), max(id) FROM {self.replica.target.qualified}").fetchone()
                return bool(got == want)

            return wait_for(done, timeout)


@pytest.fixture
def pg_pair(pg: PgInstance, pg_replica_instance: PgInstance) -> Iterator[Pair]:
    """Primary and replica: the replica has the same hardening (no slot of its own) and a
    subscription to the primary's audit table (the replica's own DDL log stays its own)."""
    primary = make_audit_db(pg)
    replica = make_audit_db(pg_replica_instance, slot=False)  # what `pg install --no-slot` does
    sub = f"sub_{replica.name}"
    try:
        with contextlib.closing(primary.connect()) as p:
            p.execute(f"CREATE PUBLICATION audit_replica FOR TABLE {primary.target.qualified}")
        with contextlib.closing(replica.connect()) as r:
            r.execute(f"CREATE SUBSCRIPTION {sub} CONNECTION '{pg.dsn(primary.name)}' PUBLICATION audit_replica")
        yield Pair(primary, replica)
    finally:
        with contextlib.closing(replica.connect()) as r, contextlib.suppress(Exception):
            r.execute(f"ALTER SUBSCRIPTION {sub} DISABLE")
            r.execute(f"ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)")
            r.execute(f"DROP SUBSCRIPTION {sub}")
        pg_replica_instance.drop_database(replica.name)
        pg.drop_database(primary.name)


def chain_events(hot: Path, stream: str = "app") -> list[dict[str, Any]]:
    """Every PostgreSQL source event in the stream's hot segments, in seq order."""
    from pipeline.hot.segment import iter_lines, list_segments
    from pipeline.record import parse_record

    out = []
    for path in list_segments(hot / stream):
        for _off, line in iter_lines(path):
            if not line.endswith(b"\n"):
                continue
            rec = parse_record(line)
            if rec.kind == "event" and rec.data.get("source") == "postgres":
                out.append(rec.data)
    return out


def logged_ids(hot: Path, stream: str = "app", table: str = "audit.events") -> list[int]:
    return [e["pk"]["id"] for e in chain_events(hot, stream) if e.get("op") == "insert" and e.get("table") == table]


def on_held_slot(su: Any, slot: str, sql: str, timeout: float = 10.0) -> None:
    """Run ``sql`` (with ``slot`` as its parameter) on a slot the source's stream holds, as
    a DBA must: terminate the process holding it, then act before the source reconnects
    (retried: the source comes back after half a second)."""
    import time

    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        su.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                   "WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,))
        try:
            su.execute(sql, (slot,))
            return
        except psycopg.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
