"""Persistent RFC 6962 tree over one stream: proofs without holding the stream in memory.

Layout (``<stream_dir>/tree/``), see docs/PROOFS.md "Tree store":

- ``L08.hashes``, ``L16.hashes``, ``L24.hashes`` ...: for every level ``L`` that is a positive
  multiple of 8, the hashes of the complete subtrees at that level, in order: node ``k``
  of level ``L`` is ``MTH(leaves[k*2^L : (k+1)*2^L])`` and sits at byte offset ``32*k``.
  This is the "tile" idea of tiled transparency logs (tile height 8): any node at level
  ``L`` is the fold of at most 128 stored nodes of the stored level below it.
- ``L00.hashes`` (optional, ``store_leaves=True``): the leaf hashes themselves.  Off by
  default: at 32 bytes/leaf it would cost 2.7 GB a day at 1k events/s, against
  ~11 MB/day for levels >= 8.  Without it, nodes below level 8 are recomputed from the
  record lines in the segment files (one 256-line tile, a few hundred microseconds).

Nothing but the in-memory compact range (one hash per set bit of the size, O(log n))
is kept in memory.  The store is derived data: every byte in it can be rebuilt from the
segments and checked against seals and signed checkpoints, so it is not append-only
attributed and ``truncate`` may shrink it after a writer recovery.
"""

from __future__ import annotations

import bisect
import hashlib
import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from pipeline import _accel
from pipeline._accel import native as _native
from pipeline.errors import PipelineError
from pipeline.format import merkle
from pipeline.format.layout import TREE_DIR
from pipeline.format.segment import list_segments, parse_segment_name

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
HASH_SIZE = 32
MAX_LEVEL = 63
_SEQ_FIELD = b',"seq":'


def _py_append_walk(size: int, stack: list[bytes],
                    leaf_hashes: list[bytes]) -> tuple[int, list[bytes], dict[int, list[bytes]]]:
    """Append leaf hashes to the compact range (size, stack): the new size and stack, and the
    nodes completed at tile-level heights (every TILE_HEIGHT levels), per level."""
    pending: dict[int, list[bytes]] = {}
    stack = list(stack)
    sha = hashlib.sha256
    for lh in leaf_hashes:
        if len(lh) != HASH_SIZE:
            raise ValueError("leaf hash must be 32 bytes")
        n = size
        h = lh
        level = 0
        while n & 1:
            h = sha(b"\x01" + stack.pop() + h).digest()
            n >>= 1
            level += 1
            if level % TILE_HEIGHT == 0:
                pending.setdefault(level, []).append(h)
        stack.append(h)
        size += 1
    return size, stack, pending


def _c_append_walk(size: int, stack: list[bytes],
                   leaf_hashes: list[bytes]) -> tuple[int, list[bytes], dict[int, list[bytes]]]:
    """The same walk in C (pipeline/_native.c append_collect, tested equal)."""
    assert _native is not None
    cr = _native.CompactRange(size, stack)
    completed: dict[int, list[bytes]] = _native.append_collect(cr, leaf_hashes, TILE_HEIGHT)
    return cr.size, cr.stack, completed


# bound once (the C walk when the accelerator is built)
_append_walk = _c_append_walk if _native is not None else _py_append_walk


class TreeStoreError(PipelineError, RuntimeError):
    """The tree store cannot answer: a range beyond its size, or missing source data."""


class LeafUnavailable(TreeStoreError):
    """Leaf hashes below level 8 are needed but the segment lines are no longer on disk."""


class LeafSource(Protocol):
    def leaf_hashes(self, lo: int, hi: int) -> list[bytes]:
        """RFC 6962 leaf hashes of stream leaves ``[lo, hi)``."""
        ...


def _node(left: bytes, right: bytes) -> bytes:
    # RFC 6962 §2.1: interior node = SHA-256(0x01 || left || right)
    return hashlib.sha256(b"\x01" + left + right).digest()


def fold_perfect(hashes: Sequence[bytes]) -> bytes:
    """Root of a perfect subtree (len is a power of two) from its bottom row (RFC 6962 §2.1)."""
    row = list(hashes)
    sha = hashlib.sha256
    # inlined node hashing: a proof folds ~800 nodes, and call overhead dominated
    while len(row) > 1:
        it = iter(row)
        row = [sha(b"\x01" + left + right).digest() for left, right in zip(it, it, strict=True)]
    return row[0]


class SegmentLeafSource:
    """Leaf hashes read back from ``<stream_dir>/seg-<first_seq:020d>.jsonl`` files.

    A line is located by binary search on byte offsets inside the segment (each record
    line carries its ``seq`` near its start), so no per-line index is stored.
    """

    def __init__(self, stream_dir: Path) -> None:
        self.stream_dir = Path(stream_dir)
        self._firsts: list[int] = []
        self._names: list[str] = []

    def _refresh(self) -> None:
        # seg-<first>.<attempt>.jsonl: a higher attempt replaces a segment whose first line
        # was torn by a crash, so for equal first_seq the last one listed wins
        by_first: dict[int, str] = {}
        for path in list_segments(self.stream_dir):
            parsed = parse_segment_name(path.name)
            if parsed is not None:
                by_first[parsed[0]] = path.name
        self._firsts = sorted(by_first)
        self._names = [by_first[f] for f in self._firsts]

    def _segment_for(self, seq: int, refreshed: bool = False) -> tuple[int, Path]:
        i = bisect.bisect_right(self._firsts, seq) - 1
        # the last segment may have grown or a newer one appeared: re-list when unsure
        if (i < 0 or i == len(self._firsts) - 1) and not refreshed:
            self._refresh()
            return self._segment_for(seq, True)
        if i < 0:
            raise LeafUnavailable(
                f"no segment file in {self.stream_dir} holds seq {seq}; it may have left the hot tier"
            )
        return self._firsts[i], self.stream_dir / self._names[i]

    @staticmethod
    def _seq_at(mm: mmap.mmap, pos: int) -> int:
        # {"v":1,"stream":"<= 128 chars>","seq":N  -- seq is within the first ~160 bytes
        i = mm.find(_SEQ_FIELD, pos, pos + 200)
        if i < 0:
            raise TreeStoreError(f"no seq field in the line at byte {pos}")
        j = mm.find(b",", i + len(_SEQ_FIELD), i + len(_SEQ_FIELD) + 24)
        if j < 0:
            raise TreeStoreError(f"malformed seq field in the line at byte {pos}")
        return int(mm[i + len(_SEQ_FIELD) : j])

    def _find_line(self, mm: mmap.mmap, target: int, path: Path) -> int:
        """Byte offset of the line whose seq is ``target`` (binary search, then a short scan)."""
        lo, hi = 0, len(mm)  # lo: a line start with seq <= target; the answer is < hi
        while hi - lo > 8192:
            mid = (lo + hi) // 2
            nl = mm.find(b"\n", mid, hi)
            if nl < 0 or nl + 1 >= hi:
                hi = mid + 1
                continue
            start = nl + 1
            s = self._seq_at(mm, start)
            if s == target:
                return start
            if s < target:
                lo = start
            else:
                hi = mid + 1
        pos = lo
        while pos < len(mm):
            s = self._seq_at(mm, pos)
            if s == target:
                return pos
            if s > target:
                break
            nl = mm.find(b"\n", pos)
            if nl < 0:
                break
            pos = nl + 1
        raise LeafUnavailable(f"seq {target} not found in {path}")

    def leaf_hashes(self, lo: int, hi: int) -> list[bytes]:
        return [hashlib.sha256(b"\x00" + line).digest() for line in self.lines(lo, hi)]

    def lines(self, lo: int, hi: int) -> list[bytes]:
        """Record lines ``[lo, hi)`` without their newline (the Merkle leaves)."""
        out: list[bytes] = []
        seq = lo
        exhausted: int | None = None  # first_seq of a segment already read to its end
        while seq < hi:
            first, path = self._segment_for(seq)
            if first == exhausted:
                self._refresh()
                first, path = self._segment_for(seq, True)
                if first == exhausted:
                    raise LeafUnavailable(f"seq {seq} is past the last complete line in {path}")
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size == 0:
                        raise LeafUnavailable(f"segment {path} is empty but should hold seq {seq}")
                    with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mm:
                        pos = self._find_line(mm, seq, path)
                        last_start = pos
                        seg_lo = seq
                        while seq < hi:
                            nl = mm.find(b"\n", pos)
                            if nl < 0:
                                break  # a torn tail: the line is not part of the tree
                            out.append(mm[pos:nl])
                            last_start = pos
                            seq += 1
                            pos = nl + 1
                            if pos >= size:
                                break
                        # the first line was found by its seq; check the last one too, so a
                        # gap or duplicate inside the range cannot go unnoticed
                        if seq > seg_lo and self._seq_at(mm, last_start) != seq - 1:
                            raise TreeStoreError(f"lines of {path} are not contiguous in seq before {seq}")
            except FileNotFoundError as exc:
                raise LeafUnavailable(f"segment {path} disappeared while reading seq {seq}") from exc
            exhausted = first
        return out


class TreeStore:
    """The stream's Merkle tree, persisted as tiles of complete subtree hashes.

    Thread-safety: ``append``/``sync``/``truncate`` come from the writer's flusher thread,
    proofs from the checkpoint emitter or the CLI; one lock serialises them (proofs read
    immutable nodes, so holding the lock only guards size and file lengths).
    """

    def __init__(
        self,
        stream_dir: Path,
        *,
        leaf_source: LeafSource | None = None,
        store_leaves: bool = False,
        tile_cache: int = 8,
        readonly: bool = False,
    ) -> None:
        self.stream_dir = Path(stream_dir)
        self.dir = self.stream_dir / TREE_DIR
        # readonly: a reader (prove CLI, verifier) beside a live writer never repairs files
        self.readonly = readonly
        if not readonly:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.store_leaves = store_leaves
        self._source: LeafSource = leaf_source if leaf_source is not None else SegmentLeafSource(self.stream_dir)
        self._lock = threading.RLock()
        self._fds: dict[int, int] = {}
        self._counts: dict[int, int] = {}
        self._dirty: set[int] = set()
        self._stack: list[bytes] = []
        self._size = 0
        self._tiles: OrderedDict[int, list[bytes]] = OrderedDict()
        self._tile_cache = max(2, tile_cache)  # a proof touches at most two tiles
        self._load()

    # ------------------------------------------------------------------ storage
    def _stored_levels(self) -> list[int]:
        return ([0] if self.store_leaves else []) + list(range(TILE_HEIGHT, MAX_LEVEL + 1, TILE_HEIGHT))

    def _fd(self, level: int) -> int:
        fd = self._fds.get(level)
        if fd is None:
            path = self.dir / f"L{level:02d}.hashes"
            flags = os.O_RDONLY if self.readonly else os.O_RDWR | os.O_CREAT
            fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
            self._fds[level] = fd
            self._counts[level] = os.fstat(fd).st_size // HASH_SIZE
        return fd

    def _count(self, level: int) -> int:
        if level not in self._counts:
            if not (self.dir / f"L{level:02d}.hashes").exists():
                return 0  # levels are created on first write, not on a read
            self._fd(level)
        return self._counts[level]

    def _read(self, level: int, start: int, count: int) -> list[bytes]:
        fd = self._fd(level)
        buf = os.pread(fd, HASH_SIZE * count, HASH_SIZE * start)
        if len(buf) != HASH_SIZE * count:
            raise TreeStoreError(
                f"tree level {level} holds {self._counts[level]} nodes; nodes {start}..{start + count} needed"
            )
        return [buf[i : i + HASH_SIZE] for i in range(0, len(buf), HASH_SIZE)]

    def _write(self, level: int, hashes: list[bytes]) -> None:
        if self.readonly:
            raise TreeStoreError("tree store was opened read-only")
        fd = self._fd(level)
        data = b"".join(hashes)
        off = self._counts[level] * HASH_SIZE
        written = os.pwrite(fd, data, off)
        if written != len(data):
            raise OSError(f"short write to tree level {level}")
        self._counts[level] += len(hashes)
        self._dirty.add(level)

    def _load(self) -> None:
        for p in self.dir.glob("L*.hashes"):
            level = int(p.name[1:3])
            if level % TILE_HEIGHT == 0 and (level or self.store_leaves):
                self._fd(level)
        size = self._count(0) if self.store_leaves else self._count(TILE_HEIGHT) << TILE_HEIGHT
        # repair levels left inconsistent by a crash between two level writes:
        # longer than the size implies -> cut; shorter -> recompute from the level below
        for level in self._stored_levels():
            want = size >> level
            have = self._count(level)
            if level == 0 or (level == TILE_HEIGHT and not self.store_leaves):
                continue
            if self.readonly:
                if have < want:
                    # the writer is between two level writes of one append: use a smaller tree
                    size = min(size, ((have + 1) << level) - 1) >> TILE_HEIGHT << TILE_HEIGHT
                continue
            if have > want:
                os.ftruncate(self._fd(level), want * HASH_SIZE)
                self._counts[level] = want
            elif have < want:
                below = level - TILE_HEIGHT
                missing = [
                    fold_perfect(self._read(below, k * TILE_WIDTH, TILE_WIDTH)) for k in range(have, want)
                ]
                self._write(level, missing)
            if want == 0:
                break
        self._size = size
        self._stack = self._frontier(size)

    def _frontier(self, size: int) -> list[bytes]:
        stack: list[bytes] = []
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                stack.append(self._perfect(level, start >> level, size))
                start += 1 << level
        return stack

    # ------------------------------------------------------------------ writer API
    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hashes: Sequence[bytes]) -> None:
        """Add leaf hashes (already ``SHA-256(0x00 || line)``), contiguous, in seq order."""
        with self._lock:
            self._size, self._stack, completed = _append_walk(self._size, self._stack, list(leaf_hashes))
            if self.store_leaves and leaf_hashes:
                self._write(0, list(leaf_hashes))
            for level in sorted(completed):
                self._write(level, completed[level])

    def sync(self) -> None:
        """Make the stored levels durable (called right after the writer's segment fsync)."""
        with self._lock:
            for level in sorted(self._dirty):
                _accel.fsync(self._fds[level], data_only=True)
            self._dirty.clear()

    def truncate(self, n: int) -> None:
        """Shrink to the first ``n`` leaves (writer recovery found fewer durable records)."""
        with self._lock:
            if not 0 <= n <= self._size:
                raise TreeStoreError(f"cannot truncate a tree of size {self._size} to {n}")
            for level in self._stored_levels():
                keep = n >> level
                if self._count(level) > keep:
                    os.ftruncate(self._fd(level), keep * HASH_SIZE)
                    self._counts[level] = keep
                    self._dirty.add(level)
            self._tiles.clear()
            self._size = n
            self._stack = self._frontier(n)
            self.sync()

    def close(self) -> None:
        with self._lock:
            self.sync()
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    # ------------------------------------------------------------------ reads
    def frontier(self) -> list[bytes]:
        """The compact range of the current tree (largest subtree first)."""
        with self._lock:
            return list(self._stack)

    def _leaves(self, lo: int, hi: int, size: int) -> list[bytes]:
        if self.store_leaves:
            return self._read(0, lo, hi - lo)
        tile = lo >> TILE_HEIGHT
        tlo = tile << TILE_HEIGHT
        if hi > tlo + TILE_WIDTH:
            raise TreeStoreError("leaf range crosses a tile")  # callers never ask for this
        # one proof needs up to 8 sibling subtrees from the same tile (and the right edge's
        # partial tile): fetch each tile once.  Leaves never change, so a cached prefix of
        # a partial tile stays valid; it is refetched only when more of it is needed.
        cached = self._tiles.get(tile)
        if cached is None or len(cached) < hi - tlo:
            cached = self._source.leaf_hashes(tlo, min(tlo + TILE_WIDTH, max(size, hi)))
            self._tiles[tile] = cached
            while len(self._tiles) > self._tile_cache:
                self._tiles.popitem(last=False)
        else:
            self._tiles.move_to_end(tile)
        return cached[lo - tlo : hi - tlo]

    def _nodes(self, level: int, start: int, count: int, limit: int) -> list[bytes]:
        """Nodes ``start..start+count`` of a stored level; any not stored yet (a reader ahead
        of the writer's tiles, see ``extend_readonly``) are recomputed from the level below."""
        if level == 0 and not self.store_leaves:
            return self._leaves(start, start + count, limit)
        stored = self._count(level)
        have = max(0, min(count, stored - start))
        out = self._read(level, start, have) if have else []
        if have < count:
            below = level - TILE_HEIGHT
            for k in range(start + have, start + count):
                out.append(fold_perfect(self._nodes(below, k * TILE_WIDTH, TILE_WIDTH, limit)))
        return out

    def _perfect(self, level: int, index: int, size: int | None = None) -> bytes:
        """Hash of the complete subtree ``(level, index)`` from the nearest stored level below."""
        limit = self._size if size is None else size
        if (index + 1) << level > limit:
            raise TreeStoreError(f"subtree at level {level} index {index} is beyond tree size {limit}")
        base = level - level % TILE_HEIGHT
        width = 1 << (level - base)
        return fold_perfect(self._nodes(base, index * width, width, limit))

    def extend_readonly(self, size: int) -> None:
        """Let a read-only store answer for ``size`` leaves when its tiles lag behind the
        segments (the writer has not stored the last tile yet): the missing part is read
        from the segment lines."""
        with self._lock:
            if size <= self._size:
                return
            if not self.readonly:
                raise TreeStoreError("extend_readonly is for read-only stores; a writer appends")
            self._source.leaf_hashes(size - 1, size)  # raises LeafUnavailable if not on disk
            self._stack = self._frontier(size)
            self._size = size

    def subtree_hash(self, lo: int, hi: int) -> bytes:
        """``MTH(leaves[lo:hi])`` (RFC 6962 §2.1) from stored complete subtrees, O(log n) reads."""
        with self._lock:
            if not 0 <= lo < hi <= self._size:
                raise TreeStoreError(f"range [{lo}, {hi}) is not inside a tree of size {self._size}")
            return self._mth(lo, hi)

    def _mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            return self._perfect(n.bit_length() - 1, lo // n)
        k = 1 << ((n - 1).bit_length() - 1)
        return _node(self._mth(lo, lo + k), self._mth(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        """Root of the tree of ``size`` leaves (default: the current size)."""
        with self._lock:
            if size is None or size == self._size:
                cr = merkle.CompactRange(self._size, self._stack)
                return cr.root()
            if not 0 <= size <= self._size:
                raise TreeStoreError(f"no tree of size {size}: the store holds {self._size} leaves")
            if size == 0:
                return merkle.EMPTY_ROOT
            return self._mth(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 §2.1.1 audit path for ``index`` in the tree of ``size`` leaves, leaf-to-root."""
        with self._lock:
            size = self._size if size is None else size
            if size > self._size:
                raise TreeStoreError(f"no tree of size {size}: the store holds {self._size} leaves")
            return merkle.inclusion_proof(index, size, self._mth_checked)

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        """RFC 6962 §2.1.2 consistency proof from ``old`` to ``new`` leaves."""
        with self._lock:
            new = self._size if new is None else new
            if new > self._size:
                raise TreeStoreError(f"no tree of size {new}: the store holds {self._size} leaves")
            return merkle.consistency_proof(old, new, self._mth_checked)

    def _mth_checked(self, lo: int, hi: int) -> bytes:
        return self._mth(lo, hi)

    def leaf_hash_fn(self) -> Callable[[int], bytes]:
        """Leaf hash at an index (for tests and verification of stored data)."""

        def fn(i: int) -> bytes:
            with self._lock:
                return self._perfect(0, i)

        return fn
