"""``pipeline run``: the sidecar (writer + ingest + shipper + checkpoints + ops endpoints)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli import EXIT_ERROR
from pipeline.cli._common import add_verb, err


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "run", summary="run the sidecar: ingest, hot tier, shipping, checkpoints, /metrics",
                 description="""
        Run the sidecar until SIGTERM: ingest events (Unix socket, HTTP), write them to the
        hot tier, seal segments, ship them to locked cold storage, publish checkpoints, and
        serve /metrics, /healthz and /readyz.  Settings come from the TOML file and
        PIPELINE_<SECTION>_<KEY> environment variables (README, "Configuration reference"); --check
        prints the resulting configuration and exits without starting anything.""",
                 examples=[("check a configuration file", "pipeline run --config /etc/worm/pipeline.toml --check"),
                           ("run with it", "pipeline run --config /etc/worm/pipeline.toml")])
    p.add_argument("--config", type=Path, default=None,
                   help="TOML configuration file (PIPELINE_<SECTION>_<KEY> variables override it)")
    p.add_argument("--check", action="store_true", help="validate the configuration, print it and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError, load_config

    try:
        config = load_config(args.config)
        config.require("cold.url")
    except ConfigError as exc:
        err(exc.diagnostics())
        return EXIT_ERROR
    from pipeline.checkpoint import NoteError, configured_signer

    try:
        # the signing key exactly as the sidecar will load it: `--check` passes only what starts
        configured_signer(config.signing.key_file)
    except NoteError as exc:
        err(f"[signing]: {exc}")
        return EXIT_ERROR
    if args.check:
        import orjson

        print(orjson.dumps(config.redacted_dict(), option=orjson.OPT_INDENT_2).decode())
        return 0
    from pipeline import sidecar
    from pipeline.cold import ColdError
    from pipeline.hot.writer import HotLogError

    try:
        code = sidecar.run(args.config)
    except (ColdError, HotLogError, OSError, ConfigError, NoteError) as exc:
        err(exc.diagnostics() if hasattr(exc, "diagnostics") else str(exc))
        return EXIT_ERROR
    # The drain has made the ledger and the hot tier consistent; an upload still retrying
    # in a worker thread may be abandoned (create-only puts make the next start converge),
    # so do not wait for it at interpreter exit.
    import logging
    import os
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
