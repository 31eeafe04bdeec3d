"""``pipeline prove``: inclusion proof of one record, or consistency proof between two checkpoints."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.checkpoint import NoteError
from pipeline.cli import EXIT_ERROR, EXIT_OK
from pipeline.cli._common import refuse_wrong_hot
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
    p = sub.add_parser("prove", help="print a Merkle inclusion or consistency proof against a signed checkpoint")
    p.add_argument("--hot", required=True, help="hot-tier directory")
    p.add_argument("--stream", required=True)
    p.add_argument("--seq", type=int, help="record to prove (inclusion proof)")
    p.add_argument("--size", type=int, help="with --seq: use the stored checkpoint of this size (default latest)")
    p.add_argument("--from-size", type=int, help="consistency proof from the checkpoint of this size")
    p.add_argument("--to-size", type=int, help="... to the checkpoint of this size (default latest)")
    p.set_defaults(func=run)
