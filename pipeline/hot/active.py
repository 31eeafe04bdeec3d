"""Segment state: the segment being written, and the files of a stream's segments.

A ``Segment`` is the writer's view of one segment file while it is open: its descriptor,
where it starts in the chain and in the stream's Merkle tree, how many bytes and records
are queued for it, and its own compact range.  ``SegmentFiles`` creates, protects, closes
and explains segment files; it holds no lock: the chain state (``pipeline.hot.chain``)
calls it under its lock, the flusher for the segments whose runs it has taken.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.format import attr, merkle
from pipeline.format.files import fsync_dir
from pipeline.format.layout import segment_name
from pipeline.format.record import ts_epoch
from pipeline.hot.errors import HotLogError

# fsync_dir is pipeline.format.files's, re-exported here for old imports
__all__ = ["Segment", "SegmentFiles", "fsync_dir", "ts_to_epoch", "window_of"]


@dataclass(slots=True)
class Segment:
    path: Path
    fd: int
    first_seq: int
    window: int
    first_ts: str
    start_frontier: list[bytes] = field(default_factory=list)
    size: int = 0  # bytes queued so far (written + pending)
    count: int = 0
    cr: merkle.CompactRange = field(default_factory=lambda: merkle.CompactRange())
    dir_synced: bool = False
    append_only: bool = False
    closed: bool = False
    name: str = ""
    first_prev: bytes = b""  # prev of the segment's first record (head.json names where it starts)

    def __post_init__(self) -> None:
        self.name = self.path.name


def window_of(epoch_s: float, window: float) -> int:
    return int(epoch_s // window) if window > 0 else 0


def ts_to_epoch(ts: str) -> float:
    """A segment's first timestamp as POSIX seconds, for its time window; now for a time
    ``ts_epoch`` refuses (only a forged record or a broken clock has one): the segment then
    belongs to the current window rather than stopping the writer."""
    try:
        return ts_epoch(ts)
    except ValueError:
        return time.time()


class SegmentFiles:
    """The segment files of one stream directory: creating the next one (append-only
    attribute per ``policy``), closing, sealing (immutable) and explaining abandoned ones."""

    def __init__(self, directory: Path, policy: str, window: float) -> None:
        self.dir = directory
        self.policy = policy
        self.window = window
        self.append_only_active = False  # whether the newest segment got the attribute

    def create(self, first_seq: int, ts: bytes, start_frontier: list[bytes], first_prev: bytes) -> Segment:
        attempt = 0
        while True:
            path = self.dir / segment_name(first_seq, attempt)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o640)
                break
            except FileExistsError:
                attempt += 1
            except OSError as exc:
                raise HotLogError(
                    f"cannot create segment {path}: {exc.strerror}; the event was not stored", cause=exc
                ) from exc
        try:
            append_only = attr.protect_append_only(path, self.policy)
        except attr.AppendOnlyError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        self.append_only_active = append_only
        ts_s = ts.decode()
        return Segment(path, fd, first_seq, window_of(ts_to_epoch(ts_s), self.window), ts_s,
                       start_frontier=start_frontier, append_only=append_only, first_prev=first_prev)

    def reopen(self, path: Path, *, first_seq: int, first_ts: str, start_frontier: list[bytes], size: int,
               count: int, cr: merkle.CompactRange, first_prev: bytes) -> Segment:
        """Continue a segment found intact at start-up (after an unclean shutdown)."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        ao = attr.is_append_only(path) or attr.protect_append_only(path, self.policy)
        self.append_only_active = ao
        return Segment(path, fd, first_seq, window_of(ts_to_epoch(first_ts), self.window), first_ts,
                       start_frontier=start_frontier, size=size, count=count, cr=cr, dir_synced=True,
                       append_only=ao, first_prev=first_prev)

    def sync(self, seg: Segment, fsync: Any) -> None:
        """fsync the segment (with ``fsync``, looked up by the caller) and, once, its directory."""
        fsync(seg.fd)
        if not seg.dir_synced:
            fsync_dir(self.dir)
            seg.dir_synced = True

    @staticmethod
    def close(seg: Segment) -> None:
        if not seg.closed:
            with contextlib.suppress(OSError):
                os.close(seg.fd)
            seg.closed = True

    def make_immutable(self, path: Path) -> None:
        attr.protect_immutable(path, self.policy)

    def explain_abandoned(self, abandoned: list[tuple[Path, int]]) -> tuple[list[dict[str, Any]],
                                                                           list[tuple[Path, int]]]:
        """The entries of a recovery record for ``abandoned`` (path, valid bytes), and the
        ones still to be explained; an abandoned file that never got a byte is removed."""
        entries: list[dict[str, Any]] = []
        keep: list[tuple[Path, int]] = []
        for path, valid in abandoned:
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            if size == 0 and valid == 0:
                # nothing was ever written there: remove the empty file rather than explain it
                try:
                    attr.clear_protection(path)
                    os.unlink(path)
                    continue
                except OSError:
                    pass
            # hashed in chunks: the torn bytes may be anything a crash or an attacker left
            # (a gigabyte line), and the writer's start-up memory stays bounded
            torn_sha, torn_bytes = hashlib.sha256(), 0
            with open(path, "rb") as f:
                f.seek(valid)
                while chunk := f.read(1 << 20):
                    torn_sha.update(chunk)
                    torn_bytes += len(chunk)
            with contextlib.suppress(OSError, attr.AppendOnlyError):
                attr.protect_immutable(path, self.policy)
            entries.append({
                "segment": path.name,
                "valid_bytes": valid,
                "torn_bytes": torn_bytes,
                "torn_sha256": torn_sha.hexdigest(),
            })
            keep.append((path, valid))
        return entries, keep
