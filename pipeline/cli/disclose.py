"""``pipeline disclose``: hand one encrypted event to a third party, with its inclusion proof
and the key that opens it and no other record; ``--open`` checks and opens such a document."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import add_verb, err


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "disclose", summary="disclose one encrypted event: record, inclusion proof, its own key",
                 description="""
        Print a disclosure document for the event at --seq: the inclusion proof of its
        record against the newest signed checkpoint (as 'pipeline prove' prints it), the
        segment it is in, and its record key k(seq), which opens that record and no other
        (docs/ENCRYPTION.md).  The hot tier is verified first.  A recipient checks and
        opens it with --open (and --vkey for the checkpoint's signature).  Exit 0 done /
        valid, 1 the proof or the key does not hold, 2 could not run.""",
                 examples=[("disclose seq 42 of stream auth",
                            "pipeline disclose --identity auditor.key --hot /var/lib/worm --stream auth --seq 42"),
                           ("check and open a disclosure", "pipeline disclose --open event42.json --vkey worm.pub")])
    p.add_argument("--identity", type=Path, help="age identity file of a recipient")
    p.add_argument("--hot", type=Path, help="hot-tier directory")
    p.add_argument("--stream", help="stream name (needed when the hot tier holds several)")
    p.add_argument("--seq", type=int, help="the event's seq")
    p.add_argument("--no-proof", action="store_true", help="disclose without an inclusion proof (no checkpoint)")
    p.add_argument("--open", dest="open_doc", help="check and open a disclosure document (file, or - for stdin)")
    p.add_argument("--vkey", action="append", help="with --open: the log's verifier key file (repeatable); "
                   "without it only the key is checked, not the proof")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return open_document(args) if args.open_doc else make_document(args)


def make_document(args: argparse.Namespace) -> int:
    from pipeline.cli._common import streams_of
    from pipeline.crypt.audit import NotVerified, disclosure
    from pipeline.crypt.reader import OpenError
    from pipeline.errors import PipelineError

    if args.identity is None or args.hot is None or args.seq is None:
        err("disclose needs --identity, --hot and --seq (or --open DOC)")
        return EXIT_ERROR
    try:
        streams = [args.stream] if args.stream else streams_of(args.hot, None)
        if len(streams) != 1:
            err(f"the hot tier holds {len(streams)} streams: name one with --stream")
            return EXIT_ERROR
        doc = disclosure(args.hot, streams[0], args.seq, args.identity, proof=not args.no_proof)
    except NotVerified as exc:
        for f in exc.findings:
            err(f"{f.segment} seq {f.seq}: {f.reason}: {f.message}")
        return EXIT_FINDINGS
    except OpenError as exc:
        err(str(exc))
        return EXIT_FINDINGS
    except PipelineError as exc:
        err(str(exc))
        return EXIT_ERROR
    print(json.dumps(doc, indent=2))
    return EXIT_OK


def open_document(args: argparse.Namespace) -> int:
    from pipeline.crypt.audit import open_disclosure
    from pipeline.crypt.reader import OpenError
    from pipeline.format.checkpoint import NoteError, load_verifiers

    try:
        raw = sys.stdin.read() if args.open_doc == "-" else Path(args.open_doc).read_text()
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            where = "standard input" if args.open_doc == "-" else args.open_doc
            raise ValueError(f"{where} is not JSON ({exc}): pass the document 'pipeline disclose' printed") from None
        if not isinstance(doc, dict):
            raise ValueError("a disclosure document is a JSON object")
        verifiers = load_verifiers(args.vkey) if args.vkey else None
        event, problem = open_disclosure(doc, verifiers)
    except OpenError as exc:
        print(f"INVALID: the key does not open this record: {exc}")
        return EXIT_FINDINGS
    except (OSError, ValueError, NoteError) as exc:
        err(f"could not check the disclosure: {exc}")
        return EXIT_ERROR
    if problem is not None:
        print(f"INVALID: {problem}")
        return EXIT_FINDINGS
    print(json.dumps(event))
    print("VALID: the key opens this record" + (", included under a signed checkpoint" if verifiers else
                                                  " (proof not checked: pass --vkey)"), file=sys.stderr)
    return EXIT_OK
