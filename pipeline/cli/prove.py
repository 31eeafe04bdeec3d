"""``pipeline prove``: inclusion proof of one record, or consistency proof between two checkpoints."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.cli import EXIT_ERROR, EXIT_OK
from pipeline.cli._common import add_verb, refuse_wrong_hot
from pipeline.format.checkpoint import NoteError
from pipeline.proofs import ProveError, prove_consistency, prove_inclusion


def run(args: argparse.Namespace) -> int:
    refused = refuse_wrong_hot(Path(args.hot), args.stream)
    if refused is not None:
        return refused
    stream_dir = Path(args.hot) / args.stream
    try:
        if args.seq is not None:
            doc = prove_inclusion(stream_dir, args.seq, size=args.size)
        elif args.from_size is not None:
            doc = prove_consistency(stream_dir, args.from_size, args.to_size)
        else:
            print("prove: give --seq N, or --from-size A [--to-size B]", file=sys.stderr)
            return EXIT_ERROR
    except (ProveError, NoteError, OSError) as exc:
        print(f"prove: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(doc, indent=2))
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "prove", summary="print a Merkle inclusion or consistency proof against a signed checkpoint",
                 description="""
        Print a proof as JSON, bundled with the signed checkpoint it is checked against:
        with --seq, that one record is in the log (inclusion); with --from-size, that the log
        at a later checkpoint extends the earlier one without rewriting it (consistency).
        Anyone can check it offline with `pipeline verify-proof` (docs/PROOFS.md).""",
                 examples=[("prove that record 1234 of 'auth' is in the latest checkpoint",
                            "pipeline prove --hot /var/lib/worm --stream auth --seq 1234"),
                           ("prove that the checkpoint of size 8192 extends the one of size 4096",
                            "pipeline prove --hot /var/lib/worm --stream auth --from-size 4096 --to-size 8192")])
    p.add_argument("--hot", required=True, help="hot-tier directory")
    p.add_argument("--stream", required=True, help="stream name")
    p.add_argument("--seq", type=int, help="record to prove (inclusion proof)")
    p.add_argument("--size", type=int, help="with --seq: use the stored checkpoint of this size (default latest)")
    p.add_argument("--from-size", type=int, help="consistency proof from the checkpoint of this size")
    p.add_argument("--to-size", type=int, help="... to the checkpoint of this size (default latest)")
    p.set_defaults(func=run)
