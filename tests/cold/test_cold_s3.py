"""S3 backend over moto's server (real boto3, real HTTP)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pytest
import zstandard

from pipeline.cold import (
    ColdConfigError,
    ColdSettings,
    ObjectConflictError,
    VerificationError,
    WormNotEnforcedError,
    open_store,
)
from pipeline.cold.base import META_PREFIX, decode_metadata, encode_metadata
from pipeline.cold.s3 import S3Store
from tests.cold.coldutil import new_bucket, write_segment
from tests.netutil import DUMMY_SECRET


def store_for(endpoint: str, bucket: str, **settings: Any) -> S3Store:
    st = open_store(f"s3://{bucket}/audit?endpoint_url={endpoint}&region=us-east-1",
                    ColdSettings(**settings))
    assert isinstance(st, S3Store)
    return st


def test_put_compressed_segment_one_put_one_head(moto_endpoint: str, segment_factory: Any) -> None:
    store = store_for(moto_endpoint, new_bucket(moto_endpoint))
    path, man = segment_factory(records=500)
    store.capabilities()  # bucket check: once per store, not per segment
    store.requests.clear()
    res = store.put_segment("app", path.name, str(path), man)
    assert res.created and res.verify.ok, res.verify.describe()
    assert res.key == f"audit/app/{path.name}.zst"
    assert res.compression == "zstd" and res.stored_size < man.size / 3
    assert dict(store.requests) == {"PutObject": 1, "HeadObject": 1}
    assert res.requests == 2
    assert res.lock_status.startswith("COMPLIANCE until ")
    st = store.stat(res.key)
    assert st.lock_mode == "COMPLIANCE"
    assert st.retain_until is not None
    assert st.retain_until >= dt.datetime.now(dt.UTC) + dt.timedelta(days=2554)
    assert st.sha256 == res.stored_sha256
    meta = decode_metadata(st.metadata)
    assert meta["sha256"] == man.sha256 and meta["merkle_root"] == man.merkle_root
    assert meta["compression"] == "zstd" and meta["first_seq"] == "0" and meta["last_seq"] == str(man.last_seq)
    deep = store.verify(res.key, man, deep=True)
    assert deep.ok, deep.describe()
    assert any(c.name == "deep merkle root" and c.ok for c in deep.checks)
    # The hot bytes come back exactly after decompression.
    body = store.open(res.key).read()
    assert zstandard.ZstdDecompressor().decompress(body) == path.read_bytes()


def test_uncompressed_put_and_standalone_verify_from_metadata(moto_endpoint: str, segment_factory: Any) -> None:
    store = store_for(moto_endpoint, new_bucket(moto_endpoint), compression="none", storage_class="STANDARD_IA")
    path, man = segment_factory()
    res = store.put_segment("app", path.name, str(path), man)
    assert res.key.endswith(".jsonl") and res.stored_sha256 == man.sha256
    st = store.stat(res.key)
    assert st.storage_class == "STANDARD_IA"
    # An auditor without the hot copy: the manifest comes from the object's metadata.
    audit = store.verify(res.key, None, deep=True)
    assert audit.ok, audit.describe()


def test_locked_object_cannot_be_deleted(moto_endpoint: str, segment_factory: Any, raw_s3: Any) -> None:
    bucket = new_bucket(moto_endpoint)
    store = store_for(moto_endpoint, bucket)
    path, man = segment_factory()
    res = store.put_segment("app", path.name, str(path), man)
    version = store.stat(res.key).version_id
    with pytest.raises(Exception) as ei:
        raw_s3.delete_object(Bucket=bucket, Key=res.key, VersionId=version, BypassGovernanceRetention=True)
    assert "AccessDenied" in str(ei.value)


def test_second_put_is_create_only_and_verifies_existing(
    moto_endpoint: str, segment_factory: Any, raw_s3: Any
) -> None:
    bucket = new_bucket(moto_endpoint)
    store = store_for(moto_endpoint, bucket)
    path, man = segment_factory()
    first = store.put_segment("app", path.name, str(path), man)
    again = store.put_segment("app", path.name, str(path), man)
    assert first.created and not again.created
    assert again.verify.ok, again.verify.describe()
    versions = raw_s3.list_object_versions(Bucket=bucket, Prefix=first.key).get("Versions", [])
    assert len(versions) == 1


def test_existing_object_with_other_content_is_a_conflict(moto_endpoint: str, tmp_path: Path) -> None:
    store = store_for(moto_endpoint, new_bucket(moto_endpoint))
    p1, m1 = write_segment(tmp_path / "a", records=50)
    p2, m2 = write_segment(tmp_path / "b", records=50, salt="forged")
    assert p1.name == p2.name and m1.sha256 != m2.sha256
    store.put_segment("app", p1.name, str(p1), m1)
    with pytest.raises(ObjectConflictError) as ei:
        store.put_segment("app", p2.name, str(p2), m2)
    err = ei.value
    assert err.segment == p2.name and "127.0.0.1" in (err.endpoint or "")
    assert "metadata-mismatch" in err.result.reasons
    assert "do NOT delete" in err.diagnostics()
    # The stored object is still the first one.
    assert store.verify(store.key_for("app", p1.name), m1, deep=True).ok


def test_bucket_without_object_lock_fails_closed(moto_endpoint: str, segment_factory: Any, raw_s3: Any) -> None:
    bucket = new_bucket(moto_endpoint, lock=False)
    store = store_for(moto_endpoint, bucket)
    caps = store.capabilities()
    assert not caps.worm_enforced and "no Object Lock" in caps.reason
    path, man = segment_factory()
    with pytest.raises(WormNotEnforcedError) as ei:
        store.put_segment("app", path.name, str(path), man)
    assert path.name in str(ei.value) and "allow_unlocked" in str(ei.value)
    assert raw_s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # nothing uploaded

    dev = store_for(moto_endpoint, bucket, allow_unlocked=True)
    res = dev.put_segment("app", path.name, str(path), man)
    assert res.verify.ok and res.lock_status == "UNLOCKED (allowed for development)"
    # A strict verifier over the same object still refuses it.
    strict = store.verify(res.key, man)
    assert not strict.ok and strict.reasons == ["not-locked"]


def test_legal_hold_on_and_off(moto_endpoint: str, segment_factory: Any) -> None:
    store = store_for(moto_endpoint, new_bucket(moto_endpoint), legal_hold=True)
    path, man = segment_factory()
    res = store.put_segment("app", path.name, str(path), man)
    assert store.stat(res.key).legal_hold is True
    store.set_legal_hold(res.key, False)
    assert store.stat(res.key).legal_hold is False
    store.set_legal_hold(res.key, True)
    assert store.stat(res.key).legal_hold is True


def test_listing_is_paginated_and_in_seq_order(moto_endpoint: str, tmp_path: Path) -> None:
    store = store_for(moto_endpoint, new_bucket(moto_endpoint))
    prev = "0" * 64
    seqs = []
    for i in range(3):
        first = i * 11
        p, m = write_segment(tmp_path, first_seq=first, records=10, prev=prev)
        prev = m.last_hash
        seqs.append(first)
        store.put_segment("app", p.name, str(p), m)
    store.requests.clear()
    keys = [o.key for o in store.list("app/")]
    assert keys == [f"audit/app/seg-{s:020d}.jsonl.zst" for s in seqs]


def _craft(raw_s3: Any, bucket: str, key: str, body: bytes, meta: dict[str, str]) -> None:
    raw_s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta, ChecksumAlgorithm="SHA256",
                      ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode())


def test_corrupted_object_and_tampered_content_have_distinct_reasons(
    moto_endpoint: str, tmp_path: Path, raw_s3: Any
) -> None:
    # Crafted objects go into a bucket without Object Lock; the verifier allows that so the
    # checks under test are the data checks, not the lock.
    bucket = new_bucket(moto_endpoint, lock=False)
    store = store_for(moto_endpoint, bucket, allow_unlocked=True)
    path, man = write_segment(tmp_path / "good", records=100, salt="genuine")
    good = zstandard.ZstdCompressor(level=3).compress(path.read_bytes())
    good_sha = hashlib.sha256(good).hexdigest()
    key = store.key_for("app", path.name)

    # 1. The stored compressed bytes are corrupted (metadata still describes the original).
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2] ^= 0xFF
    _craft(raw_s3, bucket, key, bytes(corrupt), encode_metadata(man, "zstd", len(good), good_sha))
    normal = store.verify(key, man)
    assert not normal.ok and "stored-sha256-mismatch" in normal.reasons
    deep = store.verify(key, man, deep=True)
    assert "stored-sha256-mismatch" in deep.reasons
    assert "content-sha256-mismatch" not in deep.reasons or "decompress-failed" in deep.reasons

    # 2. A valid compressed object, consistent with its own checksum, that decompresses
    #    to a different (re-chained, well-formed) segment.
    # Same length as the genuine one: a larger result would be refused as a bomb first.
    forged_path, forged_man = write_segment(tmp_path / "forged", records=100, salt="forged!")
    assert forged_man.size == man.size
    forged = zstandard.ZstdCompressor(level=3).compress(forged_path.read_bytes())
    key2 = store.key_for("app2", path.name)
    meta2 = encode_metadata(man, "zstd", len(forged), hashlib.sha256(forged).hexdigest())
    meta2[META_PREFIX + "stream"] = "app"
    _craft(raw_s3, bucket, key2, forged, meta2)
    normal2 = store.verify(key2, man)
    assert normal2.ok, normal2.describe()  # layer 1 and metadata are consistent...
    deep2 = store.verify(key2, man, deep=True)
    assert not deep2.ok  # ...only decompressing shows the segment is not the manifest's
    assert "content-sha256-mismatch" in deep2.reasons and "merkle-root-mismatch" in deep2.reasons
    assert "stored-sha256-mismatch" not in deep2.reasons


def test_decompression_bomb_is_refused(moto_endpoint: str, tmp_path: Path, raw_s3: Any) -> None:
    import tracemalloc

    bucket = new_bucket(moto_endpoint, lock=False)
    store = store_for(moto_endpoint, bucket, allow_unlocked=True)
    path, man = write_segment(tmp_path, records=20)
    # 512 MiB of newlines compress to a few KiB.
    cctx = zstandard.ZstdCompressor(level=19)
    chunk = b"\n" * (1 << 20)
    cobj = cctx.compressobj(size=512 << 20)
    bomb = b"".join(cobj.compress(chunk) for _ in range(512)) + cobj.flush()
    assert len(bomb) < 1 << 20
    key = store.key_for("app", path.name)
    _craft(raw_s3, bucket, key, bomb, encode_metadata(man, "zstd", len(bomb), hashlib.sha256(bomb).hexdigest()))
    tracemalloc.start()
    res = store.verify(key, man, deep=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "decompression-bomb" in res.reasons, res.describe()
    assert peak < 64 << 20


def test_multipart_on_moto_comes_back_unlocked_and_fails_closed(
    moto_endpoint: str, tmp_path: Path
) -> None:
    """moto ignores lock headers on multipart uploads (FACTS.md): the read-back sees an
    unlocked object and the store refuses to count it as stored.  LocalStack covers the
    locked multipart path (test_cold_localstack.py)."""
    mib = 1 << 20
    store = store_for(moto_endpoint, new_bucket(moto_endpoint), compression="none",
                      part_size=5 * mib, multipart_threshold=5 * mib)
    path, man = write_segment(tmp_path, records=12000, payload=900)
    assert man.size > 11 * mib
    with pytest.raises(VerificationError) as ei:
        store.put_segment("app", path.name, str(path), man)
    assert "not-locked" in ei.value.result.reasons
    # Everything else about the multipart object checked out: composite checksum, metadata.
    checks = {c.name: c.ok for c in ei.value.result.checks}
    assert checks["stored sha256"] and checks["metadata"] and checks["stored size"]
    assert store.requests["UploadPart"] == 3 and store.requests["CompleteMultipartUpload"] == 1


def test_multipart_bounded_memory_and_deep_verify(moto_process_endpoint: str, tmp_path: Path) -> None:
    import tracemalloc

    mib = 1 << 20
    ep = moto_process_endpoint
    store = store_for(ep, new_bucket(ep, lock=False), compression="none",
                      part_size=5 * mib, multipart_threshold=5 * mib, allow_unlocked=True)
    path, man = write_segment(tmp_path, records=25000, payload=900)
    assert man.size > 20 * mib
    tracemalloc.start()
    res = store.put_segment("app", path.name, str(path), man)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert res.multipart and res.verify.ok
    assert peak < 3 * 5 * mib, f"peak {peak / mib:.1f} MiB for a {man.size / mib:.0f} MiB segment"
    st = store.stat(res.key)
    # moto reports the composite digest without AWS's "-5" part-count suffix; either way it
    # is the SHA-256 over the five part digests recorded in the metadata at upload.
    assert st.sha256 == st.segment_metadata["stored_sha256_composite"] != res.stored_sha256
    assert store.verify(res.key, man, deep=True).ok


def test_source_mismatch_uploads_nothing(moto_endpoint: str, segment_factory: Any, raw_s3: Any) -> None:
    from pipeline.cold import SourceMismatchError

    bucket = new_bucket(moto_endpoint)
    store = store_for(moto_endpoint, bucket)
    path, man = segment_factory()
    with open(path, "ab") as f:
        f.write(b"trailing garbage\n")
    with pytest.raises(SourceMismatchError) as ei:
        store.put_segment("app", path.name, str(path), man)
    assert path.name in str(ei.value)
    assert raw_s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_open_store_url_handling(moto_endpoint: str) -> None:
    with pytest.raises(ColdConfigError):
        open_store("s3://AKIAXXX:secret@bucket/prefix")
    with pytest.raises(ColdConfigError):
        open_store("s3://bucket/prefix?aws_secret_access_key=x")
    with pytest.raises(ColdConfigError):
        open_store("ftp://bucket/prefix")
    st = open_store(f"s3://bkt-name/a/b?endpoint_url={moto_endpoint}&region=us-east-1")
    assert isinstance(st, S3Store) and st.bucket == "bkt-name" and st.prefix == "a/b"
    assert st.key_for("s1", "seg-00000000000000000007.jsonl") == "a/b/s1/seg-00000000000000000007.jsonl.zst"


def test_no_credentials_in_errors_or_repr(moto_endpoint: str, segment_factory: Any) -> None:
    store = store_for(moto_endpoint, new_bucket(moto_endpoint, lock=False))
    path, man = segment_factory()
    with pytest.raises(WormNotEnforcedError) as ei:
        store.put_segment("app", path.name, str(path), man)
    for text in (str(ei.value), ei.value.diagnostics(), repr(store), repr(store.settings),
                 repr(store.capabilities())):
        assert DUMMY_SECRET not in text and "testing" not in text
