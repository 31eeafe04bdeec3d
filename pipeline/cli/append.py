"""``pipeline append``: append NDJSON events from standard input.

The events go through the stream's sanitiser with the ``[sanitise]`` rules of ``--config
FILE`` (and ``PIPELINE_SANITISE_*``), the same rules the sidecar applies, so a custom rule
redacts here too.  With ``--config`` the hot directory and stream default to the file's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import add_verb, err
from pipeline.config import Config
from pipeline.hot.writer import DURABILITY_MODES, HotLogError
from pipeline.sanitise import InvalidEvent


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "append", summary="append NDJSON events from stdin to a stream", description="""
        Append events to a stream of the hot tier: one JSON object per line on standard
        input, each sanitised (the [sanitise] rules of --config and PIPELINE_SANITISE_*, as
        the sidecar applies them) and stored as a hash-chained record (docs/FORMAT.md).
        Prints a JSON summary (accepted, rejected, last seq and hash).  With --config, the
        hot directory and stream default to the file's.

        Lines are stored in order as they are read.  A line that is refused (not a JSON
        object, or outside the JSON profile of docs/FORMAT.md §1.1) is reported on stderr
        with its line number and the exit code is 1, but the good lines before and after it
        ARE stored: do not re-send the same input after a failure (its good events would be
        stored twice); send only the corrected lines.""",
                 examples=[("append the events in events.ndjson to the stream 'auth', fsync each",
                            "pipeline append --hot /var/lib/worm --stream auth --durability fsync < events.ndjson"),
                           ("with the sidecar's redaction rules, hot directory and stream, and seal",
                            "pipeline append --config /etc/worm/pipeline.toml --seal < events.ndjson")])
    p.add_argument("--hot", type=Path, help="hot-tier directory (required without --config)")
    p.add_argument("--stream", help="stream name (required without --config)")
    p.add_argument("--config", type=Path, default=None,
                   help="TOML configuration whose [sanitise] rules (and [hot] dir and stream) apply")
    p.add_argument("--durability", choices=DURABILITY_MODES, default="group",
                   help="fsync: each record; group: records in batches (default); os: left to the kernel")
    p.add_argument("--seal", action="store_true", help="seal the segment after appending")
    p.set_defaults(func=run)


def load_for_writing(args: argparse.Namespace) -> tuple[Config, Path, str]:
    """The configuration for a verb that writes without the sidecar: ``--config`` (plus the
    environment), or, without it, only the ``PIPELINE_SANITISE_*`` variables.  Returns
    (config, hot dir, stream); raises ConfigError or ValueError."""
    from pipeline.config import load_config

    if args.config is not None:
        environ: dict[str, str] = dict(os.environ)
        if args.hot is not None:
            environ["PIPELINE_HOT_DIR"] = str(args.hot)
        if args.stream is not None:
            environ["PIPELINE_HOT_STREAM"] = args.stream
        cfg = load_config(args.config, environ)
    else:
        if args.hot is None or args.stream is None:
            raise ValueError("--hot and --stream are required without --config")
        environ = {k: v for k, v in os.environ.items() if k.startswith("PIPELINE_SANITISE_")}
        environ.update(PIPELINE_HOT_DIR=str(args.hot), PIPELINE_HOT_STREAM=args.stream)
        cfg = load_config(None, environ)
    return cfg, cfg.hot.dir, cfg.hot.stream


def run(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError
    from pipeline.hot.factory import open_configured_hotlog

    try:
        cfg, _hot, _stream = load_for_writing(args)
    except ConfigError as exc:
        err(exc.diagnostics())
        return EXIT_ERROR
    except ValueError as exc:
        err(str(exc))
        return EXIT_ERROR
    try:
        log = open_configured_hotlog(cfg, durability=args.durability, heartbeat_interval=0)
    except (HotLogError, OSError, ValueError) as exc:
        err(str(exc))
        return EXIT_ERROR
    sanitiser = log.sanitiser
    accepted = rejected = 0
    last = None
    try:
        for lineno, raw in enumerate(sys.stdin.buffer, start=1):
            if not raw.strip():
                continue
            try:
                data = sanitiser.prepare_json(raw)
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
