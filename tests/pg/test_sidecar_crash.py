"""The sidecar (``pipeline run`` with [source.postgres]) killed with SIGKILL while 10,000 rows
are inserted concurrently, restarted: every row is in the chain exactly once, and the chain
verifies (``pipeline verify``) and reconciles with the table (``pipeline pg verify``)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
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
    try:
        while any(t.is_alive() for t in threads) and kills < 3:
            time.sleep(0.4 + random.random())
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            proc = _start(cfg, port, sidecar_log)
        for t in threads:
            t.join(120)
        assert not errors and sum(inserted) == ROWS
        hot = tmp_path / "hot"
        assert wait_for(lambda: len(logged_ids(hot)) >= ROWS, 90), len(logged_ids(hot))
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
    assert main(["pg", "verify", "--dsn", audit_db.dsn, "--hot", str(tmp_path / "hot"),
                 "--cold", f"file://{tmp_path / 'cold'}"]) == 0, capsys.readouterr()
