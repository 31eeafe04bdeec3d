"""``pipeline export``: stream verified events as NDJSON, from the hot tier or from cold storage.

Each output line is the event's original record line, byte for byte (self-verifying: see
docs/FORMAT.md).  Events are released one SEGMENT at a time, only after that segment
verified completely: every record's hash, seq and link, the seal (counts, Merkle root,
frontiers), the link to the previous segment and, from cold storage, the stored object's
checksum and the decompressed segment's SHA-256 and Merkle root against the metadata.
Why not record by record: removing trailing records, replacing a seal, appending bytes
after it or truncating an object are only visible at the END of a segment, so a
record-by-record export would already have printed records of a segment later proven
wrong.  Until release, a segment's matching events wait in a spool file (bounded memory).
The first segment that does not verify stops the export: exit 1, with the segment, seq and
reason on stderr; nothing from it (or after it) is printed.

From the hot tier, a segment the shipper ledger knows must also be byte for byte what the
ledger recorded when it was sealed (a hot copy edited and re-chained after shipping
verifies on its own).  From cold storage, ``--ledger HOT_DIR`` adds the same check
against the host's ledger, and refuses objects it never shipped (docs/LEDGER.md).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import (
    add_retry_arg,
    add_verb,
    err,
    open_for_reading,
    refuse_wrong_hot,
    report_read_failure,
    streams_of,
)
from pipeline.cli._progress import Progress, progress_bar
from pipeline.cold import ColdError
from pipeline.cold.errors import redact_endpoint
from pipeline.crypt.reader import IdentityError, OpenError, RecordOpener, load_identities
from pipeline.hot.segment import list_segments
from pipeline.record import GENESIS_HASH, Kind, Record
from pipeline.ship.ledger import Entry, open_ledger_readonly
from pipeline.verify.chain import SegmentScan, file_sha256, scan_segment, stitch
from pipeline.verify.readback import ReadbackError, fetch_checked, list_streams_in, merkle_problem, stream_objects
from pipeline.verify.tier import parse_time, ts_epoch

SPOOL_MEMORY = 8 << 20


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "export", summary="stream verified events as NDJSON (stops at the first unverifiable record)",
                 description=__doc__ or "",
                 examples=[("last week's events of 'auth' from cold storage",
                            "pipeline export --cold s3://audit-logs/prod --stream auth --since 7d"),
                           ("one user's events from the hot tier",
                            "pipeline export --hot /var/lib/worm --match user=alice"),
                           ("from cold storage, checked against the host's shipper ledger",
                            "pipeline export --cold s3://audit-logs/prod --ledger /var/lib/worm")])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cold", help="cold store URL (s3://, az://, file://)")
    src.add_argument("--hot", type=Path, help="hot-tier directory")
    p.add_argument("--ledger", type=Path, metavar="HOT_DIR",
                   help="with --cold: the host's hot directory; every object must be a segment its shipper "
                   "ledger shipped, byte for byte (a forged object under a new key is refused)")
    p.add_argument("--stream", help="stream name (default: every stream)")
    p.add_argument("--since", help="only events at or after T (ISO 8601, or 7d/12h/30m ago)")
    p.add_argument("--until", help="only events at or before T")
    p.add_argument("--match", action="append", default=[], metavar="FIELD=VALUE",
                   help="only events whose data FIELD (dotted path) equals VALUE (JSON literal or string); "
                   "repeat to require several")
    p.add_argument("--identity", type=Path, help="decrypt encrypted events with this age identity file and print "
                   "them as 'pipeline decrypt' does (docs/ENCRYPTION.md); --match then applies to the decrypted data")
    add_retry_arg(p)
    p.set_defaults(func=run)


class ExportFailed(Exception):
    def __init__(self, segment: str, seq: int | None, reason: str, message: str) -> None:
        super().__init__(message)
        self.segment, self.seq, self.reason = segment, seq, reason


def _parse_matches(specs: list[str]) -> list[tuple[list[str], list[Any]]]:
    out = []
    for spec in specs:
        field, sep, value = spec.partition("=")
        if not sep or not field:
            raise ValueError(f"--match {spec!r}: use FIELD=VALUE")
        wanted: list[Any] = [value]
        with contextlib.suppress(orjson.JSONDecodeError):
            wanted.append(orjson.loads(value))
        out.append((field.split("."), wanted))
    return out


def _field(data: Any, path: list[str]) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


_MISSING = object()


class Exporter:
    def __init__(self, out: IO[bytes], since: float | None, until: float | None,
                 matches: list[tuple[list[str], list[Any]]], progress: Progress | None = None,
                 opener: RecordOpener | None = None) -> None:
        self.out = out
        self.opener = opener  # with --identity: events are decrypted (pipeline.crypt)
        self.progress = progress if progress is not None else Progress("export", enabled=False)
        self.since, self.until, self.matches = since, until, matches
        self.emitted = 0
        self.segments = 0

    def wanted(self, rec: Record, data: Any = _MISSING) -> bool:
        if rec.kind != Kind.EVENT.value:
            return False
        if data is _MISSING:
            data = rec.data
        if self.since is not None or self.until is not None:
            t = ts_epoch(rec.ts)
            if (self.since is not None and t < self.since) or (self.until is not None and t > self.until):
                return False
        for path, values in self.matches:
            v = _field(data, path)
            if v is _MISSING or not any(v == w and type(v) is type(w) for w in values):
                return False
        return True

    def stream(self, stream: str, segments: list[tuple[str, Callable[[], tuple[Path, list[tuple[str, str]]]],
                                                         Callable[[SegmentScan], tuple[str, str] | None]]],
               start_seq: int, start_hash: str | None) -> None:
        """``segments``: (name, fetch() -> (local path, problems), post(scan) -> problem or None)."""
        prev: SegmentScan | None = None
        held: tuple[SegmentScan, Any] | None = None  # an unsealed segment waits for the next one
        anchor_seq, anchor_hash = start_seq, start_hash
        prev_cleanup: Callable[[], None] | None = None
        self.progress.add_total(len(segments))
        for name, fetch, post in segments:
            path, problems = fetch()
            cleanup = _remover(path)
            if problems:
                raise ExportFailed(name, None, problems[0][0], problems[0][1])
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 (closed below)

            def collect(rec: Record, spool: Any = spool, name: str = name) -> None:
                if self.opener is not None:
                    self._collect_decrypted(rec, spool, name)
                elif self.wanted(rec):
                    spool.write(rec.line)

            if self.opener is not None:
                self.opener.begin(name)

            scan = scan_segment(path, stream, on_record=collect)
            if scan.findings:
                f = scan.findings[0]
                spool.close()
                raise ExportFailed(name, f.seq, f.reason, f.message)
            problem = post(scan)
            if problem:
                spool.close()
                raise ExportFailed(name, scan.first_seq, problem[0], problem[1])
            pair = [prev, scan] if prev is not None else [scan]
            rep = stitch(stream, pair, start_seq=prev.first_seq if prev and prev.first_seq is not None
                         else anchor_seq, start_hash=prev.first_prev if prev else anchor_hash)
            if rep.findings:
                f = rep.findings[0]
                spool.close()
                raise ExportFailed(f.segment, f.seq, f.reason, f.message)
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
            self.segments += 1
            self.progress.advance()
        if held is not None:
            # the newest segment, not sealed yet: its records are hash-chained and linked but no
            # seal covers them (the active segment)
            self.progress.note(f"export: note: {held[0].name} is the active (unsealed) segment of {stream}: its "
                               "events are verified by the hash chain only")
            self._release(held[1])

    def _collect_decrypted(self, rec: Record, spool: Any, name: str) -> None:
        assert self.opener is not None
        try:
            data = self.opener.open(rec)
        except OpenError as exc:
            raise ExportFailed(name, rec.seq, "does-not-open", str(exc)) from None
        if data is not None and self.wanted(rec, data):
            # the seq leads the line, as in a record line (_release reads it from there)
            spool.write(orjson.dumps({"seq": rec.seq, "stream": rec.stream, "ts": rec.ts,
                                      "segment": name.removesuffix(".zst"), "data": data}) + b"\n")

    def _release(self, spool: Any, limit_seq: int | None = None) -> None:
        spool.seek(0)
        if limit_seq is None:
            for line in spool:
                self.out.write(line)
                self.emitted += 1
        else:
            for line in spool:
                if orjson.loads(line[: line.index(b',"ts":')] + b"}")["seq"] < limit_seq:
                    self.out.write(line)
                    self.emitted += 1
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
        def fetch(p: Path = p) -> tuple[Path, list[tuple[str, str]]]:
            e = shipped.get(p.name)
            if e is None:
                return p, []
            size, sha = file_sha256(p)
            if (size, sha) != (e.size, e.sha256):
                return p, [("hot-altered", f"the hot copy is {size} bytes with SHA-256 {sha[:16]}…, but the ledger "
                            f"recorded {e.size} bytes, {e.sha256[:16]}… when it was sealed ({e.state}): export it "
                            "with --cold and run pipeline verify-tier")]
            return p, []

        out.append((p.name, fetch, lambda scan: None))
    return out


def _ledger_problem(name: str, sha256: str, size: int, shipped: dict[str, Entry] | None) -> tuple[str, str] | None:
    """With --ledger: a cold object must be a segment the host's shipper shipped, byte for
    byte (docs/LEDGER.md)."""
    if shipped is None:
        return None
    e = shipped.get(name)
    if e is None:
        return ("unshipped-object", f"{name} is in cold storage but the ledger never shipped it: forged, or "
                "uploaded by someone else")
    if (e.sha256, e.size) != (sha256, size):
        return ("hot-cold-mismatch", f"{name} decompresses to {size} bytes with SHA-256 {sha256[:16]}…, the ledger "
                f"shipped {e.size} bytes, {e.sha256[:16]}…")
    return None


def _cold_segments(store: Any, stream: str, tmp: Path, since: float | None, until: float | None,
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
        def fetch(s: Any = s) -> tuple[Path, list[tuple[str, str]]]:
            d = Path(tempfile.mkdtemp(dir=tmp))
            checked = fetch_checked(store, s, d)
            fr = checked.fetched
            problem = _ledger_problem(s.name, fr.sha256, fr.size, shipped) if fr.ok else None
            return fr.path, checked.problems + ([problem] if problem else [])

        out.append((s.name, fetch, lambda scan, s=s: merkle_problem(s, scan)))
    return out, start_seq, start_hash


def run(args: argparse.Namespace) -> int:
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
        matches = _parse_matches(args.match)
    except ValueError as exc:
        err(str(exc))
        return EXIT_ERROR
    if args.ledger is not None and args.cold is None:
        err("--ledger goes with --cold (with --hot the ledger in that directory is always used)")
        return EXIT_ERROR
    opener = None
    if args.identity is not None:
        try:
            opener = RecordOpener(load_identities(args.identity))
        except IdentityError as exc:
            err(str(exc))
            return EXIT_ERROR
    out = sys.stdout.buffer
    progress = progress_bar("export")
    exporter = Exporter(out, since, until, matches, progress, opener)
    tmp = Path(tempfile.mkdtemp(prefix="pipeline-export-"))
    try:
        if args.hot is not None:
            refused = refuse_wrong_hot(args.hot, args.stream)
            if refused is not None:
                return refused
            streams = streams_of(args.hot, args.stream)
            ledger = open_ledger_readonly(args.hot)
            for stream in streams:
                start = ledger.evicted_prefix(stream) if ledger else None
                if start:
                    progress.note(f"export: note: records of {stream} before seq {start[0]} were evicted from the "
                                  "hot tier; export them with --cold")
                shipped = {e.segment: e for e in ledger.entries(stream=stream)} if ledger else {}
                exporter.stream(stream, _hot_segments(args.hot, stream, shipped), start[0] if start else 0,
                                start[1] if start else None)
            if ledger:
                ledger.close()
        else:
            store = open_for_reading(args.cold, args)
            try:
                streams = [args.stream] if args.stream else list_streams_in(store)
                if not streams:
                    err(f"no segment objects under {redact_endpoint(args.cold)}: nothing was exported; check --cold")
                    return EXIT_ERROR
                for stream in streams:
                    vouched: dict[str, Entry] | None = None
                    if args.ledger is not None:
                        led = open_ledger_readonly(args.ledger)
                        if led is None:
                            err(f"no shipper ledger in {args.ledger} (.ship/ledger.sqlite)")
                            return EXIT_ERROR
                        vouched = {e.segment: e for e in led.entries(stream=stream)}
                        led.close()
                    segs, s0, h0 = _cold_segments(store, stream, tmp, since, until, vouched)
                    if not segs and s0 == 0:  # none at all (not merely outside the window)
                        err(f"stream {stream!r} has no objects under {redact_endpoint(args.cold)}: nothing was "
                            "exported; check --stream and --cold")
                        return EXIT_ERROR
                    exporter.stream(stream, segs, s0, h0)
            finally:
                store.close()
        out.flush()
        return EXIT_OK
    except ExportFailed as exc:
        progress.close()  # before the message, which would otherwise follow the bar on its line
        out.flush()
        where = f" at seq {exc.seq}" if exc.seq is not None else ""
        err(f"export stopped: segment {exc.segment}{where} does not verify ({exc.reason}): {exc}; nothing from "
            "this segment or later was emitted")
        return EXIT_FINDINGS
    except IdentityError as exc:
        progress.close()
        out.flush()
        err(f"export stopped: {exc}")
        return EXIT_ERROR
    except (ReadbackError, ColdError, OSError) as exc:
        progress.close()
        return report_read_failure(exc)
    finally:
        progress.close()
        shutil.rmtree(tmp, ignore_errors=True)
