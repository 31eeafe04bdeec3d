"""head.json (docs/FORMAT.md §6): one typed reader and writer, byte for byte what the writer
always wrote, and what each reader does with a damaged head."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import orjson
import pytest

from pipeline.format.layout import HEAD_FILE, HeadError, StreamHead, read_head, read_head_or_none, write_head
from pipeline.hot.writer import HotLog, HotLogError
from pipeline.verify.chain import verify_stream

H = [hashlib.sha256(bytes([i])).digest() for i in range(4)]


def _reference(head: dict[str, object]) -> bytes:
    """How the writer serialised its head before the format layer: orjson, keys as given."""
    return orjson.dumps(head)


def test_a_head_without_an_open_segment_is_the_bytes_the_writer_wrote() -> None:
    head = StreamHead("app", 3, "ab" * 32, 3, (H[0], H[1]))
    assert head.to_json() == _reference({"stream": "app", "next_seq": 3, "last_hash": "ab" * 32, "tree_size": 3,
                                         "frontier": [H[0].hex(), H[1].hex()]})


def test_a_clean_close_inside_a_segment_is_the_bytes_the_writer_wrote() -> None:
    head = StreamHead("app", 7, "cd" * 32, 7, (H[0], H[1], H[2]), segment="seg-00000000000000000004.jsonl",
                      segment_first_seq=4, segment_first_prev="ef" * 32, segment_start_frontier=(H[3],),
                      closed_cleanly=True)
    assert head.to_json() == _reference({
        "stream": "app", "next_seq": 7, "last_hash": "cd" * 32, "tree_size": 7,
        "frontier": [H[0].hex(), H[1].hex(), H[2].hex()], "segment": "seg-00000000000000000004.jsonl",
        "segment_first_seq": 4, "segment_first_prev": "ef" * 32, "segment_start_frontier": [H[3].hex()],
        "closed_cleanly": True})
    assert head.anchor_seq == 4
    assert head.anchor() == (4, "ef" * 32, 4, (H[3],))


def test_the_anchor_without_a_segment_is_the_head_itself() -> None:
    head = StreamHead("app", 3, "ab" * 32, 3, (H[0], H[1]))
    assert head.anchor_seq == 3 and head.anchor() == (3, "ab" * 32, 3, (H[0], H[1]))


def test_what_the_writer_leaves_reads_back_and_rewrites_to_the_same_bytes(tmp_path: Path) -> None:
    with HotLog(tmp_path, "app", heartbeat_interval=0, segment_window=0) as log:
        log.append({"a": 1})
        log.seal()
        log.append({"a": 2})
        log.close(seal=False)
    d = tmp_path / "app"
    raw = (d / HEAD_FILE).read_bytes()
    head = read_head(d)
    assert head is not None and head.closed_cleanly and head.segment_first_seq is not None
    assert head.to_json() == raw
    write_head(tmp_path, head)
    assert (tmp_path / HEAD_FILE).read_bytes() == raw
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_the_head_file_mode_follows_the_umask_like_open(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_head(tmp_path, StreamHead("app", 0, "0" * 64, 0, ()))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / HEAD_FILE).stat().st_mode) == 0o640


def test_no_head_is_none(tmp_path: Path) -> None:
    assert read_head(tmp_path) is None


@pytest.mark.parametrize("raw", [b"[]", b"null", b"3"])
def test_json_that_is_not_an_object_is_no_head_as_before(tmp_path: Path, raw: bytes) -> None:
    (tmp_path / HEAD_FILE).write_bytes(raw)
    assert read_head(tmp_path) is None


@pytest.mark.parametrize(("raw", "named"), [
    (b"{", "not JSON"),
    (b'{"stream":"a","last_hash":"00","tree_size":0,"frontier":[]}', "next_seq is missing"),
    (b'{"stream":"a","next_seq":"1","last_hash":"00","tree_size":0,"frontier":[]}', "next_seq is not an integer"),
    (b'{"stream":"a","next_seq":true,"last_hash":"00","tree_size":0,"frontier":[]}', "next_seq is not an integer"),
    (b'{"stream":"a","next_seq":1,"last_hash":"00","tree_size":1,"frontier":["zz"]}', "frontier is not a list"),
    (b'{"stream":"a","next_seq":1,"last_hash":"00","tree_size":1,"frontier":[],"segment_first_seq":0}',
     "segment_first_prev is missing"),
    (b'{"stream":"a","next_seq":1,"last_hash":"00","tree_size":1,"frontier":[],"closed_cleanly":1}',
     "closed_cleanly"),
])
def test_a_malformed_head_is_an_error_naming_the_field(tmp_path: Path, raw: bytes, named: str) -> None:
    (tmp_path / HEAD_FILE).write_bytes(raw)
    with pytest.raises(HeadError, match=named):
        read_head(tmp_path)
    assert read_head_or_none(tmp_path) is None  # verifiers and the shipper: as if there were none


def test_the_writer_refuses_a_stream_whose_head_is_malformed(tmp_path: Path) -> None:
    with HotLog(tmp_path, "app", heartbeat_interval=0) as log:
        log.append({"a": 1})
    (tmp_path / "app" / HEAD_FILE).write_bytes(b'{"stream":"app","next_seq":"x"}')
    with pytest.raises(HotLogError, match=r"head\.json is malformed .*cannot tell where the chain continues"):
        HotLog(tmp_path, "app", heartbeat_interval=0)


def test_verify_still_compares_the_records_with_a_well_formed_head(tmp_path: Path) -> None:
    with HotLog(tmp_path, "app", heartbeat_interval=0) as log:
        for i in range(3):
            log.append({"i": i})
    d = tmp_path / "app"
    head = read_head(d)
    assert head is not None
    write_head(d, StreamHead(head.stream, head.next_seq + 5, head.last_hash, head.tree_size + 5, head.frontier))
    assert "missing-tail" in {f.reason for f in verify_stream(d).findings}
