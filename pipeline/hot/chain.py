"""Chain state and the append path of one stream.

``Chain`` holds what the next record depends on -- its seq, the previous record's hash, the
stream's Merkle compact range, the open segment -- and the queue of record lines not yet
written (the open ``Batch``).  Every append path builds its line here: one event
(``append``), a batch (``append_all``), and the log's own records (seals, heartbeats,
recovery records).  The flusher (``pipeline.hot.flusher``) takes the queue with ``take``
and hands failures back with ``rollback``.

Locks.  ``lock`` guards all of the above, and also the flusher's durability state, so
that a waiter reads one consistent picture.  The Merkle maintenance of event lines is
deferred to whoever flushes (``take``) and serialised by ``_merkle_lock``, which only this
class takes, always after ``lock``; ``take`` acquires it before letting ``lock`` go, so a
seal, which needs the roots, can never hash later lines before earlier ones.  The flusher's
own lock is taken before ``lock`` (never while holding it): the one order is
flusher I/O lock -> ``lock`` -> ``_merkle_lock``, and nothing outside this class can take
the last one (``take`` and ``rollback`` take it themselves).

Accelerated operations are bound once, at import: the C accelerator's when it is built,
else the Python reference next to them (``PIPELINE_NO_NATIVE=1`` forces these).
"""

from __future__ import annotations

import collections
import errno
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson

from pipeline._accel import native
from pipeline.format import merkle
from pipeline.format.record import GENESIS_HASH, Kind, encode_record, record_prefix
from pipeline.hot.active import Segment, SegmentFiles
from pipeline.hot.errors import HotLogError

if TYPE_CHECKING:
    from pipeline.crypt.writer import EncryptionSettings, Epoch
    from pipeline.crypt.writer import PyRatchet as Ratchet

__all__ = ["Anchor", "Batch", "Chain", "Receipt", "Run", "SealInfo", "Snapshot", "Taken"]

_KIND_BYTES = {k.value: k.value.encode() for k in Kind}
_EVENT = Kind.EVENT.value  # a plain str: Enum.value is a Python-level property
_NO_LIMIT = 1 << 62
SEAL_ROOM = 4096  # bytes kept free in a segment for its seal (its frontier grows with log2 of the stream)


class Receipt(NamedTuple):
    """Proof of acceptance: the record's seq and hash.  In ``group``/``fsync`` mode an
    ``append`` that returned a receipt (with ``wait=True``) is durable.  (A NamedTuple:
    built once per append, it must be cheap.)"""

    seq: int
    hash: str
    segment: str
    generation: int = 0


@dataclass(frozen=True, slots=True)
class SealInfo:
    stream: str
    segment_path: Path
    seal_seq: int
    tree_size_after: int
    tree_root_after: bytes


class Anchor(NamedTuple):
    """The chain state at one seq: where a segment starts (after a seal, a recovery's start,
    or the start of the open segment).  ``head.json`` stores one; start-up continues from the
    newest of it and the newest seal still on disk (docs/FORMAT.md §6)."""

    next_seq: int
    prev: bytes
    cr_size: int
    stack: list[bytes]


@dataclass(slots=True)
class Snapshot:
    next_seq: int
    prev: bytes
    cr_size: int
    cr_stack: list[bytes]
    seg: Segment | None
    seg_size: int
    seg_count: int
    seg_cr: merkle.CompactRange | None

    def anchor(self) -> Anchor:
        return Anchor(self.next_seq, self.prev, self.cr_size, self.cr_stack)


@dataclass(slots=True)
class Run:
    """Lines queued for one segment, in order."""

    seg: Segment
    chunks: list[bytes] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)  # leaf hashes of chunks[:hashed]
    finalize: bool = False  # the run ends with the segment's seal
    after: Snapshot | None = None  # the chain state right after this run's seal
    hashed: int = 0  # chunks already in the Merkle trees (see Chain._hash_runs)


class Completion:
    """A one-shot event for many waiters, cheaper than ``threading.Event`` when 16 threads
    wait for every flush.  Each waiter blocks on a lock of its own, and the waiters are woken
    one after another, like a baton: ``set`` releases the first, and each waiter, once it
    has seen the flag, releases the next.  Woken all at once (``Event.set``), the waiters
    would wake together only to queue for the GIL, each sleeping a second time; passed on
    one at a time, a waiter mostly finds the GIL free (measured with 16 appending threads:
    3.3 context switches per event down to 2.1, and ~20% more events/s; docs/BENCHMARKS.md).

    Correctness rests on the GIL making each deque operation atomic, and on one rule: a
    waiter whose lock was taken from the queue passes the baton on, however it returns.
    ``set`` sets the flag before it takes the first lock, and a waiter queues before it
    reads the flag, so a waiter that reads False is in the queue the baton walks.  A waiter
    that times out takes itself out of the queue; if it is no longer there, the baton
    reached it meanwhile and it passes it on."""

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: collections.deque[Any] = collections.deque()

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        self._pass()

    def _pass(self) -> None:
        """Wake the next waiter (a lock taken from the queue is released exactly once)."""
        try:
            lock = self._waiters.popleft()
        except IndexError:
            return
        lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            self._pass()  # a waiter arriving late helps the baton along
            return True
        lock = threading.Lock()
        lock.acquire()
        self._waiters.append(lock)
        if not self._flag:
            lock.acquire(True, -1 if timeout is None else timeout)
            if not self._flag:
                try:
                    self._waiters.remove(lock)
                    return False
                except ValueError:
                    pass  # taken from the queue by a pass meanwhile: the flag is set
        # the baton may have reached this waiter (or be on its way): pass it on
        self._pass()
        return True


class Batch:
    """What one flush writes: the runs queued since the previous flush took its batch.
    ``taken`` is set when a flush takes it, ``done`` when that flush has finished (written,
    and fsynced if it was a synced flush) or failed: waiters for a record in this batch
    wait for ``done`` alone, so records appended concurrently share one group commit and
    no waiter needs the chain's lock to be woken."""

    __slots__ = ("done", "first_seq", "gathered", "pending", "runs", "taken", "waiters", "want")

    def __init__(self, first_seq: int) -> None:
        self.first_seq = first_seq
        self.runs: list[Run] = []
        self.pending = 0  # bytes queued
        self.taken = threading.Event()
        self.done = Completion()
        # group commit's gathering (HotLog._gather): appenders that will wait for this
        # batch's commit, and how many the flusher waits for before it takes the batch
        self.waiters = 0
        self.want = 0
        self.gathered: Completion | None = None

    def add_waiter(self) -> None:
        """One more appender will wait for this batch (caller holds the chain's lock)."""
        self.waiters += 1
        if self.waiters == self.want and self.gathered is not None:
            self.gathered.set()


@dataclass(slots=True)
class Taken:
    """A batch a flush took, with the chain state it leads to."""

    batch: Batch
    upto: int  # the last seq in the batch
    candidate: Snapshot  # the chain state once the batch is written
    seals: list[tuple[Segment, int, bytes]]
    seg_now: Segment | None
    head_due: Anchor | None


class TreeStoreLike(Protocol):
    @property
    def size(self) -> int: ...

    def append(self, leaf_hashes: list[bytes]) -> None: ...

    def sync(self) -> None: ...

    def truncate(self, size: int) -> None: ...


# ---------------------------------------------------------------- accelerated operations
# Each is bound once: the C function when the accelerator is built, else its Python
# reference (tests/test_native.py checks both write the same bytes).


def _py_queue_record(prefix: bytes, seq: int, ts: bytes, kind: bytes, prev: bytes, data: bytes,
                     chunks: list[bytes], limit: int, seg_name: str, gen: int) -> tuple[Receipt, bytes, int] | None:
    """Build a record line (the same bytes as ``pipeline.format.record.encode_record``, with the
    stream's prefix precomputed) and queue it, or None when it would exceed ``limit``."""
    body = b"".join((prefix, b"%d" % seq, b',"ts":"', ts, b'","kind":"', kind, b'","prev":"', prev,
                     b'","data":', data))
    digest = hashlib.sha256(body).hexdigest().encode()
    line = b"".join((body, b',"hash":"', digest, b'"}\n'))
    if len(line) > limit:
        return None
    chunks.append(line)
    return Receipt(seq, digest.decode(), seg_name, gen), digest, len(line)


def _py_queue_records(prefix: bytes, seq: int, ts: bytes, prev: bytes, items: list[bytes], start: int,
                      chunks: list[bytes], room: int, seg_count: int, seg_name: str,
                      gen: int) -> tuple[int, int, bytes, list[Receipt]]:
    """Queue ``items[start:]`` while they fit in ``room``: (count, bytes, last hash, receipts)."""
    count = added = 0
    receipts: list[Receipt] = []
    for data in items[start:]:
        out = _py_queue_record(prefix, seq + count, ts, b"event", prev, data, chunks, room - added, seg_name, gen)
        if out is None:
            break
        receipt, prev, n = out
        receipts.append(receipt)
        added += n
        count += 1
    return count, added, prev, receipts


def _py_queue_sealed_record(prefix: bytes, seq: int, ts: bytes, prev: bytes, plaintext: bytes,
                            chunks: list[bytes], limit: int, seg_name: str, gen: int, ratchet: Ratchet,
                            head: bytes) -> tuple[Receipt, bytes, int] | None:
    """``_py_queue_record`` for one encrypted event: the line holds ``ratchet.seal(seq,
    plaintext, head)``, and the ratchet steps past ``seq`` once it is queued."""
    out = _py_queue_record(prefix, seq, ts, b"event", prev, ratchet.seal(seq, plaintext, head), chunks, limit,
                           seg_name, gen)
    if out is not None:
        ratchet.consumed(seq)
    return out


def _py_queue_sealed(prefix: bytes, seq: int, ts: bytes, prev: bytes, items: list[bytes], start: int,
                     chunks: list[bytes], room: int, seg_name: str, gen: int, ratchet: Ratchet,
                     heads: list[bytes] | None) -> tuple[int, int, bytes, list[Receipt]]:
    """``_py_queue_records`` for an encrypted stream: each item is the plaintext of an event,
    written as ``ratchet.seal(seq, item, head)``; the ratchet steps past each queued seq."""
    count = added = 0
    receipts: list[Receipt] = []
    for i in range(start, len(items)):
        s = seq + count
        data = ratchet.seal(s, items[i], b"{" if heads is None else heads[i - start])
        out = _py_queue_record(prefix, s, ts, b"event", prev, data, chunks, room - added, seg_name, gen)
        if out is None:
            break
        ratchet.consumed(s)
        receipt, prev, n = out
        receipts.append(receipt)
        added += n
        count += 1
    return count, added, prev, receipts


def _py_hash_lines(chunks: list[bytes], start: int, seg_cr: merkle.CompactRange,
                   stream_cr: merkle.CompactRange) -> list[bytes]:
    """Leaf-hash ``chunks[start:]`` into both compact ranges; returns the leaf hashes."""
    leaves = []
    for line in chunks[start:]:
        lh = merkle.leaf_hash(line[:-1])
        seg_cr.append(lh)
        stream_cr.append(lh)
        leaves.append(lh)
    return leaves


if native is not None:
    _c = native

    def _c_queue_record(prefix: bytes, seq: int, ts: bytes, kind: bytes, prev: bytes, data: bytes,
                        chunks: list[bytes], limit: int, seg_name: str,
                        gen: int) -> tuple[Receipt, bytes, int] | None:
        out: tuple[Receipt, bytes, int] | None = _c.append_record(
            prefix, seq, ts, kind, prev, data, None, None, chunks, None, limit, Receipt, seg_name, gen)
        return out

    def _c_queue_records(prefix: bytes, seq: int, ts: bytes, prev: bytes, items: list[bytes], start: int,
                         chunks: list[bytes], room: int, seg_count: int, seg_name: str,
                         gen: int) -> tuple[int, int, bytes, list[Receipt]]:
        try:
            out: tuple[int, int, bytes, list[Receipt]] = _c.append_records(
                prefix, seq, ts, b"event", prev, items, start, None, None, chunks, None, room, seg_count,
                Receipt, seg_name, gen)
        except Exception:  # nothing was queued; the per-record path raises the precise error
            return 0, 0, prev, []
        return out

    def _c_queue_sealed_record(prefix: bytes, seq: int, ts: bytes, prev: bytes, plaintext: bytes,
                               chunks: list[bytes], limit: int, seg_name: str, gen: int, ratchet: Ratchet,
                               head: bytes) -> tuple[Receipt, bytes, int] | None:
        out: tuple[Receipt, bytes, int] | None = _c.append_record(
            prefix, seq, ts, b"event", prev, plaintext, None, None, chunks, None, limit, Receipt, seg_name, gen,
            ratchet, head)
        return out

    def _c_queue_sealed(prefix: bytes, seq: int, ts: bytes, prev: bytes, items: list[bytes], start: int,
                        chunks: list[bytes], room: int, seg_name: str, gen: int, ratchet: Ratchet,
                        heads: list[bytes] | None) -> tuple[int, int, bytes, list[Receipt]]:
        try:
            out: tuple[int, int, bytes, list[Receipt]] = _c.append_records(
                prefix, seq, ts, b"event", prev, items, start, None, None, chunks, None, room, 1,
                Receipt, seg_name, gen, ratchet, heads)
        except Exception:  # nothing was queued; the per-record path raises the precise error
            return 0, 0, prev, []
        return out

    queue_record = _c_queue_record
    queue_records = _c_queue_records
    queue_sealed = _c_queue_sealed
    queue_sealed_record = _c_queue_sealed_record
    hash_lines: Callable[[list[bytes], int, merkle.CompactRange, merkle.CompactRange], list[bytes]] = \
        native.hash_lines
else:
    queue_record = _py_queue_record
    queue_records = _py_queue_records
    queue_sealed = _py_queue_sealed
    queue_sealed_record = _py_queue_sealed_record
    hash_lines = _py_hash_lines


_LEAF0 = hashlib.sha256(b"\x00")


def _leaf(line: bytes) -> bytes:
    """The RFC 6962 leaf hash of a record line (without its newline), without a copy."""
    h = _LEAF0.copy()
    h.update(memoryview(line)[:-1])
    return h.digest()


class Chain:
    """The chain state of one stream and its append paths (see the module docstring)."""

    def __init__(self, *, stream: str, hot_dir: Path, files: SegmentFiles, segment_max_bytes: int,
                 now: Callable[[], bytes], seal_extension: Callable[[dict[str, Any]], dict[str, Any]] | None,
                 wake: threading.Event, encryption: EncryptionSettings | None = None) -> None:
        self.lock = threading.Lock()
        self._merkle_lock = threading.RLock()
        self.stream = stream
        self.hot_dir = hot_dir
        self.files = files
        self.segment_max_bytes = segment_max_bytes
        self.now = now
        self._seal_extension = seal_extension
        self._wake = wake  # the flusher's wake-up
        self._stream_b = stream.encode()
        self._prefix = record_prefix(self._stream_b)  # what every line of the stream starts with

        self.seq = 0
        self.prev = GENESIS_HASH.encode()
        self.cr = merkle.CompactRange()
        self.seg: Segment | None = None
        self.batch = Batch(0)  # the open batch: lines queued and not yet taken by a flush
        self.taken: Batch | None = None  # the batch the newest flush took
        self.pending_seals: list[tuple[Segment, int, bytes]] = []
        self.gen = 0  # bumped by every rollback; receipts carry it
        self.failure: BaseException | None = None
        self.abandoned: list[tuple[Path, int]] = []
        self.explained_at: int | None = None  # seq of the recovery record naming self.abandoned
        self.closed = False
        # where the newest segment starts, to be stored in head.json once durable
        self.head_due: Anchor | None = None
        self.flusher_idle = False  # the flusher sleeps with nothing pending
        # event encryption (pipeline.crypt): the settings for the next segment, those of the
        # open one, and the open segment's key epoch (created with its first event)
        self.encryption_next = encryption
        self._crypt = encryption
        self._epoch: Epoch | None = None

    # ------------------------------------------------------------------ appending (caller holds lock)

    def append(self, kind: str, data_json: bytes, ts: bytes | None = None) -> Receipt:
        """Build, hash and queue one record; its leaf hash joins the trees when flushed."""
        if self.closed or self.failure is not None or self.abandoned:
            self.ensure_usable()
        if ts is None:
            ts = self.now()
        seg = self.seg
        if seg is None:
            seg = self.open_segment(ts)
        # keep room for the seal; a first record always fits (also after its key record)
        fits_any = not seg.count
        if kind == _EVENT and self._crypt is not None:
            epoch = self._epoch
            if epoch is None or epoch.segment != seg.name:
                epoch = self._epoch_for(seg, ts)
            run = self._tail_run(seg)
            queued = queue_sealed_record(self._prefix, self.seq, ts, self.prev, data_json, run.chunks,
                                         _NO_LIMIT if fits_any else self.segment_max_bytes - SEAL_ROOM - seg.size,
                                         seg.name, self.gen, epoch.ratchet,
                                         epoch.head(data_json) if epoch.has_clear else b"{")
        else:
            run = self._tail_run(seg)
            queued = queue_record(self._prefix, self.seq, ts, _KIND_BYTES[kind], self.prev, data_json, run.chunks,
                                  _NO_LIMIT if fits_any else self.segment_max_bytes - SEAL_ROOM - seg.size,
                                  seg.name, self.gen)
        if queued is None:
            self.seal()
            self.open_segment(ts)
            return self.append(kind, data_json, ts)  # the new segment's first record
        receipt, self.prev, n = queued
        seg.size += n
        seg.count += 1
        self.batch.pending += n
        self.seq += 1
        return receipt

    def append_all(self, items: list[bytes], out: list[Any], *, errors_as_results: bool) -> None:
        """Queue every prepared item in order, appending each receipt to ``out``: runs that
        fit in the current segment in one call, anything else one at a time.  With
        ``errors_as_results`` an item that fails gets its HotLogError in ``out`` and later
        items are still tried; otherwise the error propagates."""
        i = 0
        while i < len(items):
            done = self._append_batch(items, i, out)
            if done:
                i += done
                continue
            if not errors_as_results:
                out.append(self.append(_EVENT, items[i]))
            else:
                try:  # the item the batch path could not take: the full path, and its error
                    out.append(self.append(_EVENT, items[i]))
                except HotLogError as exc:
                    out.append(exc)
                except Exception as exc:  # e.g. rotation's seal failing: this item is not in the log
                    out.append(HotLogError(self.failure_message(exc), cause=exc))
            i += 1

    def _append_batch(self, items: list[bytes], start: int, out: list[Any]) -> int:
        """Queue as many of ``items[start:]`` as fit in the current segment, with one
        timestamp; 0 when it cannot take the next one (segment full or not yet open, log
        not usable), and the caller uses ``append``."""
        if self.closed or self.failure is not None or self.abandoned:
            return 0
        seg = self.seg
        if seg is None or not seg.count:
            return 0
        if self._crypt is not None:
            return self._append_encrypted(seg, items, start, out)
        run = self._tail_run(seg)
        count, added, last, receipts = queue_records(
            self._prefix, self.seq, self.now(), self.prev, items, start, run.chunks,
            self.segment_max_bytes - SEAL_ROOM - seg.size, seg.count, seg.name, self.gen)
        return self._queued(seg, count, added, last, receipts, out)

    def _append_encrypted(self, seg: Segment, items: list[bytes], start: int, out: list[Any]) -> int:
        """``_append_batch`` for an encrypted stream: each event is encrypted with its own
        seq's key as it is queued (with one timestamp)."""
        epoch = self._epoch
        if epoch is None or epoch.segment != seg.name:
            return 0  # the key record comes first: ``append`` writes it
        run = self._tail_run(seg)
        count, added, last, receipts = queue_sealed(
            self._prefix, self.seq, self.now(), self.prev, items, start, run.chunks,
            self.segment_max_bytes - SEAL_ROOM - seg.size, seg.name, self.gen, epoch.ratchet,
            epoch.heads(items, start))
        return self._queued(seg, count, added, last, receipts, out)

    def _queued(self, seg: Segment, count: int, added: int, last: bytes, receipts: list[Receipt],
                out: list[Any]) -> int:
        """Advance the chain over ``count`` lines (``added`` bytes) just queued in ``seg``."""
        if count:
            seg.size += added
            seg.count += count
            self.batch.pending += added
            self.seq += count
            self.prev = last
            out.extend(receipts)
        return int(count)

    def _epoch_for(self, seg: Segment, ts: bytes) -> Epoch:
        """The key epoch of ``seg``, starting it with a key record when there is none."""
        epoch = self._epoch
        if epoch is not None and epoch.segment == seg.name:
            return epoch
        from pipeline.crypt.writer import Epoch

        assert self._crypt is not None
        self._drop_epoch()
        epoch = Epoch(self._crypt, stream=self.stream, segment=seg.name, key_seq=self.seq)
        self.append_own(Kind.KEY.value, epoch.key_record_data(), seg, ts=ts)
        self._epoch = epoch
        return epoch

    def _drop_epoch(self) -> None:
        if self._epoch is not None:
            self._epoch.erase()
            self._epoch = None

    def start_encryption(self, settings: EncryptionSettings | None) -> None:
        """The settings of a writer being opened (before recovery: from its first segment on)."""
        self.encryption_next = self._crypt = settings

    def set_encryption(self, settings: EncryptionSettings | None) -> None:
        """Encrypt to ``settings`` from the next segment on (caller holds lock)."""
        self.encryption_next = settings

    def held_keys(self) -> list[tuple[int, bytes]]:
        """Every chain key the process keeps (for tests that play the attacker)."""
        return [] if self._epoch is None else [self._epoch.held_key()]

    def append_own(self, kind: str, data: dict[str, Any], seg: Segment, *, ts: bytes | None = None,
                   in_segment_tree: bool = True) -> bytes:
        """Queue one of the log's own records (seal, recovery) on ``seg``, its leaf hashed at
        once after the lines queued before it; returns its hash."""
        line, digest = encode_record(self._stream_b, self.seq, ts or self.now(), kind, self.prev,
                                     orjson.dumps(data))
        self._queue_line(seg, line, in_segment_tree=in_segment_tree)
        self.prev = digest
        return digest

    def _queue_line(self, seg: Segment, line: bytes, *, in_segment_tree: bool) -> None:
        # seals and recovery records are rare: their leaf is hashed at once, after the event
        # lines queued before them (tree order is seq order)
        self.catch_up()
        lh = _leaf(line)
        if in_segment_tree:
            seg.cr.append(lh)
        self.cr.append(lh)
        run = self._tail_run(seg)
        run.chunks.append(line)
        run.leaves.append(lh)
        run.hashed = len(run.chunks)
        seg.size += len(line)
        seg.count += 1
        self.batch.pending += len(line)
        self.seq += 1

    def _tail_run(self, seg: Segment) -> Run:
        """The run that lines for ``seg`` are queued on: the last one, or a new one."""
        runs = self.batch.runs
        if runs:
            run = runs[-1]
            if run.seg is seg and not run.finalize:
                return run
        elif self.flusher_idle:
            # the first line queued while the flusher sleeps with nothing pending (up to a
            # second): have it flush now rather than leave the line unwritten that long (when
            # it is already flushing every group_interval it is not woken early: that would
            # mean one fsync per handful of appends)
            self.flusher_idle = False
            self._wake.set()
        run = Run(seg)
        runs.append(run)
        return run

    def ensure_usable(self) -> None:
        if self.closed:
            raise HotLogError(f"stream {self.stream!r} is closed")
        if self.failure is not None or (self.abandoned and self.explained_at is None):
            self.start_recovery_segment("write-error")

    # ------------------------------------------------------------------ segments (caller holds lock)

    def open_segment(self, ts: bytes) -> Segment:
        self.catch_up()  # the stream tree's frontier at this segment's start
        self._drop_epoch()
        self._crypt = self.encryption_next  # a reload's recipients take effect here
        seg = self.files.create(self.seq, ts, self.cr.stack, self.prev)
        self.seg = seg
        return seg

    def seal(self) -> Segment | None:
        """Queue the open segment's seal; the segment is closed once it is written."""
        seg = self.seg
        if seg is None or seg.count == 0:
            return None
        self.catch_up()  # the roots below cover every record before the seal
        data: dict[str, Any] = {
            "segment": seg.path.name,
            "first_seq": seg.first_seq,
            "last_seq": self.seq - 1,
            "count": seg.count,
            "last_hash": self.prev.decode(),
            "merkle_root": seg.cr.root().hex(),
            "opened": seg.first_ts,
            "tree_size": self.cr.size,
            "tree_root": self.cr.root().hex(),
            "frontier": [h.hex() for h in self.cr.stack],
            "start_frontier": [h.hex() for h in seg.start_frontier],
        }
        ts = self.now()
        if self._seal_extension is not None:
            data["fss"] = self._seal_extension(dict(data))
        self.append_own(Kind.SEAL.value, data, seg, ts=ts, in_segment_tree=False)
        run = self.batch.runs[-1]
        run.finalize = True
        self.pending_seals.append((seg, self.seq - 1, self.cr.root()))
        self.seg = None
        self._drop_epoch()
        # once this run is fsynced the seal is durable: a later failure in the same flush must
        # roll back to here, not before it (that would re-use the sealed seqs: a fork)
        after = run.after = self.snapshot()
        self.head_due = after.anchor()
        return seg

    def start_recovery_segment(self, reason: str) -> None:
        """Begin a new segment with a recovery record naming every abandoned segment."""
        failure = self.failure
        entries, self.abandoned = self.files.explain_abandoned(self.abandoned)
        data: dict[str, Any] = {"reason": reason, "abandoned": entries}
        if failure is not None:
            data["error"] = self.failure_message(failure).split(";")[0]
        self.failure = None
        ts = self.now()
        seg = self.open_segment(ts)
        # once the recovery record is durable, head.json moves to this segment's start: the
        # abandoned segments may then be shipped and evicted without losing where the chain
        # continues (the shipper never evicts past the head)
        self.head_due = Anchor(seg.first_seq, self.prev, self.cr.size, seg.start_frontier)
        self.append_own(Kind.RECOVERY.value, data, seg, ts=ts)
        self.explained_at = self.seq - 1

    # ------------------------------------------------------------------ Merkle and snapshots

    def _hash_runs(self, runs: list[Run]) -> None:
        """Leaf-hash every queued line not yet in the Merkle trees into its segment's tree and
        the stream tree, in order.  Caller holds _merkle_lock."""
        for run in runs:
            if run.hashed != len(run.chunks):
                run.leaves += hash_lines(run.chunks, run.hashed, run.seg.cr, self.cr)
                run.hashed = len(run.chunks)

    def catch_up(self) -> None:
        """Bring the Merkle trees up to every queued line (caller holds lock): waits for a
        flush that is hashing the lines before them, then hashes the rest here."""
        with self._merkle_lock:
            self._hash_runs(self.batch.runs)

    def snapshot(self, *, tree: bool = True) -> Snapshot:
        """The chain state now (caller holds lock).  ``tree=False`` skips bringing the Merkle
        trees up to date (``take`` fills them in once it has hashed what it took)."""
        if tree:
            self.catch_up()
        seg = self.seg
        return Snapshot(self.seq, self.prev, self.cr.size, self.cr.stack, seg,
                        seg.size if seg else 0, seg.count if seg else 0, seg.cr.copy() if seg else None)

    # ------------------------------------------------------------------ the flusher's side

    def take(self, *, sync: bool) -> Taken | None:
        """Take the open batch for a flush (the caller holds the flusher's lock, not ``lock``)
        and bring the Merkle trees up to it.  None after a failure, until appends resume."""
        with self.lock:
            if self.failure is not None:
                return None
            batch = self.batch
            self.batch = Batch(self.seq)
            self.taken = batch
            batch.taken.set()  # appenders waiting for room
            candidate = self.snapshot(tree=False)
            seals, self.pending_seals = self.pending_seals, []
            # the chain state where the newest segment starts, once what precedes it is
            # durable (a flush without fsync leaves it for the next synced one)
            head_due = self.head_due if sync else None
            if sync:
                self.head_due = None
            taken = Taken(batch, self.seq - 1, candidate, seals, self.seg, head_due)
            # taken before lock is let go, so that a seal cannot hash later lines first
            self._merkle_lock.acquire()
        try:
            # off lock: appends go on meanwhile (the hashing in C drops the GIL)
            self._hash_runs(batch.runs)
            candidate.cr_size, candidate.cr_stack = self.cr.size, self.cr.stack
            if candidate.seg is not None:
                candidate.seg_cr = candidate.seg.cr.copy()
        finally:
            self._merkle_lock.release()
        return taken

    def rollback(self, snap: Snapshot, exc: BaseException, runs: list[Run]) -> int:
        """Continue the chain from ``snap`` after a write failure (caller holds ``lock``, and
        the flusher's lock, so no flush is hashing): every segment touched after it is
        abandoned, queued lines are dropped and their waiters woken.  Returns the generation
        that was rolled back."""
        with self._merkle_lock:
            return self._rollback(snap, exc, runs)

    def _rollback(self, snap: Snapshot, exc: BaseException, runs: list[Run]) -> int:
        if self.explained_at is not None and snap.next_seq > self.explained_at:
            # the recovery record that names the earlier abandoned segments is in the file
            self.abandoned = []
        touched: list[Segment] = []
        for seg in [snap.seg, *(r.seg for r in runs), *(r.seg for r in self.batch.runs), self.seg]:
            if seg is not None and all(seg is not t for t in touched):
                touched.append(seg)
        for seg in touched:
            valid = snap.seg_size if seg is snap.seg else 0
            if seg is snap.seg or (valid == 0 and seg.first_seq >= snap.next_seq):
                SegmentFiles.close(seg)
                if all(p != seg.path for p, _ in self.abandoned):
                    self.abandoned.append((seg.path, valid))
        gen = self.gen
        self.gen += 1
        self._drop_epoch()
        self.seq = snap.next_seq
        self.prev = snap.prev
        self.cr = merkle.CompactRange(snap.cr_size, snap.cr_stack)
        self.seg = None
        dropped = self.batch
        self.batch = Batch(self.seq)
        dropped.taken.set()
        dropped.done.set()
        self.pending_seals = []
        self.head_due = None
        self.failure = exc
        self.explained_at = None
        return gen

    def failure_message(self, exc: BaseException) -> str:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            what = "no space left on device (ENOSPC)"
        elif isinstance(exc, OSError):
            what = f"{exc.strerror or exc} (errno {exc.errno})"
        else:
            what = str(exc)
        return (f"append to stream {self.stream!r} in {self.hot_dir} failed: {what}; the record was not "
                "stored, records acknowledged before it are intact, and appends resume once the cause is fixed")
