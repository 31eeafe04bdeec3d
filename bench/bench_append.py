"""Hot-tier benchmarks, every figure side by side with its baseline in the same run.

    .venv/bin/python bench/bench_append.py [--events N] [--memory-events N] [--verify-mb N]

1. append throughput, one writer thread, ~300-byte events:
   HotLog group mode (wait=False, then one sync) vs. a naive loop (orjson + sha256 chain +
   buffered write + fsync every 1000 events) vs. stdlib logging.FileHandler with a JSON
   formatter; plus append_many() in batches, redaction off, os mode and fsync mode.
   Contenders run in interleaved rounds; the median of each is reported.
2. the paths users call from many threads, contenders interleaved: the default
   ``append(event)`` (waits for durability) and ``AuditLogHandler`` (waiting, and its
   non-waiting mode ``wait=False``) from 1 and 16 threads, side by side with stdlib
   ``logging.FileHandler`` with a JSON formatter (no fsync, and an fsync per record);
   ``--busy`` keeps the second core busy with a spinning process meanwhile.
   Then the ack latency in group mode: 16 threads each appending with wait=True.
3. Merkle maintenance: the writer with and without leaf hashes and compact ranges (A/B).
4. verify throughput over the same segment files vs. `openssl dgst -sha256`, with and
   without whole-file hashes.
5. writer RSS while appending --memory-events events (10 million by default).
Targets (issue 2): >= 200k events/s and no slower than the naive loop; p99 <= 15 ms;
verify >= 50% of openssl; RSS flat, <= 80 MB.  Issue 15: ``AuditLogHandler`` from 16 threads
with durable acknowledgements and the default ``append`` from 16 threads >= 40,000 events/s;
the non-waiting handler at least as fast as ``FileHandler`` with a JSON formatter.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from pipeline import _accel
from pipeline._accel import native
from pipeline.hot import attr
from pipeline.hot.chain import Run
from pipeline.hot.factory import open_hotlog
from pipeline.hot.segment import list_segments
from pipeline.hot.writer import HotLog
from pipeline.ingest.handler import AuditLogHandler
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
    "agent": "orders-worker/4.2.1 (linux)",
}  # 294 bytes of JSON; with the "n" each benchmark adds, ~300 (issue 2: "300-byte events")


def rm_tree(path: Path) -> None:
    for dirpath, _d, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                attr.clear_protection(Path(dirpath) / f)
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def busy_second_core(busy: bool) -> Iterator[None]:
    """With ``busy``, a process spinning on the other core while the block runs: figures
    taken on an idle core hide what the appending and flushing threads cost each other."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def bench_hotlog(base: Path, n: int, durability: str = "group", redact: bool = True, batch: int = 0) -> float:
    """One thread appending n events with ``append(wait=False)`` (or ``append_many`` in
    batches of ``batch``), then one ``sync()``: events/s."""
    d = Path(tempfile.mkdtemp(prefix=f"hot-{durability}-", dir=base))
    # as `pipeline run` opens it: with the Merkle tile store that proofs are served from
    log = open_hotlog(d, "bench", durability=durability, heartbeat_interval=0,
                      sanitiser=Sanitiser(redact=redact))
    events = [dict(EVENT, n=i) for i in range(n)]
    t0 = time.perf_counter()
    if batch:
        for k in range(0, n, batch):
            log.append_many(events[k : k + batch], wait=False)
    else:
        for e in events:
            log.append(e, wait=False)
    log.sync()
    dt = time.perf_counter() - t0
    log.close()
    rm_tree(d)
    return n / dt


def _no_merkle_log(directory: Path) -> HotLog:
    """The writer with the Merkle work taken out: queued lines are never leaf-hashed into
    the segment and stream compact ranges (so its seals carry wrong roots; benchmark only).
    Everything else, the append path included, is the writer's own."""

    def skip(runs: list[Run]) -> None:
        for run in runs:
            run.hashed = len(run.chunks)

    log = HotLog(directory, "bench", heartbeat_interval=0, segment_max_bytes=1 << 40)
    log._chain._hash_runs = skip  # type: ignore[method-assign]
    return log


def _timed_appends(log: HotLog, n: int) -> float:
    events = [dict(EVENT, n=i) for i in range(n)]
    t0 = time.perf_counter()
    for e in events:
        log.append(e, wait=False)
    log.sync()
    dt = time.perf_counter() - t0
    log.close(seal=False)
    return n / dt


def bench_merkle_ab(base: Path, n: int) -> tuple[float, float]:
    """(events/s without the tree, with it): the same loop, one segment, interleaved by the
    caller.  "With" is the writer as deployed: leaf hashes, the segment and stream compact
    ranges, and the Merkle tile store (TreeStore) that proofs are served from."""
    d = Path(tempfile.mkdtemp(prefix="hot-ab-", dir=base))
    without = _timed_appends(_no_merkle_log(d / "a"), n)
    with_tree = _timed_appends(open_hotlog(d / "b", "bench", heartbeat_interval=0, segment_max_bytes=1 << 40), n)
    rm_tree(d)
    return without, with_tree


def bench_naive(base: Path, n: int) -> float:
    path = base / "naive.jsonl"
    path.unlink(missing_ok=True)
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


class _AuditJson(logging.Formatter):
    """The JSON formatter of the FileHandler baseline: the same fields the audit event has."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": record.created, "level": record.levelname, "logger": record.name,
                           "message": record.getMessage(), "audit": getattr(record, "audit", None)})


class _FsyncFileHandler(logging.FileHandler):
    """FileHandler that fsyncs every record: the stdlib way to a durable acknowledgement."""

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if self.stream is not None:
            os.fsync(self.stream.fileno())


def _threads(threads: int, per_thread: int, work: Any) -> float:
    """Events/s of ``threads`` threads each calling ``work(i)`` ``per_thread`` times."""
    start = threading.Barrier(threads + 1)

    def worker() -> None:
        start.wait()
        for i in range(per_thread):
            work(i)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return threads * per_thread / (time.perf_counter() - t0)


_logger_seq = iter(range(1 << 30))


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"bench.threads.{next(_logger_seq)}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def bench_paths(base: Path, what: str, threads: int, events: int) -> float:
    """One user path from ``threads`` threads, ``events`` events in all: events/s."""
    per = max(1, events // threads)
    d = Path(tempfile.mkdtemp(prefix=f"paths-{what}-", dir=base))
    try:
        if what in ("filehandler", "filehandler-fsync"):
            fh = (logging.FileHandler if what == "filehandler" else _FsyncFileHandler)(d / "app.jsonl")
            fh.setFormatter(_AuditJson())
            logger = _logger(fh)
            rate = _threads(threads, per, lambda i: logger.info("order updated", extra={"audit": dict(EVENT, n=i)}))
            t0 = time.perf_counter()
            fh.flush()
            os.fsync(fh.stream.fileno())  # durable at the end, as the non-waiting handler's flush()
            rate = threads * per / (threads * per / rate + time.perf_counter() - t0)
            fh.close()
            return rate
        log = open_hotlog(d, "bench", heartbeat_interval=0)  # as `pipeline run` opens it
        try:
            if what == "append":
                return _threads(threads, per, lambda i: log.append(dict(EVENT, n=i)))
            handler = AuditLogHandler(log=log, wait=what == "handler")
            logger = _logger(handler)
            rate = _threads(threads, per, lambda i: logger.info("order updated", extra={"audit": dict(EVENT, n=i)}))
            if what == "handler-nowait":
                t0 = time.perf_counter()
                handler.flush()  # its records durable: counted in the rate
                rate = threads * per / (threads * per / rate + time.perf_counter() - t0)
            handler.close()
            return rate
        finally:
            log.close()
    finally:
        rm_tree(d)


PATHS = [
    # (label, path, threads, events per round)
    ("append(event) default (waits for durability)", "append", 1, 3_000),
    ("append(event) default (waits for durability)", "append", 16, 40_000),
    ("AuditLogHandler(log=), durable ack", "handler", 1, 3_000),
    ("AuditLogHandler(log=), durable ack", "handler", 16, 40_000),
    ("AuditLogHandler(log=, wait=False), then flush()", "handler-nowait", 1, 60_000),
    ("AuditLogHandler(log=, wait=False), then flush()", "handler-nowait", 16, 60_000),
    ("baseline: FileHandler + JSON formatter, one fsync at the end", "filehandler", 1, 60_000),
    ("baseline: FileHandler + JSON formatter, one fsync at the end", "filehandler", 16, 60_000),
    ("baseline: FileHandler + JSON, fsync per record", "filehandler-fsync", 16, 3_000),
]


def run_paths(base: Path, rounds: int, scale: float) -> dict[tuple[str, int], list[float]]:
    results: dict[tuple[str, int], list[float]] = {(p, t): [] for _l, p, t, _n in PATHS}
    for _ in range(rounds):
        for _label, path, threads, events in PATHS:
            results[(path, threads)].append(bench_paths(base, path, threads, max(threads, int(events * scale))))
    return results


def print_paths(results: dict[tuple[str, int], list[float]], rounds: int, busy: bool) -> None:
    print(f"\n## the paths users call, median of {rounds} interleaved rounds "
          f"(second core {'busy' if busy else 'idle'}) [{_accel.describe()}]")
    for label, path, threads, _n in PATHS:
        rates = results[(path, threads)]
        print(f"  {label:<62} {threads:>2} threads {statistics.median(rates):>10,.0f} events/s   "
              f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})")
    med = {k: statistics.median(v) for k, v in results.items()}
    one = med[("handler-nowait", 1)] / med[("filehandler", 1)]
    many = med[("handler-nowait", 16)] / med[("filehandler", 16)]
    print(f"  non-waiting handler / FileHandler+JSON: 1 thread {one:.2f}, 16 threads {many:.2f}")


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


def bench_verify(base: Path, target_mb: int, rounds: int = 3) -> tuple[float, float, float, float]:
    """(verify MB/s, verify with file hashes MB/s, openssl MB/s, MB): each the best of
    ``rounds`` runs, the three contenders interleaved, page cache warm."""
    d = base / "hot-verify"
    log = HotLog(d, "bench", heartbeat_interval=0, segment_max_bytes=32 << 20)
    per_event = len(orjson.dumps(EVENT)) + 220
    n = target_mb * (1 << 20) // per_event
    for k in range(0, n, 1000):
        log.append_many([dict(EVENT, n=i) for i in range(k, min(n, k + 1000))], wait=False)
    log.close()
    files = list_segments(d / "bench")
    total = sum(f.stat().st_size for f in files)
    for f in files:  # warm the page cache for every contender
        f.read_bytes()
    best = [0.0, 0.0, 0.0]
    for _ in range(rounds):
        for i, file_hashes in enumerate((False, True)):
            t0 = time.perf_counter()
            report = verify_stream(d / "bench", workers=os.cpu_count(), file_hashes=file_hashes)
            best[i] = max(best[i], total / (time.perf_counter() - t0) / 1e6)
            assert report.ok, report.findings[:3]
        t0 = time.perf_counter()
        subprocess.run(["openssl", "dgst", "-sha256", *map(str, files)], check=True, stdout=subprocess.DEVNULL)
        best[2] = max(best[2], total / (time.perf_counter() - t0) / 1e6)
    rm_tree(d)
    return best[0], best[1], best[2], total / 1e6


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
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--paths-only", action="store_true",
                    help="only the user paths from 1 and 16 threads (and the latency)")
    ap.add_argument("--paths-scale", type=float, default=1.0, help="scale the events per path and round")
    ap.add_argument("--busy", action="store_true", help="keep the second core busy with a spinning process")
    ap.add_argument("--memory-only", action="store_true",
                    help="only the RSS run, in a fresh process (nothing else allocated before it)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-append-", dir=args.dir))
    spinning = contextlib.ExitStack()
    spinning.enter_context(busy_second_core(args.busy))
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
        if args.paths_only:
            print_paths(run_paths(base, args.rounds, args.paths_scale), args.rounds, args.busy)
            p50, p99, pmax, rate = bench_latency(base, 16, 2000)
            print("\n## group-mode ack latency, 16 threads appending with wait=True")
            print(f"  p50 {p50:.2f} ms   p99 {p99:.2f} ms   max {pmax:.2f} ms   ({rate:,.0f} events/s)")
            return
        n = args.events
        contenders = [
            ("HotLog group, append() per event (default)", lambda: bench_hotlog(base, n, "group", True)),
            ("HotLog group, append_many() batches of 1000", lambda: bench_hotlog(base, n, "group", True, 1000)),
            ("HotLog group, per event, redaction off", lambda: bench_hotlog(base, n, "group", False)),
            ("HotLog os mode, per event", lambda: bench_hotlog(base, n, "os", True)),
            ("naive loop (orjson+sha256+write, fsync/1000)", lambda: bench_naive(base, n)),
            ("logging.FileHandler + json formatter (no fsync)", lambda: bench_logging(base, n)),
        ]
        # interleaved rounds, median of each: the machine's drift hits every contender alike
        results: dict[str, list[float]] = {name: [] for name, _ in contenders}
        for _ in range(args.rounds):
            for name, run in contenders:
                results[name].append(run())
        fsync_rate = bench_hotlog(base, min(n, 3000), "fsync", True)
        paths = run_paths(base, args.rounds, args.paths_scale)
        print(f"\n## append, one thread, {n:,} events, median of {args.rounds} interleaved rounds "
              f"[{_accel.describe()}]")
        for name, rates in results.items():
            print(f"  {name:<50} {statistics.median(rates):>12,.0f} events/s   "
                  f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})")
        print(f"  {'HotLog fsync mode (fsync per append)':<50} {fsync_rate:>12,.0f} events/s")
        print_paths(paths, args.rounds, args.busy)
        p50, p99, pmax, rate = bench_latency(base, 16, max(500, n // 64))
        print("\n## group-mode ack latency, 16 threads appending with wait=True")
        print(f"  p50 {p50:.2f} ms   p99 {p99:.2f} ms   max {pmax:.2f} ms   ({rate:,.0f} events/s)")
        if native is not None:
            pairs = [bench_merkle_ab(base, n) for _ in range(args.rounds)]
            a = statistics.median(p[0] for p in pairs)
            b = statistics.median(p[1] for p in pairs)
            print("\n## Merkle maintenance (leaf hash + segment and stream compact ranges), "
                  f"median of {args.rounds} interleaved A/B rounds")
            shares = sorted(100 * (1 - w / wo) for wo, w in pairs)
            print(f"  group mode {b:,.0f} events/s with, {a:,.0f} without "
                  f"-> maintenance costs {100 * (1 - b / a):.1f}% of throughput")
            print(f"  per round (A and B back to back): median {statistics.median(shares):.1f}%, "
                  f"runs {', '.join(f'{x:.1f}%' for x in shares)}")
        else:
            print("\n## Merkle maintenance: the A/B needs the C accelerator (not built)")
        v, vh, o, mb = bench_verify(base, args.verify_mb)
        print(f"\n## verify, {mb:.0f} MB of segments, page cache warm, best of 3 interleaved")
        print(f"  pipeline verify (all cores)                 {v:8.1f} MB/s   -> {100 * v / o:.0f}% of openssl")
        print(f"  pipeline verify --file-hashes (all cores)   {vh:8.1f} MB/s   -> {100 * vh / o:.0f}% of openssl")
        print(f"  openssl dgst -sha256 (one core)             {o:8.1f} MB/s")
        if args.memory_events:
            samples = bench_memory(base, args.memory_events)
            print(f"\n## writer RSS over {args.memory_events:,} events (MB)")
            print("  " + "  ".join(f"{k // 1000}k:{m:.0f}" for k, m in samples))
            print(f"  max {max(m for _, m in samples):.0f} MB, growth after first sample "
                  f"{samples[-1][1] - samples[1][1]:+.1f} MB")
    finally:
        spinning.close()
        rm_tree(base)


if __name__ == "__main__":
    main()
