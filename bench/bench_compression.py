"""Compression benchmark (issue 8): bytes stored per event and upload + copy-then-verify
throughput with and without zstd, side by side in one run, against moto's server in a
separate process.

    .venv/bin/python bench/bench_compression.py [--segments 6] [--segment-mib 16] [--rounds 3] [--write-doc]

Segments are written by ``pipeline.hot.writer.HotLog`` itself (realistic ~313-byte chained
records, sealed), then shipped with ``S3Store.put_segment`` -- the call the shipper makes
per segment: prepare the body (hash, compress), create-only PUT with SHA-256 and
COMPLIANCE lock, HEAD to verify -- at concurrency 1 and at the shipper's default 4.
Variants run interleaved, in a different order each round, so that noise from other load
on the machine hits all of them alike; the table reports the median and the range.

A second table breaks down where the time of ``prepare_body`` goes (per stage, CPU time of
the calling thread and wall time, best of several runs), and how fast the stored bytes
decompress (what a restore or deep verification pays before parsing records).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.cold import ColdSettings, open_store  # noqa: E402
from pipeline.cold.codec import prepare_body, zstd_compressor  # noqa: E402
from pipeline.cold.s3 import S3Store, make_client  # noqa: E402
from pipeline.hot.segment import SegmentManifest, build_manifest, list_segments  # noqa: E402
from pipeline.hot.writer import HotLog  # noqa: E402

MiB = 1 << 20
HEADING = "## Compression"


@dataclass(frozen=True)
class Variant:
    name: str
    compression: str
    level: int = 1
    threads: int = 0

    def settings(self) -> ColdSettings:
        return ColdSettings(compression=self.compression, compression_level=self.level,  # type: ignore[arg-type]
                            compression_threads=self.threads)


VARIANTS = (
    Variant("none", "none"),
    Variant("zstd level 1", "zstd", 1, 0),
    Variant("zstd level 1, 2 threads", "zstd", 1, 2),
    Variant("zstd level 3", "zstd", 3, 0),
    Variant("zstd level 3, 2 threads", "zstd", 3, 2),
)

ACTIONS = (b"order.create", b"order.update", b"order.cancel", b"user.login", b"user.logout", b"invoice.read",
           b"refund.issue")


def make_segments(hot: Path, total_bytes: int, segment_bytes: int) -> list[tuple[Path, SegmentManifest]]:
    """Realistic audit events through the real writer: ~65 bytes of varied JSON per event
    (user, action, client address, status), which the record envelope (stream, seq, ts,
    kind, prev and hash: two SHA-256 hex strings) brings to ~313 bytes per line."""
    rng = random.Random(8)
    log = HotLog(hot, "bench", heartbeat_interval=0, segment_window=0, segment_max_bytes=segment_bytes,
                 immutable="off")
    written = 0
    batch: list[bytes] = []
    while written < total_bytes:
        batch.append(b'{"user":"u%d","action":"%s","ip":"10.%d.%d.%d","status":%d}' % (
            rng.randrange(5000), rng.choice(ACTIONS), rng.randrange(256),
            rng.randrange(256), rng.randrange(256), rng.choice((200, 200, 200, 201, 403, 404))))
        if len(batch) == 1000:
            log.append_prepared_many(batch)
            written += 313 * len(batch)
            batch = []
    if batch:
        log.append_prepared_many(batch)
    log.close()
    return [(p, build_manifest(p)) for p in list_segments(hot / "bench")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("moto server did not start")


def ship(endpoint: str, segs: list[tuple[Path, SegmentManifest]], v: Variant, concurrency: int) -> dict[str, Any]:
    name = f"bench-{uuid.uuid4().hex[:12]}"
    c = make_client(ColdSettings(), endpoint, "us-east-1")
    c.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    c.close()
    store = open_store(f"s3://{name}/bench?endpoint_url={endpoint}&region=us-east-1", v.settings())
    assert isinstance(store, S3Store)
    store.capabilities()
    store.requests.clear()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda s: store.put_segment(s[1].stream, s[0].name, str(s[0]), s[1]), segs))
    elapsed = time.perf_counter() - t0
    assert all(r.created and r.verify.ok for r in results)
    # Reset moto between runs: its memory would otherwise grow with every stored copy.
    with contextlib.suppress(OSError):
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30)
    store.close()
    return {"seconds": elapsed, "stored": sum(r.stored_size for r in results),
            "requests": sum(store.requests.values()) / len(segs)}


def best_of(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds of the whole process: zstd's workers included)."""
    walls, cpus = [], []
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        cpus.append(time.process_time() - c0)
        walls.append(time.perf_counter() - t0)
    return min(walls), min(cpus)


def breakdown(path: Path, man: SegmentManifest, reps: int) -> list[str]:
    data = path.read_bytes()
    n = len(data)
    rows: list[str] = []

    def row(what: str, fn: Callable[[], object], note: str = "") -> None:
        wall, cpu = best_of(fn, reps)
        rows.append(f"| {what} | {n / wall / 1e6:.0f} | {n / cpu / 1e6:.0f} | {note} |")

    def read_file() -> None:
        with open(path, "rb") as f:
            while f.read(MiB):
                pass

    row("read the hot file (1 MiB reads, page cache)", read_file)
    row("SHA-256 of the segment", lambda: hashlib.sha256(data).digest())
    for level, threads in ((1, 0), (1, 2), (3, 0), (3, 2)):
        cctx = zstd_compressor(ColdSettings(compression_level=level, compression_threads=threads), n)
        out = cctx.compress(data)
        row(f"zstd level {level}{f', {threads} threads' if threads else ''}: compress only",
            lambda cctx=cctx: cctx.compress(data), f"{n / len(out):.2f}x")
    small = zstd_compressor(ColdSettings(compression_level=1), n).compress(data)
    row("SHA-256 of the level-1 output", lambda: hashlib.sha256(small).digest(), "per segment byte")
    for level, threads in ((1, 0), (1, 2), (3, 0)):
        s = ColdSettings(compression_level=level, compression_threads=threads)
        row(f"`prepare_body` zstd level {level}{f', {threads} threads' if threads else ''} (read, hash, "
            "compress, hash output)",
            lambda s=s: prepare_body(str(path), man, s).cleanup())
    row("`prepare_body` none (read + SHA-256)",
        lambda: prepare_body(str(path), man, ColdSettings(compression="none")).cleanup())
    dctx = zstandard.ZstdDecompressor()
    row("zstd decompress level-1 output (+ SHA-256)",
        lambda: hashlib.sha256(dctx.decompress(small)).digest(), "restore / deep verify, before parsing")
    return rows


BEGIN, END = "<!-- bench_compression:begin -->", "<!-- bench_compression:end -->"


def write_doc(text: str) -> None:
    """Replace the generated part of the Compression section (between the markers), so the
    hand-written reading of the figures above it survives a re-run."""
    doc = REPO / "docs" / "BENCHMARKS.md"
    current = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{text.strip()}\n{END}"
    if BEGIN in current and END in current:
        start, end = current.index(BEGIN), current.index(END) + len(END)
        current = current[:start] + block + current[end:]
    else:
        current = current.rstrip("\n") + f"\n\n{HEADING}\n\n{block}\n"
    doc.write_text(current)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=6)
    ap.add_argument("--segment-mib", type=float, default=16.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--write-doc", action="store_true", help=f"update the {HEADING!r} section of docs/BENCHMARKS.md")
    args = ap.parse_args()
    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
                 "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        os.environ.setdefault(k, v)
    work = Path(tempfile.mkdtemp(prefix="bench-compression-"))
    proc, endpoint = start_moto()
    load_start = os.getloadavg()[0]
    try:
        seg_bytes = int(args.segment_mib * MiB)
        segs = make_segments(work / "hot", args.segments * seg_bytes, seg_bytes)
        segs = [s for s in segs if s[1].sealed]
        total = sum(m.size for _, m in segs)
        events = sum(m.records for _, m in segs)
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        order = list(VARIANTS)
        for rnd in range(args.rounds):
            rot = order[rnd % len(order):] + order[:rnd % len(order)]
            for conc in args.concurrency:
                for v in rot:
                    runs.setdefault((v.name, conc), []).append(ship(endpoint, segs, v, conc))
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
        base = {c: statistics.median(total / r["seconds"] for r in runs[("none", c)]) for c in args.concurrency}
        rows = []
        for conc in args.concurrency:
            for v in VARIANTS:
                rs = runs[(v.name, conc)]
                mbps = [total / r["seconds"] / 1e6 for r in rs]
                med = statistics.median(mbps)
                stored = rs[0]["stored"]
                rows.append(
                    f"| {conc} | {v.name} | {stored / events:.1f} | {total / stored:.2f}x | "
                    f"**{med:.0f}** ({min(mbps):.0f}–{max(mbps):.0f}) | {med * 1e6 / base[conc]:.2f} | "
                    f"{med * 1e6 / (total / events):,.0f} | {rs[0]['requests']:g} |")
        bd = breakdown(*max(segs, key=lambda s: s[1].size), reps=5)
        load_end = os.getloadavg()[0]
        cmd = ("`.venv/bin/python bench/bench_compression.py --segments "
               f"{args.segments} --segment-mib {args.segment_mib:g} --rounds {args.rounds}"
               f"{' --concurrency ' + ' '.join(map(str, args.concurrency)) if args.concurrency != [1, 4] else ''}"
               " --write-doc`")
        text = "\n".join([
            f"{cmd}: {len(segs)} sealed segments written by `HotLog` ({total / MiB:.0f} MiB, {events:,} events, "
            f"{total / events:.0f} bytes per record), shipped with `S3Store.put_segment` (prepare body, create-only "
            "PUT with SHA-256 and COMPLIANCE lock, HEAD copy-then-verify) to moto's server in a separate process "
            f"on 127.0.0.1; {os.cpu_count()} cores shared by client, server and compression (1-minute load "
            f"{load_start:.1f} at the start, {load_end:.1f} at the end: other work was running). MB/s counts "
            f"uncompressed segment bytes; median of {args.rounds} interleaved rounds (range in brackets); "
            "\"vs none\" is the ratio to the uncompressed median at the same concurrency.",
            "",
            "| concurrency | body | stored bytes per event | ratio | MB/s (range) | vs none | events/s | "
            "requests per segment |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Where `prepare_body` spends its time, on one {max(m.size for _, m in segs) / MiB:.0f} MiB segment "
            "(best of 5; MB/s of segment bytes; CPU counts every thread of the process, so it is the total "
            "cost: wall MB/s below CPU MB/s means the stage waited for a core, above it work ran in parallel):",
            "",
            "| stage | wall MB/s | CPU MB/s | |",
            "|---|---|---|---|",
            *bd,
        ])
        print(text)
        if args.write_doc:
            write_doc(text)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
