"""The manifest index writer (pipeline/ship/index.py): chained parts through the cold policy,
and no confirmed segment's row lost to a crash at any step (docs/INDEX.md)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cold import ColdSettings, open_store
from pipeline.cold.errors import ColdUnavailableError
from pipeline.ship.index import GENESIS_PART_HASH, read_part_meta
from pipeline.ship.ledger import Ledger
from pipeline.ship.shipper import Shipper
from tests.tierutil import build_hot


class Crash(BaseException):
    """The process dies here (not an error any layer handles)."""


@pytest.fixture
def side(tmp_path: Path) -> Any:
    return build_hot(tmp_path, segments=3, events_per_segment=5)


def store_at(tmp_path: Path) -> Any:
    cold = tmp_path / "cold"
    cold.mkdir(exist_ok=True)
    return open_store(f"file://{cold}", ColdSettings(allow_unlocked=True))


def shipper(side: Any, store: Any, max_rows: int = 100, signed: bool = False) -> Shipper:
    s = Shipper(side.hot, store, hot_retention=1e9, index_signer=side.signer if signed else None,
                index_origin="example.com/worm/app" if signed else None)
    assert s.index is not None
    s.index.max_rows = max_rows
    return s


def parts_on_disk(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cold" / "_index").rglob("*.parquet"))


def segments_in(path: Path) -> list[str]:
    return [str(s) for s in pq.read_table(path, columns=["segment"]).column(0).to_pylist()]


def test_parts_are_chained(side: Any, tmp_path: Path) -> None:
    s = shipper(side, store_at(tmp_path), max_rows=1)
    s.run_once()
    files = parts_on_disk(tmp_path)
    assert [f.name for f in files] == ["0000000000.parquet", "0000000001.parquet", "0000000002.parquet"]
    prev = GENESIS_PART_HASH
    for n, f in enumerate(files):
        meta, rows = read_part_meta(str(f))
        assert (meta.part, meta.prev_sha256, rows) == (n, prev, 1)
        prev = hashlib.sha256(f.read_bytes()).hexdigest()
    assert [p.sha256 for p in s.ledger.index_parts("app")][-1] == prev
    assert all(e.index_part for e in s.ledger.entries())
    # a second pass with nothing new writes nothing
    s.run_once()
    assert len(parts_on_disk(tmp_path)) == 3


def test_crash_after_rows_chosen_before_the_put(side: Any, tmp_path: Path) -> None:
    store = store_at(tmp_path)
    s = shipper(side, store)

    def crash(*_a: Any, **_k: Any) -> Any:
        raise Crash

    store.put_index_part = crash
    with pytest.raises(Crash):
        s.run_once()
    assert parts_on_disk(tmp_path) == []
    [part] = s.ledger.index_parts("app")
    assert part.state == "writing" and part.rows == 3
    s.ledger.close()
    # the next process writes the same part with the same rows
    again = shipper(side, store_at(tmp_path))
    again.run_once()
    [f] = parts_on_disk(tmp_path)
    assert segments_in(f) == [e.segment for e in again.ledger.entries()]
    [part] = again.ledger.index_parts("app")
    assert part.state == "stored" and part.sha256 == hashlib.sha256(f.read_bytes()).hexdigest()


def test_crash_after_the_put_before_it_is_recorded(side: Any, tmp_path: Path) -> None:
    s = shipper(side, store_at(tmp_path), max_rows=1)
    real = s.ledger.finish_index_part
    calls = {"n": 0}

    def finish(*a: Any, **k: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash  # part 1 is stored, the ledger does not know yet
        real(*a, **k)

    s.ledger.finish_index_part = finish  # type: ignore[method-assign]
    with pytest.raises(Crash):
        s.run_once()
    assert len(parts_on_disk(tmp_path)) == 2
    s.ledger.close()
    again = shipper(side, store_at(tmp_path), max_rows=1)
    again.run_once()  # create-only finds part 1, adopts it (same rows, same link), goes on
    files = parts_on_disk(tmp_path)
    assert len(files) == 3
    parts = again.ledger.index_parts("app")
    assert [p.state for p in parts] == ["stored"] * 3
    assert parts[2].prev_sha256 == hashlib.sha256(files[1].read_bytes()).hexdigest() == parts[1].sha256


def test_a_foreign_object_under_the_next_key_stops_the_index(side: Any, tmp_path: Path) -> None:
    store = store_at(tmp_path)
    s = shipper(side, store)
    s.discover()
    key = "_index/app/dt={}/0000000000.parquet"
    from pipeline.ship.index import day_of

    day = day_of(s.ledger.entries()[0])
    store.put_index_part(key.format(day), b"not an index part", {})
    summary = s.run_once()
    assert summary.failed == 0 and summary.confirmed == 3  # shipping itself goes on
    assert "is not index part 0" in (s.conditions.get("index") or "")
    [part] = s.ledger.index_parts("app")
    assert part.state == "writing"  # never chained to, never written twice


def test_a_cold_failure_leaves_the_rows_for_the_next_pass(side: Any, tmp_path: Path) -> None:
    store = store_at(tmp_path)
    s = shipper(side, store)
    real = store.put_index_part

    def down(*_a: Any, **_k: Any) -> Any:
        raise ColdUnavailableError("cold storage unreachable")

    store.put_index_part = down
    s.run_once()
    assert "manifest index not written" in (s.conditions.get("index") or "")
    assert [e.state for e in s.ledger.entries()] == ["confirmed"] * 3
    store.put_index_part = real
    s.run_once()
    assert s.conditions.get("index") is None
    [f] = parts_on_disk(tmp_path)
    assert len(segments_in(f)) == 3


def test_the_continuous_loop_writes_parts_every_interval(side: Any, tmp_path: Path) -> None:
    import time

    s = Shipper(side.hot, store_at(tmp_path), hot_retention=1e9, index_interval=3600)
    assert s.flush_index() == 0  # a process's first flush is due at once (nothing confirmed yet)
    for _ in range(50):
        s.tick()
        if all(e.state == "confirmed" for e in s.ledger.entries()) and s.in_flight() == 0:
            break
        time.sleep(0.1)
    assert [e.state for e in s.ledger.entries()] == ["confirmed"] * 3
    assert parts_on_disk(tmp_path) == []  # the interval has not passed: the rows wait in the ledger
    s.ledger.close()
    # the next process writes them on its first pass, without waiting an interval
    again = Shipper(side.hot, store_at(tmp_path), hot_retention=1e9, index_interval=3600)
    again.tick()
    assert len(segments_in(parts_on_disk(tmp_path)[0])) == 3
    assert again.flush_index() == 0  # then not again before the interval


def test_a_ledger_from_before_the_index_is_migrated(tmp_path: Path) -> None:
    d = tmp_path / "hot" / ".ship"
    d.mkdir(parents=True)
    db = sqlite3.connect(d / "ledger.sqlite")
    db.executescript("""CREATE TABLE segments (stream TEXT NOT NULL, segment TEXT NOT NULL, first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL, records INTEGER NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
        merkle_root TEXT NOT NULL, first_prev TEXT NOT NULL, last_hash TEXT NOT NULL, sealed INTEGER NOT NULL,
        first_ts TEXT NOT NULL DEFAULT '', last_ts TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, cold_key TEXT,
        stored_sha256 TEXT, stored_size INTEGER, lock_status TEXT, attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT, next_attempt REAL NOT NULL DEFAULT 0, discovered_at REAL NOT NULL, confirmed_at REAL,
        evicted_at REAL, updated_at REAL NOT NULL, PRIMARY KEY (stream, segment));
        INSERT INTO segments VALUES ('app', 'seg-00000000000000000000.jsonl', 0, 5, 6, 100, 'aa', 'bb', 'cc', 'dd', 1,
        '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:01.000000Z', 'confirmed', 'app/seg-00000000000000000000.jsonl',
        'ee', 90, 'COMPLIANCE', 0, NULL, 0, 1.0, 2.0, NULL, 2.0);""")
    db.close()
    ledger = Ledger(tmp_path / "hot")
    [e] = ledger.entries()
    assert (e.tree_size, e.tree_root, e.index_part) == (None, None, None)
    assert [x.segment for x in ledger.unindexed("app", 10)] == [e.segment]  # indexed on the next pass
    ledger.close()


def test_rows_carry_the_seal_tree_and_record_times(side: Any, tmp_path: Path) -> None:
    s = shipper(side, store_at(tmp_path))
    s.run_once()
    rows = pq.read_table(parts_on_disk(tmp_path)[0]).to_pylist()
    for r, e in zip(rows, s.ledger.entries(), strict=True):
        assert e.first_ts and e.last_ts
        assert r["tree_size"] == e.last_seq and len(r["tree_root"]) == 64
        assert r["first_ts"] is not None and r["last_ts"] >= r["first_ts"]
        assert r["stored_size"] == e.stored_size and r["stored_md5"] is None
    assert pa.types.is_timestamp(pq.read_schema(parts_on_disk(tmp_path)[0]).field("confirmed_at").type)


def test_without_pyarrow_segments_ship_and_the_rows_wait(side: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    s = shipper(side, store_at(tmp_path))
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "pyarrow", None)  # an image built without the dependency
        summary = s.run_once()
    assert summary.confirmed == 3 and summary.failed == 0
    assert "pyarrow is not installed" in (s.conditions.get("index") or "")
    assert parts_on_disk(tmp_path) == []
    s.run_once()  # installed again: the part is written from the ledger
    assert len(segments_in(parts_on_disk(tmp_path)[0])) == 3 and s.conditions.get("index") is None


def test_index_parts_go_through_the_cold_policy(moto_endpoint: str) -> None:
    from pipeline.cold.errors import WormNotEnforcedError
    from pipeline.cold.tier import ColdTier
    from tests.tierutil import new_bucket, s3_client

    unlocked = new_bucket(moto_endpoint)
    store = open_store(f"s3://{unlocked}/p?endpoint_url={moto_endpoint}&region=us-east-1", ColdSettings())
    with pytest.raises(WormNotEnforcedError):  # fail closed: nothing is written to unlocked storage
        store.put_index_part("p/_index/app/dt=2026-12-01/0000000000.parquet", b"part", {})
    assert "Contents" not in s3_client(moto_endpoint).list_objects_v2(Bucket=unlocked)
    store.close()

    locked = new_bucket(moto_endpoint, lock=True)
    store = open_store(f"s3://{locked}/p?endpoint_url={moto_endpoint}&region=us-east-1",
                       ColdSettings(retention_days=1))
    key = "p/_index/app/dt=2026-12-01/0000000000.parquet"
    first = store.put_index_part(key, b"part zero", {"worm_index_part": "0"})
    assert first.created and first.sha256 == hashlib.sha256(b"part zero").hexdigest()
    assert first.lock_status.startswith("COMPLIANCE until")
    again = store.put_index_part(key, b"another body", {})  # create-only: the stored part is returned
    assert not again.created and again.existing == b"part zero" and again.sha256 == first.sha256
    store.close()
    with pytest.raises(TypeError, match="overrides the cold policy"):
        type("Sneaky", (ColdTier,), {"put_index_part": lambda self, *a: None})


# ---------------------------------------------------------------------------- signatures (docs/INDEX.md)


def test_a_signed_part_retried_after_a_crash_is_byte_identical(side: Any, tmp_path: Path) -> None:
    from pipeline.ship.index import check_part_signature, read_part_signature

    store = store_at(tmp_path)
    s = shipper(side, store, signed=True)
    attempted: list[bytes] = []

    def crash(_key: str, data: bytes, _meta: dict[str, str]) -> Any:
        attempted.append(data)
        raise Crash  # the PUT may or may not have happened: the retry must write the same bytes

    store.put_index_part = crash
    with pytest.raises(Crash):
        s.run_once()
    s.ledger.close()
    again = shipper(side, store_at(tmp_path), signed=True)
    again.run_once()
    [f] = parts_on_disk(tmp_path)
    assert f.read_bytes() == attempted[0]
    note = read_part_signature(str(f))
    assert note is not None and note.startswith(b"worm-pipeline/index-part/v1\norigin example.com/worm/app\n")
    meta, _ = read_part_meta(str(f))
    body = check_part_signature(str(f), note, meta, [side.signer.verifier()], "example.com/worm/app")
    assert (body.meta, body.origin) == (meta, "example.com/worm/app")


def test_the_signature_covers_rows_footer_origin_and_key(side: Any, tmp_path: Path) -> None:
    from pipeline.format.checkpoint import Checkpoint, NoteError, Signer, split_note
    from pipeline.ship.index import FOOTER_KEY, SIGNATURE_KEY, PartMeta, check_part_signature, read_part_signature

    s = shipper(side, store_at(tmp_path), signed=True)
    s.run_once()
    [f] = parts_on_disk(tmp_path)
    note = read_part_signature(str(f))
    assert note is not None
    meta, _ = read_part_meta(str(f))
    trusted = [side.signer.verifier()]
    table = pq.read_table(f)

    def rewrite(t: Any, footer: bytes, name: str) -> Path:
        out = tmp_path / name
        pq.write_table(t.replace_schema_metadata({FOOTER_KEY: footer, SIGNATURE_KEY: note}), out)
        return out

    # one value changed, footer and signature kept
    sizes = table.column("stored_size").to_pylist()
    changed = table.set_column(table.schema.get_field_index("stored_size"), "stored_size",
                               pa.array([sizes[0] + 1, *sizes[1:]], pa.int64()))
    with pytest.raises(NoteError, match="rows were changed"):
        check_part_signature(str(rewrite(changed, meta.to_json(), "changed.parquet")), note, meta, trusted)
    # the footer relinked (another prev), rows and signature kept
    relinked = PartMeta(meta.format, meta.stream, meta.dt, meta.part, "ab" * 32, meta.rows, meta.first_seq,
                        meta.last_seq)
    path = rewrite(table, relinked.to_json(), "relinked.parquet")
    with pytest.raises(NoteError, match="the footer says"):
        check_part_signature(str(path), note, relinked, trusted)
    # another origin than the auditor was told; a key the auditor does not trust
    with pytest.raises(NoteError, match="origin"):
        check_part_signature(str(f), note, meta, trusted, "example.com/other/app")
    with pytest.raises(NoteError, match="not signed by any trusted log key"):
        check_part_signature(str(f), note, meta, [Signer.generate(side.signer.name).verifier()])
    # the same key signs checkpoints: an index note is never a checkpoint
    with pytest.raises(NoteError):
        Checkpoint.parse(split_note(note)[0])


def test_pipeline_ship_signs_with_key(side: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main
    from pipeline.format.checkpoint import write_key_pair
    from pipeline.ship.index import check_part_signature, read_part_signature

    key, _pub = write_key_pair(side.signer, tmp_path / "keys")
    (tmp_path / "cold").mkdir()
    base = ["ship", "--hot", str(side.hot), "--cold", f"file://{tmp_path / 'cold'}", "--allow-unlocked", "--once",
            "--json", "--key", str(key)]
    assert main([*base, "--origin", "example.com/worm/app"]) == 2  # an origin names one stream
    assert "exactly one --stream" in capsys.readouterr().err
    assert main([*base, "--stream", "app", "--origin", "example.com/worm/app"]) == 0
    [f] = parts_on_disk(tmp_path)
    note = read_part_signature(str(f))
    assert note is not None
    meta, _ = read_part_meta(str(f))
    check_part_signature(str(f), note, meta, [side.signer.verifier()], "example.com/worm/app")


def test_rows_sha256_is_the_documented_jcs_digest(side: Any, tmp_path: Path) -> None:
    """docs/INDEX.md "Signature", recomputed the way an independent verifier would: each row's
    values as a JSON array (JCS; timestamps as microseconds since the epoch) and a newline."""
    import datetime as dt
    import json

    from pipeline.format.checkpoint import split_note
    from pipeline.ship.index import COLUMNS, PartNote, read_part_signature

    s = shipper(side, store_at(tmp_path), signed=True)
    s.run_once()
    [f] = parts_on_disk(tmp_path)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    digest = hashlib.sha256()
    for row in pq.read_table(f).to_pylist():
        values = [(v - epoch) // dt.timedelta(microseconds=1) if isinstance(v, dt.datetime) else v
                  for v in (row[c] for c in COLUMNS)]
        digest.update(json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
    note = read_part_signature(str(f))
    assert note is not None
    assert PartNote.parse(split_note(note)[0]).rows_sha256 == digest.hexdigest()


# ---------------------------------------------------------------------------- a real crash (kill -9)

CRASHING_SHIPPER = r"""
import os, signal, sys
from pipeline.cold import ColdSettings, open_store
from pipeline.ship.index import IndexWriter
from pipeline.ship.ledger import Ledger
from pipeline.ship.shipper import Shipper

hot, cold, point = sys.argv[1:4]


def die(*_a, **_k):
    os.kill(os.getpid(), signal.SIGKILL)  # no finally, no atexit, no ledger close


store = open_store(f"file://{cold}", ColdSettings(allow_unlocked=True))
if point == "confirmed":  # every segment confirmed, no index row chosen yet
    IndexWriter.flush = die
elif point == "rows-chosen":  # the part's rows chosen in the ledger, nothing uploaded
    store.put_index_part = die
elif point == "part-stored":  # the part uploaded and verified, the ledger not told
    Ledger.finish_index_part = die
Shipper(hot, store, hot_retention=1e9).run_once()
print("not killed", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("point", ["confirmed", "rows-chosen", "part-stored"])
def test_kill_9_between_confirmation_and_index_row_loses_no_row(side: Any, tmp_path: Path, point: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """docs/INDEX.md "Crash safety", with a real process killed by SIGKILL at each step
    after the segments are confirmed: the next `pipeline ship` writes every row, once."""
    import os
    import signal
    import subprocess
    import sys

    from pipeline.cli import main

    cold = tmp_path / "cold"
    cold.mkdir()
    script = tmp_path / "crashing_shipper.py"
    script.write_text(CRASHING_SHIPPER)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run([sys.executable, str(script), str(side.hot), str(cold), point], env=env,
                          capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr[-2000:])

    ledger = Ledger(side.hot)
    entries = ledger.entries()
    assert [e.state for e in entries] == ["confirmed"] * 3  # confirmed before the crash: durable
    parts = ledger.index_parts("app")
    if point == "confirmed":
        assert parts == [] and all(e.index_part is None for e in entries)
    else:
        assert [(p.state, p.rows) for p in parts] == [("writing", 3)]
    assert len(parts_on_disk(tmp_path)) == (1 if point == "part-stored" else 0)
    ledger.close()

    assert main(["ship", "--hot", str(side.hot), "--cold", f"file://{cold}", "--allow-unlocked", "--once",
                 "--json"]) == 0
    capsys.readouterr()
    [f] = parts_on_disk(tmp_path)
    meta, rows = read_part_meta(str(f))
    assert (meta.part, meta.prev_sha256, rows) == (0, GENESIS_PART_HASH, 3)
    ledger = Ledger(side.hot)
    try:
        assert segments_in(f) == [e.segment for e in ledger.entries()]  # every confirmed segment, once
        [part] = ledger.index_parts("app")
        assert part.state == "stored" and part.sha256 == hashlib.sha256(f.read_bytes()).hexdigest()
        assert all(e.index_part == part.key for e in ledger.entries())
    finally:
        ledger.close()


def test_parts_are_per_utc_day_of_the_first_record(tmp_path: Path) -> None:
    """docs/INDEX.md: one part holds rows of one day only, ``dt`` the UTC day of each
    segment's first record (a segment that runs over midnight stays with its first day); the
    parts of one stream chain across days."""
    import datetime as dt

    from pipeline.hot.writer import HotLog

    t = [dt.datetime(2026, 12, 5, 23, 59, 0, tzinfo=dt.UTC)]

    def clock() -> bytes:
        t[0] += dt.timedelta(seconds=5)
        return t[0].strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()

    hot = tmp_path / "hot"
    log = HotLog(hot, "app", clock=clock, heartbeat_interval=0, segment_window=0, immutable="off")
    for events in (3, 3, 3, 3, 3):  # 4 records (+ seal) of 5 s each: midnight falls inside segment 3
        for i in range(events):
            log.append({"n": i})
        log.seal()
    log.close()
    s = Shipper(hot, store_at(tmp_path), hot_retention=1e9)
    s.run_once()
    files = parts_on_disk(tmp_path)
    assert [(f.parent.name, f.name) for f in files] == [
        ("dt=2026-12-05", "0000000000.parquet"), ("dt=2026-12-06", "0000000001.parquet")]
    entries = s.ledger.entries()
    first_days = [e.first_ts[:10] for e in entries]
    assert first_days == ["2026-12-05"] * 3 + ["2026-12-06"] * 2
    assert entries[2].last_ts[:10] == "2026-12-06"  # runs over midnight: indexed under its first day
    assert segments_in(files[0]) == [e.segment for e in entries[:3]]
    assert segments_in(files[1]) == [e.segment for e in entries[3:]]
    for f in files:
        meta, _n = read_part_meta(str(f))
        assert {str(d) for d in pq.read_table(f, columns=["dt"]).column(0).to_pylist()} == {meta.dt}
        assert f.parent.name == f"dt={meta.dt}"
    assert read_part_meta(str(files[1]))[0].prev_sha256 == hashlib.sha256(files[0].read_bytes()).hexdigest()


def test_the_documented_columns_are_the_written_ones() -> None:
    """docs/INDEX.md's column table (what a third-party reader relies on) is the schema the
    writer uses, name for name and in order."""
    import re

    from pipeline.ship.index import COLUMNS, _schema

    text = (Path(__file__).resolve().parents[2] / "docs" / "INDEX.md").read_text()
    table = text.split("| column | Parquet / Arrow type |", 1)[1].split("\n\n", 1)[0]
    documented = [name for row in table.splitlines()[2:] for name in re.findall(r"`([a-z_0-9]+)`", row.split("|")[1])]
    assert documented == list(COLUMNS) == _schema().names
