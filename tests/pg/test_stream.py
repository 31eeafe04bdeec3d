"""The source's replication stream (pipeline/pg/stream.py) where it meets the slot: a read
sees every commit made before it began, a stream ended inside a transaction repeats
nothing, the slot is free the moment the source stops, and an idle read does not wait."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import psycopg
import pytest

from pipeline import open_log
from pipeline.pg.decode import parse_lsn
from pipeline.pg.source import PostgresSource
from tests.pg.conftest import AuditDb, chain_events, logged_ids, on_held_slot
from tests.pg.server import wait_for
from tests.pg.test_source import stepped, tailing


def _source(db: AuditDb, hot: Path, **kw: object) -> PostgresSource:
    return stepped(db, open_log(hot, "app"), check_interval=3600.0, **kw)


def _slot(db: AuditDb, conn: psycopg.Connection[tuple[object, ...]] | None = None) -> tuple[bool, int]:
    with contextlib.closing(db.connect()) if conn is None else contextlib.nullcontext(conn) as su:
        row = su.execute("SELECT active, confirmed_flush_lsn::text FROM pg_replication_slots "
                         "WHERE slot_name = %s", (db.target.slot,)).fetchone()
    assert row is not None
    return bool(row[0]), parse_lsn(str(row[1]))


@pytest.mark.usefixtures("patient_reads")
def test_one_read_holds_every_commit_made_before_it(audit_db: AuditDb, tmp_path: Path) -> None:
    """Rows committed before poll_once began are in the chain when it returns, on the
    stream's first read and on later ones (the server's position answer ends the read)."""
    src = _source(audit_db, tmp_path / "hot")
    try:
        total = 0
        for n in (1, 7, 300):
            audit_db.insert(n)
            total += n
            src.poll_once()
            assert len(logged_ids(tmp_path / "hot")) == total
    finally:
        src._close()
        src.hotlog.close()


def test_an_idle_read_ends_on_the_servers_answer_not_on_the_timeout(audit_db: AuditDb, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing to read: the keepalive answering the position request ends the read.  The
    bounded wait (here 30 s) is only for a server that does not answer."""
    monkeypatch.setattr("pipeline.pg.source.READ_WAIT", 30.0)
    src = _source(audit_db, tmp_path / "hot")
    try:
        audit_db.insert(1)
        src.poll_once()
        for _ in range(5):
            started = time.monotonic()
            assert src.poll_once() == 0
            assert time.monotonic() - started < 10.0
    finally:
        src._close()
        src.hotlog.close()


@pytest.mark.usefixtures("patient_reads")
def test_a_stream_ended_inside_a_transaction_repeats_and_skips_nothing(audit_db: AuditDb, tmp_path: Path) -> None:
    """A read that stops inside a transaction (batch_rows) writes its first rows; the stream
    is then ended by someone else; the new stream sends the whole transaction again from the
    slot's position, and only the rows the chain lacks are written."""
    hot = tmp_path / "hot"
    src = _source(audit_db, hot, batch_rows=4)  # BEGIN, the Relation message, two rows
    try:
        ids = audit_db.insert(10)  # one transaction
        src.poll_once()
        assert 0 < src.rows_written < 10
        with contextlib.closing(audit_db.connect()) as su:
            on_held_slot(su, audit_db.target.slot, "SELECT %s")  # only ends the stream
        for _ in range(8):
            with contextlib.suppress(psycopg.OperationalError):
                src.poll_once()
    finally:
        src._close()
        src.hotlog.close()
    assert logged_ids(hot) == list(ids)
    assert [e["n"] for e in chain_events(hot)] == list(range(10))


def test_the_slot_is_free_when_the_source_stops_and_holds_what_it_confirmed(audit_db: AuditDb,
                                                                             tmp_path: Path) -> None:
    """stop() ends the stream and waits for the server's end of it: the slot is released
    when it returns (pg verify and pg install may act on it at once, with no "is active
    for PID")."""
    hot = tmp_path / "hot"
    with contextlib.closing(audit_db.connect()) as su:
        with tailing(audit_db, hot) as src:
            audit_db.insert(20)
            assert wait_for(lambda: src.rows_written >= 20, 10)
            assert wait_for(lambda: _slot(audit_db, su)[0], 5)
            end = src._end_lsn
        # asked on a connection already open: the very next statement after stop()
        su.execute("SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())", (audit_db.target.slot,))
    assert end is not None


@pytest.mark.usefixtures("patient_reads")
def test_nothing_is_confirmed_before_it_is_durable(audit_db: AuditDb, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The chain write fails: the slot stays where it was, the stream is ended (what it sent
    must come again), and once the chain takes writes again every row arrives once."""
    from pipeline.pg import PgError

    hot = tmp_path / "hot"
    src = _source(audit_db, hot)
    write = src._write
    try:
        audit_db.insert(2)
        src.poll_once()
        _active, before = _slot(audit_db)

        def failing(items: object) -> None:
            raise PgError("could not write to the hot chain: disk full (simulated)")

        monkeypatch.setattr(src, "_write", failing)
        audit_db.insert(3)
        with pytest.raises(PgError):
            src.poll_once()
        assert src._stream is None
        assert _slot(audit_db)[1] == before
        monkeypatch.setattr(src, "_write", write)
        src.poll_once()
        src.poll_once()
    finally:
        src._close()
        src.hotlog.close()
    ids = logged_ids(hot)
    assert len(ids) == 5 and len(set(ids)) == 5


def test_a_synchronous_standby_setting_does_not_stall_other_tables(audit_db: AuditDb, tmp_path: Path) -> None:
    """The source's stream is a walsender, so ``synchronous_standby_names = '*'`` (a common
    setting on a primary with one physical standby) can pick it as the synchronous standby:
    every commit in the cluster then waits until the source confirms a position past it.
    A commit to another table is never sent on the stream (pgoutput skips it; PostgreSQL
    15 sends a keepalive with its end instead, "to avoid delaying such transactions"), so
    the source must confirm the server's position when it has nothing pending, or that
    commit waits until the audit table happens to get a row."""
    import threading

    hot = tmp_path / "hot"
    with contextlib.closing(audit_db.connect()) as su:
        su.execute("CREATE TABLE public.other (x int)")
    with tailing(audit_db, hot) as src, contextlib.closing(audit_db.connect()) as su:
        audit_db.insert(1)
        assert wait_for(lambda: src.rows_written >= 1, 10)
        su.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        su.execute("SELECT pg_reload_conf()")
        try:
            assert wait_for(lambda: su.execute("SELECT sync_state FROM pg_stat_replication WHERE application_name "
                                               "= 'worm-pipeline source'").fetchone() == ("sync",), 10)
            done = threading.Event()

            def other() -> None:
                with contextlib.closing(audit_db.connect()) as c:
                    c.execute("INSERT INTO public.other VALUES (1)")
                done.set()

            threading.Thread(target=other, daemon=True).start()
            assert done.wait(5.0), "a commit to another table waits for the source"
        finally:
            su.execute("ALTER SYSTEM RESET synchronous_standby_names")
            su.execute("SELECT pg_reload_conf()")


def test_a_confirmed_server_position_keeps_the_record_the_crash_check_needs(audit_db: AuditDb,
                                                                            tmp_path: Path) -> None:
    """Idle, the source confirms how far the server has decoded (past its last commit); a
    stream started again at that position must still know which commit it last moved the
    slot past (its xid), or a slot later gone back to another history would be taken for a
    crash and the new history's rows skipped."""
    from pipeline.pg.source import _NOT_OURS

    hot = tmp_path / "hot"
    with tailing(audit_db, hot) as src, contextlib.closing(audit_db.connect()) as su:
        audit_db.insert(3)
        assert wait_for(lambda: src.rows_written >= 3 and src._advanced_xid not in (_NOT_OURS, None), 10)
        commit_end, xid = src._advanced_to, src._advanced_xid
        su.execute("CREATE TABLE public.other AS SELECT g FROM generate_series(1, 1000) g")  # WAL, no audit row
        assert wait_for(lambda: (src._end_lsn or 0) > (commit_end or 0) and _slot(audit_db, su)[1] == src._end_lsn, 10)
        su.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s",
                   (audit_db.target.slot,))
        assert wait_for(lambda: src._stream is None, 10)
        assert wait_for(lambda: src._stream is not None and _slot(audit_db, su)[0], 10)
        assert (src._advanced_to, src._advanced_xid) == (commit_end, xid)


def test_a_failure_right_after_the_stream_starts_releases_the_slot(audit_db: AuditDb, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The look at the slot after START_REPLICATION fails (the connection lost, or the gap
    it finds cannot be written): the stream just started must be ended there, not left to
    the garbage collector while the error (and its traceback) lives, as it does through
    the source loop's backoff: until then the slot is "active for PID"."""
    src = _source(audit_db, tmp_path / "hot")
    looks: list[int] = []
    real = src._slot_row

    def second_look_fails(conn: object) -> tuple[object, ...] | None:
        looks.append(1)
        if len(looks) == 2:
            raise psycopg.OperationalError("connection lost (simulated)")
        return real(conn)

    src._connection()  # (its own look at the slot, before the read's two)
    monkeypatch.setattr(src, "_slot_row", second_look_fails)
    active = None
    try:
        try:
            src.poll_once()
        except psycopg.OperationalError:  # as the source loop holds it: through its backoff
            active = _slot(audit_db)[0]
    finally:
        src._close()
        src.hotlog.close()
    assert len(looks) == 2 and active is False


def test_a_read_that_ends_behind_the_server_reports_its_lag(audit_db: AuditDb, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that gives up waiting for the server (READ_WAIT: the walsender is still
    decoding a backlog) ended with more to read: worm_pg_source_lag_seconds is the age of
    the newest commit it wrote, not 0 ("0 when caught up")."""
    monkeypatch.setattr("pipeline.pg.source.READ_WAIT", 0.0)
    src = _source(audit_db, tmp_path / "hot")
    try:
        with contextlib.closing(audit_db.connect()) as su:
            audit_db.insert(1)
            time.sleep(1.5)
            su.execute("CREATE TABLE public.filler AS SELECT repeat('x', 200) AS pad FROM generate_series(1, 300000)")
            audit_db.insert(1)
        deadline = time.monotonic() + 10
        while src.rows_written == 0 and time.monotonic() < deadline:
            src.poll_once()
        assert src.rows_written == 1, "the read did not end behind the server (nothing to measure)"
        assert src.metrics.lag_seconds._value.get() >= 1.0
    finally:
        src._close()
        src.hotlog.close()


def test_both_connections_give_up_on_a_vanished_server(audit_db: AuditDb, tmp_path: Path) -> None:
    """TCP keepalives and tcp_user_timeout on the source's SQL connection and on its stream
    (a partition without a reset must not hold the source for the kernel's retransmissions),
    unless the DSN sets its own."""
    from pipeline.pg.stream import with_timeouts

    src = _source(audit_db, tmp_path / "hot")
    try:
        src.poll_once()
        assert src._conn is not None and src._stream is not None
        for pgconn in (src._conn.pgconn, src._stream.pg):
            options = {o.keyword: o.val for o in pgconn.info}
            assert options[b"tcp_user_timeout"] == b"30000" and options[b"keepalives_idle"] == b"10"
    finally:
        src._close()
        src.hotlog.close()
    assert "tcp_user_timeout=5000" in with_timeouts(audit_db.dsn + " tcp_user_timeout=5000")
    assert with_timeouts(audit_db.dsn + " tcp_user_timeout=5000").count("tcp_user_timeout") == 1
