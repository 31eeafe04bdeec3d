"""Sidecar benchmarks (issue 5): ingest over the Unix socket with shipping running,
end-to-end latency from acknowledgement to confirmation in cold storage, shipper RSS under
a backlog.  moto's server runs in its own process; the sidecar is `pipeline run`.

    .venv/bin/python bench/bench_sidecar.py [--seconds 20] [--clients 2] [--backlog 400] [--in-flight 4]

Baseline printed beside the ingest figure: the same clients writing the same NDJSON lines
to a plain Unix-socket sink that only counts newlines (the transport's ceiling here).
Clients keep --in-flight batches sent ahead of their acknowledgements, as a forwarding agent
does (acks come back in order on the stream); with one batch at a time (also measured) a
client waits a whole group-commit round trip (up to 10 ms plus the fsync) per batch, which
measures that latency rather than what the sidecar can take.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.hot import attr  # noqa: E402
from pipeline.ship.ledger import Ledger  # noqa: E402

EVENT = {"actor": "svc-orders", "action": "order.update", "resource": "orders/2026/11/000123456",
         "source_ip": "10.20.30.40", "outcome": "success", "detail": "status changed to shipped"}
BATCH = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    import boto3

    c = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    c.create_bucket(Bucket="bench-bucket", ObjectLockEnabledForBucket=True)
    c.put_object_lock_configuration(Bucket="bench-bucket", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    return proc, endpoint


def write_config(base: Path, endpoint: str, window: str, retention: str = "0s",
                 http_port: int | None = None, max_request_bytes: int = 10485760,
                 segment_max_bytes: int = 67108864, cold_extra: str = "") -> tuple[Path, Path, int]:
    sock = base / "ingest.sock"
    ops = free_port()
    http = f'http = "127.0.0.1:{http_port}"' if http_port else ""
    cfg = base / "pipeline.toml"
    cfg.write_text(f"""
[hot]
dir = "{base / 'hot'}"
stream = "bench"
segment_window = "{window}"
heartbeat_interval = "60s"
hot_retention = "{retention}"
high_water_percent = 99
segment_max_bytes = {segment_max_bytes}
[cold]
url = "s3://bench-bucket/b?endpoint_url={endpoint}&region=us-east-1"
retention_days = 1
{cold_extra}
[ingest]
socket = "{sock}"
{http}
max_request_bytes = {max_request_bytes}
[ops]
listen = "127.0.0.1:{ops}"
shutdown_grace = "60s"
""")
    return cfg, sock, ops


def start_sidecar(cfg: Path, ops: int, tree: Path = REPO) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--config", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ops}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("sidecar did not become ready")


def client(sock_path: str, seconds: float, out: mp.Queue, in_flight: int = 1) -> None:  # type: ignore[type-arg]
    """Send batches over one connection, keeping ``in_flight`` batches sent but not yet
    fully acknowledged (1: send, wait for every ack, send again); record (ack time, last
    seq) per batch.  Acks come back in order, one line per event."""
    lines = b"".join(orjson.dumps(dict(EVENT, n=i)) + b"\n" for i in range(BATCH))
    acks: list[tuple[float, int]] = []
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    deadline = time.time() + seconds
    n = 0
    buf = b""
    outstanding = 0
    got = 0
    while True:
        while outstanding < in_flight and time.time() < deadline:
            s.sendall(lines)
            outstanding += 1
        if outstanding == 0:
            break
        chunk = s.recv(1 << 20)
        if not chunk:
            raise ConnectionError("sidecar closed the connection")
        buf += chunk
        *done, buf = buf.split(b"\n")
        for line in done:
            got += 1
            if got == BATCH:  # a whole batch acknowledged
                got = 0
                outstanding -= 1
                n += BATCH
                acks.append((time.time(), orjson.loads(line)["seq"]))
    s.close()
    out.put((n, acks))


def sink_server(path: str, stop: threading.Event) -> None:
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(8)
    srv.settimeout(0.2)

    def serve(conn: socket.socket) -> None:
        pending = 0
        with conn:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    return
                pending += data.count(b"\n")
                while pending >= BATCH:
                    conn.sendall(b'{"ok":true,"seq":0}\n' * BATCH)
                    pending -= BATCH

    while not stop.is_set():
        try:
            conn, _ = srv.accept()
        except TimeoutError:
            continue
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
    srv.close()


def run_clients(sock: Path, clients: int, seconds: float, in_flight: int = 1) -> tuple[int, list[tuple[float, int]]]:
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    procs = [mp.Process(target=client, args=(str(sock), seconds, q, in_flight)) for _ in range(clients)]
    for p in procs:
        p.start()
    total, acks = 0, []
    for _ in procs:
        n, a = q.get(timeout=seconds + 120)
        total += n
        acks += a
    for p in procs:
        p.join()
    return total, acks


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of ``pid`` in MB; ``field="VmHWM"``: its peak so far, as the kernel
    counted it (sampling can miss a short spike)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def rm(path: Path) -> None:
    for d, _s, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                attr.clear_protection(Path(d) / f)
    shutil.rmtree(path, ignore_errors=True)


# The sidecar's memory settings before issue 13, for the side-by-side RSS figure.
PREVIOUS_MEMORY = "compression_threads = 2"


def rss_run(base: Path, endpoint: str, window: str, clients: int, seconds: float, in_flight: int,
            cold_extra: str = "", tree: Path = REPO) -> tuple[float, float, float]:
    """Ingest at full rate with shipping running; (events/s, peak RSS MB, median RSS MB)."""
    base.mkdir(parents=True)
    cfg, sock, ops = write_config(base, endpoint, window, cold_extra=cold_extra)
    proc = start_sidecar(cfg, ops, tree)
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            with contextlib.suppress(OSError, ValueError):
                samples.append(rss_mb(proc.pid))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.time()
    n, _ = run_clients(sock, clients, seconds, in_flight)
    rate = n / (time.time() - t0)
    time.sleep(2)  # the last segments' uploads
    done.set()
    t.join()
    peak = rss_mb(proc.pid, "VmHWM")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=90)
    samples.sort()
    return rate, peak, samples[len(samples) // 2]


def rss_compare(base: Path, endpoint: str, args: argparse.Namespace) -> None:
    rows: list[tuple[str, float, float, float]] = []
    previous = Path(args.previous_tree) if args.previous_tree else REPO
    variants = [("previous" + (" (--previous-tree)" if args.previous_tree else " settings"), PREVIOUS_MEMORY,
                 previous), ("current", "", REPO)] + [(v, v, REPO) for v in args.rss_variant]
    for name, cold, tree in variants:
        rows.append((name, *rss_run(base / f"rss-{len(rows)}", endpoint, args.window, args.clients,
                                    args.seconds / 2, args.in_flight, cold, tree)))
    print(f"\n## sidecar RSS at full ingest rate with shipping running (target <= 150 MB; "
          f"{args.clients} clients, {args.seconds / 2:g} s each, segment window {args.window})")
    for name, rate, peak, median in rows:
        print(f"  {name:<28} {rate:>10,.0f} events/s   RSS peak (VmHWM) {peak:5.0f} MB   median {median:5.0f} MB")


# ------------------------------------------------------------------ HTTP vs Unix socket (issue 13)

INGEST_BATCH = 1000


def socket_batch_client(sock_path: str, seconds: float, out: mp.Queue, connections: int,  # type: ignore[type-arg]
                        in_flight: int) -> None:
    """Batches of INGEST_BATCH lines over ``connections`` Unix-socket connections, each with
    ``in_flight`` batches sent ahead of their answers; answers are read by a second thread
    per connection while the first writes (the protocol requires a client to read while it
    writes: both sides' buffers are finite)."""
    lines = b"".join(orjson.dumps(dict(EVENT, n=i)) + b"\n" for i in range(INGEST_BATCH))
    deadline = time.time() + seconds
    counts = [0] * connections

    def one(k: int) -> None:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock_path)
        slots = threading.Semaphore(in_flight)

        def reader() -> None:
            got = 0
            while chunk := s.recv(1 << 20):
                got += chunk.count(b"\n")
                while got >= INGEST_BATCH:
                    got -= INGEST_BATCH
                    counts[k] += INGEST_BATCH
                    slots.release()

        t = threading.Thread(target=reader)
        t.start()
        sent = 0
        while time.time() < deadline:
            slots.acquire()
            s.sendall(lines)
            sent += INGEST_BATCH
        while counts[k] < sent:
            time.sleep(0.001)
        s.shutdown(socket.SHUT_WR)
        t.join()
        s.close()

    threads = [threading.Thread(target=one, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(sum(counts))


def http_batch_client(port: int, seconds: float, out: mp.Queue, connections: int) -> None:  # type: ignore[type-arg]
    """Batches of INGEST_BATCH events as NDJSON POSTs, ``connections`` keep-alive
    connections (one request at a time each: HTTP/1.1 clients do not pipeline)."""
    import http.client

    body = b"".join(orjson.dumps(dict(EVENT, n=i)) + b"\n" for i in range(INGEST_BATCH))
    deadline = time.time() + seconds
    counts = [0] * connections

    def one(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.time() < deadline:
            conn.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/x-ndjson"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            counts[i] += INGEST_BATCH
        conn.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(sum(counts))


def run_ingest_clients(target: Any, args: tuple[Any, ...], clients: int, seconds: float) -> float:
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    procs = [mp.Process(target=target, args=(*args[:1], seconds, q, *args[1:])) for _ in range(clients)]
    t0 = time.time()
    for p in procs:
        p.start()
    total = sum(int(q.get(timeout=seconds + 120)) for _ in procs)
    for p in procs:
        p.join()
    return total / (time.time() - t0)


def med(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def vm_hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def ingest_comparison(base: Path, endpoint: str, seconds: float, clients: int, rounds: int) -> dict[str, Any]:
    """HTTP and Unix-socket ingest into the same `pipeline run` (shipping running), 1,000-event
    batches, interleaved rounds (the machine's speed drifts); then the peak RSS of a fresh
    sidecar that receives one max_request_bytes body of the worst kind."""
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg, sock, ops = write_config(base, endpoint, "5s", http_port=port)
    proc = start_sidecar(cfg, ops)
    sock_rates: list[float] = []
    sock4_rates: list[float] = []
    http_rates: list[float] = []
    try:
        for _ in range(rounds):
            sock_rates.append(run_ingest_clients(socket_batch_client, (str(sock), 1, 4), clients, seconds))
            sock4_rates.append(run_ingest_clients(socket_batch_client, (str(sock), 4, 4), clients, seconds))
            http_rates.append(run_ingest_clients(http_batch_client, (port, 4), clients, seconds))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)

    # worst body at the limit: tiny valid events ({} lines), the most records per byte
    # (tests/ingest/test_ingest_memory.py measures every worst kind; this one costs the most)
    limit = 10 << 20
    wdir = base / "worst"
    wdir.mkdir()
    port2 = free_port()
    # one segment for the whole body: nothing is sealed or shipped while it is measured, so
    # the figure is ingest's (the shipper's own RSS is measured above)
    cfg2, _sock2, ops2 = write_config(wdir, endpoint, "300s", http_port=port2, max_request_bytes=limit,
                                      segment_max_bytes=4 << 30)
    proc2 = start_sidecar(cfg2, ops2)
    try:
        import http.client

        def post(body: bytes) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port2, timeout=300)
            conn.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/x-ndjson"})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            return resp.status

        post(b'{"warm":"up"}\n')
        before = vm_hwm_mb(proc2.pid)
        worst = b"{}\n" * (limit // 3)
        t0 = time.time()
        status = post(worst)
        took = time.time() - t0
        after = vm_hwm_mb(proc2.pid)
    finally:
        proc2.send_signal(signal.SIGTERM)
        proc2.wait(timeout=90)
    print(f"\n## ingest, HTTP vs Unix socket ({clients} client processes, batches of {INGEST_BATCH}, "
          f"{rounds} interleaved rounds of {seconds:g} s, shipping running)")
    print(f"  Unix socket, 1 connection x 4 batches in flight   median {med(sock_rates):>10,.0f} events/s  "
          f"(rounds: {', '.join(f'{r:,.0f}' for r in sock_rates)})")
    print(f"  Unix socket, 4 connections x 4 in flight          median {med(sock4_rates):>10,.0f} events/s  "
          f"(rounds: {', '.join(f'{r:,.0f}' for r in sock4_rates)})")
    print(f"  HTTP, 4 keep-alive connections per client         median {med(http_rates):>10,.0f} events/s  "
          f"(rounds: {', '.join(f'{r:,.0f}' for r in http_rates)})")
    best_socket = max(med(sock_rates), med(sock4_rates))
    ratio = med(http_rates) / best_socket
    print(f"  HTTP / the faster socket set-up                   {ratio:.0%}  (target >= 80%)")
    print(f"\n## one worst-kind body at max_request_bytes = {limit >> 20} MiB ({limit // 3:,} events of {{}}), "
          f"fresh sidecar")
    bound = 48 + 4 * limit / 2**20  # tests/ingest/test_ingest_memory.py: a 48 MiB constant + 4x the limit
    print(f"  answer {status} in {took:.1f} s; peak RSS {before:.0f} MB before, {after:.0f} MB after: "
          f"+{after - before:.0f} MB for a {limit >> 20} MiB limit (bound: 48 + 4 x {limit >> 20} = {bound:.0f} MB)")
    return {"http_events_per_s": round(med(http_rates)), "socket_events_per_s": round(best_socket),
            "worst_body_peak_rss_growth_mb": round(after - before, 1), "max_request_bytes": limit}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--window", default="5s")
    ap.add_argument("--backlog", type=int, default=400, help="segments queued before the RSS run")
    ap.add_argument("--rss-only", action="store_true",
                    help="only the RSS comparison (previous vs current memory settings)")
    ap.add_argument("--previous-tree", help="a source tree (e.g. a worktree of the commit before issue 13) "
                    "whose sidecar runs as the 'previous' row of the RSS comparison")
    ap.add_argument("--rss-variant", action="append", default=[],
                    help="extra [cold] settings to measure in the RSS comparison (repeatable)")
    ap.add_argument("--in-flight", type=int, default=4,
                    help="batches each client keeps sent but not yet acknowledged (1: wait for each)")
    ap.add_argument("--ingest-only", action="store_true",
                    help="only HTTP vs Unix-socket ingest and the worst-body RSS (issue 13)")
    ap.add_argument("--ingest-seconds", type=float, default=6)
    ap.add_argument("--ingest-rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    moto, endpoint = start_moto()
    base = Path(tempfile.mkdtemp(prefix="bench-sidecar-"))
    try:
        if args.rss_only:
            rss_compare(base, endpoint, args)
            return
        if args.ingest_only:
            print(json.dumps(ingest_comparison(base / "ingest", endpoint, args.ingest_seconds, args.clients,
                                               args.ingest_rounds)))
            return
        # baseline: the transport alone
        stop = threading.Event()
        sink = str(base / "sink.sock")
        t = threading.Thread(target=sink_server, args=(sink, stop), daemon=True)
        t.start()
        time.sleep(0.2)
        n_sink, _ = run_clients(Path(sink), args.clients, min(args.seconds, 5), args.in_flight)
        stop.set()
        sink_rate = n_sink / min(args.seconds, 5)

        cfg, sock, ops = write_config(base, endpoint, args.window)
        proc = start_sidecar(cfg, ops)
        # first closed-loop clients (one batch at a time: bound by the group-commit round trip),
        # then the measured run with args.in_flight batches in flight per connection
        t0 = time.time()
        n1, _ = run_clients(sock, args.clients, args.seconds / 2, 1)
        rate_closed = n1 / (time.time() - t0)
        samples: list[float] = []
        sampling = threading.Event()

        def sample_rss() -> None:  # the sidecar's RSS every 0.2 s while the clients run
            while not sampling.wait(0.2):
                with contextlib.suppress(OSError, ValueError):
                    samples.append(rss_mb(proc.pid))

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        t0 = time.time()
        n, acks = run_clients(sock, args.clients, args.seconds, args.in_flight)
        rate = n / (time.time() - t0)
        sampling.set()
        sampler.join()
        peak = max(samples, default=rss_mb(proc.pid))
        median_rss = sorted(samples)[len(samples) // 2] if samples else peak
        # wait until everything acknowledged is confirmed in cold storage
        ledger = Ledger(base / "hot", reserve_bytes=0)  # a reader: takes no reserve
        max_seq = max(s for _t, s in acks)
        deadline = time.time() + 120 + 3 * float(args.window.rstrip("s"))
        while time.time() < deadline:
            done = [e for e in ledger.entries() if e.state in ("confirmed", "evicted") and e.confirmed_at]
            if any(e.last_seq >= max_seq for e in done):
                break
            time.sleep(0.5)
        entries = sorted((e.first_seq, e.last_seq, e.confirmed_at or 0.0) for e in ledger.entries()
                         if e.confirmed_at)
        lat = []
        for ack_time, seq in acks:
            for first, last, when in entries:
                if first <= seq <= last:
                    lat.append(when - ack_time)
                    break
        lat.sort()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
        print(f"# sidecar benchmark ({os.cpu_count()} cores, {args.clients} client processes, batches of {BATCH}, "
              f"segment window {args.window})")
        print("\n## ingest over the Unix socket, shipping running")
        print(f"  pipeline run, {args.in_flight} batches in flight per client   {rate:>10,.0f} events/s")
        print(f"  pipeline run, 1 batch at a time per client       {rate_closed:>10,.0f} events/s")
        print(f"  baseline: socket sink that only counts lines      {sink_rate:>10,.0f} events/s")
        print(f"  sidecar RSS during ingest, peak / median of {len(samples)} samples  {peak:.0f} / {median_rss:.0f} MB")
        if lat:
            def p(q: float) -> float:
                return lat[min(len(lat) - 1, int(q * len(lat)))]

            print(f"\n## acknowledged -> confirmed in cold storage ({len(lat)} batches)")
            print(f"  p50 {p(0.5):.2f} s   p99 {p(0.99):.2f} s   max {lat[-1]:.2f} s   "
                  f"(segment window {args.window}: a record waits for its segment to close, then ~1 s ship pass)")

        # backlog: segments written while the cold tier was unreachable, then shipped
        if args.backlog:
            from pipeline.hot.writer import HotLog

            bdir = base / "backlog"
            with HotLog(bdir / "hot", "bench", segment_max_bytes=64 * 1024, heartbeat_interval=0) as log:
                for i in range(args.backlog * 200):
                    log.append(dict(EVENT, n=i), wait=False)
            cfg2, _s2, ops2 = write_config(bdir, endpoint, "300s", retention="0s")
            t1 = time.time()
            proc2 = start_sidecar(cfg2, ops2)
            peak2 = 0.0
            ledger2 = Ledger(bdir / "hot", reserve_bytes=0)
            while time.time() - t1 < 600:
                peak2 = max(peak2, rss_mb(proc2.pid))
                c = ledger2.counts()
                if c["evicted"] + c["confirmed"] >= args.backlog:
                    break
                time.sleep(0.2)
            dt = time.time() - t1
            c = ledger2.counts()
            proc2.send_signal(signal.SIGTERM)
            proc2.wait(timeout=90)
            print(f"\n## backlog of {args.backlog} segments (64 KiB each) shipped by a fresh sidecar")
            print(f"  shipped {c['evicted'] + c['confirmed']} in {dt:.1f} s; peak sidecar RSS {peak2:.0f} MB "
                  "(target <= 150 MB)")
        rss_compare(base, endpoint, args)
        compared = ingest_comparison(base / "ingest", endpoint, args.ingest_seconds, args.clients, args.ingest_rounds)
        print(json.dumps({"ingest_events_per_s": round(rate), "ingest_closed_loop_events_per_s": round(rate_closed),
                          "sink_events_per_s": round(sink_rate), **compared}))
    finally:
        moto.terminate()
        rm(base)


if __name__ == "__main__":
    main()
