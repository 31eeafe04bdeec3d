"""``pipeline keygen --name NAME --out DIR``: an Ed25519 note key pair (NAME.key mode 0600, NAME.pub)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cli import EXIT_ERROR, EXIT_OK
from pipeline.cli._common import add_verb
from pipeline.format.checkpoint import Signer, write_key_pair


def run(args: argparse.Namespace) -> int:
    if Path(args.out).exists() and not Path(args.out).is_dir():
        print(f"keygen: --out {args.out} is a file: give a directory for NAME.key and NAME.pub", file=sys.stderr)
        return EXIT_ERROR
    try:
        signer = Signer.generate(args.name, cosigner=args.witness)
        key_path, pub_path = write_key_pair(signer, Path(args.out))
    except FileExistsError:
        print(f"keygen: a key named {args.name} already exists in {args.out}; not overwriting", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # a NoteError is answered by the CLI (exit 2)
        print(f"keygen: {exc}", file=sys.stderr)
        return EXIT_ERROR
    # the private key is never printed: only where it went and the public verifier key
    print(f"signer key:   {key_path} (mode 0600, keep secret)")
    print(f"verifier key: {pub_path}")
    print(pub_path.read_text().strip())
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "keygen", summary="generate an Ed25519 signing key pair for checkpoints or a witness",
                 description="""
        Generate an Ed25519 signed-note key pair: OUT/NAME.key (private, mode 0600) and
        OUT/NAME.pub (the verifier key to hand to auditors and witnesses).  A log key signs
        the stream's checkpoints; a --witness key cosigns checkpoints in `pipeline witness`.""",
                 examples=[("the log's checkpoint key", "pipeline keygen --name example.com/worm --out /etc/worm/keys"),
                           ("a witness cosigner key",
                            "pipeline keygen --name witness.example.com --out /etc/worm/witness --witness")])
    p.add_argument("--name", required=True, help="key name, e.g. example.com/worm (no spaces or '+')")
    p.add_argument("--out", required=True, help="directory for NAME.key and NAME.pub ('/' in NAME becomes '_')")
    p.add_argument("--witness", action="store_true",
                   help="make a witness cosigner key (tlog-cosignature, alg 0x04) instead of a log key")
    p.set_defaults(func=run)
