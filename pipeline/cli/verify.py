"""``pipeline verify``: check every record, link, seq and seal of the hot tier."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

import orjson

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import add_hot_args, add_verb, err, refuse_wrong_hot, streams_of
from pipeline.cli._progress import Progress, progress_bar
from pipeline.format.segment import list_segments
from pipeline.verify.chain import StreamReport
from pipeline.verify.hot import VerifyError as VerifyError  # the old import path
from pipeline.verify.hot import check_fss as check_fss  # moved to the library; old import path
from pipeline.verify.hot import streams_to_verify, verify_hot


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "verify", summary="verify hash chains, seals and Merkle roots in the hot tier",
                 description="""
        Check every record of the hot tier: record hashes, seq numbers and links, seals
        (counts, Merkle roots, frontiers), recovery records; optionally forward-secure seals
        and checkpoints held by witnesses.  Exit 0 when everything verifies, 1 with findings
        (each names the segment, seq and reason), 2 when it could not run.""",
                 examples=[("verify every stream", "pipeline verify --hot /var/lib/worm"),
                           ("one stream, with its FSS seals, as JSON",
                            "pipeline verify --hot /var/lib/worm --stream auth --fss-key fss.vkey --json"),
                           ("compare with what a witness has seen",
                            "pipeline verify --hot /var/lib/worm --witness-dir /srv/witness --vkey worm.pub")])
    add_hot_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.add_argument("--workers", type=int, default=None, help="parallel workers (default: all cores)")
    p.add_argument("--file-hashes", action="store_true",
                   help="also compute each segment file's SHA-256 (to compare with a manifest or cold copy; "
                        "adds nothing to what verification proves, costs about a fifth more)")
    p.add_argument("--fss-key", help="forward-secure seal verification key (fss-v1:...) or a file holding it")
    p.add_argument("--witness-dir", type=Path, action="append", default=[],
                   help="a directory witness: compare the log with the checkpoints it holds (repeatable)")
    p.add_argument("--vkey", type=Path, help="the log's checkpoint verifier key file (needed with --witness-dir)")
    p.add_argument("--origin", help="checkpoint origin, as the writer signs it: <signing.origin>/<stream> "
                   "(default: the stream name); a witness with no checkpoint for it is an error, exit 2")
    p.set_defaults(func=run)


def verify_progress(hot: Path, streams: list[str], *, json: bool) -> Progress:
    """A bar over the bytes of every segment to scan (on a terminal only)."""
    progress = progress_bar("verify", json=json, unit="B", unit_scale=True)
    if progress.enabled:
        # on an unreadable file the scan reports what it cannot read; the bar just has no total
        with contextlib.suppress(OSError):
            progress.add_total(sum(p.stat().st_size for name in streams for p in list_segments(hot / name)))
    return progress


def render(report: StreamReport) -> str:
    lines = [f"stream {report.stream}"]
    by_segment: dict[str, list[str]] = {}
    for f in report.errors:
        where = f" at seq {f.seq}" if f.seq is not None else ""
        off = f" (offset {f.offset})" if f.offset is not None else ""
        by_segment.setdefault(f.segment, []).append(f"{f.code}{where}{off}: {f.message}")
    for s in report.segments:
        status = report.segment_status(s)
        span = f"seq {s.first_seq}..{s.last_seq}" if s.first_seq is not None else "no records"
        lines.append(f"  {status:<10} {s.name}  {span}  {s.records} records  {s.size} bytes")
        for msg in by_segment.pop(s.name, []):
            lines.append(f"      {msg}")
        for n in report.notes:
            if n.segment == s.name:
                lines.append(f"      note: {n.message}")
    for n in report.notes:
        if not n.segment:
            lines.append(f"  note: {n.message}")
    for f in report.warnings:
        lines.append(f"  warning: {f.segment + ': ' if f.segment else ''}{f.code}: {f.message}")
    for seg, msgs in by_segment.items():
        for msg in msgs:
            lines.append(f"  INVALID    {seg or '(stream)'}: {msg}")
    verdict = "OK" if report.ok else f"{len(report.errors)} finding(s)"
    lines.append(f"  total: {len(report.segments)} segments, {report.records} records, {verdict}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    refused = refuse_wrong_hot(args.hot, args.stream)
    if refused is not None:
        return refused
    streams = streams_of(args.hot, args.stream)
    if not streams:
        err(f"no streams in {args.hot} (only the shipper's ledger): nothing to verify; "
            "pipeline verify-tier checks what was shipped")
        return EXIT_ERROR
    if args.witness_dir and not args.vkey:
        err("--witness-dir needs --vkey (the log's verifier key) to check the witnessed checkpoints")
        return EXIT_ERROR
    # a VerifyError (could not run) is answered by the CLI (exit 2)
    progress = verify_progress(args.hot, streams_to_verify(args.hot, args.stream), json=args.json)
    try:
        reports = verify_hot(args.hot, args.stream, fss_key=args.fss_key, witness_dirs=args.witness_dir,
                             vkey=args.vkey, origin=args.origin, workers=args.workers,
                             file_hashes=args.file_hashes, on_scanned=progress.advance)
    finally:
        progress.close()
    ok = all(r.ok for r in reports)
    evicted_any = any(n.kind == "evicted" for r in reports for n in r.notes)
    if ok and not evicted_any and all(not r.segments for r in reports):
        # stream directories with no segment and nothing shipped (a writer opened and never
        # wrote, or a directory left by an old typo): nothing was verified, so no OK
        err(f"no segments in {', '.join(streams)} under {args.hot}: nothing was verified; check --hot and --stream")
        return EXIT_ERROR
    if args.json:
        doc: dict[str, Any] = {"ok": ok, "streams": [r.to_dict() for r in reports]}
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for r in reports:
            print(render(r))
    return EXIT_OK if ok else EXIT_FINDINGS
