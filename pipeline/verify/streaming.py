"""``verify-tier --cold-only --ndjson``: direct mode with memory that does not grow with the listing.

The in-process report of ``pipeline.verify.tier`` keeps one line and one manifest per
segment (about 1 KB each: docs/SCALING.md, 100 GB at 100 M objects).  This mode walks the
version listing once, in key order, with a bounded window of HEADs in flight, judges each
object as ``TierVerifier`` does (the same functions: ``_judge_stat``, ``judge_encryption``,
``_continuity``, ``_checkpoints``) and writes each segment's line and each finding as one
NDJSON object the moment it is known.  What it keeps is bounded: the previous segment of
the current stream, a reorder window of the listing (a key's versions and delete markers
may arrive up to two listing pages apart), the HEADs in flight, the stream's checkpoint
notes (which grow with the checkpoints, not the segments) and the segments that cover the
newest checkpoint of each source.  The last line is the summary (schema, ok, totals,
requests), so ``tail -1`` is the verdict.

Cold-only: host mode compares every hot file and ledger row, which are local and read in
full by design (docs/VERIFY-TIER.md, "Host mode").
"""

from __future__ import annotations

import heapq
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from pipeline.cold.base import ColdStore, ObjectStat, ObjectVersion, VersionsUnavailable
from pipeline.cold.errors import ColdError, ObjectNotFoundError
from pipeline.findings import ERROR, WARNING, Finding
from pipeline.format.layout import segment_of_key
from pipeline.format.record import validate_stream_name
from pipeline.format.segment import SegmentManifest, parse_segment_name
from pipeline.ship.index import is_index_key
from pipeline.verify.inventory import finding
from pipeline.verify.tier import (
    GAP_CODES,
    SCHEMA,
    SegmentLine,
    StreamTier,
    TierError,
    TierOptions,
    TierVerifier,
    _collect_checkpoints,
    _judge_stat,
    _RootSource,
    _stray_finding,
    _Versions,
    bounded_map,
    judge_encryption,
    recomputed_without_deep,
    summarise_requests,
)

# S3 returns at most 1,000 entries a page, a page's versions before its delete markers: all
# entries of one key arrive within two pages of its first one.
REORDER_WINDOW = 2000


def finding_dict(f: Finding) -> dict[str, Any]:
    """The one place this mode turns a finding into its NDJSON object."""
    return {"type": "finding", **f.to_dict()}


def grouped_versions(versions: Iterable[ObjectVersion], window: int = REORDER_WINDOW
                     ) -> Iterator[tuple[str, list[ObjectVersion]]]:
    """(key, its versions) in key order from a version listing whose entries for one key
    may be up to ``window`` entries apart; memory bounded by the window."""
    pending: dict[str, tuple[int, list[ObjectVersion]]] = {}
    order: list[str] = []  # a heap of the pending keys
    for i, v in enumerate(versions):
        if v.key in pending:
            pending[v.key][1].append(v)
        else:
            pending[v.key] = (i, [v])
            heapq.heappush(order, v.key)
        while order and pending[order[0]][0] <= i - window:
            k = heapq.heappop(order)
            yield k, pending.pop(k)[1]
    while order:
        k = heapq.heappop(order)
        yield k, pending.pop(k)[1]


@dataclass
class _Totals:
    segments: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    records: int = 0
    bytes_stored: int = 0
    errors: int = 0
    warnings: int = 0
    streams: int = 0


class StreamingVerifier:
    """Cold-only direct mode, written as it goes (see the module docstring)."""

    def __init__(self, store: ColdStore, opts: TierOptions, out: IO[bytes]) -> None:
        if opts.hot is not None and not opts.cold_only:
            raise TierError("--ndjson streams the cold-only report: use --cold-only")
        if opts.deep or opts.since is not None or opts.until is not None:
            raise TierError("--ndjson does not combine with --deep, --since or --until")
        self.store = store
        self.opts = opts
        self.out = out
        self.tier = TierVerifier(store, opts)  # the judgements, reused as they are
        self.totals = _Totals()
        self.global_findings = 0

    # -- output ----------------------------------------------------------------------------
    def _write(self, obj: dict[str, Any]) -> None:
        self.out.write(orjson.dumps(obj) + b"\n")

    def _finding(self, f: Finding) -> None:
        if f.severity == ERROR:
            self.totals.errors += 1
        elif f.severity == WARNING:
            self.totals.warnings += 1
        self._write(finding_dict(f))

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> bool:
        t0 = time.monotonic()
        before = dict(getattr(self.store, "requests", {}) or {})
        worm: bool | None = None
        try:
            caps = self.store.capabilities()
            worm = caps.worm_enforced
            if not worm:
                self._finding(finding("worm-not-enforced", "", "", caps.reason))
        except ColdError:
            worm = None
        expected = getattr(self.store, "expected_encryption", None)
        self.tier._expected_encryption = expected() if expected else None
        prefix = str(getattr(self.store, "prefix", "") or "")
        listing = self._listing(self.opts.stream)
        tmp = Path(tempfile.mkdtemp(prefix="verify-tier-stream-", dir=self.opts.temp_dir))
        try:
            current: _StreamRun | None = None
            for key, versions in listing:
                if is_index_key(key, prefix):
                    continue
                parsed = segment_of_key(key)
                if parsed is None or (self.opts.stream and parsed[0] != self.opts.stream):
                    if parsed is None and any(v.latest and not v.delete_marker for v in versions):
                        self._stray(key)
                    continue
                if current is None or current.stream != parsed[0]:
                    if current is not None:
                        current.finish()
                    current = _StreamRun(self, parsed[0], worm, tmp)
                current.add_object(key, parsed[1], parsed[2], versions)
            if current is not None:
                current.finish()
        except ColdError as exc:
            raise TierError(f"cannot list the cold store: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        t = self.totals
        after = dict(getattr(self.store, "requests", {}) or {})
        ok = t.errors == 0
        self._write({"type": "summary", "schema": SCHEMA, "ok": ok, "mode": "default", "cold": self.store.endpoint,
                     "hot": None, "cold_only": True,
                     "totals": {"segments": t.segments, **{k: t.by_status.get(k, 0) for k in
                                                          ("valid", "invalid", "missing", "pending")},
                                "records": t.records, "bytes_stored": t.bytes_stored, "errors": t.errors,
                                "warnings": t.warnings, "streams": t.streams},
                     "requests": summarise_requests(before, after, t.segments),
                     "elapsed_s": round(time.monotonic() - t0, 3)})
        self.out.flush()
        return ok

    def _listing(self, stream: str | None) -> Iterator[tuple[str, list[ObjectVersion]]]:
        prefix = f"{stream}/" if stream else ""
        if stream:
            validate_stream_name(stream)
        try:
            first = self.store.list_versions(prefix)
            peeked = next(first, None)
        except VersionsUnavailable as exc:
            self._finding(finding("versions-unchecked", "", "", str(exc)))
            return ((o.key, [ObjectVersion(o.key, None, True, False, o.size, o.last_modified)])
                    for o in self.store.list(prefix))

        def chained() -> Iterator[ObjectVersion]:
            if peeked is not None:
                yield peeked
                yield from first

        return grouped_versions(chained())

    def _stray(self, key: str) -> None:
        parent = key.rpartition("/")[0].rsplit("/", 1)[-1]
        try:
            streams = {validate_stream_name(parent)}
        except ValueError:
            streams = set()
        self._finding(_stray_finding(key, streams))


class _StreamRun:
    """One stream's objects, in key order, judged and written as they come."""

    def __init__(self, owner: StreamingVerifier, stream: str, worm: bool | None, tmp: Path) -> None:
        self.o = owner
        self.stream = stream
        self.worm = worm
        self.tmp = tmp
        self.res = StreamTier(stream)  # findings are not kept: ``add`` writes them
        self.prev: SegmentManifest | None = None
        self.group: list[tuple[str, str, str, list[ObjectVersion]]] = []  # objects with one first seq
        self.first_of_group: int | None = None
        owner.totals.streams += 1
        opts = owner.opts
        notes = _collect_checkpoints(stream, opts, self.res.checkpoints,
                                     lambda code, msg, seq: self.add_finding(code, "", msg, seq))
        # every checkpoint is kept (forks: one size, two roots, across all sources), but only
        # the sizes whose root default mode recomputes (the newest of each source) need their
        # segments: keeping the segments of every size would grow with the checkpoints
        self.cps = owner.tier._open_checkpoints(self.res, notes, self.add_finding)
        self.wanted = sorted(recomputed_without_deep(self.cps))
        # for each of those sizes: the segments holding seq size-1 (its root) and seq size
        self.kept: dict[str, SegmentManifest] = {}
        self.kept_lines: dict[str, SegmentLine] = {}
        self.newest: SegmentManifest | None = None
        self.log_size = 0
        self._lines: dict[str, SegmentLine] = {}  # the segment being judged (findings update its line)
        self._pending: list[tuple[SegmentLine, str]] = []  # listed, HEAD not yet sent

    # -- objects -------------------------------------------------------------------------------
    def add_object(self, key: str, name: str, compression: str, versions: list[ObjectVersion]) -> None:
        parsed = parse_segment_name(name)
        first = parsed[0] if parsed else -1
        if self.first_of_group is not None and first != self.first_of_group:
            self._flush_group()
        self.first_of_group = first
        self.group.append((key, name, compression, versions))

    def _flush_group(self) -> None:
        group, self.group = self.group, []
        # attempt order (seg-N.jsonl before seg-N.1.jsonl), which key order does not give
        group.sort(key=lambda g: (parse_segment_name(g[1]) or (0, 0))[1])
        names: dict[str, list[str]] = {}
        for key, name, _c, _v in group:
            names.setdefault(name, []).append(key)
        for key, name, _c, versions in group:
            if names.get(name, [None])[0] != key:
                continue  # a duplicate: judged once, under its first key
            self._object(key, name, versions, names[name])

    def _object(self, key: str, name: str, versions: list[ObjectVersion], keys: list[str]) -> None:
        o = self.o
        v = _Versions()
        v.judge(key, versions, self.stream)
        current = next((x for x in versions if x.latest and not x.delete_marker), None)
        ln = SegmentLine(name, key, "valid" if current is not None else "missing")
        self._lines = {name: ln}
        if len(keys) > 1:
            self.add_finding("duplicate-object", name, "stored under " + ", ".join(keys), key=key)
        for code, seg, k, message in v.by_stream.get(self.stream, []):
            self.add_finding(code, seg, message, None, k)
        if current is not None:
            ln.uploaded = current.last_modified.timestamp() if current.last_modified else None
            self._pending.append((ln, key))
            if len(self._pending) >= max(1, o.opts.workers) * 4:
                self._drain(len(self._pending) // 2)
        else:
            self._emit(ln, None)

    def _drain(self, n: int | None = None) -> None:
        batch, self._pending = (self._pending[:n], self._pending[n:]) if n else (self._pending, [])

        def head(item: tuple[SegmentLine, str]) -> tuple[SegmentLine, str, ObjectStat | None, str | None]:
            ln, key = item
            try:
                return ln, key, self.o.store.stat(key), None
            except ObjectNotFoundError:
                return ln, key, None, "deleted between listing and reading"
            except ColdError as exc:
                return ln, key, None, exc.summary

        for ln, key, st, problem in bounded_map(head, batch, self.o.opts.workers):
            self._lines = {ln.segment: ln}
            if st is None:
                self.add_finding("unreadable-object", ln.segment, f"{key}: {problem}", key=key)
                self._emit(ln, None)
                continue

            def bound(code: str, message: str, seq: int | None, _n: str = ln.segment, _k: str = key) -> None:
                self.add_finding(code, _n, message, seq, _k)

            m = _judge_stat(ln, st, self.stream, ln.segment, None, self.o.opts, self.o.tier.retention_days,
                            self.worm, self.o.tier.now, bound)
            judge_encryption(st, self.o.tier._expected_encryption, bound)
            if st.archived:
                bound("archived", f"in storage class {st.storage_class}: thaw it before --deep, export or restore",
                      None)
            self._emit(ln, m)

    def add_finding(self, code: str, segment: str, message: str, seq: int | None = None,
                    key: str | None = None) -> None:
        f = finding(code, self.stream, segment, message, seq, key)
        self.o._finding(f)
        ln = self._lines.get(segment)
        if ln is None or code in GAP_CODES:
            return
        if f.severity == ERROR:
            ln.status = "INVALID" if ln.status != "missing" else ln.status
        if code not in ln.reasons:
            ln.reasons.append(code)

    def _emit(self, ln: SegmentLine, m: SegmentManifest | None) -> None:
        """Continuity against the previous segment, then the line, then forget it."""
        if m is not None:
            self._lines = {ln.segment: ln}
            # TierVerifier._continuity on a pair: window=True skips the stream-start check,
            # which the first segment gets alone
            pair = [m] if self.prev is None else [self.prev, m]
            self.o.tier._continuity(self.res, pair, self.add_finding, self.prev is not None)
            self.res.gaps.clear()
            self.prev = m
            self.log_size = max(self.log_size, m.last_seq + 1)
            self.newest = m
            for size in self.wanted:
                if m.first_seq <= size <= m.last_seq + 1:
                    self.kept[m.segment] = m
                    self.kept_lines[m.segment] = SegmentLine(ln.segment, ln.key, uploaded=ln.uploaded)
        t = self.o.totals
        t.segments += 1
        status = ln.status.lower()
        t.by_status[status] = t.by_status.get(status, 0) + 1
        t.records += ln.records or 0
        t.bytes_stored += ln.stored_size or 0
        self.o._write({"type": "segment", "stream": self.stream, **ln.to_dict()})

    def finish(self) -> None:
        self._flush_group()
        self._drain()
        # checkpoints: only the segments that cover a checkpoint size were kept
        roots = _RootSource(self.o.store, self.tmp)
        ordered = sorted(self.kept.values(), key=lambda m: parse_segment_name(m.segment) or (0, 0))
        if self.newest is not None and self.newest.segment not in self.kept:
            ordered.append(self.newest)
            self.kept_lines[self.newest.segment] = SegmentLine(self.newest.segment)
        for m in ordered:
            roots.add(m.segment, None, self.kept_lines[m.segment].key)
        roots.finish()
        self.res.log_size = self.log_size
        self._lines = {}
        self.o.tier._checkpoints(self.res, self.cps, roots, {}, ordered, self.add_finding, self.kept_lines)
        self._write_checkpoints()

    def _write_checkpoints(self) -> None:
        self.o._write({"type": "checkpoints", "stream": self.stream, **self.res.checkpoints.to_dict()})


def verify_tier_streaming(store: ColdStore, opts: TierOptions, out: IO[bytes]) -> bool:
    """Run cold-only verify-tier writing NDJSON to ``out``; True when no error was found."""
    return StreamingVerifier(store, opts, out).run()


