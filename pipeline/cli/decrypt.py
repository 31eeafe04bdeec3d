"""``pipeline decrypt``: verify, then decrypt events with an auditor's age identity."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import add_verb, err


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "decrypt", summary="verify, then decrypt encrypted events with an auditor's age identity",
                 description="""
        Verify the segments (as 'pipeline verify' does: records, chain, seals, Merkle roots),
        then print every event as NDJSON, decrypted with the age identity in --identity
        (docs/ENCRYPTION.md).  Exit 0 when everything verified and opened, 1 when verification
        found problems or a ciphertext does not open at its position (nothing after it is
        printed), 2 when it could not run (a missing file, an identity that is not a
        recipient).""",
                 examples=[("every event of the hot tier",
                            "pipeline decrypt --identity auditor.key --hot /var/lib/worm"),
                           ("exported segments, one user, one day",
                            "pipeline decrypt --identity auditor.key seg-00000000000000000000.jsonl "
                            "--from 2026-12-01 --to 2026-12-02 --match user=alice")])
    p.add_argument("--identity", required=True, type=Path, help="age identity file (age-keygen's output)")
    p.add_argument("--hot", type=Path, help="hot-tier directory")
    p.add_argument("--stream", help="with --hot: one stream (default: every stream)")
    p.add_argument("files", nargs="*", type=Path, default=[],
                   help="segment files (downloaded and decompressed cold objects)")
    p.add_argument("--from", dest="since", help="only events at or after T (ISO 8601, or 7d/12h/30m ago)")
    p.add_argument("--to", dest="until", help="only events at or before T")
    p.add_argument("--match", action="append", default=[], metavar="FIELD=VALUE",
                   help="only events whose decrypted data FIELD (dotted path) equals VALUE (JSON literal or "
                   "string); repeat to require several")
    p.set_defaults(func=run)


def source_of(args: argparse.Namespace) -> Any:
    from pipeline.crypt.audit import Source

    if (args.hot is None) == (not args.files):
        raise ValueError("give either --hot DIR or segment files")
    return Source(hot=args.hot, stream=args.stream, files=tuple(args.files))


def run(args: argparse.Namespace) -> int:
    from pipeline.crypt.audit import Filter, NotVerified, decrypted_events
    from pipeline.crypt.reader import OpenError
    from pipeline.errors import PipelineError
    from pipeline.verify.export import data_matches, parse_match
    from pipeline.verify.tier import parse_time

    try:
        source = source_of(args)
        matches = [parse_match(m) for m in args.match]
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        err(str(exc))
        return EXIT_ERROR

    def matching(data: dict[str, Any]) -> bool:
        return data_matches(data, matches)

    out = sys.stdout.buffer
    tally: dict[str, int] = {}
    try:
        for event in decrypted_events(source, args.identity, Filter(since, until, matching if matches else None),
                                      tally):
            out.write(orjson.dumps(event) + b"\n")
    except NotVerified as exc:
        for f in exc.findings:
            err(f"{f.segment} seq {f.seq}: {f.reason}: {f.message}")
        err("verification failed: nothing was decrypted")
        return EXIT_FINDINGS
    except OpenError as exc:
        out.flush()
        err(f"{exc}; stopped: nothing after it was decrypted")
        return EXIT_FINDINGS
    except PipelineError as exc:
        err(str(exc))
        return EXIT_ERROR
    out.flush()
    # (a log written without encryption passes through: say so, rather than "decrypted")
    print(f"{sum(tally.values())} event(s): {tally.get('encrypted', 0)} decrypted, "
          f"{tally.get('clear', 0)} stored in clear", file=sys.stderr)
    return EXIT_OK
