"""Helpers shared by CLI verbs: argument groups, path checks, error lines."""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.format.layout import hot_tier_problem, stream_dirs, stream_problem

if TYPE_CHECKING:
    from pipeline.cold import ColdSettings, ColdStore

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


def _retry_duration(text: str) -> float:
    from pipeline.config import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a duration above zero, like 30s or 5m")
    return seconds


def add_retry_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retry-max-seconds", type=_retry_duration, default=None, metavar="DURATION",
                   help="how long to keep retrying an unreachable or throttling cold store, in total for "
                   "the command (default 60s; cold.retry_max_seconds in the configuration)")


def streams_of(hot: Path, stream: str | None) -> list[str]:
    if stream:
        return [stream]
    return stream_dirs(hot)


def check_hot(hot: Path, stream: str | None = None) -> str | None:
    """One line naming why ``hot`` (and ``stream``, when given) is not what a verb expects,
    or None.  The rule itself lives in pipeline.format.layout."""
    return hot_tier_problem(hot) or (stream_problem(hot, stream) if stream else None)


def refuse_wrong_hot(hot: Path, stream: str | None = None) -> int | None:
    """Print the problem and return exit code 2 if ``hot``/``stream`` is not a hot tier /
    an existing stream; None when it is."""
    from pipeline.cli import EXIT_ERROR

    problem = check_hot(hot, stream)
    if problem is None:
        return None
    err(problem)
    return EXIT_ERROR


def err(message: str) -> None:
    from pipeline.cold.errors import mask_credentials

    # a message may quote a configured URL: never print its user-info or a SAS signature
    print(f"pipeline: {mask_credentials(message)}", file=sys.stderr)


def read_settings(args: argparse.Namespace) -> ColdSettings:
    """Settings for a verb that only reads the store back: any bucket opens (the lock
    judgement is the verb's own), with the command's retry budget."""
    from pipeline.cold import ColdSettings

    return with_retry_budget(ColdSettings(allow_unlocked=True), args)


def with_retry_budget(settings: ColdSettings, args: argparse.Namespace) -> ColdSettings:
    import dataclasses

    seconds = getattr(args, "retry_max_seconds", None)
    return settings if seconds is None else dataclasses.replace(settings, retry_max_seconds=seconds)


def open_for_reading(url: str, args: argparse.Namespace) -> ColdStore:
    """Open a store that a verb only reads (or marks): a file:// store must already exist,
    since opening one creates its directory, and a mistyped path must not become an empty
    store that then "has no objects"."""
    from urllib.parse import unquote, urlsplit

    from pipeline.cold import ColdConfigError, open_store

    parts = urlsplit(url)
    if parts.scheme.lower() == "file" and parts.path and not Path(unquote(parts.path)).is_dir():
        raise ColdConfigError(f"cold directory {unquote(parts.path)} does not exist",
                              action="check the --cold URL (nothing was created)")
    return open_store(url, read_settings(args))
