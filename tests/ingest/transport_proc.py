"""A real IngestServer (HTTP, syslog, RELP; TLS as configured) over a real HotLog in a
process of its own: the tests start real forwarders against it and may kill -9 it.

    python -m tests.ingest.transport_proc '{"hot": DIR, "http": "127.0.0.1:0", "syslog": ...,
        "relp": ..., "tls_cert": ..., "tls_key": ..., "client_ca": ..., "allowed_clients": [...]}'

Prints ``{"http": [host, port], "syslog": ..., "relp": ...}`` on stdout once serving; stops
when its stdin closes.  Logs are JSON lines on stderr, as in the sidecar.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from pipeline.hot.writer import HotLog
from pipeline.ingest.server import IngestServer
from pipeline.ingest.tls import TlsSettings
from pipeline.logsetup import setup_logging


def main() -> None:
    cfg = orjson.loads(sys.argv[1])
    setup_logging("json")

    def path(key: str) -> Path | None:
        return Path(cfg[key]) if cfg.get(key) else None

    tls = TlsSettings(cert=path("tls_cert"), key=path("tls_key"), client_ca=path("client_ca"),
                      allowed_clients=tuple(cfg.get("allowed_clients", ())))
    log = HotLog(cfg["hot"], "app", durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(log, http_listen=cfg.get("http"), syslog_listen=cfg.get("syslog"),
                       relp_listen=cfg.get("relp"), tls=tls, token=cfg.get("token"),
                       max_syslog_frame=cfg.get("max_syslog_frame", 65536)).start()
    print(orjson.dumps({"http": srv.http_address, "syslog": srv.syslog_address,
                        "relp": srv.relp_address}).decode(), flush=True)
    sys.stdin.read()
    srv.stop(2)
    log.close(seal=False)


if __name__ == "__main__":
    main()
