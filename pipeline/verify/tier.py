"""``pipeline verify-tier``: reconcile the hot tier, the shipper's ledger and cold storage.

Modelled on ``aws cloudtrail validate-logs`` and stricter.  CloudTrail follows a chain of
digest files backwards, so deleting two consecutive digests (or everything after one)
makes whole periods silently unvalidated, and appended or truncated log files pass when
their digest is gone too.  Here continuity never depends on one object pointing at
another: every object's own metadata says which seqs it holds (``first_seq..last_seq``)
and which hash it links to (``first_prev``), so ANY missing run of segments is a seq gap
with its exact range, however many segments it spans, and the object's size and SHA-256
(as the service reports them) are compared with what was uploaded, so appended or
truncated bytes are caught without downloading anything.

Cost model (docs/VERIFY-TIER.md):

- default mode: one listing of the stream prefix + at most ONE request per segment (HEAD:
  size, service SHA-256, lock mode, retain-until, legal hold, storage class and the
  segment manifest in the metadata), plus at most one GET per checkpoint source (the
  newest checkpoint of the log and of each witness is recomputed from the segment that
  covers it);
- ``--deep``: also streams every object (in parallel, bounded memory), decompresses it
  with the metadata's size as the limit and re-verifies every record, seal and link with
  ``pipeline.verify.chain``; every checkpoint is recomputed from the leaves.

Memory grows with the number of segments only by one ``SegmentLine`` (a few hundred
bytes); object metadata is dropped as soon as it has been judged.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import hashlib
import itertools
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pipeline.cold.base import ColdStore, ObjectStat, ObjectVersion, VersionsUnavailable
from pipeline.cold.checks import LOCK_MODES_ACCEPTED
from pipeline.cold.errors import ColdError, ObjectNotFoundError
from pipeline.errors import PipelineError
from pipeline.findings import ERROR, VERIFY_TIER, WARNING, Finding, codes
from pipeline.format import merkle
from pipeline.format.checkpoint import Checkpoint, NoteError, Verifier, open_checkpoint, split_note
from pipeline.format.layout import (
    CHECKPOINT_DIR,
    CHECKPOINT_HISTORY,
    CHECKPOINT_LATEST,
    WITNESS_LATEST,
    decode_metadata,
    ledger_path,
    manifest_from_metadata,
    read_head_or_none,
    segment_of_key,
    stream_prefix,
    unescape_origin,
)
from pipeline.format.record import GENESIS_HASH, Kind, RecordError, parse_record, ts_epoch
from pipeline.format.segment import SegmentManifest, list_segments, list_streams, parse_segment_name, read_last_line
from pipeline.ship.index import is_index_key
from pipeline.ship.ledger import Entry, Ledger, open_ledger_readonly
from pipeline.verify import chain
from pipeline.verify.coldread import discard, fetch_segment
from pipeline.verify.hot import reread_unsealed

SCHEMA = "worm-pipeline/verify-tier/v1"

# Every finding code verify-tier emits, its severity and meaning: verify-tier's view of the
# one registry (pipeline.findings; docs/VERIFY-TIER.md lists the same table and
# tests/verify/test_findings.py checks the two agree).  Errors make the exit code 1;
# warnings are listed but do not fail the run.
CODES: dict[str, tuple[str, str]] = {c: (i.severity, i.meaning) for c, i in codes(report=VERIFY_TIER).items()}
_DELETED = "deleted between listing and reading"
_SHIPPED = ("uploaded", "verified", "confirmed", "evicted")  # the object was stored before the row said so
# findings about what lies BETWEEN segments: listed as gaps, they do not mark a segment INVALID
GAP_CODES = frozenset({"missing-segment", "missing-start", "time-gap"})


class TierError(PipelineError, RuntimeError):
    """verify-tier could not run (exit code 2)."""


TierFinding = Finding  # its name before the findings model (kept for one release)


@dataclass(slots=True)
class SegmentLine:
    """The per-segment record kept for the report: small on purpose (scale)."""

    segment: str
    key: str | None = None
    status: str = "valid"  # valid | INVALID | missing | pending
    first_seq: int | None = None
    last_seq: int | None = None
    records: int | None = None
    size: int | None = None  # uncompressed segment bytes
    stored_size: int | None = None
    sealed: bool | None = None
    compression: str | None = None
    lock: str | None = None
    retain_until: str | None = None
    legal_hold: bool | None = None
    storage_class: str | None = None
    hot_state: str | None = None
    first_ts: str | None = None
    last_ts: str | None = None
    first_prev: str | None = None
    last_hash: str | None = None
    uploaded: float | None = None  # LastModified (epoch s): a time axis when metadata lacks record times
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"segment": self.segment, "key": self.key, "status": self.status, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "records": self.records, "size": self.size,
                "stored_size": self.stored_size, "sealed": self.sealed, "compression": self.compression,
                "lock": self.lock, "retain_until": self.retain_until, "legal_hold": self.legal_hold,
                "storage_class": self.storage_class, "hot_state": self.hot_state, "first_ts": self.first_ts,
                "last_ts": self.last_ts, "reasons": list(self.reasons)}


@dataclass
class Gap:
    kind: str  # seq | time
    after: str | None
    before: str | None
    from_seq: int | None = None
    to_seq: int | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "after_segment": self.after, "before_segment": self.before,
                "from_seq": self.from_seq, "to_seq": self.to_seq,
                "seconds": None if self.seconds is None else round(self.seconds, 3)}


@dataclass
class CheckpointSummary:
    sources: list[str] = field(default_factory=list)
    notes: int = 0
    signatures_verified: int = 0
    recomputed: int = 0
    not_recomputed: int = 0
    log_latest: int | None = None
    witness_latest: dict[str, int | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"sources": self.sources, "notes": self.notes, "signatures_verified": self.signatures_verified,
                "recomputed": self.recomputed, "not_recomputed": self.not_recomputed,
                "log_latest_size": self.log_latest, "witness_latest_size": dict(self.witness_latest)}


@dataclass
class StreamTier:
    stream: str
    segments: list[SegmentLine] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    findings: list[TierFinding] = field(default_factory=list)
    checkpoints: CheckpointSummary = field(default_factory=CheckpointSummary)
    records: int = 0
    outside_window: int = 0
    log_size: int = 0

    @property
    def ok(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    def totals(self) -> dict[str, int]:
        c = {"segments": len(self.segments), "valid": 0, "invalid": 0, "missing": 0, "pending": 0}
        for s in self.segments:
            k = s.status.lower()
            c[k] = c.get(k, 0) + 1
        c["records"] = self.records
        c["bytes_stored"] = sum(s.stored_size or 0 for s in self.segments)
        c["errors"] = sum(1 for f in self.findings if f.severity == ERROR)
        c["warnings"] = sum(1 for f in self.findings if f.severity == WARNING)
        c["outside_window"] = self.outside_window
        return c

    def to_dict(self) -> dict[str, Any]:
        return {"stream": self.stream, "ok": self.ok, "segments": [s.to_dict() for s in self.segments],
                "gaps": [g.to_dict() for g in self.gaps], "checkpoints": self.checkpoints.to_dict(),
                "totals": self.totals()}


@dataclass
class TierReport:
    mode: str
    cold: str
    hot: str | None
    cold_only: bool
    since: float | None
    until: float | None
    streams: list[StreamTier] = field(default_factory=list)
    global_findings: list[TierFinding] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def findings(self) -> list[TierFinding]:
        out = list(self.global_findings)
        for s in self.streams:
            out.extend(s.findings)
        return out

    @property
    def ok(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.streams:
            for k, v in s.totals().items():
                out[k] = out.get(k, 0) + v
        for k in ("segments", "valid", "invalid", "missing", "pending", "records", "bytes_stored", "errors",
                  "warnings", "outside_window"):
            out.setdefault(k, 0)
        out["errors"] += sum(1 for f in self.global_findings if f.severity == ERROR)
        out["warnings"] += sum(1 for f in self.global_findings if f.severity == WARNING)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "ok": self.ok,
            "mode": self.mode,
            "cold": self.cold,
            "hot": self.hot,
            "cold_only": self.cold_only,
            "window": {"since": _iso(self.since), "until": _iso(self.until)},
            "streams": [s.to_dict() for s in self.streams],
            "findings": [f.to_dict() for f in self.findings],
            "totals": self.totals(),
            "requests": dict(self.requests),
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass
class TierOptions:
    hot: Path | None = None
    stream: str | None = None
    since: float | None = None  # epoch seconds
    until: float | None = None
    deep: bool = False
    expiry_warning_days: float = 30.0
    heartbeat_interval: float = 60.0  # 0 disables the time-gap check
    allow_unlocked: bool = False
    retention_days: int | None = None  # None: the store settings' retention
    workers: int = 16
    verifiers: list[Verifier] = field(default_factory=list)
    witness_dirs: list[Path] = field(default_factory=list)
    witness_s3: list[tuple[Any, str, str]] = field(default_factory=list)  # (client, bucket, prefix)
    checkpoint_files: list[Path] = field(default_factory=list)
    origin: str | None = None
    witness_max_lag: float = 3600.0
    cold_only: bool = False
    progress: Callable[[str, int, int], None] | None = None
    temp_dir: str | None = None


# ---------------------------------------------------------------------------- helpers

T = TypeVar("T")
R = TypeVar("R")
# requests queued or in flight per worker: enough to keep every worker busy while the
# caller judges a result, few enough that memory does not grow with the listing
WINDOW_PER_WORKER = 4


def bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int, window: int | None = None) -> Iterator[R]:
    """``map`` in order on ``workers`` threads with at most ``window`` calls submitted and
    not yet taken by the caller (default ``WINDOW_PER_WORKER`` × ``workers``).
    ``Executor.map`` would submit the whole iterable at once: one pending future, and once
    done its result, per item until the caller reaches it (docs/SCALING.md, "Direct mode's
    memory")."""
    workers = max(1, workers)
    window = max(1, window if window is not None else WINDOW_PER_WORKER * workers)
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str, now: float | None = None) -> float:
    """ISO 8601 date or date-time (UTC unless an offset is given), or a duration ago:
    ``90s``, ``30m``, ``12h``, ``7d``."""
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return (time.time() if now is None else now) - float(text[:-1]) * units[text[-1]]
    try:
        d = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"cannot parse time {text!r}: use ISO 8601 (2026-11-21T10:00:00Z) or 7d/12h/30m") from exc
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return d.timestamp()


def _requests_of(store: ColdStore) -> dict[str, int]:
    counter = getattr(store, "requests", None)
    return dict(counter) if counter is not None else {}


def summarise_requests(before: dict[str, int], after: dict[str, int], segments: int) -> dict[str, int]:
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    lst = sum(v for k, v in diff.items() if k.lower().startswith("list"))
    head = sum(v for k, v in diff.items() if k in ("HeadObject", "HEAD"))
    get = sum(v for k, v in diff.items() if k in ("GetObject", "GET"))
    total = sum(diff.values())
    return {"total": total, "list": lst, "head": head, "get": get, "other": total - lst - head - get,
            "segments": segments}


def _bind(add: Callable[..., None], name: str, key: str) -> Callable[[str, str, int | None], None]:
    def bound(code: str, message: str, seq: int | None) -> None:
        add(code, name, message, seq, key)

    return bound


def _seg_sort_key(name: str) -> tuple[int, int]:
    return parse_segment_name(name) or (1 << 62, 0)


# ---------------------------------------------------------------------------- per object


@dataclass(slots=True)
class _Obj:
    """One cold object while a stream is judged (dropped after)."""

    name: str
    key: str
    compression: str
    listed_size: int
    last_modified: dt.datetime | None


def _judge_stat(line: SegmentLine, st: ObjectStat, stream: str, name: str, entry: Entry | None,
                opts: TierOptions, retention_days: int, worm_enforced: bool | None, now: dt.datetime,
                add: Callable[[str, str, int | None], None]) -> SegmentManifest | None:
    """Everything one HEAD proves.  Returns the manifest from metadata (None if unusable)."""
    meta = decode_metadata(st.metadata)
    line.stored_size = st.size
    line.storage_class = st.storage_class
    line.legal_hold = st.legal_hold
    line.compression = meta.get("compression")
    try:
        m = manifest_from_metadata(st.metadata)
    except ValueError as exc:
        add("metadata-invalid", str(exc), None)
        m = None
    if m is not None:
        line.first_seq, line.last_seq, line.records, line.size = m.first_seq, m.last_seq, m.records, m.size
        line.sealed, line.first_ts, line.last_ts = m.sealed, m.first_ts or None, m.last_ts or None
        line.first_prev, line.last_hash = m.first_prev, m.last_hash
        parsed = parse_segment_name(name)
        if m.segment != name or m.stream != stream or parsed is None or parsed[0] != m.first_seq:
            add("renamed-object", f"key names {stream}/{name} but the metadata describes "
                f"{m.stream}/{m.segment} (seq {m.first_seq}..{m.last_seq})", m.first_seq)

    # Layer 1: the stored bytes, as the service reports them, against what was uploaded.
    # The ledger's record of the upload is authoritative; the metadata is the fallback for
    # auditors without the host (it is written by the same create-only PUT).
    want_size: int | None = entry.stored_size if entry and entry.stored_size is not None else None
    if want_size is None and meta.get("stored_size", "").isdigit():
        want_size = int(meta["stored_size"])
    if want_size is not None and st.size != want_size:
        code = "appended-bytes" if st.size > want_size else "truncated-object"
        add(code, f"object is {st.size} bytes, {want_size} were uploaded "
            f"({'+' if st.size > want_size else ''}{st.size - want_size} bytes)", None)
    want_sha = entry.stored_sha256 if entry and entry.stored_sha256 else meta.get("stored_sha256")
    if st.sha256 is not None and want_sha:
        accepted = {want_sha, meta.get("stored_sha256_composite")}
        if st.sha256 not in accepted:
            add("object-replaced", f"service SHA-256 {st.sha256[:16]}… differs from the uploaded "
                f"{want_sha[:16]}…", None)
    if entry is not None and meta.get("stored_sha256") and entry.stored_sha256 \
            and meta["stored_sha256"] != entry.stored_sha256:
        add("object-replaced", "the object's metadata records other stored bytes than the shipper uploaded", None)
    if entry is not None and m is not None:
        diffs = [f"{k} {getattr(m, k)!r} != {getattr(entry, k)!r}"
                 for k in ("size", "sha256", "merkle_root", "first_seq", "last_seq", "first_prev", "last_hash")
                 if getattr(m, k) != getattr(entry, k)]
        if diffs:
            add("hot-cold-mismatch", "cold metadata differs from the shipped segment: " + "; ".join(diffs[:3]),
                m.first_seq)

    # The lock.
    mode = (st.lock_mode or "").upper()
    line.lock = st.lock_mode
    line.retain_until = st.retain_until.isoformat() if st.retain_until else None
    if worm_enforced is False and not mode:
        mode = ""
    if mode not in LOCK_MODES_ACCEPTED:
        if not opts.allow_unlocked:
            add("not-locked", f"lock mode is {st.lock_mode or 'none'}: the object can be overwritten or deleted",
                None)
    elif mode != "IMMUTABLE":
        uploaded = st.last_modified or now
        required = uploaded + dt.timedelta(days=retention_days) - dt.timedelta(days=1)  # a day of slack
        if st.retain_until is None or st.retain_until < required:
            if not opts.allow_unlocked:
                add("retention-too-short", f"retain-until {line.retain_until} is before the policy's "
                    f"{required.date().isoformat()} ({retention_days} days from upload)", None)
        elif st.retain_until < now + dt.timedelta(days=opts.expiry_warning_days):
            add("expiring-soon", f"retention ends {line.retain_until}", None)
    return m


def _same_kms_key(reported: str, expected: str) -> bool:
    """S3 reports the key ARN; a bucket rule or the configuration may name the key by ARN or
    bare key id.  An alias cannot be resolved without KMS: treated as matching."""
    if "alias/" in expected:
        return True
    return reported == expected or reported.endswith("/" + expected) or expected.endswith("/" + reported)


def judge_encryption(st: ObjectStat, expected: tuple[str, str | None] | None,
                     add: Callable[[str, str, int | None], None]) -> None:
    """Issue 18: an object whose encryption differs from the bucket default or the configured key."""
    if expected is None or st.sse is None:
        return
    alg, key = expected
    if st.sse != alg:
        add("encryption-differs", f"encrypted with {st.sse}, expected {alg}", None)
    elif key and st.sse_kms_key_id and not _same_kms_key(st.sse_kms_key_id, key):
        add("encryption-differs", f"encrypted with KMS key {st.sse_kms_key_id}, expected {key}", None)


# ---------------------------------------------------------------------------- checkpoints


@dataclass
class _CpNote:
    source: str  # "log" | witness name | file
    note: bytes
    cp: Checkpoint | None = None
    witness: bool = False


def newest_per_source(cps: Sequence[_CpNote]) -> tuple[int | None, dict[str, int]]:
    """The newest checkpoint size of the log (None without log checkpoints) and of each witness."""
    log = [c.cp.size for c in cps if not c.witness and c.cp is not None]
    latest_by_source: dict[str, int] = {}
    for c in cps:
        if c.witness and c.cp is not None:
            latest_by_source[c.source] = max(latest_by_source.get(c.source, -1), c.cp.size)
    return (max(log) if log else None), latest_by_source


def recomputed_without_deep(cps: Sequence[_CpNote]) -> set[int]:
    """The checkpoint sizes whose root default mode recomputes whatever segment is local: the
    newest of each source (at most one GET each).  Other sizes are recomputed only from
    segments on the hot disk, or by --deep."""
    log_latest, latest_by_source = newest_per_source(cps)
    return ({log_latest} if log_latest is not None else set()) | set(latest_by_source.values())


def _origin_matches(origin: str, stream: str) -> bool:
    return origin == stream or origin.endswith("/" + stream)


def _collect_checkpoints(stream: str, opts: TierOptions, summary: CheckpointSummary,
                         add: Callable[..., None]) -> list[_CpNote]:
    notes: list[_CpNote] = []
    origin = opts.origin
    log_note: bytes | None = None
    if opts.hot is not None:
        d = opts.hot / stream / CHECKPOINT_DIR
        hist = d / CHECKPOINT_HISTORY
        if hist.exists():
            import json

            summary.sources.append(str(d))
            for ln in hist.read_bytes().splitlines():
                if ln.strip():
                    try:
                        notes.append(_CpNote("log", str(json.loads(ln)["note"]).encode()))
                    except (ValueError, KeyError):
                        add("checkpoint-signature-invalid", "unreadable line in checkpoint history", None)
        latest = d / CHECKPOINT_LATEST
        if latest.exists():
            notes.append(_CpNote("log", latest.read_bytes()))
            log_note = notes[-1].note
        if origin is None:
            for n in notes:
                try:
                    origin = Checkpoint.parse(split_note(n.note)[0]).origin
                    break
                except NoteError:
                    continue
    for f in opts.checkpoint_files:
        summary.sources.append(str(f))
        notes.append(_CpNote("log", f.read_bytes()))
    for wdir in opts.witness_dirs:
        name = f"dir:{wdir}"
        summary.sources.append(name)
        summary.witness_latest[name] = None
        if not wdir.is_dir():
            continue
        for sub in sorted(wdir.iterdir()):
            o = unescape_origin(sub.name)
            if not sub.is_dir() or not (o == origin if origin else _origin_matches(o, stream)):
                continue
            for p in sorted(sub.glob("[0-9]*.note")):
                notes.append(_CpNote(name, p.read_bytes(), witness=True))
            if (sub / WITNESS_LATEST).exists():
                notes.append(_CpNote(name, (sub / WITNESS_LATEST).read_bytes(), witness=True))
    for client, bucket, prefix in opts.witness_s3:
        from pipeline.witness.s3 import S3Witness

        w = S3Witness(client, bucket, prefix)
        summary.sources.append(w.name)
        summary.witness_latest[w.name] = None
        origins: set[str] = set()
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=w.prefix + "/", Delimiter="/"):
            for cp_ in page.get("CommonPrefixes", []):
                origins.add(unescape_origin(cp_["Prefix"].rstrip("/").rsplit("/", 1)[-1]))
        for o in sorted(origins):
            if o == origin if origin else _origin_matches(o, stream):
                notes.extend(_CpNote(w.name, n, witness=True) for n in w.checkpoints(o))
    if opts.hot is not None and (opts.witness_dirs or opts.witness_s3):
        # the emitter stores the log's checkpoint BEFORE it hands it to the witnesses: one emitted
        # after the log's was read above may be at a witness already (a false checkpoint-rollback);
        # the log's latest read again AFTER the witnesses' holds it
        with contextlib.suppress(FileNotFoundError):
            again = (opts.hot / stream / CHECKPOINT_DIR / CHECKPOINT_LATEST).read_bytes()
            if again != log_note:
                notes.append(_CpNote("log", again))
    return notes


class _RootSource:
    """Recomputes the stream tree's root at a given size from the segment that covers it.

    A sealed segment's seal carries ``start_frontier`` (the compact range at its first
    seq); appending the segment's leaf hashes to it gives the root at every size inside the
    segment.  scan_segment checks the segment's frontiers against each other first, and
    --deep also checks them against the previous segment (chain.stitch), so the
    recomputation is only as trusted as the mode that produced it (documented)."""

    def __init__(self, store: ColdStore, tmp: Path) -> None:
        self.store = store
        self.tmp = tmp
        # (first_seq, attempt, name, hot path or None, key or None)
        self.index: list[tuple[int, int, str, Path | None, str | None]] = []
        self.fetches = 0
        self._firsts: list[int] = []

    def add(self, name: str, hot: Path | None, key: str | None) -> None:
        p = parse_segment_name(name)
        if p is not None:
            self.index.append((p[0], p[1], name, hot, key))

    def finish(self) -> None:
        self.index.sort(key=lambda x: (x[0], x[1]))
        self._firsts = [x[0] for x in self.index]

    def covering(self, size: int) -> tuple[int, int, str, Path | None, str | None] | None:
        # the last segment (highest attempt among equal first seqs) starting at or before leaf size-1
        i = bisect.bisect_right(self._firsts, size - 1)
        return self.index[i - 1] if i else None

    def local(self, size: int) -> bool:
        c = self.covering(size)
        return c is not None and c[3] is not None and c[3].exists()

    def roots(self, wanted: Sequence[int], allow_fetch: bool) -> dict[int, bytes | str]:
        """size -> root bytes, or a reason string when it cannot be recomputed."""
        out: dict[int, bytes | str] = {}
        by_seg: dict[str, list[int]] = {}
        segs: dict[str, tuple[int, int, str, Path | None, str | None]] = {}
        for n in wanted:
            if n == 0:
                out[n] = merkle.root_from_leaf_hashes([])
                continue
            c = self.covering(n)
            if c is None:
                out[n] = "no segment covers it"
                continue
            by_seg.setdefault(c[2], []).append(n)
            segs[c[2]] = c
        for name, sizes in by_seg.items():
            _f, _a, _n, hot, key = segs[name]
            path: Path | None = hot if hot is not None and hot.exists() else None
            fetched: Path | None = None
            if path is None and key is not None and allow_fetch:
                try:
                    st = self.store.stat(key)
                    d = Path(tempfile.mkdtemp(dir=self.tmp))
                    fr = fetch_segment(self.store, st, d)
                    self.fetches += 1
                    if fr.ok:
                        path = fetched = fr.path
                except ColdError as exc:
                    for n in sizes:
                        out[n] = f"cannot read {key}: {exc.summary}"
                    continue
            if path is None:
                for n in sizes:
                    out[n] = f"segment {name} is not available locally (--deep recomputes it)"
                continue
            try:
                out.update(roots_in_segment(path, sizes))
            finally:
                if fetched is not None:
                    shutil.rmtree(fetched.parent, ignore_errors=True)
        return out


def _also_differs(sc: chain.SegmentScan, e: Entry) -> str:
    """What else a hot file's own records say differently from its ledger row."""
    root = (sc.seal or {}).get("merkle_root", sc.merkle_root)
    diffs = [f"{what} {mine} vs {theirs}" for what, mine, theirs in (
        ("seqs", f"{sc.first_seq}..{sc.last_seq}", f"{e.first_seq}..{e.last_seq}"),
        ("Merkle root", str(root)[:16] + "…", e.merkle_root[:16] + "…"),
        ("last hash", str(sc.last_hash)[:16] + "…", e.last_hash[:16] + "…")) if mine != theirs]
    return f" ({'; '.join(diffs)})" if diffs else ""


def _record_hashes(path: Path) -> dict[int, str]:
    """seq -> record hash of every complete, parseable record line in a segment file."""
    out: dict[int, str] = {}
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            with contextlib.suppress(RecordError):
                rec = parse_record(raw)
                out.setdefault(rec.seq, rec.hash)
    return out


def roots_in_segment(path: Path, sizes: Iterable[int]) -> dict[int, bytes | str]:
    """Tree roots at ``sizes`` (each in (first_seq, seal_seq + 1]) from one sealed segment."""
    wanted = set(sizes)
    out: dict[int, bytes | str] = {}
    scan = chain.scan_segment(path)
    if scan.findings:
        for n in wanted:
            out[n] = f"segment {path.name} does not verify ({scan.findings[0].code})"
        return out
    last = read_last_line(path)
    try:
        seal = parse_record(last) if last else None
    except RecordError:
        seal = None
    if seal is None or seal.kind != Kind.SEAL.value:
        for n in wanted:
            out[n] = f"segment {path.name} has no seal to start the tree from"
        return out
    cr = merkle.CompactRange(int(seal.data["first_seq"]), [bytes.fromhex(h) for h in seal.data["start_frontier"]])
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            cr.append(merkle.leaf_hash(raw[:-1]))
            if cr.size in wanted:
                out[cr.size] = cr.root()
    for n in wanted:
        out.setdefault(n, f"size {n} is not inside segment {path.name}")
    return out


# ---------------------------------------------------------------------------- listing


@dataclass
class _Versions:
    """What the version listing says beyond the current objects: per stream, findings
    (code, segment name, key, message) about delete markers and extra versions."""

    unavailable: str | None = None
    by_stream: dict[str, list[tuple[str, str, str, str]]] = field(default_factory=dict)

    def judge(self, key: str, vs: list[ObjectVersion], stream: str | None) -> None:
        parsed = segment_of_key(key)
        if parsed is None or (stream and parsed[0] != stream):
            return  # stray keys are reported from the current listing (hidden strays are not evidence)
        objects = [v for v in vs if not v.delete_marker]
        markers = [v for v in vs if v.delete_marker]
        out = self.by_stream.setdefault(parsed[0], [])
        if markers:
            latest = any(v.latest for v in markers)
            out.append(("delete-marker", parsed[1], key,
                        f"{key}: {len(markers)} delete marker(s)"
                        + (" hide the object: a plain GET/HEAD/list no longer sees it although its locked "
                           f"version{'s' if len(objects) != 1 else ''} remain" if latest else
                           ", under a newer version: the key was deleted and written again")))
        if len(objects) > 1:
            out.append(("extra-version", parsed[1], key,
                        f"{key} has {len(objects)} object versions: something was PUT over the shipped object "
                        "and readers see the newest (versions: "
                        + ", ".join(str(v.version_id) for v in objects[:5]) + ")"))


def _filled(lo: int, hi: int, spans: Sequence[tuple[int, int]]) -> bool:
    """Whether the seq ranges ``spans`` cover ``lo..hi`` without a hole (an empty range: no)."""
    if hi < lo:
        return False
    at = lo
    for first, last in sorted(spans):
        if first > at:
            break
        at = max(at, last + 1)
    return at > hi


def _stray_finding(key: str, streams: set[str]) -> TierFinding:
    """A key that is not a segment object: an error when it sits in a stream's prefix and
    looks like a segment (a renamed or hand-made object someone may take for evidence),
    else a warning."""
    parent, _, base = key.rpartition("/")
    stream = parent.rsplit("/", 1)[-1]
    looks = base.startswith("seg-") or base.endswith((".jsonl", ".jsonl.zst", ".zst"))
    if stream in streams and looks:
        return Finding.of("unexpected-segment-object", stream, "", f"{key} is under stream {stream}'s prefix "
                          "and looks like a segment object but its name is not a valid segment name", where=key)
    return Finding.of("unexpected-object", "", "", f"{key} is not a segment object", where=key)


# ---------------------------------------------------------------------------- the verifier


class TierVerifier:
    def __init__(self, store: ColdStore, opts: TierOptions) -> None:
        self.store = store
        self.opts = opts
        self.retention_days = opts.retention_days or store.settings.retention_days
        self.now = dt.datetime.now(dt.UTC)
        self._lock = threading.Lock()
        self._done = 0
        self._total = 0
        self._ledger: Ledger | None = None  # host mode: the shipper's ledger while run() reads it
        self._expected_encryption: tuple[str, str | None] | None = None

    # -- progress ----------------------------------------------------------------------
    def _tick(self, phase: str, n: int = 1) -> None:
        if self.opts.progress is None:
            return
        with self._lock:
            self._done += n
            done, total = self._done, self._total
        self.opts.progress(phase, done, total)

    def run(self) -> TierReport:
        t0 = time.monotonic()
        opts = self.opts
        before = _requests_of(self.store)
        report = TierReport("deep" if opts.deep else "default", self.store.endpoint,
                            str(opts.hot) if opts.hot else None, opts.cold_only, opts.since, opts.until)
        worm: bool | None = None
        try:
            caps = self.store.capabilities()
            worm = caps.worm_enforced
            if not worm:
                report.global_findings.append(Finding.of("worm-not-enforced", "", "", caps.reason))
        except ColdError:
            worm = None  # an auditor's read-only role may not read the bucket configuration
        expected_encryption = getattr(self.store, "expected_encryption", None)
        self._expected_encryption = expected_encryption() if expected_encryption else None
        have_ledger = opts.hot is not None and not opts.cold_only and ledger_path(opts.hot).exists()
        ledger = open_ledger_readonly(opts.hot) if have_ledger and opts.hot is not None else None
        self._ledger = ledger
        if opts.hot is not None and not opts.cold_only and ledger is None:
            report.global_findings.append(Finding.of(
                "ledger-missing", "", "", f"no shipper ledger at {ledger_path(opts.hot)}: cold objects cannot be "
                "accounted for and an evicted segment cannot be told from a deleted one (docs/LEDGER.md)"))
        # Host mode with a ledger verifies the streams this host writes or has shipped, each
        # from its own prefix: other streams under the same prefix belong to other hosts of a
        # fleet (their objects are not this ledger's to account for, nor worth a HEAD each).
        own: list[str | None] = [opts.stream]
        if not opts.stream and ledger is not None and opts.hot is not None:
            mine = sorted(set(list_streams(opts.hot)) | {e.stream for e in ledger.entries()})
            own = list(mine) if mine else [None]
        listing, versions = self._list_all(own)
        if versions.unavailable is not None:
            report.global_findings.append(Finding.of("versions-unchecked", "", "", versions.unavailable))
        # keys that are not segment objects never name a stream (an empty name must not mean
        # "every stream" anywhere below)
        strays = listing.pop("", [])
        streams: set[str] = set(listing) | set(versions.by_stream)
        if opts.stream:
            streams = {opts.stream}
        elif opts.hot is not None and not opts.cold_only:
            streams |= set(list_streams(opts.hot))
            if ledger is not None:
                streams |= {e.stream for e in ledger.entries()}
        streams.discard("")
        for o in strays:
            report.global_findings.append(_stray_finding(o.key, streams))
        hot_streams = set(list_streams(opts.hot)) if opts.hot is not None and not opts.cold_only else set()
        tmp_root = Path(tempfile.mkdtemp(prefix="verify-tier-", dir=opts.temp_dir))
        try:
            for stream in sorted(streams):
                entries = {e.segment: e for e in ledger.entries(stream=stream)} if ledger else {}
                # the ledger accounts for the objects of the streams this host writes or shipped
                # (a --stream of a fleet neighbour is judged as --cold-only would, plus the hot side)
                accounts = ledger is not None and (bool(entries) or stream in hot_streams)
                report.streams.append(self._stream(stream, listing.get(stream, []), entries, worm, tmp_root,
                                                   versions.by_stream.get(stream, []), accounts))
        finally:
            if ledger is not None:
                ledger.close()
            self._ledger = None
            shutil.rmtree(tmp_root, ignore_errors=True)
        report.requests = summarise_requests(before, _requests_of(self.store),
                                             sum(len(s.segments) for s in report.streams))
        report.elapsed_s = time.monotonic() - t0
        return report

    def _list_all(self, streams: Sequence[str | None]) -> tuple[dict[str, list[_Obj]], _Versions]:
        """``_list`` of each stream prefix (None: the whole store), merged."""
        if len(streams) == 1:
            return self._list(streams[0])
        out: dict[str, list[_Obj]] = {}
        versions = _Versions()
        for stream in streams:
            part, v = self._list(stream)
            for k, objs in part.items():
                out.setdefault(k, []).extend(objs)
            for k, fs in v.by_stream.items():
                versions.by_stream.setdefault(k, []).extend(fs)
            versions.unavailable = versions.unavailable or v.unavailable
        return out, versions

    def _list(self, stream: str | None) -> tuple[dict[str, list[_Obj]], _Versions]:
        """The stream objects readers see, by stream ("" for keys that are not segment
        objects), from ONE version listing where the store has one (ListObjectVersions: the
        same one request per 1,000 keys as a plain listing), so delete markers and extra
        versions come for free; else from the plain listing, and the report says versions
        were not checked."""
        out: dict[str, list[_Obj]] = {}
        versions = _Versions()
        prefix = stream_prefix("", stream) if stream else ""

        index_prefix = str(getattr(self.store, "prefix", "") or "")

        def keep(key: str, size: int, modified: dt.datetime | None) -> None:
            if is_index_key(key, index_prefix):
                return  # the manifest index (docs/INDEX.md): verified by --inventory mode, not a stray
            parsed = segment_of_key(key)
            if parsed is None:
                out.setdefault("", []).append(_Obj("", key, "", size, modified))
            elif not stream or parsed[0] == stream:
                out.setdefault(parsed[0], []).append(_Obj(parsed[1], key, parsed[2], size, modified))

        try:
            by_key: dict[str, list[ObjectVersion]] = {}
            try:
                for v in self.store.list_versions(prefix):
                    by_key.setdefault(v.key, []).append(v)
            except VersionsUnavailable as exc:
                versions.unavailable = str(exc)
                for info in self.store.list(prefix):
                    keep(info.key, info.size, info.last_modified)
            else:
                for key in sorted(by_key):
                    vs = by_key[key]
                    current = next((v for v in vs if v.latest and not v.delete_marker), None)
                    if current is not None:
                        keep(key, current.size, current.last_modified)
                    versions.judge(key, vs, stream)
        except ColdError as exc:
            raise TierError(f"cannot list the cold store: {exc}") from exc
        return out, versions

    # -- one stream ---------------------------------------------------------------------
    def _stream(self, stream: str, objs: list[_Obj], entries: dict[str, Entry], worm: bool | None,
                tmp_root: Path, version_findings: Sequence[tuple[str, str, str, str]] = (),
                have_ledger: bool = False) -> StreamTier:
        if not stream:
            raise TierError("internal: an empty stream name was about to be verified")
        opts = self.opts
        res = StreamTier(stream)
        lines: dict[str, SegmentLine] = {}
        manifests: dict[str, SegmentManifest] = {}
        stats: dict[str, ObjectStat] = {}  # kept only for deep mode / checkpoints (keys, not metadata)

        def add(code: str, segment: str, message: str, seq: int | None = None, key: str | None = None) -> None:
            res.findings.append(Finding.of(code, stream, segment, message, seq, key))
            ln = lines.get(segment)
            if code in GAP_CODES:
                return  # a gap is reported between segments, not against the one after it
            if ln is not None and CODES.get(code, (ERROR,))[0] == ERROR:
                ln.status = "INVALID" if ln.status != "missing" else ln.status
                if code not in ln.reasons:
                    ln.reasons.append(code)
            elif ln is not None and code not in ln.reasons:
                ln.reasons.append(code)

        # since: objects uploaded (LastModified) a day before the window cannot hold records in it
        if opts.since is not None:
            cutoff = opts.since - 86400
            keep = [o for o in objs if o.last_modified is None or o.last_modified.timestamp() >= cutoff]
            res.outside_window += len(objs) - len(keep)
            objs = keep
        by_name: dict[str, list[_Obj]] = {}
        for o in objs:
            by_name.setdefault(o.name, []).append(o)
        # The listing was taken BEFORE the ledger was read (a listed object's row exists: the
        # shipper adds the row before it uploads), so a segment uploaded in between is in the
        # ledger as shipped but not in the listing.  Its object is HEADed (a read after the
        # ledger read, so a deleted object still shows as missing below) and judged as listed.
        late: set[str] = set()
        for name, e in entries.items():
            parsed = segment_of_key(e.cold_key) if e.cold_key else None
            if name not in by_name and parsed is not None and e.state in _SHIPPED:
                late.add(name)
                by_name[name] = [_Obj(name, str(e.cold_key), parsed[2], 0, None)]
        for name, group in by_name.items():
            if len(group) > 1:
                lines[name] = SegmentLine(name, group[0].key)
                add("duplicate-object", name, "stored under " + ", ".join(o.key for o in group),
                    key=group[0].key)

        # one HEAD per object, in parallel
        self._total += len(by_name)
        todo = [group[0] for group in by_name.values()]

        def head(o: _Obj) -> tuple[_Obj, ObjectStat | None, str | None]:
            try:
                st = self.store.stat(o.key)
                return o, st, None
            except ObjectNotFoundError:
                return o, None, _DELETED
            except ColdError as exc:
                return o, None, exc.summary
            finally:
                self._tick("stat")

        # a bounded window of HEADs: submitting the whole listing at once held one future
        # (and, once done, its ObjectStat) per segment until judged, ~5 KB each
        for o, st, problem in bounded_map(head, todo, opts.workers):
            ln = lines.setdefault(o.name, SegmentLine(o.name, o.key))
            ln.key = o.key
            ln.uploaded = o.last_modified.timestamp() if o.last_modified else None
            entry = entries.get(o.name)
            ln.hot_state = entry.state if entry else None
            if st is None and o.name in late and problem == _DELETED:
                del lines[o.name], by_name[o.name]  # not there after all: missing (judged below)
                continue
            if st is None:
                add("unreadable-object", o.name, f"{o.key}: {problem}", key=o.key)
                continue
            m = _judge_stat(ln, st, stream, o.name, entry, opts, self.retention_days, worm, self.now,
                            _bind(add, o.name, o.key))
            judge_encryption(st, self._expected_encryption, _bind(add, o.name, o.key))
            if m is not None:
                manifests[o.name] = m
            if opts.deep or st.archived:
                stats[o.name] = st

        # the log's size is the whole stream's, whatever the window
        full_size = max([m.last_seq + 1 for m in manifests.values()] + [0])
        # time window (after the HEADs: only the metadata knows the record times)
        if opts.since is not None or opts.until is not None:
            for name in list(manifests):
                m = manifests[name]
                if not m.first_ts or not m.last_ts:
                    continue
                if (opts.since is not None and ts_epoch(m.last_ts) < opts.since) or \
                        (opts.until is not None and ts_epoch(m.first_ts) > opts.until):
                    del manifests[name]
                    if lines.get(name) is not None and not lines[name].reasons:
                        del lines[name]
                    stats.pop(name, None)
                    res.outside_window += 1
        window = opts.since is not None or opts.until is not None
        lo = min((m.first_seq for m in manifests.values()), default=None)
        hi = max((m.last_seq for m in manifests.values()), default=None)

        # hot tier and ledger: what should be in cold storage
        hot_dir = opts.hot / stream if opts.hot is not None and not opts.cold_only else None
        hot_files = {p.name: p for p in list_segments(hot_dir)} if hot_dir else {}
        for name, e in entries.items():
            if window and (lo is None or hi is None or e.last_seq < lo or e.first_seq > hi):
                continue
            shipped = e.state in ("uploaded", "verified", "confirmed", "evicted", "quarantined")
            if name not in lines:
                if e.state == "quarantined":
                    lines[name] = SegmentLine(name, e.cold_key, "INVALID", e.first_seq, e.last_seq, e.records,
                                              e.size, hot_state=e.state)
                    add("quarantined", name, e.last_error or "quarantined by the shipper", e.first_seq)
                elif shipped:
                    lines[name] = SegmentLine(name, e.cold_key, "missing", e.first_seq, e.last_seq, e.records,
                                              e.size, hot_state=e.state)
                    code = "evicted-without-cold-copy" if e.state == "evicted" else "missing-object"
                    add("missing-object", name, f"the ledger records {name} as {e.state} but it is not in cold "
                        "storage (deleted?)", e.first_seq, e.cold_key)
                    if code != "missing-object":
                        add(code, name, "its hot copy was evicted: these records survive nowhere else",
                            e.first_seq, e.cold_key)
                else:
                    lines[name] = SegmentLine(name, None, "pending", e.first_seq, e.last_seq, e.records, e.size,
                                              hot_state=e.state)
            elif e.state == "evicted" and lines[name].status != "valid":
                add("evicted-without-cold-copy", name, "its hot copy was evicted and the cold copy is not valid",
                    e.first_seq, lines[name].key)
            elif e.state == "quarantined":
                add("quarantined", name, e.last_error or "quarantined by the shipper", e.first_seq)
        for code, name, key, message in version_findings:
            if name not in lines:
                lines[name] = SegmentLine(name, key, "missing", hot_state=entries[name].state if name in entries
                                          else None)
            add(code, name, message, None, key)
        unproven: set[str] = set()  # hot copies that disagree with the ledger or cold: never a root source
        if hot_dir is not None and not window:
            cold_keys = {name: group[0].key for name, group in by_name.items()}
            unproven = self._reconcile(stream, hot_dir, hot_files, entries, manifests, cold_keys, stats, add,
                                       tmp_root, have_ledger)
        if hot_files and not window:
            newest = max(hot_files, key=_seg_sort_key)
            for name in hot_files:
                if name in lines:
                    continue
                # not yet known to the ledger: pending (the newest may be the active segment)
                lines[name] = SegmentLine(name, None, "pending", hot_state="hot" if name != newest else "active")

        # continuity from metadata, in key order
        ordered = sorted(manifests.values(), key=lambda m: _seg_sort_key(m.segment))
        # uploads run in parallel (a later segment can land first): the ledger, read after the
        # listing, holds the ones still in flight, and their hot copies are here
        pending = [(e.first_seq, e.last_seq) for e in entries.values()
                   if e.state in ("sealed", "uploading") and e.segment in hot_files]
        self._continuity(res, ordered, add, window, pending)
        if hot_dir is not None and not window:
            self._tail(res, ordered, entries, hot_dir, add)

        # deep: every object streamed, decompressed, re-verified record by record
        roots: _RootSource = _RootSource(self.store, tmp_root)
        for name in hot_files:
            if name not in unproven:
                roots.add(name, hot_files[name], lines[name].key if name in lines else None)
        for m in ordered:
            if m.segment not in hot_files or m.segment in unproven:
                roots.add(m.segment, None, lines[m.segment].key)
        roots.finish()
        deep_roots: dict[int, bytes | str] = {}
        notes = _collect_checkpoints(stream, opts, res.checkpoints,
                                     lambda code, msg, seq: add(code, "", msg, seq))
        cps = self._open_checkpoints(res, notes, add)
        wanted = sorted({c.cp.size for c in cps if c.cp is not None})
        if opts.deep:
            deep_roots = self._deep(res, ordered, stats, entries, add, tmp_root, wanted, window)
        for name, st in stats.items():
            if st.archived and not opts.deep:
                add("archived", name, f"in storage class {st.storage_class}: thaw it before --deep, export or "
                    "restore", key=st.key)
        res.log_size = max(full_size, self._hot_next_seq(hot_dir))
        span = (lo, hi) if window and lo is not None and hi is not None else None
        self._checkpoints(res, cps, roots, deep_roots, ordered, add, lines, span)

        res.records = sum(m.records for m in ordered)
        res.segments = sorted(lines.values(), key=lambda s: _seg_sort_key(s.segment))
        return res

    # -- host mode: hot against ledger against cold ----------------------------------------
    def _reconcile(self, stream: str, hot_dir: Path, hot_files: dict[str, Path], entries: dict[str, Entry],
                   manifests: dict[str, SegmentManifest], cold_keys: dict[str, str], stats: dict[str, ObjectStat],
                   add: Callable[..., None], tmp_root: Path, have_ledger: bool) -> set[str]:
        """Every hot segment the ledger or cold storage knows is compared by size and SHA-256
        (which fix seq range, links and Merkle root) with the ledger row and the cold
        object's manifest; every ledger row not evicted must still be on the hot disk; every
        cold object must be one the ledger shipped; hot files no one vouches for are
        compared record for record with the segments that hold the same seqs; and the hot
        files themselves are verified as `pipeline verify` does (local reads, no requests).
        Returns the names of hot files that disagree with the ledger or cold storage."""
        scans = self._scan_hot(hot_files)
        by_hot = {sc.name: sc for sc in scans}
        to_compare: list[tuple[chain.SegmentScan, str]] = []  # (hot scan, name of the segment it must agree with)
        unproven: set[str] = set()
        for sc in scans:
            e, m = entries.get(sc.name), manifests.get(sc.name)
            if e is not None:
                if (sc.size, sc.sha256) != (e.size, e.sha256):
                    unproven.add(sc.name)
                    add("hot-altered", sc.name, f"the hot copy is {sc.size} bytes with SHA-256 {sc.sha256[:16]}…; "
                        f"the ledger recorded {e.size} bytes, {e.sha256[:16]}… when it was sealed ({e.state})"
                        + _also_differs(sc, e)
                        + (" and the cold copy agrees with the ledger" if m is not None and m.sha256 == e.sha256
                           else ""), sc.first_seq)
            elif m is not None and (sc.size, sc.sha256) != (m.size, m.sha256):
                to_compare.append((sc, sc.name))
        for name, e in entries.items():
            if e.state != "evicted" and name not in hot_files:
                # the shipper may have evicted it since the ledger was read (it writes
                # "evicted" before it unlinks): read the row again before calling it deleted
                now = self._ledger.get(stream, name) if self._ledger is not None else None
                if now is not None and now.state == "evicted":
                    continue
                add("hot-segment-missing", name, f"the ledger holds {name} as {e.state} (never evicted) but it is "
                    "not on the hot disk: deleted or renamed outside eviction", e.first_seq)
        if have_ledger:
            for name, key in cold_keys.items():
                if name not in entries:
                    add("unshipped-object", name, f"{key} is in cold storage but the ledger never shipped "
                        f"{name}: forged, or uploaded by someone else", None, key)
        # hot files that neither the ledger nor cold storage vouch for must agree with every
        # sealed segment that holds the same seqs
        known: list[tuple[int, int, str]] = []
        for name, e in entries.items():
            if e.sealed:
                known.append((e.first_seq, e.last_seq, name))
        for name, m in manifests.items():
            if m.sealed and name not in entries:
                known.append((m.first_seq, m.last_seq, name))
        for sc in scans:
            if sc.name in entries or sc.name in manifests or sc.first_seq is None or sc.last_seq is None:
                continue
            for first, last, name in known:
                if name != sc.name and first <= sc.last_seq and sc.first_seq <= last:
                    to_compare.append((sc, name))
        for sc, name in to_compare:
            if self._compare_records(sc, name, hot_files, by_hot, entries, manifests, cold_keys, stats, add,
                                     tmp_root):
                unproven.add(sc.name)
        if not scans:
            return unproven
        # the hot chain itself, from where eviction legitimately left it
        start_seq, start_hash = 0, GENESIS_HASH
        for e in sorted(entries.values(), key=lambda x: (x.first_seq, _seg_sort_key(x.segment))):
            if e.state != "evicted" or e.segment in hot_files:
                break
            start_seq, start_hash = e.last_seq + 1, e.last_hash
        rep = chain.stitch(stream, scans, head=read_head_or_none(hot_dir), start_seq=start_seq,
                           start_hash=start_hash)

        def in_cold(seq: int | None) -> bool:
            return seq is not None and any(m.first_seq <= seq <= m.last_seq for m in manifests.values())

        for f in rep.findings:
            if f.code == "missing-tail":
                continue  # _tail judges the head against hot AND cold
            if f.code in ("missing-start", "missing-segment") and in_cold(f.seq):
                continue  # the records are in cold storage (reconciled above)
            add(f.code, f.segment, f"hot tier: {f.message}", f.seq)
        return unproven

    def _scan_hot(self, hot_files: dict[str, Path]) -> list[chain.SegmentScan]:
        """Scan the hot files (in parallel).  The shipper may evict one while we read: a file
        that vanished is dropped from ``hot_files`` (its ledger row then says evicted) and the
        scan is repeated over the rest."""
        workers = max(1, min(self.opts.workers, os.cpu_count() or 1))
        for _attempt in range(5):
            paths = [hot_files[n] for n in sorted(hot_files, key=_seg_sort_key)]
            try:
                # an old segment read before its seal and the next one after its records: read
                # the unsealed ones again, after the later ones (see reread_unsealed)
                return reread_unsealed(chain.scan_all(paths, workers=workers), file_hashes=True, stream=None)
            except FileNotFoundError:
                for name in [n for n, p in hot_files.items() if not p.exists()]:
                    del hot_files[name]
        raise TierError("the hot directory kept changing while it was read: run verify-tier again")

    def _compare_records(self, sc: chain.SegmentScan, name: str, hot_files: dict[str, Path],
                         by_hot: dict[str, chain.SegmentScan], entries: dict[str, Entry],
                         manifests: dict[str, SegmentManifest], cold_keys: dict[str, str],
                         stats: dict[str, ObjectStat], add: Callable[..., None], tmp_root: Path) -> bool:
        """Hot file ``sc`` against segment ``name`` record for record on the seqs both hold
        (True: they disagree, or could not be compared).
        The other side is read from its hot copy when that copy is proven (its SHA-256 equals
        the ledger's or the cold manifest's), else from cold storage (one GET: this happens
        only when something is already wrong)."""
        want = entries[name].sha256 if name in entries else manifests[name].sha256 if name in manifests else None
        other: Path | None = None
        fetched_dir: Path | None = None
        if name != sc.name and name in by_hot and by_hot[name].sha256 == want:
            other = hot_files[name]
        elif name in cold_keys:
            try:
                st = stats.get(name) or self.store.stat(cold_keys[name])
                fetched_dir = Path(tempfile.mkdtemp(dir=tmp_root))
                fr = fetch_segment(self.store, st, fetched_dir)
                if fr.ok:
                    other = fr.path
            except ColdError:
                other = None
        try:
            if other is None:
                add("hot-cold-mismatch", sc.name, f"the hot copy holds seqs {sc.first_seq}..{sc.last_seq} that "
                    f"{name} also holds, and {name} could not be read to compare them", sc.first_seq)
                return True
            theirs = _record_hashes(other)
            ours = _record_hashes(hot_files[sc.name])
            common = sorted(set(theirs) & set(ours))
            diff = next((q for q in common if theirs[q] != ours[q]), None)
            if diff is not None:
                where = " in cold storage" if name in cold_keys else ""
                add("hot-cold-mismatch", sc.name, f"the hot copy and {name}{where} "
                    f"hold different records at seq {diff} (of {len(common)} seqs both hold): one of them was forged",
                    diff)
                return True
            if name == sc.name:
                add("hot-cold-mismatch", sc.name, f"the hot copy ({sc.size} bytes) and the cold object agree on the "
                    f"{len(common)} records both hold but are not the same segment (cold: "
                    f"{manifests[name].size} bytes)", sc.first_seq)
                return True
            return False
        finally:
            if fetched_dir is not None:
                shutil.rmtree(fetched_dir, ignore_errors=True)

    def _hot_next_seq(self, hot_dir: Path | None) -> int:
        if hot_dir is None:
            return 0
        head = read_head_or_none(hot_dir)
        n = head.next_seq if head is not None else 0
        # head.json moves only at seals, but a checkpoint covers every durable record (the
        # emitter signs each interval): the newest segment's last record counts too.  Read
        # AFTER the checkpoints were, so it holds every record they cover.
        segs = list_segments(hot_dir)
        last = read_last_line(segs[-1]) if segs else None
        if last:
            with contextlib.suppress(RecordError):
                n = max(n, parse_record(last).seq + 1)
        return n

    def _continuity(self, res: StreamTier, ordered: list[SegmentManifest],
                    add: Callable[..., None], window: bool, pending: Sequence[tuple[int, int]] = ()) -> None:
        """``pending``: (first, last seq) of segments the ledger holds in flight with their hot
        copy present: a hole in the cold listing they fill is not missing (yet)."""
        prev: SegmentManifest | None = None
        hb = self.opts.heartbeat_interval
        for m in ordered:
            if prev is None:
                if _filled(0, m.first_seq - 1, pending):
                    pass
                elif not window and (m.first_seq != 0 or m.first_prev != GENESIS_HASH):
                    res.gaps.append(Gap("seq", None, m.segment, 0, m.first_seq - 1))
                    add("missing-start", m.segment, f"the first cold object starts at seq {m.first_seq}: records "
                        f"0..{m.first_seq - 1} are not in cold storage", m.first_seq)
            else:
                exp = prev.last_seq + 1
                if m.first_seq > exp and _filled(exp, m.first_seq - 1, pending):
                    pass
                elif m.first_seq > exp:
                    res.gaps.append(Gap("seq", prev.segment, m.segment, exp, m.first_seq - 1))
                    add("missing-segment", m.segment, f"records {exp}..{m.first_seq - 1} "
                        f"({m.first_seq - exp} records) are missing between {prev.segment} and {m.segment}",
                        exp)
                elif m.first_seq < exp and not prev.sealed:
                    # an abandoned segment: records past its acknowledged end are reused by the
                    # recovery that follows; --deep checks the recovery record itself
                    pass
                elif m.first_seq < exp:
                    add("overlapping-segment", m.segment, f"{m.segment} starts at seq {m.first_seq} but "
                        f"{prev.segment} already holds up to {prev.last_seq}", m.first_seq)
                elif m.first_prev != prev.last_hash:
                    add("broken-link", m.segment, f"first record of {m.segment} does not link to the last "
                        f"record of {prev.segment}", m.first_seq)
                if not prev.sealed and m.first_seq > prev.last_seq + 1:
                    add("unsealed-segment", prev.segment, f"{prev.segment} ends unsealed at seq {prev.last_seq}",
                        prev.last_seq)
                if hb > 0 and prev.last_ts and m.first_ts:
                    gap = ts_epoch(m.first_ts) - ts_epoch(prev.last_ts)
                    if gap > 2 * hb:
                        res.gaps.append(Gap("time", prev.segment, m.segment, prev.last_seq, m.first_seq,
                                            seconds=gap))
                        add("time-gap", m.segment, f"no record for {gap:.0f} s between {prev.last_ts} and "
                            f"{m.first_ts} (heartbeat interval {hb:g} s): possible suppression", m.first_seq)
            prev = m

    def _tail(self, res: StreamTier, ordered: list[SegmentManifest], entries: dict[str, Entry], hot_dir: Path,
              add: Callable[..., None]) -> None:
        """The newest records: the hot head must not record more than hot + cold hold."""
        head = read_head_or_none(hot_dir)
        if head is None:
            return
        have = max([m.last_seq + 1 for m in ordered] + [e.last_seq + 1 for e in entries.values()] + [0])
        for p in list_segments(hot_dir):
            last = read_last_line(p)
            if last:
                with contextlib.suppress(RecordError):
                    have = max(have, parse_record(last).seq + 1)
        if head.next_seq > have:
            add("missing-tail", "", f"the hot head records seq {head.next_seq - 1} as written but hot and cold "
                f"end at seq {have - 1}", have)

    # -- deep ---------------------------------------------------------------------------
    def _deep(self, res: StreamTier, ordered: list[SegmentManifest], stats: dict[str, ObjectStat],
              entries: dict[str, Entry], add: Callable[..., None], tmp_root: Path, wanted: list[int],
              window: bool) -> dict[int, bytes | str]:
        opts = self.opts
        roots: dict[int, bytes | str] = {}
        keep: dict[str, Path] = {}
        wanted_set = set(wanted)
        self._total += len(ordered)

        def work(m: SegmentManifest) -> tuple[SegmentManifest, chain.SegmentScan | None, list[tuple[str, str]],
                                               dict[int, bytes | str], Path | None]:
            problems: list[tuple[str, str]] = []
            st = stats.get(m.segment)
            sroots: dict[int, bytes | str] = {}
            if st is None:
                return m, None, problems, sroots, None
            if st.archived:
                problems.append(("archived", f"in storage class {st.storage_class}: thaw it first"))
                return m, None, problems, sroots, None
            d = Path(tempfile.mkdtemp(dir=tmp_root))
            try:
                fr = fetch_segment(self.store, st, d)
                meta = decode_metadata(st.metadata)
                want = meta.get("stored_sha256")
                if want and fr.stored_sha256 != want:
                    problems.append(("object-replaced", f"downloaded bytes hash to {fr.stored_sha256[:16]}…, "
                                     f"uploaded {want[:16]}…"))
                if fr.frame_problem is not None:
                    problems.append(("frame-invalid", fr.frame_problem))
                if not fr.ok:
                    problems.append(("content-invalid", f"{fr.problem}: {fr.detail}"))
                    shutil.rmtree(d, ignore_errors=True)
                    return m, None, problems, sroots, None
                if fr.sha256 != m.sha256 or fr.size != m.size:
                    problems.append(("content-mismatch", f"decompresses to {fr.size} bytes with SHA-256 "
                                     f"{fr.sha256[:16]}…; the metadata says {m.size} bytes, {m.sha256[:16]}…"))
                scan = chain.scan_segment(fr.path, stream=res.stream)
                if not scan.findings and (scan.seal or {}).get("merkle_root", scan.merkle_root) != m.merkle_root:
                    problems.append(("content-mismatch", f"Merkle root {scan.merkle_root[:16]}… differs from the "
                                     f"metadata's {m.merkle_root[:16]}…"))
                first = scan.first_seq if scan.first_seq is not None else m.first_seq
                inside = [n for n in wanted_set if first < n <= (scan.last_seq or -1) + 1]
                if inside:
                    sroots = roots_in_segment(fr.path, inside)
                if scan.sealed:
                    shutil.rmtree(d, ignore_errors=True)
                    return m, scan, problems, sroots, None
                # unsealed (abandoned) segments are kept: stitch re-reads their torn tail
                return m, scan, problems, sroots, fr.path
            except ColdError as exc:
                shutil.rmtree(d, ignore_errors=True)
                problems.append(("unreadable-object", exc.summary))
                return m, None, problems, sroots, None
            finally:
                self._tick("deep")

        scans: list[chain.SegmentScan] = []
        for m, scan, problems, sroots, kept in bounded_map(work, ordered,
                                                          max(1, min(opts.workers, os.cpu_count() or 1) * 2)):
            for code, msg in problems:
                add(code, m.segment, msg, m.first_seq, stats[m.segment].key if m.segment in stats else None)
            roots.update(sroots)
            if kept is not None:
                keep[m.segment] = kept
            if scan is not None:
                scan.boundaries = {} if scan.sealed else scan.boundaries
                scans.append(scan)
        if scans:
            start = scans[0].first_seq or 0
            rep = chain.stitch(res.stream, scans, start_seq=start if window else 0,
                               start_hash=scans[0].first_prev if window else None)
            seen = {(f.code, f.segment) for f in res.findings}
            for f in rep.findings:
                if (f.code, f.segment) not in seen:
                    add(f.code, f.segment, f.message, f.seq)
                    seen.add((f.code, f.segment))
            # silences from the record times themselves: between segments (the metadata may
            # carry no times) and inside them; heartbeats make long ones impossible in an honest log
            hb = opts.heartbeat_interval
            for a, b in itertools.pairwise(scans):
                if hb > 0 and a.last_ts and b.first_ts and ("time-gap", b.name) not in seen:
                    gap = ts_epoch(b.first_ts) - ts_epoch(a.last_ts)
                    if gap > 2 * hb:
                        res.gaps.append(Gap("time", a.name, b.name, a.last_seq, b.first_seq, seconds=gap))
                        add("time-gap", b.name, f"no record for {gap:.1f} s between {a.last_ts} and {b.first_ts} "
                            f"(heartbeat interval {hb:g} s): possible suppression", b.first_seq)
            for s in scans:
                if hb > 0 and s.max_gap_s > 2 * hb:
                    res.gaps.append(Gap("time", s.name, s.name, s.max_gap_after_seq, None, seconds=s.max_gap_s))
                    add("time-gap", s.name, f"no record for {s.max_gap_s:.0f} s inside {s.name} after seq "
                        f"{s.max_gap_after_seq} (heartbeat interval {hb:g} s): possible suppression",
                        s.max_gap_after_seq)
        for p in keep.values():
            discard(p)
        return roots

    # -- checkpoints --------------------------------------------------------------------
    def _open_checkpoints(self, res: StreamTier, notes: list[_CpNote], add: Callable[..., None]) -> list[_CpNote]:
        summary = res.checkpoints
        seen: set[tuple[str, bytes]] = set()
        out: list[_CpNote] = []
        for n in notes:
            ident = (n.source, hashlib.sha256(n.note).digest())
            if ident in seen:
                continue
            seen.add(ident)
            summary.notes += 1
            try:
                if self.opts.verifiers:
                    n.cp, _ = open_checkpoint(n.note, self.opts.verifiers)
                    summary.signatures_verified += 1
                else:
                    n.cp = Checkpoint.parse(split_note(n.note)[0])
            except NoteError as exc:
                add("checkpoint-signature-invalid", "", f"a checkpoint from {n.source} does not verify: {exc}")
                continue
            out.append(n)
        return out

    def _checkpoints(self, res: StreamTier, cps: list[_CpNote], roots: _RootSource,
                     deep_roots: dict[int, bytes | str], ordered: list[SegmentManifest],
                     add: Callable[..., None], lines: dict[str, SegmentLine],
                     span: tuple[int, int] | None = None) -> None:
        summary = res.checkpoints
        if not cps and not summary.witness_latest:
            return
        # forks: one size, two roots, wherever they were found
        by_size: dict[int, dict[bytes, list[str]]] = {}
        for c in cps:
            assert c.cp is not None
            by_size.setdefault(c.cp.size, {}).setdefault(c.cp.root, []).append(c.source)
        for size, variants in sorted(by_size.items()):
            if len(variants) > 1:
                desc = "; ".join(f"{r.hex()[:16]}… from {', '.join(sorted(set(s)))}" for r, s in variants.items())
                add("checkpoint-fork", "", f"size {size} was signed with {len(variants)} different roots: {desc}",
                    size)
        summary.log_latest, latest_by_source = newest_per_source(cps)
        for w in summary.witness_latest:
            summary.witness_latest[w] = latest_by_source.get(w)

        # which sizes are recomputed: all in --deep; otherwise those whose segment is local
        # (free) plus the newest of each source (at most one GET each)
        select: set[int] = set()
        if self.opts.deep:
            select = set(by_size)
        else:
            select = {s for s in by_size if roots.local(s)} | recomputed_without_deep(cps)
        select = {s for s in select if s <= res.log_size}
        if span is not None:
            # in a time window only the window's segments were judged: recompute what they cover
            select = {s for s in select if span[0] < s <= span[1] + 1}
        computed: dict[int, bytes | str] = {}
        if self.opts.deep:
            computed.update({s: r for s, r in deep_roots.items() if s in select})
        rest = sorted(s for s in select if s not in computed)
        if rest:
            computed.update(roots.roots(rest, allow_fetch=True))
        for size, variants in sorted(by_size.items()):
            if size > res.log_size:
                for _root, sources in variants.items():
                    if any(s != "log" for s in sources):
                        add("witness-ahead", "", f"{', '.join(sorted(set(sources)))} holds a checkpoint of size "
                            f"{size} but the log holds only {res.log_size} records: records were removed after "
                            "they were witnessed", size)
                    else:
                        add("checkpoint-root-mismatch", "", f"the log signed a checkpoint of size {size} but "
                            f"holds only {res.log_size} records", size)
                continue
            got = computed.get(size)
            if got is None:
                summary.not_recomputed += 1
                continue
            if isinstance(got, str):
                add("checkpoint-unchecked", "", f"checkpoint of size {size}: {got}", size)
                continue
            summary.recomputed += 1
            for root, sources in variants.items():
                if root == got:
                    continue
                wit = sorted({s for s in sources if s != "log"})
                if wit:
                    add("witness-root-mismatch", "", f"the segments give root {got.hex()[:16]}… at size {size} "
                        f"but {', '.join(wit)} witnessed {root.hex()[:16]}…: records before seq {size} were "
                        "rewritten after they were witnessed (the chain was rebuilt)", size)
                if "log" in sources:
                    add("checkpoint-root-mismatch", "", f"the log's checkpoint of size {size} has root "
                        f"{root.hex()[:16]}… but the segments give {got.hex()[:16]}…", size)
        # rollback: the log now claims less than a witness saw
        if summary.log_latest is not None:
            for w, size in latest_by_source.items():
                if size > summary.log_latest:
                    add("checkpoint-rollback", "", f"the log's latest checkpoint is size {summary.log_latest} "
                        f"but {w} holds size {size}", size)
        # staleness: how long have records gone unwitnessed?  Record times come from the
        # metadata; objects whose metadata carries none fall back to their upload times.
        def when(m: SegmentManifest, first: bool) -> float | None:
            ts = m.first_ts if first else m.last_ts
            if ts:
                return ts_epoch(ts)
            ln = lines.get(m.segment)
            return ln.uploaded if ln is not None else None

        newest = max((t for m in ordered if (t := when(m, False)) is not None), default=None)
        for w in summary.witness_latest:
            wsize = latest_by_source.get(w)
            if wsize is None:
                add("witness-stale", "", f"{w} holds no checkpoint of this stream")
                continue
            if newest is None or wsize >= res.log_size:
                continue
            uncovered = next((m for m in ordered if m.last_seq >= wsize), None)
            start = when(uncovered, True) if uncovered is not None else None
            if start is None:
                continue
            # the first record the witness has not seen is no older than its segment's start
            lag = newest - start
            if lag >= self.opts.witness_max_lag:
                add("witness-stale", "", f"{w}'s newest checkpoint covers {wsize} of {res.log_size} records; "
                    f"records of the last {lag:.0f} s are unwitnessed (allowed {self.opts.witness_max_lag:g} s)",
                    wsize)


def verify_tier(store: ColdStore, opts: TierOptions) -> TierReport:
    return TierVerifier(store, opts).run()


# ---------------------------------------------------------------------------- rendering


def render(report: TierReport) -> str:
    out: list[str] = []
    for f in report.global_findings:
        out.append(f"{'INVALID' if f.severity == ERROR else 'warning'}: {f.code}: {f.message}")
    for s in report.streams:
        out.append(f"stream {s.stream}")
        by_seg: dict[str, list[TierFinding]] = {}
        for f in s.findings:
            by_seg.setdefault(f.segment, []).append(f)
        for ln in s.segments:
            span = f"seq {ln.first_seq}..{ln.last_seq}" if ln.first_seq is not None else ""
            lock = ""
            if ln.lock or ln.retain_until:
                lock = f"  {ln.lock or 'unlocked'} until {ln.retain_until}"
            elif ln.status in ("valid", "INVALID"):
                lock = "  unlocked"
            hold = "  legal hold" if ln.legal_hold else ""
            cls = f"  {ln.storage_class}" if ln.storage_class and ln.storage_class != "STANDARD" else ""
            label = ln.key or ln.segment
            out.append(f"  {ln.status:<8} {label}  {span}{lock}{hold}{cls}".rstrip())
            for f in by_seg.pop(ln.segment, []):
                out.append(f"      {f.severity}: {f.code}: {f.message}")
        for g in s.gaps:
            if g.kind == "seq":
                out.append(f"  gap: seq {g.from_seq}..{g.to_seq} missing between {g.after or '(stream start)'} and "
                           f"{g.before}")
            else:
                out.append(f"  gap: {g.seconds:.0f} s without records after {g.after} (seq {g.from_seq})")
        for seg, fs in by_seg.items():
            for f in fs:
                where = f"{seg}: " if seg else ""
                out.append(f"  {f.severity}: {f.code}: {where}{f.message}")
        c = s.checkpoints
        if c.notes or c.witness_latest:
            out.append(f"  checkpoints: {c.notes} read, {c.signatures_verified} signatures verified, "
                       f"{c.recomputed} recomputed from the segments, {c.not_recomputed} not recomputed "
                       "(--deep recomputes all)")
        t = s.totals()
        out.append(f"  total: {t['segments']} segments ({t['valid']} valid, {t['invalid']} invalid, "
                   f"{t['missing']} missing, {t['pending']} pending), {t['records']} records, "
                   f"{t['errors']} error(s), {t['warnings']} warning(s)")
    t = report.totals()
    r = report.requests
    verdict = "OK" if report.ok else "FAILED"
    out.append(f"{verdict}: {t['segments']} segments, {t['valid']} valid, {t['invalid']} invalid, {t['missing']} "
               f"missing, {t['errors']} error(s), {t['warnings']} warning(s); {r.get('total', 0)} requests "
               f"({r.get('list', 0)} list, {r.get('head', 0)} head, {r.get('get', 0)} get) in "
               f"{report.elapsed_s:.1f} s [{report.mode}]")
    return "\n".join(out)
