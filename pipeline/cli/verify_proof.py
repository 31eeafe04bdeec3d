"""``pipeline verify-proof --vkey FILE PROOF.json``: offline check; exit 0 valid, 1 invalid, 2 could not run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import add_verb
from pipeline.format.checkpoint import NoteError, load_verifiers
from pipeline.proofs import verify_proof_document


def run(args: argparse.Namespace) -> int:
    try:
        verifiers = load_verifiers(args.vkey)
        raw = sys.stdin.read() if args.proof == "-" else Path(args.proof).read_text()
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("proof must be a JSON object")
        problem = verify_proof_document(doc, verifiers)
    except (OSError, ValueError, NoteError) as exc:
        print(f"verify-proof: could not check: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if problem is not None:
        print(f"INVALID: {problem}")
        return EXIT_FINDINGS
    if "index" in doc:
        kind = f"inclusion of index {doc['index']} in tree {doc['tree_size']}"
    else:
        kind = f"consistency of tree {doc['old_size']} with tree {doc['size']}"
    print(f"VALID: {kind}, signed checkpoint verified")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "verify-proof", summary="verify a proof printed by `pipeline prove`, offline", description="""
        Check a proof from `pipeline prove` without access to the log: the checkpoint's
        signature against the verifier key(s), then the inclusion or consistency proof
        against the checkpoint's root.  Exit 0 valid, 1 invalid, 2 could not run.""",
                 examples=[("check a proof file", "pipeline verify-proof --vkey worm.pub proof.json"),
                           ("check a proof from standard input", "pipeline verify-proof --vkey worm.pub -")])
    p.add_argument("--vkey", action="append", required=True, help="log verifier key file (NAME.pub); repeatable")
    p.add_argument("proof", help="proof JSON file, or - for standard input")
    p.set_defaults(func=run)
