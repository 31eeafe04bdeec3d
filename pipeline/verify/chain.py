"""Verification of hash-chained segments: one segment at a time, then stitched in order.

``scan_segment`` checks everything that one file can prove alone (record hashes, links
and seq inside it, its seal: counts, Merkle root, stream tree frontier); ``stitch``
checks what connects files (links across segments, gaps, recoveries of torn tails,
the head of the stream).  Scans are independent, so ``verify_stream`` runs them in
parallel processes to use every core.

Every problem is a ``pipeline.findings.Finding`` naming the segment, the seq (when known),
the byte offset (``where``) and a code of the registry's ``chain`` family.  Expected
irregularities that are not tampering (a torn tail explained by a recovery record, the
active segment) are ``Note``s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import mmap
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pipeline._accel import native as _native
from pipeline.findings import LEGACY_VERIFY_REASON, REGISTRY, Finding, codes, has_errors
from pipeline.format import merkle
from pipeline.format.layout import StreamHead, read_head_or_none
from pipeline.format.record import (
    GENESIS_HASH,
    HASH_FIELD,
    HEX64_RE,
    MAX_LINE_BYTES,
    SUFFIX_LEN,
    Kind,
    Record,
    RecordError,
    overlong,
    parse_fields,
    parse_record,
    ts_epoch,
)
from pipeline.format.segment import iter_lines, list_segments, parse_segment_name, read_last_line

_LEAF0 = hashlib.sha256(b"\x00")  # RFC 6962 leaf prefix, copied per leaf

# the chain check's codes and their meanings (the registry in pipeline.findings is the one table)
REASONS: dict[str, str] = {code: entry.meaning for code, entry in codes(family="chain").items()}


@dataclass(frozen=True)
class Note:
    stream: str
    segment: str
    kind: str  # recovered | active | torn-tail | evicted
    message: str


@dataclass
class SegmentScan:
    """What one segment file proves on its own.  Picklable (crosses process boundaries)."""

    path: str
    name: str
    size: int = 0
    sha256: str = ""
    records: int = 0
    first_seq: int | None = None
    first_prev: str | None = None
    first_ts: str | None = None
    first_recovery: dict[str, Any] | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    last_ts: str | None = None
    valid_bytes: int = 0
    sealed: bool = False
    seal: dict[str, Any] | None = None
    seal_leaf_hash: bytes | None = None
    merkle_root: str = ""
    findings: list[Finding] = field(default_factory=list)
    # end offset -> (seq, hash) of every valid record, kept only for unsealed segments so a
    # later recovery record's valid_bytes can be matched to the record ending there
    boundaries: dict[int, tuple[int, str]] = field(default_factory=dict)
    max_gap_s: float = 0.0
    max_gap_after_seq: int | None = None
    # where a later scan of this (unsealed, so far valid) segment may resume: set only for
    # such segments, used by ``pipeline monitor`` to read each appended byte once
    resume: ScanResume | None = None

    @property
    def ok(self) -> bool:
        return not self.findings


@dataclass(frozen=True)
class ScanResume:
    """The state of a scan that stopped at the end of the valid records of an unsealed
    segment (``offset``): passing it to ``scan_segment(resume=)`` checks only the bytes after
    it, with exactly the checks a scan from the start would make.  The segment's Merkle
    range is kept as its compact frontier (``seg_size`` leaves, ``seg_stack`` hashes), so the
    state is O(log n).  JSON-safe through ``to_dict``/``from_dict`` (the monitor's position)."""

    offset: int
    stream: str
    records: int
    first_seq: int
    first_prev: str
    first_ts: str
    first_recovery: dict[str, Any] | None
    last_seq: int
    last_hash: str
    last_ts: str
    prev_ts: float
    max_gap_s: float
    max_gap_after_seq: int | None
    seg_size: int
    seg_stack: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScanResume:
        return cls(**{**d, "seg_stack": tuple(d["seg_stack"])})


def scan_segment(path: str | os.PathLike[str], stream: str | None = None, *,
                 on_record: Callable[[Record], None] | None = None, file_hash: bool = True,
                 resume: ScanResume | None = None, limit: int | None = None,
                 boundaries: bool = True) -> SegmentScan:
    """Check one segment file completely.  Reads it once, sequentially.

    ``resume`` (from an earlier scan's ``SegmentScan.resume``) checks only the bytes after
    the earlier scan's valid records, continuing its chain and Merkle state: for a segment
    that is still being written.  A seal's stream-tree frontiers can only be checked from
    the segment's first record, so when a resumed scan meets the seal the whole file is
    scanned again (once per segment).  ``limit`` judges only the file's first ``limit``
    bytes (what was there some time ago: the monitor's trailing delay).  Neither is
    compatible with ``on_record``; a resumed scan has no whole-file ``sha256``.
    ``boundaries=False`` skips the map of record ends of an unsealed segment, which only the
    check of a recovery record naming the segment needs (``stitch``), and costs a second read.

    ``on_record`` sees every record that passed its checks so far, in order (used by
    ``pipeline export`` to spool records from the same single pass that verifies them;
    the caller discards what it spooled if the scan ends with findings).

    With the C accelerator, runs of ordinary records (events and heartbeats that follow
    another record of the segment) are checked by ``_native.scan_lines``, which applies the
    same rules and stops at anything else; every other line, and every line that is not
    exactly as the writer makes it, is judged here line by line."""
    p = Path(path)
    scan = SegmentScan(path=str(p), name=p.name)
    seg_cr = merkle.CompactRange()
    expected_seq: int | None = None
    prev_hash: str | None = None
    prev_ts: float | None = None
    stop = False
    stream_cr = _initial_stream_range(p)
    use_fast = _native is not None and on_record is None
    fast_used = False
    start = 0
    if resume is not None:
        if on_record is not None:
            raise ValueError("scan_segment: resume and on_record cannot be combined")
        file_hash = False
        stream, expected_seq, prev_hash, prev_ts = resume.stream, resume.last_seq + 1, resume.last_hash, resume.prev_ts
        seg_cr = merkle.CompactRange(resume.seg_size, [bytes.fromhex(h) for h in resume.seg_stack])
        stream_cr = None  # a seal sends the scan back to the start (below)
        start = resume.offset
        scan.size = scan.valid_bytes = resume.offset
        scan.records = resume.records
        scan.first_seq, scan.first_prev, scan.first_ts = resume.first_seq, resume.first_prev, resume.first_ts
        scan.first_recovery = resume.first_recovery
        scan.last_seq, scan.last_hash, scan.last_ts = resume.last_seq, resume.last_hash, resume.last_ts
        scan.max_gap_s, scan.max_gap_after_seq = resume.max_gap_s, resume.max_gap_after_seq

    def add(reason: str, message: str, seq: int | None, offset: int | None) -> None:
        scan.findings.append(Finding.of(reason, stream or "", p.name, message, seq, offset))

    def check_line(offset: int, line: bytes) -> None:
        nonlocal stream, expected_seq, prev_hash, prev_ts, stop
        scan.size += len(line)
        if stop:
            return
        if scan.sealed:
            add("after-seal", f"{scan.size - offset} bytes follow the seal at offset {offset}", scan.last_seq, offset)
            stop = True
            return
        fields = parse_fields(line)
        if fields is None:
            try:
                rec = parse_record(line)  # slow path: only to name what is wrong
            except RecordError as exc:
                if exc.reason == "torn":
                    # unterminated tail: judged by stitch (recovery record, or active segment)
                    stop = True
                    return
                add(exc.reason, f"{exc.detail} (line at offset {offset})", expected_seq, offset)
                stop = True
                return
            fields = (rec.stream, rec.seq, rec.ts, rec.kind, rec.prev, rec.data, rec.hash)
        r_stream, r_seq, r_ts, r_kind, r_prev, r_data, r_hash = fields
        if stream is None:
            stream = r_stream
        if r_stream != stream:
            add("wrong-stream", f"record at offset {offset} belongs to stream {r_stream!r}", r_seq, offset)
            stop = True
            return
        if expected_seq is None:
            scan.first_seq, scan.first_prev, scan.first_ts = r_seq, r_prev, r_ts
            if r_kind == "recovery":
                scan.first_recovery = r_data
            parsed = parse_segment_name(p.name)
            if parsed is None or parsed[0] != r_seq:
                add("name-mismatch", f"file name says seq {parsed[0] if parsed else '?'} but the first record "
                    f"is seq {r_seq}", r_seq, offset)
        else:
            if r_seq != expected_seq:
                reason = "seq-gap" if r_seq > expected_seq else "seq-regression"
                add(reason, f"seq {r_seq} where {expected_seq} was expected", r_seq, offset)
                stop = True
                return
            if r_prev != prev_hash:
                add("broken-link", f"seq {r_seq} does not link to seq {expected_seq - 1}", r_seq, offset)
                stop = True
                return
        try:
            t = ts_epoch(r_ts)
        except ValueError:
            add("bad-field", f"ts {r_ts!r} is not a valid UTC time (line at offset {offset})", r_seq, offset)
            stop = True
            return
        if prev_ts is not None and t - prev_ts > scan.max_gap_s:
            scan.max_gap_s = t - prev_ts
            scan.max_gap_after_seq = expected_seq - 1 if expected_seq is not None else None
        prev_ts = t
        h = _LEAF0.copy()
        h.update(memoryview(line)[:-1])
        lh = h.digest()
        if r_kind == "seal":
            scan.sealed = True
            scan.seal = r_data
            scan.seal_leaf_hash = lh
            _check_seal(scan, r_seq, r_prev, r_data, seg_cr, add, offset)
        else:
            seg_cr.append(lh)
            if stream_cr is not None:
                stream_cr.append(lh)
            # where records end, in case a later recovery record names this segment (cleared
            # at the end when the segment is sealed)
            scan.boundaries[offset + len(line)] = (r_seq, r_hash)
        if on_record is not None:
            on_record(Record(*fields, line))
        scan.records += 1
        scan.last_seq, scan.last_hash, scan.last_ts = r_seq, r_hash, r_ts
        scan.valid_bytes = offset + len(line)
        expected_seq = r_seq + 1
        prev_hash = r_hash

    sha = hashlib.sha256()
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if limit is not None:
            size = min(size, max(0, limit))
        if size < start:
            # the file is shorter than what was already verified: it was truncated or replaced
            scan.findings.append(Finding.of("truncated", stream or "", p.name, f"{p.name} is {size} bytes, shorter "
                                            f"than the {start} bytes of records already verified", scan.last_seq,
                                            size))
            return scan
        # mapped, not read: no copy, no fresh buffer per chunk (the file may still grow
        # while it is scanned: what was there when it was opened is judged)
        buf: bytes | mmap.mmap = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) if size else b""
    try:
        if file_hash:
            sha.update(buf)
        pos = start
        while True:
            if (use_fast and not stop and not scan.sealed and expected_seq is not None
                    and stream is not None and prev_hash is not None):
                assert _native is not None
                (new_pos, last_start, count, next_seq, prev_b, prev_ts, scan.max_gap_s,
                 scan.max_gap_after_seq) = _native.scan_lines(
                    buf, pos, stream.encode(), expected_seq, prev_hash.encode(), prev_ts, scan.max_gap_s,
                    scan.max_gap_after_seq, seg_cr, stream_cr)
                if count:
                    fast_used = True
                    scan.size += new_pos - pos
                    scan.records += count
                    scan.valid_bytes = new_pos
                    expected_seq = next_seq
                    prev_hash = prev_b.decode()
                    last = parse_fields(buf[last_start:new_pos])
                    assert last is not None  # scan_lines accepted it
                    scan.last_seq, scan.last_hash, scan.last_ts = last[1], last[6], last[2]
                    pos = new_pos
            if stop or scan.sealed:
                # nothing after a seal or a finding is parsed: counted, never copied out of
                # the mapping (a gigabyte appended after a seal costs no memory to report)
                if pos < size:
                    if scan.sealed and not stop:
                        add("after-seal", f"{size - pos} bytes follow the seal at offset {pos}", scan.last_seq, pos)
                        stop = True
                    scan.size += size - pos
                    pos = size
                break
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            if nl + 1 - pos > _IN_PLACE:
                # a long line: what its length, its own last bytes and hash already condemn
                # is judged on the mapping (a root attacker's gigabyte ending in a newline
                # is not copied)
                bad = _condemned_line(buf, pos, nl + 1)
                if bad is not None:
                    scan.size += nl + 1 - pos
                    add(bad[0], f"{bad[1]} (line at offset {pos})", expected_seq, pos)
                    stop = True
                    pos = nl + 1
                    continue
            check_line(pos, buf[pos : nl + 1])
            pos = nl + 1
        if pos < size:
            # the unterminated tail: torn (parse_record's first judgement of a line without
            # its newline), judged by stitch (a recovery record, or the active segment);
            # counted without copying it out of the mapping
            scan.size += size - pos
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
    scan.sha256 = sha.hexdigest() if file_hash else ""
    scan.merkle_root = seg_cr.root().hex()
    if resume is not None and scan.sealed:
        return scan_segment(p, stream, limit=limit)
    if not scan.sealed and not scan.findings and scan.records and prev_ts is not None:
        assert stream is not None and scan.first_seq is not None and scan.first_prev is not None
        assert scan.first_ts is not None and scan.last_seq is not None and scan.last_hash is not None
        assert scan.last_ts is not None
        scan.resume = ScanResume(scan.valid_bytes, stream, scan.records, scan.first_seq, scan.first_prev,
                                 scan.first_ts, scan.first_recovery, scan.last_seq, scan.last_hash, scan.last_ts,
                                 prev_ts, scan.max_gap_s, scan.max_gap_after_seq, seg_cr.size,
                                 tuple(h.hex() for h in seg_cr.stack))
    if scan.sealed:
        scan.boundaries = {}
        if scan.seal is not None and not scan.findings:
            # a segment already condemned (bytes after its seal, a seal field wrong) is not
            # also blamed on its frontiers, which would be read from the wrong last line
            _check_tree(scan, stream_cr, add)
    elif fast_used and resume is None and boundaries:
        # (a resumed scan's boundaries cover only what it read: a recovery record naming the
        # segment is judged from a full scan)
        scan.boundaries = _record_ends(p, scan.valid_bytes)
    if scan.records == 0 and not scan.findings:
        scan.boundaries = {}
    return scan


# lines longer than this are first judged in place (``_condemned_line``); shorter ones are
# copied and parsed at once (the check costs a second hash of a line that passes it)
_IN_PLACE = 1 << 20


def _condemned_line(buf: bytes | mmap.mmap, start: int, end: int) -> tuple[str, str] | None:
    """``(reason, detail)`` of ``parse_record`` for the line ``buf[start:end]`` (its only
    newline its last byte, at least ``SUFFIX_LEN + 2`` bytes) when one of the checks that
    precede parsing fails, which ``parse_fields`` also rejects: its length, the hash field at
    its end, its hex digits, the hash of its bytes.  None: parse it.  Nothing of the line is copied."""
    if end - start > MAX_LINE_BYTES:
        return "bad-line", overlong(end - start)
    body_end = end - SUFFIX_LEN
    if buf[body_end : body_end + 9] != HASH_FIELD or buf[end - 3 : end] != b'"}\n':
        return "bad-line", 'line does not end with ,"hash":"<64 hex>"}'
    claimed = buf[body_end + 9 : end - 3]
    if not HEX64_RE.match(claimed):
        return "bad-line", "hash field is not 64 lowercase hex digits"
    with memoryview(buf) as whole, whole[start:body_end] as body:
        digest = hashlib.sha256(body).hexdigest().encode()
    if digest != claimed:
        return "hash-mismatch", "record hash does not match its bytes"
    return None


def _record_ends(path: Path, valid_bytes: int) -> dict[int, tuple[int, str]]:
    """End offset -> (seq, hash) of every record before ``valid_bytes`` (all of which were
    verified): what the line-by-line scan records as it goes, rebuilt for an unsealed
    segment whose records the fast path checked."""
    ends: dict[int, tuple[int, str]] = {}
    # (only up to valid_bytes: a torn tail after it may be huge, and is not a record)
    for offset, line in iter_lines(path, limit=valid_bytes):
        end = offset + len(line)
        if end > valid_bytes:
            break
        fields = parse_fields(line)
        if fields is not None and fields[3] != "seal":
            ends[end] = (fields[1], fields[6])
    return ends


def _initial_stream_range(path: Path) -> merkle.CompactRange | None:
    """The stream tree just before this segment, from its own seal's start_frontier.

    Read from the last line first so the scan stays a single pass with O(log n) state."""
    last = read_last_line(path)
    if last is None:
        return None
    try:
        rec = parse_record(last)
    except RecordError:
        return None
    first, frontier = rec.data.get("first_seq"), _hashes(rec.data.get("start_frontier"))
    if rec.kind != Kind.SEAL.value or type(first) is not int or frontier is None:
        return None
    try:
        return merkle.CompactRange(first, frontier)
    except (ValueError, TypeError, OverflowError):
        return None


def _hashes(value: Any) -> list[bytes] | None:
    """A seal's list of hashes (``frontier``, ``start_frontier``): each 64 lowercase hex
    digits, as FORMAT §4 writes them; anything else is no list (bytes.fromhex alone would
    also take upper case and spaces, which another verifier would refuse)."""
    if type(value) is not list or not all(type(h) is str and HEX64_RE.match(h.encode()) for h in value):
        return None
    return [bytes.fromhex(h) for h in value]


def _check_seal(scan: SegmentScan, seal_seq: int, seal_prev: str, data: dict[str, Any],
                seg_cr: merkle.CompactRange, add: Callable[[str, str, int | None, int | None], None],
                offset: int) -> None:
    count = scan.records
    expected = {
        "segment": scan.name,
        "first_seq": scan.first_seq,
        "last_seq": seal_seq - 1,
        "count": count,
        "last_hash": seal_prev,
        "merkle_root": seg_cr.root().hex(),
        "opened": scan.first_ts,
        "tree_size": seal_seq,
    }
    for key, want in expected.items():
        got = data.get(key)
        if type(got) is not type(want) or got != want:  # 3.0 or true is not the integer 3 or 1
            add("seal-mismatch", f"seal field {key} is {got!r}, the segment says {want!r}", seal_seq, offset)
            return
    if count == 0:
        add("seal-mismatch", "a seal must follow at least one record", seal_seq, offset)


def _check_tree(scan: SegmentScan, cr: merkle.CompactRange | None,
                add: Callable[[str, str, int | None, int | None], None]) -> None:
    seal = scan.seal or {}
    if cr is None or cr.size != seal.get("tree_size"):
        add("seal-mismatch", "seal start_frontier does not describe the stream tree at the segment start",
            scan.last_seq, None)
        return
    end = _hashes(seal.get("frontier"))
    if end is None:
        add("seal-mismatch", "seal frontier is not a list of 64-digit lowercase hex hashes", scan.last_seq, None)
        return
    if cr.stack != end:
        add("seal-mismatch", "seal frontier does not extend start_frontier by this segment's records",
            scan.last_seq, None)
        return
    if cr.root().hex() != seal.get("tree_root"):
        add("seal-mismatch", "seal tree_root does not match its frontier", scan.last_seq, None)


@dataclass
class StreamReport:
    stream: str
    segments: list[SegmentScan] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None

    @property
    def ok(self) -> bool:
        """No error-severity finding (warnings, e.g. a witnessed checkpoint that could not be
        compared, are listed but do not fail the report)."""
        return not has_errors(self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.is_error]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if not f.is_error]

    def segment_status(self, scan: SegmentScan) -> str:
        if any(f.segment == scan.name and f.is_error for f in self.findings):
            return "INVALID"
        kinds = {n.kind for n in self.notes if n.segment == scan.name}
        if "recovered" in kinds:
            return "recovered"
        if "active" in kinds or "torn-tail" in kinds:
            return "active"
        return "valid"

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "ok": self.ok,
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "segments": [
                {
                    "segment": s.name,
                    "status": self.segment_status(s),
                    "first_seq": s.first_seq,
                    "last_seq": s.last_seq,
                    "records": s.records,
                    "bytes": s.size,
                    "sealed": s.sealed,
                    "sha256": s.sha256 or None,
                    "merkle_root": (s.seal or {}).get("merkle_root", s.merkle_root),
                }
                for s in self.segments
            ],
            # v1 keys (stream, segment, reason, message, seq, offset) plus the findings model's
            # (code, severity, key); warnings stay notes as in v1 and are listed in full under
            # "warnings" (docs/FORMAT.md §8, "Reports")
            "findings": [_v1_finding(f) for f in self.errors],
            "notes": [asdict(n) for n in self.notes] + [
                {"stream": f.stream, "segment": f.segment, "kind": REGISTRY[f.code].family,
                 "message": f"{f.code}: {f.message}"} for f in self.warnings],
            "warnings": [_v1_finding(f) for f in self.warnings],
        }


def _v1_finding(f: Finding) -> dict[str, Any]:
    return {**f.to_dict(), "reason": LEGACY_VERIFY_REASON.get(f.code, f.code)}


def _torn_region(path: str, start: int) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


def stitch(stream: str, scans: list[SegmentScan], *, head: StreamHead | None = None,
           start_seq: int = 0, start_hash: str | None = None) -> StreamReport:
    """Connect per-segment scans into a verdict on the whole stream.

    ``start_seq``/``start_hash`` give where the first present segment must begin: seq 0
    with the genesis hash by default, or the last record of segments that were evicted
    (known from the shipper's ledger or cold storage).
    """
    rep = StreamReport(stream, scans)
    for s in scans:
        rep.findings.extend(dataclasses.replace(f, stream=stream) for f in s.findings)
    exp_seq: int | None = start_seq
    exp_hash: str | None = start_hash if start_hash is not None else (GENESIS_HASH if start_seq == 0 else None)
    unexplained: list[SegmentScan] = []  # unsealed segments waiting for a recovery record
    prev_scan: SegmentScan | None = None
    before: dict[str, tuple[int | None, str | None]] = {}  # where the chain stood before each segment
    for i, s in enumerate(scans):
        last = i == len(scans) - 1
        before[s.name] = (exp_seq, exp_hash)
        if s.first_seq is None:
            if s.findings:
                prev_scan = s
                continue
            if s.size == 0 and last:
                rep.notes.append(Note(stream, s.name, "active", "empty segment file (just created)"))
                continue
            unexplained.append(s)  # nothing valid: only a recovery record can explain it
            continue
        rec = s.first_recovery
        if unexplained:
            _apply_recovery(rep, stream, s, rec, unexplained, before)
            # the chain continues from the last valid record the recovery acknowledged
            exp_seq, exp_hash = _recovery_continuation(rep, unexplained, rec, exp_seq, exp_hash)
            unexplained = []
        if exp_seq is not None:
            if s.first_seq > exp_seq:
                rep.findings.append(Finding.of("missing-segment" if prev_scan is not None else "missing-start",
                                               stream, s.name,
                                            f"records {exp_seq}..{s.first_seq - 1} are missing before {s.name}",
                                            s.first_seq, 0))
            elif s.first_seq < exp_seq:
                rep.findings.append(Finding.of("seq-regression", stream, s.name,
                                            f"{s.name} starts at seq {s.first_seq}, expected {exp_seq}",
                                            s.first_seq, 0))
            elif exp_hash is not None and s.first_prev != exp_hash:
                rep.findings.append(Finding.of("broken-link", stream, s.name,
                                            f"first record of {s.name} does not link to the previous segment",
                                            s.first_seq, 0))
        if s.sealed and prev_scan is not None and prev_scan.sealed and prev_scan.seal and s.seal \
                and prev_scan.seal_leaf_hash is not None and prev_scan.last_seq is not None \
                and s.first_seq == prev_scan.last_seq + 1:
            try:
                cr = merkle.CompactRange(prev_scan.last_seq, [bytes.fromhex(h) for h in prev_scan.seal["frontier"]])
                cr.append(prev_scan.seal_leaf_hash)
                continues = [h.hex() for h in cr.stack] == s.seal.get("start_frontier")
            except (KeyError, TypeError, ValueError, AttributeError):
                continues = False  # a forged seal without a usable frontier
            if not continues:
                rep.findings.append(Finding.of("seal-mismatch", stream, s.name,
                                            "seal start_frontier does not continue the previous seal's tree",
                                            s.last_seq, None))
        if not s.sealed and not s.findings:
            torn = s.size - s.valid_bytes
            if last:
                if torn:
                    rep.notes.append(Note(stream, s.name, "torn-tail",
                                          f"{torn} bytes after the last complete record at offset {s.valid_bytes}: "
                                          "a write in progress or a crash; the writer recovers it on its next start"))
                else:
                    rep.notes.append(Note(stream, s.name, "active", "active segment (not yet sealed)"))
            else:
                unexplained.append(s)
        if rep.first_seq is None:
            rep.first_seq = s.first_seq
        rep.records += s.records
        exp_seq = (s.last_seq + 1) if s.last_seq is not None else exp_seq
        exp_hash = s.last_hash if s.last_hash is not None else exp_hash
        rep.last_seq, rep.last_hash = s.last_seq, s.last_hash
        prev_scan = s
    if unexplained:
        # After a crash and before the writer restarts, the newest segment may be unsealed and
        # followed only by files without a complete record: the next segment was created (and
        # perhaps torn) before the seal reached the disk.  That is the active tail, which the
        # writer's next start explains with a recovery record, not a truncation.
        at = next(i for i, x in enumerate(scans) if x is unexplained[0])
        if all(x.first_seq is None and not x.findings for x in scans[at + 1 :]):
            for s in unexplained:
                rep.notes.append(Note(stream, s.name, "torn-tail",
                                      f"{s.size - s.valid_bytes} bytes after the last complete record at offset "
                                      f"{s.valid_bytes}, no seal: a crash during rotation; the writer recovers it "
                                      "on its next start"))
            unexplained = []
    for s in unexplained:
        rep.findings.append(Finding.of("truncated", stream, s.name,
                                    f"{s.name} ends without a seal at offset {s.valid_bytes} and no recovery record "
                                    "explains it", s.last_seq, s.valid_bytes))
    if head is not None:
        have = (rep.last_seq + 1) if rep.last_seq is not None else start_seq
        if head.next_seq > have:
            rep.findings.append(Finding.of("missing-tail", stream, scans[-1].name if scans else "",
                                           f"the stream head records seq {head.next_seq - 1} as written but the "
                                        f"segments end at seq {have - 1}", have, None))
        elif head.next_seq == have and rep.last_hash is not None and head.last_hash != rep.last_hash:
            # nothing links to the newest record but the head: without this check the last
            # record could be edited and its hash recomputed unnoticed
            rep.findings.append(Finding.of("broken-link", stream, scans[-1].name if scans else "",
                                        f"the last record (seq {have - 1}) does not match the hash the stream head "
                                        "records for it", have - 1, None))
    return rep


def _abandoned_entries(rec: dict[str, Any] | None) -> list[Any]:
    """The ``abandoned`` list of a recovery record; anything else (a forged record) reads as empty."""
    entries = (rec or {}).get("abandoned")
    return entries if isinstance(entries, list) else []


def _apply_recovery(rep: StreamReport, stream: str, s: SegmentScan, rec: dict[str, Any] | None,
                    pending: list[SegmentScan], before: dict[str, tuple[int | None, str | None]]) -> None:
    """Judge the recovery record at the start of ``s`` against the abandoned segments before
    it (docs/FORMAT.md §5).  ``before``: where the chain stood before each segment."""
    entries = {}
    if rec is not None:
        for e in _abandoned_entries(rec):
            if isinstance(e, dict) and isinstance(e.get("segment"), str):
                entries[e["segment"]] = e
    for a in pending:
        e = entries.get(a.name)
        if e is None:
            rep.findings.append(Finding.of("truncated", stream, a.name,
                                        f"{a.name} ends without a seal and the next segment {s.name} does not "
                                        "explain it with a recovery record", a.last_seq, a.valid_bytes))
            continue
        valid = e.get("valid_bytes")
        if not isinstance(valid, int) or valid < 0 or valid > a.size:
            rep.findings.append(Finding.of("recovery-mismatch", stream, a.name,
                                        f"recovery record in {s.name} gives impossible valid_bytes {valid!r}",
                                        None, None))
            continue
        if valid > a.valid_bytes or (valid and valid not in a.boundaries and valid != a.valid_bytes):
            rep.findings.append(Finding.of("recovery-mismatch", stream, a.name,
                                        f"recovery record says {valid} valid bytes but complete records end at "
                                        f"{a.valid_bytes}", None, valid))
            continue
        n, digest = _torn_region(a.path, valid)
        if n != e.get("torn_bytes") or digest != e.get("torn_sha256"):
            rep.findings.append(Finding.of("recovery-mismatch", stream, a.name,
                                        f"the {n} bytes after offset {valid} do not match the recovery record "
                                        "(the torn tail was changed)", None, valid))
            continue
        dropped = _dropped_records(a, valid, *before.get(a.name, (None, None)))
        if dropped is not None:
            rep.findings.append(Finding.of("recovery-drops-records", stream, a.name,
                                        f"the recovery record in {s.name} declares the bytes after offset {valid} "
                                        f"torn, but they begin with a complete record that continues the chain "
                                        f"(seq {dropped}): complete records are never a torn tail", dropped, valid))
            continue
        rep.notes.append(Note(stream, a.name, "recovered",
                              f"{n} torn bytes after offset {valid} kept as evidence; recovered by {s.name}"))


def _dropped_records(a: SegmentScan, valid: int, exp_seq: int | None, exp_hash: str | None) -> int | None:
    """The seq of a complete, valid record that continues the chain at offset ``valid`` of the
    abandoned segment ``a``, or None.  The scan checked every complete line up to
    ``a.valid_bytes`` (a segment with findings never gets here), so past a record boundary
    they all continue the chain; at offset 0 the first record must continue the chain as it
    stood before the segment."""
    if valid > 0:
        if valid < a.valid_bytes and valid in a.boundaries:
            return a.boundaries[valid][0] + 1
        return None
    if a.records and a.first_seq is not None and a.first_seq == exp_seq and a.first_prev == exp_hash:
        return a.first_seq
    return None


def _recovery_continuation(rep: StreamReport, pending: list[SegmentScan], rec: dict[str, Any] | None,
                           exp_seq: int | None, exp_hash: str | None) -> tuple[int | None, str | None]:
    entries = {e.get("segment"): e for e in _abandoned_entries(rec) if isinstance(e, dict)}
    seq, h = exp_seq, exp_hash
    for a in pending:
        e = entries.get(a.name)
        valid = e.get("valid_bytes") if e else None
        if not isinstance(valid, int):
            continue  # not explained: _apply_recovery reports it
        if valid == 0:
            # none of it is part of the stream (it was fresh when the failure hit): the chain
            # continues from the record before it, and its records are not counted
            if a.first_seq is not None and a.last_seq is not None:
                rep.records -= a.last_seq - a.first_seq + 1
                seq, h = a.first_seq, a.first_prev
            a.last_seq = a.last_hash = None
        elif valid in a.boundaries:
            last_seq, last_hash = a.boundaries[valid]
            if a.last_seq is not None:
                rep.records -= a.last_seq - last_seq  # records past valid_bytes were never acknowledged
            seq, h = last_seq + 1, last_hash
            a.last_seq, a.last_hash = last_seq, last_hash
        elif valid == a.valid_bytes and a.last_seq is not None:
            seq, h = a.last_seq + 1, a.last_hash
    return seq, h


def file_sha256(path: str | os.PathLike[str], size: int | None = None) -> tuple[int, str]:
    """(bytes hashed, SHA-256 hex) of the file's first ``size`` bytes (all of it by default).
    Hashes the mapped file in one call: hashlib drops the GIL and nothing is copied."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        limit = os.fstat(f.fileno()).st_size
        if size is not None:
            limit = min(limit, size)
        if limit:
            with mmap.mmap(f.fileno(), limit, access=mmap.ACCESS_READ) as mm, memoryview(mm) as view:
                sha.update(view)
    return limit, sha.hexdigest()


def scan_all(paths: Iterable[Path], workers: int | None = None, *, file_hashes: bool = True,
             stream: str | None = None, on_scanned: Callable[[int], None] | None = None) -> list[SegmentScan]:
    """Scan every segment, in parallel where it pays.  ``file_hashes=False`` skips the
    whole-file SHA-256 (``sha256`` stays empty): it identifies a file, for comparison with a
    manifest or a cold copy, but adds nothing to what the scan proves (every byte of a
    record is under its record hash, and bytes after a seal are a finding), and costs about
    a fifth of the scan.  ``on_scanned(size)`` is called as each segment's scan completes
    (a progress bar), in segment order."""
    paths = list(paths)
    scans = _scan_all(paths, workers, file_hashes, stream)
    if on_scanned is None:
        return list(scans)
    out = []
    for scan in scans:
        on_scanned(scan.size)
        out.append(scan)
    return out


def _scan_all(paths: list[Path], workers: int | None, file_hashes: bool,
              stream: str | None) -> Iterator[SegmentScan]:
    if workers is None:
        workers = os.cpu_count() or 1
    total = sum(p.stat().st_size for p in paths)
    if workers <= 1 or len(paths) < 2 or total < (8 << 20):
        for p in paths:
            yield scan_segment(p, stream, file_hash=file_hashes)
        return
    if _native is None:
        # the pure-Python scan holds the GIL: one process per core
        with ProcessPoolExecutor(max_workers=min(workers, len(paths))) as procs:
            yield from procs.map(partial(scan_segment, stream=stream, file_hash=file_hashes), paths, chunksize=1)
        return
    if not file_hashes:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield from pool.map(partial(scan_segment, stream=stream, file_hash=False), paths)
        return
    # The C accelerator's scan and hashlib's file hash run without the GIL, so threads use
    # every core without the start-up and pickling cost of processes.  Each file is two
    # tasks (its records, and its whole-file SHA-256), so that the cores stay evenly busy
    # even when there are few, large segments.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        scans = [pool.submit(scan_segment, p, stream, file_hash=False) for p in paths]
        hashes = [pool.submit(file_sha256, p) for p in paths]
        for p, scan_f, hash_f in zip(paths, scans, hashes, strict=True):
            scan = scan_f.result()
            hashed, digest = hash_f.result()
            if hashed != scan.size:  # the file grew in between (the active segment)
                hashed, digest = file_sha256(p, scan.size)
            scan.sha256 = digest
            yield scan


def verify_stream(stream_dir: str | os.PathLike[str], *, workers: int | None = None,
                  start_seq: int = 0, start_hash: str | None = None, file_hashes: bool = True,
                  on_scanned: Callable[[int], None] | None = None) -> StreamReport:
    d = Path(stream_dir)
    # head.json BEFORE the segments: the writer stores it after the seal it names is durable,
    # so what it names is on disk when the listing and scans follow; read after them, a seal
    # written in between made it name records the scans never saw (a false missing-tail)
    head = read_head_or_none(d)
    paths = list_segments(d)
    # the directory names the stream: a record that names another is wrong-stream (FORMAT §2)
    scans = scan_all(paths, workers, file_hashes=file_hashes, stream=d.name, on_scanned=on_scanned)
    return stitch(d.name, scans, head=head, start_seq=start_seq, start_hash=start_hash)
