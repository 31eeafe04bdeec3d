"""A real IngestServer over a real HotLog in a process of its own, for tests that measure
the server's memory (VmHWM), read its stderr, or attack it.

    python -m tests.ingest_proc HOT_DIR SOCKET_PATH MAX_REQUEST_BYTES [--max-event-bytes N]
        [--max-connections N] [--request-timeout S] [--backpressure-file PATH]
        [--tls-cert PEM --tls-key PEM [--client-ca PEM] [--allowed-client ID ...]]

Prints ``{"http": [host, port]}`` on stdout once serving; stops when its stdin closes.
Logs go through pipeline.logsetup (JSON lines on stderr), as in the sidecar.  With
``--backpressure-file``, backpressure is on while that file exists.  With ``--tls-cert``
and ``--tls-key`` the HTTP listener speaks TLS (mutual with ``--client-ca``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

from pipeline.hot.writer import HotLog
from pipeline.ingest.server import IngestServer
from pipeline.ingest.tls import TlsSettings
from pipeline.logsetup import setup_logging


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("hot")
    ap.add_argument("socket")
    ap.add_argument("max_request_bytes", type=int)
    ap.add_argument("--max-event-bytes", type=int, default=1 << 20)
    ap.add_argument("--max-connections", type=int, default=1024)
    ap.add_argument("--request-timeout", type=float, default=30.0)
    ap.add_argument("--backpressure-file", default=None)
    ap.add_argument("--tls-cert", default=None)
    ap.add_argument("--tls-key", default=None)
    ap.add_argument("--client-ca", default=None)
    ap.add_argument("--allowed-client", action="append", default=[])
    args = ap.parse_args()
    flag = args.backpressure_file

    def backpressure() -> str | None:
        return "test flag set" if flag is not None and os.path.exists(flag) else None

    tls = None
    if args.tls_cert is not None:
        tls = TlsSettings(Path(args.tls_cert), Path(args.tls_key),
                          Path(args.client_ca) if args.client_ca is not None else None,
                          allowed_clients=tuple(args.allowed_client))
    setup_logging("json")
    log = HotLog(args.hot, "app", durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(log, socket_path=args.socket, http_listen="127.0.0.1:0",
                       max_request_bytes=args.max_request_bytes,
                       max_event_bytes=min(args.max_event_bytes, args.max_request_bytes),
                       max_connections=args.max_connections, request_timeout=args.request_timeout,
                       tls=tls, backpressure=backpressure).start()
    print(orjson.dumps({"http": srv.http_address}).decode(), flush=True)
    sys.stdin.read()
    srv.stop(2)
    log.close(seal=False)


if __name__ == "__main__":
    main()
