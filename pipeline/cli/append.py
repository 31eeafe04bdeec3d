"""``pipeline append``: append NDJSON events from standard input."""

from __future__ import annotations

import argparse
import re
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable
from typing import IO

import orjson

from pipeline.cli import EXIT_ERROR, EXIT_OK
from pipeline.cli._common import add_hot_args, err, refuse_wrong_hot
from pipeline.hot.factory import open_hotlog
from pipeline.hot.writer import DURABILITY_MODES, HotLog, HotLogError
from pipeline.sanitise import DEFAULT_SANITISER, InvalidEvent, Sanitiser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("append", help="append NDJSON events from stdin to a stream")
    add_hot_args(p, stream_required=True)
    p.add_argument("--durability", choices=DURABILITY_MODES, default="group")
    p.add_argument("--seal", action="store_true", help="seal the segment after appending")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """All or nothing: every line is validated (and sanitised) before the first is stored, so a
    script that retries after a refusal never stores a line twice.  Nothing is created (hot
    directory, stream) unless at least one event is stored."""
    with tempfile.TemporaryFile() as spool:
        count, bad = _validate_all(sys.stdin.buffer, spool, DEFAULT_SANITISER)
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
            refused = refuse_wrong_hot(args.hot, args.stream)  # --seal alone: only an existing stream
            if refused is not None:
                return refused
        spool.seek(0)
        return _store(args, spool, count, lambda: open_hotlog(args.hot, args.stream, durability=args.durability,
                                                             heartbeat_interval=0))


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


def _store(args: argparse.Namespace, spool: IO[bytes], count: int, open_log: Callable[[], HotLog]) -> int:
    """Append the ``count`` validated events in ``spool`` to the log ``open_log`` opens
    (this creates the stream on its first event)."""
    if args.hot.exists() and not args.hot.is_dir():
        err(f"--hot {args.hot} is a file, not a hot-tier directory: nothing was stored")
        return EXIT_ERROR
    try:
        log = open_log()
    except (HotLogError, OSError, ValueError) as exc:
        err(str(exc))
        return EXIT_ERROR
    last = None
    try:
        for _ in range(count):
            (n,) = _LEN.unpack(spool.read(_LEN.size))
            last = log.append_prepared(spool.read(n), wait=False)
        log.sync()
        if args.seal:
            log.seal()
    except HotLogError as exc:
        err(exc.diagnostics())
        log.close(seal=False)
        return EXIT_ERROR
    log.close(seal=False)
    summary: dict[str, int | str] = {"accepted": count, "rejected": 0}
    if last is not None:
        summary["last_seq"] = last.seq
        summary["last_hash"] = last.hash
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    return EXIT_OK
