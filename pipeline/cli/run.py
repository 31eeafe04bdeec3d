"""``pipeline run``: the sidecar (writer + ingest + shipper + checkpoints + ops endpoints)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
    from pipeline.config import load_config

    config = load_config(args.config)  # a ConfigError is answered by the CLI (exit 2)
    config.require("cold.url")
    from pipeline.format.checkpoint import NoteError, configured_signer

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
    busy = listener_problem(config)
    if busy is not None:
        err(busy)
        return EXIT_ERROR
    from pipeline import sidecar

    try:
        code = sidecar.run(args.config)  # a PipelineError is answered by the CLI (exit 2)
    except OSError as exc:
        err(str(exc))
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


def listener_problem(config: Any) -> str | None:
    """Try each configured TCP listener before anything is created (hot directory, stream,
    ledger): a port in use is named by its configuration key.  The listeners bind again for
    real right after; this check only turns the common mistake into a clear refusal."""
    import errno
    import socket

    from pipeline.config import parse_listen

    for key, value in (("ops.listen", config.ops.listen), ("ingest.http", config.ingest.http),
                       ("ingest.syslog", config.ingest.syslog), ("ingest.relp", config.ingest.relp)):
        if not value:
            continue
        host, port = parse_listen(value)
        if port == 0:
            continue
        bind_host = "" if host == "*" else host
        try:
            infos = socket.getaddrinfo(bind_host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except OSError as exc:
            return f"{key} = {value!r}: cannot resolve {host!r} ({exc.strerror or exc}): fix {key}"
        family, kind, proto, _, addr = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return (f"{key} = {value!r}: the address is already in use (another `pipeline run` or "
                            f"service?): stop it or choose a free port for {key}; nothing was created")
                return f"{key} = {value!r}: cannot listen there ({exc.strerror or exc}): fix {key}; nothing was created"
    return None
