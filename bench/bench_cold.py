"""Cold tier benchmark: upload + verify throughput against moto's server, side by side
with `aws s3 cp` to the same server; requests per segment; client memory for a large
segment.

    .venv/bin/python bench/bench_cold.py [--segments 24] [--segment-mib 4] [--big-mib 256] [--write-doc]

moto runs in a separate process so that the client's memory is measured alone.  The
awscli baseline uses `aws` from PATH (or .tools/awscli-venv/bin/aws): it uploads and does
no verification, no lock check and no compression.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline import merkle  # noqa: E402
from pipeline.cold import ColdSettings, open_store  # noqa: E402
from pipeline.cold.s3 import S3Store, make_client  # noqa: E402
from pipeline.hot.segment import SegmentManifest, build_manifest, segment_name  # noqa: E402
from pipeline.record import GENESIS_HASH, encode_record  # noqa: E402

MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_segment(d: Path, stream: str, first_seq: int, target_bytes: int, prev: str) -> tuple[Path, SegmentManifest]:
    """Realistic records (~310 bytes: user, action, resource, ip) chained, ending in a seal."""
    d.mkdir(parents=True, exist_ok=True)
    path = d / segment_name(first_seq)
    prev_b = prev.encode()
    cr = merkle.CompactRange()
    seq = first_seq
    size = 0
    with open(path, "wb") as f:
        while size < target_bytes:
            ts = b"2026-11-21T12:%02d:%02d.%06dZ" % ((seq // 60) % 60, seq % 60, seq % 1000000)
            data = (b'{"user":"user%d@example.com","action":"%s","resource":"/api/v1/orders/%d",'
                    b'"ip":"10.%d.%d.%d","status":%d}' % (seq % 5000, (b"read", b"update", b"delete")[seq % 3],
                                                          seq * 7919 % 10**7, seq % 256, seq // 256 % 256,
                                                          seq % 97, (200, 201, 403, 404)[seq % 4]))
            line, h = encode_record(stream, seq, ts, "event", prev_b, data)
            cr.append(merkle.leaf_hash(line[:-1]))
            f.write(line)
            size += len(line)
            prev_b = h
            seq += 1
        seal = b'{"merkle_root":"%s","records":%d}' % (cr.root().hex().encode(), seq - first_seq)
        line, _ = encode_record(stream, seq, b"2026-11-21T13:00:00.000000Z", "seal", prev_b, seal)
        f.write(line)
    return path, build_manifest(path)


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


def bucket(endpoint: str, lock: bool) -> str:
    name = f"bench-{uuid.uuid4().hex[:12]}"
    c = make_client(ColdSettings(), endpoint, "us-east-1")
    c.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
    c.close()
    return name


def run_ours(endpoint: str, segs: list[tuple[Path, SegmentManifest]], compression: str, threads: int) -> dict[str, Any]:
    b = bucket(endpoint, lock=True)
    store = open_store(f"s3://{b}/bench?endpoint_url={endpoint}&region=us-east-1",
                       ColdSettings(compression=compression))  # type: ignore[arg-type]
    assert isinstance(store, S3Store)
    store.capabilities()
    store.requests.clear()
    total = sum(m.size for _, m in segs)
    stored = 0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda s: store.put_segment(s[1].stream, s[0].name, str(s[0]), s[1]), segs))
    dt = time.perf_counter() - t0
    assert all(r.verify.ok for r in results)
    stored = sum(r.stored_size for r in results)
    per_seg = {k: v / len(segs) for k, v in sorted(store.requests.items())}
    return {"mbps": total / dt / 1e6, "seconds": dt, "stored_ratio": total / stored, "requests": per_seg}


def find_aws() -> str | None:
    for cand in (shutil.which("aws"), str(REPO / ".tools" / "awscli-venv" / "bin" / "aws")):
        if cand and os.path.exists(cand):
            with contextlib.suppress(OSError, subprocess.CalledProcessError):
                subprocess.run([cand, "--version"], check=True, capture_output=True, timeout=30)
                return cand
    return None


def run_aws(aws: str, endpoint: str, src: Path, total: int) -> dict[str, Any]:
    b = bucket(endpoint, lock=False)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    t0 = time.perf_counter()
    subprocess.run([aws, "s3", "cp", str(src), f"s3://{b}/bench/", "--recursive", "--endpoint-url", endpoint,
                    "--only-show-errors"], check=True, env=env, timeout=600)
    dt = time.perf_counter() - t0
    return {"mbps": total / dt / 1e6, "seconds": dt}


def run_memory(endpoint: str, big: tuple[Path, SegmentManifest], compression: str) -> dict[str, Any]:
    b = bucket(endpoint, lock=False)  # moto ignores locks on multipart anyway; measure memory only
    store = open_store(f"s3://{b}/mem?endpoint_url={endpoint}&region=us-east-1",
                       ColdSettings(compression=compression, allow_unlocked=True))  # type: ignore[arg-type]
    proc = psutil.Process()
    base_rss = proc.memory_info().rss
    peak_rss = base_rss
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_rss
        while not stop.is_set():
            peak_rss = max(peak_rss, proc.memory_info().rss)
            time.sleep(0.01)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    # tracemalloc slows every allocation, so it covers the upload (+ normal verify) only;
    # RSS sampling covers the deep verification too.
    tracemalloc.start()
    t0 = time.perf_counter()
    res = store.put_segment(big[1].stream, big[0].name, str(big[0]), big[1])
    up = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    t1 = time.perf_counter()
    deep = store.verify(res.key, big[1], deep=True)
    deep_s = time.perf_counter() - t1
    stop.set()
    t.join()
    assert res.verify.ok and deep.ok, deep.describe()
    return {"segment_mib": big[1].size / MiB, "tracemalloc_peak_mib": peak / MiB,
            "rss_growth_mib": (peak_rss - base_rss) / MiB, "multipart": res.multipart, "upload_s": up,
            "deep_s": deep_s}


def write_doc(text: str) -> None:
    doc = REPO / "docs" / "BENCHMARKS.md"
    heading = "## Cold tier"
    current = doc.read_text() if doc.exists() else "# Benchmarks\n"
    section = f"{heading}\n\n{text.strip()}\n"
    if heading in current:
        start = current.index(heading)
        nxt = current.find("\n## ", start + len(heading))
        current = current[:start] + section + (current[nxt + 1:] if nxt >= 0 else "")
        if nxt >= 0 and not section.endswith("\n\n"):
            current = current.replace(section, section + "\n", 1)
    else:
        current = current.rstrip("\n") + "\n\n" + section
    doc.write_text(current)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=24)
    ap.add_argument("--segment-mib", type=float, default=4.0)
    ap.add_argument("--big-mib", type=int, default=256)
    ap.add_argument("--write-doc", action="store_true", help="update the Cold tier section of docs/BENCHMARKS.md")
    args = ap.parse_args()
    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(k, v)
    work = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    proc, endpoint = start_moto()
    try:
        src = work / "hot" / "bench"
        segs = []
        prev = GENESIS_HASH
        first = 0
        for _ in range(args.segments):
            p, m = make_segment(src, "bench", first, int(args.segment_mib * MiB), prev)
            segs.append((p, m))
            prev, first = m.last_hash, m.last_seq + 1
        total = sum(m.size for _, m in segs)
        rows = []
        aws = find_aws()
        # Interleaved so that machine noise hits every variant alike.
        results: dict[str, dict[str, Any]] = {}
        results["ours, zstd, 1 thread"] = run_ours(endpoint, segs, "zstd", 1)
        results["ours, none, 1 thread"] = run_ours(endpoint, segs, "none", 1)
        if aws:
            results["aws s3 cp --recursive (10 threads, no verify)"] = run_aws(aws, endpoint, src, total)
        results["ours, zstd, 4 threads"] = run_ours(endpoint, segs, "zstd", 4)
        results["ours, none, 4 threads"] = run_ours(endpoint, segs, "none", 4)
        for name, r in results.items():
            reqs = r.get("requests")
            req_s = ", ".join(f"{k} {v:g}" for k, v in reqs.items()) if reqs else "-"
            ratio = f"{r['stored_ratio']:.1f}x" if "stored_ratio" in r else "1.0x"
            rows.append(f"| {name} | {r['mbps']:.0f} | {ratio} | {req_s} |")
        big_dir = work / "big"
        big = make_segment(big_dir / "bench", "bench", 0, args.big_mib * MiB, GENESIS_HASH)
        mem_rows = []
        for comp in ("none", "zstd"):
            m = run_memory(endpoint, big, comp)
            mem_rows.append(f"| {comp} | {m['segment_mib']:.0f} MiB | {'yes' if m['multipart'] else 'no'} | "
                            f"{m['tracemalloc_peak_mib']:.1f} MiB | {m['rss_growth_mib']:.0f} MiB | "
                            f"{m['upload_s']:.1f} s | {m['deep_s']:.1f} s |")
        cpu = os.cpu_count()
        load = os.getloadavg()[0]
        text = "\n".join([
            f"`bench/bench_cold.py`: {args.segments} sealed segments of {args.segment_mib:g} MiB "
            f"({total / MiB:.0f} MiB of ~200-byte records), moto server {'' if aws else '(no aws cli found) '}"
            f"in a separate process on 127.0.0.1, {cpu} cores (1-minute load {load:.1f} at the end of the run: "
            "client, server and compression share them). Throughput counts uncompressed segment bytes "
            "per second, including copy-then-verify (HEAD: size, SHA-256, lock, metadata) for ours; "
            "`aws s3 cp` uploads without any verification, lock or compression.",
            "",
            "| client | MB/s | stored ratio | requests per segment |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Client memory for one {args.big_mib} MiB segment (8 MiB parts, multipart threshold 64 MiB). "
            "Deep verification re-parses every record (`pipeline.record.parse_record`), so it runs at "
            "record-parsing speed, not network speed:",
            "",
            "| compression | segment | multipart | tracemalloc peak (upload) | RSS growth (upload + deep) "
            "| upload + verify | deep verify |",
            "|---|---|---|---|---|---|---|",
            *mem_rows,
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
