"""``pipeline restore``: rebuild a hot directory from cold storage after the host is lost, verified.

For each stream: list the objects (one HEAD each; archived objects must be thawed first),
download and decompress each into a staging directory, check the stored bytes against the
upload's SHA-256, the decompressed segment against the metadata's size, SHA-256 and Merkle
root, scan every record, and stitch the whole stream from seq 0 (links, seq, seal
frontiers, recovery records).  Only when everything verifies are the segments moved into
``<to>/<stream>/``, fsynced and protected (immutable attribute), and ``head.json`` written
from the last seal, so a new HotLog continues the chain and ``pipeline verify`` passes.
Nothing is written into the target when anything fails (exit 1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import add_retry_arg, add_verb, err, open_for_reading, report_read_failure
from pipeline.cli._progress import Progress, progress_bar
from pipeline.cold import ColdError
from pipeline.format import attr, merkle
from pipeline.format.files import fsync_dir
from pipeline.format.layout import StreamHead, write_head
from pipeline.format.record import Kind, parse_record
from pipeline.format.segment import list_segments, read_last_line
from pipeline.verify.chain import scan_segment, stitch
from pipeline.verify.readback import ReadbackError, fetch_checked, list_streams_in, merkle_problem, stream_objects


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "restore", summary="rebuild a hot directory from cold storage, verified",
                 description=__doc__ or "",
                 examples=[("rebuild every stream into a new hot directory",
                            "pipeline restore --cold s3://audit-logs/prod --to /var/lib/worm-restored"),
                           ("one stream",
                            "pipeline restore --cold s3://audit-logs/prod --to /var/lib/worm --stream auth")])
    p.add_argument("--cold", required=True, help="cold store URL (s3://, az://, file://)")
    p.add_argument("--to", required=True, type=Path, help="hot directory to rebuild (stream dirs must not exist)")
    p.add_argument("--stream", help="stream name (default: every stream in the store)")
    add_retry_arg(p)
    p.set_defaults(func=run)


class RestoreFailed(Exception):
    pass


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


def restore_stream(store: Any, stream: str, to: Path, progress: Progress | None = None) -> tuple[int, int]:
    """Returns (segments, records).  Raises RestoreFailed (verification) or ReadbackError."""
    target = to / stream
    if target.exists() and list_segments(target):
        raise ReadbackError(f"{target} already holds segments: restore into an empty directory")
    segs = stream_objects(store, stream)
    if not segs:
        raise ReadbackError(f"no cold objects for stream {stream!r}")
    to.mkdir(parents=True, exist_ok=True)
    if progress is not None:
        progress.add_total(len(segs))
    staging = Path(tempfile.mkdtemp(prefix=f".restore-{stream}-", dir=to))
    try:
        scans = []
        for s in segs:
            checked = fetch_checked(store, s, staging)
            if checked.problems:
                raise RestoreFailed(f"{s.name}: {checked.problems[0][0]}: {checked.problems[0][1]}")
            scan = scan_segment(checked.fetched.path, stream)
            if scan.findings:
                f = scan.findings[0]
                raise RestoreFailed(f"{s.name}: {f.reason} at seq {f.seq}: {f.message}")
            problem = merkle_problem(s, scan)
            if problem:
                raise RestoreFailed(f"{s.name}: {problem[0]}: {problem[1]}")
            scan.boundaries = {} if scan.sealed else scan.boundaries
            scans.append(scan)
            if progress is not None:
                progress.advance()
        rep = stitch(stream, scans)
        if rep.findings:
            f = rep.findings[0]
            raise RestoreFailed(f"{f.segment}: {f.reason}: {f.message} ({len(rep.findings)} finding(s))")
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
        return len(names), rep.records
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    if args.to.exists() and not args.to.is_dir():
        err(f"--to {args.to} is a file: give a directory to restore the hot tier into (nothing was read)")
        return EXIT_ERROR
    try:
        store = open_for_reading(args.cold, args)
    except ColdError as exc:
        err(exc.one_line())
        return EXIT_ERROR
    try:
        streams = [args.stream] if args.stream else list_streams_in(store)
        if not streams:
            err("no streams found in the cold store")
            return EXIT_ERROR
        for stream in streams:
            with progress_bar(f"restore {stream}") as progress:
                n, records = restore_stream(store, stream, args.to, progress)
            print(f"restored {stream}: {n} segments, {records} records, verified, into {args.to / stream}")
        print(f"next: pipeline verify --hot {args.to}")
        return EXIT_OK
    except RestoreFailed as exc:
        err(f"restore refused: {exc}; nothing was written to {args.to}")
        return EXIT_FINDINGS
    except (ReadbackError, ColdError, OSError) as exc:
        return report_read_failure(exc)
    finally:
        store.close()
