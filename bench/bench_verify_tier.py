"""verify-tier at scale: N segments (default 20,000) in moto's server, default mode.

Creates N small but real segments (two chained events and a seal with correct Merkle root
and frontiers, zstd-compressed, with the cold metadata the shipper writes) with a threaded
put loop, then runs verify-tier over them in --cold-only mode and reports wall time,
requests by operation (listing pages, HEADs, GETs) and memory: tracemalloc's peak and the
retained growth per segment, measured at N/10 and N segments so the per-segment slope is
separated from the fixed cost.  moto runs in its own process so its memory is not counted.

    .venv/bin/python bench/bench_verify_tier.py [--segments 20000] [--workers 16]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import os
import socket
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import merkle
from pipeline.cold import ColdSettings, open_store
from pipeline.cold.base import encode_metadata
from pipeline.cold.s3 import make_client
from pipeline.hot.segment import SegmentManifest, segment_name
from pipeline.record import GENESIS_HASH, encode_record
from pipeline.verify.tier import TierOptions, verify_tier

STREAM = "app"
EVENTS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start")


def make_segments(n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """n chained segments: (segment name, stored body, metadata)."""
    return list(iter_segments(n))


def iter_segments(n: int, head: dict[str, object] | None = None) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    """n chained segments, generated one at a time; at the end ``head`` (if given) receives the
    stream's tree head after the last seal: ``size`` (records) and ``root`` (bytes)."""
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=True)
    prev = GENESIS_HASH.encode()
    stream_cr = merkle.CompactRange()
    seq = 0
    t0 = 1_790_000_000
    for _i in range(n):
        first = seq
        start_frontier = [h.hex() for h in stream_cr.stack]
        seg_cr = merkle.CompactRange()
        lines = []
        first_prev = prev.decode()
        for _ in range(EVENTS):
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + seq)).encode() + b".000000Z"
            line, prev = encode_record(STREAM, seq, ts, "event", prev, b'{"i":%d,"user":"u%d"}' % (seq, seq % 7))
            lh = merkle.leaf_hash(line[:-1])
            seg_cr.append(lh)
            stream_cr.append(lh)
            lines.append(line)
            seq += 1
        opened = lines[0][lines[0].index(b'"ts":"') + 6:][:27].decode()
        seal = (b'{"segment":"%s","first_seq":%d,"last_seq":%d,"count":%d,"last_hash":"%s","merkle_root":"%s",'
                b'"opened":"%s","tree_size":%d,"tree_root":"%s","frontier":[%s],"start_frontier":[%s]}') % (
            segment_name(first).encode(), first, seq - 1, EVENTS, prev, seg_cr.root().hex().encode(),
            opened.encode(), seq, stream_cr.root().hex().encode(),
            b",".join(b'"%s"' % h.hex().encode() for h in stream_cr.stack),
            b",".join(b'"%s"' % h.encode() for h in start_frontier))
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + seq)).encode() + b".000000Z"
        line, prev = encode_record(STREAM, seq, ts, "seal", prev, seal)
        stream_cr.append(merkle.leaf_hash(line[:-1]))
        lines.append(line)
        seq += 1
        raw = b"".join(lines)
        body = cctx.compress(raw)
        m = SegmentManifest(STREAM, segment_name(first), first, seq - 1, EVENTS + 1, len(raw),
                            hashlib.sha256(raw).hexdigest(), seg_cr.root().hex(), first_prev, prev.decode(), True,
                            opened, ts.decode())
        yield m.segment, body, encode_metadata(m, "zstd", len(body), hashlib.sha256(body).hexdigest())
    if head is not None:
        head["size"] = seq
        head["root"] = stream_cr.root()


def upload(client: Any, bucket: str, segs: list[tuple[str, bytes, dict[str, str]]], workers: int) -> float:
    t = time.monotonic()

    def put(item: tuple[str, bytes, dict[str, str]]) -> None:
        name, body, meta = item
        client.put_object(Bucket=bucket, Key=f"audit/{STREAM}/{name}.zst", Body=body, Metadata=meta,
                          ChecksumAlgorithm="SHA256")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(put, segs))
    return time.monotonic() - t


def run_verify(url: str, workers: int, trace: bool) -> dict[str, Any]:
    store = open_store(url, ColdSettings(allow_unlocked=True))
    opts = TierOptions(stream=STREAM, cold_only=True, allow_unlocked=True, heartbeat_interval=60.0,
                       workers=workers)
    gc.collect()
    if trace:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    t = time.monotonic()
    report = verify_tier(store, opts)
    elapsed = time.monotonic() - t
    out: dict[str, Any] = {"elapsed": elapsed, "report": report}
    if trace:
        gc.collect()
        cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["retained"] = cur - base
        out["peak"] = peak - base
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=16)
    args = ap.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    proc, endpoint = start_moto()
    try:
        client = make_client(ColdSettings(), endpoint, "us-east-1")
        results = []
        for n in (args.segments // 10, args.segments):
            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            client.create_bucket(Bucket=bucket)
            t = time.monotonic()
            segs = make_segments(n)
            gen = time.monotonic() - t
            up = upload(client, bucket, segs, args.workers)
            del segs
            url = f"s3://{bucket}/audit?endpoint_url={endpoint}&region=us-east-1"
            # one run, traced: moto's server (another process) is the bottleneck, so tracemalloc's
            # overhead on the client hardly changes the wall time
            timed = traced = run_verify(url, args.workers, trace=True)
            rep = timed["report"]
            t_ = rep.totals()
            r = rep.requests
            assert rep.ok, [f.to_dict() for f in rep.findings[:3]]
            assert t_["valid"] == n, t_
            results.append((n, gen, up, timed["elapsed"], r, traced["retained"], traced["peak"]))
            print(f"{n:>6} segments: generated in {gen:.1f} s, uploaded in {up:.1f} s ({n / up:.0f}/s); "
                  f"verify-tier {timed['elapsed']:.1f} s ({n / timed['elapsed']:.0f} segments/s); requests "
                  f"{r['total']} = {r['list']} list + {r['head']} head + {r['get']} get + {r['other']} other "
                  f"({(r['total'] - r['list']) / n:.4f} per segment beyond listing); tracemalloc retained "
                  f"{traced['retained'] / 1e6:.1f} MB ({traced['retained'] / n:.0f} B/segment), peak "
                  f"{traced['peak'] / 1e6:.1f} MB", flush=True)
        (n1, *_, ret1, _p1), (n2, *_, ret2, _p2) = results[0], results[1]
        slope = (ret2 - ret1) / (n2 - n1)
        per_seg = (results[1][4]["total"] - results[1][4]["list"]) / n2
        print(f"memory growth per segment (slope {n1}->{n2}): {slope:.0f} bytes; "
              f"requests per segment beyond listing: {per_seg:.4f}")
        assert per_seg <= 1.0 + 2.0 / n2, per_seg  # + the bucket lock-configuration read
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
