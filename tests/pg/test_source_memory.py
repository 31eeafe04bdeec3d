"""The source's memory is bounded by bytes, not only by rows: a backlog of large rows (each
under the event limit, or over it and logged as unloggable) is written in parts of at most
``WRITE_BYTES`` of pgoutput messages, whatever the number of rows one read holds."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from pipeline import open_log
from pipeline.pg import source as source_module
from pipeline.pg.source import Position
from tests.pg.conftest import AuditDb, chain_events, logged_ids
from tests.pg.test_source import stepped
from tests.rss import rss_growth

ROWS = 160
ROW_TEXT = 600_000  # bytes of text per row: under the 1 MiB event limit


def _insert_large(db: AuditDb, rows: int, size: int) -> None:
    with contextlib.closing(db.connect()) as c:
        # md5 chains (no two rows alike, and TOAST cannot shrink them much) with the digits
        # spelled as letters: a run of digits could pass for a card number and be redacted
        c.execute(f"INSERT INTO {db.target.qualified} (actor, action, target, detail) "
                  "SELECT 'bulk', 'upload', 'f-' || g, jsonb_build_object('blob', (SELECT string_agg("
                  "translate(md5(g::text || '/' || i::text), '0123456789', 'ghijklmnop'), '') "
                  "FROM generate_series(1, %s / 32) i)) "
                  "FROM generate_series(1, %s) g", (size, rows))


@pytest.mark.slow
@pytest.mark.parametrize("size", [ROW_TEXT, 2 * ROW_TEXT], ids=["under-the-limit", "unloggable"])
def test_a_backlog_of_large_rows_is_written_in_parts_bounded_by_bytes(
        audit_db: AuditDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    _insert_large(audit_db, ROWS, size)  # ~96 / 192 MB of row text, all of it in one read
    log = open_log(tmp_path / "hot", "app")
    parts: list[int] = []
    try:
        src = stepped(audit_db, log)
        write = src._write

        def counted(items: list[tuple[dict[str, Any], Position]]) -> None:
            parts.append(len(items))
            write(items)

        monkeypatch.setattr(src, "_write", counted)
        try:
            with rss_growth() as growth:
                while src.rows_written < ROWS:
                    assert src.poll_once() > 0
        finally:
            src.stop()
    finally:
        log.close()
    bound = source_module.WRITE_BYTES
    assert sum(parts) == ROWS and max(parts) <= bound // size + 1, parts
    # a part's messages, rows, events and lines, a few times over (35 MiB measured), not the
    # backlog (280 MiB measured with the parts bounded by rows alone)
    assert growth.mib < 64, (growth.mib, parts)
    assert logged_ids(tmp_path / "hot") == list(range(1, ROWS + 1))
    events = chain_events(tmp_path / "hot")
    if size > 1 << 20:
        assert all("unloggable" in e and "row" not in e for e in events)
    else:
        assert all(len(e["row"]["detail"]["blob"]) == size // 32 * 32 for e in events)
