"""``pipeline append``: append NDJSON events from standard input."""

from __future__ import annotations

import argparse
import sys

import orjson

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import add_hot_args, add_verb, err
from pipeline.hot.factory import open_hotlog
from pipeline.hot.writer import DURABILITY_MODES, HotLogError
from pipeline.sanitise import DEFAULT_SANITISER, InvalidEvent


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "append", summary="append NDJSON events from stdin to a stream", description="""
        Append events to a stream of the hot tier: one JSON object per line on standard
        input, each stored as a hash-chained record (docs/FORMAT.md).  Prints a JSON summary
        (accepted, rejected, last seq and hash).

        Lines are stored in order as they are read.  A line that is refused (not a JSON
        object, or outside the JSON profile of docs/FORMAT.md §1.1) is reported on stderr
        with its line number and the exit code is 1, but the good lines before and after it
        ARE stored: do not re-send the same input after a failure (its good events would be
        stored twice); send only the corrected lines.""",
                 examples=[("append the events in events.ndjson to the stream 'auth', fsync each",
                            "pipeline append --hot /var/lib/worm --stream auth --durability fsync < events.ndjson"),
                           ("append and seal the segment so that it can be shipped now",
                            "pipeline append --hot /var/lib/worm --stream auth --seal < events.ndjson")])
    add_hot_args(p, stream_required=True)
    p.add_argument("--durability", choices=DURABILITY_MODES, default="group",
                   help="fsync: each record; group: records in batches (default); os: left to the kernel")
    p.add_argument("--seal", action="store_true", help="seal the segment after appending")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        log = open_hotlog(args.hot, args.stream, durability=args.durability, heartbeat_interval=0)
    except (HotLogError, OSError, ValueError) as exc:
        err(str(exc))
        return EXIT_ERROR
    accepted = rejected = 0
    last = None
    try:
        for lineno, raw in enumerate(sys.stdin.buffer, start=1):
            if not raw.strip():
                continue
            try:
                data = DEFAULT_SANITISER.prepare_json(raw)
            except InvalidEvent as exc:
                rejected += 1
                err(f"line {lineno}: {exc}")
                continue
            last = log.append_prepared(data, wait=False)
            accepted += 1
        log.sync()
        if args.seal:
            log.seal()
    except HotLogError as exc:
        err(exc.diagnostics())
        log.close(seal=False)
        return EXIT_ERROR
    log.close(seal=False)
    summary: dict[str, int | str] = {"accepted": accepted, "rejected": rejected}
    if last is not None:
        summary["last_seq"] = last.seq
        summary["last_hash"] = last.hash
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    return EXIT_FINDINGS if rejected else EXIT_OK
