"""The group-commit flusher: writes what the chain queued, fsyncs it, answers waiters.

``Flusher.flush`` takes the chain's open batch (``Chain.take``), writes its runs with one
``writev`` loop, fsyncs (group mode: one fsync for every record queued since the previous
flush), feeds the Merkle tile store and stores ``head.json`` once a seal or a recovery is
durable.  A record's waiter waits for its batch's ``done`` event, not for a lock: records
appended concurrently by many threads share one flush, and a flush starts as soon as a
waiter wants one (the background thread in ``pipeline.hot.writer`` runs it).

Failure model (docs/FORMAT.md §5).  If a write or fsync fails, the complete lines the
failed write left in the file are kept (fsynced and acknowledged, or answered "durability
unknown" when the fsync itself failed), everything after them is rolled back
(``Chain.rollback``) and answered "not stored": the same valid length that start-up finds.

Locks: ``io_lock`` serialises flushes and is always taken before the chain's lock, never
while holding it.  The durability state below is changed under the chain's lock, so a
waiter reads it together with the chain's generation.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable

from pipeline import _accel
from pipeline.format import attr, merkle
from pipeline.hot.active import Segment, SegmentFiles
from pipeline.hot.chain import Anchor, Batch, Chain, Receipt, Run, Snapshot, TreeStoreLike
from pipeline.hot.errors import HotLogError

__all__ = ["Flusher"]

_log = logging.getLogger("pipeline.hot")


class Flusher:
    """Flushes one chain's queue; owns what is written and what is durable."""

    def __init__(self, chain: Chain, files: SegmentFiles, *, durability: str,
                 write_chunks: Callable[[int, list[bytes]], None], tree: TreeStoreLike | None,
                 store_head: Callable[[Anchor], bool],
                 on_seals: Callable[[list[tuple[Segment, int, bytes]]], None], wake: threading.Event) -> None:
        self.io_lock = threading.Lock()
        self.chain = chain
        self.files = files
        self.durability = durability
        self._write_chunks = write_chunks
        self.tree = tree
        self.tree_broken = False
        self._store_head = store_head
        self._on_seals = on_seals
        self._wake = wake
        # durability state (changed under chain.lock)
        self.durable: Snapshot
        self.written: Snapshot
        self.durable_seq = -1
        self.written_seq = -1
        # (generation, the newest seq a waiter may return for): one tuple, replaced whole
        # under chain.lock, so a waiter woken by its batch reads both at once without a lock
        self.mark = (0, -1)
        self.rollbacks: dict[int, int] = {}  # per rolled-back generation: the first seq not kept
        # per rolled-back generation: the first seq whose durability is unknown (an fsync
        # failed after its bytes were written), up to the rollback cut
        self.unknown: dict[int, int] = {}
        self.last_flush_mono = 0.0
        # group commit's gathering (HotLog._gather): how many appenders waited for each of
        # the last commits, and how long the last segment fsync took
        self.recent_waiters: collections.deque[int] = collections.deque(maxlen=8)
        self.last_sync_seconds = 0.0

    def start(self) -> None:
        """Everything on disk now is durable (after start-up recovery)."""
        with self.chain.lock:
            self.durable = self.written = self.chain.snapshot()

    # ------------------------------------------------------------------ flushing

    def flush(self, *, sync: bool) -> None:
        chain = self.chain
        seals: list[tuple[Segment, int, bytes]] = []
        with self.io_lock:
            taken = chain.take(sync=sync)
            if taken is None:
                return
            if sync:
                self.recent_waiters.append(taken.batch.waiters)
            try:
                seals = list(taken.seals)
                self._write(taken.batch, taken.upto, taken.candidate, taken.seg_now, taken.head_due, sync)
            finally:
                taken.batch.done.set()
        if seals:
            self._on_seals(seals)

    def _write(self, batch: Batch, upto: int, candidate: Snapshot, seg_now: Segment | None, head_due: Anchor | None,
               sync: bool) -> None:
        chain = self.chain
        runs = batch.runs
        if not runs and not sync:
            return
        failing: Run | None = None
        stage = ""  # how far the failing run got: write, sync (bytes written) or done (fsynced)
        try:
            for run in runs:
                failing, stage = run, "write"
                seg = run.seg
                self._write_chunks(seg.fd, run.chunks)
                self._feed_tree(run.leaves)
                stage = "sync"
                if run.finalize or sync:
                    started = time.monotonic()
                    self.files.sync(seg, _accel.fsync)
                    self.last_sync_seconds = time.monotonic() - started
                    stage = "done"
                if run.finalize:
                    os.close(seg.fd)
                    seg.closed = True
                    if run.after is not None:
                        with chain.lock:
                            self.durable = self.written = run.after
                            self.durable_seq = max(self.durable_seq, run.after.next_seq - 1)
                            self.written_seq = max(self.written_seq, run.after.next_seq - 1)
                            self._publish()
                    self.files.make_immutable(seg.path)
            failing = None
            if sync and not runs and seg_now is not None and not seg_now.closed:
                _accel.fsync(seg_now.fd)
            if sync:
                self._sync_tree()
            if head_due is not None:
                self._store_head_advisory(head_due)
        except (OSError, attr.AppendOnlyError) as exc:
            with chain.lock:
                self._fail(exc, runs, failing, stage)
            return
        with chain.lock:
            self.written_seq = upto
            self.written = candidate
            if sync:
                self.durable_seq = upto
                self.durable = candidate
                if chain.explained_at is not None and upto >= chain.explained_at:
                    chain.abandoned = []
                    chain.explained_at = None
            self._publish()
            self.last_flush_mono = time.monotonic()

    def _publish(self) -> None:
        """Update ``mark`` (caller holds chain.lock)."""
        self.mark = (self.chain.gen, self.written_seq if self.durability == "os" else self.durable_seq)

    def _store_head_advisory(self, at: Anchor) -> None:
        """head.json after a seal or a recovery became durable.  A failure (a full disk) must
        not fail the chain: the head is retried with the next one, and until then the shipper
        keeps the segments the head has not moved past (it never evicts beyond it)."""
        if not self._store_head(at):
            with self.chain.lock:
                if self.chain.head_due is None:
                    self.chain.head_due = at

    def _feed_tree(self, leaves: list[bytes]) -> None:
        # the tile store is derived data (rebuilt from the segments at the next start): a
        # failure there must never fail, or fork, the chain
        if self.tree is None or self.tree_broken:
            return
        try:
            self.tree.append(leaves)
        except Exception as exc:
            self.tree_broken = True
            _log.error("Merkle tile store disabled until restart: %s", exc)

    def _sync_tree(self) -> None:
        if self.tree is None or self.tree_broken:
            return
        try:
            self.tree.sync()
        except Exception as exc:
            self.tree_broken = True
            _log.error("Merkle tile store disabled until restart: %s", exc)

    # ------------------------------------------------------------------ failures

    def fail(self, exc: BaseException) -> None:
        """A failure outside a write (the background thread's housekeeping): the same path
        as a write failure.  The I/O lock first: a flush in progress on another thread
        finishes writing before the rollback point is chosen, so the abandoned segment's
        valid length is where its complete records end, as start-up would find it."""
        with self.io_lock, self.chain.lock:
            if self.chain.failure is None:
                self._fail(exc, [])

    def _fail(self, exc: BaseException, runs: list[Run], failing: Run | None = None, stage: str = "") -> None:
        """Roll the chain back to the last record that is in the file (caller holds io_lock
        and the chain's lock)."""
        chain = self.chain
        # os mode acknowledged what reached the page cache; the other modes only what was fsynced
        base = self.written if self.durability == "os" else self.durable
        snap, durable = base, True
        if failing is not None and len(failing.leaves) == len(failing.chunks):
            snap, durable = self._salvage(base, failing, stage)
            if stage == "write" and snap is not base:
                self._feed_tree(failing.leaves[: snap.next_seq - base.next_seq])
        if failing is not None and snap is failing.after and not failing.seg.closed:
            # the seal itself reached the file: the segment is sealed, not abandoned
            SegmentFiles.close(failing.seg)
            with contextlib.suppress(OSError, attr.AppendOnlyError):
                self.files.make_immutable(failing.seg.path)
        gen = chain.rollback(snap, exc, runs)
        if not durable:
            self.unknown[gen] = base.next_seq
        self.rollbacks[gen] = snap.next_seq
        # the chain continues from here, so a later failure must not roll back below it
        self.durable = self.written = snap
        self.durable_seq = max(self.durable_seq, snap.next_seq - 1)
        self.written_seq = max(self.written_seq, snap.next_seq - 1)
        self._publish()
        if self.tree is not None:
            with contextlib.suppress(Exception):
                self.tree.truncate(snap.cr_size)

    def _salvage(self, base: Snapshot, run: Run, stage: str) -> tuple[Snapshot, bool]:
        """The chain state after the complete lines of ``run`` that reached the file before it
        failed, and whether they are durable.

        The one rule of recovery (docs/FORMAT.md §5): the valid length V of an abandoned
        segment is the end of the last complete record that continues the chain.  Start-up
        finds V from the bytes; at runtime the writer must reach the same V, so it keeps the
        complete lines a failed write left in the file instead of answering "not stored" for
        records that a restart would find valid.  They are durable once an fsync succeeds
        after the failure (ext4 and XFS reserve the blocks of written bytes at write time, so
        a full disk does not stop it).  If the fsync itself failed, retrying it proves nothing
        (Linux reports a writeback error once), so those records are answered "durability
        unknown"."""
        seg = run.seg
        if seg.closed:
            return base, True
        b0 = base.seg_size if base.seg is seg else 0
        try:
            end = os.fstat(seg.fd).st_size
        except OSError:
            return base, True
        n = nbytes = 0
        for chunk in run.chunks:
            if b0 + nbytes + len(chunk) > end:
                break
            nbytes += len(chunk)
            n += 1
        if n == 0:
            return base, True
        durable = stage == "done"
        if stage == "write":
            try:
                self.files.sync(seg, _accel.fsync)
                durable = True
            except OSError:
                durable = False
        if n == len(run.chunks) and run.finalize and run.after is not None:
            return run.after, durable  # the seal itself is in the file: the segment is sealed
        cr = merkle.CompactRange(base.cr_size, base.cr_stack)
        for lh in run.leaves[:n]:
            cr.append(lh)
        last = run.chunks[n - 1]
        prev = last[-67:-3]  # the record's hash: ,"hash":"<64 hex>"}\n
        count = (base.seg_count if base.seg is seg else 0) + n
        return Snapshot(base.next_seq + n, prev, cr.size, cr.stack, seg, b0 + nbytes, count, None), durable

    # ------------------------------------------------------------------ waiting

    def wait(self, receipt: Receipt, timeout: float | None = None, batch: Batch | None = None) -> None:
        """Block until ``receipt`` is covered by an fsync (written, in ``os`` mode), or raise
        ``HotLogError`` if it was rolled back or its durability is unknown.  ``batch``: the
        batch the record was queued in, when the caller knows it (saves a look-up)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        chain = self.chain
        while True:
            if batch is not None:
                remaining = None if deadline is None else deadline - time.monotonic()
                batch.done.wait(0.05 if remaining is None else max(0.0, min(remaining, 0.05)))
                gen, upto = self.mark  # the common case, without the chain's lock
                if gen == receipt.generation and upto >= receipt.seq:
                    return
            with chain.lock:
                self._check_discarded(receipt)
                target = self.written_seq if self.durability == "os" else self.durable_seq
                gen = chain.gen
                if target >= receipt.seq and receipt.generation == gen:
                    return
                if receipt.generation != gen and receipt.seq < self.rollbacks.get(receipt.generation, 0):
                    return
                taken = chain.taken
                if taken is None or receipt.seq >= chain.batch.first_seq or taken.done.is_set():
                    batch = chain.batch
                else:
                    batch = taken
                closed = chain.closed and not chain.batch.runs
            if closed and self.io_lock.acquire(blocking=False):
                # closed, nothing queued and no flush in progress: it will never be durable
                self.io_lock.release()
                raise HotLogError("the log was closed before the record became durable")
            self._wake.set()
            if deadline is not None and deadline - time.monotonic() <= 0:
                raise TimeoutError(f"seq {receipt.seq} not durable within {timeout} s")

    def _check_discarded(self, receipt: Receipt) -> None:
        chain = self.chain
        if receipt.generation != chain.gen:
            cut = self.rollbacks.get(receipt.generation)
            if cut is None:
                return
            failure = chain.failure
            if receipt.seq >= cut:
                raise HotLogError(chain.failure_message(failure) if failure else
                                  "the record was discarded after a write failure", cause=failure)
            unknown = self.unknown.get(receipt.generation)
            if unknown is not None and receipt.seq >= unknown:
                raise HotLogError(
                    f"append to stream {chain.stream!r} in {chain.hot_dir}: the record (seq {receipt.seq}) was "
                    "written but the fsync that should make it durable failed: it is in the chain now, but it "
                    "may or may not survive a crash of the host; durability unknown", cause=failure)
