"""Recovery (pipeline/hot/recovery.py) and SegmentFiles (pipeline/hot/active.py) on their own."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import orjson

from pipeline.hot.active import SegmentFiles, ts_to_epoch, window_of
from pipeline.hot.chain import Anchor, Chain
from pipeline.hot.recovery import HEAD_FILE, Recovery, head_dict, write_head
from pipeline.hot.writer import HotLog

TS = b"2026-12-06T18:00:00.000000Z"


def fresh(d: Path) -> tuple[Chain, SegmentFiles]:
    files = SegmentFiles(d, "off", 0)
    chain = Chain(stream="s", hot_dir=d.parent, files=files, segment_max_bytes=1 << 20, now=lambda: TS,
                  seal_extension=None, wake=threading.Event())
    return chain, files


def test_head_round_trip(tmp_path: Path) -> None:
    at = Anchor(7, b"a" * 64, 7, [b"\x01" * 32])
    write_head(tmp_path, head_dict("s", at))
    head = orjson.loads((tmp_path / HEAD_FILE).read_bytes())
    assert head == {"stream": "s", "next_seq": 7, "last_hash": "a" * 64, "tree_size": 7, "frontier": ["01" * 32]}
    assert not (tmp_path / f".{HEAD_FILE}.tmp").exists()


def test_recovery_rebuilds_the_chain_and_names_a_torn_tail(tmp_path: Path) -> None:
    log = HotLog(tmp_path, "s", heartbeat_interval=0, segment_window=0, immutable="off")
    for i in range(5):
        log.append({"i": i})
    seg = log.active_segment
    seq, last = log.next_seq, log.last_hash
    log._flusher.io_lock.acquire()  # simulate a crash: no close, a torn line after the records
    assert seg is not None
    with open(seg, "ab") as f:
        f.write(b'{"v":1,"stream":"s","seq":5,"ts"')
    chain, files = fresh(tmp_path / "s")
    flushed: list[int] = []
    Recovery(chain, files, tree=None, store_head=lambda head: True,
             flush_now=lambda: flushed.append(chain.seq)).run()
    assert flushed == [seq + 1]  # the recovery record is queued and flushed
    (path, valid), = [(p, v) for p, v in chain.abandoned]
    assert path == seg and valid == seg.stat().st_size - len(b'{"v":1,"stream":"s","seq":5,"ts"')
    rec = orjson.loads(chain.batch.runs[0].chunks[0])
    assert rec["kind"] == "recovery" and rec["seq"] == seq and rec["prev"] == last
    (entry,) = rec["data"]["abandoned"]
    assert entry["torn_sha256"] == hashlib.sha256(b'{"v":1,"stream":"s","seq":5,"ts"').hexdigest()


def test_an_empty_directory_starts_at_genesis(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    chain, files = fresh(tmp_path / "s")
    Recovery(chain, files, tree=None, store_head=lambda head: True, flush_now=lambda: None).run()
    assert chain.seq == 0 and chain.seg is None and not chain.abandoned


def test_segment_files_create_next_name_and_explain(tmp_path: Path) -> None:
    files = SegmentFiles(tmp_path, "off", 60)
    a = files.create(10, TS, [], b"p" * 64)
    b = files.create(10, TS, [], b"p" * 64)  # the name is taken: the next attempt
    assert a.path != b.path and a.first_seq == b.first_seq == 10
    assert a.window == window_of(ts_to_epoch(TS.decode()), 60)
    SegmentFiles.close(a)
    SegmentFiles.close(b)
    b.path.write_bytes(b"complete\ntorn")
    entries, keep = files.explain_abandoned([(a.path, 0), (b.path, 9)])
    assert not a.path.exists()  # never written: removed rather than explained
    assert entries == [{"segment": b.path.name, "valid_bytes": 9, "torn_bytes": 4,
                        "torn_sha256": hashlib.sha256(b"torn").hexdigest()}]
    assert keep == [(b.path, 9)]
