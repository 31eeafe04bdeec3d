"""``pipeline verify``: check every record, link, seq and seal of the hot tier."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import add_hot_args, err, refuse_wrong_hot, streams_of
from pipeline.ship.ledger import open_ledger_readonly
from pipeline.verify.chain import Finding, Note, StreamReport, verify_stream


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("verify", help="verify hash chains, seals and Merkle roots in the hot tier")
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
    p.add_argument("--origin", help="checkpoint origin (default: the stream name)")
    p.set_defaults(func=run)


def render(report: StreamReport) -> str:
    lines = [f"stream {report.stream}"]
    by_segment: dict[str, list[str]] = {}
    for f in report.findings:
        where = f" at seq {f.seq}" if f.seq is not None else ""
        off = f" (offset {f.offset})" if f.offset is not None else ""
        by_segment.setdefault(f.segment, []).append(f"{f.reason}{where}{off}: {f.message}")
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
    for seg, msgs in by_segment.items():
        for msg in msgs:
            lines.append(f"  INVALID    {seg or '(stream)'}: {msg}")
    verdict = "OK" if report.ok else f"{len(report.findings)} finding(s)"
    lines.append(f"  total: {len(report.segments)} segments, {report.records} records, {verdict}")
    return "\n".join(lines)


def check_fss(report: StreamReport, key_arg: str) -> None:
    """Every seal must carry a valid forward-secure MAC, in strictly increasing (epoch, index)
    order (docs/PROOFS.md), except seals older than forward-secure sealing itself: no seal
    with ``fss`` before them, and timed before the key's start (docs/FORMAT.md §4)."""
    from pipeline.fss import FssVerifier

    text = Path(key_arg).read_text().strip() if Path(key_arg).is_file() else key_arg
    verifier = FssVerifier(text)
    fss_seen = False  # sealing is never switched back off: once a seal has fss, every later one must
    for s in report.segments:
        if not s.sealed or s.seal is None or s.last_ts is None:
            continue
        if "fss" not in s.seal and not fss_seen and _epoch_seconds(s.last_ts) < verifier.key.start:
            continue  # sealed before forward-secure sealing was set up
        fss_seen = fss_seen or "fss" in s.seal
        problem = verifier.check(s.seal, s.last_ts)
        if problem:
            report.findings.append(Finding(report.stream, s.name, "fss-invalid", problem, s.last_seq, None))


def _epoch_seconds(ts: str) -> float:
    from datetime import UTC, datetime

    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def check_witness(report: StreamReport, stream_dir: Path, witness_dir: Path, vkey: Path, origin: str) -> None:
    """A witnessed checkpoint fixes the root of a prefix of the log: a chain rebuilt after it
    (even re-signed with a stolen key) no longer matches."""
    from pipeline.proofs import verify_against_witnesses
    from pipeline.witness.directory import read_witness_checkpoints

    notes = read_witness_checkpoints(witness_dir, origin)
    for f in verify_against_witnesses(stream_dir, notes, vkey):
        if f.get("severity") == "error":
            report.findings.append(Finding(report.stream, "", "witness-mismatch",
                                           f"{f['code']}: {f['message']}", f.get("size"), None))
        else:
            report.notes.append(Note(report.stream, "", "witness", f"{f['code']}: {f['message']}"))


def run(args: argparse.Namespace) -> int:
    refused = refuse_wrong_hot(args.hot, args.stream)
    if refused is not None:
        return refused
    streams = streams_of(args.hot, args.stream)
    if not streams:
        err(f"no streams in {args.hot} (only the shipper's ledger): nothing to verify; "
            "pipeline verify-tier checks what was shipped")
        return EXIT_ERROR
    reports = []
    ledger = open_ledger_readonly(args.hot)
    for name in streams:
        # segments the shipper evicted after confirming their cold copies are not missing:
        # the hot tier legitimately starts after them (pipeline verify-tier checks the cold side)
        start = ledger.evicted_prefix(name) if ledger else None
        try:
            reports.append(verify_stream(args.hot / name, workers=args.workers,
                                         start_seq=start[0] if start else 0,
                                         start_hash=start[1] if start else None,
                                         file_hashes=args.file_hashes))
        except OSError as exc:
            err(f"cannot read stream {name!r}: {exc}")
            return EXIT_ERROR
    for name, r in zip(streams, reports, strict=True):
        start = ledger.evicted_prefix(name) if ledger else None
        if start:
            r.notes.append(Note(name, "", "evicted", f"records before seq {start[0]} were shipped, confirmed "
                                "and evicted (see the shipper ledger)"))
    if ledger:
        ledger.close()
    if args.witness_dir and not args.vkey:
        err("--witness-dir needs --vkey (the log's verifier key) to check the witnessed checkpoints")
        return EXIT_ERROR
    try:
        for r in reports:
            if args.fss_key:
                check_fss(r, args.fss_key)
            for wdir in args.witness_dir:
                check_witness(r, args.hot / r.stream, wdir, args.vkey, args.origin or r.stream)
    except (OSError, ValueError) as exc:
        err(str(exc))
        return EXIT_ERROR
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
