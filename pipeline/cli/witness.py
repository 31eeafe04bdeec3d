"""``pipeline witness serve --dir DIR --listen HOST:PORT --key WITNESS.key --trust LOG.pub ...``"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.cli import EXIT_ERROR, EXIT_OK
from pipeline.cli._common import add_verb
from pipeline.format.checkpoint import NoteError, Verifier, load_signer
from pipeline.witness.server import Trust, WitnessState, make_server


def _trust(spec: str) -> list[Trust]:
    # ORIGIN=FILE restricts a key to one origin; a bare FILE trusts the key for any origin
    origin, sep, path = spec.rpartition("=")
    text = Path(path if sep else spec).read_text()
    return [Trust(Verifier.from_string(line), origin if sep else None) for line in text.splitlines() if line.strip()]


def serve(args: argparse.Namespace) -> int:
    try:
        signer = load_signer(args.key)
        trust = [t for spec in args.trust for t in _trust(spec)]
        host, _, port = args.listen.rpartition(":")
        state = WitnessState(Path(args.dir), signer, trust)
        srv = make_server(state, host or "127.0.0.1", int(port))
    except (NoteError, OSError, ValueError) as exc:
        print(f"witness: {exc}", file=sys.stderr)
        return EXIT_ERROR
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    bound_host, bound_port = str(srv.server_address[0]), int(srv.server_address[1])
    print(f"witness {signer.name} listening on http://{bound_host}:{bound_port}/add-checkpoint", flush=True)
    print(f"cosigner key: {signer.verifier().to_string()}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "witness", summary="run a C2SP tlog-witness server", description="""
        A witness remembers the latest checkpoint of each log it trusts and cosigns a new
        one only if it is consistent with it (C2SP tlog-witness): a log cannot show one
        history to the auditor and another to the witness.  `serve` answers add-checkpoint
        over HTTP.""",
                 examples=[("serve on port 8765 for one log",
                            "pipeline witness serve --dir /srv/witness --listen 127.0.0.1:8765 "
                            "--key witness.key --trust worm.pub")])
    wsub = p.add_subparsers(dest="witness_cmd", metavar="CMD")
    wsub.required = True
    s = wsub.add_parser("serve", help="serve add-checkpoint")
    s.add_argument("--dir", required=True, help="state directory (latest checkpoint per origin)")
    s.add_argument("--listen", default="127.0.0.1:8765", help="HOST:PORT (port 0 picks a free port)")
    s.add_argument("--key", required=True, help="witness cosigner key (pipeline keygen --witness)")
    s.add_argument("--trust", action="append", required=True, metavar="[ORIGIN=]LOG.pub",
                   help="log verifier key to trust; repeatable")
    s.set_defaults(func=serve)
