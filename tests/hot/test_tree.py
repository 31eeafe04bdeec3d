"""TreeStore: proofs equal the in-memory reference, across restarts, truncation and segment-backed leaves."""

from __future__ import annotations

import hashlib
import itertools
import random
from pathlib import Path

import pytest

from pipeline import merkle
from pipeline.hot.tree import LeafUnavailable, TreeStore, TreeStoreError
from pipeline.record import GENESIS_HASH, encode_record


class Synthetic:
    def leaf_hashes(self, lo: int, hi: int) -> list[bytes]:
        return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(lo, hi)]


def write_segments(d: Path, n: int, cuts: list[int], stream: str = "s") -> list[bytes]:
    d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(n)
    prev = GENESIS_HASH.encode()
    lines = []
    for seq in range(n):
        line, prev = encode_record(stream, seq, b"2026-01-01T00:00:00.000000Z", "event", prev,
                                   b'{"x":"%s"}' % (b"y" * rng.randint(0, 300)))
        lines.append(line)
    bounds = [0, *cuts, n]
    for a, b in itertools.pairwise(bounds):
        (d / f"seg-{a:020d}.jsonl").write_bytes(b"".join(lines[a:b]))
    return lines


def check_against_reference(t: TreeStore, hashes: list[bytes], rounds: int = 150) -> None:
    ref = merkle.subtree_from_leaf_hashes(hashes)
    n_max = len(hashes)
    rng = random.Random(7)
    for n in {1, 255, 256, 257, 512, n_max} & set(range(1, n_max + 1)):
        assert t.root(n) == merkle.root_from_leaf_hashes(hashes[:n])
    for _ in range(rounds):
        n = rng.randint(1, n_max)
        i = rng.randrange(n)
        assert t.inclusion_proof(i, n) == merkle.inclusion_proof(i, n, ref)
        m = rng.randint(0, n)
        assert t.consistency_proof(m, n) == merkle.consistency_proof(m, n, ref)


@pytest.mark.parametrize("store_leaves", [False, True])
def test_synthetic_batches_restart_truncate(tmp_path: Path, store_leaves: bool) -> None:
    hashes = Synthetic().leaf_hashes(0, 3000)
    t = TreeStore(tmp_path, leaf_source=Synthetic(), store_leaves=store_leaves)
    i = 0
    rng = random.Random(1)
    while i < len(hashes):
        k = rng.randint(1, 400)
        t.append(hashes[i : i + k])
        t.sync()
        i += k
    assert t.size == 3000
    assert t.frontier() == merkle.CompactRange(3000, t.frontier()).stack
    check_against_reference(t, hashes)
    t.close()
    t = TreeStore(tmp_path, leaf_source=Synthetic(), store_leaves=store_leaves)
    # without level 0 on disk the store restarts at a tile boundary; the writer re-feeds the rest
    assert t.size == (3000 if store_leaves else 2816)
    t.append(hashes[t.size :])
    assert t.root() == merkle.root_from_leaf_hashes(hashes)
    t.truncate(1234)
    assert t.root() == merkle.root_from_leaf_hashes(hashes[:1234])
    t.append(hashes[1234:2000])
    check_against_reference(t, hashes[:2000], 50)
    with pytest.raises(TreeStoreError):
        t.truncate(2001)
    with pytest.raises(TreeStoreError):
        t.inclusion_proof(0, 2001)


def test_storage_is_levels_8_and_up(tmp_path: Path) -> None:
    t = TreeStore(tmp_path, leaf_source=Synthetic())
    t.append(Synthetic().leaf_hashes(0, 70000))
    t.sync()
    files = {p.name: p.stat().st_size for p in (tmp_path / "tree").iterdir()}
    assert files == {"L08.hashes": 273 * 32, "L16.hashes": 1 * 32}


def test_segment_backed_leaves_and_readonly_reader(tmp_path: Path) -> None:
    lines = write_segments(tmp_path, 2000, [700, 1500])
    hashes = [merkle.leaf_hash(x[:-1]) for x in lines]
    t = TreeStore(tmp_path)
    t.append(hashes[:1000])
    t.sync()
    check_against_reference(t, hashes[:1000])
    t.append(hashes[1000:])
    check_against_reference(t, hashes)
    # a second process reading while the writer lags behind: tiles up to 1792, rest from segments
    r = TreeStore(tmp_path, readonly=True)
    r.extend_readonly(2000)
    check_against_reference(r, hashes, 50)
    with pytest.raises(LeafUnavailable):
        TreeStore(tmp_path, readonly=True).extend_readonly(2001)


def test_torn_tail_is_not_a_leaf(tmp_path: Path) -> None:
    lines = write_segments(tmp_path, 300, [])
    with open(tmp_path / f"seg-{0:020d}.jsonl", "ab") as f:
        f.write(b'{"v":1,"stream":"s","seq":300,"ts')
    t = TreeStore(tmp_path, readonly=True)
    t.extend_readonly(300)
    assert t.root(300) == merkle.root_from_leaves([x[:-1] for x in lines])
    with pytest.raises(LeafUnavailable):
        TreeStore(tmp_path, readonly=True).extend_readonly(301)


def test_crash_between_level_writes_is_repaired(tmp_path: Path) -> None:
    hashes = Synthetic().leaf_hashes(0, 65536 * 2)
    t = TreeStore(tmp_path, leaf_source=Synthetic())
    t.append(hashes)
    t.close()
    l16 = tmp_path / "tree" / "L16.hashes"
    l16.write_bytes(l16.read_bytes()[:32])  # lost the second level-16 node
    t = TreeStore(tmp_path, leaf_source=Synthetic())
    assert l16.stat().st_size == 64
    assert t.root() == merkle.root_from_leaf_hashes(hashes)
