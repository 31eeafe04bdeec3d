"""``iter_lines``: every line with its offset, then the unterminated tail, whatever the
chunk size -- and a line longer than many chunks is joined once, not once per chunk."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pipeline.format import segment
from pipeline.format.segment import iter_lines


def _reference(data: bytes) -> list[tuple[int, bytes]]:
    pieces = data.split(b"\n")
    out, offset = [], 0
    for piece in pieces[:-1]:
        out.append((offset, piece + b"\n"))
        offset += len(piece) + 1
    if pieces[-1]:
        out.append((offset, pieces[-1]))
    return out


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_lines_and_offsets_for_any_chunk_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(segment, "READ_CHUNK", chunk)
    rng = random.Random(chunk)
    path = tmp_path / "seg"
    for _ in range(150):
        n = rng.choice([0, 1, 5, 50, 400])
        data = b"".join(rng.choice([b"\n", b"a", b"bb", b"x" * rng.randint(0, 40)]) for _ in range(n))
        path.write_bytes(data)
        assert list(iter_lines(path)) == _reference(data)


def test_a_line_of_many_chunks_is_copied_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The join happens once per line: counted, not timed (a 300 MB line took 37 s when the
    pending start was joined to every chunk, 0.4 s now)."""
    monkeypatch.setattr(segment, "READ_CHUNK", 1024)
    path = tmp_path / "seg"
    path.write_bytes(b"y" * (1024 * 500 + 17) + b"\nshort\n" + b"z" * 5000)
    joined: list[int] = []
    real_join = segment._join

    def counting_join(parts: list[bytes]) -> bytes:
        joined.append(len(parts))
        return real_join(parts)

    monkeypatch.setattr(segment, "_join", counting_join)
    lines = list(iter_lines(path))
    assert [(o, len(ln)) for o, ln in lines] == [(0, 1024 * 500 + 18), (1024 * 500 + 18, 6), (1024 * 500 + 24, 5000)]
    assert joined == [501, 5]  # one join per long line (501 and 5 chunks' parts), none for the short one


@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
def test_limit_reads_only_the_first_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(segment, "READ_CHUNK", chunk)
    path = tmp_path / "seg"
    data = b"one\ntwo\nthree\n" + b"x" * 5000
    path.write_bytes(data)
    for limit in range(len(data) + 3):
        assert list(iter_lines(path, limit=limit)) == _reference(data[:limit])
    assert list(iter_lines(path, limit=None)) == _reference(data)


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_max_line_yields_what_a_cap_allows_and_stops_at_the_first_longer_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """Against the reference: every line up to the first longer than ``max_line``, then that
    line's first ``max_line + 1`` bytes, then nothing; never more than a chunk and the cap
    held at once."""
    monkeypatch.setattr(segment, "READ_CHUNK", chunk)
    rng = random.Random(chunk * 7)
    path = tmp_path / "seg"
    for _ in range(150):
        cap = rng.choice([0, 1, 5, 20, 60])
        n = rng.choice([0, 1, 5, 50, 200])
        data = b"".join(rng.choice([b"\n", b"a", b"bb", b"x" * rng.randint(0, 80)]) for _ in range(n))
        path.write_bytes(data)
        assert list(iter_lines(path, max_line=cap)) == _iter_reference_capped(data, cap), (cap, data)
        limit = rng.randint(0, len(data) + 1)
        assert list(iter_lines(path, limit=limit, max_line=cap)) == _iter_reference_capped(data[:limit], cap)


def _iter_reference_capped(data: bytes, cap: int) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    for offset, line in _reference(data):
        if len(line) > cap:
            out.append((offset, line[: cap + 1]))
            break
        out.append((offset, line))
    return out


def test_a_gigantic_line_is_not_held(tmp_path: Path) -> None:
    """100 MiB without a newline, then a newline: with max_line 1 MiB, the peak is about the
    cap and a chunk, not the line."""
    import tracemalloc

    path = tmp_path / "seg"
    with path.open("wb") as f:
        for _ in range(100):
            f.write(b"q" * (1 << 20))
        f.write(b"\nnext\n")
    tracemalloc.start()
    try:
        got = [(o, len(ln)) for o, ln in iter_lines(path, max_line=1 << 20)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [(0, (1 << 20) + 1)]
    assert peak < 8 << 20, peak  # the parts (cap + a chunk), their join and the cut: ~5 MiB
