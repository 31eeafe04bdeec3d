"""``pipeline verify-tier``: prove that nothing is missing, altered or unlocked between hot and cold.

See docs/VERIFY-TIER.md for every check, finding code and the JSON schema.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import DURATION_HELP, add_retry_arg, add_verb, duration, err, open_for_reading
from pipeline.cli._progress import progress_bar
from pipeline.cold import ColdSettings
from pipeline.cold.errors import redact_endpoint
from pipeline.format.checkpoint import NoteError, load_verifiers
from pipeline.format.layout import hot_tier_problem
from pipeline.format.record import validate_stream_name
from pipeline.ship.ledger import open_ledger_readonly
from pipeline.verify.tier import TierOptions, parse_time, render, verify_tier


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "verify-tier", summary="reconcile hot and cold tiers: nothing missing, altered or unlocked",
                 description=__doc__ or "",
                 examples=[("the host's view: every shipped segment is in cold storage, locked and intact",
                            "pipeline verify-tier --hot /var/lib/worm --cold s3://audit-logs/prod"),
                           ("an auditor without the host: the bucket and the log's verifier key only, "
                            "re-verifying every record of the last 30 days",
                            "pipeline verify-tier --cold-only --cold s3://audit-logs/prod --vkey worm.pub --deep "
                            "--since 30d"),
                           ("JSON for a monitoring job; gaps of over 2 x 5 minutes between records are findings",
                            "pipeline verify-tier --hot /var/lib/worm --cold s3://audit-logs/prod --json "
                            "--heartbeat-interval 5m")])
    p.add_argument("--hot", type=Path, help="hot-tier directory (with the shipper ledger)")
    p.add_argument("--cold", required=True, help="cold store URL (s3://, az://, file://)")
    p.add_argument("--cold-only", action="store_true",
                   help="auditor mode: no hot tier, only read access to the store and the verifier key")
    p.add_argument("--vkey", action="append", type=Path, default=[],
                   help="verifier key file(s) for checkpoint signatures (required with --cold-only)")
    p.add_argument("--stream", help="stream name (default: every stream)")
    p.add_argument("--since", help="only segments with records at or after T (ISO 8601, or 7d/12h/30m ago)")
    p.add_argument("--until", help="only segments with records at or before T")
    p.add_argument("--deep", action="store_true", help="download, decompress and re-verify every record")
    p.add_argument("--json", action="store_true", help="print the report as JSON (docs/VERIFY-TIER.md)")
    p.add_argument("--expiry-warning-days", type=float, default=30.0,
                   help="list objects whose retention ends within N days (default 30)")
    p.add_argument("--heartbeat-interval", type=duration, default=60.0,
                   help=f"the writer's heartbeat interval, {DURATION_HELP}; silences over twice this are "
                   "findings (0 disables; default 60s)")
    p.add_argument("--retention-days", type=int, default=None,
                   help="required retention from upload (default: the cold settings' 2555 days)")
    p.add_argument("--allow-unlocked", action="store_true",
                   help="development only: unlocked objects and short retention are not findings")
    p.add_argument("--witness-dir", action="append", type=Path, default=[],
                   help="a directory witness to compare checkpoints with (repeatable)")
    p.add_argument("--witness-s3", action="append", default=[],
                   help="an S3 witness s3://bucket/prefix[?endpoint_url=...] (repeatable)")
    p.add_argument("--checkpoint", action="append", type=Path, default=[],
                   help="a signed checkpoint note to check (repeatable)")
    p.add_argument("--origin", help="checkpoint origin (default: found from the log or the witness)")
    p.add_argument("--witness-max-lag", type=duration, default=3600.0,
                   help=f"how far (in record time) a witness may lag behind before it is stale: {DURATION_HELP} "
                   "(default 1h)")
    p.add_argument("--workers", type=int, default=16, help="parallel requests (default 16)")
    p.add_argument("--ndjson", action="store_true",
                   help="with --cold-only: write each segment's line and each finding as one JSON object per "
                   "line as soon as it is judged, then a summary line; memory stays flat at any listing size")
    fleet = p.add_argument_group("fleet scale: S3 Inventory joined with the manifest index (docs/SCALING.md, "
                                 "docs/INDEX.md; needs the 'fleet' extra: duckdb, pyarrow, sqlglot)")
    fleet.add_argument("--inventory", metavar="URL",
                       help="an S3 Inventory report's manifest.json (s3://bucket/.../manifest.json[?endpoint_url=...] "
                       "or a local path): Parquet, all versions; replaces the listing and the HEADs")
    fleet.add_argument("--index", metavar="URL",
                       help="the manifest index the shipper writes: s3://bucket/<prefix>/_index/ or a local copy")
    fleet.add_argument("--engine", choices=("duckdb", "athena"), default="duckdb",
                       help="where the reconciliation SQL runs (default: duckdb, embedded)")
    fleet.add_argument("--workgroup", help="--engine athena: the Athena workgroup")
    fleet.add_argument("--athena-database", help="--engine athena: the database holding the two tables")
    fleet.add_argument("--athena-output", help="--engine athena: s3:// query result location (else the workgroup's)")
    fleet.add_argument("--inventory-table", default="s3_inventory",
                       help="the inventory table's name (Athena; DuckDB names its view so; default s3_inventory)")
    fleet.add_argument("--index-table", default="segment_index", help="the index table's name (default segment_index)")
    fleet.add_argument("--sample", type=float, default=0.0001, metavar="FRACTION",
                       help="fraction of segments read and verified end to end (default 0.0001 = 0.01%%), plus the "
                       "one under each stream's newest witnessed checkpoint")
    fleet.add_argument("--require-signed-index", action="store_true",
                       help="an unsigned index part is an error (index-signature-invalid), not a warning: for a "
                       "shipper that signs with the log's key ([signing] key_file; docs/INDEX.md 'Signature')")
    fleet.add_argument("--memory-limit", default="1GB", help="DuckDB's memory limit; sorts spill to disk (default 1GB)")
    add_retry_arg(p)
    p.set_defaults(func=run)


def _s3_witness(url: str) -> tuple[Any, str, str]:
    from pipeline.cold.s3 import make_client

    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.hostname:
        raise ValueError(f"--witness-s3 {url!r}: use s3://bucket/prefix[?endpoint_url=...]")
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    client = make_client(ColdSettings(), q.get("endpoint_url"), q.get("region"), q.get("profile"))
    return client, parts.hostname, parts.path.strip("/") or "witness"


def _host_problem(hot: Path, stream: str | None) -> str | None:
    """Host mode needs a hot tier.  A --stream need not be in it: a fleet neighbour's stream
    under the same prefix may be verified by name from this host (its objects decide)."""
    problem = hot_tier_problem(hot)
    if problem or not stream:
        return problem
    try:
        validate_stream_name(stream)
    except ValueError as exc:
        return str(exc)
    return None


def ledger_prefix_problem(store: Any, hot: Path, url: str) -> str | None:
    """The ledger records the key of every object the shipper stored.  If none of them lies
    under the prefix the --cold URL names, every segment would look deleted: refuse and name
    the prefix the ledger used instead."""
    ledger = open_ledger_readonly(hot)
    if ledger is None:
        return None
    try:
        keys = [(e.stream, e.cold_key) for e in ledger.entries() if e.cold_key]
    finally:
        ledger.close()
    if not keys:
        return None
    used: dict[str, str] = {}
    for stream, key in keys:
        cut = key.rfind(f"{stream}/")
        if cut >= 0:
            used.setdefault(key[:cut].strip("/"), key)
    here = str(getattr(store, "prefix", "") or "").strip("/")
    if not used or here in used:
        return None
    shown = ", ".join(f"{p or '(none)'!r} (e.g. {k})" for p, k in list(used.items())[:3])
    return (f"--cold {redact_endpoint(url)} names prefix {here or '(none)'!r}, but the ledger in {hot} records "
            f"its {len(keys)} shipped object(s) under prefix {shown}: check the --cold URL (a wrong prefix "
            "would report every segment as deleted)")


def run(args: argparse.Namespace) -> int:
    if args.inventory or args.index:
        return run_inventory(args)
    if args.cold_only and not args.vkey:
        err("verify-tier --cold-only needs --vkey (the log's verifier key)")
        return EXIT_ERROR
    if not args.cold_only and args.hot is None:
        err("verify-tier needs --hot DIR, or --cold-only --vkey FILE for an auditor without the host")
        return EXIT_ERROR
    if args.hot is not None and not args.cold_only:
        problem = _host_problem(args.hot, args.stream)
        if problem:
            err(problem)
            return EXIT_ERROR
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
        verifiers = load_verifiers(args.vkey) if args.vkey else []
        witness_s3 = [_s3_witness(u) for u in args.witness_s3]
    except (ValueError, OSError, NoteError) as exc:
        err(str(exc))
        return EXIT_ERROR
    if args.ndjson and not args.cold_only:
        err("verify-tier --ndjson streams the cold-only report: add --cold-only")
        return EXIT_ERROR
    progress = progress_bar("verify-tier", json=args.json or args.ndjson)
    opts = TierOptions(
        hot=None if args.cold_only else args.hot, stream=args.stream, since=since, until=until, deep=args.deep,
        expiry_warning_days=args.expiry_warning_days, heartbeat_interval=args.heartbeat_interval,
        allow_unlocked=args.allow_unlocked, retention_days=args.retention_days, workers=args.workers,
        verifiers=verifiers, witness_dirs=args.witness_dir, witness_s3=witness_s3, checkpoint_files=args.checkpoint,
        origin=args.origin, witness_max_lag=args.witness_max_lag, cold_only=args.cold_only,
        progress=progress.phase if progress.enabled else None)
    try:
        # allow_unlocked here only lets the store open an unlocked bucket for reading; the
        # lock judgement is verify-tier's own (opts.allow_unlocked)
        store = open_for_reading(args.cold, args)
        try:
            problem = None if args.cold_only or args.hot is None else ledger_prefix_problem(store, args.hot, args.cold)
            if problem:
                progress.close()
                err(problem)
                return EXIT_ERROR
            if args.ndjson:
                return _run_streaming(store, opts, args)
            report = verify_tier(store, opts)  # a ColdError or TierError is answered by the CLI (exit 2)
        finally:
            store.close()
    except OSError as exc:
        progress.close()
        err(str(exc))
        return EXIT_ERROR
    finally:
        progress.close()
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render(report))
    if not report.ok:
        return EXIT_FINDINGS
    totals = report.totals()
    if totals["segments"] == 0:
        # nothing was verified, so nothing may be called valid
        what = f"stream {args.stream!r}" if args.stream else "anything"
        if totals["outside_window"]:
            err(f"no segment of {what} lies in the --since/--until window ({totals['outside_window']} outside it): "
                "nothing was verified; widen the window")
        else:
            err(f"found no segment of {what} in the hot tier, the ledger or under {redact_endpoint(args.cold)}: "
                "nothing was verified; check --stream and --cold")
        return EXIT_ERROR
    return EXIT_OK


def _run_streaming(store: Any, opts: TierOptions, args: argparse.Namespace) -> int:
    """--cold-only --ndjson: pipeline.verify.streaming writes the report as it goes."""
    from pipeline.verify.streaming import StreamingVerifier

    verifier = StreamingVerifier(store, opts, sys.stdout.buffer)
    ok = verifier.run()
    if not ok:
        return EXIT_FINDINGS
    if verifier.totals.segments == 0:
        what = f"stream {args.stream!r}" if args.stream else "anything"
        err(f"found no segment of {what} under {redact_endpoint(args.cold)}: nothing was verified; check --stream "
            "and --cold")
        return EXIT_ERROR
    return EXIT_OK


def run_inventory(args: argparse.Namespace) -> int:
    """``--inventory URL --index URL``: the reconciliation as SQL (pipeline.verify.inventory)."""
    if not (args.inventory and args.index):
        err("verify-tier --inventory and --index go together (the S3 Inventory manifest.json and the shipper's "
            "manifest index)")
        return EXIT_ERROR
    if args.hot is not None or args.deep or args.since or args.until:
        err("verify-tier --inventory judges the whole index (no --hot, --deep, --since or --until; --sample "
            "chooses what is read end to end)")
        return EXIT_ERROR
    try:
        from pipeline.verify.inventory import InventoryOptions, verify_inventory
    except ImportError as exc:
        err(f"verify-tier --inventory needs the 'fleet' extra ({exc.name} is missing): "
            "pip install 'worm-pipeline[fleet]'")
        return EXIT_ERROR
    try:
        verifiers = load_verifiers(args.vkey) if args.vkey else []
        witness_s3 = [_s3_witness(u) for u in args.witness_s3]
        if args.stream:
            validate_stream_name(args.stream)
    except (ValueError, OSError, NoteError) as exc:
        err(str(exc))
        return EXIT_ERROR
    opts = InventoryOptions(
        inventory=args.inventory, index=args.index, engine=args.engine, workgroup=args.workgroup,
        athena_database=args.athena_database, athena_output=args.athena_output,
        inventory_table=args.inventory_table, index_table=args.index_table, stream=args.stream,
        heartbeat_interval=args.heartbeat_interval, retention_days=args.retention_days,
        allow_unlocked=args.allow_unlocked, expiry_warning_days=args.expiry_warning_days, sample_fraction=args.sample,
        verifiers=verifiers, witness_dirs=args.witness_dir, witness_s3=witness_s3, checkpoint_files=args.checkpoint,
        origin=args.origin, memory_limit=args.memory_limit, require_signed_index=args.require_signed_index)
    try:
        store = open_for_reading(args.cold, args)
        try:
            report = verify_inventory(store, opts)  # a ColdError or TierError: the CLI's one handler (exit 2)
        finally:
            store.close()
    except (OSError, ValueError) as exc:
        err(str(exc))
        return EXIT_ERROR
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render(report))
    return EXIT_FINDINGS if not report.ok else EXIT_OK
