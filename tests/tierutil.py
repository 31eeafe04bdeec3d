"""Helpers for verify-tier / export / restore tests: a real shipped pipeline (into moto's
server over HTTP, the ``moto_endpoint`` fixture of tests/conftest.py, or any cold store URL)."""

from __future__ import annotations

import hashlib
import io
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from pipeline.checkpoint import Signer
from pipeline.cold import ColdSettings, open_store
from pipeline.hot.checkpoints import CheckpointEmitter
from pipeline.hot.tree import TreeStore
from pipeline.hot.writer import HotLog
from pipeline.ship.shipper import Shipper
from pipeline.witness.directory import DirectoryWitness

ORIGIN_PREFIX = "example.com/worm"


def s3_client(endpoint: str) -> Any:
    from pipeline.cold.s3 import make_client

    return make_client(ColdSettings(), endpoint, "us-east-1")


def new_bucket(endpoint: str, lock: bool = False) -> str:
    name = f"tier-{uuid.uuid4().hex[:16]}"
    c = s3_client(endpoint)
    c.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
    if lock:
        c.put_object_lock_configuration(
            Bucket=name, ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    c.close()
    return name


@dataclass
class Pipeline:
    hot: Path
    url: str
    bucket: str
    prefix: str
    client: Any
    signer: Signer
    vkey: Path
    witness: Path
    stream: str = "app"

    def object_keys(self, *, index: bool = False) -> list[str]:
        """The segment objects' keys (``index``: the manifest index parts', docs/INDEX.md)."""
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=f"{self.prefix}/"):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return sorted(k for k in out if k.startswith(f"{self.prefix}/_index/") == index)

    def get(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def head(self, key: str) -> dict[str, Any]:
        resp: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key)
        return resp

    def segment_bytes(self, key: str) -> bytes:
        raw = self.get(key)
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read() if key.endswith(".zst") else raw

    def put(self, key: str, body: bytes, metadata: dict[str, str]) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=metadata,
                               ChecksumAlgorithm="SHA256")

    def base_args(self) -> list[str]:
        return ["verify-tier", "--hot", str(self.hot), "--cold", self.url, "--allow-unlocked",
                "--vkey", str(self.vkey), "--witness-dir", str(self.witness), "--heartbeat-interval", "0"]


@dataclass
class HotSide:
    """A hot directory written by a real HotLog, with its signing key and witness."""

    hot: Path
    signer: Signer
    vkey: Path
    witness: Path


def build_hot(tmp_path: Path, *, segments: int = 6, events_per_segment: int = 40, witness_upto: int | None = None,
              salt: str = "", pause_after: int | None = None,
              s3_witness: tuple[str, str] | None = None) -> HotSide:
    """A real HotLog (tree store, signed checkpoints, directory witness): ``segments`` sealed
    segments of ``events_per_segment`` events each."""
    hot = tmp_path / "hot"
    stream_dir = hot / "app"
    signer = Signer.generate(ORIGIN_PREFIX)
    keydir = tmp_path / "keys"
    keydir.mkdir(parents=True)
    vkey = keydir / "log.pub"
    vkey.write_text(signer.verifier().to_string() + "\n")
    witness_dir = tmp_path / "witness"
    tree = TreeStore(stream_dir)
    log = HotLog(hot, "app", tree_store=tree, heartbeat_interval=0, segment_window=0, immutable="off")
    witnesses: list[Any] = [DirectoryWitness(witness_dir, verifiers=[signer.verifier()])]
    if s3_witness is not None:  # (endpoint, bucket): checkpoints as create-only objects under witness/
        from pipeline.witness.s3 import S3Witness

        witnesses.append(S3Witness(s3_client(s3_witness[0]), s3_witness[1], "witness"))
    em = CheckpointEmitter(log, stream_dir, signer, tree_store=tree, origin=f"{ORIGIN_PREFIX}/app",
                           witnesses=witnesses, interval=3600)
    n = 0
    for seg_i in range(segments):
        for _i in range(events_per_segment):
            log.append({"user": f"u{n % 7}", "action": "read" if n % 3 else "write", "n": n,
                        "pad": salt + "x" * 50})
            n += 1
        log.seal()
        if pause_after is not None and seg_i == pause_after:
            time.sleep(1.0)  # a silence in the log (no heartbeats are written: interval 0)
        if witness_upto is None or seg_i < witness_upto:
            em.emit()
    log.close()
    if witness_upto is None:
        em.emit()
    return HotSide(hot, signer, vkey, witness_dir)


def ship_hot(side: HotSide, url: str, settings: ColdSettings, *, evict: bool = False, transport: Any = None) -> None:
    """Ship every sealed segment with the real Shipper (copy, read back, confirm)."""
    store = open_store(url, settings, transport=transport)
    # index parts signed by the log's key, as the sidecar with [signing] does (docs/INDEX.md "Signature")
    summary = Shipper(side.hot, store, hot_retention=0.0 if evict else 1e9, concurrency=4,
                      index_signer=side.signer, index_origin=f"{ORIGIN_PREFIX}/app").run_once()
    assert summary.failed == 0 and summary.quarantined == 0, summary.errors
    store.close()


def ship_pipeline(tmp_path: Path, endpoint: str, *, segments: int = 6, lock: bool = False,
                  evict: bool = False, retention_days: int = 1, events_per_segment: int = 40,
                  witness_upto: int | None = None, salt: str = "", prefix: str = "audit",
                  bucket: str | None = None, pause_after: int | None = None,
                  s3_witness: tuple[str, str] | None = None) -> Pipeline:
    """A real HotLog (tree store, signed checkpoints, directory witness) shipped by the real
    Shipper into a bucket on moto's server."""
    side = build_hot(tmp_path, segments=segments, events_per_segment=events_per_segment, witness_upto=witness_upto,
                     salt=salt, pause_after=pause_after, s3_witness=s3_witness)
    bucket = bucket or new_bucket(endpoint, lock=lock)
    url = f"s3://{bucket}/{prefix}?endpoint_url={endpoint}&region=us-east-1"
    ship_hot(side, url, ColdSettings(allow_unlocked=not lock, retention_days=retention_days), evict=evict)
    return Pipeline(side.hot, url, bucket, prefix, s3_client(endpoint), side.signer, side.vkey, side.witness)


def compress(segment: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=True).compress(segment)


def rewrite_object(pl: Pipeline, key: str, segment: bytes, *, update_content: bool = True) -> None:
    """The attacker with write access to an unlocked bucket: replace an object by ``segment``
    (compressed like the shipper does) with metadata made consistent with the new bytes."""
    meta = dict(pl.head(key)["Metadata"])
    body = compress(segment) if key.endswith(".zst") else segment
    meta["worm_stored_sha256"] = hashlib.sha256(body).hexdigest()
    meta["worm_stored_size"] = str(len(body))
    if update_content:
        meta["worm_sha256"] = hashlib.sha256(segment).hexdigest()
        meta["worm_size"] = str(len(segment))
    pl.put(key, body, meta)


def alter_record(segment: bytes, index: int, old: bytes, new: bytes) -> bytes:
    """Change bytes inside record line ``index`` without re-hashing it (same length)."""
    lines = segment.splitlines(keepends=True)
    assert old in lines[index], (old, lines[index][:120])
    lines[index] = lines[index].replace(old, new, 1)
    return b"".join(lines)


def rechain(stream_dir: Path, edit: tuple[str, int, dict[str, Any]]) -> None:
    """The attacker on the host with no keys: change one event of segment ``edit[0]`` (record
    index ``edit[1]`` gets data ``edit[2]``), then re-hash, re-link and re-seal every record
    from there to the newest (seal counts, Merkle roots and both frontiers recomputed, exactly
    as the writer would have written them) and rewrite head.json to match.  Only signed
    checkpoints, witnesses, FSS seals, the ledger and cold copies can tell."""
    import orjson

    from pipeline import merkle
    from pipeline.hot.segment import list_segments
    from pipeline.record import GENESIS_HASH, encode_record, parse_record

    stream_cr = merkle.CompactRange()
    prev = GENESIS_HASH.encode()
    for path in list_segments(stream_dir):
        seg_cr = merkle.CompactRange()
        start_frontier = [h.hex() for h in stream_cr.stack]
        out: list[bytes] = []
        first_ts = ""
        for i, raw in enumerate(path.read_bytes().splitlines(keepends=True)):
            rec = parse_record(raw)
            data = rec.data
            if (path.name, i) == edit[:2]:
                data = edit[2]
            if rec.kind == "seal":
                data = dict(data, last_hash=prev.decode(), merkle_root=seg_cr.root().hex(), tree_size=stream_cr.size,
                            tree_root=stream_cr.root().hex(), frontier=[h.hex() for h in stream_cr.stack],
                            start_frontier=start_frontier, opened=first_ts)
            line, digest = encode_record(rec.stream, rec.seq, rec.ts.encode(), rec.kind, prev, orjson.dumps(data))
            first_ts = first_ts or rec.ts
            lh = merkle.leaf_hash(line[:-1])
            if rec.kind != "seal":
                seg_cr.append(lh)
            stream_cr.append(lh)
            prev = digest
            out.append(line)
        if path.read_bytes() != b"".join(out):
            path.write_bytes(b"".join(out))
    head = orjson.loads((stream_dir / "head.json").read_bytes())
    head.update(last_hash=prev.decode(), tree_size=stream_cr.size, frontier=[h.hex() for h in stream_cr.stack])
    (stream_dir / "head.json").write_bytes(orjson.dumps(head))
