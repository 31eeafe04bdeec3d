"""The shipper: seal -> upload -> verify -> confirm -> evict, crash-safe.

The shipper reads the hot tier (never writes a stream directory except to evict a
confirmed segment), keeps its state in the ledger, and talks to one ``ColdStore``.
Segments go oldest first, in parallel up to ``concurrency``; a failed segment backs off
on its own and is retried forever with the reason in the ledger; a segment whose cold
copy cannot be proven (verification failure, conflicting object, hot copy changed after
its seal) is quarantined: kept, reported, never evicted.  Disk pressure never causes
deletion: above the high-water mark the shipper reports backpressure for ingest.

Each upload runs on a thread of its own (at most ``concurrency`` at a time) and the loop
never waits for one: a request that hangs holds one slot, not the loop, and discovery,
other segments' uploads and eviction go on.  Upload threads are daemon threads, and every
cold-storage call runs under ``self.deadline`` (``pipeline.cold.retry``), so a drain can
bound them and the process can exit at the end of its grace period whatever cold storage
does.  Store-wide problems (cold storage refusing uploads, unreachable, the ledger not
writable, a failing pass) are ``Conditions``: logged once when they appear or change and
once when they clear, never once per attempt; ``problem()`` feeds ``/readyz``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.cold.base import ColdStore
from pipeline.cold.errors import (
    ColdConfigError,
    ColdError,
    ColdRequestError,
    ColdUnavailableError,
    ObjectConflictError,
    ObjectNotFoundError,
    SourceMismatchError,
    VerificationError,
    WormNotEnforcedError,
)
from pipeline.cold.retry import Deadline, bounded_by
from pipeline.format import attr
from pipeline.format.checkpoint import Signer
from pipeline.format.layout import read_head_or_none
from pipeline.format.record import Kind, RecordError, parse_record
from pipeline.format.segment import (
    SegmentManifest,
    build_manifest,
    list_segments,
    list_streams,
    parse_segment_name,
    read_first_record,
    read_last_line,
)
from pipeline.ship.index import IndexConflict, IndexWriter
from pipeline.ship.ledger import ACTIVE_STATES, Entry, Ledger, StateConflict

log = logging.getLogger("pipeline.ship")

QUARANTINE_ERRORS = (VerificationError, ObjectConflictError, SourceMismatchError)
MAX_BACKOFF = 300.0
# Verification failures that are about the lock only: the store, not the segment, is wrong.
LOCK_REASONS = frozenset({"not-locked", "retention-too-short", "legal-hold-missing"})
# Request errors that concern one body, not the store: the segment is retried like any failure.
_PER_SEGMENT_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})


def is_refusal(exc: BaseException) -> bool:
    """Cold storage refuses every upload until an operator acts (no Object Lock, access
    denied, no such bucket, bad settings): retrying sooner cannot help, readiness fails."""
    if isinstance(exc, WormNotEnforcedError | ColdConfigError):
        return True
    return isinstance(exc, ColdRequestError) and exc.code not in _PER_SEGMENT_CODES


def store_wide_message(exc: ColdError) -> str:
    """The error without the segment name: the same for every segment it stops."""
    code = f" ({exc.code})" if exc.code else ""
    where = f" [endpoint {exc.endpoint}]" if exc.endpoint else ""
    return f"{exc.summary}{code}{where}: {exc.action}"


class Conditions:
    """Named store-wide problems.  Each is logged when it appears or its message changes,
    and once when it clears: one line per state change, not per attempt."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._active: dict[str, str] = {}
        self._keys: dict[str, str] = {}
        self._lock = threading.Lock()

    def set(self, name: str, message: str, *, key: str | None = None, level: int = logging.ERROR,
            exc_info: bool = False) -> None:
        """Raise ``name``; logged only when new or when ``key`` (default: the message) changed."""
        key = message if key is None else key
        with self._lock:
            self._active[name] = message
            if self._keys.get(name) == key:
                return
            self._keys[name] = key
        self._log.log(level, "%s", message, exc_info=exc_info)

    def clear(self, name: str, message: str) -> None:
        with self._lock:
            self._keys.pop(name, None)
            if self._active.pop(name, None) is None:
                return
        self._log.info("%s", message)

    def get(self, name: str) -> str | None:
        with self._lock:
            return self._active.get(name)

    def active(self) -> dict[str, str]:
        with self._lock:
            return dict(self._active)


@dataclass
class ShipSummary:
    discovered: int = 0
    confirmed: int = 0
    failed: int = 0
    quarantined: int = 0
    evicted: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)
    confirmed_keys: list[tuple[str, str, str]] = field(default_factory=list)  # (segment, key, lock status)


@dataclass
class Listener:
    """Optional callbacks for metrics and progress; every one defaults to a no-op."""

    on_state: Callable[[Entry, str], None] = lambda entry, state: None
    on_upload: Callable[[float, int], None] = lambda seconds, nbytes: None
    on_failure: Callable[[Entry, str], None] = lambda entry, reason: None


def manifest_of(entry: Entry) -> SegmentManifest:
    return SegmentManifest(
        stream=entry.stream, segment=entry.segment, first_seq=entry.first_seq, last_seq=entry.last_seq,
        records=entry.records, size=entry.size, sha256=entry.sha256, merkle_root=entry.merkle_root,
        first_prev=entry.first_prev, last_hash=entry.last_hash, sealed=entry.sealed, first_ts=entry.first_ts,
        last_ts=entry.last_ts,
    )


def abandonment(segs: list[Path], i: int) -> dict[str, Any] | None:
    """The entry of the recovery record that names segment ``i`` as abandoned by the writer
    (torn tail, write error, crash during rotation), or None.  Only such an entry makes an
    unsealed segment complete: it is shipped as evidence, its records being those before the
    entry's ``valid_bytes`` (docs/FORMAT.md §5)."""
    name = segs[i].name
    for later in segs[i + 1:]:
        first = read_first_record(later)
        if first is None:
            continue  # empty, or itself torn at the first line: look further
        if first.kind != Kind.RECOVERY.value:
            return None
        abandoned = first.data.get("abandoned", [])
        if not isinstance(abandoned, list):
            return None
        for e in abandoned:
            if isinstance(e, dict) and e.get("segment") == name and isinstance(e.get("valid_bytes"), int):
                return e
        return None
    return None


def chain_prev_at(segs: list[Path], i: int) -> str | None:
    """The hash of the record before segment ``i``'s first seq, from a later segment that
    starts at the same seq (after a torn first line the next segment does: the recovery
    record, or another abandoned segment, reuses the seq), or None."""
    parsed = parse_segment_name(segs[i].name)
    if parsed is None:
        return None
    for later in segs[i + 1:]:
        first = read_first_record(later)
        if first is not None and first.seq == parsed[0]:
            return str(first.prev)
    return None


def head_anchor_seq(stream_dir: Path) -> int | None:
    """The seq where head.json says the newest segment starts (docs/FORMAT.md §6), or None
    without a readable head."""
    head = read_head_or_none(stream_dir)
    return head.anchor_seq if head is not None else None


def is_sealed_file(path: Path) -> bool:
    last = read_last_line(path)
    if last is None:
        return False
    try:
        return parse_record(last).kind == Kind.SEAL.value
    except RecordError:
        return False


def seal_tree(path: Path) -> tuple[int, str] | None:
    """(tree_size, tree_root) of a sealed segment's seal record (the stream tree before the
    seal's own leaf), for the manifest index; None when the last line is not a seal."""
    last = read_last_line(path)
    try:
        rec = parse_record(last) if last else None
    except RecordError:
        return None
    if rec is None or rec.kind != Kind.SEAL.value:
        return None
    size, root = rec.data.get("tree_size"), rec.data.get("tree_root")
    return (size, root) if isinstance(size, int) and isinstance(root, str) else None


def _differs_from_ledger(path: Path, e: Entry) -> str | None:
    """Why the hot file is not the segment the ledger confirmed, or None when it is (or is
    already gone).  Read once before eviction: the file must be byte-for-byte what was shipped."""
    import hashlib

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size != e.size:
        return f"hot copy is {size} bytes but {e.size} were shipped and confirmed"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    if h.hexdigest() != e.sha256:
        return "hot copy's SHA-256 differs from the shipped and confirmed segment"
    return None


class Shipper:
    def __init__(
        self,
        hot_dir: str | os.PathLike[str],
        store: ColdStore,
        *,
        ledger: Ledger | None = None,
        hot_retention: float = 24 * 3600.0,
        concurrency: int = 4,
        high_water_percent: float = 85.0,
        streams: list[str] | None = None,
        listener: Listener | None = None,
        clock: Callable[[], float] = time.time,
        index: bool = True,
        index_interval: float = 3600.0,
        index_signer: Signer | None = None,
        index_origin: str | None = None,
    ) -> None:
        self.hot_dir = Path(hot_dir)
        self.store = store
        self._owns_ledger = ledger is None
        self.ledger = ledger or Ledger(self.hot_dir)
        self.hot_retention = float(hot_retention)
        self.concurrency = max(1, int(concurrency))
        self.high_water_percent = float(high_water_percent)
        self.streams = streams
        self.listener = listener or Listener()
        self.clock = clock
        self._manifests: dict[tuple[str, str], SegmentManifest] = {}
        self._unshippable: dict[str, str] = {}
        self._lock = threading.Lock()
        # the end of the time cold-storage work may take (set by a drain); see pipeline.cold.retry
        self.deadline = Deadline()
        self.conditions = Conditions(log)
        self._cv = threading.Condition()
        self._inflight: dict[tuple[str, str], threading.Thread] = {}
        self._finished: list[tuple[Entry, str]] = []
        self._hold_until = 0.0  # while cold storage refuses: the next probe (time.monotonic())
        # the manifest index (docs/INDEX.md): parts written every index_interval by the
        # continuous loop, and at the end of every run_once pass; signed by the log's
        # checkpoint key when one is configured (docs/INDEX.md "Signature")
        self.index = IndexWriter(store, self.ledger, signer=index_signer, origin=index_origin) \
            if index and hasattr(store, "put_index_part") else None
        self.index_interval = float(index_interval)
        # the first pass writes what an earlier process left unindexed, then every interval
        self._index_flushed = float("-inf")

    # ------------------------------------------------------------------ discovery

    def discover(self) -> int:
        """Add every shippable hot segment the ledger does not know yet.  A segment is
        shippable when it is sealed, or when it is not the newest segment of its stream
        (an abandoned segment whose torn tail a recovery record explains: kept as evidence)."""
        added = 0
        for stream in self.streams or list_streams(self.hot_dir):
            segs = list_segments(self.hot_dir / stream)
            for i, path in enumerate(segs):
                if self.ledger.get(stream, path.name) is not None:
                    continue
                entry = None
                if not is_sealed_file(path):
                    entry = abandonment(segs, i)
                    if entry is None:
                        # the active segment, or one whose last records and seal the writer has
                        # queued but not yet flushed (rotation opens the next file first): wait
                        continue
                try:
                    if entry is None:
                        manifest = build_manifest(path)
                    else:
                        # abandoned: described up to the valid length its recovery record
                        # gives, even with no record at all (a torn first line)
                        manifest = build_manifest(path, valid_bytes=entry["valid_bytes"],
                                                  chain_prev=chain_prev_at(segs, i))
                except (RecordError, ValueError, OSError) as exc:
                    self._unshippable[f"{stream}/{path.name}"] = str(exc)
                    log.error("cannot describe %s/%s for shipping: %s", stream, path.name, exc)
                    continue
                if self.ledger.add(manifest, self.clock(), seal=seal_tree(path) if entry is None else None):
                    added += 1
        return added

    # ------------------------------------------------------------------ shipping

    def due(self) -> list[Entry]:
        now = self.clock()
        return [e for e in self.ledger.entries(states=ACTIVE_STATES) if e.next_attempt <= now]

    def ship_one(self, entry: Entry) -> str:
        """Take one segment as far as it can go.  Returns the state it ends in."""
        path = self.hot_dir / entry.stream / entry.segment
        manifest = manifest_of(entry)
        try:
            verify = None
            key = entry.cold_key
            if entry.state in ("sealed", "uploading"):
                key_now = self.store.key_for(entry.stream, entry.segment)
                if key and key != key_now:
                    # an earlier attempt chose another name (the compression setting changed
                    # since): if that object exists it is the cold copy; never write a second
                    verify = self._verify_existing(key, manifest)
                if verify is None:
                    key = key_now
                    # the key is recorded before the upload, so a retry finds the same object
                    self._set(entry, "uploading", cold_key=key, expect=("sealed", "uploading"))
                    t0 = time.monotonic()
                    result = self.store.put_segment(entry.stream, entry.segment, str(path), manifest)
                    self.listener.on_upload(time.monotonic() - t0, result.stored_size)
                    # when the object already existed, what we just compressed need not be
                    # byte-identical to it (zstd version, level, threads): keep the object's
                    # own values (None: read from its metadata when verifying again)
                    self._set(entry, "uploaded", cold_key=result.key,
                              stored_sha256=result.stored_sha256 if result.created else None,
                              stored_size=result.stored_size if result.created else None,
                              detail="created" if result.created else "already present; verified instead",
                              expect=("uploading",))
                    verify = result.verify
            if verify is None:
                key = key or self.store.key_for(entry.stream, entry.segment)
                verify = self.store.verify(key, manifest, expected_stored_sha256=entry.stored_sha256,
                                           expected_stored_size=entry.stored_size)
                if not verify.ok:
                    raise VerificationError("stored object failed verification", verify, segment=entry.segment)
            self._set(entry, "verified", lock_status=verify.lock_status, cold_key=key,
                      expect=("uploading", "uploaded", "verified"))
            # the clock is read inside the ledger's write transaction: confirmed_at then follows
            # commit order, which the monitor's landing watermark relies on (read before the
            # transaction, another upload thread could commit a later time first, and a monitor
            # cycle in between moved its watermark past this segment for good)
            self._set(entry, "confirmed", confirmed_at=self.clock, last_error=None, expect=("verified",))
            return "confirmed"
        except StateConflict as exc:
            log.warning("%s", exc)
            return "skipped"
        except QUARANTINE_ERRORS as exc:
            reason = exc.diagnostics()
            try:
                self._set(entry, "quarantined", last_error=str(exc), detail=reason, expect=ACTIVE_STATES)
            except StateConflict:
                return "skipped"
            self.listener.on_failure(entry, "quarantined")
            log.error("quarantined %s/%s: %s", entry.stream, entry.segment, exc)
            if isinstance(exc, VerificationError) and exc.result.reasons \
                    and set(exc.result.reasons) <= LOCK_REASONS:
                self._refuse("cold storage did not lock a stored object as required (Object Lock COMPLIANCE "
                             f"for retention_days {self.store.settings.retention_days}): "
                             + "; ".join(c.detail for c in exc.result.checks if not c.ok)
                             + "; that segment is quarantined (its hot copy is kept). "
                             "Fix the bucket's Object Lock configuration or policy (or the container's "
                             "immutability policy); uploads are held and one segment is tried again every "
                             f"{self.store.settings.lock_recheck_seconds:g} s", key="lock")
            return "quarantined"
        except sqlite3.Error:
            raise  # the ledger itself failed: nothing can be recorded; the caller reports it
        except Exception as exc:  # transient or configuration: retry with backoff, forever
            current = self.ledger.get(entry.stream, entry.segment)
            attempts = (current.attempts if current else entry.attempts) + 1
            if is_refusal(exc):
                # re-checked at the store's lock re-check interval, not backed off for minutes:
                # once the operator fixes the bucket, shipping resumes within that interval
                backoff = float(self.store.settings.lock_recheck_seconds)
            else:
                backoff = min(MAX_BACKOFF, 2.0 ** min(attempts, 10)) * (0.5 + random.random() / 2)
            self.ledger.record_failure(entry.stream, entry.segment, str(exc), self.clock() + backoff)
            self.listener.on_failure(entry, type(exc).__name__)
            self._report_failure(entry, exc, attempts, backoff)
            return "failed"

    def _report_failure(self, entry: Entry, exc: Exception, attempts: int, backoff: float) -> None:
        """Store-wide failures become conditions (one log line per change); the per-segment
        line is then only DEBUG.  Anything else is one WARNING per attempt (backed off)."""
        if isinstance(exc, ColdError) and is_refusal(exc):
            self._refuse("cold storage refuses uploads: " + store_wide_message(exc))
            level = logging.DEBUG
        elif isinstance(exc, ColdUnavailableError | TimeoutError | ConnectionError):
            # one line while the outage lasts, whichever request or error code shows it
            summary = store_wide_message(exc) if isinstance(exc, ColdError) else f"{type(exc).__name__}: {exc}"
            self.conditions.set("unavailable", "cold storage unavailable, retrying with backoff: " + summary,
                                key="unavailable", level=logging.WARNING)
            level = logging.DEBUG
        else:
            level = logging.WARNING
        log.log(level, "shipping %s/%s failed (attempt %d, next in %.0fs): %s", entry.stream, entry.segment,
                attempts, backoff, exc)

    def _refuse(self, message: str, key: str | None = None) -> None:
        """Cold storage will not take segments until an operator acts: say so once (ERROR,
        with the fix; ``/readyz`` fails) and hold uploads, probing with one segment per
        re-check interval, so that the backlog is not run into the same wall."""
        self.conditions.set("refusal", message, key=key)
        with self._cv:
            self._hold_until = time.monotonic() + float(self.store.settings.lock_recheck_seconds)

    def _report_confirmed(self) -> None:
        self.conditions.clear("refusal", "cold storage accepts uploads again: a segment was stored and verified")
        self.conditions.clear("unavailable", "cold storage answers again: a segment was stored and verified")

    def _verify_existing(self, key: str, manifest: SegmentManifest) -> Any:
        """The verification of an object stored under ``key`` by an earlier attempt, or None
        when there is no such object (then nothing was stored there)."""
        try:
            self.store.stat(key)
        except ObjectNotFoundError:
            return None
        verify = self.store.verify(key, manifest)
        if not verify.ok:
            raise VerificationError("the object an earlier attempt stored does not verify", verify,
                                    segment=manifest.segment)
        return verify

    def _set(self, entry: Entry, state: str, *, detail: str | None = None,
             expect: tuple[str, ...] | None = None, **fields: Any) -> None:
        self.ledger.set_state(entry.stream, entry.segment, state, detail=detail, expect=expect, **fields)
        self.listener.on_state(entry, state)

    # ------------------------------------------------------------------ eviction

    def evict(self) -> int:
        """Delete hot copies of confirmed segments older than the hot retention."""
        now = self.clock()
        n = 0
        anchors: dict[str, int | None] = {}
        for e in self.ledger.entries(states=("confirmed", "evicted")):
            path = self.hot_dir / e.stream / e.segment
            if e.state == "confirmed":
                if e.confirmed_at is None or e.confirmed_at + self.hot_retention > now:
                    continue
                if e.stream not in anchors:
                    anchors[e.stream] = head_anchor_seq(self.hot_dir / e.stream)
                anchor = anchors[e.stream]
                if anchor is None or anchor <= e.last_seq:
                    # the writer continues the chain from head.json once the segments are gone:
                    # never evict a segment the head has not moved past (docs/FORMAT.md §6)
                    continue
                problem = _differs_from_ledger(path, e)
                if problem is not None:
                    # the hot file is not what was shipped: keep it, and say so
                    with contextlib.suppress(StateConflict):
                        self._set(e, "quarantined", last_error=problem, detail=problem, expect=("confirmed",))
                    log.error("not evicting %s/%s: %s", e.stream, e.segment, problem)
                    continue
                try:  # written before acting: a crash re-runs the unlink
                    self._set(e, "evicted", evicted_at=now, expect=("confirmed",))
                except StateConflict:
                    continue
            if path.exists():
                try:
                    attr.clear_protection(path)
                    path.unlink()
                except OSError as exc:
                    log.error("cannot evict %s: %s (CAP_LINUX_IMMUTABLE is needed to clear the attribute)",
                              path, exc)
                    continue
                n += 1
        return n

    # ------------------------------------------------------------------ pressure

    def disk_used_ratio(self) -> float:
        st = os.statvfs(self.hot_dir)
        total = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        return 0.0 if total == 0 else 1.0 - free / total

    def backpressure(self) -> str | None:
        """A reason string while the hot disk is above the high-water mark, else None."""
        used = self.disk_used_ratio() * 100
        if used >= self.high_water_percent:
            return (f"hot disk {used:.0f}% used, above the high-water mark of {self.high_water_percent:.0f}%: "
                    "unconfirmed segments are never deleted; wait for shipping or add space")
        return None

    def cold_lag(self) -> float:
        """Seconds since the oldest segment that is not yet confirmed was discovered."""
        pending = self.ledger.entries(states=(*ACTIVE_STATES, "quarantined"))
        if not pending:
            return 0.0
        return max(0.0, self.clock() - min(e.discovered_at for e in pending))

    # ------------------------------------------------------------------ loops

    def dispatch(self, only: list[Entry] | None = None,
                 progress: Callable[[Entry, str], None] | None = None) -> list[Entry]:
        """Start uploads of due segments (or of ``only``) in free slots, without waiting for
        them.  Returns the entries started."""
        left = self.deadline.remaining()
        if left is not None and left <= 0:
            return []
        with self._cv:
            busy = set(self._inflight)
            free = self.concurrency - len(busy)
            if self.conditions.get("refusal"):
                # held: one probe per re-check interval, and only when nothing else is running
                if time.monotonic() < self._hold_until or busy:
                    return []
                free = 1
                self._hold_until = time.monotonic() + float(self.store.settings.lock_recheck_seconds)
        started: list[Entry] = []
        for e in (self.due() if only is None else only):
            if len(started) >= free:
                break
            if (e.stream, e.segment) in busy:
                continue
            self._start(e, progress)
            started.append(e)
        return started

    def _start(self, entry: Entry, progress: Callable[[Entry, str], None] | None) -> None:
        key = (entry.stream, entry.segment)

        def run() -> None:
            state = "failed"
            try:
                with bounded_by(self.deadline):
                    state = self.ship_one(entry)
                if state == "confirmed":
                    self._report_confirmed()
            except sqlite3.Error as exc:
                self.conditions.set("ledger", self.ledger.write_error or f"shipper ledger failed: {exc}")
            except Exception as exc:  # never lose a slot to an unexpected error
                self.conditions.set("upload", f"an upload thread failed: {type(exc).__name__}: {exc}",
                                    exc_info=True)
            finally:
                try:
                    # reported before the slot is released: run_once returns only after
                    # every started segment's report (a CLI exiting at once loses none)
                    if progress is not None:
                        progress(entry, state)
                finally:
                    with self._cv:
                        self._inflight.pop(key, None)
                        self._finished.append((entry, state))
                        self._cv.notify_all()

        # daemon: an upload stuck in a request must never keep the process from exiting
        t = threading.Thread(target=run, name=f"ship-{entry.segment}", daemon=True)
        with self._cv:
            self._inflight[key] = t
        t.start()

    def in_flight(self) -> int:
        with self._cv:
            return len(self._inflight)

    def close(self) -> None:
        """Close the ledger this shipper opened (one passed in belongs to the caller).  Call
        it once no upload is in flight: a closed ledger cannot record their outcome."""
        if self._owns_ledger:
            self.ledger.close()

    def _collect(self, summary: ShipSummary) -> None:
        with self._cv:
            done, self._finished = self._finished, []
        for e, state in done:
            if state == "confirmed":
                summary.confirmed += 1
                cur = self.ledger.get(e.stream, e.segment)
                if cur is not None:
                    summary.confirmed_keys.append((e.segment, cur.cold_key or "", cur.lock_status or ""))
            elif state == "quarantined":
                summary.quarantined += 1
            elif state == "failed":
                summary.failed += 1
                cur = self.ledger.get(e.stream, e.segment)
                if cur and cur.last_error:
                    summary.errors.append(f"{e.stream}/{e.segment}: {cur.last_error}")

    def flush_index(self, force: bool = False) -> int:
        """Write the manifest index parts now (``force``) or when ``index_interval`` has
        passed.  A failure is a condition (logged once; the rows wait in the ledger)."""
        if self.index is None or (not force and time.monotonic() - self._index_flushed < self.index_interval):
            return 0
        left = self.deadline.remaining()
        if left is not None and left <= 0:
            return 0  # a drain's grace period is over: the rows wait in the ledger
        self._index_flushed = time.monotonic()
        try:
            with bounded_by(self.deadline):
                n = self.index.flush(self.clock())
        except (ColdError, IndexConflict, StateConflict) as exc:
            self.conditions.set("index", f"manifest index not written (retried next pass): {exc}",
                                level=logging.WARNING)
            return 0
        except ImportError as exc:  # pyarrow is a dependency; an image built without it still ships segments
            self.conditions.set("index", f"manifest index not written: {exc.name} is not installed (the rows wait "
                                "in the ledger; install worm-pipeline's dependencies)", level=logging.ERROR)
            return 0
        self.conditions.clear("index", "manifest index written again")
        return n

    def _finish_pass(self, summary: ShipSummary, force_index: bool = False) -> ShipSummary:
        self.flush_index(force_index)
        summary.evicted = self.evict()
        self.ledger.ensure_reserve()
        summary.pending = len(self.ledger.entries(states=ACTIVE_STATES))
        if self.ledger.write_error is None:
            self.conditions.clear("ledger", "the shipper ledger is writable again")
        return summary

    def tick(self) -> ShipSummary:
        """One step of the continuous loop: discover, start what is due, collect what
        finished, evict.  Never waits for an upload."""
        summary = ShipSummary()
        summary.discovered = self.discover()
        self.dispatch()
        self._collect(summary)
        return self._finish_pass(summary)

    def run_once(self, progress: Callable[[Entry, str], None] | None = None,
                 deadline: float | None = None) -> ShipSummary:
        """One pass: every segment due now is taken as far as it can go (each once), up to
        ``concurrency`` at a time; uploads already running are waited for.  With
        ``deadline`` (``time.monotonic()``), the pass returns then, whatever is in flight."""
        summary = ShipSummary()
        summary.discovered = self.discover()
        with self._cv:
            running = set(self._inflight)  # already being shipped: waited for, not started again
        todo = [e for e in self.due() if (e.stream, e.segment) not in running]
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                break
            started = {(e.stream, e.segment) for e in self.dispatch(todo, progress)}
            todo = [e for e in todo if (e.stream, e.segment) not in started]
            self._collect(summary)
            with self._cv:
                if not self._inflight and (not todo or (not started and self.conditions.get("refusal"))):
                    break  # all done, or held while cold storage refuses: the rest stays due
                wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
                self._cv.wait(wait)
        self._collect(summary)
        return self._finish_pass(summary, force_index=True)

    def run_forever(self, stop: threading.Event, poll_interval: float = 2.0,
                    after_pass: Callable[[ShipSummary], None] | None = None) -> None:
        """The continuous loop (``pipeline ship --follow``, the sidecar).  A failing pass is
        logged once (with its traceback) until passes succeed again."""
        while not stop.is_set():
            try:
                summary = self.tick()
                if after_pass is not None:
                    after_pass(summary)
            except sqlite3.Error as exc:
                self.conditions.set("ledger", self.ledger.write_error or f"shipper ledger failed: {exc}")
            except Exception as exc:  # never let one bad pass kill the sidecar
                self.conditions.set("pass", f"shipper pass failed: {type(exc).__name__}: {exc}", exc_info=True)
            else:
                self.conditions.clear("pass", "shipper passes succeed again")
            stop.wait(poll_interval)

    def problem(self) -> str | None:
        """Why the shipper cannot do its job without an operator, for ``/readyz``: cold
        storage refusing uploads, or the ledger not writable.  None when neither."""
        for name in ("refusal", "ledger"):
            message = self.conditions.get(name)
            if message:
                return message
        return None

    def status(self) -> dict[str, Any]:
        return {
            "segments": self.ledger.counts(),
            "cold_lag_seconds": round(self.cold_lag(), 3),
            "hot_disk_used_ratio": round(self.disk_used_ratio(), 4),
            "backpressure": self.backpressure(),
            "unshippable": dict(self._unshippable),
            "conditions": self.conditions.active(),
            "failing": [
                {"segment": f"{e.stream}/{e.segment}", "state": e.state, "attempts": e.attempts,
                 "last_error": e.last_error}
                for e in self.ledger.entries(states=(*ACTIVE_STATES, "quarantined"))
                if e.last_error
            ],
        }
