"""Rebuild a hot directory from cold storage after the host is lost, verified (``pipeline restore``).

For each stream: list the objects (one HEAD each; archived objects must be thawed first),
download and decompress each into a staging directory, check the stored bytes against the
upload's SHA-256, the decompressed segment against the metadata's size, SHA-256 and Merkle
root, scan every record, and stitch the whole stream from seq 0 (links, seq, seal
frontiers, recovery records).  Only when everything verifies are the segments moved into
``<to>/<stream>/``, fsynced and protected (immutable attribute), and ``head.json`` written
from the last seal, so a new HotLog continues the chain and ``pipeline verify`` passes.
Nothing is written into the target when anything fails (``RestoreFailed``, naming the first
finding).

Here rather than in the CLI so that a library user gets the same verified restore
(``pipeline.restore_log``); ``pipeline restore`` only parses its flags and renders.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.cold.base import ColdStore
from pipeline.errors import PipelineError
from pipeline.findings import Finding
from pipeline.format import attr, merkle
from pipeline.format.files import fsync_dir
from pipeline.format.layout import StreamHead, write_head
from pipeline.format.record import Kind, parse_record
from pipeline.format.segment import list_segments, read_last_line
from pipeline.verify.chain import scan_segment, stitch
from pipeline.verify.readback import ReadbackError, fetch_checked, list_streams_in, merkle_problem, stream_objects

# (phase, segments done, segments of the stream)
ProgressFn = Callable[[str, int, int], None]


class RestoreFailed(PipelineError):
    """A stream did not verify: nothing was written to the target (a finding about the data;
    ``pipeline restore`` exits 1)."""

    action = "nothing was written; run pipeline verify-tier --deep on the store for every finding"

    def __init__(self, finding: Finding, count: int = 1) -> None:
        more = f" ({count} finding(s))" if count > 1 else ""
        where = f" at seq {finding.seq}" if finding.seq is not None else ""
        super().__init__(f"{finding.segment}: {finding.code}{where}: {finding.message}{more}")
        self.finding = finding


@dataclass(frozen=True)
class RestoredStream:
    stream: str
    path: Path  # <to>/<stream>
    segments: int
    records: int


def head_from_seal(stream: str, last_segment: Path) -> StreamHead | None:
    """The writer's head after the last seal: next seq, last hash, tree size and frontier
    (the seal's frontier with the seal's own leaf appended, docs/FORMAT.md §4/§6)."""
    line = read_last_line(last_segment)
    if line is None:
        return None
    rec = parse_record(line)
    if rec.kind != Kind.SEAL.value:
        return None
    cr = merkle.CompactRange(int(rec.data["tree_size"]), [bytes.fromhex(h) for h in rec.data["frontier"]])
    cr.append(merkle.leaf_hash(rec.leaf))
    return StreamHead(stream, rec.seq + 1, rec.hash, cr.size, tuple(cr.stack))


def restore_stream(store: ColdStore, stream: str, to: str | os.PathLike[str],
                   progress: ProgressFn | None = None) -> RestoredStream:
    """Restore one stream into ``to/<stream>``.  Raises RestoreFailed (verification) or
    ReadbackError (cannot run: the target holds segments, no objects, archived objects)."""
    to = Path(to)
    target = to / stream
    if target.exists() and list_segments(target):
        raise ReadbackError(f"{target} already holds segments: restore into an empty directory")
    segs = stream_objects(store, stream)
    if not segs:
        raise ReadbackError(f"no cold objects for stream {stream!r}")
    to.mkdir(parents=True, exist_ok=True)
    phase = f"restore {stream}"
    if progress is not None:
        progress(phase, 0, len(segs))
    staging = Path(tempfile.mkdtemp(prefix=f".restore-{stream}-", dir=to))
    try:
        scans = []
        for s in segs:
            checked = fetch_checked(store, s, staging)
            if checked.problems:
                raise RestoreFailed(checked.problems[0], len(checked.problems))
            scan = scan_segment(checked.fetched.path, stream)
            if scan.findings:
                raise RestoreFailed(scan.findings[0], len(scan.findings))
            problem = merkle_problem(s, scan)
            if problem:
                raise RestoreFailed(problem)
            scan.boundaries = {} if scan.sealed else scan.boundaries
            scans.append(scan)
            if progress is not None:
                progress(phase, len(scans), len(segs))
        rep = stitch(stream, scans)
        if rep.findings:
            raise RestoreFailed(rep.findings[0], len(rep.findings))
        # everything verified: move into place, durably, then protect
        target.mkdir(parents=True, exist_ok=True)
        names = [s.name for s in segs]
        for name in names:
            src = staging / name
            with open(src, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(src, target / name)
        fsync_dir(target)
        for i, name in enumerate(names):
            p = target / name
            if scans[i].sealed:
                attr.protect_immutable(p)
            elif i == len(names) - 1:
                attr.protect_append_only(p)  # the writer continues or recovers it
            else:
                attr.protect_immutable(p)  # abandoned: kept as evidence, never written again
        head = head_from_seal(stream, target / names[-1])
        if head is not None:
            write_head(target, head)
        return RestoredStream(stream, target, len(names), rep.records)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def restore_log(store: ColdStore, to: str | os.PathLike[str], *, stream: str | None = None,
                progress: ProgressFn | None = None,
                on_restored: Callable[[RestoredStream], None] | None = None) -> list[RestoredStream]:
    """``pipeline restore`` as a call: every stream of ``store`` (or ``stream``) into the hot
    directory ``to``, each verified completely before anything of it is written.
    ``on_restored`` is told as each stream is in place.  Raises RestoreFailed when a stream
    does not verify (streams restored before it stay), ReadbackError when it cannot run."""
    to = Path(to)
    if to.exists() and not to.is_dir():
        raise ReadbackError(f"--to {to} is a file: give a directory to restore the hot tier into (nothing was read)")
    streams = [stream] if stream else list_streams_in(store)
    if not streams:
        raise ReadbackError("no streams found in the cold store")
    done: list[RestoredStream] = []
    for name in streams:
        restored = restore_stream(store, name, to, progress)
        done.append(restored)
        if on_restored is not None:
            on_restored(restored)
    return done
