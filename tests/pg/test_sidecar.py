"""The source inside the sidecar: ``pipeline run`` with [source.postgres] killed with SIGKILL
while 10,000 rows are inserted concurrently, restarted: every row is in the chain exactly
once, the chain verifies (``pipeline verify``) and reconciles with the table (``pipeline pg
verify``); the source's problems in /readyz and /metrics; an idle table holds no WAL."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.netutil import free_port
from tests.pg.conftest import AuditDb, logged_ids
from tests.pg.server import wait_for

REPO = Path(__file__).resolve().parents[2]
ROWS, WRITERS = 10_000, 4


def _config(tmp: Path, dsn: str, port: int) -> Path:
    cfg = tmp / "pipeline.toml"
    cold = tmp / "cold"
    cold.mkdir(exist_ok=True)
    cfg.write_text(f"""
[hot]
dir = "{tmp / 'hot'}"
stream = "app"
[cold]
url = "file://{cold}"
allow_unlocked = true
[ops]
listen = "127.0.0.1:{port}"
[source.postgres]
dsn = "{dsn}"
poll_interval = "50ms"
check_interval = "1s"
""")
    return cfg


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _start(cfg: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--config", str(cfg)], cwd=REPO, env=env,
                                stdout=out, stderr=out)
    assert wait_for(lambda: _ready(port) or proc.poll() is not None, 30) and proc.poll() is None, log.read_text()
    return proc


@pytest.mark.slow
def test_sigkill_during_concurrent_inserts_every_row_once(audit_db: AuditDb, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    cfg = _config(tmp_path, audit_db.dsn, port)
    sidecar_log = tmp_path / "sidecar.log"
    proc = _start(cfg, port, sidecar_log)
    inserted = [0] * WRITERS
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        rnd = random.Random(i)
        try:
            with contextlib.closing(audit_db.connect()) as conn:
                while inserted[i] < ROWS // WRITERS:
                    n = min(rnd.randint(1, 40), ROWS // WRITERS - inserted[i])
                    audit_db.insert(n, actor=f"w{i}", conn=conn)
                    inserted[i] += n
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    kills = 0
    hot = tmp_path / "hot"
    logged = 0
    try:
        while any(t.is_alive() for t in threads) and kills < 3:
            time.sleep(0.4 + random.random())
            # killed while it tails: this process has written rows (on a loaded machine it
            # may not have within the sleep, and then it would resume from nothing)
            assert wait_for(lambda: len(logged_ids(hot)) > logged or logged >= ROWS, 60, interval=0.2)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            logged = len(logged_ids(hot))
            proc = _start(cfg, port, sidecar_log)
        for t in threads:
            t.join(120)
        assert not errors and sum(inserted) == ROWS
        assert wait_for(lambda: len(logged_ids(hot)) >= ROWS, 90), len(logged_ids(hot))
        # while the sidecar runs: pg verify waits for the source to pass its snapshot
        assert main(["pg", "verify", "--dsn", audit_db.dsn, "--hot", str(hot),
                     "--cold", f"file://{tmp_path / 'cold'}"]) == 0, capsys.readouterr()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert kills >= 1
    starts = [ln for ln in sidecar_log.read_text().splitlines() if "postgres source starting" in ln]
    assert len(starts) == kills + 1
    assert any('"position":"commit ' in ln for ln in starts[1:])  # resumed from the chain's position
    ids = logged_ids(tmp_path / "hot")
    assert len(ids) == ROWS and len(set(ids)) == ROWS
    with contextlib.closing(audit_db.connect()) as su:
        assert sorted(ids) == [r[0] for r in su.execute("SELECT id FROM audit.events ORDER BY id")]
    assert main(["verify", "--hot", str(tmp_path / "hot")]) == 0


def test_the_sidecar_reports_disabled_triggers_in_readyz_and_metrics(audit_db: AuditDb, tmp_path: Path) -> None:
    """In-process: the source's problems reach /readyz (503 with the reason) and /metrics."""
    from pipeline.config import load_config
    from pipeline.pg.install import ROW_TRIGGER
    from pipeline.sidecar import Sidecar

    port = free_port()
    cfg = load_config(_config(tmp_path, audit_db.dsn, port))
    sc = Sidecar(cfg, ship_interval=0.2).start()
    try:
        assert wait_for(lambda: _ready(port), 15)
        with contextlib.closing(audit_db.connect()) as su:
            su.execute(f"ALTER TABLE audit.events DISABLE TRIGGER {ROW_TRIGGER}")

        def readyz() -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        assert wait_for(lambda: readyz()[0] == 503, 15)
        assert f"audit.events.{ROW_TRIGGER} not enabled ALWAYS (D)" in readyz()[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            metrics = r.read().decode()
        assert 'worm_pg_source_problem{problem="triggers-disabled"} 1.0' in metrics
        assert "worm_pg_source_up 1.0" in metrics
        with contextlib.closing(audit_db.connect()) as su:
            su.execute(f"ALTER TABLE audit.events ENABLE ALWAYS TRIGGER {ROW_TRIGGER}")
        assert wait_for(lambda: readyz()[0] == 200, 15)
    finally:
        sc.drain(grace=5)


def test_an_idle_table_in_a_busy_database_does_not_hold_wal(audit_db: AuditDb, tmp_path: Path) -> None:
    """The slot moves past other tables' WAL on the server's keepalive position, to within
    64 KiB of the WAL's end."""
    from tests.pg.test_source import tailing

    with tailing(audit_db, tmp_path / "hot") as src, contextlib.closing(audit_db.connect()) as su:
        su.execute("CREATE TABLE busy (x int, pad text)")
        su.execute("INSERT INTO busy SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")

        def lag() -> int:
            return int(su.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) FROM "
                                  "pg_replication_slots WHERE slot_name = %s", (audit_db.target.slot,)).fetchone()[0])

        assert lag() > 1 << 20
        assert wait_for(lambda: lag() < 64 << 10, 15)
        assert src.rows_written == 0  # nothing of the other table went into the chain
