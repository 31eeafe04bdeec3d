"""Helpers shared by CLI verbs."""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from pipeline.hot.segment import list_streams

DURATION_HELP = "a duration like 90s, 5m, 1.5h, 7d (a bare number is seconds)"


def add_verb(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, *, summary: str, description: str,
             examples: Sequence[tuple[str, str]]) -> argparse.ArgumentParser:
    """Register a verb the way every verb is registered: ``summary`` is its line in
    ``pipeline --help``, ``description`` opens its own ``--help``, and ``examples`` (what
    it does, the command line) close it.  tests/cli/test_help.py runs every example
    through the parser, so an example cannot drift from the flags."""
    lines = ["examples:"]
    for what, command in examples:
        lines += [f"  # {what}", f"  {command}"]
    return sub.add_parser(name, help=summary, description=textwrap.dedent(description).strip(),
                          epilog="\n".join(lines), formatter_class=argparse.RawDescriptionHelpFormatter)


def duration(text: str) -> float:
    """argparse type for every duration flag: the configuration file's syntax
    (pipeline.config.parse_duration: 30s, 5m, 1h, 7d, 250ms) and, for scripts written
    before units were required, a bare number of seconds."""
    from pipeline.config import parse_duration

    try:
        seconds = float(text)
    except ValueError:
        try:
            return parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"expected {DURATION_HELP}, got {text!r}")
    return seconds


def add_hot_args(p: argparse.ArgumentParser, *, stream_required: bool = False) -> None:
    p.add_argument("--hot", required=True, type=Path, help="hot-tier directory")
    p.add_argument("--stream", required=stream_required, help="stream name" + ("" if stream_required else
                                                                               " (default: every stream)"))


def streams_of(hot: Path, stream: str | None) -> list[str]:
    if stream:
        return [stream]
    return list_streams(hot)


def err(message: str) -> None:
    from pipeline.cold.errors import mask_credentials

    # a message may quote a configured URL: never print its user-info or a SAS signature
    print(f"pipeline: {mask_credentials(message)}", file=sys.stderr)


def report_read_failure(exc: BaseException) -> int:
    """Print why reading cold storage back could not go on (export, restore) and return
    exit code 2: a ColdError with its diagnostics, anything else (ReadbackError, OSError)
    with its message."""
    from pipeline.cli import EXIT_ERROR
    from pipeline.cold import ColdError

    if isinstance(exc, ColdError):
        print(exc.diagnostics(), file=sys.stderr)
    else:
        err(str(exc))
    return EXIT_ERROR
