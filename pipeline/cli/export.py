"""``pipeline export``: stream verified events as NDJSON, from the hot tier or from cold storage.

Each output line is the event's original record line, byte for byte (self-verifying: see
docs/FORMAT.md).  Events are released one SEGMENT at a time, only after that segment
verified completely (records, seal, link to the previous segment and, from cold storage,
the stored object's checksum and the decompressed segment against the metadata).  The
first segment that does not verify stops the export: exit 1, with the segment, seq and
reason on stderr; nothing from it (or after it) is printed.

From the hot tier, a segment the shipper ledger knows must also be byte for byte what the
ledger recorded when it was sealed.  From cold storage, ``--ledger HOT_DIR`` adds the same
check against the host's ledger, and refuses objects it never shipped (docs/LEDGER.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import add_retry_arg, add_verb, err, open_for_reading
from pipeline.cli._progress import progress_bar
from pipeline.cold.errors import redact_endpoint
from pipeline.verify.export import SPOOL_MEMORY as SPOOL_MEMORY  # moved to the library; old import path
from pipeline.verify.export import Exporter as Exporter
from pipeline.verify.export import ExportFailed as ExportFailed
from pipeline.verify.export import export_cold, export_hot, parse_match
from pipeline.verify.tier import parse_time


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


def run(args: argparse.Namespace) -> int:
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
        matches = [parse_match(m) for m in args.match]
    except ValueError as exc:
        err(str(exc))
        return EXIT_ERROR
    if args.ledger is not None and args.cold is None:
        err("--ledger goes with --cold (with --hot the ledger in that directory is always used)")
        return EXIT_ERROR
    opener = None
    if args.identity is not None:
        from pipeline.crypt.reader import RecordOpener, load_identities

        opener = RecordOpener(load_identities(args.identity))  # IdentityError: the CLI's one handler, exit 2
    out = sys.stdout.buffer
    progress = progress_bar("export")
    report = progress.phase if progress.enabled else None
    try:
        if args.hot is not None:
            export_hot(args.hot, out, stream=args.stream, since=since, until=until, matches=matches,
                       progress=report, on_note=progress.note, opener=opener)
        else:
            store = open_for_reading(args.cold, args)
            try:
                export_cold(store, out, stream=args.stream, since=since, until=until, matches=matches,
                            ledger=args.ledger, progress=report, on_note=progress.note,
                            where=redact_endpoint(args.cold), opener=opener)
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
    finally:
        progress.close()
        out.flush()


