"""Inclusion-proof cost on a 10-million-leaf stream (issue 3: produce <= 5 ms, verify <= 1 ms).

The TreeStore is built with synthetic leaf hashes (leaf i = SHA-256(u64be(i))) fed through
the same ``append`` the writer uses; nodes below level 8 come from a synthetic leaf source
that recomputes the 256 hashes of a tile, standing in for reading 256 record lines from a
segment (measured separately below on a real segment file).

    .venv/bin/python bench/bench_proofs.py [--leaves N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import tempfile
import time
from pathlib import Path

from pipeline import merkle
from pipeline.hot.tree import SegmentLeafSource, TreeStore
from pipeline.record import GENESIS_HASH, encode_record


class Synthetic:
    def leaf_hashes(self, lo: int, hi: int) -> list[bytes]:
        return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(lo, hi)]


def build(d: Path, n: int) -> TreeStore:
    t = TreeStore(d, leaf_source=Synthetic())
    if 0 < t.size <= n and n - t.size < 1 << 16:  # reuse a --dir built before (tile-aligned on reopen)
        t.append(Synthetic().leaf_hashes(t.size, n))
        return t
    t.truncate(0)
    chunk = 1 << 16
    t0 = time.perf_counter()
    src = Synthetic()
    for lo in range(0, n, chunk):
        t.append(src.leaf_hashes(lo, min(n, lo + chunk)))
    t.sync()
    print(f"built {n:,} leaves in {time.perf_counter() - t0:.1f} s "
          f"({(d / 'tree' / 'L08.hashes').stat().st_size / n:.3f} bytes/leaf on disk)")
    return t


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--leaves", type=int, default=10_000_000)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    d = args.dir or Path(tempfile.mkdtemp(prefix="bench-proofs-"))
    t = build(d, args.leaves)
    n = t.size
    root = t.root()
    rng = random.Random(1)
    # measure what `pipeline prove` does: a read-only store beside the writer, no tile cache
    t0 = time.perf_counter()
    t = TreeStore(d, leaf_source=Synthetic(), tile_cache=0, readonly=True)
    t.extend_readonly(n)
    print(f"open read-only store + extend to {n:,}: {(time.perf_counter() - t0) * 1e3:.2f} ms")
    gen, ver = [], []
    src = Synthetic()
    for _ in range(args.rounds):
        i = rng.randrange(n)
        t0 = time.perf_counter()
        proof = t.inclusion_proof(i, n)
        t1 = time.perf_counter()
        merkle.verify_inclusion(i, n, src.leaf_hashes(i, i + 1)[0], proof, root)
        t2 = time.perf_counter()
        gen.append((t1 - t0) * 1e3)
        ver.append((t2 - t1) * 1e3)
    print(f"inclusion proof, {n:,} leaves, {len(proof)} hashes:")
    print(f"  produce: median {statistics.median(gen):.3f} ms  p99 {pct(gen, 0.99):.3f} ms  (target <= 5 ms)")
    print(f"  verify:  median {statistics.median(ver):.3f} ms  p99 {pct(ver, 0.99):.3f} ms  (target <= 1 ms)")
    cons = []
    for _ in range(50):
        m = rng.randint(1, n)
        t0 = time.perf_counter()
        t.consistency_proof(m, n)
        cons.append((time.perf_counter() - t0) * 1e3)
    print(f"  consistency proof: median {statistics.median(cons):.3f} ms")

    # the real level-0 path: 256 record lines read back from a 200k-line segment
    seg_dir = Path(tempfile.mkdtemp(prefix="bench-seg-"))
    prev = GENESIS_HASH.encode()
    lines = []
    for seq in range(200_000):
        line, prev = encode_record("app", seq, b"2026-01-01T00:00:00.000000Z", "event", prev,
                                   b'{"user":"u%d","action":"login","detail":"%s"}' % (seq, b"x" * 150))
        lines.append(line)
    (seg_dir / f"seg-{0:020d}.jsonl").write_bytes(b"".join(lines))
    source = SegmentLeafSource(seg_dir)
    tile = []
    for _ in range(100):
        lo = rng.randrange(200_000 // 256) * 256
        t0 = time.perf_counter()
        source.leaf_hashes(lo, lo + 256)
        tile.append((time.perf_counter() - t0) * 1e3)
    print(f"level-0 tile (256 lines) from a {sum(map(len, lines)) >> 20} MiB segment: "
          f"median {statistics.median(tile):.3f} ms")


if __name__ == "__main__":
    main()
