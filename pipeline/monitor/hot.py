"""Trailing one stream's hot segments: each appended byte is verified once, by the library's
verifier (``verify.chain.scan_segment`` resumed where the last cycle stopped, ``stitch`` for
the links between segments, ``verify.hot.check_fss`` for forward-secure seals).

Per cycle and stream the cost is the bytes appended since the last cycle (plus one full read
of each segment when its seal appears, which is what checks the seal's tree frontiers), one
directory listing and one ``stat`` of the newest file.  ``rescan_active`` adds a full read of
the active segment's verified prefix at that interval: the only way to see a record changed
*behind* the monitor's position before its seal does.

The position (``TrailState``) is saved by the caller after each cycle; a restart resumes
from it.  Findings about a segment's data are kept ("sticky") until a later full scan of
the same file finds it clean: tampering does not stop being true because the monitor moved on.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.findings import Finding
from pipeline.format.record import GENESIS_HASH, parse_fields
from pipeline.format.segment import list_segments, read_last_line
from pipeline.monitor.config import HotWatch
from pipeline.monitor.findings import MonitorFinding, from_chain
from pipeline.ship.ledger import LedgerView
from pipeline.verify.chain import ScanResume, SegmentScan, scan_segment, stitch

log = logging.getLogger("pipeline.monitor")

MAX_BAD_RESCANS = 16  # segments with findings re-read per cycle (to notice a repaired file)
ABANDON_GRACE = 30.0  # seconds an unsealed segment followed by another may wait for its seal


def _first_line(path: Path, limit: int = 1 << 20) -> bytes | None:
    try:
        with open(path, "rb") as f:
            head = f.read(limit)
    except OSError:
        return None
    nl = head.find(b"\n")
    return head[: nl + 1] if nl >= 0 else None


def _ts_epoch(ts: str | None) -> float | None:
    if not ts:
        return None
    from pipeline.format.record import ts_epoch

    try:
        return ts_epoch(ts)
    except ValueError:
        return None


def _summary(s: SegmentScan) -> dict[str, Any]:
    """What linking the next segment needs of a completed one (no findings, no boundaries)."""
    return {"name": s.name, "path": s.path, "first_seq": s.first_seq, "first_prev": s.first_prev,
            "last_seq": s.last_seq, "last_hash": s.last_hash, "last_ts": s.last_ts, "sealed": s.sealed,
            "seal": s.seal, "seal_leaf_hash": s.seal_leaf_hash.hex() if s.seal_leaf_hash else None,
            "records": s.records, "size": s.size, "valid_bytes": s.valid_bytes}


def _from_summary(d: dict[str, Any]) -> SegmentScan:
    s = SegmentScan(path=d["path"], name=d["name"], size=d["size"], records=d["records"], first_seq=d["first_seq"],
                    first_prev=d["first_prev"], last_seq=d["last_seq"], last_hash=d["last_hash"],
                    last_ts=d.get("last_ts"), valid_bytes=d["valid_bytes"], sealed=d["sealed"], seal=d["seal"])
    s.seal_leaf_hash = bytes.fromhex(d["seal_leaf_hash"]) if d.get("seal_leaf_hash") else None
    return s


def _own(code: str, stream: str, segment: str, message: str, seq: int | None, offset: int | None) -> MonitorFinding:
    """A finding the trail makes itself (not one of the verifier's), as the monitor's record."""
    return MonitorFinding(code, stream, segment, message + (f" (offset {offset})" if offset is not None else ""), seq,
                          "hot")


def _identity(path: Path) -> list[int] | None:
    try:
        s = path.stat()
    except FileNotFoundError:
        return None
    return [s.st_ino, s.st_size, s.st_ctime_ns]


def _with_seq(f: MonitorFinding) -> MonitorFinding:
    """A problem in a segment's first record has no seq from the scan (nothing was read before
    it): the file name gives it (docs/FORMAT.md §2), so the alert's evidence names a record."""
    if f.seq is not None or not f.segment:
        return f
    from dataclasses import replace

    from pipeline.format.segment import parse_segment_name

    parsed = parse_segment_name(f.segment)
    return replace(f, seq=parsed[0]) if parsed else f


@dataclass
class TrailState:
    """The durable position of one stream (JSON through to_dict/from_dict)."""

    current: str | None = None  # the segment being trailed
    resume: dict[str, Any] | None = None  # ScanResume of ``current``
    prev: dict[str, Any] | None = None  # summary of the completed segment before ``current``
    prev_abandoned: bool = False  # prev ended without a seal (its recovery was judged already)
    started: bool = False
    anchor: tuple[int, str] | None = None  # where the chain starts when prev is None
    verified_seq: int | None = None
    verified_ts: str | None = None
    fss_seen: bool = False
    bad: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # segment -> sticky findings
    # completed segments still on the hot disk -> [inode, size, ctime_ns] when verified: a
    # write, a truncation, a rename over it or clearing its immutable attribute changes
    # ctime, which no user-space call can set back, so one stat per cycle tells whether a
    # verified segment must be read again
    verified_files: dict[str, list[int]] = field(default_factory=dict)
    bad_files: dict[str, list[int]] = field(default_factory=dict)  # the same, of segments with findings
    # completed segments still on the hot disk -> [last seq, last record hash] as verified: a
    # segment re-read after a change must end in the same record.  A file re-written with a
    # recomputed chain and seal verifies on its own (its broken link to the next segment is
    # not re-read), but it cannot end in the hash the monitor saw.
    verified_ends: dict[str, list[Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"current": self.current, "resume": self.resume, "prev": self.prev,
                "prev_abandoned": self.prev_abandoned, "started": self.started,
                "anchor": list(self.anchor) if self.anchor else None, "verified_seq": self.verified_seq,
                "verified_ts": self.verified_ts, "fss_seen": self.fss_seen, "bad": self.bad,
                "verified_files": self.verified_files, "bad_files": self.bad_files,
                "verified_ends": self.verified_ends}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrailState:
        a = d.get("anchor")
        return cls(current=d.get("current"), resume=d.get("resume"), prev=d.get("prev"),
                   prev_abandoned=bool(d.get("prev_abandoned")), started=bool(d.get("started")),
                   anchor=(int(a[0]), str(a[1])) if a else None, verified_seq=d.get("verified_seq"),
                   verified_ts=d.get("verified_ts"), fss_seen=bool(d.get("fss_seen")), bad=dict(d.get("bad") or {}),
                   verified_files=dict(d.get("verified_files") or {}), bad_files=dict(d.get("bad_files") or {}),
                   verified_ends=dict(d.get("verified_ends") or {}))


@dataclass
class TrailResult:
    findings: list[MonitorFinding]
    head_seq: int | None
    head_ts: float | None
    verified_seq: int | None
    verified_ts: float | None
    last_write: float | None  # wall time of the newest write (the newest segment's mtime)
    bytes_read: int = 0


class StreamTrail:
    def __init__(self, hot: Path, stream: str, opts: HotWatch, delay: float, state: TrailState) -> None:
        self.dir = Path(hot) / stream
        self.stream = stream
        self.opts = opts
        self.delay = delay
        self.state = state
        # per segment file: (monotonic time, size) as observed, for the trailing delay
        self._sizes: dict[str, collections.deque[tuple[float, int]]] = {}
        self._last_rescan = time.monotonic()
        self._bytes = 0
        self._snap: dict[str, list[int]] = {}

    # -- the trailing delay ------------------------------------------------------------
    def _limit(self, path: Path, now: float, floor: int = 0) -> int:
        """The file's size as it was ``delay`` seconds ago (what the monitor may judge now), but
        never less than ``floor`` (what was already verified) unless the file itself is now
        shorter: the delay holds new bytes back, it must not hide a truncation or invent one."""
        try:
            s = path.stat()
        except FileNotFoundError:
            return 0
        size = s.st_size
        seen = self._sizes.setdefault(path.name, collections.deque())
        if not seen or seen[-1][1] != size:
            seen.append((now, size))
        if self.delay <= 0 or s.st_mtime <= time.time() - self.delay:
            return size  # nothing was written to it within the delay
        limit = 0
        while seen and seen[0][0] <= now - self.delay:
            limit = seen[0][1]
            if len(seen) > 1 and seen[1][0] <= now - self.delay:
                seen.popleft()
                continue
            break
        return min(size, max(limit, floor))

    def _ended(self, path: Path, nxt: Path) -> bool:
        """Whether an unsealed segment followed by another is to be judged as abandoned now.
        Rotation opens the next file before the old one's seal is written (and a loaded host
        may take a while to write it), so without a recovery record at the start of the next
        segment the old one gets ``ABANDON_GRACE`` seconds for its seal; with one (the writer
        restarted and explained it), the trailing delay."""
        try:
            quiet = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return False
        if quiet >= max(ABANDON_GRACE, self.delay):
            return True
        if quiet < self.delay:
            return False
        first = _first_line(nxt)
        fields = parse_fields(first) if first else None
        return fields is not None and fields[3] == "recovery"

    # -- one cycle ---------------------------------------------------------------------
    def cycle(self, ledger: LedgerView | None) -> TrailResult:
        st = self.state
        self._bytes = 0
        paths = list_segments(self.dir)
        names = [p.name for p in paths]
        # identities taken BEFORE anything is read: a change after this is a new ctime
        self._snap = {p.name: k for p in paths if (k := _identity(p)) is not None}
        for gone in set(self._sizes) - set(names):
            del self._sizes[gone]  # (bounded by the segments on the hot disk)
        now = time.monotonic()
        if not st.started:
            self._start(paths, ledger)
        if st.current is not None and st.current not in names:
            self._lost_current(paths, ledger)
        if st.current is None and paths:
            st.current = self._after(st.prev["name"] if st.prev else None, paths)
        while st.current is not None:
            i = names.index(st.current)
            try:
                if not self._advance(paths[i], paths[i + 1] if i + 1 < len(paths) else None, now):
                    break
            except FileNotFoundError:
                break  # evicted while being read: the next cycle's listing moves past it
        if self.opts.rescan_active > 0 and now - self._last_rescan >= self.opts.rescan_active:
            self._last_rescan = now
            self._rescan_active()
        self._recheck_changed(paths)
        self._rescan_bad(set(names))
        return self._result(paths)

    def _start(self, paths: list[Path], ledger: LedgerView | None) -> None:
        st = self.state
        st.started = True
        if not paths:
            return
        if self.opts.start == "end":
            st.current = paths[-1].name
            st.anchor = None
            return
        st.current = paths[0].name
        start = ledger.evicted_prefix(self.stream) if ledger is not None else None
        st.anchor = start

    @staticmethod
    def _after(name: str | None, paths: list[Path]) -> str | None:
        """The first segment after ``name`` in stream order (the first of all for None)."""
        from pipeline.format.segment import parse_segment_name

        if name is None:
            return paths[0].name
        key = parse_segment_name(name)
        later = [p for p in paths if key is None or (parse_segment_name(p.name) or (0, 0)) > key]
        return later[0].name if later else None

    def _lost_current(self, paths: list[Path], ledger: LedgerView | None) -> None:
        """The segment being trailed is gone: evicted by the shipper before the monitor got to
        it (the monitor fell behind the hot retention) or deleted.  The shipper's ledger and
        the cold watch judge which; the trail continues with the next segment present."""
        st = self.state
        log.warning("monitor: segment %s/%s disappeared before it was fully verified", self.stream, st.current)
        st.current = self._after(st.current, paths)
        st.resume, st.prev, st.prev_abandoned = None, None, False
        st.anchor = ledger.evicted_prefix(self.stream) if ledger is not None else None

    def _advance(self, path: Path, nxt: Path | None, now: float) -> bool:
        """Verify what is new in ``path``; True when the trail moved to the next segment."""
        st = self.state
        if path.name in st.bad and st.resume is None:
            # damaged: the chain cannot be followed through it; its findings stand (re-judged
            # by _rescan_bad when the file changes) and the trail waits for the next segment
            if nxt is None:
                return False
            st.current, st.prev, st.prev_abandoned, st.anchor = nxt.name, None, False, None
            return True
        resume = ScanResume.from_dict(st.resume) if st.resume else None
        limit = self._limit(path, now, resume.offset if resume else 0)
        if ((resume is not None and limit == resume.offset) or (resume is None and limit == 0)) and nxt is None:
            return False  # nothing new to judge (a file shorter than what was verified is judged below)
        scan = scan_segment(path, self.stream, file_hash=False, resume=resume, limit=limit, boundaries=False)
        self._bytes += scan.size - (resume.offset if resume else 0)
        findings: list[Finding | MonitorFinding] = list(scan.findings)
        if not findings and (resume is None or scan.sealed):
            findings += self._link(scan)
        if scan.sealed and not findings:
            findings += self._fss(scan)
        if findings:
            self._mark_bad(path.name, findings)
            return self._move_on(scan, nxt, abandoned=False, broken=True)
        if scan.records:
            st.verified_seq, st.verified_ts = scan.last_seq, scan.last_ts
        if scan.sealed:
            return self._move_on(scan, nxt, abandoned=False, broken=False)
        st.resume = scan.resume.to_dict() if scan.resume else None
        if nxt is not None and limit == path.stat().st_size and self._ended(path, nxt):
            return self._abandoned(path, nxt)
        return False

    def _move_on(self, scan: SegmentScan, nxt: Path | None, *, abandoned: bool, broken: bool) -> bool:
        st = self.state
        if nxt is None and broken:
            st.resume = None
            return False  # stays on the bad segment (re-judged by _rescan_bad) until another appears
        if not broken:
            self._remember(Path(scan.path))
            st.verified_ends[scan.name] = [scan.last_seq, scan.last_hash]
        if nxt is None:
            st.resume = None
            st.prev, st.prev_abandoned = _summary(scan), abandoned
            st.current = None  # the next segment is found by its position after prev
            return False
        st.current, st.resume = nxt.name, None
        if broken:
            # the chain cannot be followed across a damaged segment: the next one starts afresh
            st.prev, st.prev_abandoned, st.anchor = None, False, None
        else:
            st.prev, st.prev_abandoned = _summary(scan), abandoned
        return True

    def _abandoned(self, path: Path, nxt: Path) -> bool:
        """An unsealed segment followed by another that has stopped growing: the writer
        abandoned it (a crash or an I/O error); the next segment's recovery record must explain
        it.  Judged by ``stitch`` from full scans, as ``pipeline verify`` does."""
        full = scan_segment(path, self.stream, file_hash=False)
        after = scan_segment(nxt, self.stream, file_hash=False, limit=self._limit(nxt, time.monotonic()))
        self._bytes += full.size + after.size
        if after.first_seq is None:
            return False  # the next segment holds no complete record yet: wait for it
        prev = _from_summary(self.state.prev) if self.state.prev and not self.state.prev_abandoned else None
        scans = ([prev] if prev else []) + [full, after]
        start_seq, start_hash = self._start_point(scans[0])
        rep = stitch(self.stream, scans, start_seq=start_seq, start_hash=start_hash)
        findings = [f for f in rep.findings if f.segment in (full.name, after.name)]
        if findings:
            self._mark_bad(path.name, findings)
        return self._move_on(full, nxt, abandoned=True, broken=bool(findings))

    def _start_point(self, first: SegmentScan) -> tuple[int, str | None]:
        st = self.state
        if st.prev is not None and not st.prev_abandoned and first.name == st.prev["name"]:
            return int(st.prev["first_seq"]), st.prev["first_prev"]
        if st.anchor is not None:
            return st.anchor
        if first.first_seq == 0:
            return 0, GENESIS_HASH
        # nothing says where the hot tier should start (no ledger, or start = "end"): accept it
        return first.first_seq or 0, first.first_prev

    def _link(self, scan: SegmentScan) -> list[Finding]:
        """Links between the previous segment and this one (seq, hash, seal frontiers)."""
        st = self.state
        if scan.first_seq is None:
            return []
        if st.prev is not None and st.prev_abandoned:
            return []  # the recovery stitch already judged this link
        prev = _from_summary(st.prev) if st.prev is not None else None
        scans = ([prev] if prev else []) + [scan]
        start_seq, start_hash = self._start_point(scans[0])
        rep = stitch(self.stream, scans, start_seq=start_seq, start_hash=start_hash)
        return [f for f in rep.findings if f.segment == scan.name]

    def _fss(self, scan: SegmentScan) -> list[Finding | MonitorFinding]:
        if not self.opts.fss_key or scan.seal is None:
            return []
        from pipeline.verify.chain import StreamReport
        from pipeline.verify.hot import check_fss

        rep = StreamReport(self.stream, [scan])
        check_fss(rep, self.opts.fss_key)
        out: list[Finding | MonitorFinding] = list(rep.findings)
        if self.state.fss_seen and "fss" not in scan.seal and not out:
            out.append(_own("fss-invalid", self.stream, scan.name, "a seal without a forward-secure MAC after "
                               "forward-secure sealing began", scan.last_seq, None))
        self.state.fss_seen = self.state.fss_seen or "fss" in scan.seal
        return out

    def _mark_bad(self, segment: str, findings: Sequence[Finding | MonitorFinding]) -> None:
        self.state.bad[segment] = [_with_seq(f if isinstance(f, MonitorFinding) else from_chain(f)).to_dict()
                                   for f in findings]
        self._remember(self.dir / segment, self.state.bad_files)

    def _rescan_active(self) -> None:
        """Re-read the active segment's verified prefix: a record changed behind the position."""
        st = self.state
        if st.current is None or st.resume is None:
            return
        resume = ScanResume.from_dict(st.resume)
        path = self.dir / st.current
        try:
            full = scan_segment(path, self.stream, file_hash=False, limit=resume.offset, boundaries=False)
        except FileNotFoundError:
            return
        self._bytes += full.size
        findings: list[Finding | MonitorFinding] = list(full.findings)
        if not findings and (full.last_seq != resume.last_seq or full.last_hash != resume.last_hash):
            findings.append(_own("hot-altered", self.stream, st.current,
                                    f"the records up to offset {resume.offset} changed after the monitor verified "
                                    f"them: seq {resume.last_seq} had hash {resume.last_hash[:16]}…, now "
                                    f"{(full.last_hash or '?')[:16]}… (the chain was rewritten)", resume.last_seq,
                                    resume.offset))
        if findings:
            self._mark_bad(st.current, findings)

    def _remember(self, path: Path, into: dict[str, list[int]] | None = None) -> None:
        """Note the file's identity as it was before this cycle read it (so that a change made
        while it was being read still shows as a change)."""
        ident = self._snap.get(path.name) or _identity(path)
        if ident is not None:
            (self.state.verified_files if into is None else into)[path.name] = ident

    def _recheck_changed(self, paths: list[Path]) -> None:
        """Verified segments whose inode, size or ctime changed are scanned again in full."""
        st = self.state
        present = {p.name: p for p in paths}
        for name in list(st.verified_files):
            p = present.get(name)
            if p is None:
                del st.verified_files[name]  # evicted or deleted: the ledger and cold watch judge which
                st.verified_ends.pop(name, None)
                continue
            try:
                s = p.stat()
            except FileNotFoundError:
                continue
            if [s.st_ino, s.st_size, s.st_ctime_ns] == st.verified_files[name]:
                continue
            try:
                full = scan_segment(p, self.stream, file_hash=False, boundaries=False)
            except FileNotFoundError:
                continue  # evicted between the stat and the read
            self._bytes += full.size
            findings: list[Finding | MonitorFinding] = list(full.findings)
            altered = None if findings else self._altered(name, full)
            # unsealed but still ending in the record that was verified: it was unsealed then too
            # (abandoned, explained by a recovery record), and its ctime changed because the
            # shipper clears the attribute before it unlinks an evicted segment; a sealed segment
            # that lost its seal no longer ends in the seal
            if not findings and not full.sealed and (altered is not None or name not in st.verified_ends):
                findings.append(_own("truncated", self.stream, name, f"{name} was verified sealed but its seal "
                                        "is gone (the file was changed)", full.last_seq, full.valid_bytes))
            elif altered is not None:
                findings.append(altered)
            if findings:
                self._mark_bad(name, findings)
            st.verified_files[name] = [s.st_ino, s.st_size, s.st_ctime_ns]

    def _altered(self, name: str, full: SegmentScan) -> MonitorFinding | None:
        """A completed segment that verifies on its own but no longer ends in the record the
        monitor verified: re-written with a recomputed chain (and seal) after verification."""
        want = self.state.verified_ends.get(name)
        if want is None or [full.last_seq, full.last_hash] == want:
            return None
        return _own("hot-altered", self.stream, name,
                    f"{name} changed after the monitor verified it: it ended in seq {want[0]} with hash "
                    f"{str(want[1])[:16]}…, now in seq {full.last_seq} with hash {(full.last_hash or '?')[:16]}… "
                    "(the records were re-written and re-chained; the file alone still verifies)", want[0], None)

    def _rescan_bad(self, present: set[str]) -> None:
        """A segment with findings stays reported until it scans clean again (restored from a
        copy): it is read again when its inode, size or ctime changed.  A file that is gone
        keeps its findings (what was seen remains true)."""
        st = self.state
        changed = []
        for name in st.bad:
            if name not in present or name == st.current:
                continue  # the current segment is judged by the trail (in full at its seal)
            try:
                s = (self.dir / name).stat()
            except FileNotFoundError:
                continue
            if st.bad_files.get(name) != [s.st_ino, s.st_size, s.st_ctime_ns]:
                changed.append(name)
        for name in changed[:MAX_BAD_RESCANS]:
            try:
                full = scan_segment(self.dir / name, self.stream, file_hash=False, boundaries=False)
            except FileNotFoundError:
                continue
            self._bytes += full.size
            if full.findings:
                self._mark_bad(name, full.findings)
            elif (altered := self._altered(name, full)) is not None:
                self._mark_bad(name, [altered])  # valid on its own, but not what was verified
            else:
                del st.bad[name]
                st.bad_files.pop(name, None)

    # -- what the cycle reports -----------------------------------------------------------
    def _result(self, paths: list[Path]) -> TrailResult:
        st = self.state
        findings = [MonitorFinding.from_dict(d) for fs in st.bad.values() for d in fs]
        head_seq = head_ts = last_write = None
        if paths:
            newest = paths[-1]
            try:
                last_write = newest.stat().st_mtime
                line = read_last_line(newest)
            except OSError:
                line = None
            fields = parse_fields(line) if line else None
            if fields is not None:
                head_seq, head_ts = fields[1], _ts_epoch(fields[2])
        else:
            try:
                last_write = os.stat(self.dir).st_mtime
            except OSError:
                last_write = None
        return TrailResult(findings, head_seq, head_ts, st.verified_seq, _ts_epoch(st.verified_ts), last_write,
                           self._bytes)
