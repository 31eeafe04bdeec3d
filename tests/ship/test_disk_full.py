"""A full hot disk never wedges the shipper (issue 13): on a small tmpfs, a real sidecar
fills the disk through its writer while cold storage is down, then cold storage answers
and the shipper must still record confirmations, evict, free space and let ingest resume,
with one log line per state change, not a traceback per second."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pipeline.ship.ledger import Ledger
from tests.conftest import mounted_tmpfs
from tests.ship.gate import Gate
from tests.ship.test_sidecar import Sidecar

TMPFS_SIZE = "16m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "hot", TMPFS_SIZE) as mnt:
        yield mnt


@pytest.fixture
def gate(moto_endpoint: str) -> Iterator[Gate]:
    u = urlsplit(moto_endpoint)
    g = Gate(u.hostname or "127.0.0.1", u.port or 80, mode="reset")  # cold storage down
    yield g
    g.close()


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.mark.slow
def test_full_disk_then_cold_storage_answers_frees_space_and_ingest_resumes(
        tmp_path: Path, small_disk: Path, gate: Gate, locked_bucket: str) -> None:
    sc = Sidecar(tmp_path, gate.url, locked_bucket,
                 hot={"segment_window": "1s", "segment_max_bytes": 256 * 1024, "high_water_percent": 99})
    assert sc.hot == small_disk
    sc.start()
    try:
        # the ledger took its reserve up front: free pages inside its own database file
        probe = Ledger(small_disk, reserve_bytes=0)
        assert probe.reserved_bytes() >= 256 * 1024
        probe.close()
        # fill the disk through the writer until it holds ingest back
        pad = "x" * 900
        held = 0
        n = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            code, body = sc.post([{"n": n + i, "pad": pad} for i in range(200)])
            if code == 200:
                n += 200
                continue
            assert code in (429, 503, 507), (code, body)
            held += 1
            if held >= 3 and _free(small_disk) < 512 * 1024:
                break
            time.sleep(0.3)
        assert held >= 3, "the disk never filled"
        assert n > 5000
        assert sc.get("/readyz")[0] == 503
        # and then the last bytes go (another file on the volume, the writer's last flush):
        # ENOSPC for everyone, the ledger included
        _fill(small_disk / "filler")
        assert _free(small_disk) == 0
        time.sleep(3)  # the shipper keeps trying (cold storage down, disk full) for a while
        assert _free(small_disk) == 0
        assert sc.proc is not None and sc.proc.poll() is None
        code, why = sc.get("/readyz")
        assert code == 503 and "high-water" in why, why
        # Without the ledger's reserve, what follows fails: no confirmation can be recorded
        # on the full disk, nothing is evicted and ingest never resumes (checked by hand
        # with the reserve set to 0).

        # cold storage answers: segments are confirmed, evicted, and ingest resumes
        gate.mode = "pass"
        ok_again = False
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            code, _ = sc.post([{"after": i} for i in range(10)])
            if code == 200:
                ok_again = True
                break
            time.sleep(0.5)
        assert ok_again, "ingest never resumed\n" + sc.log.read_text()[-3000:]
        _wait_ready(sc)
    finally:
        rc = sc.stop()
    assert rc == 0
    ledger = Ledger(small_disk, reserve_bytes=0)
    counts = ledger.counts()
    ledger.close()
    assert counts["evicted"] >= 1 and counts["quarantined"] == 0, counts
    log = sc.log.read_text()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert "Traceback" not in log, log[-3000:]
    errors = [r for r in records if r["level"] in ("ERROR", "CRITICAL")]
    # one line per state change (reserve released, ledger unwritable...), not one per second
    assert len(errors) <= 6, [r["msg"][:200] for r in errors]


def _fill(path: Path) -> None:
    with contextlib.suppress(OSError), open(path, "wb") as f:  # ENOSPC: already full
        block = b"\0" * 4096
        while True:
            f.write(block)
            f.flush()


def _wait_ready(sc: Sidecar) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sc.get("/readyz")[0] == 200:
            return
        time.sleep(0.2)
    with contextlib.suppress(Exception):
        print(sc.get("/readyz"))
    raise AssertionError("never ready again:\n" + sc.log.read_text()[-3000:])
