"""``pipeline ship``: move sealed segments from the hot tier to the cold tier."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import orjson

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import DURATION_HELP, add_retry_arg, add_verb, duration, err, refuse_wrong_hot
from pipeline.cli._progress import progress_bar
from pipeline.cold import ColdSettings, open_store
from pipeline.format.checkpoint import NoteError, configured_signer
from pipeline.ship.ledger import Entry
from pipeline.ship.shipper import Shipper, ShipSummary


def add_cold_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cold", required=True, help="s3://bucket/prefix, az://account/container/prefix or file:///path")
    p.add_argument("--retention-days", type=int, default=2555,
                   help="WORM retention of each uploaded object, in whole days (default 2555)")
    p.add_argument("--allow-unlocked", action="store_true",
                   help="development only: accept storage that does not enforce WORM (reported as UNLOCKED)")
    p.add_argument("--compression", choices=("zstd", "none"), default="zstd", help="default zstd")
    p.add_argument("--storage-class", default=None, help="S3 storage class / Azure access tier of uploads")
    p.add_argument("--sse", choices=("AES256", "aws:kms"), default=None,
                   help="S3 server-side encryption per object (default: none sent, the bucket's default applies)")
    p.add_argument("--kms-key-id", default=None, help="S3 SSE-KMS key (implies --sse aws:kms)")
    add_retry_arg(p)


def settings_from(args: argparse.Namespace) -> ColdSettings:
    from pipeline.cli._common import with_retry_budget

    return with_retry_budget(ColdSettings(retention_days=args.retention_days, allow_unlocked=args.allow_unlocked,
                                          compression=args.compression, storage_class=args.storage_class,
                                          sse=args.sse, kms_key_id=args.kms_key_id), args)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "ship", summary="upload sealed segments to locked cold storage, verify, confirm, evict",
                 description="""
        Upload each sealed segment to cold storage under WORM retention (S3 Object Lock
        COMPLIANCE, Azure immutable blobs), read it back and verify it, record it in the
        shipper ledger, and evict the hot copy only after the cold copy is confirmed and
        --hot-retention has passed (docs/COLD.md, docs/LEDGER.md).  With --once, one pass
        then exit; without it, keep shipping until SIGTERM.""",
                 examples=[("one pass to S3, keeping confirmed segments on disk for 3 days",
                            "pipeline ship --hot /var/lib/worm --cold s3://audit-logs/prod --once --hot-retention 3d"),
                           ("to Azure, one stream, as JSON",
                            "pipeline ship --hot /var/lib/worm --cold az://acct/audit --stream auth --once --json")])
    p.add_argument("--hot", required=True, help="hot-tier directory")
    p.add_argument("--stream", action="append", help="only these streams (repeatable)")
    add_cold_args(p)
    p.add_argument("--once", action="store_true", help="ship what is sealed now and exit")
    p.add_argument("--hot-retention", type=duration, default=24 * 3600.0,
                   help=f"keep confirmed segments on the hot disk this long: {DURATION_HELP} (default 24h)")
    p.add_argument("--concurrency", type=int, default=4, help="parallel uploads (default 4)")
    p.add_argument("--json", action="store_true", help="print the pass's summary as JSON (--once)")
    p.add_argument("--key", type=Path, default=None,
                   help="the log's checkpoint signing key: signs every manifest index part (docs/INDEX.md "
                        "'Signature'; default: $PIPELINE_SIGNING_KEY when set, else the parts are unsigned)")
    p.add_argument("--origin", default=None,
                   help="the checkpoint origin named in the index parts' signed notes (with one --stream; "
                        "default: the stream name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for stream in args.stream or [None]:
        refused = refuse_wrong_hot(Path(args.hot), stream)
        if refused is not None:
            return refused
    if args.origin is not None and len(args.stream or []) != 1:
        err("--origin names one stream's origin: give exactly one --stream with it")
        return EXIT_ERROR
    try:
        signer = configured_signer(args.key)
    except NoteError as exc:
        err(str(exc))
        return EXIT_ERROR
    store = open_store(args.cold, settings_from(args))  # a ColdError is answered by the CLI (exit 2)
    shipper = Shipper(args.hot, store, hot_retention=args.hot_retention, concurrency=args.concurrency,
                      streams=args.stream, index_signer=signer, index_origin=args.origin)
    bar = progress_bar("ship", json=args.json) if args.once else None

    # the shipper reports from its upload threads: print() writes the text and the newline
    # separately, so two threads could interleave their lines; one lock, one write each
    report_lock = threading.Lock()

    def progress(entry: Entry, state: str) -> None:
        with report_lock:
            if bar is not None and bar.enabled:
                bar.advance()
            elif not args.json:
                sys.stdout.write(f"{entry.stream}/{entry.segment} {state}\n")
                sys.stdout.flush()

    if not args.once:
        # the handler only sets a flag (see pipeline/sidecar.py: no threading locks in
        # signal handlers); the main thread stops the loop
        stop = threading.Event()
        flags = {"stop": False}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            flags["stop"] = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        loop = threading.Thread(target=shipper.run_forever, args=(stop,), name="shipper", daemon=True)
        loop.start()
        while not flags["stop"] and loop.is_alive():
            time.sleep(0.2)
        stop.set()
        loop.join()
        if not shipper.in_flight():  # an upload still running records its outcome in the ledger
            shipper.close()
        store.close()
        return EXIT_OK
    if bar is not None and bar.enabled:
        shipper.discover()  # run_once discovers again: nothing new, this only sizes the bar
        bar.add_total(len(shipper.due()))
    summary = shipper.run_once(progress)
    if bar is not None:
        bar.close()
    status = shipper.status()
    if args.json:
        doc = {"confirmed": summary.confirmed, "failed": summary.failed, "quarantined": summary.quarantined,
               "evicted": summary.evicted, "pending": summary.pending, "errors": summary.errors,
               "status": status}
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for seg, key, lock in summary.confirmed_keys:
            print(f"confirmed {seg} -> {key}  [{lock}]")
        for e in summary.errors:
            print(f"FAILED {e}")
        print(f"confirmed {summary.confirmed}, failed {summary.failed}, quarantined {summary.quarantined}, "
              f"evicted {summary.evicted}, pending {summary.pending}")
    shipper.close()
    store.close()
    return once_exit_code(summary, status)


def once_exit_code(summary: ShipSummary, status: dict[str, object]) -> int:
    """``ship --once``: 1 when a segment was quarantined (its copy does not match: a finding
    about the data, reported first so that nothing masks it); 2 when work is left undone
    (a failed upload, a segment waiting in backoff); 0 only when everything sealed is shipped."""
    if summary.quarantined:
        return EXIT_FINDINGS
    if summary.failed or summary.pending:
        failing = status.get("failing")
        last = failing[0].get("last_error") if isinstance(failing, list) and failing else None
        why = f"; last error: {str(last).splitlines()[0][:300]}" if last else ""
        err(f"{summary.pending} segment(s) not shipped yet ({summary.failed} failed in this pass){why}: "
            "fix the cause and run ship again (the hot copies are kept until confirmed)")
        return EXIT_ERROR
    return EXIT_OK
