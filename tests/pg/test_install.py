"""pg install / pg check against real PostgreSQL 15: the three layers, and their evidence."""

from __future__ import annotations

import contextlib
import json

import psycopg
import pytest

from pipeline.cli import main
from pipeline.pg.install import ROW_TRIGGER, Target, install
from tests.pg.conftest import AuditDb
from tests.pg.server import PgInstance, running


def _writer_login(db: AuditDb) -> psycopg.Connection[tuple[object, ...]]:
    with contextlib.closing(db.connect()) as c:
        c.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app') THEN "
                  "CREATE ROLE app LOGIN IN ROLE audit_writer; END IF; END $$")
    return psycopg.connect(db.inst.dsn(db.name, "app"), autocommit=True)


def test_writer_role_inserts_and_cannot_update_delete_or_truncate(audit_db: AuditDb) -> None:
    with _writer_login(audit_db) as app:
        app.execute("INSERT INTO audit.events (actor, action) VALUES ('alice', 'login')")
        for stmt in ("UPDATE audit.events SET actor = 'mallory'", "DELETE FROM audit.events",
                     "TRUNCATE audit.events", "SELECT * FROM audit.events",
                     "INSERT INTO audit.events (actor, action) VALUES ('a', 'b') RETURNING id"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(stmt)
    with contextlib.closing(audit_db.connect()) as su:
        assert su.execute("SELECT actor FROM audit.events").fetchall() == [("alice",)]


def test_triggers_refuse_superusers_also_under_session_replication_role_replica(audit_db: AuditDb) -> None:
    audit_db.insert(2)
    with contextlib.closing(audit_db.connect()) as su:
        su.execute("COMMENT ON TABLE audit.events IS 'audit rows'")  # a DDL: one ddl_log row
        assert su.execute("SELECT count(*) FROM audit.ddl_log").fetchone() == (1,)
        for role in ("origin", "replica", "local"):
            su.execute(f"SET session_replication_role = {role}")
            for stmt in ("UPDATE audit.events SET actor = 'mallory'", "DELETE FROM audit.events WHERE id = 1",
                         "TRUNCATE audit.events", "UPDATE audit.ddl_log SET command = 'x'"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                    su.execute(stmt)
        su.execute("SET session_replication_role = origin")
        assert su.execute("SELECT count(*) FROM audit.events WHERE actor = 'alice'").fetchone() == (2,)


def test_install_is_idempotent_and_check_is_clean(audit_db: AuditDb, capsys: pytest.CaptureFixture[str]) -> None:
    audit_db.insert(3)
    assert main(["pg", "install", "--dsn", audit_db.dsn]) == 0  # a second run over the first
    out = capsys.readouterr().out
    assert "CREATE TABLE IF NOT EXISTS audit.events" in out and "ENABLE ALWAYS TRIGGER" in out
    assert main(["pg", "check", "--dsn", audit_db.dsn, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["totals"]["errors"] == 0
    codes = {f["code"] for f in doc["findings"]}
    assert codes == {"can-bypass"}  # the superuser and the REPLICATION roles, as warnings
    bypass = [f["message"] for f in doc["findings"]]
    assert any(m.startswith("postgres (superuser") for m in bypass)
    with contextlib.closing(audit_db.connect()) as su:
        assert su.execute("SELECT count(*) FROM audit.events").fetchone() == (3,)  # rows kept


def test_disabling_a_trigger_leaves_evidence_and_check_fails(audit_db: AuditDb,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    with contextlib.closing(audit_db.connect()) as su:
        su.execute(f"ALTER TABLE audit.events DISABLE TRIGGER {ROW_TRIGGER}")
        rows = su.execute("SELECT command_tag, object_identity, command FROM audit.ddl_log "
                          "WHERE command LIKE '%DISABLE TRIGGER%'").fetchall()
        assert rows and rows[-1][0] == "ALTER TABLE" and rows[-1][1] == "audit.events"
        su.execute("GRANT UPDATE ON audit.events TO PUBLIC")
        su.execute("DROP TRIGGER append_only_no_truncate ON audit.ddl_log")  # sql_drop: recorded too
        assert su.execute("SELECT object_type, object_identity FROM audit.ddl_log WHERE command_tag = "
                          "'DROP TRIGGER'").fetchall() == [("trigger", "append_only_no_truncate on audit.ddl_log")]
    assert main(["pg", "check", "--dsn", audit_db.dsn]) == 1
    out = capsys.readouterr().out
    assert f"trigger-disabled: trigger {ROW_TRIGGER} on audit.events is DISABLED" in out
    assert "public-privilege: PUBLIC holds UPDATE on audit.events" in out
    assert "trigger-missing: trigger append_only_no_truncate on audit.ddl_log (refuses TRUNCATE) is missing" in out


def test_print_sql_changes_nothing_and_names_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pg", "install", "--dsn", "host=192.0.2.1 connect_timeout=1", "--print-sql",
                 "--schema", "sec", "--table", "logins"]) == 0
    out = capsys.readouterr().out
    assert "CREATE TABLE IF NOT EXISTS sec.logins" in out and "pg_create_logical_replication_slot" in out
    assert main(["pg", "install", "--dsn", "x", "--print-sql", "--table", "Events; DROP"]) == 2
    assert "--table 'Events; DROP'" in capsys.readouterr().err


def test_wal_level_replica_is_named_by_install_check_and_the_source(tmp_path: object,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with running(wal_level="replica") as inst:
        name = inst.create_database()
        dsn = inst.dsn(name)
        assert main(["pg", "install", "--dsn", dsn]) == 2
        err = capsys.readouterr().err
        assert "wal_level is 'replica'" in err and "wal_level = logical" in err
        assert main(["pg", "check", "--dsn", dsn]) == 1
        assert "wal-level: wal_level is 'replica'" in capsys.readouterr().out
        from pathlib import Path

        from pipeline import open_log
        from pipeline.pg.source import PostgresSource, SourceSettings
        from tests.pg.server import wait_for

        log = open_log(Path(str(tmp_path)) / "hot", "app")
        src = PostgresSource(SourceSettings(dsn=dsn), log).start()
        try:
            assert wait_for(lambda: src.problem() is not None, 10)
            assert "wal_level is 'replica'" in str(src.problem())
        finally:
            src.stop()
            log.close()


def test_install_needs_a_superuser(pg: PgInstance, capsys: pytest.CaptureFixture[str]) -> None:
    name = pg.create_database()
    try:
        with contextlib.closing(psycopg.connect(pg.dsn(name), autocommit=True)) as c:
            c.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plain') THEN "
                      "CREATE ROLE plain LOGIN; END IF; END $$")
        assert main(["pg", "install", "--dsn", pg.dsn(name, "plain")]) == 2
        assert "needs a superuser" in capsys.readouterr().err
        with contextlib.closing(psycopg.connect(pg.dsn(name), autocommit=True)) as c:
            install(c, Target("audit", "events"))
    finally:
        pg.drop_database(name)


def test_could_not_run_is_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.netutil import free_port

    assert main(["pg", "check", "--dsn", f"host=127.0.0.1 port={free_port()} dbname=x connect_timeout=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pipeline: PostgreSQL: connection") and "\n" not in err


def test_without_psycopg_the_cli_names_the_extra() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from pipeline.cli import main\n"
            "sys.exit(main(['pg', 'check', '--dsn', 'host=127.0.0.1']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 2
    assert "pip install 'worm-pipeline[postgres]'" in res.stderr


def test_check_runs_as_a_role_without_privileges(audit_db: AuditDb, capsys: pytest.CaptureFixture[str]) -> None:
    with contextlib.closing(audit_db.connect()) as su:
        su.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'checker') THEN "
                   "CREATE ROLE checker LOGIN; END IF; END $$")
    assert main(["pg", "check", "--dsn", audit_db.inst.dsn(audit_db.name, "checker")]) == 0
    out = capsys.readouterr().out
    assert "trigger append_only_no_update_delete: enabled ALWAYS" in out and "OK: audit.events" in out


def test_check_names_who_could_bypass_owner_members_and_bypassrls(audit_db: AuditDb,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A non-superuser owner, a login that is a member of it (it can act as the owner and
    disable the triggers) and a BYPASSRLS role are each named (roles are cluster-wide: names
    of this test only)."""
    with contextlib.closing(audit_db.connect()) as su:
        for stmt in ("CREATE ROLE bp_owner NOLOGIN", "CREATE ROLE bp_dba LOGIN IN ROLE bp_owner",
                     "CREATE ROLE bp_rls LOGIN BYPASSRLS"):
            name = stmt.split()[2]
            su.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN "
                       f"{stmt}; END IF; END $$")
        su.execute("ALTER TABLE audit.events OWNER TO bp_owner")
        su.execute("GRANT USAGE ON SCHEMA audit TO bp_owner")  # an owner that can reach its table
    try:
        assert main(["pg", "check", "--dsn", audit_db.dsn, "--json"]) == 0  # warnings only
        doc = json.loads(capsys.readouterr().out)
        bypass = [f["message"] for f in doc["findings"] if f["code"] == "can-bypass"]
        assert any(m.startswith("bp_owner (owner of audit.events)") for m in bypass), bypass
        assert any(m.startswith("bp_dba (member of bp_owner, the owner of audit.events)") for m in bypass), bypass
        assert any(m.startswith("bp_rls (BYPASSRLS)") for m in bypass), bypass
        assert any(m.startswith("audit_tail (REPLICATION)") for m in bypass), bypass
        facts = [f["fact"] for f in doc["facts"] if f["topic"] == "bypass"]
        assert "bp_owner: owner of audit.events (can disable its triggers)" in facts
        with psycopg.connect(audit_db.inst.dsn(audit_db.name, "bp_dba"), autocommit=True) as dba:
            dba.execute(f"ALTER TABLE audit.events DISABLE TRIGGER {ROW_TRIGGER}")  # what it is named for
        assert main(["pg", "check", "--dsn", audit_db.dsn]) == 1
        assert "trigger-disabled" in capsys.readouterr().out
    finally:
        with contextlib.closing(audit_db.connect()) as su:
            su.execute("ALTER TABLE audit.events OWNER TO postgres")
            su.execute("DROP ROLE bp_dba")
            su.execute("DROP ROLE bp_rls")
            su.execute("DROP OWNED BY bp_owner")
            su.execute("DROP ROLE bp_owner")


def test_ddl_is_recorded_under_session_replication_role_replica(audit_db: AuditDb,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The event triggers are enabled ALWAYS too: a superuser who switches ordinary
    triggers off for the session still leaves the DISABLE TRIGGER in the DDL log."""
    with contextlib.closing(audit_db.connect()) as su:
        su.execute("SET session_replication_role = replica")
        su.execute(f"ALTER TABLE audit.events DISABLE TRIGGER {ROW_TRIGGER}")
        rows = su.execute("SELECT command FROM audit.ddl_log WHERE command LIKE '%DISABLE TRIGGER%'").fetchall()
        assert len(rows) == 1
        su.execute("SET session_replication_role = origin")
        su.execute(f"ALTER TABLE audit.events ENABLE ALWAYS TRIGGER {ROW_TRIGGER}")
        su.execute(f"ALTER EVENT TRIGGER {audit_db.target.event_trigger} ENABLE")  # no longer ALWAYS
    assert main(["pg", "check", "--dsn", audit_db.dsn]) == 1
    out = capsys.readouterr().out
    assert f"event-trigger-disabled: event trigger {audit_db.target.event_trigger} is enabled (origin and local " \
           "only), not enabled ALWAYS" in out


def test_install_again_repairs_what_was_loosened(audit_db: AuditDb, capsys: pytest.CaptureFixture[str]) -> None:
    """Idempotent means re-applying the same state: privileges given away, a trigger
    switched off or back to ordinary firing are put back by a second run; the rows stay."""
    from pipeline.pg.install import TRUNCATE_TRIGGER

    audit_db.insert(2)
    with contextlib.closing(audit_db.connect()) as su:
        su.execute("GRANT UPDATE, DELETE ON audit.events TO audit_writer")
        su.execute("GRANT SELECT ON audit.events TO PUBLIC")
        su.execute(f"ALTER TABLE audit.events DISABLE TRIGGER {ROW_TRIGGER}")
        su.execute(f"ALTER TABLE audit.events ENABLE TRIGGER {TRUNCATE_TRIGGER}")  # origin only
    assert main(["pg", "check", "--dsn", audit_db.dsn]) == 1
    out = capsys.readouterr().out
    for code in ("writer-privilege", "public-privilege", "trigger-disabled"):
        assert f"INVALID: {code}:" in out
    assert main(["pg", "install", "--dsn", audit_db.dsn]) == 0
    capsys.readouterr()
    assert main(["pg", "check", "--dsn", audit_db.dsn, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    facts = {(f["topic"], f["fact"]) for f in doc["facts"]}
    assert ("audit.events", "audit_writer: INSERT") in facts and ("audit.events", "audit_reader: SELECT") in facts
    assert ("audit.events", f"trigger {TRUNCATE_TRIGGER}: enabled ALWAYS") in facts
    assert not any(f["fact"].startswith("PUBLIC") for f in doc["facts"])
    with contextlib.closing(audit_db.connect()) as su:
        assert su.execute("SELECT count(*) FROM audit.events").fetchone() == (2,)


def test_a_neutered_trigger_or_ddl_record_fails_check(audit_db: AuditDb, capsys: pytest.CaptureFixture[str]) -> None:
    """Triggers that stay "enabled ALWAYS" but no longer refuse (their function replaced, a
    WHEN condition), and an event trigger recreated with a tag filter, are not the hardening
    install made: pg check fails on each, and a second install restores it."""
    ids = audit_db.insert(1)
    with contextlib.closing(audit_db.connect()) as su:
        su.execute("CREATE OR REPLACE FUNCTION audit.append_only_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$BEGIN RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END; END$$")
        su.execute("UPDATE audit.events SET actor = 'mallory' WHERE id = %s", (ids[0],))  # now let through
        assert su.execute("SELECT count(*) FROM audit.ddl_log WHERE command_tag = 'CREATE FUNCTION'").fetchone()[0]
    assert main(["pg", "check", "--dsn", audit_db.dsn]) == 1
    out = capsys.readouterr().out
    assert f"trigger-altered: trigger {ROW_TRIGGER} on audit.events may not refuse what it should" in out
    assert "function audit.append_only_refuse was replaced" in out
    assert "trigger-disabled" not in out  # still "enabled ALWAYS": that alone said nothing
    assert main(["pg", "install", "--dsn", audit_db.dsn]) == 0
    capsys.readouterr()
    assert main(["pg", "check", "--dsn", audit_db.dsn]) == 0
    capsys.readouterr()
    evt = audit_db.target.event_trigger
    with contextlib.closing(audit_db.connect()) as su:
        su.execute(f"CREATE OR REPLACE TRIGGER {ROW_TRIGGER} BEFORE UPDATE OR DELETE ON audit.events FOR EACH ROW "
                   "WHEN (false) EXECUTE FUNCTION audit.append_only_refuse()")
        su.execute(f"ALTER TABLE audit.events ENABLE ALWAYS TRIGGER {ROW_TRIGGER}")
        su.execute(f"DROP EVENT TRIGGER {evt}")
        su.execute(f"CREATE EVENT TRIGGER {evt} ON ddl_command_end WHEN TAG IN ('CREATE INDEX') "
                   "EXECUTE FUNCTION audit.record_ddl()")
        su.execute(f"ALTER EVENT TRIGGER {evt} ENABLE ALWAYS")
    assert main(["pg", "check", "--dsn", audit_db.dsn]) == 1
    out = capsys.readouterr().out
    assert "has a WHEN condition" in out
    assert f"event-trigger-altered: event trigger {evt} no longer records every DDL command on schema audit: " \
           "fires only for some command tags" in out
