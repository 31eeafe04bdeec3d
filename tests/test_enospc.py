"""Disk full: on a tiny tmpfs, append raises a clear ENOSPC error, acknowledged records stay,
the chain stays verifiable, and appends resume once space is freed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.hot.writer import HotLog, HotLogError, Receipt
from tests.hotutil import assert_clean, records

STREAM = "full"


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the suite runs as root): {res.stderr}")
    try:
        yield mnt
    finally:
        from tests.conftest import clear_tree_attributes

        clear_tree_attributes(mnt)
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_until_enospc(log: HotLog, receipts: list[Receipt], limit: int = 100_000) -> HotLogError:
    for i in range(limit):
        try:
            receipts.append(log.append({"i": i, "pad": "e" * 400}))
        except HotLogError as exc:
            return exc
    raise AssertionError("never hit ENOSPC")


def test_enospc_clear_error_chain_verifiable_and_resumes(tiny_fs: Path) -> None:
    filler = tiny_fs / "filler"
    filler.write_bytes(b"\0" * (96 * 1024))
    hot = tiny_fs / "hot"
    log = HotLog(hot, STREAM, durability="group", heartbeat_interval=0, segment_window=0,
                 segment_max_bytes=48 * 1024)
    try:
        acked: list[Receipt] = []
        err = fill_until_enospc(log, acked)
        assert "no space left" in str(err).lower() and "ENOSPC" in str(err)
        assert isinstance(err.cause, OSError) and err.cause.errno == 28
        assert len(acked) > 20
        d = hot / STREAM
        # every acknowledged receipt is on disk with its hash, and the chain verifies now
        by_seq = {r.seq: r.hash for r in records(d)}
        assert all(by_seq.get(r.seq) == r.hash for r in acked)
        assert_clean(d)
        # still full: appends keep failing cleanly, nothing acknowledged is disturbed
        with pytest.raises(HotLogError):
            log.append({"still": "full", "pad": "f" * 4000})
        assert_clean(d)

        filler.unlink()
        after = [log.append({"after": i}) for i in range(20)]
        sealed = log.seal()
        assert sealed is not None
    finally:
        log.close()
    recs = records(d)
    by_seq = {r.seq: r for r in recs}
    assert sorted(by_seq) == list(range(len(by_seq)))
    for r in [*acked, *after]:
        assert by_seq[r.seq].hash == r.hash
    assert after[0].seq == acked[-1].seq + 2  # the recovery record sits between them
    recovery = by_seq[acked[-1].seq + 1]
    assert recovery.kind == "recovery" and recovery.data["abandoned"]
    assert "no space left" in recovery.data.get("error", "").lower()
    rep = assert_clean(d)
    assert any(n.kind == "recovered" for n in rep.notes) or all(
        e["torn_bytes"] == 0 for e in recovery.data["abandoned"])
    # the CLI agrees
    res = subprocess.run([sys.executable, "-m", "pipeline", "verify", "--hot", str(hot)], capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_enospc_in_fsync_mode_reopen_after_free(tiny_fs: Path) -> None:
    filler = tiny_fs / "filler"
    filler.write_bytes(b"\0" * (96 * 1024))
    hot = tiny_fs / "hot"
    acked: list[Receipt] = []
    log = HotLog(hot, STREAM, durability="fsync", heartbeat_interval=0, segment_window=0)
    try:
        err = fill_until_enospc(log, acked)
        assert "no space left" in str(err).lower()
    finally:
        log.close(seal=False)
    filler.unlink()
    with HotLog(hot, STREAM, durability="fsync", heartbeat_interval=0, segment_window=0) as log2:
        more = log2.append({"after": 1})
    by_seq = {r.seq: r.hash for r in records(hot / STREAM)}
    assert all(by_seq[r.seq] == r.hash for r in [*acked, more])
    assert_clean(hot / STREAM)
