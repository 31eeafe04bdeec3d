"""The hot-tier writer: append, group commit, rotation, seals, heartbeats and recovery.

One ``HotLog`` owns one stream directory ``<hot>/<stream>/`` (enforced with ``flock`` on
``LOCK``).  Appends build record lines under a lock and queue them; the bytes reach the
file through ``_flush``, which is called

- by the appending thread itself in ``fsync`` mode (and fsyncs before returning),
- by the appending thread in ``os`` mode (a ``write`` per append, fsync every
  ``os_sync_interval`` seconds by the background thread),
- by the background thread in ``group`` mode, at most every ``group_interval`` seconds,
  covering every append queued so far with one fsync; ``append`` waits for it.

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
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import orjson

from pipeline import _accel
from pipeline._accel import native as _native
from pipeline.errors import PipelineError
from pipeline.format import attr, merkle
from pipeline.format.files import fsync_dir as _fsync_dir
from pipeline.format.layout import HEAD_FILE as HEAD_FILE  # re-exported for old imports
from pipeline.format.layout import LOCK_FILE as LOCK_FILE  # re-exported for old imports
from pipeline.format.layout import HeadError, StreamHead, read_head, write_head
from pipeline.format.record import (
    GENESIS_HASH,
    Kind,
    RecordError,
    UtcClock,
    encode_record,
    parse_record,
    ts_epoch,
    validate_stream_name,
)
from pipeline.format.segment import (
    iter_lines,
    list_segments,
    parse_segment_name,
    read_last_line,
    segment_name,
)
from pipeline.format.segment import read_first_record as read_first_record  # re-exported for old imports
from pipeline.hot.options import DEFAULTS, LogOptions
from pipeline.hot.options import DURABILITY_MODES as DURABILITY_MODES  # re-exported for old imports
from pipeline.sanitise import DEFAULT_SANITISER, InvalidEvent, Sanitiser

# The defaults live in LogOptions (pipeline/hot/options.py); these names stay for old imports.
DEFAULT_SEGMENT_WINDOW = DEFAULTS.segment_window
DEFAULT_SEGMENT_MAX_BYTES = DEFAULTS.segment_max_bytes
DEFAULT_HEARTBEAT_INTERVAL = DEFAULTS.heartbeat_interval
DEFAULT_GROUP_INTERVAL = DEFAULTS.group_interval
_KIND_BYTES = {k.value: k.value.encode() for k in Kind}
_EVENT = Kind.EVENT.value  # a plain str: Enum.value is a Python-level property
_NO_LIMIT = 1 << 62
_T = TypeVar("_T")

__all__ = [
    "DURABILITY_MODES",
    "HotLog",
    "HotLogError",
    "InvalidEvent",
    "Receipt",
    "SealInfo",
    "WriterLockedError",
]


class HotLogError(PipelineError, RuntimeError):
    """An append could not be made durable, or the log is closed.  Nothing is half-written:
    the chain stays verifiable and later appends continue it."""

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause

    def diagnostics(self) -> str:
        return str(self)


class WriterLockedError(HotLogError):
    """Another writer holds the stream directory."""


class TreeStoreLike(Protocol):
    @property
    def size(self) -> int: ...

    def append(self, leaf_hashes: list[bytes]) -> None: ...

    def sync(self) -> None: ...

    def truncate(self, size: int) -> None: ...


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


@dataclass(slots=True)
class _Segment:
    path: Path
    fd: int
    first_seq: int
    window: int
    first_ts: str
    start_frontier: list[bytes] = field(default_factory=list)
    size: int = 0  # bytes queued so far (written + pending)
    count: int = 0
    cr: merkle.CompactRange = field(default_factory=merkle.CompactRange)
    dir_synced: bool = False
    append_only: bool = False
    closed: bool = False
    name: str = ""
    first_prev: bytes = b""  # prev of the segment's first record (head.json names where it starts)

    def __post_init__(self) -> None:
        self.name = self.path.name


class _Anchor(NamedTuple):
    """The chain state at one seq: where a segment starts (after a seal, a recovery's start,
    or the start of the open segment).  ``head.json`` stores one; start-up continues from the
    newest of it and the newest seal still on disk (docs/FORMAT.md §6)."""

    next_seq: int
    prev: bytes
    cr_size: int
    stack: list[bytes]


@dataclass(slots=True)
class _Run:
    seg: _Segment
    chunks: list[bytes] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)  # leaf hashes of chunks[:hashed]
    finalize: bool = False
    after: _Snapshot | None = None  # the chain state right after this run's seal
    hashed: int = 0  # chunks already in the Merkle trees (see HotLog._hash_runs)


@dataclass(slots=True)
class _Snapshot:
    next_seq: int
    prev: bytes
    cr_size: int
    cr_stack: list[bytes]
    seg: _Segment | None
    seg_size: int
    seg_count: int
    seg_cr: merkle.CompactRange | None

    def anchor(self) -> _Anchor:
        return _Anchor(self.next_seq, self.prev, self.cr_size, self.cr_stack)


def _window_of(epoch_s: float, window: float) -> int:
    return int(epoch_s // window) if window > 0 else 0


def _ts_to_epoch(ts: str) -> float:
    try:
        return ts_epoch(ts)
    except ValueError:  # a well-formed but impossible time (only a forged record has one)
        return time.time()


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


_IOV_MAX = 1024  # Linux's limit on iovecs per writev


def _write_chunks(fd: int, chunks: list[bytes]) -> None:
    """Write the lines in order with writev, without joining them into one large buffer
    (whose allocation, page faults and copy cost more than the write itself).  With the C
    accelerator in one call that lets go of the GIL once: the background flush must not
    wait for the GIL again after every 1024 lines while an appending thread holds it."""
    if _native is not None:
        _native.write_lines(fd, chunks)
        return
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
            _write_all(fd, memoryview(chunk)[written:])
            written = 0


class _ChainStateLike(Protocol):
    seq: int
    prev: bytes
    pending: int


class _InState(Generic[_T]):
    """A HotLog attribute that lives in its chain state object, ``self._state``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, log: HotLog, owner: type | None = None) -> _T:
        value: _T = getattr(log._state, self.name)
        return value

    def __set__(self, log: HotLog, value: _T) -> None:
        setattr(log._state, self.name, value)


class _ChainState:
    """The chain state when the C accelerator is not built (with it, the Lane holds it)."""

    __slots__ = ("pending", "prev", "seq")

    def __init__(self) -> None:
        self.seq = 0
        self.prev = GENESIS_HASH.encode()
        self.pending = 0


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

    # The chain state lives in self._state (guarded by _lock): the next seq, the last
    # record's hash (hex bytes) and the bytes queued but not yet written.
    _seq = _InState[int]("seq")
    _prev = _InState[bytes]("prev")
    _pending_bytes = _InState[int]("pending")

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
        self._policy = attr.immutable_policy(immutable)
        self._tree = tree_store
        self._tree_broken = False
        self._seal_extension = seal_extension
        # A forward-secure sealer erases the keys of past epochs also while the stream is
        # idle: the background thread (awake at least once a second) ticks it.
        self._seal_key_tick: Callable[[], None] | None = getattr(seal_extension, "tick", None)
        self._seal_key_tick_failed = False
        self._stream_b = stream.encode()
        self._prefix = b'{"v":1,"stream":"%s","seq":' % self._stream_b
        self._leaf0 = hashlib.sha256(b"\x00")
        # the record timestamp source: RFC 3339 UTC bytes (tests inject a deterministic one)
        self._now: Callable[[], bytes] = clock if clock is not None else UtcClock().now

        # With the C accelerator the lock is a Lane: the lock, the chain state (_seq, _prev,
        # _pending_bytes) and append()'s common case in one C call (see _native.c).  It
        # disarms itself whenever the lock is taken from Python, and only _arm_lane_locked
        # re-arms it, so the fast path never runs on state that other code may have changed.
        settings = self._sanitiser.fast_settings
        self._lane = _native.Lane(self._prefix, Receipt, settings, clock) if _native and settings else None
        self._lock: Any = self._lane if self._lane is not None else threading.Lock()
        self._state: _ChainStateLike = self._lane if self._lane is not None else _ChainState()
        self._cond = threading.Condition(self._lock)
        self._io_lock = threading.Lock()
        # Merkle maintenance of event lines is deferred: appends queue lines, and the thread
        # that flushes (or seals) leaf-hashes them into the trees, in order, in C without the
        # GIL, so that it overlaps appends on another core.  _merkle_lock serialises that
        # hashing; it is taken after _lock (never the other way round).
        self._merkle_lock = threading.RLock()
        self._wake = threading.Event()
        self._seal_listeners: list[Callable[[SealInfo], None]] = []

        # chain state (guarded by _lock)
        self._seq = 0
        self._prev = GENESIS_HASH.encode()
        self._cr = merkle.CompactRange()
        self._seg: _Segment | None = None
        self._runs: list[_Run] = []
        self._pending_bytes = 0
        self._pending_seals: list[tuple[_Segment, int, bytes]] = []
        self._durable_seq = -1
        self._written_seq = -1
        self._gen = 0
        self._rollbacks: dict[int, int] = {}
        self._failure: BaseException | None = None
        self._abandoned: list[tuple[Path, int]] = []
        self._explained_at: int | None = None
        # where the newest segment starts, to be stored in head.json once durable
        self._head_due: _Anchor | None = None
        self._replay_start: tuple[list[bytes], bytes] = ([], b"")
        # per rolled-back generation: the first seq whose durability is unknown (an fsync
        # failed after its bytes were written), up to the rollback cut
        self._unknown: dict[int, int] = {}
        # idle detection for heartbeats: the background thread notes when seq last moved
        # (no clock read on the append path)
        self._last_record_mono = time.monotonic()
        self._hb_seq = -1
        self._last_flush_mono = 0.0
        self._flusher_idle = False  # the background thread sleeps with nothing pending
        self._last_os_sync = time.monotonic()
        self._closed = False
        self._durable: _Snapshot
        self._written: _Snapshot
        self.append_only_active = False

        self.dir.mkdir(parents=True, exist_ok=True)
        if self._policy == "require" and not attr.probe(self.dir):
            raise attr.AppendOnlyError(
                errno.EPERM,
                f"PIPELINE_HOT_IMMUTABLE=require but the append-only attribute cannot be set in {self.dir}: "
                "grant CAP_LINUX_IMMUTABLE and use a filesystem with inode flags (ext4, xfs, btrfs)",
            )
        self._lock_fd = self._acquire_lock()
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._durable = self._written = self._snapshot()
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
        lane = self._lane
        if lane is not None:
            # the common case in one C call: sanitise, build, hash and queue the record
            out = lane.append(event)
            if out.__class__ is Receipt:
                if wait or self._after_every_append or lane.pending >= self.max_pending_bytes:
                    self._after_append(out, wait, lane.pending)
                return out
            # bytes: prepared, but the lane is disarmed or the segment is full; None: the
            # sanitiser's Python code decides (redaction, or the precise InvalidEvent)
            data = out if out is not None else self._sanitiser.prepare(event)
        else:
            data = self._sanitiser.prepare(event)
        with self._lock:
            receipt = self._append_locked(_EVENT, data)
            pending = self._pending_bytes
            self._arm_lane_locked()
        if wait or self._after_every_append or pending >= self.max_pending_bytes:
            self._after_append(receipt, wait, pending)
        return receipt

    def _arm_lane_locked(self) -> None:
        """Hand append()'s C fast path the chain state as it is now, if the next event could
        take that path (an open run on the current segment, which already holds a record, of
        a usable log).  Called only right before the lock is released: any later taking of
        the lock from Python disarms the lane again."""
        lane = self._lane
        runs = self._runs
        seg = self._seg
        if (lane is None or not runs or seg is None or not seg.count or self._closed or self._failure is not None
                or self._abandoned):
            return
        run = runs[-1]
        if run.seg is seg and not run.finalize:
            lane.arm(run.chunks, seg, seg.name, self._gen, seg.size, seg.count,
                     self.segment_max_bytes - 4096 - seg.size)

    def append_prepared(self, data_json: bytes, *, wait: bool = True) -> Receipt:
        """Append an event already validated by ``Sanitiser.prepare`` (JSON object bytes)."""
        with self._lock:
            receipt = self._append_locked(_EVENT, data_json)
            pending = self._pending_bytes
        self._after_append(receipt, wait, pending)
        return receipt

    def append_prepared_many(self, items: list[bytes]) -> list[Receipt | HotLogError]:
        """Append already-prepared events under one lock acquisition, without waiting.

        Never raises for an individual item: each result is its Receipt, or the HotLogError
        that kept it out of the log (later items are still tried).  Ingest uses this to
        answer every line of a batch."""
        out: list[Receipt | HotLogError] = []
        with self._lock:
            self._append_all_locked(items, out, errors_as_results=True)
            pending = self._pending_bytes
        last = next((r for r in reversed(out) if isinstance(r, Receipt)), None)
        if last is not None:
            with contextlib.suppress(HotLogError):  # reported per receipt by wait_durable
                self._after_append(last, False, pending)
        return out

    def append_many(self, events: Iterable[Any], *, wait: bool = True) -> list[Receipt]:
        """Append several events with one lock acquisition and (with ``wait``) one wait for
        all of them to be durable.  Every event is validated first: if one is invalid, none is
        written.  All records of one call may share a timestamp.  The fastest way in: with
        the C accelerator the records are built, hashed and queued in one call."""
        prepared = self._sanitiser.prepare_many(list(events))
        receipts: list[Any] = []
        with self._lock:
            self._append_all_locked(prepared, receipts, errors_as_results=False)
            pending = self._pending_bytes
        if receipts:
            self._after_append(receipts[-1], wait, pending)
        return receipts

    def _append_all_locked(self, items: list[bytes], out: list[Any], *, errors_as_results: bool) -> None:
        """Queue every prepared item in order, appending each receipt to ``out``: runs that
        fit in the current segment through the batch path, anything else one at a time.
        With ``errors_as_results`` an item that fails gets its HotLogError in ``out`` and
        later items are still tried; otherwise the error propagates."""
        i = 0
        while i < len(items):
            done = self._append_batch_locked(items, i, out)
            if done:
                i += done
                continue
            if not errors_as_results:
                out.append(self._append_locked(_EVENT, items[i]))
            else:
                try:  # the item the batch path could not take: the full path, and its error
                    out.append(self._append_locked(_EVENT, items[i]))
                except HotLogError as exc:
                    out.append(exc)
                except Exception as exc:  # e.g. rotation's seal failing: this item is not in the log
                    out.append(HotLogError(self._failure_message(exc), cause=exc))
            i += 1

    def _append_batch_locked(self, items: list[bytes], start: int, out: list[Any]) -> int:
        """Queue as many of ``items[start:]`` as fit in the current segment through the C
        accelerator, appending their receipts to ``out``; 0 when it cannot take the next one
        (no accelerator, segment full, log not usable), and the caller uses _append_locked."""
        if _native is None or self._closed or self._failure is not None or self._abandoned:
            return 0
        seg = self._seg
        if seg is None or not seg.count:
            return 0
        run = self._tail_run_locked(seg)
        try:
            count, added, last, receipts = _native.append_records(
                self._prefix, self._seq, self._now(), b"event", self._prev, items, start, None, None,
                run.chunks, None, self.segment_max_bytes - 4096 - seg.size, seg.count, Receipt, seg.name,
                self._gen)
        except Exception:  # nothing was queued; the per-record path raises the precise error
            return 0
        if count:
            seg.size += added
            seg.count += count
            self._pending_bytes += added
            self._seq += count
            self._prev = last
            out.extend(receipts)
        return int(count)

    def wait_durable(self, receipt: Receipt, timeout: float | None = None) -> None:
        """Block until ``receipt`` is covered by an fsync (or written, in ``os`` mode)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                self._check_discarded(receipt)
                target = self._written_seq if self.durability == "os" else self._durable_seq
                if target >= receipt.seq and receipt.generation == self._gen:
                    return
                if receipt.generation != self._gen and receipt.seq < self._rollbacks.get(receipt.generation, 0):
                    return
                if self._closed and not self._runs and self._io_lock.acquire(blocking=False):
                    # closed, nothing queued and no flush in progress: it will never be durable
                    self._io_lock.release()
                    raise HotLogError("the log was closed before the record became durable")
                self._wake.set()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"seq {receipt.seq} not durable within {timeout} s")
                self._cond.wait(0.05 if remaining is None else min(remaining, 0.05))

    def sync(self) -> None:
        """Make everything appended so far durable (fsync), whatever the mode."""
        self._flush(sync=True)
        with self._lock:
            failure = self._failure
        if failure is not None:
            raise HotLogError(self._failure_message(failure), cause=failure)

    def seal(self) -> Path | None:
        """Seal the active segment now.  Returns its path, or None if there was nothing to seal."""
        with self._lock:
            self._ensure_usable_locked()
            seg = self._seal_locked()
        self._flush(sync=True)
        self._raise_if_failed()
        return seg.path if seg else None

    def heartbeat(self) -> Receipt:
        with self._lock:
            r = self._append_locked(Kind.HEARTBEAT.value, orjson.dumps({"interval_s": self.heartbeat_interval}))
        self._after_append(r, True, 0)
        return r

    def add_seal_listener(self, fn: Callable[[SealInfo], None]) -> None:
        self._seal_listeners.append(fn)

    def durable_tree_head(self) -> tuple[int, bytes]:
        """(size, root) of the durable prefix of the stream's Merkle tree."""
        with self._lock:
            snap = self._durable
        return snap.cr_size, merkle.CompactRange(snap.cr_size, snap.cr_stack).root()

    @property
    def tree_store(self) -> TreeStoreLike | None:
        """The Merkle tile store fed by this writer (for checkpoints and proofs), if any."""
        return self._tree

    @property
    def next_seq(self) -> int:
        with self._lock:
            return self._seq

    @property
    def last_hash(self) -> str:
        with self._lock:
            return self._prev.decode()

    @property
    def active_segment(self) -> Path | None:
        with self._lock:
            return self._seg.path if self._seg else None

    def close(self, *, seal: bool = True) -> None:
        """Stop the background thread, optionally seal the active segment, flush, unlock."""
        with self._lock:
            if self._closed:
                return
            # refuse appends (and heartbeats) from here on, so the final flush below covers
            # everything that was accepted and no waiter is left behind
            self._closed = True
        try:
            if seal:
                with self._lock:
                    if self._failure is None:
                        self._seal_locked()
            self._flush(sync=True)
            with self._lock:
                clean = self._failure is None and not self._runs
                snap = self._snapshot()
            if clean:
                # lets the next writer continue the open segment without a recovery record
                self._store_head(self._head_dict(snap.anchor(), segment=snap.seg, clean=True))
        finally:
            with self._cond:
                self._cond.notify_all()
            self._wake.set()
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout=5)
            with self._lock:
                if self._seg is not None and not self._seg.closed:
                    os.close(self._seg.fd)
                    self._seg.closed = True
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)

    def __enter__(self) -> HotLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ append path

    def _after_append(self, receipt: Receipt, wait: bool, pending: int) -> None:
        mode = self.durability
        if mode == "fsync":
            self._flush(sync=True)
            self.wait_durable(receipt)
        elif mode == "os":
            # the background thread writes every group_interval; append blocks only when
            # more than max_pending_bytes are queued
            if pending >= self.max_pending_bytes:
                self._make_room(sync=False)
            self._raise_if_failed()
        else:
            if wait and self._thread is None:
                # without the background thread (background=False) the caller flushes
                self._flush(sync=True)
            elif pending >= self.max_pending_bytes:
                self._make_room(sync=True)
            if wait:
                self._wake.set()
                self.wait_durable(receipt)

    def _make_room(self, *, sync: bool) -> None:
        """More than max_pending_bytes are queued: have the background thread take the queue
        (it swaps it out at the start of its flush) and wait for that with the GIL let go,
        rather than flush here.  Flushing here would mean waiting for its flush in progress
        and then hashing, writing and syncing on this thread; waiting hands the GIL to the
        background thread at once, which otherwise waits up to a switch interval for it
        each time it comes back from I/O.  Without a background thread, or if it does not
        take the queue within a second, this thread flushes itself."""
        if self._thread is not None:
            self._wake.set()
            deadline = time.monotonic() + 1.0
            with self._cond:
                while self._pending_bytes >= self.max_pending_bytes and self._failure is None and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                else:
                    return
        self._flush(sync=sync)

    def _append_locked(self, kind: str, data_json: bytes, ts: bytes | None = None) -> Receipt:
        # The hottest path of the writer: encoding (the same bytes as
        # pipeline.record.encode_record, with the per-stream prefix precomputed), chaining,
        # leaf hashing and queueing are inlined here on purpose; with the C accelerator they
        # are one call (pipeline/_native.c append_record, tested to give the same bytes).
        if self._closed or self._failure is not None or self._abandoned:
            self._ensure_usable_locked()
        if ts is None:
            ts = self._now()
        seg = self._seg
        if seg is None:
            seg = self._open_segment_locked(ts)
        run = self._tail_run_locked(seg)
        # keep room for the seal (its frontier grows with log2 of the stream); a first
        # record always fits
        limit = self.segment_max_bytes - 4096 - seg.size if seg.count else _NO_LIMIT
        if _native is not None:
            # the line and its hash only: its leaf hash joins the trees later (_hash_runs)
            queued = _native.append_record(self._prefix, self._seq, ts, _KIND_BYTES[kind], self._prev, data_json,
                                           None, None, run.chunks, None, limit, Receipt, seg.name, self._gen)
            if queued is None:
                return self._rotate_and_append_locked(kind, data_json, ts)
            receipt, self._prev, n = queued
            seg.size += n
            seg.count += 1
            self._pending_bytes += n
            self._seq += 1
            return receipt  # type: ignore[no-any-return]
        else:
            body = b"".join((self._prefix, b"%d" % self._seq, b',"ts":"', ts, b'","kind":"', _KIND_BYTES[kind],
                             b'","prev":"', self._prev, b'","data":', data_json))
            digest = hashlib.sha256(body).hexdigest().encode()
            line = b"".join((body, b',"hash":"', digest, b'"}\n'))
            n = len(line)
            if n > limit:
                return self._rotate_and_append_locked(kind, data_json, ts)
            if run.hashed < len(run.chunks):
                self._catch_up_merkle_locked()
            h = self._leaf0.copy()
            h.update(memoryview(line)[:-1])
            lh = h.digest()
            seg.cr.append(lh)
            self._cr.append(lh)
            run.chunks.append(line)
            run.leaves.append(lh)
            run.hashed += 1
        seg.size += n
        seg.count += 1
        self._pending_bytes += n
        seq = self._seq
        self._seq = seq + 1
        self._prev = digest
        return Receipt(seq, digest.decode(), seg.name, self._gen)

    def _tail_run_locked(self, seg: _Segment) -> _Run:
        """The run that lines for ``seg`` are queued on: the last one, or a new one."""
        runs = self._runs
        if runs:
            run = runs[-1]
            if run.seg is seg and not run.finalize:
                return run
        elif self._flusher_idle:
            # the first line queued while the background thread sleeps with nothing
            # pending (up to a second): have it flush now rather than leave the line
            # unwritten that long (when it is already flushing every group_interval, it is
            # not woken early: that would mean one fsync per handful of appends)
            self._flusher_idle = False
            self._wake.set()
        run = _Run(seg)
        runs.append(run)
        return run

    def _rotate_and_append_locked(self, kind: str, data_json: bytes, ts: bytes) -> Receipt:
        self._seal_locked()
        self._open_segment_locked(ts)
        return self._append_locked(kind, data_json, ts)  # the new segment's first record

    def _queue_line_locked(self, seg: _Segment, line: bytes, *, in_segment_tree: bool) -> None:
        # seals, heartbeats, recovery records: rare, so their leaf is hashed at once, after
        # the event lines queued before them (tree order is seq order)
        self._catch_up_merkle_locked()
        h = self._leaf0.copy()
        h.update(memoryview(line)[:-1])
        lh = h.digest()
        if in_segment_tree:
            seg.cr.append(lh)
        self._cr.append(lh)
        run = self._tail_run_locked(seg)
        run.chunks.append(line)
        run.leaves.append(lh)
        run.hashed = len(run.chunks)
        seg.size += len(line)
        seg.count += 1
        self._pending_bytes += len(line)
        self._seq += 1

    def _hash_runs(self, runs: list[_Run]) -> None:
        """Leaf-hash every queued line not yet in the Merkle trees into its segment's tree and
        the stream tree, in order.  Caller holds _merkle_lock; the lines are event records
        (the rare other kinds are hashed as they are queued)."""
        for run in runs:
            if run.hashed == len(run.chunks):
                continue
            if _native is not None:
                run.leaves += _native.hash_lines(run.chunks, run.hashed, run.seg.cr, self._cr)
            else:
                for line in run.chunks[run.hashed :]:
                    lh = merkle.leaf_hash(line[:-1])
                    run.seg.cr.append(lh)
                    self._cr.append(lh)
                    run.leaves.append(lh)
            run.hashed = len(run.chunks)

    def _catch_up_merkle_locked(self) -> None:
        """Bring the Merkle trees up to every queued line (caller holds _lock): waits for a
        flush that is hashing the lines before them, then hashes the rest here."""
        with self._merkle_lock:
            self._hash_runs(self._runs)

    def _ensure_usable_locked(self) -> None:
        if self._closed:
            raise HotLogError(f"stream {self.stream!r} is closed")
        if self._failure is not None or (self._abandoned and self._explained_at is None):
            self._start_recovery_segment_locked("write-error")

    def _open_segment_locked(self, ts: bytes) -> _Segment:
        attempt = 0
        while True:
            path = self.dir / segment_name(self._seq, attempt)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o640)
                break
            except FileExistsError:
                attempt += 1
            except OSError as exc:
                raise HotLogError(
                    f"cannot create segment {path}: {exc.strerror}; the event was not stored", cause=exc
                ) from exc
        try:
            append_only = attr.protect_append_only(path, self._policy)
        except attr.AppendOnlyError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        self.append_only_active = append_only
        ts_s = ts.decode()
        self._catch_up_merkle_locked()  # the stream tree's frontier at this segment's start
        seg = _Segment(path, fd, self._seq, _window_of(_ts_to_epoch(ts_s), self.segment_window), ts_s,
                       start_frontier=self._cr.stack, append_only=append_only, first_prev=self._prev)
        self._seg = seg
        return seg

    def _seal_locked(self) -> _Segment | None:
        seg = self._seg
        if seg is None or seg.count == 0:
            return None
        self._catch_up_merkle_locked()  # the roots below cover every record before the seal
        ts = self._now()
        data: dict[str, Any] = {
            "segment": seg.path.name,
            "first_seq": seg.first_seq,
            "last_seq": self._seq - 1,
            "count": seg.count,
            "last_hash": self._prev.decode(),
            "merkle_root": seg.cr.root().hex(),
            "opened": seg.first_ts,
            "tree_size": self._cr.size,
            "tree_root": self._cr.root().hex(),
            "frontier": [h.hex() for h in self._cr.stack],
            "start_frontier": [h.hex() for h in seg.start_frontier],
        }
        if self._seal_extension is not None:
            data["fss"] = self._seal_extension(dict(data))
        line, digest = encode_record(self._stream_b, self._seq, ts, Kind.SEAL.value, self._prev,
                                     orjson.dumps(data))
        self._queue_line_locked(seg, line, in_segment_tree=False)
        self._prev = digest
        self._runs[-1].finalize = True
        self._pending_seals.append((seg, self._seq - 1, self._cr.root()))
        self._seg = None
        # once this run is fsynced the seal is durable: a later failure in the same flush must
        # roll back to here, not before it (that would re-use the sealed seqs: a fork)
        after = self._runs[-1].after = self._snapshot()
        self._head_due = after.anchor()
        return seg

    # ------------------------------------------------------------------ flushing

    def _snapshot(self, *, tree: bool = True) -> _Snapshot:
        """The chain state now (caller holds _lock).  ``tree=False`` skips bringing the Merkle
        trees up to date: the caller (a flush) fills cr_size, cr_stack and seg_cr in itself
        once it has hashed the lines it took."""
        if tree:
            self._catch_up_merkle_locked()
        seg = self._seg
        return _Snapshot(
            self._seq,
            self._prev,
            self._cr.size,
            self._cr.stack,
            seg,
            seg.size if seg else 0,
            seg.count if seg else 0,
            seg.cr.copy() if seg else None,
        )

    def _flush(self, *, sync: bool) -> None:
        with self._io_lock:
            with self._lock:
                if self._failure is not None:
                    return
                runs = self._runs
                self._runs = []
                self._pending_bytes = 0
                self._cond.notify_all()  # appenders waiting in _make_room
                upto = self._seq - 1
                candidate = self._snapshot(tree=False)
                seals = self._pending_seals
                self._pending_seals = []
                seg_now = self._seg
                # the chain state where the newest segment starts, once what precedes it is
                # durable (an os-mode flush without fsync leaves it for the next synced one)
                head_due = self._head_due if sync else None
                if sync:
                    self._head_due = None
                # taken before _lock is let go, so that a seal cannot hash later lines first
                self._merkle_lock.acquire()
            try:
                # off _lock: appends go on meanwhile (the hashing in C drops the GIL)
                self._hash_runs(runs)
                candidate.cr_size, candidate.cr_stack = self._cr.size, self._cr.stack
                if candidate.seg is not None:
                    candidate.seg_cr = candidate.seg.cr.copy()
            finally:
                self._merkle_lock.release()
            if not runs and not sync:
                return
            failing: _Run | None = None
            stage = ""  # how far the failing run got: write, sync (bytes written) or done (fsynced)
            try:
                for run in runs:
                    failing, stage = run, "write"
                    seg = run.seg
                    _write_chunks(seg.fd, run.chunks)
                    self._feed_tree(run.leaves)
                    stage = "sync"
                    if run.finalize or sync:
                        _accel.fsync(seg.fd)
                        if not seg.dir_synced:
                            _fsync_dir(self.dir)
                            seg.dir_synced = True
                        stage = "done"
                    if run.finalize:
                        os.close(seg.fd)
                        seg.closed = True
                        if run.after is not None:
                            with self._cond:
                                self._durable = self._written = run.after
                                self._durable_seq = max(self._durable_seq, run.after.next_seq - 1)
                                self._written_seq = max(self._written_seq, run.after.next_seq - 1)
                                self._cond.notify_all()
                        attr.protect_immutable(seg.path, self._policy)
                failing = None
                if sync and not runs and seg_now is not None and not seg_now.closed:
                    _accel.fsync(seg_now.fd)
                if sync:
                    self._sync_tree()
                if head_due is not None:
                    self._store_head_advisory(head_due)
            except (OSError, attr.AppendOnlyError) as exc:
                with self._cond:
                    self._fail_locked(exc, runs, failing, stage)
                    self._cond.notify_all()
                return
            with self._cond:
                self._written_seq = upto
                self._written = candidate
                if sync:
                    self._durable_seq = upto
                    self._durable = candidate
                    if self._explained_at is not None and upto >= self._explained_at:
                        self._abandoned = []
                        self._explained_at = None
                self._last_flush_mono = time.monotonic()
                self._cond.notify_all()
        if seals and self._seal_listeners:
            self._notify_seals(seals)

    def _notify_seals(self, seals: list[tuple[_Segment, int, bytes]]) -> None:
        for seg, seal_seq, root in seals:
            info = SealInfo(self.stream, seg.path, seal_seq, seal_seq + 1, root)
            for fn in list(self._seal_listeners):
                try:
                    fn(info)
                except Exception as exc:  # a listener must never break the writer
                    import logging

                    logging.getLogger("pipeline.hot").warning("seal listener failed: %s", exc)

    def _feed_tree(self, leaves: list[bytes]) -> None:
        # the tile store is derived data (rebuilt from the segments at the next start): a
        # failure there must never fail, or fork, the chain
        if self._tree is None or self._tree_broken:
            return
        try:
            self._tree.append(leaves)
        except Exception as exc:
            self._tree_broken = True
            logging.getLogger("pipeline.hot").error("Merkle tile store disabled until restart: %s", exc)

    def _sync_tree(self) -> None:
        if self._tree is None or self._tree_broken:
            return
        try:
            self._tree.sync()
        except Exception as exc:
            self._tree_broken = True
            logging.getLogger("pipeline.hot").error("Merkle tile store disabled until restart: %s", exc)

    def _head_dict(self, at: _Anchor, *, segment: _Segment | None = None, clean: bool = False) -> StreamHead:
        """The stream head (docs/FORMAT.md §6): the chain state ``at`` a seq, plus where the
        segment that continues from there starts when it is already open (a clean close)."""
        head = StreamHead(self.stream, at.next_seq, at.prev.decode(), at.cr_size, tuple(at.stack),
                          closed_cleanly=clean)
        if segment is not None:
            head = dataclasses.replace(head, segment=segment.name, segment_first_seq=segment.first_seq,
                                       segment_first_prev=segment.first_prev.decode(),
                                       segment_start_frontier=tuple(segment.start_frontier))
        return head

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

    def _store_head_advisory(self, at: _Anchor) -> None:
        """Write the head after a seal or a recovery became durable.  A failure (a full disk)
        must not fail the chain: the head is retried with the next one, and until then the
        shipper keeps the segments the head has not moved past (it never evicts beyond it)."""
        if not self._store_head_quietly(self._head_dict(at)):
            with self._lock:
                if self._head_due is None:
                    self._head_due = at

    def _fail_locked(self, exc: BaseException, runs: list[_Run], failing: _Run | None = None,
                     stage: str = "") -> None:
        """Roll the chain back to the last record that is in the file, abandon touched segments."""
        with self._merkle_lock:
            self._fail_merkle_held(exc, runs, failing, stage)

    def _salvage(self, base: _Snapshot, run: _Run, stage: str) -> tuple[_Snapshot, bool]:
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
                _accel.fsync(seg.fd)
                if not seg.dir_synced:
                    _fsync_dir(self.dir)
                    seg.dir_synced = True
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
        return _Snapshot(base.next_seq + n, prev, cr.size, cr.stack, seg, b0 + nbytes, count, None), durable

    def _fail_merkle_held(self, exc: BaseException, runs: list[_Run], failing: _Run | None, stage: str) -> None:
        # os mode acknowledged what reached the page cache; the other modes only what was fsynced
        base = self._written if self.durability == "os" else self._durable
        snap, durable = base, True
        if failing is not None and len(failing.leaves) == len(failing.chunks):
            snap, durable = self._salvage(base, failing, stage)
            if stage == "write" and snap is not base:
                self._feed_tree(failing.leaves[: snap.next_seq - base.next_seq])
        if failing is not None and snap is failing.after and not failing.seg.closed:
            # the seal itself reached the file: the segment is sealed, not abandoned
            with contextlib.suppress(OSError):
                os.close(failing.seg.fd)
            failing.seg.closed = True
            with contextlib.suppress(OSError, attr.AppendOnlyError):
                attr.protect_immutable(failing.seg.path, self._policy)
        if self._explained_at is not None and snap.next_seq > self._explained_at:
            # the recovery record that names the earlier abandoned segments is in the file
            self._abandoned = []
        touched: list[_Segment] = []
        for seg in [snap.seg, *(r.seg for r in runs), *(r.seg for r in self._runs), self._seg]:
            if seg is not None and all(seg is not t for t in touched):
                touched.append(seg)
        for seg in touched:
            valid = snap.seg_size if seg is snap.seg else 0
            if seg is snap.seg or (valid == 0 and seg.first_seq >= snap.next_seq):
                if not seg.closed:
                    with contextlib.suppress(OSError):
                        os.close(seg.fd)
                    seg.closed = True
                if all(p != seg.path for p, _ in self._abandoned):
                    self._abandoned.append((seg.path, valid))
        if not durable:
            self._unknown[self._gen] = base.next_seq
        self._rollbacks[self._gen] = snap.next_seq
        self._gen += 1
        self._seq = snap.next_seq
        self._prev = snap.prev
        self._cr = merkle.CompactRange(snap.cr_size, snap.cr_stack)
        # the chain continues from here, so a later failure must not roll back below it
        self._durable = self._written = snap
        self._durable_seq = max(self._durable_seq, snap.next_seq - 1)
        self._written_seq = max(self._written_seq, snap.next_seq - 1)
        self._seg = None
        self._runs = []
        self._pending_bytes = 0
        self._pending_seals = []
        self._head_due = None
        self._failure = exc
        self._explained_at = None
        if self._tree is not None:
            with contextlib.suppress(Exception):
                self._tree.truncate(snap.cr_size)

    def _failure_message(self, exc: BaseException) -> str:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            what = "no space left on device (ENOSPC)"
        elif isinstance(exc, OSError):
            what = f"{exc.strerror or exc} (errno {exc.errno})"
        else:
            what = str(exc)
        return (f"append to stream {self.stream!r} in {self.hot_dir} failed: {what}; the record was not "
                "stored, records acknowledged before it are intact, and appends resume once the cause is fixed")

    def _check_discarded(self, receipt: Receipt) -> None:
        if receipt.generation != self._gen:
            cut = self._rollbacks.get(receipt.generation)
            if cut is None:
                return
            failure = self._failure
            if receipt.seq >= cut:
                raise HotLogError(self._failure_message(failure) if failure else
                                  "the record was discarded after a write failure", cause=failure)
            unknown = self._unknown.get(receipt.generation)
            if unknown is not None and receipt.seq >= unknown:
                raise HotLogError(
                    f"append to stream {self.stream!r} in {self.hot_dir}: the record (seq {receipt.seq}) was "
                    "written but the fsync that should make it durable failed: it is in the chain now, but it "
                    "may or may not survive a crash of the host; durability unknown", cause=failure)

    def _raise_if_failed(self) -> None:
        # one attribute read is atomic; no lock (taking it would disarm the fast lane on
        # every append in os mode)
        failure = self._failure
        if failure is not None:
            raise HotLogError(self._failure_message(failure), cause=failure)

    # ------------------------------------------------------------------ recovery

    def _start_recovery_segment_locked(self, reason: str) -> None:
        """Begin a new segment with a recovery record naming every abandoned segment."""
        failure = self._failure
        entries: list[dict[str, Any]] = []
        keep: list[tuple[Path, int]] = []
        for path, valid in self._abandoned:
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            if size == 0 and valid == 0:
                # nothing was ever written there: remove the empty file rather than explain it
                try:
                    attr.clear_protection(path)
                    os.unlink(path)
                    continue
                except OSError:
                    pass
            with open(path, "rb") as f:
                f.seek(valid)
                torn = f.read()
            with contextlib.suppress(OSError, attr.AppendOnlyError):
                attr.protect_immutable(path, self._policy)
            entries.append({
                "segment": path.name,
                "valid_bytes": valid,
                "torn_bytes": len(torn),
                "torn_sha256": hashlib.sha256(torn).hexdigest(),
            })
            keep.append((path, valid))
        self._abandoned = keep
        data: dict[str, Any] = {"reason": reason, "abandoned": entries}
        if failure is not None:
            data["error"] = self._failure_message(failure).split(";")[0]
        self._failure = None
        ts = self._now()
        seg = self._open_segment_locked(ts)
        # once the recovery record is durable, head.json moves to this segment's start: the
        # abandoned segments may then be shipped and evicted without losing where the chain
        # continues (the shipper never evicts past the head)
        self._head_due = _Anchor(seg.first_seq, self._prev, self._cr.size, seg.start_frontier)
        line, digest = encode_record(self._stream_b, self._seq, ts, Kind.RECOVERY.value, self._prev,
                                     orjson.dumps(data))
        self._queue_line_locked(seg, line, in_segment_tree=True)
        self._prev = digest
        self._explained_at = self._seq - 1

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

    def _newest_seal(self, segments: list[Path]) -> tuple[int, _Anchor | None]:
        """The newest sealed segment on disk and the chain state right after its seal."""
        for i in range(len(segments) - 1, -1, -1):
            last = read_last_line(segments[i])
            if last is None:
                continue
            try:
                rec = parse_record(last)
            except RecordError:
                continue
            if rec.kind != Kind.SEAL.value:
                continue
            try:
                cr = merkle.CompactRange(int(rec.data["tree_size"]), [bytes.fromhex(h) for h in rec.data["frontier"]])
            except (KeyError, TypeError, ValueError) as exc:
                raise HotLogError(f"the seal of {segments[i]} is malformed ({exc}): refusing to continue the "
                                  "chain from it") from exc
            cr.append(merkle.leaf_hash(rec.leaf))
            with contextlib.suppress(OSError, attr.AppendOnlyError):
                if not attr.is_immutable(segments[i]):
                    attr.protect_immutable(segments[i], self._policy)
            return i, _Anchor(rec.seq + 1, rec.hash.encode(), cr.size, cr.stack)
        return -1, None

    def _head_anchor(self, head: StreamHead | None) -> _Anchor | None:
        """Where head.json says the newest segment starts (docs/FORMAT.md §6)."""
        if head is None:
            return None
        seq, prev, size, frontier = head.anchor()
        return _Anchor(seq, prev.encode(), size, list(frontier))

    def _recover(self) -> None:
        """Rebuild the chain state from disk; explain or continue an unclean tail.

        The chain continues from one of two anchors: the newest seal still on disk when every
        segment after it is there too, else head.json (rewritten after every seal and every
        recovery, so it stays valid once the shipper has evicted the segments before it).  The
        segments from the anchor on are replayed; segments before it are history (sealed, or
        abandoned and explained)."""
        segments = list_segments(self.dir)
        head = self._read_head()
        seal_idx, seal_anchor = self._newest_seal(segments)
        head_anchor = self._head_anchor(head)
        after_seal = segments[seal_idx + 1:]
        firsts = [(parse_segment_name(p.name) or (0, 0))[0] for p in after_seal]
        if head_anchor is not None and head is not None and head.closed_cleanly \
                and head.segment_first_seq is None and any(f < head_anchor.next_seq for f in firsts):
            # written by an older version at a clean close: its next_seq may lie inside the
            # open segment, which is on disk and is replayed instead
            head_anchor = None
        if seal_anchor is not None and firsts and firsts[0] == seal_anchor.next_seq:
            anchor: _Anchor | None = seal_anchor  # every segment after the newest seal is here
        elif head_anchor is not None and (seal_anchor is None or head_anchor.next_seq >= seal_anchor.next_seq):
            anchor = head_anchor  # the segments before where the head points were evicted
        else:
            anchor = seal_anchor
        start = 0
        if anchor is not None:
            self._seq, self._prev = anchor.next_seq, anchor.prev
            self._cr = merkle.CompactRange(anchor.cr_size, anchor.stack)
            start = anchor.next_seq
            if anchor is seal_anchor and (head_anchor is None or head_anchor.next_seq < anchor.next_seq):
                # the seal reached the disk but the process died before head.json followed
                self._store_head_quietly(self._head_dict(anchor))
        tail = [p for p, f in zip(after_seal, firsts, strict=True) if f >= start]
        if tail:
            first = (parse_segment_name(tail[0].name) or (0, 0))[0]
            if first != start:
                where = (f"{HEAD_FILE} and the newest seal say the chain continues at seq {start}"
                         if anchor is not None else f"there is no sealed segment or {HEAD_FILE} to continue from")
                raise HotLogError(
                    f"stream {self.stream!r} in {self.hot_dir}: {tail[0].name} starts at seq {first} but {where}: "
                    "refusing to guess the chain; restore the missing segments")
        if head is not None and head.closed_cleanly:
            # the flag holds only while no writer has the stream open (docs/FORMAT.md §6)
            self._store_head_quietly(dataclasses.replace(head, closed_cleanly=False))
        if not tail:
            self._sync_tree_store(segments)
            return
        # a recovery record at the start of a segment says where earlier abandoned segments
        # stop being valid; honour it instead of re-deriving from the bytes
        explained: dict[str, int] = {}
        for path in tail:
            first_rec = read_first_record(path)
            if first_rec is not None and first_rec.kind == Kind.RECOVERY.value:
                for e in first_rec.data.get("abandoned", []):
                    if isinstance(e, dict) and isinstance(e.get("valid_bytes"), int):
                        explained[str(e.get("segment"))] = e["valid_bytes"]
        # replay unsealed segments after the anchor (normally just one, after a crash)
        last_valid_seg: Path | None = None
        last_valid_seg_state: tuple[int, int, merkle.CompactRange, str, list[bytes], bytes] | None = None
        for path in tail:
            if last_valid_seg is not None and last_valid_seg_state is not None:
                # an unsealed segment followed by another one: the crash came after the next
                # segment file was created but before the seal reached the disk.  It can no
                # longer be continued or sealed in place, so the recovery record must name it.
                self._abandoned.append((last_valid_seg, last_valid_seg_state[0]))
                last_valid_seg = None
            valid_bytes, count, seg_cr, first_ts = self._replay(path, explained.get(path.name))
            seg_start_frontier, seg_start_prev = self._replay_start
            size = path.stat().st_size
            if size != valid_bytes or count == 0:
                # (an empty file: created just before the crash; the recovery removes it)
                self._abandoned.append((path, valid_bytes))
                last_valid_seg = None
            else:
                last_valid_seg = path
                last_valid_seg_state = (valid_bytes, count, seg_cr, first_ts, seg_start_frontier, seg_start_prev)
            # segments explained by a recovery record at the start of this one are settled
            self._drop_explained(path)
        self._sync_tree_store(segments)
        if last_valid_seg is not None and last_valid_seg == tail[-1] and not self._abandoned:
            # clean tail after an unclean shutdown: continue in the same segment
            assert last_valid_seg_state is not None
            valid_bytes, count, seg_cr, first_ts, seg_start_frontier, seg_start_prev = last_valid_seg_state
            fd = os.open(last_valid_seg, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            ao = attr.is_append_only(last_valid_seg) or attr.protect_append_only(last_valid_seg, self._policy)
            self._seg = _Segment(last_valid_seg, fd, self._seq - count,
                                 _window_of(_ts_to_epoch(first_ts), self.segment_window), first_ts,
                                 start_frontier=seg_start_frontier, size=valid_bytes, count=count, cr=seg_cr,
                                 dir_synced=True, append_only=ao, first_prev=seg_start_prev)
            self.append_only_active = ao
            if head is not None and head.closed_cleanly and head.next_seq == self._seq \
                    and head.last_hash.encode() == self._prev:
                return  # closed cleanly: nothing to explain
            ts = self._now()
            line, digest = encode_record(self._stream_b, self._seq, ts, Kind.RECOVERY.value, self._prev,
                                         orjson.dumps({"reason": "unclean-shutdown", "abandoned": []}))
            self._queue_line_locked(self._seg, line, in_segment_tree=True)
            self._prev = digest
            self._flush_recovery_now()
            return
        if self._abandoned:
            self._start_recovery_segment_locked("unclean-shutdown")
            self._flush_recovery_now()

    def _replay(self, path: Path, limit: int | None) -> tuple[int, int, merkle.CompactRange, str]:
        """Advance the chain state over the records of ``path`` that continue it: the one rule
        for the valid length V of a segment (docs/FORMAT.md §5) is the end of the last
        complete record that continues the chain (bounded by a recovery record that already
        named the segment).  Returns (V, records, segment tree, first ts); where the segment
        starts (frontier, prev) is left in ``self._replay_start``."""
        self._replay_start = (self._cr.stack, self._prev)
        valid_bytes = count = 0
        seg_cr = merkle.CompactRange()
        first_ts = ""
        for offset, line in iter_lines(path):
            if limit is not None and offset >= limit:
                break
            try:
                rec = parse_record(line)
            except RecordError:
                break
            if rec.seq != self._seq or rec.prev.encode() != self._prev or rec.stream != self.stream:
                break
            if rec.kind == Kind.SEAL.value:
                break  # a seal here would have been found as the anchor: bytes follow it
            lh = merkle.leaf_hash(rec.leaf)
            seg_cr.append(lh)
            self._cr.append(lh)
            self._seq += 1
            self._prev = rec.hash.encode()
            count += 1
            first_ts = first_ts or rec.ts
            valid_bytes = offset + len(line)
        return valid_bytes, count, seg_cr, first_ts

    def _drop_explained(self, path: Path) -> None:
        first = read_first_record(path)
        if first is None or first.kind != Kind.RECOVERY.value:
            return
        named = {e.get("segment") for e in first.data.get("abandoned", []) if isinstance(e, dict)}
        self._abandoned = [(p, v) for p, v in self._abandoned if p.name not in named or p == path]

    def _flush_recovery_now(self) -> None:
        # called during __init__ before the background thread exists; no concurrency yet
        self._durable = self._written = self._snapshot()
        self._flush(sync=True)
        if self._failure is not None:
            raise HotLogError(self._failure_message(self._failure), cause=self._failure)

    def _sync_tree_store(self, segments: list[Path]) -> None:
        tree = self._tree
        if tree is None:
            return
        have = tree.size
        want = self._cr.size
        if have > want:
            tree.truncate(want)
        elif have < want:
            batch: list[bytes] = []
            for path in segments:
                for _off, line in iter_lines(path):
                    if not line.endswith(b"\n"):
                        break
                    try:
                        rec = parse_record(line)
                    except RecordError:
                        break
                    if have <= rec.seq < want:
                        batch.append(merkle.leaf_hash(rec.leaf))
                        if len(batch) >= 65536:
                            tree.append(batch)
                            batch = []
            if batch:
                tree.append(batch)
            tree.sync()

    def _read_head(self) -> StreamHead | None:
        try:
            return read_head(self.dir)
        except HeadError as exc:
            raise HotLogError(f"{exc}: cannot tell where the chain continues") from exc

    # ------------------------------------------------------------------ background

    def _background(self) -> None:
        while True:
            timeout = self._next_timeout()
            self._wake.wait(timeout)
            self._wake.clear()
            if self._closed:
                return
            try:
                self._tick()
            except Exception as exc:  # keep the thread alive; failures surface to appenders
                # the same path as a write failure: roll back to the last durable record,
                # abandon the segment, release every waiter with an error.  _io_lock first: a
                # flush in progress on another thread (sync(), seal()) finishes writing before
                # the rollback point is chosen, so the abandoned segment's valid length is
                # where its complete records end, as start-up would find it
                with self._io_lock, self._cond:
                    if self._failure is None:
                        self._fail_locked(exc, [])
                    self._cond.notify_all()

    def _note_activity_locked(self, now: float) -> None:
        if self._seq != self._hb_seq:
            self._hb_seq = self._seq
            self._last_record_mono = now

    def _next_timeout(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._note_activity_locked(now)
            pending = bool(self._runs)
            has_seg = self._seg is not None
            self._flusher_idle = not pending
        if pending and self.durability != "fsync":
            return max(0.0, self._last_flush_mono + self.group_interval - now)
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
        with self._lock:
            if self._closed:
                return
            self._note_activity_locked(now)
            failed = self._failure is not None
            if not failed:
                seg = self._seg
                if seg is not None and self.segment_window > 0 and \
                        _window_of(time.time(), self.segment_window) != seg.window:
                    self._seal_locked()
                if self.heartbeat_interval > 0 and now - self._last_record_mono >= self.heartbeat_interval:
                    self._append_locked(Kind.HEARTBEAT.value,
                                        orjson.dumps({"interval_s": self.heartbeat_interval}))
            pending = bool(self._runs)
            seals = bool(self._pending_seals)
        if failed:
            return
        self._tick_seal_key()
        if self.durability == "os":
            if seals or now - self._last_os_sync >= self.os_sync_interval:
                self._flush(sync=True)
                self._last_os_sync = now
            elif pending:
                self._flush(sync=False)
        elif pending:
            self._flush(sync=True)


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
