"""``pipeline hold``: place or clear a legal hold on the cold copies of a seq range.

A legal hold keeps an object undeletable regardless of its retention date (litigation,
investigation); it is independent of the COMPLIANCE retention set at upload.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.cli import EXIT_ERROR, EXIT_OK
from pipeline.cli._common import add_retry_arg, add_verb, err, open_for_reading
from pipeline.cold.errors import redact_endpoint
from pipeline.format.layout import segment_of_key, stream_prefix
from pipeline.format.segment import parse_segment_name


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(subparsers, "hold", summary="place or clear a legal hold on cold segments of a seq range",
                 description=__doc__ or "",
                 examples=[("see which segments holding records 1000-2000 of 'auth' would be held",
                            "pipeline hold --cold s3://audit-logs/prod --stream auth --from-seq 1000 --to-seq 2000 "
                            "--on --dry-run"),
                           ("clear the hold on the whole stream",
                            "pipeline hold --cold s3://audit-logs/prod --stream auth --off")])
    p.add_argument("--cold", required=True, help="cold store URL (s3://, az://, file://)")
    p.add_argument("--stream", required=True, help="stream name")
    p.add_argument("--from-seq", type=int, default=0, help="first seq of the range (default 0)")
    p.add_argument("--to-seq", type=int, default=None, help="last seq of the range (default: no limit)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--on", dest="on", action="store_true", help="place the legal hold")
    group.add_argument("--off", dest="on", action="store_false", help="clear the legal hold")
    p.add_argument("--dry-run", action="store_true", help="list the segments that would change")
    add_retry_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.to_seq is not None and args.to_seq < args.from_seq:
        print("hold: --to-seq is before --from-seq", file=sys.stderr)
        return EXIT_ERROR
    try:
        # Holds need no lock check of their own and never upload: allow any endpoint here;
        # the service refuses holds where they cannot exist.
        store = open_for_reading(args.cold, args)
        prefix = stream_prefix("", args.stream)
        # A segment covers [its first seq, the next segment's first seq - 1]; the names
        # alone tell which segments overlap the range, without reading any object.
        starts: list[tuple[int, str]] = []
        for info in store.list(prefix):
            parsed = segment_of_key(info.key)
            if parsed is None or parsed[0] != args.stream:
                continue
            seq_attempt = parse_segment_name(parsed[1])
            if seq_attempt is not None:
                starts.append((seq_attempt[0], info.key))
        starts.sort()
        chosen = []
        for i, (first, key) in enumerate(starts):
            last = starts[i + 1][0] - 1 if i + 1 < len(starts) else None
            if args.to_seq is not None and first > args.to_seq:
                break
            if last is not None and last < args.from_seq:
                continue
            chosen.append(key)
        if not chosen:
            # nothing was done, so nothing can be reported as done: could not run (2)
            if not starts:
                err(f"stream {args.stream!r} has no objects in {redact_endpoint(args.cold)}: check --stream and "
                    "--cold (nothing was changed)")
            else:
                err(f"no cold segment of stream {args.stream!r} overlaps seq {args.from_seq}.."
                    f"{'' if args.to_seq is None else args.to_seq}: its segments start at seq {starts[0][0]}; "
                    "check --from-seq/--to-seq (nothing was changed)")
            return EXIT_ERROR
        state = "on" if args.on else "off"
        for key in chosen:
            if args.dry_run:
                print(f"would turn legal hold {state}: {key}")
                continue
            store.set_legal_hold(key, args.on)
            print(f"legal hold {state}: {key}")
        store.close()
        return EXIT_OK
    except ValueError as exc:  # a ColdError is answered by the CLI (exit 2)
        print(f"hold: {exc}", file=sys.stderr)
        return EXIT_ERROR
