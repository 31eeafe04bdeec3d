"""Names and keys of the layout (pipeline/format/layout.py): each one round-trips through the
parser that reads it, and the names are what docs/FORMAT.md and docs/COLD.md say."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.format import layout


@pytest.mark.parametrize(("seq", "attempt"), [(0, 0), (5, 0), (5, 1), (2**63 - 1, 999_999)])
def test_segment_names_round_trip(seq: int, attempt: int) -> None:
    assert layout.parse_segment_name(layout.segment_name(seq, attempt)) == (seq, attempt)


@pytest.mark.parametrize("name", ["seg-00000000000000000005.0.jsonl", "seg-5.jsonl", "seg-00000000000000000005.jsonl\n",
                                  "seg-٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠5.jsonl", "head.json", "LOCK"])
def test_other_names_are_not_segments(name: str) -> None:
    assert layout.parse_segment_name(name) is None


@pytest.mark.parametrize(("prefix", "compression", "key"), [
    ("", "none", "app/seg-00000000000000000000.jsonl"),
    ("/logs/", "zstd", "logs/app/seg-00000000000000000000.jsonl.zst"),
])
def test_cold_keys_round_trip(prefix: str, compression: str, key: str) -> None:
    name = layout.segment_name(0)
    assert layout.object_key(prefix, "app", name, compression) == key
    assert layout.segment_of_key(key) == ("app", name, compression)
    assert key.startswith(layout.stream_prefix(prefix, "app"))


def test_a_cold_key_needs_a_segment_name_and_a_stream_name() -> None:
    with pytest.raises(ValueError):
        layout.object_key("", "app", "notes.txt", "none")
    with pytest.raises(ValueError):
        layout.object_key("", "../x", layout.segment_name(0), "none")
    assert layout.segment_of_key("app/notes.txt") is None


def test_witness_names_sort_by_tree_size_and_escape_the_origin() -> None:
    origin = "example.com/worm/app"
    assert layout.unescape_origin(layout.escape_origin(origin)) == origin
    assert "/" not in layout.escape_origin(origin)
    names = [layout.witness_note_name(n) for n in (9, 10, 100)]
    assert names == sorted(names)
    assert layout.witness_object_key("w", origin, 10) == f"w/{layout.escape_origin(origin)}/{10:020d}"
    assert layout.witness_server_note(Path("/d"), origin) == Path(f"/d/{layout.escape_origin(origin)}.note")


def test_a_stream_directory_is_recognised_by_its_layout_files(tmp_path: Path) -> None:
    for i, marker in enumerate((layout.HEAD_FILE, layout.LOCK_FILE, layout.segment_name(0))):
        d = tmp_path / f"s{i}"
        d.mkdir()
        assert not layout.is_stream_dir(d)
        (d / marker).write_bytes(b"")
        assert layout.is_stream_dir(d)
    assert layout.stream_dirs(tmp_path) == ["s0", "s1", "s2"]
    assert layout.hot_tier_problem(tmp_path) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert layout.hot_tier_problem(empty) is not None
    (empty / layout.SHIP_DIR).mkdir()
    assert layout.is_hot_tier(empty)
