"""What a hot tier and a stream directory look like: the one place commands decide whether a
path is what they expect (docs/ARCHITECTURE.md, "Recognising a hot tier").

- A **stream directory** is a directory whose name is a valid stream name and which holds at
  least one segment file (``seg-<first seq>[.<attempt>].jsonl``), the writer's ``head.json``
  or its ``LOCK`` file.  The writer creates ``LOCK`` when it opens a stream, so a stream
  exists from its first append on; a stream whose segments were all shipped and evicted
  keeps ``head.json`` and ``LOCK``.
- A **hot tier** is a directory that holds the shipper's ledger directory (``.ship/``) or at
  least one stream directory.  Other entries (a ``lost+found``, a README) are ignored: they
  are neither streams nor a reason to refuse.

Commands that read or change a hot tier refuse any other path (a file, an empty directory,
a repository, a typo) with one line naming the problem and the fix, and create nothing
(docs/README "Exit codes and wrong paths").  Creating a stream is explicit: ``pipeline
append`` (its first append) or the sidecar's ingest.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.hot.segment import parse_segment_name
from pipeline.hot.writer import HEAD_FILE, LOCK_FILE
from pipeline.record import validate_stream_name
from pipeline.ship.ledger import LEDGER_DIR


def is_stream_dir(path: str | os.PathLike[str]) -> bool:
    d = Path(path)
    try:
        validate_stream_name(d.name)
    except ValueError:
        return False
    try:
        with os.scandir(d) as it:
            for entry in it:
                if entry.name in (HEAD_FILE, LOCK_FILE) or parse_segment_name(entry.name) is not None:
                    return True
    except (NotADirectoryError, FileNotFoundError, PermissionError):
        return False
    return False


def stream_dirs(hot: str | os.PathLike[str]) -> list[str]:
    """Names of the stream directories in ``hot``, sorted."""
    d = Path(hot)
    try:
        with os.scandir(d) as it:
            names = [e.name for e in it if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    except (NotADirectoryError, FileNotFoundError, PermissionError):
        return []
    return sorted(n for n in names if is_stream_dir(d / n))


def is_hot_tier(path: str | os.PathLike[str]) -> bool:
    d = Path(path)
    return d.is_dir() and ((d / LEDGER_DIR).is_dir() or bool(stream_dirs(d)))


def hot_tier_problem(path: str | os.PathLike[str]) -> str | None:
    """None if ``path`` is a hot tier, else one line naming what it is and the fix."""
    d = Path(path)
    if not d.exists():
        return f"hot directory {d} does not exist: check the --hot path (nothing was created)"
    if not d.is_dir():
        return f"--hot {d} is a file, not a hot-tier directory: give the directory that holds the stream directories"
    if is_hot_tier(d):
        return None
    try:
        empty = not any(os.scandir(d))
    except PermissionError:
        return f"cannot read {d}: permission denied (run as the user that owns the hot tier)"
    what = "an empty directory" if empty else "a directory with no stream directories and no .ship/ ledger"
    return (f"{d} is not a hot tier ({what}): check the --hot path; a hot tier holds one directory per "
            "stream (segments, head.json, LOCK)")


def stream_problem(hot: str | os.PathLike[str], stream: str) -> str | None:
    """None if ``hot/stream`` is a stream directory, else one line naming the problem and the fix."""
    try:
        validate_stream_name(stream)
    except ValueError as exc:
        return str(exc)
    if is_stream_dir(Path(hot) / stream):
        return None
    known = stream_dirs(hot)
    listing = ", ".join(known[:10]) + (" …" if len(known) > 10 else "") if known else "none"
    return (f"stream {stream!r} does not exist in {hot} (streams there: {listing}): check --stream; "
            "a stream is created by its first append")
