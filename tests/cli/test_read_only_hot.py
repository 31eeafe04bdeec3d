"""The reading verbs on a read-only copy of the hot tier: what an auditor runs on a
read-only mount (or a snapshot) must verify, not exit 2 because it tried to write.

``verify``, ``verify-tier``, ``status`` and ``export`` read the shipper's ledger.  They
once opened it read-write (creating the schema, migrating columns, setting the journal
mode), which fails with EROFS on a read-only bind mount; they now open it with SQLite's
``mode=ro`` (``pipeline.ship.ledger.LedgerView``).  The mount is a real read-only bind
mount: a write through it fails even as root."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from pipeline.ship.ledger import Ledger, open_ledger_readonly
from tests.cli.conftest import Tier, cli, snapshot
from tests.hotutil import read_only_view


def _reading_verbs(hot: str, tier: Tier) -> dict[str, list[str]]:
    return {
        "verify": ["verify", "--hot", hot],
        "verify-tier": ["verify-tier", "--hot", hot, "--cold", tier.cold_url],
        "status": ["status", "--hot", hot],
        "export": ["export", "--hot", hot, "--stream", tier.stream],
    }


@pytest.mark.parametrize("shipper_running", [False, True], ids=["shipper stopped", "shipper running"])
def test_reading_verbs_run_on_a_read_only_mount(tier: Tier, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 shipper_running: bool) -> None:
    # a running shipper keeps the ledger's -wal/-shm files; a stopped one removed them
    writer = Ledger(tier.hot, reserve_bytes=0) if shipper_running else None
    try:
        wal = tier.hot / ".ship" / "ledger.sqlite-wal"
        assert wal.exists() == shipper_running
        before = snapshot(tier.hot)
        with read_only_view(tier.hot, tmp_path / "ro") as ro:
            probe = ro / "probe"
            with pytest.raises(OSError):
                probe.write_bytes(b"x")  # the mount is really read-only
            for verb, argv in _reading_verbs(str(ro), tier).items():
                r = cli(*argv, capsys=capsys)
                assert r.code == 0, f"{verb} on a read-only mount: exit {r.code}\n{r.out}\n{r.err}"
        assert snapshot(tier.hot) == before
    finally:
        if writer is not None:
            writer.close()


def test_a_ledger_from_before_a_column_was_added_is_read_without_migrating(
        tier: Tier, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ledger written by an older shipper lacks the columns added since (tree_size,
    tree_root, index_part): a reader takes their defaults and leaves the file as it is
    (migrating is the shipper's job, when it next opens the ledger read-write)."""
    ledger_file = tier.hot / ".ship" / "ledger.sqlite"
    with closing(sqlite3.connect(ledger_file)) as db:
        db.execute("DROP INDEX IF EXISTS segments_index_part")
        for column in ("tree_size", "tree_root", "index_part"):
            db.execute(f"ALTER TABLE segments DROP COLUMN {column}")
        db.commit()
    with read_only_view(tier.hot, tmp_path / "ro") as ro:
        view = open_ledger_readonly(ro)
        assert view is not None
        try:
            entries = view.entries(stream=tier.stream)
        finally:
            view.close()
        assert entries and all(e.tree_size is None and e.index_part is None for e in entries)
        r = cli("verify-tier", "--hot", str(ro), "--cold", tier.cold_url, capsys=capsys)
        assert r.code == 0, r.out + r.err
    with closing(sqlite3.connect(f"file:{ledger_file}?mode=ro", uri=True)) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(segments)")}
    assert "tree_size" not in columns  # not migrated by a reader


def test_no_ledger_reads_as_none(tmp_path: Path) -> None:
    assert open_ledger_readonly(tmp_path) is None
    assert not (tmp_path / ".ship").exists()  # and nothing was created
