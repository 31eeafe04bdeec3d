"""Export verified events as NDJSON, from the hot tier or from cold storage (``pipeline export``).

Each output line is the event's original record line, byte for byte (self-verifying: see
docs/FORMAT.md).  Events are released one SEGMENT at a time, only after that segment
verified completely: every record's hash, seq and link, the seal (counts, Merkle root,
frontiers), the link to the previous segment and, from cold storage, the stored object's
checksum and the decompressed segment's SHA-256 and Merkle root against the metadata.
Why not record by record: removing trailing records, replacing a seal, appending bytes
after it or truncating an object are only visible at the END of a segment, so a
record-by-record export would already have printed records of a segment later proven
wrong.  Until release, a segment's matching events wait in a spool file (bounded memory).
The first segment that does not verify stops the export with ``ExportFailed`` (its
``finding`` names the segment, seq and code); nothing from it (or after it) is written.

From the hot tier, a segment the shipper ledger knows must also be byte for byte what the
ledger recorded when it was sealed (a hot copy edited and re-chained after shipping
verifies on its own).  From cold storage, ``ledger`` (a host's hot directory) adds the same
check against that host's ledger, and refuses objects it never shipped (docs/LEDGER.md).

Here rather than in the CLI so that a library user gets the same verified export
(``pipeline.export_events``); ``pipeline export`` only parses its flags and renders.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from pipeline.cold.base import ColdStore
from pipeline.errors import PipelineError
from pipeline.findings import Finding
from pipeline.format.layout import hot_tier_problem, stream_dirs, stream_problem
from pipeline.format.record import GENESIS_HASH, Kind, Record, ts_epoch
from pipeline.format.segment import list_segments
from pipeline.ship.ledger import Entry, open_ledger_readonly
from pipeline.verify.chain import SegmentScan, file_sha256, scan_segment, stitch
from pipeline.verify.readback import ReadbackError, fetch_checked, list_streams_in, merkle_problem, stream_objects

if TYPE_CHECKING:  # pipeline.crypt (and pyrage) load only when an identity is given
    from pipeline.crypt.reader import RecordOpener

SPOOL_MEMORY = 8 << 20

# (dotted path into data, accepted values)
Match = tuple[list[str], list[Any]]
# what the caller is told as segments are verified: (phase, segments done, segments known)
ProgressFn = Callable[[str, int, int], None]


class ExportFailed(PipelineError):
    """A segment does not verify: the export stopped before writing anything of it (a finding
    about the data; ``pipeline export`` exits 1)."""

    action = ("nothing from this segment or later was written; run pipeline verify-tier (or pipeline verify) "
              "for every finding")

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding

    @property
    def segment(self) -> str:
        return self.finding.segment

    @property
    def seq(self) -> int | None:
        return self.finding.seq

    @property
    def reason(self) -> str:
        return self.finding.code


@dataclass
class ExportResult:
    streams: list[str] = field(default_factory=list)
    segments: int = 0  # segments verified (and released)
    events: int = 0  # lines written
    notes: list[str] = field(default_factory=list)  # what the operator should know (evicted, active segment)


def parse_match(spec: str) -> Match:
    """``FIELD=VALUE`` (``pipeline export --match``): FIELD a dotted path into ``data``; VALUE
    compared as a JSON literal when it parses as one (``n=5``, ``ok=true``), else as a string.
    ValueError names a malformed spec."""
    name, sep, value = spec.partition("=")
    if not sep or not name:
        raise ValueError(f"--match {spec!r}: use FIELD=VALUE")
    wanted: list[Any] = [value]
    with contextlib.suppress(orjson.JSONDecodeError):
        wanted.append(orjson.loads(value))
    return name.split("."), wanted


def _field(data: Any, path: list[str]) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


_MISSING = object()


def data_matches(data: Any, matches: Sequence[Match]) -> bool:
    """Whether an event's ``data`` satisfies every ``--match`` (same value and JSON type)."""
    for path, values in matches:
        v = _field(data, path)
        if v is _MISSING or not any(v == w and type(v) is type(w) for w in values):
            return False
    return True


class Exporter:
    """Writes the matching events of verified segments to ``out``, one stream at a time."""

    def __init__(self, out: IO[bytes], since: float | None, until: float | None, matches: Sequence[Match],
                 progress: ProgressFn | None = None, on_note: Callable[[str], None] | None = None,
                 opener: RecordOpener | None = None) -> None:
        self.out = out
        self.opener = opener  # with an identity: events are decrypted (pipeline.crypt, docs/ENCRYPTION.md)
        self.since, self.until, self.matches = since, until, list(matches)
        self.progress = progress
        self.result = ExportResult()
        self._on_note = on_note
        self._total = 0

    def note(self, message: str) -> None:
        self.result.notes.append(message)
        if self._on_note is not None:
            self._on_note(message)

    def wanted(self, rec: Record, data: Any = _MISSING) -> bool:
        if data is _MISSING:
            data = rec.data
        if rec.kind != Kind.EVENT.value:
            return False
        if self.since is not None or self.until is not None:
            t = ts_epoch(rec.ts)
            if (self.since is not None and t < self.since) or (self.until is not None and t > self.until):
                return False
        return data_matches(data, self.matches)

    def stream(self, stream: str, segments: list[tuple[str, Callable[[], tuple[Path, list[Finding]]],
                                                         Callable[[SegmentScan], Finding | None]]],
               start_seq: int, start_hash: str | None) -> None:
        """``segments``: (name, fetch() -> (local path, findings), post(scan) -> finding or None)."""
        prev: SegmentScan | None = None
        held: tuple[SegmentScan, Any] | None = None  # an unsealed segment waits for the next one
        anchor_seq, anchor_hash = start_seq, start_hash
        prev_cleanup: Callable[[], None] | None = None
        self.result.streams.append(stream)
        self._total += len(segments)
        self._tick()
        for _name, fetch, post in segments:
            path, problems = fetch()
            cleanup = _remover(path)
            if problems:
                raise ExportFailed(problems[0])
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 (closed below)

            def collect(rec: Record, spool: Any = spool, name: str = _name) -> None:
                if self.opener is not None:
                    self._collect_decrypted(rec, spool, name)
                elif self.wanted(rec):
                    spool.write(rec.line)

            if self.opener is not None:
                self.opener.begin(_name)

            scan = scan_segment(path, stream, on_record=collect)
            if scan.findings:
                spool.close()
                raise ExportFailed(scan.findings[0])
            problem = post(scan)
            if problem:
                spool.close()
                raise ExportFailed(problem)
            pair = [prev, scan] if prev is not None else [scan]
            rep = stitch(stream, pair, start_seq=prev.first_seq if prev and prev.first_seq is not None
                         else anchor_seq, start_hash=prev.first_prev if prev else anchor_hash)
            if rep.findings:
                spool.close()
                raise ExportFailed(rep.findings[0])
            if prev is not None and prev_cleanup is not None:
                prev_cleanup()  # the previous segment's local copy is no longer needed by stitch
            if held is not None:
                # the abandoned segment is explained by this one's recovery record: release its
                # records up to where the chain continues (records after that are not the stream's)
                self._release(held[1], limit_seq=scan.first_seq)
                held = None
            if scan.sealed:
                self._release(spool)
            else:
                held = (scan, spool)
            prev, prev_cleanup = scan, cleanup
            if scan.sealed:
                # stitch only re-reads an UNSEALED previous segment (its torn tail): a sealed
                # one's local copy goes now, so disk use stays at about one segment
                cleanup()
                prev_cleanup = None
            anchor_seq = (scan.last_seq or 0) + 1
            anchor_hash = scan.last_hash
            self.result.segments += 1
            self._tick()
        if held is not None:
            # the newest segment, not sealed yet: its records are hash-chained and linked but no
            # seal covers them (the active segment)
            self.note(f"export: note: {held[0].name} is the active (unsealed) segment of {stream}: its "
                      "events are verified by the hash chain only")
            self._release(held[1])

    def _collect_decrypted(self, rec: Record, spool: Any, name: str) -> None:
        from pipeline.crypt.reader import OpenError

        assert self.opener is not None
        try:
            data = self.opener.open(rec)
        except OpenError as exc:
            raise ExportFailed(Finding.of("does-not-open", rec.stream, name, str(exc), rec.seq)) from None
        if data is not None and self.wanted(rec, data):
            # the seq leads the line, as in a record line (_release reads it from there)
            spool.write(orjson.dumps({"seq": rec.seq, "stream": rec.stream, "ts": rec.ts,
                                      "segment": name.removesuffix(".zst"), "data": data}) + b"\n")

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress("export", self.result.segments, self._total)

    def _release(self, spool: Any, limit_seq: int | None = None) -> None:
        spool.seek(0)
        if limit_seq is None:
            for line in spool:
                self.out.write(line)
                self.result.events += 1
        else:
            for line in spool:
                if orjson.loads(line[: line.index(b',"ts":')] + b"}")["seq"] < limit_seq:
                    self.out.write(line)
                    self.result.events += 1
        spool.close()


def _remover(path: Path) -> Callable[[], None]:
    def remove() -> None:
        # only fetched copies live in a private temp dir named pipeline-export-*/tmp*/
        if path.parent.parent.name.startswith("pipeline-export-"):
            shutil.rmtree(path.parent, ignore_errors=True)

    return remove


def _hot_segments(hot: Path, stream: str, shipped: dict[str, Entry]) -> list[tuple[str, Any, Any]]:
    """The hot files in stream order.  A file the ledger knows must be, byte for byte, the
    segment it recorded at sealing (and shipped): a hot copy edited and re-chained after
    that is not released, whatever its own chain says."""
    out: list[tuple[str, Any, Any]] = []
    for p in list_segments(hot / stream):
        def fetch(p: Path = p) -> tuple[Path, list[Finding]]:
            e = shipped.get(p.name)
            if e is None:
                return p, []
            size, sha = file_sha256(p)
            if (size, sha) != (e.size, e.sha256):
                return p, [Finding.of("hot-altered", stream, p.name, f"the hot copy is {size} bytes with SHA-256 "
                                      f"{sha[:16]}…, but the ledger recorded {e.size} bytes, {e.sha256[:16]}… when "
                                      f"it was sealed ({e.state}): export it with --cold and run pipeline verify-tier")]
            return p, []

        out.append((p.name, fetch, lambda scan: None))
    return out


def _ledger_problem(stream: str, name: str, sha256: str, size: int,
                    shipped: dict[str, Entry] | None) -> Finding | None:
    """With a ledger: a cold object must be a segment the host's shipper shipped, byte for
    byte (docs/LEDGER.md)."""
    if shipped is None:
        return None
    e = shipped.get(name)
    if e is None:
        return Finding.of("unshipped-object", stream, name, f"{name} is in cold storage but the ledger never shipped "
                          "it: forged, or uploaded by someone else")
    if (e.sha256, e.size) != (sha256, size):
        return Finding.of("hot-cold-mismatch", stream, name, f"{name} decompresses to {size} bytes with SHA-256 "
                          f"{sha256[:16]}…, the ledger shipped {e.size} bytes, {e.sha256[:16]}…")
    return None


def _cold_segments(store: ColdStore, stream: str, tmp: Path, since: float | None, until: float | None,
                   shipped: dict[str, Entry] | None = None) -> tuple[list[tuple[str, Any, Any]], int, str | None]:
    segs = stream_objects(store, stream)
    # skip objects whose metadata says all their records are outside the window; the first
    # kept object is then anchored by the previous object's recorded last hash
    start_seq, start_hash = 0, GENESIS_HASH
    kept: list[Any] = []
    for s in segs:
        meta = s.meta
        first_ts, last_ts = meta.get("first_ts", ""), meta.get("last_ts", "")
        outside = (since is not None and last_ts and ts_epoch(last_ts) < since) or \
            (until is not None and first_ts and ts_epoch(first_ts) > until)
        if outside and not kept:
            start_seq, start_hash = int(meta.get("last_seq", "0")) + 1, meta.get("last_hash", "")
            continue
        if outside:
            break
        kept.append(s)

    out: list[tuple[str, Any, Any]] = []
    for s in kept:
        def fetch(s: Any = s) -> tuple[Path, list[Finding]]:
            d = Path(tempfile.mkdtemp(dir=tmp))
            checked = fetch_checked(store, s, d)
            fr = checked.fetched
            problem = _ledger_problem(stream, s.name, fr.sha256, fr.size, shipped) if fr.ok else None
            return fr.path, checked.problems + ([problem] if problem else [])

        out.append((s.name, fetch, lambda scan, s=s: merkle_problem(s, scan)))
    return out, start_seq, start_hash


def export_hot(hot: str | os.PathLike[str], out: IO[bytes], *, stream: str | None = None,
               since: float | None = None, until: float | None = None, matches: Sequence[Match] = (),
               progress: ProgressFn | None = None, on_note: Callable[[str], None] | None = None,
               opener: RecordOpener | None = None) -> ExportResult:
    """Export the events of ``stream`` (every stream when None) of the hot tier ``hot``.
    Segments the shipper evicted are skipped with a note (export them from cold storage).
    Raises ExportFailed at the first segment that does not verify, ReadbackError when the
    export cannot run (not a hot tier, no such stream)."""
    hot = Path(hot)
    problem = hot_tier_problem(hot) or (stream_problem(hot, stream) if stream else None)
    if problem:
        raise ReadbackError(problem)
    exporter = Exporter(out, since, until, matches, progress, on_note, opener)
    ledger = open_ledger_readonly(hot)
    try:
        for name in [stream] if stream else stream_dirs(hot):
            start = ledger.evicted_prefix(name) if ledger else None
            if start:
                exporter.note(f"export: note: records of {name} before seq {start[0]} were evicted from the "
                              "hot tier; export them with --cold")
            shipped = {e.segment: e for e in ledger.entries(stream=name)} if ledger else {}
            exporter.stream(name, _hot_segments(hot, name, shipped), start[0] if start else 0,
                            start[1] if start else None)
    finally:
        if ledger:
            ledger.close()
    return exporter.result


def export_cold(store: ColdStore, out: IO[bytes], *, stream: str | None = None, since: float | None = None,
                until: float | None = None, matches: Sequence[Match] = (),
                ledger: str | os.PathLike[str] | None = None, progress: ProgressFn | None = None,
                on_note: Callable[[str], None] | None = None, where: str | None = None,
                opener: RecordOpener | None = None) -> ExportResult:
    """Export the events of ``stream`` (every stream when None) from the cold ``store``.
    ``ledger``: a host's hot directory whose shipper ledger must have shipped every object,
    byte for byte.  ``where`` names the store in messages (default: its repr).  Raises
    ExportFailed at the first segment that does not verify, ReadbackError (or ColdError)
    when the export cannot run."""
    vouched_by: Path | None = Path(ledger) if ledger is not None else None
    where = where or repr(store)
    streams = [stream] if stream else list_streams_in(store)
    if not streams:
        raise ReadbackError(f"no segment objects under {where}: nothing was exported; "
                            "check --cold")
    exporter = Exporter(out, since, until, matches, progress, on_note, opener)
    tmp = Path(tempfile.mkdtemp(prefix="pipeline-export-"))
    try:
        for name in streams:
            vouched: dict[str, Entry] | None = None
            if vouched_by is not None:
                led = open_ledger_readonly(vouched_by)
                if led is None:
                    raise ReadbackError(f"no shipper ledger in {vouched_by} (.ship/ledger.sqlite)")
                try:
                    vouched = {e.segment: e for e in led.entries(stream=name)}
                finally:
                    led.close()
            segs, s0, h0 = _cold_segments(store, name, tmp, since, until, vouched)
            if not segs and s0 == 0:  # none at all (not merely outside the window)
                raise ReadbackError(f"stream {name!r} has no objects under {where}: "
                                    "nothing was exported; check --stream and --cold")
            exporter.stream(name, segs, s0, h0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exporter.result


def export_events(source: str | os.PathLike[str] | ColdStore, out: IO[bytes], *, stream: str | None = None,
                  since: float | None = None, until: float | None = None, match: Sequence[str] = (),
                  ledger: str | os.PathLike[str] | None = None, progress: ProgressFn | None = None,
                  on_note: Callable[[str], None] | None = None) -> ExportResult:
    """``pipeline export`` as a call: ``source`` is a hot-tier directory or an open cold
    store; ``match`` holds ``FIELD=VALUE`` specs (``parse_match``); ``since``/``until`` are
    epoch seconds.  ``ledger`` goes with a cold store only."""
    matches = [parse_match(m) for m in match]
    if isinstance(source, ColdStore):
        return export_cold(source, out, stream=stream, since=since, until=until, matches=matches, ledger=ledger,
                           progress=progress, on_note=on_note)
    if ledger is not None:
        raise ValueError("ledger goes with a cold store (a hot tier's own ledger is always used)")
    return export_hot(source, out, stream=stream, since=since, until=until, matches=matches, progress=progress,
                      on_note=on_note)
