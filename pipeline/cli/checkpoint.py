"""``pipeline checkpoint --hot DIR --stream NAME``: print the latest signed checkpoint note."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cli import EXIT_ERROR, EXIT_OK
from pipeline.cli._common import add_verb, refuse_wrong_hot
from pipeline.format.checkpoint import CheckpointStore


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
    p = add_verb(sub, "checkpoint", summary="print the latest signed checkpoint of a stream", description="""
        Print a stream's signed checkpoint note (C2SP signed-note: origin, tree size, root
        hash, signatures), as the writer stored it.  Give it to an auditor or a witness; it is
        what `pipeline prove` proofs are checked against (docs/PROOFS.md).""",
                 examples=[("the latest checkpoint of 'auth'", "pipeline checkpoint --hot /var/lib/worm --stream auth"),
                           ("the stored checkpoint of tree size 4096",
                            "pipeline checkpoint --hot /var/lib/worm --stream auth --size 4096")])
    p.add_argument("--hot", required=True, help="hot-tier directory")
    p.add_argument("--stream", required=True, help="stream name")
    p.add_argument("--size", type=int, help="print the stored checkpoint of exactly this tree size")
    p.set_defaults(func=run)
