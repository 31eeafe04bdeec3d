"""Where a group commit's time goes: the default ``append(event)`` (waits for durability)
from N threads, with the flusher's steps timed (issue 15's 40,000 events/s target).

Prints events/s; records per commit; per commit, the wall and CPU time of each flusher
step (take the batch and hash it, write, feed the Merkle tiles, fsync, sync the tiles);
per event, user and system CPU and voluntary context switches (getrusage); and the raw
fsync latency of this disk for an append, measured alone, for comparison.

    .venv/bin/python bench/commit_profile.py [--threads 16] [--events 40000] [--dir DIR]

The flusher's steps are wrapped in this process only (the wrappers add ~1 µs a call).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_append import EVENT, rm_tree
from pipeline import _accel
from pipeline.hot import chain as chain_mod
from pipeline.hot import flusher as flusher_mod
from pipeline.hot.factory import open_hotlog

CPU: dict[str, float] = defaultdict(float)
WALL: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        c, t = time.thread_time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            CPU[name] += time.thread_time() - c
            WALL[name] += time.perf_counter() - t
            CALLS[name] += 1
    return wrapper


def raw_fsync_us(base: Path, n: int = 2000) -> tuple[float, float]:
    """p50 and p90 of an fsync after a 4 KB append, alone on this disk."""
    path = base / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    line = b"x" * 4095 + b"\n"
    samples = []
    try:
        for _ in range(n):
            os.write(fd, line)
            t = time.perf_counter()
            os.fsync(fd)
            samples.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    samples.sort()
    return samples[n // 2] * 1e6, samples[n * 9 // 10] * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="commit-profile-", dir=args.dir))
    try:
        p50, p90 = raw_fsync_us(base)
        _accel.fsync = timed("fsync (segment and tiles)", _accel.fsync)
        chain_mod.Chain.take = timed("take + Merkle hashing", chain_mod.Chain.take)  # type: ignore[method-assign]
        flusher_mod.Flusher._feed_tree = timed("feed tiles", flusher_mod.Flusher._feed_tree)  # type: ignore[method-assign]
        flusher_mod.Flusher._sync_tree = timed("sync tiles", flusher_mod.Flusher._sync_tree)  # type: ignore[method-assign]
        flusher_mod.Flusher.flush = timed("whole flush", flusher_mod.Flusher.flush)  # type: ignore[method-assign]
        log = open_hotlog(base / "hot", "bench", heartbeat_interval=0)
        log._flusher._write_chunks = timed("write", log._flusher._write_chunks)
        per = args.events // args.threads
        start = threading.Barrier(args.threads + 1)

        def worker() -> None:
            start.wait()
            for i in range(per):
                log.append(dict(EVENT, n=i))

        threads = [threading.Thread(target=worker) for _ in range(args.threads)]
        for t in threads:
            t.start()
        start.wait()
        t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        for t in threads:
            t.join()
        elapsed, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        log.close()
        n = per * args.threads
        commits = CALLS["whole flush"]
        print(f"# group commit profile: {args.threads} threads, default append (waits for durability), "
              f"load average {os.getloadavg()[0]:.2f}")
        print(f"  {n / elapsed:,.0f} events/s; {commits:,} commits, {n / max(1, commits):.1f} records per commit; "
              f"{elapsed / max(1, commits) * 1e6:.0f} µs per commit")
        print(f"  raw fsync after a 4 KB append, alone: p50 {p50:.0f} µs, p90 {p90:.0f} µs")
        print("  per commit (flusher thread):                wall µs    CPU µs")
        for name in ("take + Merkle hashing", "write", "feed tiles", "fsync (segment and tiles)", "sync tiles",
                     "whole flush"):
            scale = max(1, commits)
            print(f"    {name:<40} {WALL[name] / scale * 1e6:8.1f}  {CPU[name] / scale * 1e6:8.1f}")
        print(f"  per event (whole process): user {(r1.ru_utime - r0.ru_utime) / n * 1e6:.1f} µs, "
              f"system {(r1.ru_stime - r0.ru_stime) / n * 1e6:.1f} µs, "
              f"voluntary context switches {(r1.ru_nvcsw - r0.ru_nvcsw) / n:.2f}, "
              f"involuntary {(r1.ru_nivcsw - r0.ru_nivcsw) / n:.2f}")
        ceiling = args.threads / 2 / (p50 / 1e6)
        print(f"  ceiling if commits alternate between two halves of the threads and only the fsync "
              f"took time: {args.threads // 2} / p50 fsync = {ceiling:,.0f} events/s")
    finally:
        rm_tree(base)


if __name__ == "__main__":
    main()
