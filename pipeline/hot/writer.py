"""The hot-tier writer: append, group commit, rotation, seals, heartbeats and recovery.

One ``HotLog`` owns one stream directory ``<hot>/<stream>/`` (enforced with ``flock`` on
``LOCK``).  It is a facade over collaborators that each own their state:

- ``pipeline.hot.chain.Chain``: the chain state (next seq, last hash, the stream's Merkle
  compact range, the open segment) and every append path; record lines are built and
  queued under its lock;
- ``pipeline.hot.flusher.Flusher``: the group commit -- takes the queue, writes, fsyncs,
  answers waiters, rolls back after a failed write;
- ``pipeline.hot.recovery.Recovery``: start-up from what is on disk, and ``head.json``;
- ``pipeline.hot.active.SegmentFiles``: segment files (create, protect, seal, explain).

None of them imports this module.  The bytes reach the file through ``Flusher.flush``,
which is called

- by the appending thread itself in ``fsync`` mode (and fsyncs before returning),
- by the background thread in ``os`` mode (a write every ``group_interval``, an fsync
  every ``os_sync_interval`` seconds),
- by the background thread in ``group`` mode, at most every ``group_interval`` seconds
  and at once when a caller waits, covering every append queued so far with one fsync;
  ``append`` waits for it.  When the last commits each carried several waiting
  appenders, the flusher first gathers as many again, for at most one fsync's time
  (``HotLog._gather``), so that concurrent appenders share one commit instead of
  alternating between two.

Failure model.  If a write or fsync fails (ENOSPC, EIO), the segment being written is
abandoned: it may hold torn bytes, and a file under the append-only attribute cannot be
truncated.  Its valid length follows the one rule of docs/FORMAT.md §5, the same as at
start-up: the end of the last complete record in the file.  The complete lines a failed
write left are fsynced and acknowledged (or answered "durability unknown" when the fsync
itself failed); every later record is rolled back and its waiter gets ``HotLogError`` ("not
stored"), which stays true after any crash.  The next append starts a new segment whose
first record is a ``recovery`` record naming each abandoned segment, how many of its bytes
are valid, and the length and SHA-256 of the rest.  Startup after a crash does the same for
a torn tail, continuing from the newer of head.json and the newest seal on disk (§6).
``pipeline verify`` accepts exactly such explained tails.

Locks, in the one order they are taken: the flusher's I/O lock, the chain's lock, the
chain's Merkle lock (private to ``Chain``).  Waiting for durability holds none of them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from pipeline._accel import native as _native
from pipeline.crypt.writer import EncryptionSettings, store_settings, stored_settings
from pipeline.format import attr, merkle
from pipeline.format.files import write_all
from pipeline.format.layout import HEAD_FILE as HEAD_FILE  # re-exported for old imports
from pipeline.format.layout import LOCK_FILE as LOCK_FILE  # re-exported for old imports
from pipeline.format.layout import StreamHead, write_head
from pipeline.format.record import MAX_EVENT_BYTES, Kind, UtcClock, validate_stream_name
from pipeline.format.segment import read_first_record as read_first_record  # re-exported for old imports
from pipeline.hot.active import Segment, SegmentFiles, window_of
from pipeline.hot.chain import Anchor, Batch, Chain, Completion, Receipt, SealInfo, TreeStoreLike
from pipeline.hot.errors import HotLogError, WriterLockedError
from pipeline.hot.flusher import Flusher
from pipeline.hot.options import DEFAULTS, LogOptions
from pipeline.hot.options import DURABILITY_MODES as DURABILITY_MODES  # re-exported for old imports
from pipeline.hot.recovery import Recovery, stream_head
from pipeline.sanitise import DEFAULT_SANITISER, InvalidEvent, Sanitiser

# The defaults live in LogOptions (pipeline/hot/options.py); these names stay for old imports.
DEFAULT_SEGMENT_WINDOW = DEFAULTS.segment_window
DEFAULT_SEGMENT_MAX_BYTES = DEFAULTS.segment_max_bytes
DEFAULT_HEARTBEAT_INTERVAL = DEFAULTS.heartbeat_interval
DEFAULT_GROUP_INTERVAL = DEFAULTS.group_interval
_EVENT = Kind.EVENT.value  # a plain str: Enum.value is a Python-level property
_IOV_MAX = 1024  # Linux's limit on iovecs per writev

__all__ = [
    "DURABILITY_MODES",
    "HotLog",
    "HotLogError",
    "InvalidEvent",
    "Receipt",
    "SealInfo",
    "TreeStoreLike",
    "WriterLockedError",
]


def _py_write_chunks(fd: int, chunks: list[bytes]) -> None:
    """Write the lines in order with writev, without joining them into one large buffer
    (whose allocation, page faults and copy cost more than the write itself)."""
    i = 0
    count = len(chunks)
    while i < count:
        batch = chunks[i : i + _IOV_MAX]
        written = os.writev(fd, batch)
        i += len(batch)
        if written == sum(map(len, batch)):
            continue
        # a short write (rare: signals, a full disk): finish the batch one piece at a time
        for chunk in batch:
            if written >= len(chunk):
                written -= len(chunk)
                continue
            write_all(fd, memoryview(chunk)[written:])
            written = 0


# Bound once: with the C accelerator the whole flush is one call that lets go of the GIL
# once (the background flush must not wait for the GIL again after every 1024 lines while
# an appending thread holds it).  The writer reads this name when it is created.
_write_chunks: Callable[[int, list[bytes]], None] = _native.write_lines if _native is not None else _py_write_chunks


def _forward_secure_sealer(stream_dir: Path) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """The stream's forward-secure sealer when ``pipeline fss-setup`` prepared it: such a
    stream is never written without it (its seals would lack the FSS MAC that
    ``pipeline verify --fss-key`` requires)."""
    from pipeline.fss import STATE_DIR, STATE_FILE, FssSealer

    if not (stream_dir / STATE_DIR / STATE_FILE).exists():
        return None
    return FssSealer(stream_dir)


class HotLog:
    """Append-only, hash-chained, durable log of one stream.  Thread-safe."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        stream: str,
        *,
        durability: str = DEFAULTS.durability,
        segment_window: float = DEFAULTS.segment_window,
        segment_max_bytes: int = DEFAULTS.segment_max_bytes,
        heartbeat_interval: float = DEFAULTS.heartbeat_interval,
        group_interval: float = DEFAULTS.group_interval,
        os_sync_interval: float = DEFAULTS.os_sync_interval,
        max_pending_bytes: int = DEFAULTS.max_pending_bytes,
        sanitiser: Sanitiser | None = None,
        immutable: str | None = DEFAULTS.immutable,
        tree_store: TreeStoreLike | None = None,
        seal_extension: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        background: bool = True,
        clock: Callable[[], bytes] | None = None,
        encryption: EncryptionSettings | None = None,
    ) -> None:
        # Validated once, by the options type (pipeline.open_log builds the same one).
        LogOptions(durability=durability, segment_window=segment_window, segment_max_bytes=segment_max_bytes,
                   heartbeat_interval=heartbeat_interval, group_interval=group_interval,
                   os_sync_interval=os_sync_interval, max_pending_bytes=max_pending_bytes, immutable=immutable)
        self.stream = validate_stream_name(stream)
        self.hot_dir = Path(directory)
        self.dir = self.hot_dir / stream
        if seal_extension is None:
            seal_extension = _forward_secure_sealer(self.dir)
        self.durability = durability
        # fsync and os modes act after every append; group mode only to wait, or when much is queued
        self._after_every_append = durability != "group"
        self.segment_window = float(segment_window)
        self.segment_max_bytes = int(segment_max_bytes)
        self.heartbeat_interval = float(heartbeat_interval)
        self.group_interval = float(group_interval)
        self.os_sync_interval = float(os_sync_interval)
        self.max_pending_bytes = int(max_pending_bytes)
        self._sanitiser = sanitiser or DEFAULT_SANITISER
        if self._sanitiser.max_event_bytes > MAX_EVENT_BYTES:
            # every event's line must stay under the format's MAX_LINE_BYTES, which a
            # verifier rejects unread (docs/FORMAT.md §1)
            raise ValueError(f"the sanitiser takes events of up to {self._sanitiser.max_event_bytes} bytes; "
                             f"a log takes at most {MAX_EVENT_BYTES} (ingest.max_event_bytes)")
        self._policy = attr.immutable_policy(immutable)
        self._tree = tree_store
        # A forward-secure sealer erases the keys of past epochs also while the stream is
        # idle: the background thread (awake at least once a second) ticks it.
        self._seal_key_tick: Callable[[], None] | None = getattr(seal_extension, "tick", None)
        self._seal_key_tick_failed = False
        self._seal_listeners: list[Callable[[SealInfo], None]] = []
        self._wake = threading.Event()  # wakes the background thread

        self._files = SegmentFiles(self.dir, self._policy, self.segment_window)
        self._chain = Chain(stream=stream, hot_dir=self.hot_dir, files=self._files,
                            segment_max_bytes=self.segment_max_bytes,
                            now=clock if clock is not None else UtcClock().now,
                            seal_extension=seal_extension, wake=self._wake, encryption=encryption)
        # head.json goes through self._store_head at call time (tests replace it)
        self._flusher = Flusher(self._chain, self._files, durability=durability, write_chunks=_write_chunks,
                                tree=tree_store, store_head=self._store_head_anchor,
                                on_seals=self._notify_seals, wake=self._wake)
        # idle detection for heartbeats: the background thread notes when seq last moved
        # (no clock read on the append path)
        self._last_record_mono = time.monotonic()
        self._hb_seq = -1
        self._last_os_sync = time.monotonic()

        self.dir.mkdir(parents=True, exist_ok=True)
        if self._policy == "require" and not attr.probe(self.dir):
            raise attr.AppendOnlyError(
                errno.EPERM,
                f"PIPELINE_HOT_IMMUTABLE=require but the append-only attribute cannot be set in {self.dir}: "
                "grant CAP_LINUX_IMMUTABLE and use a filesystem with inode flags (ext4, xfs, btrfs)",
            )
        self._lock_fd = self._acquire_lock()
        try:
            self._start_encryption(encryption)
            Recovery(self._chain, self._files, tree=tree_store, store_head=self._store_head_quietly,
                     flush_now=self._flush_recovery_now).run()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._flusher.start()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._background, name=f"hotlog-{stream}", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ public API

    @property
    def sanitiser(self) -> Sanitiser:
        """The log's sanitiser, applied on every path into it: ``append``, ``append_many``,
        ingest (which takes it from here), the logging handler, ``pipeline append``."""
        return self._sanitiser

    def append(self, event: Any, *, wait: bool = True) -> Receipt:
        """Sanitise and append one event.  Raises ``InvalidEvent`` (nothing written) or
        ``HotLogError``.  With ``wait=False`` in group mode the call returns before the
        record is durable; use ``wait_durable(receipt)`` or ``sync()`` to wait."""
        data = self._sanitiser.prepare(event)
        chain = self._chain
        with chain.lock:
            receipt = chain.append(_EVENT, data)
            batch = chain.batch
            if wait:
                batch.add_waiter()
        if wait or self._after_every_append or batch.pending >= self.max_pending_bytes:
            self._after_append(receipt, wait, batch)
        return receipt

    def append_prepared(self, data_json: bytes, *, wait: bool = True) -> Receipt:
        """Append an event already validated by ``Sanitiser.prepare`` (JSON object bytes)."""
        _check_prepared_size(len(data_json))
        chain = self._chain
        with chain.lock:
            receipt = chain.append(_EVENT, data_json)
            batch = chain.batch
        self._after_append(receipt, wait, batch)
        return receipt

    def append_prepared_many(self, items: list[bytes]) -> list[Receipt | HotLogError]:
        """Append already-prepared events under one lock acquisition, without waiting.

        Never raises for an individual item: each result is its Receipt, or the HotLogError
        that kept it out of the log (later items are still tried).  Ingest uses this to
        answer every line of a batch.  One exception, before anything is written: an item
        over MAX_EVENT_BYTES (which only a sanitiser other than ingest's can prepare) raises
        ValueError for the whole call."""
        if items:
            _check_prepared_size(max(map(len, items)))
        out: list[Receipt | HotLogError] = []
        chain = self._chain
        with chain.lock:
            chain.append_all(items, out, errors_as_results=True)
            batch = chain.batch
        last = next((r for r in reversed(out) if isinstance(r, Receipt)), None)
        if last is not None:
            with contextlib.suppress(HotLogError):  # reported per receipt by wait_durable
                self._after_append(last, False, batch)
        return out

    def append_many(self, events: Iterable[Any], *, wait: bool = True) -> list[Receipt]:
        """Append several events with one lock acquisition and (with ``wait``) one wait for
        all of them to be durable.  Every event is validated first: if one is invalid, none is
        written.  All records of one call may share a timestamp.  The fastest way in: with
        the C accelerator the records are built, hashed and queued in one call."""
        prepared = self._sanitiser.prepare_many(list(events))
        receipts: list[Any] = []
        chain = self._chain
        with chain.lock:
            chain.append_all(prepared, receipts, errors_as_results=False)
            batch = chain.batch
        if receipts:
            self._after_append(receipts[-1], wait, batch)
        return receipts

    def set_encryption(self, settings: EncryptionSettings | None) -> None:
        """Encrypt to ``settings`` (None: no longer encrypt) from the next segment on; the
        open segment keeps the recipients it started with (a reload's rotation).  Recorded
        in ``<stream>/encryption.json`` for every later writer of the stream."""
        store_settings(self.dir, settings)
        with self._chain.lock:
            self._chain.set_encryption(settings)

    def _start_encryption(self, settings: EncryptionSettings | None) -> None:
        """The settings given, recorded for later writers; none given: those recorded by an
        earlier writer, so that a stream once encrypted is never written in clear by a
        writer opened without them (``pipeline append`` without ``--config``, a script)."""
        if settings is None:
            settings = stored_settings(self.dir)
        else:
            store_settings(self.dir, settings)
        self._chain.start_encryption(settings)

    @property
    def encryption(self) -> EncryptionSettings | None:
        """The encryption settings the next segment will use."""
        return self._chain.encryption_next

    def wait_durable(self, receipt: Receipt, timeout: float | None = None) -> None:
        """Block until ``receipt`` is covered by an fsync (or written, in ``os`` mode)."""
        self._flusher.wait(receipt, timeout)

    def sync(self) -> None:
        """Make everything appended so far durable (fsync), whatever the mode."""
        self._flusher.flush(sync=True)
        self._raise_if_failed()

    def seal(self) -> Path | None:
        """Seal the active segment now.  Returns its path, or None if there was nothing to seal."""
        chain = self._chain
        with chain.lock:
            chain.ensure_usable()
            seg = chain.seal()
        self._flusher.flush(sync=True)
        self._raise_if_failed()
        return seg.path if seg else None

    def heartbeat(self) -> Receipt:
        chain = self._chain
        with chain.lock:
            r = chain.append(Kind.HEARTBEAT.value, orjson.dumps({"interval_s": self.heartbeat_interval}))
            batch = chain.batch
        self._after_append(r, True, batch)
        return r

    def add_seal_listener(self, fn: Callable[[SealInfo], None]) -> None:
        self._seal_listeners.append(fn)

    def durable_tree_head(self) -> tuple[int, bytes]:
        """(size, root) of the durable prefix of the stream's Merkle tree."""
        with self._chain.lock:
            snap = self._flusher.durable
        return snap.cr_size, merkle.CompactRange(snap.cr_size, snap.cr_stack).root()

    @property
    def tree_store(self) -> TreeStoreLike | None:
        """The Merkle tile store fed by this writer (for checkpoints and proofs), if any."""
        return self._tree

    @property
    def next_seq(self) -> int:
        with self._chain.lock:
            return self._chain.seq

    @property
    def last_hash(self) -> str:
        with self._chain.lock:
            return self._chain.prev.decode()

    @property
    def active_segment(self) -> Path | None:
        with self._chain.lock:
            return self._chain.seg.path if self._chain.seg else None

    @property
    def append_only_active(self) -> bool:
        """Whether the newest segment got the append-only attribute."""
        return self._files.append_only_active

    def close(self, *, seal: bool = True) -> None:
        """Stop the background thread, optionally seal the active segment, flush, unlock."""
        chain = self._chain
        with chain.lock:
            if chain.closed:
                return
            # refuse appends (and heartbeats) from here on, so the final flush below covers
            # everything that was accepted and no waiter is left behind
            chain.closed = True
        try:
            if seal:
                with chain.lock:
                    if chain.failure is None:
                        chain.seal()
            self._flusher.flush(sync=True)
            with chain.lock:
                clean = chain.failure is None and not chain.batch.runs
                snap = chain.snapshot()
            if clean:
                # lets the next writer continue the open segment without a recovery record
                self._store_head(stream_head(self.stream, snap.anchor(), segment=snap.seg, clean=True))
        finally:
            self._wake.set()
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout=5)
            with chain.lock:
                if chain.seg is not None:
                    SegmentFiles.close(chain.seg)
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)

    def __enter__(self) -> HotLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ after an append

    def _after_append(self, receipt: Receipt, wait: bool, batch: Batch) -> None:
        mode = self.durability
        full = batch.pending >= self.max_pending_bytes
        if mode == "fsync":
            self._flusher.flush(sync=True)
            self._flusher.wait(receipt, batch=batch)
        elif mode == "os":
            # the background thread writes every group_interval; append blocks only when
            # more than max_pending_bytes are queued
            if full:
                self._make_room(batch, sync=False)
            self._raise_if_failed()
        else:
            if wait and self._thread is None:
                # without the background thread (background=False) the caller flushes
                self._flusher.flush(sync=True)
            elif full:
                self._make_room(batch, sync=True)
            if wait:
                if not self._wake.is_set():  # (set already: the flusher clears it before it takes a batch)
                    self._wake.set()
                self._flusher.wait(receipt, batch=batch)

    def _make_room(self, batch: Batch, *, sync: bool) -> None:
        """More than max_pending_bytes are queued: have the background thread take the queue
        and wait for that with the GIL let go, rather than flush here.  Flushing here would
        mean waiting for its flush in progress and then hashing, writing and syncing on this
        thread; waiting hands the GIL to the background thread at once, which otherwise waits
        up to a switch interval for it each time it comes back from I/O.  Without a
        background thread, or if it does not take the queue within a second, this thread
        flushes itself."""
        if self._thread is not None:
            self._wake.set()
            if batch.taken.wait(1.0):
                return
        self._flusher.flush(sync=sync)

    def _raise_if_failed(self) -> None:
        # one attribute read is atomic; no lock needed
        failure = self._chain.failure
        if failure is not None:
            raise HotLogError(self._chain.failure_message(failure), cause=failure)

    # ------------------------------------------------------------------ head.json and seals

    def _store_head(self, head: StreamHead) -> None:
        write_head(self.dir, head)

    def _store_head_quietly(self, head: StreamHead) -> bool:
        """Store the head; on failure (a full disk) log it and go on: until a later head is
        written the shipper evicts nothing past the old one, which is safe."""
        try:
            self._store_head(head)
            return True
        except OSError as exc:
            logging.getLogger("pipeline.hot").warning("cannot write %s: %s", HEAD_FILE, exc)
            return False

    def _store_head_anchor(self, at: Anchor) -> bool:
        return self._store_head_quietly(stream_head(self.stream, at))

    def _flush_recovery_now(self) -> None:
        # called during __init__ before the background thread exists; no concurrency yet
        self._flusher.start()
        self._flusher.flush(sync=True)
        failure = self._chain.failure
        if failure is not None:
            raise HotLogError(self._chain.failure_message(failure), cause=failure)

    def _notify_seals(self, seals: list[tuple[Segment, int, bytes]]) -> None:
        for seg, seal_seq, root in seals:
            info = SealInfo(self.stream, seg.path, seal_seq, seal_seq + 1, root)
            for fn in list(self._seal_listeners):
                try:
                    fn(info)
                except Exception as exc:  # a listener must never break the writer
                    logging.getLogger("pipeline.hot").warning("seal listener failed: %s", exc)

    def _acquire_lock(self) -> int:
        path = self.dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise WriterLockedError(
                f"stream {self.stream!r} in {self.hot_dir} is already open by another writer (pid {holder}); "
                "one writer per stream directory: stop the other writer or use another stream name"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    # ------------------------------------------------------------------ background

    def _background(self) -> None:
        while True:
            timeout = self._next_timeout()
            self._wake.wait(timeout)
            self._wake.clear()
            if self._chain.closed:
                return
            try:
                self._tick()
            except Exception as exc:  # keep the thread alive; failures surface to appenders
                # the same path as a write failure: roll back to the last durable record,
                # abandon the segment, release every waiter with an error
                self._flusher.fail(exc)

    def _note_activity_locked(self, now: float) -> None:
        seq = self._chain.seq
        if seq != self._hb_seq:
            self._hb_seq = seq
            self._last_record_mono = now

    def _next_timeout(self) -> float:
        now = time.monotonic()
        chain = self._chain
        with chain.lock:
            self._note_activity_locked(now)
            pending = bool(chain.batch.runs)
            has_seg = chain.seg is not None
            chain.flusher_idle = not pending
        if pending and self.durability != "fsync":
            return max(0.0, self._flusher.last_flush_mono + self.group_interval - now)
        waits = [1.0]
        if self.heartbeat_interval > 0:
            waits.append(max(0.0, self._last_record_mono + self.heartbeat_interval - now))
        if has_seg and self.segment_window > 0:
            wall = time.time()
            waits.append(max(0.0, (int(wall // self.segment_window) + 1) * self.segment_window - wall + 0.001))
        if self.durability == "os":
            waits.append(max(0.0, self._last_os_sync + self.os_sync_interval - now))
        return min(waits)

    def _tick(self) -> None:
        now = time.monotonic()
        chain = self._chain
        with chain.lock:
            if chain.closed:
                return
            self._note_activity_locked(now)
            failed = chain.failure is not None
            if not failed:
                seg = chain.seg
                if seg is not None and self.segment_window > 0 and \
                        window_of(time.time(), self.segment_window) != seg.window:
                    chain.seal()
                if self.heartbeat_interval > 0 and now - self._last_record_mono >= self.heartbeat_interval:
                    chain.append(Kind.HEARTBEAT.value, orjson.dumps({"interval_s": self.heartbeat_interval}))
            pending = bool(chain.batch.runs)
            seals = bool(chain.pending_seals)
        if failed:
            return
        self._tick_seal_key()
        if self.durability == "os":
            if seals or now - self._last_os_sync >= self.os_sync_interval:
                self._flusher.flush(sync=True)
                self._last_os_sync = now
            elif pending:
                self._flusher.flush(sync=False)
        elif pending:
            if self.durability == "group":
                self._gather()
            self._flusher.flush(sync=True)

    def _gather(self) -> None:
        """Before a group commit: if the last commits each carried several waiting appenders,
        wait until as many are queued again, for at most one fsync's time (and never past
        ``group_interval``).

        Without it, appenders woken by one commit queue while the next fsync runs, and the
        commits alternate between two halves of the threads: a commit carries about half of
        them, and every commit pays the flusher's own work again.  Waiting for the other half
        costs at most the time of one fsync, and only while several threads append; a single
        appender never waits (docs/BENCHMARKS.md, issue 15, measured with
        bench/commit_profile.py).  The appender that completes the count wakes the flusher."""
        target = max(self._flusher.recent_waiters, default=0)
        budget = min(self._flusher.last_sync_seconds, self.group_interval)
        if target < 2 or budget <= 0:
            return
        chain = self._chain
        with chain.lock:
            batch = chain.batch
            if batch.waiters >= target or chain.closed:
                return
            batch.want = target
            gathered = batch.gathered = Completion()
        gathered.wait(budget)

    def _tick_seal_key(self) -> None:
        if self._seal_key_tick is None:
            return
        try:
            self._seal_key_tick()
        except Exception as exc:
            # Not a write failure of the log: the next seal moves the key on itself and fails
            # if the state still cannot be written.  Said once per failure spell, not per second.
            if not self._seal_key_tick_failed:
                logging.getLogger("pipeline.hot").warning(
                    "stream %s: could not erase the forward-secure key of a past epoch (%s); retrying",
                    self.stream, exc)
            self._seal_key_tick_failed = True
        else:
            self._seal_key_tick_failed = False


def _check_prepared_size(n: int) -> None:
    """Prepared events come from a sanitiser with ingest's limit, which is at most
    MAX_EVENT_BYTES; a larger one was prepared by another (nothing of the call is written)."""
    if n > MAX_EVENT_BYTES:
        raise ValueError(f"a prepared event of {n} bytes is over the log's limit of {MAX_EVENT_BYTES} "
                         "(ingest.max_event_bytes)")
