"""A real IngestServer over a real HotLog in a process of its own, for tests that measure
the server's memory (VmHWM) or read its stderr.

    python -m tests.ingest_proc HOT_DIR SOCKET_PATH MAX_REQUEST_BYTES [MAX_EVENT_BYTES]

Prints ``{"http": [host, port]}`` on stdout once serving; stops (sealing nothing) when its
stdin closes.  Logs go through pipeline.logsetup (JSON lines on stderr), as in the sidecar.
"""

from __future__ import annotations

import sys

import orjson

from pipeline.hot.writer import HotLog
from pipeline.ingest.server import IngestServer
from pipeline.logsetup import setup_logging


def main() -> None:
    hot, sock, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    event_limit = int(sys.argv[4]) if len(sys.argv) > 4 else min(limit, 1 << 20)
    setup_logging("json")
    log = HotLog(hot, "app", durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(log, socket_path=sock, http_listen="127.0.0.1:0", max_request_bytes=limit,
                       max_event_bytes=event_limit, request_timeout=5.0).start()
    print(orjson.dumps({"http": srv.http_address}).decode(), flush=True)
    sys.stdin.read()
    srv.stop(2)
    log.close(seal=False)


if __name__ == "__main__":
    main()
