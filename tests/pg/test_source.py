"""The [source.postgres] tail: every committed row into the chain exactly once, in commit
order, across restarts of the source and of the database; problems are reported."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pipeline import open_log
from pipeline.pg.install import ROW_TRIGGER, Target, install
from pipeline.pg.source import PostgresSource, SourceSettings
from tests.pg.conftest import AuditDb, chain_events, logged_ids, on_held_slot
from tests.pg.server import wait_for


@contextlib.contextmanager
def tailing(db: AuditDb, hot: Path, **kw: Any) -> Iterator[PostgresSource]:
    log = open_log(hot, "app")
    settings = SourceSettings(dsn=db.dsn, poll_interval=0.05, check_interval=kw.pop("check_interval", 0.2), **kw)
    src = PostgresSource(settings, log, registry=CollectorRegistry()).start()
    try:
        yield src
    finally:
        src.stop()
        log.close()


def stepped(db: AuditDb, log: Any, **kw: Any) -> PostgresSource:
    """A source driven by hand (``poll_once``), not started: its position found as
    ``start()`` finds it."""
    src = PostgresSource(SourceSettings(dsn=db.dsn, **kw), log, registry=CollectorRegistry())
    src.position, src._end_lsn, src._last_seq = src._find_position()
    return src


def test_rows_committed_out_of_id_order_are_all_tailed_in_commit_order(audit_db: AuditDb, tmp_path: Path) -> None:
    hot = tmp_path / "hot"
    with tailing(audit_db, hot) as src, contextlib.closing(audit_db.connect()) as slow, \
            contextlib.closing(audit_db.connect()) as fast:
        slow.execute("BEGIN")
        first = audit_db.insert(1, actor="slow", conn=slow)  # takes the lower id, commits last
        second = audit_db.insert(1, actor="fast", conn=fast)
        assert first[0] < second[0]
        assert wait_for(lambda: src.rows_written >= 1, 10)
        # the poller has seen the higher id; an "id > last seen" poller would now skip `first`
        slow.execute("COMMIT")
        assert wait_for(lambda: src.rows_written >= 2, 10)
    ids = logged_ids(hot)
    assert ids == [second[0], first[0]]  # commit order, each once
    ev = chain_events(hot)[0]
    assert ev["table"] == "audit.events" and ev["op"] == "insert" and ev["pk"] == {"id": second[0]}
    assert ev["row"]["actor"] == "fast" and ev["row"]["detail"] == {"n": 1, "ok": True}
    assert ev["commit_time"].endswith("Z") and "/" in ev["lsn"] and isinstance(ev["xid"], int)


@pytest.mark.usefixtures("patient_reads")
def test_crash_after_durable_before_advance_writes_nothing_twice(audit_db: AuditDb, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    hot = tmp_path / "hot"
    audit_db.insert(50)
    log = open_log(hot, "app")
    src = stepped(audit_db, log)

    class Crash(Exception):
        pass

    def crash(*a: Any, **k: Any) -> None:
        raise Crash

    # the events are durable, then the process "dies" before the position file and the advance
    monkeypatch.setattr(src, "_save_position", crash)
    with pytest.raises(Crash):
        src.poll_once()
    src._close()
    log.close()
    assert len(logged_ids(hot)) == 50
    monkeypatch.undo()
    audit_db.insert(5)
    with tailing(audit_db, hot) as again:
        # the slot still returns the 50 rows: the chain's newest event says they are in
        assert again.position is not None
        assert wait_for(lambda: again.rows_written >= 5, 10)
    ids = logged_ids(hot)
    assert len(ids) == 55 and len(set(ids)) == 55


def test_source_and_database_restarts_lose_and_repeat_nothing(audit_db: AuditDb, tmp_path: Path) -> None:
    hot = tmp_path / "hot"
    with tailing(audit_db, hot) as src:
        audit_db.insert(100)
        assert wait_for(lambda: src.rows_written >= 100, 15)
    audit_db.insert(20)  # while the source is down
    with tailing(audit_db, hot) as src:
        assert wait_for(lambda: src.rows_written >= 20, 15)
        audit_db.inst.restart()  # the database goes away under the source
        audit_db.insert(30)
        assert wait_for(lambda: src.rows_written >= 50, 30)
    ids = logged_ids(hot)
    assert len(ids) == 150 and len(set(ids)) == 150


def test_dropped_slot_is_reported_and_the_gap_recorded_when_recreated(audit_db: AuditDb, tmp_path: Path) -> None:
    hot = tmp_path / "hot"
    with tailing(audit_db, hot) as src:
        audit_db.insert(3)
        assert wait_for(lambda: src.rows_written >= 3, 10)
        with contextlib.closing(audit_db.connect()) as su:
            on_held_slot(su, audit_db.target.slot, "SELECT pg_drop_replication_slot(%s)")
        audit_db.insert(2)  # never decoded: committed while no slot existed
        assert wait_for(lambda: "slot-missing" in src._problems, 10)
        assert "does not exist" in str(src.problem())
        assert src.metrics.problem.labels(problem="slot-missing")._value.get() == 1
        with contextlib.closing(audit_db.connect()) as su:
            install(su, audit_db.target)  # the operator recreates it
        assert wait_for(lambda: src.problem() is None, 15)
        audit_db.insert(1)
        assert wait_for(lambda: src.rows_written >= 5, 10)
    gaps = [e for e in chain_events(hot) if e["op"] == "gap"]
    assert len(gaps) == 1 and "recreated or advanced by someone else" in gaps[0]["reason"]
    assert len(logged_ids(hot)) == 4


def test_disabled_trigger_and_an_update_past_it_are_reported_and_logged(audit_db: AuditDb, tmp_path: Path) -> None:
    hot = tmp_path / "hot"
    with tailing(audit_db, hot) as src:
        ids = audit_db.insert(2)
        assert wait_for(lambda: src.rows_written >= 2, 10)
        with contextlib.closing(audit_db.connect()) as su:
            su.execute(f"ALTER TABLE audit.events DISABLE TRIGGER {ROW_TRIGGER}")
            assert wait_for(lambda: "triggers-disabled" in src._problems, 10)
            assert f"audit.events.{ROW_TRIGGER} not enabled ALWAYS (D)" in str(src.problem())
            su.execute("UPDATE audit.events SET actor = 'mallory' WHERE id = %s", (ids[0],))
            su.execute(f"ALTER TABLE audit.events ENABLE ALWAYS TRIGGER {ROW_TRIGGER}")
        assert wait_for(lambda: src.problem() is None, 10)
        assert wait_for(lambda: any(e["op"] == "update" for e in chain_events(hot)), 10)
    events = chain_events(hot)
    update = next(e for e in events if e["op"] == "update")
    assert update["pk"] == {"id": ids[0]} and update["old"]["actor"] == "alice" and update["row"]["actor"] == "mallory"
    ddl = [e["row"]["command"] for e in events if e.get("table") == "audit.ddl_log"]
    assert any("DISABLE TRIGGER" in c for c in ddl) and any("ENABLE ALWAYS TRIGGER" in c for c in ddl)


def test_a_refusal_from_the_server_fails_readiness_until_it_is_fixed(audit_db: AuditDb, tmp_path: Path) -> None:
    with tailing(audit_db, tmp_path / "hot", publication="no_such_publication") as src:
        audit_db.insert(1)  # pgoutput looks the publication up when it has a change to send
        assert wait_for(lambda: "read-error" in src._problems, 10)
        assert 'publication "no_such_publication" does not exist' in str(src.problem())
        assert src.metrics.problem.labels(problem="read-error")._value.get() == 1


def test_a_new_wal_timeline_restarts_positions_instead_of_skipping(audit_db: AuditDb, tmp_path: Path) -> None:
    """After a point-in-time restore the WAL's LSNs go back: positions from the old
    timeline would make the source skip new rows.  Simulated by a position file from a
    "later" timeline, ahead of everything this database will write."""
    import orjson

    hot = tmp_path / "hot"
    with tailing(audit_db, hot) as src:
        audit_db.insert(2)
        assert wait_for(lambda: src.rows_written >= 2, 10)
        path = src._position_file()
    doc = orjson.loads(path.read_bytes())
    assert doc["timeline"] == "00000001"
    doc.update(lsn="FF/0", n=0, end_lsn="FF/100", timeline="00000002")
    path.write_bytes(orjson.dumps(doc))
    with tailing(audit_db, hot) as src:
        audit_db.insert(3)
        assert wait_for(lambda: src.rows_written >= 4, 10)  # the reset mark and the 3 rows
    resets = [e for e in chain_events(hot) if e["op"] == "reset"]
    assert len(resets) == 1 and "timeline changed from 00000002 to 00000001" in resets[0]["reason"]
    assert len(logged_ids(hot)) == 5


def test_the_source_needs_only_the_audit_tail_role(audit_db: AuditDb, tmp_path: Path) -> None:
    """audit_tail has REPLICATION and no privilege on the schema or the tables: reading the
    slot, the triggers' state and the primary key must all work with that alone."""
    log = open_log(tmp_path / "hot", "app")
    settings = SourceSettings(dsn=audit_db.inst.dsn(audit_db.name, "audit_tail"), poll_interval=0.05,
                              check_interval=0.2)
    src = PostgresSource(settings, log, registry=CollectorRegistry()).start()
    try:
        audit_db.insert(3)
        assert wait_for(lambda: src.rows_written >= 3, 10)
        assert src.problem() is None
        with contextlib.closing(audit_db.connect()) as su:
            su.execute(f"ALTER TABLE audit.events DISABLE TRIGGER {ROW_TRIGGER}")
        assert wait_for(lambda: "triggers-disabled" in src._problems, 10)
    finally:
        src.stop()
        log.close()
    assert [e["pk"] for e in chain_events(tmp_path / "hot") if e["op"] == "insert"][:1] == [{"id": 1}]


def test_a_hot_log_that_refuses_writes_moves_nothing(audit_db: AuditDb, tmp_path: Path) -> None:
    """The chain refuses (here: the log was closed under the source): the problem is
    reported, the slot does not move, and a new source writes every row once."""
    hot = tmp_path / "hot"
    log = open_log(hot, "app")
    src = PostgresSource(SourceSettings(dsn=audit_db.dsn, poll_interval=0.05, check_interval=0.2), log,
                         registry=CollectorRegistry()).start()
    try:
        audit_db.insert(2)
        assert wait_for(lambda: src.rows_written >= 2, 10)
        log.close()
        audit_db.insert(3)
        assert wait_for(lambda: "chain-write" in src._problems, 10)
        assert "could not write to the hot chain" in str(src.problem())
    finally:
        src.stop()
    with tailing(audit_db, hot) as again:
        assert wait_for(lambda: again.rows_written >= 3, 10)
    ids = logged_ids(hot)
    assert len(ids) == 5 and len(set(ids)) == 5


def test_a_truncate_past_the_trigger_reaches_the_chain(audit_db: AuditDb, tmp_path: Path) -> None:
    from pipeline.pg.install import TRUNCATE_TRIGGER

    hot = tmp_path / "hot"
    with tailing(audit_db, hot) as src:
        audit_db.insert(2)
        assert wait_for(lambda: src.rows_written >= 2, 10)
        with contextlib.closing(audit_db.connect()) as su:
            su.execute(f"ALTER TABLE audit.events DISABLE TRIGGER {TRUNCATE_TRIGGER}")
            su.execute("TRUNCATE audit.events")
        assert wait_for(lambda: any(e["op"] == "truncate" for e in chain_events(hot)), 10)
    truncate = next(e for e in chain_events(hot) if e["op"] == "truncate")
    assert truncate["tables"] == ["audit.events"] and truncate["table"] == "audit.events"


def test_a_dropped_event_trigger_is_reported(audit_db: AuditDb, tmp_path: Path) -> None:
    """DROP EVENT TRIGGER is not recorded by event triggers (they do not fire for their own
    DDL): the source's trigger check is the only layer that sees it, so a missing one counts."""
    evt = audit_db.target.event_trigger
    with tailing(audit_db, tmp_path / "hot") as src:
        audit_db.insert(1)
        assert wait_for(lambda: src.rows_written >= 1, 10)
        assert src.problem() is None
        with contextlib.closing(audit_db.connect()) as su:
            su.execute(f"DROP EVENT TRIGGER {evt}_drop")
        assert wait_for(lambda: "triggers-disabled" in src._problems, 10)
        assert f"event trigger {evt}_drop missing" in str(src.problem())
        assert src.metrics.problem.labels(problem="triggers-disabled")._value.get() == 1
        with contextlib.closing(audit_db.connect()) as su:
            install(su, audit_db.target)  # puts it back
        assert wait_for(lambda: src.problem() is None, 10)


def test_a_database_crash_under_the_source_repeats_nothing(audit_db: AuditDb, tmp_path: Path) -> None:
    """PostgreSQL keeps a slot moved by pg_replication_slot_advance on disk only from the
    next checkpoint on: after a crash the slot is back where it was, and the source must
    skip what it already logged (the WAL still holds the same transactions), not record a
    reset and log every row again."""
    from pipeline.pg.source import _NOT_OURS

    hot = tmp_path / "hot"
    with tailing(audit_db, hot) as src:
        audit_db.insert(100)
        assert wait_for(lambda: src.rows_written >= 100 and src._advanced_xid not in (_NOT_OURS, None), 15)
        with contextlib.closing(audit_db.connect()) as su:
            # the advance is not yet on disk: a crash takes the slot back
            lsn = su.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots").fetchone()[0]
        audit_db.inst.stop("immediate")
        audit_db.inst.start()
        with contextlib.closing(audit_db.connect()) as su:
            after = su.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots").fetchone()[0]
        assert after != lsn  # the crash did take the slot back (else this test proves nothing)
        audit_db.insert(30)
        assert wait_for(lambda: src.rows_written >= 130, 30)
        assert src.problem() is None
    assert [e for e in chain_events(hot) if e["op"] != "insert"] == []
    ids = logged_ids(hot)
    assert len(ids) == 130 and len(set(ids)) == 130


def test_a_slot_gone_back_to_another_history_is_a_reset(audit_db: AuditDb, tmp_path: Path) -> None:
    """The same crash, but the WAL no longer holds the transaction the source last moved the
    slot past (here: its xid is made wrong): another history (a database restored to an
    earlier point), so the positions cannot be trusted: a reset is recorded and everything
    is read again (a repeat is reported by pg verify; a skip could not be)."""
    from pipeline.pg.source import _NOT_OURS

    hot = tmp_path / "hot"
    with tailing(audit_db, hot) as src:
        audit_db.insert(10)
        assert wait_for(lambda: src.rows_written >= 10 and src._advanced_xid not in (_NOT_OURS, None), 15)
        src._advanced_xid = int(src._advanced_xid or 0) + 1000
        audit_db.inst.stop("immediate")
        audit_db.inst.start()
        audit_db.insert(1)
        assert wait_for(lambda: any(e["op"] == "reset" for e in chain_events(hot)), 30)
    resets = [e for e in chain_events(hot) if e["op"] == "reset"]
    assert len(resets) == 1 and "went back" in resets[0]["reason"]
    with contextlib.closing(audit_db.connect()) as su:  # (a crash makes the sequence skip ahead)
        table = {r[0] for r in su.execute("SELECT id FROM audit.events")}
    assert len(table) == 11 and set(logged_ids(hot)) == table


def _poll_through(src: PostgresSource, times: int = 3) -> None:
    """``poll_once`` a few times, through the error of a stream someone terminated."""
    import psycopg

    for _ in range(times):
        with contextlib.suppress(psycopg.OperationalError):
            src.poll_once()


def _ghost_past_the_slot(db: AuditDb) -> None:
    """A row inserted behind the source's back: its stream ended and the slot moved past it."""
    with contextlib.closing(db.connect()) as su:
        su.execute("INSERT INTO audit.events (actor, action) VALUES ('ghost', 'x')")
        on_held_slot(su, db.target.slot, "SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())")


def _inserts_gap_insert(hot: Path, last: int) -> None:
    """The chain of the slot-moved tests: the two rows read, the gap, the row after it."""
    ops = [(e["op"], e.get("pk")) for e in chain_events(hot)]
    assert ops == [("insert", {"id": 1}), ("insert", {"id": 2}), ("gap", None), ("insert", {"id": last})]


@pytest.mark.usefixtures("patient_reads")
def test_a_slot_moved_by_someone_else_between_checks_is_a_gap(audit_db: AuditDb, tmp_path: Path) -> None:
    """Someone ends the source's stream and moves the slot past committed rows while the
    source runs (its trigger and slot check is minutes away): the next read finds the slot
    where the source did not put it and records the gap, before the next rows."""
    hot = tmp_path / "hot"
    log = open_log(hot, "app")
    src = stepped(audit_db, log, check_interval=3600.0)
    try:
        audit_db.insert(2)
        src.poll_once()
        assert src.rows_written == 2
        _ghost_past_the_slot(audit_db)
        last = audit_db.insert(1)
        _poll_through(src)
    finally:
        src._close()
        log.close()
    _inserts_gap_insert(hot, last[0])
    assert src.metrics.gaps._value.get() == 1


def test_a_slot_held_by_the_stream_cannot_be_moved(audit_db: AuditDb, tmp_path: Path) -> None:
    """While the source streams, PostgreSQL refuses to move its slot: a move needs the
    stream ended first (the test above)."""
    import psycopg

    hot = tmp_path / "hot"
    with tailing(audit_db, hot) as src:
        audit_db.insert(1)
        assert wait_for(lambda: src.rows_written >= 1, 10)
        with contextlib.closing(audit_db.connect()) as su:
            su.execute("INSERT INTO audit.events (actor, action) VALUES ('ghost', 'x')")
            with pytest.raises(psycopg.errors.ObjectInUse, match="is active for PID"):
                su.execute("SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())", (audit_db.target.slot,))
        assert wait_for(lambda: src.rows_written >= 2, 10)
    assert [e["op"] for e in chain_events(hot)] == ["insert", "insert"]


@pytest.mark.usefixtures("patient_reads")
def test_a_slot_moved_while_a_read_is_written_is_a_gap(audit_db: AuditDb, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream is ended and the slot moved past a row while the source writes what it
    read: the confirmation cannot reach the server, the next read finds the slot where the
    source did not put it, and the gap is recorded after those rows."""
    hot = tmp_path / "hot"
    log = open_log(hot, "app")
    src = stepped(audit_db, log, check_interval=3600.0)
    write = src._write

    moved: list[bool] = []

    def write_then_move(items: list[Any]) -> None:
        write(items)
        if moved:
            return
        moved.append(True)
        _ghost_past_the_slot(audit_db)

    try:
        audit_db.insert(2)
        monkeypatch.setattr(src, "_write", write_then_move)
        _poll_through(src, 1)
        monkeypatch.setattr(src, "_write", write)
        last = audit_db.insert(1)
        _poll_through(src)
    finally:
        src._close()
        log.close()
    _inserts_gap_insert(hot, last[0])


def test_a_slot_behind_retention_is_reported_then_lost_and_recreated_with_a_gap(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    """max_slot_wal_keep_size: a slot further behind is "unreserved" (its WAL goes at the
    next checkpoint), then PostgreSQL invalidates it ("lost").  The source reports both
    (metric, log, readiness) instead of waiting quietly; pg check names them; pg install
    recreates the lost slot and the source records the gap; pg verify names the rows that
    never reached the chain."""
    import json
    import logging

    from pipeline.cli import main
    from pipeline.pg.reconcile import connect
    from tests.pg.server import running

    # 1 MB WAL segments; no checkpoint unless asked for (max_wal_size, checkpoint_timeout)
    settings = {"max_slot_wal_keep_size": "'1MB'", "max_wal_size": "'1GB'", "checkpoint_timeout": "'1h'"}
    caplog.set_level(logging.INFO, logger="pipeline.pg.source")
    with running(extra=settings, wal_segsize_mb=1) as inst:
        name = inst.create_database()
        db = AuditDb(inst, name, Target())
        with contextlib.closing(connect(db.dsn)) as su:
            install(su, db.target)
        hot = tmp_path / "hot"
        with tailing(db, hot) as src:
            db.insert(3)
            assert wait_for(lambda: src.rows_written >= 3, 10)
        lost = db.insert(2)  # committed while the source is stopped
        with contextlib.closing(connect(db.dsn)) as su:
            su.execute("CREATE TABLE filler (pad text)")

            def wal_status() -> str:
                return str(su.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s",
                                      (db.target.slot,)).fetchone()[0])

            su.execute("INSERT INTO filler SELECT repeat('x', 500) FROM generate_series(1, 8000)")  # ~4 MB
            assert wal_status() == "unreserved"
            assert main(["pg", "check", "--dsn", db.dsn]) == 1
            assert "slot-behind-retention: slot audit_events_chain is past max_slot_wal_keep_size" in \
                capsys.readouterr().out
            # the source finds it so when it starts (here: its steps by hand, no thread)
            log = open_log(tmp_path / "hot-unreserved", "app")
            behind = PostgresSource(SourceSettings(dsn=db.dsn), log, registry=CollectorRegistry())
            try:
                behind._connection()
                assert "past max_slot_wal_keep_size (wal_status unreserved)" in str(behind.problem())
                assert behind.metrics.problem.labels(problem="behind-retention")._value.get() == 1
                assert any("wal_status unreserved" in r.getMessage() and r.levelno == logging.ERROR
                           for r in caplog.records)
            finally:
                behind._close()
                log.close()
            su.execute("CHECKPOINT")  # removes the WAL: the slot is invalidated
            assert wal_status() == "lost"
        assert main(["pg", "check", "--dsn", db.dsn]) == 1
        assert "slot-lost: slot audit_events_chain was invalidated" in capsys.readouterr().out
        with tailing(db, hot, check_interval=0.2) as src:
            assert wait_for(lambda: "slot-lost" in src._problems, 10)
            assert "WAL it needed is gone" in str(src.problem())  # readiness
            assert src.metrics.problem.labels(problem="slot-lost")._value.get() == 1
            assert any("was invalidated" in r.getMessage() for r in caplog.records)
            with contextlib.closing(connect(db.dsn)) as su:
                install(su, db.target)  # drops the lost slot and creates it anew
            assert wait_for(lambda: src.problem() is None, 15), src.problem()
            assert src.metrics.problem.labels(problem="slot-lost")._value.get() == 0
            later = db.insert(1)
            assert wait_for(lambda: src.rows_written >= 2, 10)  # the gap mark and the new row
        gaps = [e for e in chain_events(hot) if e["op"] == "gap"]
        assert len(gaps) == 1 and src.metrics.gaps._value.get() == 1
        assert main(["pg", "verify", "--dsn", db.dsn, "--hot", str(hot), "--json", "--wait", "10s"]) == 1
        doc = json.loads(capsys.readouterr().out)
        events = {(f["code"], f["key"]) for f in doc["findings"] if f["stream"] == "audit.events"}
        # (the DDL of the second pg install, committed before its new slot, is not logged either)
        assert events == {("gap-logged", None)} | {("row-not-logged", str(i)) for i in lost}
        assert doc["tables"]["audit.events"]["logged"] == 4 and later[0] not in lost


def test_a_replaced_trigger_function_is_reported(audit_db: AuditDb, tmp_path: Path) -> None:
    """The trigger stays enabled ALWAYS, but its function now lets UPDATE through: the
    source reports it like a disabled trigger."""
    with tailing(audit_db, tmp_path / "hot") as src:
        audit_db.insert(1)
        assert wait_for(lambda: src.rows_written >= 1, 10)
        assert src.problem() is None
        with contextlib.closing(audit_db.connect()) as su:
            su.execute("CREATE OR REPLACE FUNCTION audit.append_only_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$BEGIN RETURN NEW; END$$")
        assert wait_for(lambda: "triggers-disabled" in src._problems, 10)
        assert f"audit.events.{ROW_TRIGGER} altered (function audit.append_only_refuse was replaced" \
            in str(src.problem())
        with contextlib.closing(audit_db.connect()) as su:
            install(su, audit_db.target)
        assert wait_for(lambda: src.problem() is None, 10)


@pytest.mark.usefixtures("patient_reads")
def test_an_advance_finishing_after_a_kill_is_not_a_gap(audit_db: AuditDb, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL right after the position file was written: the killed process's last
    confirmation may still reach the slot after the next source has looked at it.  The
    slot then moves to the end of what the chain holds: nothing was skipped, so no gap may
    be recorded (pg verify would report one)."""
    hot = tmp_path / "hot"
    log = open_log(hot, "app")
    first = stepped(audit_db, log)

    class Killed(Exception):
        pass

    def killed(lsn: int) -> None:
        raise Killed

    monkeypatch.setattr(first, "_confirm", killed)  # the process dies before its confirmation leaves
    audit_db.insert(3)
    with pytest.raises(Killed):
        first.poll_once()
    end = first._end_lsn
    assert end is not None
    first._close()
    second = stepped(audit_db, log)
    try:
        second._connection()  # the slot is still behind the position file's end
        from pipeline.pg.decode import format_lsn

        with contextlib.closing(audit_db.connect()) as su:  # the killed backend's advance lands now
            su.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (audit_db.target.slot, format_lsn(end)))
        audit_db.insert(1)
        second.poll_once()
    finally:
        second._close()
        log.close()
    assert [e["op"] for e in chain_events(hot)] == ["insert"] * 4
    assert second.metrics.gaps._value.get() == 0


def test_a_consumer_holding_the_slot_is_reported_and_its_moves_recorded(
        audit_db: AuditDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Another process streams from the source's slot (pg_recvlogical) when the source
    starts: for a moment that is only retried (pg verify peeks the slot, a killed sidecar's
    stream is ending), past the grace it is a read-error; what the intruder consumed and
    confirmed is a gap."""
    import logging
    import subprocess

    from tests.pg.server import BIN

    monkeypatch.setattr("pipeline.pg.source.SLOT_BUSY_GRACE", 3.0)
    caplog.set_level(logging.INFO, logger="pipeline.pg.source")
    hot = tmp_path / "hot"
    with tailing(audit_db, hot, check_interval=3600.0) as src:
        audit_db.insert(1)
        assert wait_for(lambda: src.rows_written >= 1, 10)
    t = audit_db.target
    intruder = subprocess.Popen([str(BIN / "pg_recvlogical"), "-d", audit_db.dsn, "--slot", t.slot, "--start",
                                 "-o", "proto_version=1", "-o", f"publication_names={t.publication}",
                                 "-F", "0", "-s", "1", "-f", str(tmp_path / "intruder.out")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with contextlib.closing(audit_db.connect()) as su:
            assert wait_for(lambda: su.execute("SELECT active_pid IS NOT NULL FROM pg_replication_slots "
                                               "WHERE slot_name = %s", (t.slot,)).fetchone()[0], 10)
        with tailing(audit_db, hot, check_interval=3600.0) as src:
            skipped = audit_db.insert(2)  # streamed to the intruder
            assert wait_for(lambda: any("in use by another process" in r.getMessage() for r in caplog.records), 10)
            busy_since = src._busy_since
            if busy_since is not None and time.monotonic() - busy_since < 2.0:
                assert src.problem() is None  # within the grace: retried, not reported
            assert wait_for(lambda: "read-error" in src._problems, 15)
            assert "is active for PID" in str(src.problem())
            with contextlib.closing(audit_db.connect()) as su:  # it confirms what it received
                assert wait_for(lambda: su.execute("SELECT confirmed_flush_lsn >= pg_current_wal_lsn() FROM "
                                                   "pg_replication_slots WHERE slot_name = %s",
                                                   (t.slot,)).fetchone()[0], 15)
            intruder.terminate()
            intruder.wait(10)
            assert wait_for(lambda: src.problem() is None, 15), src.problem()
            later = audit_db.insert(1)
            assert wait_for(lambda: src.rows_written >= 2, 10)  # the gap mark and the new row
    finally:
        if intruder.poll() is None:
            intruder.terminate()
            intruder.wait(10)
    events = chain_events(hot)
    assert [e["op"] for e in events] == ["insert", "gap", "insert"]
    assert events[-1]["pk"] == {"id": later[0]} and set(logged_ids(hot)).isdisjoint(skipped)


def test_a_position_file_that_cannot_be_written_is_reported_and_the_slot_kept(
        audit_db: AuditDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The position file is written before every confirmation: when it cannot be (a full
    disk), the slot must not move, and readiness must say why; once it can, the problem
    clears and every row is in the chain once."""
    import errno

    from pipeline.format import files

    hot = tmp_path / "hot"
    real = files.atomic_write

    def full(path: Any, data: bytes, *, mode: int = 0o666) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with tailing(audit_db, hot) as src, contextlib.closing(audit_db.connect()) as su:
        audit_db.insert(2)
        assert wait_for(lambda: src.rows_written >= 2, 10)
        monkeypatch.setattr("pipeline.pg.source.atomic_write", full)
        before = su.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots").fetchone()[0]
        audit_db.insert(3)
        assert wait_for(lambda: "position-file" in src._problems, 10)
        assert "No space left" in str(src.problem())
        assert src.metrics.problem.labels(problem="position-file")._value.get() == 1
        time.sleep(0.5)
        assert su.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots").fetchone()[0] == before
        monkeypatch.setattr("pipeline.pg.source.atomic_write", real)
        assert wait_for(lambda: src.problem() is None, 15), src.problem()
        assert wait_for(lambda: su.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots")
                        .fetchone()[0] != before, 10)
    ids = logged_ids(hot)
    assert len(ids) == 5 and len(set(ids)) == 5
