"""``pipeline quickstart``: the main job on an embedded default, no cloud account needed.

Writes sample audit events to a hot directory, seals the segment, verifies the chain and
prints what happened.  When the cold tier is available it also ships to an in-process S3
(moto's server) with an Object Lock bucket and verifies the locked copy.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import orjson

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import add_verb, err
from pipeline.cli.verify import render
from pipeline.format import attr
from pipeline.format.record import parse_record, validate_stream_name
from pipeline.format.segment import build_manifest, list_segments
from pipeline.hot.writer import HotLog, HotLogError
from pipeline.verify.chain import verify_stream

SAMPLE_EVENTS: list[dict[str, Any]] = [
    {"actor": "alice", "action": "login", "source_ip": "203.0.113.7", "outcome": "success"},
    {"actor": "alice", "action": "read", "resource": "customers/4711", "outcome": "success"},
    {"actor": "bob", "action": "login", "source_ip": "198.51.100.23", "password": "hunter2", "outcome": "failure"},
    {"actor": "alice", "action": "export", "resource": "reports/q3.csv", "rows": 1250, "outcome": "success"},
    {"actor": "svc-billing", "action": "charge", "card": "4111 1111 1111 1111", "amount_cents": 4999},
    {"actor": "root", "action": "config-change", "key": "audit.retention_days", "old": 365, "new": 2555},
]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "quickstart", summary="run the whole pipeline on an embedded default and show the result",
                 description=__doc__ or "",
                 examples=[("try it in a new temporary directory", "pipeline quickstart"),
                           ("keep the result in ./demo-hot to look at it afterwards",
                            "pipeline quickstart --dir ./demo-hot --events 100")])
    p.add_argument("--dir", type=Path, default=None, help="where to put the hot tier (default: a new temp dir)")
    p.add_argument("--stream", default="demo", help="stream name (default demo)")
    p.add_argument("--events", type=positive_int, default=1000, help="number of sample events to write")
    p.set_defaults(func=run)


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: give at least 1 event")
    return n


def run(args: argparse.Namespace) -> int:
    try:
        validate_stream_name(args.stream)
    except ValueError as exc:
        err(str(exc))
        return EXIT_ERROR
    if args.dir is not None and args.dir.exists() and (not args.dir.is_dir() or any(args.dir.iterdir())):
        # the embedded S3 lives only as long as one run: a second run in the same directory
        # would find a ledger pointing at objects that no longer exist
        err(f"--dir {args.dir} is not an empty directory (an earlier quickstart?): give a new or empty "
            "directory, or leave --dir out for a fresh temporary one")
        return EXIT_ERROR
    base = args.dir or Path(tempfile.mkdtemp(prefix="worm-pipeline-quickstart-"))
    hot = base / "hot"
    print(f"1. hot tier in {hot}")
    try:
        log = HotLog(hot, args.stream, heartbeat_interval=0)
    except (HotLogError, OSError) as exc:
        err(str(exc))
        return EXIT_ERROR
    last = None
    for i in range(args.events):
        event = dict(SAMPLE_EVENTS[i % len(SAMPLE_EVENTS)], n=i)
        last = log.append(event, wait=False)
    log.sync()
    active = log.active_segment
    protected = attr.is_append_only(active) if active else False
    print(f"2. appended {args.events} events (group commit); last seq {last.seq if last else '-'} "
          f"hash {last.hash[:16] if last else '-'}…; active segment append-only: {protected}")
    sealed = log.seal()
    log.close(seal=False)
    if sealed is None:
        err("nothing was sealed")
        return EXIT_ERROR
    manifest = build_manifest(sealed)
    print(f"3. sealed {sealed.name}: seq {manifest.first_seq}..{manifest.last_seq}, {manifest.size} bytes, "
          f"sha256 {manifest.sha256[:16]}…, merkle root {manifest.merkle_root[:16]}…, "
          f"immutable: {attr.is_immutable(sealed)}")
    print("   sanitised before writing (first events' data as stored):")
    with open(list_segments(hot / args.stream)[0], "rb") as f:
        for _ in range(min(5, args.events)):
            rec = parse_record(f.readline())
            print(f"   seq {rec.seq}: {orjson.dumps(rec.data).decode()[:140]}")
    report = verify_stream(hot / args.stream, workers=1)
    print("4. pipeline verify:")
    print(render(report))
    cold_code = _ship_if_available(hot, args.stream, base)
    print(f"\nTry: pipeline verify --hot {hot}   |   pipeline status --hot {hot}")
    if not report.ok:
        return EXIT_FINDINGS
    return cold_code


def _ship_if_available(hot: Path, stream: str, base: Path) -> int:
    """Ship to an embedded S3 (moto's server) when moto is installed, else to a local
    directory store, and show the locked copy."""
    from pipeline.cold import ColdSettings, open_store
    from pipeline.ship.shipper import Shipper

    embedded = None
    try:
        from pipeline._internal import embedded_s3

        embedded = embedded_s3.start()
        url = embedded.url()
        settings = ColdSettings(retention_days=1)
        where = f"embedded S3 (moto server at {embedded.endpoint}), bucket {embedded.bucket} with Object Lock"
    except ImportError:
        url = f"file://{base / 'cold'}"
        settings = ColdSettings(retention_days=1, allow_unlocked=True)
        where = f"local directory {base / 'cold'} (install moto[server] for the embedded S3)"
    try:
        print(f"5. shipping to {where}")
        store = open_store(url, settings)
        shipper = Shipper(hot, store, hot_retention=0.0, streams=[stream])
        summary = shipper.run_once()
        shipper.close()
        for seg, key, lock in summary.confirmed_keys:
            st = store.stat(key)
            print(f"   confirmed {seg} -> {key}")
            print(f"     stored {st.size} bytes (zstd), lock {st.lock_mode} until {st.retain_until}, [{lock}]")
        if embedded is not None and summary.confirmed_keys:
            key = summary.confirmed_keys[0][1]
            try:
                head = embedded.client().head_object(Bucket=embedded.bucket, Key=key)
                embedded.client().delete_object(Bucket=embedded.bucket, Key=key, VersionId=head["VersionId"])
                print("     !! deleting the locked version succeeded (the emulator did not enforce the lock)")
            except Exception as exc:  # botocore ClientError: what a locked object must do
                print(f"     deleting the locked version is refused: {type(exc).__name__} "
                      f"{getattr(exc, 'response', {}).get('Error', {}).get('Code', '')}")
        print(f"   evicted from the hot tier after confirmation: {summary.evicted} segment(s)")
        for e in summary.errors:
            print(f"   FAILED {e}")
        from pipeline.verify.tier import TierOptions, render, verify_tier

        report = verify_tier(store, TierOptions(hot=hot, stream=stream, deep=True,
                                                retention_days=settings.retention_days,
                                                allow_unlocked=settings.allow_unlocked))
        print("6. pipeline verify-tier --deep (hot, ledger and cold reconciled, every record re-verified):")
        print("   " + render(report).replace("\n", "\n   "))
        return EXIT_OK if not (summary.failed or summary.quarantined) else EXIT_FINDINGS
    finally:  # a ColdError is answered by the CLI (exit 2)
        if embedded is not None:
            embedded.stop()
