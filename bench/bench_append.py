"""Hot-tier benchmarks, every figure side by side with its baseline in the same run.

    .venv/bin/python bench/bench_append.py [--events N] [--memory-events N] [--verify-mb N]

1. append throughput, one writer thread, ~300-byte events:
   HotLog group mode (wait=False, then one sync) vs. a naive loop (orjson + sha256 chain +
   buffered write + fsync every 1000 events) vs. stdlib logging.FileHandler with a JSON
   formatter; plus HotLog group mode with redaction off, os mode and fsync mode.
2. ack latency in group mode: 16 threads each appending with wait=True; p50/p99/max.
3. Merkle maintenance share of the per-event cost (leaf hash + two compact-range appends).
4. verify throughput over the same segment files vs. `openssl dgst -sha256`.
5. writer RSS while appending --memory-events events (10 million by default).
Targets (issue 2): >= 200k events/s and no slower than the naive loop; p99 <= 15 ms;
verify >= 50% of openssl; RSS flat, <= 80 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from pipeline import merkle
from pipeline.hot import attr
from pipeline.hot.segment import list_segments
from pipeline.hot.writer import HotLog
from pipeline.sanitise import Sanitiser
from pipeline.verify.chain import verify_stream

EVENT = {
    "actor": "svc-orders",
    "action": "order.update",
    "resource": "orders/2026/11/000123456",
    "source_ip": "10.20.30.40",
    "request_id": "6f1d2c3b-9a8e-4f7d-8c6b-5a4e3d2c1b0a",
    "outcome": "success",
    "detail": "status changed from pending to shipped by warehouse automation",
}


def rm_tree(path: Path) -> None:
    for dirpath, _d, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                attr.clear_protection(Path(dirpath) / f)
    shutil.rmtree(path, ignore_errors=True)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def bench_hotlog(base: Path, n: int, durability: str = "group", redact: bool = True) -> float:
    d = base / f"hot-{durability}-{redact}"
    log = HotLog(d, "bench", durability=durability, heartbeat_interval=0,
                 sanitiser=Sanitiser(redact=redact))
    events = [dict(EVENT, n=i) for i in range(n)]
    t0 = time.perf_counter()
    for e in events:
        log.append(e, wait=False)
    log.sync()
    dt = time.perf_counter() - t0
    log.close()
    return n / dt


class _NoLeaf:
    """Stands in for the leaf hasher when measuring the writer without Merkle maintenance."""

    def copy(self) -> _NoLeaf:
        return self

    def update(self, data: object) -> None:
        pass

    def digest(self) -> bytes:
        return b"\0" * 32


def bench_hotlog_without_merkle(base: Path, n: int) -> float:
    """The same append loop with leaf hashing and both compact ranges stubbed out: the A side
    of the Merkle-overhead comparison (the log it writes has wrong roots; benchmark only)."""
    original = merkle.CompactRange.append
    merkle.CompactRange.append = lambda self, lh: None  # type: ignore[method-assign]
    try:
        d = base / "hot-nomerkle"
        log = HotLog(d, "bench", heartbeat_interval=0, segment_max_bytes=1 << 40)
        log._leaf0 = _NoLeaf()  # type: ignore[assignment]
        events = [dict(EVENT, n=i) for i in range(n)]
        t0 = time.perf_counter()
        for e in events:
            log.append(e, wait=False)
        log.sync()
        dt = time.perf_counter() - t0
        log.close(seal=False)
    finally:
        merkle.CompactRange.append = original  # type: ignore[method-assign]
    return n / dt


def bench_naive(base: Path, n: int) -> float:
    path = base / "naive.jsonl"
    events = [dict(EVENT, n=i) for i in range(n)]
    prev = b"0" * 64
    t0 = time.perf_counter()
    with open(path, "wb", buffering=1 << 16) as f:
        for i, e in enumerate(events):
            body = b'{"seq":%d,"prev":"%s","data":%s' % (i, prev, orjson.dumps(e))
            prev = hashlib.sha256(body).hexdigest().encode()
            f.write(body + b',"hash":"' + prev + b'"}\n')
            if i % 1000 == 999:
                f.flush()
                os.fsync(f.fileno())
        f.flush()
        os.fsync(f.fileno())
    return n / (time.perf_counter() - t0)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": record.created, "level": record.levelname, "msg": record.msg})


def bench_logging(base: Path, n: int) -> float:
    logger = logging.getLogger("bench.filehandler")
    logger.propagate = False
    handler = logging.FileHandler(base / "logging.jsonl")
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    events = [dict(EVENT, n=i) for i in range(n)]
    t0 = time.perf_counter()
    for e in events:
        logger.info(e)
    handler.flush()
    os.fsync(handler.stream.fileno())
    dt = time.perf_counter() - t0
    logger.removeHandler(handler)
    handler.close()
    return n / dt


def bench_latency(base: Path, threads: int, per_thread: int) -> tuple[float, float, float, float]:
    log = HotLog(base / "hot-latency", "bench", heartbeat_interval=0)
    lat: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = []
        for i in range(per_thread):
            t = time.perf_counter()
            log.append(dict(EVENT, n=i))
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    log.close()
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    return p(0.5), p(0.99), lat[-1] * 1000, len(lat) / dt


def bench_merkle_share(n: int) -> tuple[float, float]:
    line = orjson.dumps(dict(EVENT, n=1)) * 1 + b"x" * 60 + b"\n"
    leaf0 = hashlib.sha256(b"\x00")
    cr1, cr2 = merkle.CompactRange(), merkle.CompactRange()
    t0 = time.perf_counter()
    for _ in range(n):
        h = leaf0.copy()
        h.update(memoryview(line)[:-1])
        lh = h.digest()
        cr1.append(lh)
        cr2.append(lh)
    return (time.perf_counter() - t0) / n * 1e6, 0.0


def bench_verify(base: Path, target_mb: int) -> tuple[float, float, float]:
    d = base / "hot-verify"
    log = HotLog(d, "bench", heartbeat_interval=0, segment_max_bytes=32 << 20)
    per_event = len(orjson.dumps(EVENT)) + 220
    n = target_mb * (1 << 20) // per_event
    for i in range(n):
        log.append(dict(EVENT, n=i), wait=False)
    log.close()
    files = list_segments(d / "bench")
    total = sum(f.stat().st_size for f in files)
    # warm the page cache for both contenders
    for f in files:
        f.read_bytes()
    t0 = time.perf_counter()
    report = verify_stream(d / "bench", workers=os.cpu_count())
    t_verify = time.perf_counter() - t0
    assert report.ok, report.findings[:3]
    t0 = time.perf_counter()
    subprocess.run(["openssl", "dgst", "-sha256", *map(str, files)], check=True, stdout=subprocess.DEVNULL)
    t_openssl = time.perf_counter() - t0
    return total / t_verify / 1e6, total / t_openssl / 1e6, total / 1e6


def bench_memory(base: Path, n: int) -> list[tuple[int, float]]:
    d = base / "hot-memory"
    log = HotLog(d, "bench", heartbeat_interval=0)
    samples = [(0, rss_mb())]
    step = max(1, n // 10)
    sanitiser_event = dict(EVENT)
    for i in range(n):
        sanitiser_event["n"] = i
        log.append(sanitiser_event, wait=False)
        if i % step == step - 1:
            samples.append((i + 1, rss_mb()))
            # keep the disk bounded: sealed segments are what a shipper would evict
            for seg in list_segments(d / "bench")[:-2]:
                attr.clear_protection(seg)
                seg.unlink()
    log.close()
    return samples


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--memory-events", type=int, default=10_000_000)
    ap.add_argument("--verify-mb", type=int, default=256)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--memory-only", action="store_true",
                    help="only the RSS run, in a fresh process (nothing else allocated before it)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-append-", dir=args.dir))
    ev_len = len(orjson.dumps(EVENT))
    print(f"# hot-tier benchmark  ({os.cpu_count()} cores, event {ev_len} bytes of JSON, "
          f"record line ~{ev_len + 215} bytes)")
    try:
        if args.memory_only:
            samples = bench_memory(base, args.memory_events)
            print(f"\n## writer RSS over {args.memory_events:,} events (MB), fresh process")
            print("  " + "  ".join(f"{k // 1000}k:{m:.0f}" for k, m in samples))
            print(f"  max {max(m for _, m in samples):.0f} MB, growth after first sample "
                  f"{samples[-1][1] - samples[1][1]:+.1f} MB")
            return
        n = args.events
        rows = [
            ("HotLog group (default, redaction on)", bench_hotlog(base, n, "group", True)),
            ("HotLog group, redaction off", bench_hotlog(base, n, "group", False)),
            ("HotLog os mode", bench_hotlog(base, n, "os", True)),
            ("naive loop (orjson+sha256+write, fsync/1000)", bench_naive(base, n)),
            ("logging.FileHandler + json formatter (no fsync)", bench_logging(base, n)),
            ("HotLog fsync mode (fsync per append)", bench_hotlog(base, min(n, 3000), "fsync", True)),
        ]
        print(f"\n## append, one thread, {n} events")
        for name, rate in rows:
            print(f"  {name:<50} {rate:>12,.0f} events/s")
        p50, p99, pmax, rate = bench_latency(base, 16, max(500, n // 64))
        print("\n## group-mode ack latency, 16 threads appending with wait=True")
        print(f"  p50 {p50:.2f} ms   p99 {p99:.2f} ms   max {pmax:.2f} ms   ({rate:,.0f} events/s)")
        per_event = 1e6 / rows[0][1]
        merkle_us, _ = bench_merkle_share(200_000)
        with_m = bench_hotlog(base, n, "group", True)
        without_m = bench_hotlog_without_merkle(base, n)
        print("\n## Merkle maintenance (leaf hash + segment and stream compact ranges)")
        print(f"  isolated cost {merkle_us:.2f} us of {per_event:.2f} us per event "
              f"= {100 * merkle_us / per_event:.1f}% of group-mode append cost")
        print(f"  A/B: group mode {with_m:,.0f} events/s with, {without_m:,.0f} without "
              f"-> maintenance costs {100 * (1 - with_m / without_m):.1f}% of throughput")
        v, o, mb = bench_verify(base, args.verify_mb)
        print(f"\n## verify, {mb:.0f} MB of segments, page cache warm")
        print(f"  pipeline verify (all cores)  {v:8.1f} MB/s")
        print(f"  openssl dgst -sha256         {o:8.1f} MB/s   -> verify at {100 * v / o:.0f}% of openssl")
        if args.memory_events:
            samples = bench_memory(base, args.memory_events)
            print(f"\n## writer RSS over {args.memory_events:,} events (MB)")
            print("  " + "  ".join(f"{k // 1000}k:{m:.0f}" for k, m in samples))
            print(f"  max {max(m for _, m in samples):.0f} MB, growth after first sample "
                  f"{samples[-1][1] - samples[1][1]:+.1f} MB")
    finally:
        rm_tree(base)


if __name__ == "__main__":
    main()
