"""OTLP/HTTP protobuf ingest against plain NDJSON HTTP, side by side in one run (issue 17).

    .venv/bin/python bench/bench_otlp_ingest.py [--seconds 8] [--rounds 3] [--clients 2] [--connections 4]

One IngestServer over a HotLog (group commit, fsync) in a process of its own
(tests/ingest_proc.py, what the memory tests use); client processes keep --connections
keep-alive connections each and POST requests of --batch records back to back.  The two
bodies carry the same events: the NDJSON body is exactly the JSON the OTLP records become
(docs/FORMAT.md §3.1), so the difference is what decoding OTLP costs.  Rounds alternate
(NDJSON, OTLP, NDJSON, ...) so that load from other processes falls on both alike; the
medians are printed, with p99 acknowledgement latency (request sent to 200 received) and
the server's peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2  # noqa: E402
from opentelemetry.proto.common.v1 import common_pb2  # noqa: E402

from pipeline.hot import attr  # noqa: E402
from pipeline.ingest import otlp  # noqa: E402


def _kv(key: str, value: Any) -> common_pb2.KeyValue:
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
    return req.SerializeToString()


def ndjson_of(body: bytes) -> bytes:
    """The events the OTLP request becomes, as NDJSON: the same data over /v1/events."""
    lines = [item for chunk in otlp.iter_events(body, otlp.PROTOBUF, 1 << 30, 1 << 40) for _n, item in chunk]
    assert all(isinstance(x, bytes) for x in lines)
    return b"\n".join(lines) + b"\n"  # type: ignore[arg-type]


def client(port: int, path: str, ctype: str, body: bytes, seconds: float, connections: int,
           out: mp.Queue) -> None:  # type: ignore[type-arg]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                with lock:
                    errors.append(str(resp.status))
                break
            mine.append(time.perf_counter() - t0)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=one) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((latencies, errors))


def run(port: int, mode: str, bodies: dict[str, tuple[str, str, bytes]], batch: int, args: argparse.Namespace
        ) -> tuple[float, float]:
    path, ctype, body = bodies[mode]
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    procs = [mp.Process(target=client, args=(port, path, ctype, body, args.seconds, args.connections, q))
             for _ in range(args.clients)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.monotonic() - t0
    lat = sorted(x for r, _e in results for x in r)
    errors = [e for _r, es in results for e in es]
    if errors:
        raise SystemExit(f"{mode}: requests failed: {errors[:5]}")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    return len(lat) * batch / elapsed, p99 * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    pb = otlp_request(args.batch)
    bodies = {"ndjson": ("/v1/events", "application/x-ndjson", ndjson_of(pb)),
              "otlp": ("/v1/logs", "application/x-protobuf", pb)}
    tmp = tempfile.mkdtemp(prefix="bench-otlp-")
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        server = subprocess.Popen([sys.executable, "-m", "tests.ingest_proc", f"{tmp}/hot", f"{tmp}/s.sock",
                                   str(10 << 20)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, cwd=REPO, env=env)
        assert server.stdout is not None and server.stdin is not None
        port = int(json.loads(server.stdout.readline())["http"][1])
        figures: dict[str, list[tuple[float, float]]] = {"ndjson": [], "otlp": []}
        try:
            for _ in range(args.rounds):
                for mode in ("ndjson", "otlp"):
                    figures[mode].append(run(port, mode, bodies, args.batch, args))
                    print(f"  {mode}: {figures[mode][-1][0]:,.0f} events/s, p99 {figures[mode][-1][1]:.1f} ms",
                          flush=True)
            with open(f"/proc/{server.pid}/status") as f:
                hwm = next(int(x.split()[1]) for x in f if x.startswith("VmHWM:")) / 1024
        finally:
            server.stdin.close()
            server.wait(60)
    finally:
        for d, _s, files in os.walk(tmp):  # segments carry the append-only/immutable attribute
            for f in files:
                with contextlib.suppress(OSError):
                    attr.clear_protection(Path(d) / f)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{args.batch}-record requests, {args.clients} clients x {args.connections} keep-alive connections, "
          f"{args.rounds} rounds of {args.seconds:g} s, medians (request bodies: NDJSON {len(bodies['ndjson'][2]):,} "
          f"bytes, OTLP protobuf {len(pb):,} bytes)")
    print("| transport | events/s | p99 ack latency |")
    print("|---|---|---|")
    med = {m: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for m, v in figures.items()}
    for mode, label in (("ndjson", "NDJSON over HTTP (baseline)"), ("otlp", "OTLP/HTTP protobuf")):
        print(f"| {label} | {med[mode][0]:,.0f} | {med[mode][1]:.0f} ms |")
    print(f"| OTLP / NDJSON | {med['otlp'][0] / med['ndjson'][0]:.0%} | |")
    print(f"server peak RSS (VmHWM): {hwm:.0f} MiB")


if __name__ == "__main__":
    main()
