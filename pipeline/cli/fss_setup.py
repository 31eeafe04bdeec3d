"""``pipeline fss-setup --hot DIR --stream NAME``: create the forward-secure seal key.

Prints the verification key once; the host never stores it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cli import EXIT_ERROR, EXIT_OK
from pipeline.cli._common import add_verb, err
from pipeline.format.record import validate_stream_name
from pipeline.fss import DEFAULT_INTERVAL, FssError, FssSealer


def run(args: argparse.Namespace) -> int:
    # fss-setup may come before a stream's first append (it creates the stream's key), but
    # only inside an existing directory: a mistyped --hot must not become a new hot tier
    if not Path(args.hot).is_dir():
        err(f"hot directory {args.hot} does not exist or is not a directory: check --hot (nothing was created)")
        return EXIT_ERROR
    try:
        validate_stream_name(args.stream)
    except ValueError as exc:
        err(str(exc))
        return EXIT_ERROR
    stream_dir = Path(args.hot) / args.stream
    try:
        vk = FssSealer.setup(stream_dir, interval=args.epoch_seconds)
    except (FssError, OSError) as exc:
        print(f"fss-setup: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print("Forward-secure seal key created. Verification key (shown ONCE; store it offline, e.g. on paper):")
    print()
    print(vk.to_string())
    print()
    print("Anyone holding it can verify AND forge seals (symmetric scheme): give it only to auditors.")
    print(f"Check seals with: pipeline verify --fss-key '<key>' --hot {args.hot}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "fss-setup", summary="create the forward-secure sealing key for a stream", description="""
        Create the forward-secure sealing (FSS) key of a stream.  The host keeps only the
        evolving sealing key, which moves forward every epoch and cannot be turned back: an
        attacker who takes the host later cannot forge seals of earlier epochs.  The
        verification key is printed ONCE and never stored on the host: keep it off the
        host and pass it to `pipeline verify --fss-key`.""",
                 examples=[("set up FSS for 'auth' with 15-minute epochs (900 seconds)",
                            "pipeline fss-setup --hot /var/lib/worm --stream auth --epoch-seconds 900")])
    p.add_argument("--hot", required=True, help="hot-tier directory")
    p.add_argument("--stream", required=True, help="stream name")
    p.add_argument("--epoch-seconds", type=int, default=DEFAULT_INTERVAL,
                   help=f"epoch length in seconds (default {DEFAULT_INTERVAL})")
    p.set_defaults(func=run)
