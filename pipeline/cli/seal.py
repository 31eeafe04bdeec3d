"""``pipeline seal``: seal the active segment of a stream."""

from __future__ import annotations

import argparse

from pipeline.cli import EXIT_ERROR, EXIT_OK
from pipeline.cli._common import add_hot_args, add_verb, err, refuse_wrong_hot
from pipeline.hot.factory import open_hotlog


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "seal", summary="seal the active segment so it can be shipped", description="""
        Close a stream's active segment with a seal record (record count, Merkle root,
        frontier; docs/FORMAT.md) and make the file immutable where the attribute can be set
        (docs/DEPLOYMENT.md, capabilities).  Only sealed segments are shipped; the sidecar
        seals on its own every segment_window, so this is for manual runs and scripts.""",
                 examples=[("seal the active segment of 'auth'", "pipeline seal --hot /var/lib/worm --stream auth")])
    add_hot_args(p, stream_required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refused = refuse_wrong_hot(args.hot, args.stream)
    if refused is not None:
        return refused
    try:
        log = open_hotlog(args.hot, args.stream, heartbeat_interval=0)
    except (OSError, ValueError) as exc:
        err(str(exc))
        return EXIT_ERROR
    try:  # a HotLogError is answered by the CLI (exit 2)
        path = log.seal()
    finally:
        log.close(seal=False)
    print(f"sealed {path.name}" if path else "nothing to seal")
    return EXIT_OK
