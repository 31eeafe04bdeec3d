"""pg verify: the table against the chain (hot, cold) and the primary against a replica that
another team controls; a superuser who disables the trigger and edits a row is named."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main
from pipeline.pg.install import ROW_TRIGGER
from tests.pg.conftest import AuditDb, Pair
from tests.pg.server import wait_for
from tests.pg.test_source import tailing


def _verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["pg", "verify", *args, "--json", "--wait", "20s"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def _tamper(db: AuditDb, row_id: int) -> None:
    with contextlib.closing(db.connect()) as su:
        su.execute(f"ALTER TABLE audit.events DISABLE TRIGGER {ROW_TRIGGER}")
        su.execute("UPDATE audit.events SET actor = 'mallory', detail = '{\"n\": 0}' WHERE id = %s", (row_id,))
        su.execute("DELETE FROM audit.events WHERE id = %s", (row_id + 1,))
        su.execute(f"ALTER TABLE audit.events ENABLE ALWAYS TRIGGER {ROW_TRIGGER}")


def test_clean_table_verifies_and_a_superuser_edit_is_named(audit_db: AuditDb, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    hot = tmp_path / "hot"
    with tailing(audit_db, hot) as src:
        ids = audit_db.insert(20)
        assert wait_for(lambda: src.rows_written >= 20, 10)
        with contextlib.closing(audit_db.connect()) as su:  # an auditor: SELECT through audit_reader only
            su.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'verifier') THEN "
                       "CREATE ROLE verifier LOGIN; END IF; END $$")
            su.execute("GRANT audit_reader TO verifier")
        code, doc = _verify(capsys, "--dsn", audit_db.inst.dsn(audit_db.name, "verifier"), "--hot", str(hot))
        assert code == 0, doc
        assert doc["schema"] == "worm-pipeline/pg-verify/v1" and doc["ok"] is True and doc["findings"] == []
        assert doc["tables"]["audit.events"]["rows"] == 20 and doc["tables"]["audit.events"]["logged"] == 20
        _tamper(audit_db, ids[3])
        code, doc = _verify(capsys, "--dsn", audit_db.dsn, "--hot", str(hot))
    assert code == 1
    by_code: dict[str, list[dict[str, Any]]] = {}
    for f in doc["findings"]:
        by_code.setdefault(f["code"], []).append(f)
    changed = by_code["row-changed"]
    assert [f["key"] for f in changed] == [str(ids[3])]
    assert changed[0]["stream"] == "audit.events" and changed[0]["severity"] == "error"
    assert changed[0]["changes"] == {"actor": ["alice", "mallory"], "detail": [{"n": 4, "ok": True}, {"n": 0}]}
    assert [f["key"] for f in by_code["row-deleted"]] == [str(ids[4])]
    # the source also carried the UPDATE and DELETE themselves into the chain
    logged_changes = {(f["key"], f["message"].split(" committed")[0]) for f in by_code["change-logged"]}
    assert (str(ids[3]), "the chain recorded an UPDATE") in logged_changes
    assert (str(ids[4]), "the chain recorded an DELETE") in logged_changes
    # the same finding keys as verify-tier's report
    assert set(changed[0]) >= {"code", "severity", "stream", "segment", "key", "seq", "message"}


def test_rows_the_chain_lacks_are_named(audit_db: AuditDb, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hot = tmp_path / "hot"
    with tailing(audit_db, hot) as src:
        audit_db.insert(3)
        assert wait_for(lambda: src.rows_written >= 3, 10)
    with contextlib.closing(audit_db.connect()) as su:
        # rows inserted behind the source's back: the slot is moved past them by hand
        su.execute("INSERT INTO audit.events (actor, action) VALUES ('ghost', 'x') RETURNING id")
        lsn = su.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
        su.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (audit_db.target.slot, lsn))
        ghost = su.execute("SELECT id FROM audit.events WHERE actor = 'ghost'").fetchone()[0]
    code, doc = _verify(capsys, "--dsn", audit_db.dsn, "--hot", str(hot))
    assert code == 1
    assert [(f["code"], f["key"]) for f in doc["findings"]] == [("row-not-logged", str(ghost))]


def test_source_behind_is_could_not_run(audit_db: AuditDb, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hot = tmp_path / "hot"
    with tailing(audit_db, hot) as src:
        audit_db.insert(1)
        assert wait_for(lambda: src.rows_written >= 1, 10)
    audit_db.insert(1)  # no source running: the chain cannot hold it yet
    assert main(["pg", "verify", "--dsn", audit_db.dsn, "--hot", str(hot), "--wait", "1s"]) == 2
    assert "behind the snapshot's WAL position" in capsys.readouterr().err


def test_replica_comparison_names_the_edited_row(pg_pair: Pair, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    primary, replica = pg_pair.primary, pg_pair.replica
    ids = primary.insert(10)
    assert pg_pair.wait_replicated()
    code, doc = _verify(capsys, "--dsn", primary.dsn, "--replica", replica.dsn, "--replica-only")
    assert code == 0 and doc["findings"] == [] and doc["mode"] == "replica"
    assert main(["pg", "check", "--dsn", replica.dsn, "--no-slot"]) == 0  # the replica is hardened too
    capsys.readouterr()
    _tamper(primary, ids[2])
    later = primary.insert(2)  # replication stops at the refused UPDATE: these never arrive
    code, doc = _verify(capsys, "--dsn", primary.dsn, "--replica", replica.dsn, "--replica-only")
    assert code == 1
    found = {(f["code"], f["key"]): f for f in doc["findings"]}
    differs = found[("replica-row-differs", str(ids[2]))]
    # [replica, primary]: the replica's ALWAYS trigger refused the replicated UPDATE
    assert differs["changes"]["actor"] == ["alice", "mallory"]
    assert ("replica-row-extra", str(ids[3])) in found  # deleted on the primary, kept on the replica
    assert all(found[("replica-lagging", str(i))]["severity"] == "warning" for i in later)
    assert doc["tables"]["audit.events (replica)"]["differ"] == 1


def test_rows_in_evicted_segments_are_read_from_cold_storage(audit_db: AuditDb, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    hot, cold = tmp_path / "hot", tmp_path / "cold"
    cold.mkdir()
    with tailing(audit_db, hot) as src:
        ids = audit_db.insert(5)
        assert wait_for(lambda: src.rows_written >= 5, 10)
    # closing the log sealed its segment; ship it and evict the hot copy
    for _ in range(3):
        assert main(["ship", "--hot", str(hot), "--cold", f"file://{cold}", "--once", "--hot-retention", "0",
                     "--allow-unlocked"]) == 0
    capsys.readouterr()
    with tailing(audit_db, hot) as src:
        audit_db.insert(2)
        assert wait_for(lambda: src.rows_written >= 2, 10)
        from pipeline.hot.segment import list_segments

        assert "seg-00000000000000000000.jsonl" not in [p.name for p in list_segments(hot / "app")]
        code, doc = _verify(capsys, "--dsn", audit_db.dsn, "--hot", str(hot))
        assert code == 1 and {f["code"] for f in doc["findings"]} == {"row-not-logged"}  # hot alone lacks them
        assert sorted(int(f["key"]) for f in doc["findings"]) == ids
        code, doc = _verify(capsys, "--dsn", audit_db.dsn, "--hot", str(hot), "--cold", f"file://{cold}")
        assert code == 0, doc["findings"]
        assert doc["tables"]["audit.events"]["logged"] == 7
        _tamper(audit_db, ids[0])
        code, doc = _verify(capsys, "--dsn", audit_db.dsn, "--hot", str(hot), "--cold", f"file://{cold}")
    changed = [f for f in doc["findings"] if f["code"] == "row-changed"]
    assert code == 1 and changed[0]["key"] == str(ids[0]) and changed[0]["changes"]["actor"] == ["alice", "mallory"]


@pytest.mark.parametrize("message", [True, False], ids=["with-its-message", "role-may-not-write-it"])
def test_verify_on_an_idle_table_with_other_wal_after_it(audit_db: AuditDb, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch, message: bool) -> None:
    """WAL no one tails (another table) lies after the last audit commit: pg verify's own
    message moves the slot past it instead of waiting for the next audit row.  Without the
    message (a role that may not write it), the running source still moves its slot past W
    (it confirms the server's keepalive position), so the wait ends in OK, not in "is the
    sidecar running?"."""
    from pipeline.pg import reconcile

    if not message:
        monkeypatch.setattr(reconcile, "_nudge", lambda dsn, slot: None)
    hot = tmp_path / "hot"
    with tailing(audit_db, hot) as src:
        audit_db.insert(3)
        assert wait_for(lambda: src.rows_written >= 3, 10)
        with contextlib.closing(audit_db.connect()) as su:
            su.execute("CREATE TABLE other (x int)")
            su.execute("INSERT INTO other SELECT g FROM generate_series(1, 1000) g")
        assert main(["pg", "verify", "--dsn", audit_db.dsn, "--hot", str(hot), "--wait", "10s"]) == 0
    assert "OK: 3 rows, 3 logged" in capsys.readouterr().out
    # the sidecar stopped: more WAL nobody tails; peeking the slot shows no audit row is missing
    with contextlib.closing(audit_db.connect()) as su:
        su.execute("INSERT INTO other VALUES (2)")
    assert main(["pg", "verify", "--dsn", audit_db.dsn, "--hot", str(hot), "--wait", "3s"]) == 0
    assert "OK: 3 rows, 3 logged" in capsys.readouterr().out


def test_chain_and_replica_in_one_run(pg_pair: Pair, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The documented combined run: the superuser's edit is named against the chain and
    against the replica; each instance's DDL log is its own, so only the audit table is
    compared with the replica (the primary's DISABLE/ENABLE TRIGGER rows are not replica
    differences)."""
    primary, replica = pg_pair.primary, pg_pair.replica
    hot = tmp_path / "hot"
    with tailing(primary, hot) as src:
        ids = primary.insert(6)
        assert wait_for(lambda: src.rows_written >= 6, 10)
        assert pg_pair.wait_replicated()
        code, doc = _verify(capsys, "--dsn", primary.dsn, "--hot", str(hot), "--replica", replica.dsn)
        assert code == 0 and doc["mode"] == "chain+replica" and doc["findings"] == [], doc
        _tamper(primary, ids[1])
        code, doc = _verify(capsys, "--dsn", primary.dsn, "--hot", str(hot), "--replica", replica.dsn)
    assert code == 1
    assert set(doc["tables"]) == {"audit.events", "audit.ddl_log", "audit.events (replica)"}
    assert not [f for f in doc["findings"] if f["code"].startswith("replica-") and f["stream"] != "audit.events"]
    keys = {(f["code"], f["key"]) for f in doc["findings"]}
    assert {("row-changed", str(ids[1])), ("row-deleted", str(ids[2])), ("replica-row-differs", str(ids[1])),
            ("replica-row-extra", str(ids[2]))} <= keys
    with contextlib.closing(primary.connect()) as su:  # the primary's DDL log holds the evidence...
        assert su.execute("SELECT count(*) FROM audit.ddl_log WHERE command LIKE '%DISABLE TRIGGER%'").fetchone()[0]
    assert doc["tables"]["audit.ddl_log"]["logged"] == doc["tables"]["audit.ddl_log"]["rows"] > 0  # ...and the chain
