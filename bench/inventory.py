"""verify-tier at fleet scale: inventory mode over a synthetic 10-million-segment estate.

Generates, with DuckDB itself, a manifest index (docs/INDEX.md: chained Parquet parts per
stream, the real schema and footer) and an S3 Inventory report (Parquet, AWS's schema,
manifest.json with MD5s) for N segments, with three planted faults (a deleted object, a
seq gap, an unlocked object) that the run must report; then runs ``verify-tier
--inventory`` (DuckDB engine, local copies) in a child process and reports wall time, the
child's peak RSS, the findings, and requests per segment: inventory mode sends none per
segment (the requests it would send on S3 are computed from the files it reads), against
direct mode's one HEAD per segment plus a listing page per 1,000 (docs/VERIFY-TIER.md).

    .venv/bin/python bench/inventory.py                    # 10,000,000 segments
    .venv/bin/python bench/inventory.py --segments 200000  # quick (CI-sized)
    .venv/bin/python bench/inventory.py --direct 10000,100000  # direct mode's memory on moto

``--direct`` populates moto's server (its own process) with N real chained segments per size
(bench/bench_verify_tier.py's generator) and runs cold-only direct mode twice per size: the
in-process report (tracemalloc peak) and ``--ndjson`` streaming (tracemalloc peak), so the
growth per segment of each is printed with the requests per segment.
It uploads over HTTP (~50-80 objects/s here), so it only fits small sizes; the 10,000 to
1,000,000-segment measurement is bench/direct_memory.py (moto populated in its own process,
the verifier's RSS measured as a separate process).

Targets (issue 22): 10 M segments reconciled in under 5 minutes with peak RSS under 2 GB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BUCKET = "audit-logs"
PREFIX = "fleet"
DAY = "2026-12-01"
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
MISSING, GAP, UNLOCKED = 7, 11, 13  # planted in stream 0: segment numbers


def generate(root: Path, segments: int, streams: int, parts: int, threads: int) -> dict[str, int]:
    import duckdb

    from pipeline.ship.index import GENESIS_PART_HASH, INDEX_FORMAT, PartMeta, index_key
    from pipeline.verify.sql import literal

    con = duckdb.connect(config={"threads": threads, "memory_limit": "1GB", "preserve_insertion_order": False})
    con.execute("SET TimeZone = 'UTC'")
    per_stream = segments // streams
    rows_per_part = math.ceil(per_stream / parts)
    index_dir = root / "index"
    n_parts = 0
    # one segment = 10 records (seq 10*i .. 10*i+9), 5 minutes apart; hashes are 64 hex
    # characters like the real ones (incompressible), h(i) linking segment i-1 to i
    for s in range(streams):
        prev = GENESIS_PART_HASH
        stream = f"s{s:05d}"
        for p in range(parts):
            lo, hi = p * rows_per_part, min(per_stream, (p + 1) * rows_per_part)
            if lo >= hi:
                break
            gap = f"AND NOT (i = {GAP})" if s == 0 else ""
            first = lo if not (s == 0 and lo == GAP) else lo + 1
            rows = con.execute(f"SELECT count(*) FROM range({lo}, {hi}) t(i) WHERE TRUE {gap}").fetchone()
            assert rows is not None
            meta = PartMeta(INDEX_FORMAT, stream, DAY, p, prev, int(rows[0]), first * 10, hi * 10 - 1)
            key = index_key(PREFIX, stream, DAY, p)
            path = index_dir / key
            path.parent.mkdir(parents=True, exist_ok=True)
            kv = literal(meta.to_json().decode())
            con.execute(f"""
                COPY (
                  SELECT '{stream}' AS stream, '{DAY}' AS dt, printf('seg-%020d.jsonl', i * 10) AS segment,
                         printf('{PREFIX}/{stream}/seg-%020d.jsonl.zst', i * 10) AS key,
                         i * 10 AS first_seq, i * 10 + 9 AS last_seq, CAST(10 AS BIGINT) AS records,
                         CAST(4000 AS BIGINT) AS size, md5('c' || i) || md5('d' || i) AS sha256,
                         CAST(1000 + i % 97 AS BIGINT) AS stored_size, md5('e' || i) || md5('f' || i) AS stored_sha256,
                         CAST(NULL AS VARCHAR) AS stored_md5, 'zstd' AS compression,
                         md5('g' || i) || md5('h' || i) AS merkle_root,
                         CASE WHEN i = 0 THEN repeat('0', 64)
                              ELSE md5('{stream}' || (i - 1)) || md5((i - 1) || '{stream}') END AS first_prev,
                         md5('{stream}' || i) || md5(i || '{stream}') AS last_hash, TRUE AS sealed,
                         TIMESTAMPTZ '{T0.isoformat()}' + to_seconds(i * 300) AS first_ts,
                         TIMESTAMPTZ '{T0.isoformat()}' + to_seconds(i * 300 + 299) AS last_ts,
                         i * 10 + 9 AS tree_size, md5('t' || i) || md5('u' || i) AS tree_root,
                         TIMESTAMPTZ '{T0.isoformat()}' + to_seconds(i * 300 + 330) AS confirmed_at
                  FROM range({lo}, {hi}) t(i) WHERE TRUE {gap} ORDER BY i
                ) TO '{path}' (FORMAT parquet, COMPRESSION zstd, KV_METADATA {{'worm.index': {kv}}})""")
            prev = hashlib.sha256(path.read_bytes()).hexdigest()
            n_parts += 1
    # the inventory: one current, locked version per segment object (the planted faults
    # aside) and per index part, written in 8 files as S3 splits a large report
    inv = root / "inventory" / BUCKET / "daily"
    (inv / "data").mkdir(parents=True)
    con.execute(f"CREATE VIEW idx AS SELECT * FROM read_parquet('{index_dir}/**/*.parquet', hive_partitioning=false)")
    con.execute(f"""
        COPY (
          SELECT '{BUCKET}' AS bucket, key, 'v1' AS version_id, TRUE AS is_latest, FALSE AS is_delete_marker,
                 stored_size AS size, CAST(confirmed_at - INTERVAL 30 SECOND AS TIMESTAMPTZ) AS last_modified_date,
                 md5(key) AS e_tag, 'STANDARD' AS storage_class, FALSE AS is_multipart_uploaded,
                 CAST(NULL AS VARCHAR) AS replication_status, 'SSE-S3' AS encryption_status,
                 CAST(confirmed_at + INTERVAL 2556 DAY AS TIMESTAMPTZ) AS object_lock_retain_until_date,
                 CASE WHEN stream = 's00000' AND first_seq = {UNLOCKED * 10} THEN NULL ELSE 'COMPLIANCE' END
                   AS object_lock_mode,
                 'OFF' AS object_lock_legal_hold_status, 'SHA256' AS checksum_algorithm
          FROM idx WHERE NOT (stream = 's00000' AND first_seq = {MISSING * 10})
          UNION ALL
          SELECT '{BUCKET}',
                 '{PREFIX}/_index/' || stream || '/dt={DAY}/' || lpad(CAST(p AS VARCHAR), 10, '0') || '.parquet',
                 'v1', TRUE, FALSE, 1000, TIMESTAMPTZ '{T0.isoformat()}', md5('p' || stream || p), 'STANDARD', FALSE,
                 NULL, 'SSE-S3', TIMESTAMPTZ '{T0.isoformat()}' + INTERVAL 2556 DAY, 'COMPLIANCE', 'OFF', 'SHA256'
          FROM (SELECT DISTINCT stream FROM idx) s, range({parts}) r(p)
        ) TO '{inv / "data"}' (FORMAT parquet, COMPRESSION snappy, PER_THREAD_OUTPUT true)""")
    files = []
    for f in sorted((inv / "data").glob("*.parquet")):
        files.append({"key": f"inventory/{BUCKET}/daily/data/{f.name}", "size": f.stat().st_size,
                      "MD5checksum": hashlib.md5(f.read_bytes()).hexdigest()})
    stamp = inv / "2026-12-02T00-00Z"
    stamp.mkdir()
    from tests.verify.inventoryutil import FILE_SCHEMA

    (stamp / "manifest.json").write_text(json.dumps({
        "sourceBucket": BUCKET, "destinationBucket": "arn:aws:s3:::inventory", "version": "2016-11-30",
        "creationTimestamp": str(int(dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)),
        "fileFormat": "Parquet", "fileSchema": FILE_SCHEMA, "files": files}))
    con.close()
    return {"parts": n_parts, "inventory_files": len(files)}


def verify(root: Path, memory_limit: str) -> None:
    """The child process: the reconciliation alone, its report summarised on stdout."""
    from pipeline.verify.inventory import InventoryOptions, InventoryVerifier

    class Store:  # where the segments would be read from: sampling is off in the benchmark
        prefix, bucket, endpoint = PREFIX, BUCKET, f"s3://{BUCKET}/{PREFIX}"
        settings = __import__("pipeline.cold", fromlist=["ColdSettings"]).ColdSettings()

    opts = InventoryOptions(inventory=str(root / "inventory" / BUCKET / "daily" / "2026-12-02T00-00Z"),
                            index=str(root / "index"), heartbeat_interval=0, sample_fraction=0.0,
                            memory_limit=memory_limit, temp_dir=str(root), now=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    t0 = time.monotonic()
    report = InventoryVerifier(Store(), opts).run()  # type: ignore[arg-type]
    elapsed = time.monotonic() - t0
    found = sorted({(f.code, f.segment) for f in report.findings if f.severity == "error"})
    print(json.dumps({"elapsed_s": elapsed, "segments": report.totals()["segments"], "findings": found}))


def run_direct(sizes: list[int], workers: int) -> int:
    import gc
    import tracemalloc
    import uuid

    from bench.bench_verify_tier import make_segments, start_moto, upload
    from pipeline.cold import ColdSettings, open_store
    from pipeline.cold.s3 import make_client
    from pipeline.verify.streaming import StreamingVerifier
    from pipeline.verify.tier import TierOptions, verify_tier

    class Sink:
        def write(self, b: bytes) -> int:
            return len(b)

        def flush(self) -> None:
            pass

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    proc, endpoint = start_moto()
    rows = []
    try:
        client = make_client(ColdSettings(), endpoint, "us-east-1")
        for n in sizes:
            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            client.create_bucket(Bucket=bucket)
            up = upload(client, bucket, make_segments(n), workers)
            url = f"s3://{bucket}/audit?endpoint_url={endpoint}&region=us-east-1"
            peaks = {}
            for mode in ("report", "ndjson"):
                store = open_store(url, ColdSettings(allow_unlocked=True))
                opts = TierOptions(stream="app", cold_only=True, allow_unlocked=True, heartbeat_interval=60.0,
                                   workers=workers)
                gc.collect()
                tracemalloc.start()
                base = tracemalloc.get_traced_memory()[0]
                t = time.monotonic()
                if mode == "report":
                    rep = verify_tier(store, opts)
                    assert rep.ok and rep.totals()["valid"] == n
                    reqs = rep.requests
                else:
                    sv = StreamingVerifier(store, opts, Sink())  # type: ignore[arg-type]
                    assert sv.run() and sv.totals.segments == n
                    reqs = {k: v for k, v in dict(getattr(store, "requests", {})).items()}
                elapsed = time.monotonic() - t
                peaks[mode] = tracemalloc.get_traced_memory()[1] - base
                tracemalloc.stop()
                store.close()
                total = sum(v for k, v in reqs.items() if k not in ("segments", "total", "list", "head", "get",
                                                                    "other")) if mode == "ndjson" else reqs["total"]
                print(f"{n:>7} segments ({up:.0f} s to upload): {mode:<6} {elapsed:6.1f} s, peak "
                      f"{peaks[mode] / 1e6:6.1f} MB, {total / n:.4f} requests per segment", flush=True)
            rows.append((n, peaks))
        (n1, p1), (n2, p2) = rows[0], rows[-1]
        for mode in ("report", "ndjson"):
            print(f"{mode}: peak growth {(p2[mode] - p1[mode]) / (n2 - n1):.0f} bytes per segment ({n1} -> {n2})")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=10_000_000)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--parts", type=int, default=4, help="index parts per stream")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-limit", default="1GB")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--verify-only", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--direct", help="comma-separated segment counts: direct mode's memory on moto instead")
    ap.add_argument("--workers", type=int, default=16)
    args = ap.parse_args()
    if args.direct:
        return run_direct([int(x) for x in args.direct.split(",")], args.workers)
    if args.verify_only:
        verify(args.verify_only, args.memory_limit)
        return 0
    root = Path(tempfile.mkdtemp(prefix="bench-inventory-"))
    try:
        t0 = time.monotonic()
        shape = generate(root, args.segments, args.streams, args.parts, args.threads)
        gen_s = time.monotonic() - t0
        size = sum(f.stat().st_size for f in root.rglob("*.parquet"))
        print(f"generated {args.segments:,} segments in {args.streams} streams: {shape['parts']} index parts, "
              f"{shape['inventory_files']} inventory files, {size / 1e9:.2f} GB Parquet, in {gen_s:.0f} s")
        out = subprocess.run([sys.executable, __file__, "--verify-only", str(root), "--memory-limit",
                              args.memory_limit], capture_output=True, text=True, check=False,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        res = json.loads(out.stdout.strip().splitlines()[-1])
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        expected = {("missing-object", f"seg-{MISSING * 10:020d}.jsonl"),
                    ("not-locked", f"seg-{UNLOCKED * 10:020d}.jsonl"),
                    ("missing-segment", f"seg-{(GAP + 1) * 10:020d}.jsonl")}
        found = {tuple(f) for f in res["findings"]}
        n = res["segments"]
        on_s3 = 2 + shape["inventory_files"] + math.ceil(shape["parts"] / 1000) + shape["parts"]
        direct = n + math.ceil(n / 1000)
        print(f"inventory mode: {n:,} segments reconciled in {res['elapsed_s']:.1f} s, peak RSS {rss_mb:.0f} MB "
              f"(targets: 300 s, 2048 MB); planted faults found: {expected <= found} ({len(found)} error findings)")
        print(f"requests per segment: inventory mode {on_s3 / n:.6f} ({on_s3:,} on S3: manifest + checksum, "
              f"{shape['inventory_files']} data files, {shape['parts']} index parts + listing); direct mode "
              f"{direct / n:.3f} ({direct:,}: one HEAD per segment + one listing page per 1,000)")
        return 0 if expected <= found else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
