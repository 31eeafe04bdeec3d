"""``pipeline checkpoint --hot DIR --stream NAME``: print the latest signed checkpoint note."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cli import EXIT_ERROR, EXIT_OK
from pipeline.cli._common import refuse_wrong_hot
from pipeline.hot.checkpoints import CheckpointStore


def run(args: argparse.Namespace) -> int:
    refused = refuse_wrong_hot(Path(args.hot), args.stream)
    if refused is not None:
        return refused
    store = CheckpointStore(Path(args.hot) / args.stream)
    note = store.latest() if args.size is None else store.by_size(args.size)
    if note is None:
        which = "no checkpoint" if args.size is None else f"no checkpoint of size {args.size}"
        print(f"checkpoint: {which} stored under {store.dir}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(note.decode())
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("checkpoint", help="print the latest signed checkpoint of a stream")
    p.add_argument("--hot", required=True, help="hot-tier directory")
    p.add_argument("--stream", required=True)
    p.add_argument("--size", type=int, help="print the stored checkpoint of exactly this tree size")
    p.set_defaults(func=run)
