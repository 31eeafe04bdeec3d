"""``pipeline append``: append NDJSON events from standard input.

The events go through the stream's sanitiser with the ``[sanitise]`` rules of ``--config
FILE`` (and ``PIPELINE_SANITISE_*``), the same rules the sidecar applies, so a custom rule
redacts here too.  With ``--config`` the hot directory and stream default to the file's.
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

import orjson

from pipeline.cli import EXIT_ERROR, EXIT_OK
from pipeline.cli._common import add_verb, err, refuse_wrong_hot
from pipeline.config import Config
from pipeline.hot.writer import DURABILITY_MODES, HotLog
from pipeline.sanitise import InvalidEvent, Sanitiser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "append", summary="append NDJSON events from stdin to a stream", description="""
        Append events to a stream of the hot tier: one JSON object per line on standard
        input, each sanitised (the [sanitise] rules of --config and PIPELINE_SANITISE_*, as
        the sidecar applies them) and stored as a hash-chained record (docs/FORMAT.md).
        Prints a JSON summary (accepted, rejected, last seq and hash).  With --config, the
        hot directory and stream default to the file's.

        All or nothing: every line is checked before the first is stored.  If any line is
        refused (not a JSON object, or outside the JSON profile of docs/FORMAT.md §1.1),
        each refused line is named on stderr, NOTHING is stored (no directory or stream is
        created either) and the exit code is 2: fix the lines and send the whole input
        again, without risk of storing an event twice.""",
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
    """All or nothing: every line is validated (and sanitised) before the first is stored, so a
    script that retries after a refusal never stores a line twice.  Nothing is created (hot
    directory, stream) unless at least one event is stored."""
    from pipeline.hot.factory import open_configured_hotlog

    if args.config is None and (args.hot is None or args.stream is None):
        err("--hot and --stream are required without --config")
        return EXIT_ERROR
    cfg, hot, stream = load_for_writing(args)  # a ConfigError is answered by the CLI (exit 2)
    # the configured [sanitise] rules: what the sidecar's log would store, redacted the same way
    sanitiser = cfg.sanitise.sanitiser(cfg.ingest.max_event_bytes)
    with tempfile.TemporaryFile() as spool:
        count, bad = _validate_all(sys.stdin.buffer, spool, sanitiser)
        if bad:
            for lineno, reason in bad[:MAX_REPORTED]:
                err(f"line {lineno}: {reason}")
            more = f" (and {len(bad) - MAX_REPORTED} more)" if len(bad) > MAX_REPORTED else ""
            err(f"{len(bad)} line(s) refused{more}: nothing was stored; fix them and send the whole input again")
            return EXIT_ERROR
        if count == 0 and not args.seal:
            sys.stdout.write(orjson.dumps({"accepted": 0, "rejected": 0}).decode() + "\n")
            return EXIT_OK
        if count == 0:
            refused = refuse_wrong_hot(hot, stream)  # --seal alone: only an existing stream
            if refused is not None:
                return refused
        spool.seek(0)
        return _store(args, hot, spool, count, lambda: open_configured_hotlog(
            cfg, sanitiser=sanitiser, durability=args.durability, heartbeat_interval=0))


MAX_REPORTED = 20
_LEN = struct.Struct(">I")


def _validate_all(lines: Iterable[bytes], spool: IO[bytes], sanitiser: Sanitiser) -> tuple[int, list[tuple[int, str]]]:
    """Prepare every non-blank line into ``spool`` (length-prefixed; memory stays bounded
    whatever the input size).  Returns (events, [(line number, reason)])."""
    count = 0
    bad: list[tuple[int, str]] = []
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            data = sanitiser.prepare_json(raw)
        except InvalidEvent as exc:
            bad.append((lineno, plain_reason(exc)))
            continue
        if not bad:  # after the first refusal only validation goes on: nothing will be stored
            spool.write(_LEN.pack(len(data)))
            spool.write(data)
        count += 1
    return count, bad


def plain_reason(exc: InvalidEvent) -> str:
    """The refusal in the user's terms: the JSON parser's own wording ("invalid literal,
    expected 'null'") is replaced by where the line stops being JSON."""
    if exc.reason == "bad-json":
        m = re.search(r"column (\d+)", exc.detail)
        where = f" (at character {m.group(1)})" if m else ""
        return f"invalid event (bad-json): not valid JSON{where}: each line must be one JSON object"
    return str(exc)


def _store(args: argparse.Namespace, hot: Path, spool: IO[bytes], count: int, open_log: Callable[[], HotLog]) -> int:
    """Append the ``count`` validated events in ``spool`` to the log ``open_log`` opens
    (this creates the stream on its first event)."""
    if hot.exists() and not hot.is_dir():
        err(f"--hot {hot} is a file, not a hot-tier directory: nothing was stored")
        return EXIT_ERROR
    try:
        log = open_log()
    except (OSError, ValueError) as exc:
        err(str(exc))
        return EXIT_ERROR
    last = None
    try:  # a HotLogError is answered by the CLI (exit 2): nothing half-written, the chain stays valid
        for _ in range(count):
            (n,) = _LEN.unpack(spool.read(_LEN.size))
            last = log.append_prepared(spool.read(n), wait=False)
        log.sync()
        if args.seal:
            log.seal()
    finally:
        log.close(seal=False)
    summary: dict[str, int | str] = {"accepted": count, "rejected": 0}
    if last is not None:
        summary["last_seq"] = last.seq
        summary["last_hash"] = last.hash
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    return EXIT_OK
