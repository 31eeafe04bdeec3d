"""Helpers shared by CLI verbs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.hot.segment import list_streams


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
