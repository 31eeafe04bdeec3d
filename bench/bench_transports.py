"""Ingest transports side by side (issue 17): events/s and p99 acknowledgement latency for
NDJSON over the Unix socket, HTTP plain, HTTP mutual TLS (keep-alive), OTLP/HTTP protobuf
(plain and mutual TLS), syslog over TLS and RELP over TLS, each against plain NDJSON HTTP
measured in the same run, and the sidecar's RSS.

    .venv/bin/python bench/bench_transports.py [--seconds 3] [--rounds 2] [--batch 1000] [--clients 2]

Two server processes (a real IngestServer over a real HotLog, durability "group"): one
plaintext (Unix socket, HTTP, RELP), one with mutual TLS on every TCP listener (HTTP,
syslog, RELP), certificates generated here.  Contenders run in rounds, interleaved, each
for --seconds with --clients client processes; the figures are the medians over rounds.

- Unix socket, HTTP: each client sends a batch of --batch NDJSON events and waits for the
  answer (the socket answers every line; HTTP one 200 per batch).  Latency: batch sent to
  batch acknowledged.
- OTLP: a protobuf ExportLogsServiceRequest of --batch records as the Python SDK's
  exporter sends it (resource with 3 attributes, one scope, records with body, 5
  attributes, trace and span ids, severity, both timestamps) to ``POST /v1/logs``.  "HTTP
  NDJSON of the OTLP events" sends exactly the JSON those records become (docs/FORMAT.md
  §3.1) to ``/v1/events``: both store the same events, so the ratio of the two is what
  decoding OTLP costs.
- RELP: each client keeps one window of --batch ``syslog`` transactions in flight and
  waits for all their ``rsp``; latency as above.
- Syslog over TLS has no acknowledgement: events/s is messages sent until the server
  reports them durable (its stored count), over the elapsed time; no latency.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import multiprocessing as mp
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

EVENT = {"actor": "svc-orders", "action": "order.update", "resource": "orders/2026/11/000123456",
         "source_ip": "10.20.30.40", "outcome": "success", "detail": "status changed to shipped"}
# what each HTTP kind posts: (path, content type, body of --batch events)
HTTP_KINDS = ("http", "https", "otlp", "otlps", "otlp-ndjson")


def _kv(key: str, value: Any) -> Any:
    from opentelemetry.proto.common.v1 import common_pb2

    kv = common_pb2.KeyValue(key=key)
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.string_value = value
    return kv


def otlp_request(n: int) -> bytes:
    """What the Python SDK's exporter sends for n records of one logger."""
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

    req = logs_service_pb2.ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend([_kv("service.name", "orders"), _kv("service.version", "4.2.0"),
                                   _kv("host.name", "node-17")])
    sl = rl.scope_logs.add()
    sl.scope.name, sl.scope.version = "orders.audit", "1.0.0"
    now = time.time_ns()
    for i in range(n):
        r = sl.log_records.add(time_unix_nano=now + i, observed_time_unix_nano=now + i + 1000, severity_number=9,
                               severity_text="INFO", trace_id=os.urandom(16), span_id=os.urandom(8), flags=1)
        r.body.string_value = f"order {i} status changed to shipped"
        r.attributes.extend([_kv("actor", "svc-orders"), _kv("action", "order.update"),
                             _kv("resource", f"orders/2026/11/{i:09d}"), _kv("source_ip", "10.20.30.40"),
                             _kv("ok", True)])
    data: bytes = req.SerializeToString()
    return data


def ndjson_of(body: bytes) -> bytes:
    """The events an OTLP request becomes, as NDJSON: the same data over /v1/events."""
    from pipeline.ingest import otlp

    events = [item for chunk in otlp.iter_events(body, otlp.PROTOBUF, 1 << 30) for _n, item in chunk]
    if not all(isinstance(x, dict) for x in events):
        raise RuntimeError("a benchmark OTLP record was refused by the decoder")
    return b"".join(orjson.dumps(x) + b"\n" for x in events)


def http_request(kind: str, batch: int) -> tuple[str, str, bytes]:
    if kind in ("otlp", "otlps"):
        return "/v1/logs", "application/x-protobuf", otlp_request(batch)
    if kind == "otlp-ndjson":
        return "/v1/events", "application/x-ndjson", ndjson_of(otlp_request(batch))
    return "/v1/events", "application/x-ndjson", b"".join(orjson.dumps(EVENT) + b"\n" for _ in range(batch))


SYSLOG = (b"<134>1 2026-12-06T18:00:00.000000Z web-1 orders 811 audit "
          b'[audit@32473 actor="svc-orders" outcome="success"] order.update orders/2026/11/000123456 shipped')


# ---------------------------------------------------------------------- server process

def serve(cfg: dict[str, Any]) -> None:
    """The server: prints its addresses, then answers "count" on stdin with events stored."""
    from pipeline.hot.writer import HotLog
    from pipeline.ingest.server import IngestServer
    from pipeline.ingest.tls import TlsSettings

    class Counter:
        appended = 0

        def observe_appended(self, events: int, nbytes: int) -> None:
            self.appended += events

        def observe_rejected(self, reason: str, count: int = 1) -> None:
            pass

        def observe_request(self, transport: str, code: str) -> None:
            pass

        def observe_ack(self, transport: str, seconds: float) -> None:
            pass

        def observe_tls_handshake_failure(self, listener: str, reason: str) -> None:
            pass

    from pipeline.logsetup import setup_logging

    setup_logging("json")  # warnings (refused connections, storage failures) on stderr
    counter = Counter()
    def path(key: str) -> Path | None:
        return Path(cfg[key]) if cfg.get(key) else None

    tls = TlsSettings(cert=path("cert"), key=path("key"), client_ca=path("ca"))
    log = HotLog(cfg["hot"], "bench", durability="group", heartbeat_interval=0, segment_window=0)
    srv = IngestServer(log, socket_path=cfg.get("socket"), http_listen="127.0.0.1:0",
                       syslog_listen="127.0.0.1:0", relp_listen="127.0.0.1:0", tls=tls,
                       metrics=counter).start()
    print(orjson.dumps({"http": srv.http_address, "syslog": srv.syslog_address,
                        "relp": srv.relp_address}).decode(), flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print(counter.appended, flush=True)
    srv.stop(2)
    log.close(seal=False)


class Server:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", orjson.dumps(cfg).decode()],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.addr = orjson.loads(self.proc.stdout.readline())
        self.lock = threading.Lock()

    def count(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            self.proc.stdin.write("count\n")
            self.proc.stdin.flush()
            return int(self.proc.stdout.readline())

    def rss_mb(self, field: str = "VmRSS") -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far (/proc/PID/stat)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


# ---------------------------------------------------------------------- clients

def _tls_client(pki: dict[str, str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.load_cert_chain(pki["client_cert"], pki["client_key"])
    return ctx


def client(kind: str, target: Any, pki: dict[str, str] | None, seconds: float, batch: int,
           out: Any) -> None:
    body = b"".join(orjson.dumps(EVENT) + b"\n" for _ in range(batch))
    lat: list[float] = []
    n = 0
    end = time.monotonic() + seconds
    ctx = _tls_client(pki) if pki is not None else None
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX)
        s.connect(target)
        while time.monotonic() < end:
            t0 = time.monotonic()
            s.sendall(body)
            got = 0
            while got < batch:
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("socket closed")
                got += chunk.count(b"\n")
            lat.append(time.monotonic() - t0)
            n += batch
        s.close()
    elif kind in HTTP_KINDS:
        host, port = target
        path, ctype, body = http_request(kind, batch)
        c: http.client.HTTPConnection = (http.client.HTTPSConnection(host, port, context=ctx) if ctx is not None
                                         else http.client.HTTPConnection(host, port))
        while time.monotonic() < end:
            t0 = time.monotonic()
            c.request("POST", path, body=body, headers={"Content-Type": ctype})
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")
            lat.append(time.monotonic() - t0)
            n += batch
        c.close()
    elif kind == "relp":
        raw = socket.create_connection(tuple(target))
        s = ctx.wrap_socket(raw, server_hostname="localhost") if ctx is not None else raw
        offers = b"relp_version=0\nrelp_software=bench\ncommands=syslog"
        s.sendall(b"1 open %d %s\n" % (len(offers), offers))
        answer = b""
        while not answer.endswith(b"commands=syslog\n"):  # the open answer, whole
            more = s.recv(4096)
            if not more:
                raise RuntimeError("RELP connection closed")
            answer += more
        txnr = 2
        while time.monotonic() < end:
            t0 = time.monotonic()
            s.sendall(b"".join(b"%d syslog %d %s\n" % (txnr + i, len(SYSLOG), SYSLOG) for i in range(batch)))
            txnr += batch
            got = 0
            while got < batch:
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("RELP connection closed")
                got += chunk.count(b"\n")  # one LF per "TXNR rsp 6 200 OK\n"
            lat.append(time.monotonic() - t0)
            n += batch
        s.close()
    elif kind == "syslog":
        raw = socket.create_connection(tuple(target))
        s = ctx.wrap_socket(raw, server_hostname="localhost") if ctx is not None else raw
        frame = b"%d %s" % (len(SYSLOG), SYSLOG)
        chunk = frame * batch
        while time.monotonic() < end:
            s.sendall(chunk)
            n += batch
        # half-close and read to the end: closing a socket with unread bytes (TLS 1.3 session
        # tickets) makes the kernel send a reset, and the server's kernel then drops what the
        # sidecar had not read yet (syslog has no acknowledgement to notice that)
        s.shutdown(socket.SHUT_WR)
        while s.recv(1 << 16):
            pass
        s.close()
    out.put((n, lat))


def run(kind: str, target: Any, pki: dict[str, str] | None, args: argparse.Namespace,
        server: Server) -> tuple[float, float | None, float]:
    # spawned, not forked: a forked client would inherit the servers' stdin pipes (and the
    # sampler thread's state), so a server could not see its stdin close
    ctx = mp.get_context("spawn")
    out: Any = ctx.Queue()
    before = server.count()
    cpu0 = server.cpu_seconds()
    t0 = time.monotonic()
    procs = [ctx.Process(target=client, args=(kind, target, pki, args.seconds, args.batch, out))
             for _ in range(args.clients)]
    for p in procs:
        p.start()
    results = [out.get(timeout=args.seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    sent = sum(r[0] for r in results)
    if kind == "syslog":  # no acknowledgement: wait until the server has stored them all
        while server.count() - before < sent:
            time.sleep(0.02)
    elapsed = time.monotonic() - t0
    cpu_per_event = (server.cpu_seconds() - cpu0) / max(1, server.count() - before)
    lat = sorted(x for r in results for x in r[1])
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else None
    return sent / elapsed, p99, cpu_per_event


def remove_tree(path: Path) -> None:
    """rm -r, clearing the append-only attribute the hot log sets on its segments."""
    from pipeline.hot import attr

    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                attr.clear_protection(os.path.join(root, name))
    shutil.rmtree(path, ignore_errors=True)


def make_pki(d: Path) -> dict[str, str]:
    from tests.ingest.certs import CA

    ca = CA(d)
    server = ca.server()
    client_cert = ca.issue("bench-client", uris=("spiffe://bench/client",))
    return {"ca": str(ca.path), "cert": str(server.cert), "key": str(server.key),
            "client_cert": str(client_cert.cert), "client_key": str(client_cert.key)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--only", default=None,
                    help="comma-separated kinds to run besides the baseline: "
                         "unix,https,otlp-ndjson,otlp,otlps,syslog,relp")
    ap.add_argument("--serve", default=None)
    args = ap.parse_args()
    if args.serve is not None:
        serve(orjson.loads(args.serve))
        return
    tmp = tempfile.mkdtemp(prefix="bench-transports-")
    try:
        base = Path(tmp)
        pki = make_pki(base)
        plain = Server({"hot": str(base / "hot-plain"), "socket": str(base / "ingest.sock")})
        mtls = Server({"hot": str(base / "hot-tls"), "cert": pki["cert"], "key": pki["key"], "ca": pki["ca"]})
        contenders: list[tuple[str, str, Any, dict[str, str] | None, Server]] = [
            ("HTTP plain (baseline)", "http", tuple(plain.addr["http"]), None, plain),
            ("Unix socket NDJSON", "unix", str(base / "ingest.sock"), None, plain),
            ("HTTP mutual TLS", "https", tuple(mtls.addr["http"]), pki, mtls),
            ("HTTP NDJSON of OTLP events", "otlp-ndjson", tuple(plain.addr["http"]), None, plain),
            ("OTLP/HTTP protobuf", "otlp", tuple(plain.addr["http"]), None, plain),
            ("OTLP/HTTP mutual TLS", "otlps", tuple(mtls.addr["http"]), pki, mtls),
            ("syslog TLS (RFC 5425)", "syslog", tuple(mtls.addr["syslog"]), pki, mtls),
            ("RELP TLS", "relp", tuple(mtls.addr["relp"]), pki, mtls),
            ("RELP plain", "relp", tuple(plain.addr["relp"]), None, plain),
        ]
        if args.only:
            keep = set(args.only.split(","))
            contenders = [c for c in contenders if c[0].startswith("HTTP plain") or c[1] in keep]
        figures: dict[str, list[tuple[float, float | None, float]]] = {c[0]: [] for c in contenders}
        rss_peak = 0.0
        stop = threading.Event()

        def sample() -> None:
            nonlocal rss_peak
            while not stop.is_set():
                rss_peak = max(rss_peak, plain.rss_mb(), mtls.rss_mb())
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            for _round in range(args.rounds):
                for name, kind, target, p, server in contenders:
                    figures[name].append(run(kind, target, p, args, server))
                    print(f"  round {_round + 1}: {name}: {figures[name][-1][0]:.0f} events/s", flush=True)
        finally:
            stop.set()
            sampler.join()
            hwm = max(plain.rss_mb("VmHWM"), mtls.rss_mb("VmHWM"))
            plain.stop()
            mtls.stop()
    finally:
        remove_tree(Path(tmp))
    base_rate = statistics.median(r for r, _p, _c in figures["HTTP plain (baseline)"])
    print(f"batch {args.batch} events, {args.clients} clients, {args.seconds:g} s x {args.rounds} rounds "
          f"(medians); load average {os.getloadavg()[0]:.2f}")
    print(f"{'transport':28} {'events/s':>10} {'vs HTTP plain':>14} {'p99 ack ms':>11} {'server CPU us/event':>20}")
    for name in figures:
        rate = statistics.median(r for r, _p, _c in figures[name])
        p99s = [p for _r, p, _c in figures[name] if p is not None]
        p99 = f"{statistics.median(p99s):.1f}" if p99s else "n/a"
        cpu = statistics.median(c for _r, _p, c in figures[name]) * 1e6
        print(f"{name:28} {rate:10.0f} {rate / base_rate:13.2f}x {p99:>11} {cpu:20.1f}")
    print(f"sidecar RSS: peak sampled {rss_peak:.0f} MB, VmHWM {hwm:.0f} MB (largest of the two servers)")


if __name__ == "__main__":
    main()
