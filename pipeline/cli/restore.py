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
from pathlib import Path

from pipeline.cli import EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import add_retry_arg, add_verb, err, open_for_reading
from pipeline.cli._progress import progress_bar
from pipeline.verify.restore import RestoredStream, RestoreFailed, restore_log
from pipeline.verify.restore import head_from_seal as head_from_seal  # moved to the library; old import paths
from pipeline.verify.restore import restore_stream as restore_stream


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


def run(args: argparse.Namespace) -> int:
    store = open_for_reading(args.cold, args)  # errors that stop it from running: exit 2, by the CLI
    progress = progress_bar("restore")

    def restored(r: RestoredStream) -> None:
        print(f"restored {r.stream}: {r.segments} segments, {r.records} records, verified, into {r.path}")

    try:
        restore_log(store, args.to, stream=args.stream, progress=progress.phase if progress.enabled else None,
                    on_restored=restored)
    except RestoreFailed as exc:
        progress.close()
        err(f"restore refused: {exc}; nothing was written to {Path(args.to) / exc.finding.stream}")
        return EXIT_FINDINGS
    finally:
        progress.close()
        store.close()
    print(f"next: pipeline verify --hot {args.to}")
    return EXIT_OK
