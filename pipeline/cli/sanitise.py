"""``pipeline sanitise --check FILE``: a dry run of redaction on sample NDJSON.

Nothing is written anywhere: each line is prepared exactly as ingest would prepare it
(the ``[sanitise]`` rules of ``--config`` and ``PIPELINE_SANITISE_*``, or the built-in
rules) and the result is reported: which rules fired on which line, the event as it would
be stored (markers only, never a secret: the input itself is not echoed), and lines that
would be refused.  Exit 0: nothing would be redacted or refused; 1: something would
(findings about the data); 2: could not run (bad configuration, unreadable file).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import IO

import orjson

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import add_verb, err
from pipeline.sanitise import InvalidEvent, Sanitiser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "sanitise", summary="dry-run redaction on sample NDJSON (nothing is written)",
                 description=__doc__ or "",
                 examples=[("what the built-in rules would redact or refuse in sample.ndjson",
                            "pipeline sanitise --check sample.ndjson"),
                           ("with the sidecar's [sanitise] rules, from standard input, as JSON",
                            "pipeline sanitise --check - --config /etc/worm/pipeline.toml --json < sample.ndjson")])
    p.add_argument("--check", required=True, metavar="FILE",
                   help="NDJSON file of sample events ('-' for standard input)")
    p.add_argument("--config", type=Path, default=None, help="TOML configuration whose [sanitise] rules apply")
    p.add_argument("--json", action="store_true", help="one JSON report per line instead of text")
    p.set_defaults(func=run)


def _sanitiser(config: Path | None) -> Sanitiser:
    import os

    from pipeline.config import load_config

    if config is not None:
        cfg = load_config(config)
    else:  # only the [sanitise] variables matter here; the hot directory is not used
        environ = {k: v for k, v in os.environ.items() if k.startswith("PIPELINE_SANITISE_")}
        cfg = load_config(None, {**environ, "PIPELINE_HOT_DIR": "/nonexistent-unused"})
    sanitiser: Sanitiser = cfg.sanitise.sanitiser(cfg.ingest.max_event_bytes)
    return sanitiser


def run(args: argparse.Namespace) -> int:
    sanitiser = _sanitiser(args.config)  # a ConfigError is answered by the CLI (exit 2)
    try:
        stream: IO[bytes] = sys.stdin.buffer if args.check == "-" else open(args.check, "rb")  # noqa: SIM115
    except OSError as exc:
        err(f"{args.check}: cannot read: {exc.strerror or exc}")
        return EXIT_ERROR
    totals: Counter[str] = Counter()
    lines = redacted = invalid = 0
    out = sys.stdout
    with stream:
        for lineno, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            lines += 1
            try:
                data, fired = sanitiser.explain_json(raw)
            except InvalidEvent as exc:
                invalid += 1
                if args.json:
                    out.write(orjson.dumps({"line": lineno, "refused": exc.reason, "detail": exc.detail}).decode()
                              + "\n")
                else:
                    out.write(f"line {lineno}: would be refused: {exc.detail}\n")
                continue
            if not fired:
                continue
            redacted += 1
            totals.update(fired)
            if args.json:
                out.write(orjson.dumps({"line": lineno, "rules": fired, "stored": orjson.Fragment(data)}).decode()
                          + "\n")
            else:
                rules = ", ".join(f"{r} x{n}" if n > 1 else r for r, n in sorted(fired.items()))
                out.write(f"line {lineno}: would redact {rules}\n  stored as: {data.decode()}\n")
    summary = (f"{lines} event(s): {redacted} would be redacted, {invalid} refused, "
               f"{lines - redacted - invalid} stored unchanged")
    if totals:
        summary += "; by rule: " + ", ".join(f"{r} {n}" for r, n in sorted(totals.items()))
    if args.json:
        out.write(orjson.dumps({"events": lines, "redacted": redacted, "refused": invalid,
                                "by_rule": dict(sorted(totals.items()))}).decode() + "\n")
    else:
        out.write(summary + "\n")
    return EXIT_FINDINGS if redacted or invalid else EXIT_OK
