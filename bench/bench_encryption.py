"""Encryption's cost (issue 21), every figure beside its baseline in the same run:

    .venv/bin/python bench/bench_encryption.py [--events N] [--rounds R] [--seconds S]

1. the default ``append(event)`` (waits for durability) from 16 threads, and group-mode
   append from one thread: ``append(wait=False)`` then one ``sync()``, and
   ``append_many`` in batches of 200, each with and without ``[encryption]`` (one age
   recipient), in interleaved rounds; the median of each.
2. sidecar ingest (``pipeline run``, shipping to moto's server in its own process): socket
   clients sending NDJSON batches, the same configuration with and without ``[encryption]``,
   interleaved rounds, median.
3. cold bytes per event: the same events written with and without encryption, each segment
   compressed as the shipper does (zstd level 1), divided by the events.
Target: encrypted at most 25% slower (ratio >= 0.75).  The append lines also give the CPU
time per event of the whole process (both threads) and its clear/encrypted ratio, which
other load on a shared machine disturbs far less than the wall-clock rates.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_append import EVENT, _threads, rm_tree  # noqa: E402
from bench_sidecar import run_ingest_clients, socket_batch_client, start_moto, start_sidecar, write_config  # noqa: E402

from pipeline.crypt.writer import EncryptionSettings  # noqa: E402
from pipeline.hot.factory import open_hotlog  # noqa: E402
from pipeline.hot.segment import list_segments  # noqa: E402


def recipient(base: Path) -> str:
    out = subprocess.run(["age-keygen", "-o", str(base / "auditor.key")], capture_output=True, text=True, check=True)
    return next(w for w in out.stderr.split() if w.startswith("age1"))


def append_rate(base: Path, n: int, enc: EncryptionSettings | None, batch: int) -> tuple[float, float]:
    """(events per second of wall time, microseconds of the process's CPU time per event: all
    threads, the flusher's too -- much less disturbed than wall time by other load)."""
    d = Path(tempfile.mkdtemp(prefix="enc-", dir=base))
    log = open_hotlog(d, "bench", heartbeat_interval=0, encryption=enc)
    events = [dict(EVENT, n=i) for i in range(n)]
    c0 = time.process_time()
    t0 = time.perf_counter()
    if batch:
        for k in range(0, n, batch):
            log.append_many(events[k : k + batch], wait=False)
    else:
        for e in events:
            log.append(e, wait=False)
    log.sync()
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    log.close()
    rm_tree(d)
    return n / dt, cpu * 1e6 / n


def durable_rate(base: Path, n: int, enc: EncryptionSettings | None, threads: int = 16) -> float:
    """The path users call: the default ``append(event)``, which waits until its record is
    durable, from ``threads`` threads (events per second of wall time)."""
    d = Path(tempfile.mkdtemp(prefix="enc-durable-", dir=base))
    log = open_hotlog(d, "bench", heartbeat_interval=0, encryption=enc)
    try:
        return _threads(threads, max(1, n // threads), lambda i: log.append(dict(EVENT, n=i)))
    finally:
        log.close()
        rm_tree(d)


def ingest_rate(base: Path, endpoint: str, rcpt: str | None, seconds: float) -> float:
    d = Path(tempfile.mkdtemp(prefix="sc-", dir=base))
    cfg, sock, ops = write_config(d, endpoint, "5m", retention="1h")
    if rcpt:
        cfg.write_text(cfg.read_text() + f'[encryption]\nrecipients = ["{rcpt}"]\n')
    proc = start_sidecar(cfg, ops)
    try:
        return run_ingest_clients(socket_batch_client, (str(sock), 1, 4), 2, seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        rm_tree(d)


def cold_bytes(base: Path, n: int, enc: EncryptionSettings | None) -> tuple[float, float]:
    d = Path(tempfile.mkdtemp(prefix="cold-", dir=base))
    with open_hotlog(d, "bench", heartbeat_interval=0, encryption=enc, segment_max_bytes=4 << 20) as log:
        log.append_many([dict(EVENT, n=i) for i in range(n)], wait=False)
    raw = packed = 0
    for p in list_segments(d / "bench"):
        body = p.read_bytes()
        raw += len(body)
        packed += len(zstandard.ZstdCompressor(level=1, write_content_size=True, write_checksum=True).compress(body))
    rm_tree(d)
    return raw / n, packed / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--no-sidecar", action="store_true")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-enc-"))
    rcpt = recipient(base)
    enc = EncryptionSettings((rcpt,))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.events} events x {args.rounds} rounds")

    results: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for name, settings, batch in (("append clear", None, 0), ("append encrypted", enc, 0),
                                      ("append_many clear", None, 200), ("append_many encrypted", enc, 200)):
            results.setdefault(name, []).append(append_rate(base, args.events, settings, batch))
    durable: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, settings in (("clear", None), ("encrypted", enc)):
            durable.setdefault(name, []).append(durable_rate(base, args.events // 2, settings))
    d_clear, d_enc = statistics.median(durable["clear"]), statistics.median(durable["encrypted"])
    print(f"{'append()':12s} default, waits for durability, 16 threads: clear {d_clear:10,.0f} ev/s  "
          f"encrypted {d_enc:10,.0f} ev/s  ratio {d_enc / d_clear:.2f}")
    for what in ("append", "append_many"):
        clear, encrypted = (statistics.median(r for r, _ in results[f"{what} {m}"]) for m in ("clear", "encrypted"))
        cpu_c, cpu_e = (statistics.median(c for _, c in results[f"{what} {m}"]) for m in ("clear", "encrypted"))
        print(f"{what:12s} group mode: clear {clear:10,.0f} ev/s  encrypted {encrypted:10,.0f} ev/s  "
              f"ratio {encrypted / clear:.2f}   CPU/event clear {cpu_c:.2f} us  encrypted {cpu_e:.2f} us  "
              f"ratio {cpu_c / cpu_e:.2f}")

    if not args.no_sidecar:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")  # moto's server accepts any (as bench_sidecar)
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        moto, endpoint = start_moto()
        try:
            ingest: dict[str, list[float]] = {"clear": [], "encrypted": []}
            for _ in range(max(1, args.rounds - 1)):
                ingest["clear"].append(ingest_rate(base, endpoint, None, args.seconds))
                ingest["encrypted"].append(ingest_rate(base, endpoint, rcpt, args.seconds))
            clear, encrypted = statistics.median(ingest["clear"]), statistics.median(ingest["encrypted"])
            print(f"sidecar socket ingest: clear {clear:10,.0f} ev/s  encrypted {encrypted:10,.0f} ev/s  "
                  f"ratio {encrypted / clear:.2f}")
        finally:
            moto.terminate()
            moto.wait(timeout=30)

    for name, settings in (("clear", None), ("encrypted", enc)):
        raw, packed = cold_bytes(base, 20_000, settings)
        print(f"cold bytes/event {name:9s}: segment {raw:6.1f}  zstd-1 {packed:6.1f}")
    rm_tree(base)


if __name__ == "__main__":
    main()
