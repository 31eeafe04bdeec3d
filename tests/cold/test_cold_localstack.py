"""S3 behaviour moto cannot show, on LocalStack run on the host (localstack/run-host.sh):
bad checksums are refused (BadDigest) and multipart uploads keep their Object Lock.

Marked ``localstack``: deselect with ``-m 'not localstack'``.  When LocalStack cannot be
installed or started the session fixture FAILS these tests; it never skips them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from pipeline.cold import ColdRequestError, ColdSettings, open_store
from pipeline.cold import codec as codec_mod
from pipeline.cold import tier as tier_mod
from pipeline.cold.s3 import S3Store, make_client
from tests.cold.coldutil import new_bucket, write_segment

pytestmark = pytest.mark.localstack
MiB = 1 << 20


def ls_store(endpoint: str, bucket: str, **settings: Any) -> S3Store:
    st = open_store(f"s3://{bucket}/ls?endpoint_url={endpoint}&region=us-east-1", ColdSettings(**settings))
    assert isinstance(st, S3Store)
    return st


def test_single_put_locked_and_verified(localstack_endpoint: str, tmp_path: Path) -> None:
    store = ls_store(localstack_endpoint, new_bucket(localstack_endpoint))
    path, man = write_segment(tmp_path, records=300)
    store.capabilities()
    store.requests.clear()
    res = store.put_segment("app", path.name, str(path), man)
    assert res.created and res.verify.ok, res.verify.describe()
    assert dict(store.requests) == {"PutObject": 1, "HeadObject": 1}
    assert res.lock_status.startswith("COMPLIANCE")
    assert store.verify(res.key, man, deep=True).ok
    assert not store.put_segment("app", path.name, str(path), man).created


def test_wrong_checksum_is_refused_not_retried(localstack_endpoint: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """moto accepts a wrong ChecksumSHA256 (FACTS.md); LocalStack answers BadDigest like AWS."""
    bucket = new_bucket(localstack_endpoint)
    store = ls_store(localstack_endpoint, bucket)
    path, man = write_segment(tmp_path)
    real = codec_mod.prepare_body

    def lying_prepare(*a: Any, **kw: Any) -> codec_mod.PreparedBody:
        body = real(*a, **kw)
        body.sha256 = "00" * 32  # as if the bytes changed between hashing and sending
        return body

    monkeypatch.setattr(tier_mod, "prepare_body", lying_prepare)  # the tier prepares every body
    store.capabilities()
    store.requests.clear()
    with pytest.raises(ColdRequestError) as ei:
        store.put_segment("app", path.name, str(path), man)
    assert ei.value.code in ("BadDigest", "InvalidRequest", "XAmzContentSHA256Mismatch")
    assert store.requests["PutObject"] == 1
    client = make_client(ColdSettings(), localstack_endpoint, "us-east-1")
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_multipart_keeps_the_lock(localstack_endpoint: str, tmp_path: Path) -> None:
    """The multipart path moto cannot lock (see test_cold_s3.py) is locked here."""
    bucket = new_bucket(localstack_endpoint)
    store = ls_store(localstack_endpoint, bucket, compression="none", part_size=5 * MiB,
                     multipart_threshold=5 * MiB)
    path, man = write_segment(tmp_path, records=13000, payload=900)
    res = store.put_segment("app", path.name, str(path), man)
    assert res.multipart and res.verify.ok, res.verify.describe()
    st = store.stat(res.key)
    assert st.lock_mode == "COMPLIANCE" and st.checksum_parts == 3
    assert st.retain_until is not None and st.retain_until > dt.datetime.now(dt.UTC) + dt.timedelta(days=2000)
    client = make_client(ColdSettings(), localstack_endpoint, "us-east-1")
    with pytest.raises(Exception) as ei:
        client.delete_object(Bucket=bucket, Key=res.key, VersionId=st.version_id)
    assert "AccessDenied" in str(ei.value)
    assert store.verify(res.key, man, deep=True).ok


def test_retention_cannot_be_shortened(localstack_endpoint: str, tmp_path: Path) -> None:
    bucket = new_bucket(localstack_endpoint)
    store = ls_store(localstack_endpoint, bucket)
    path, man = write_segment(tmp_path)
    res = store.put_segment("app", path.name, str(path), man)
    client = make_client(ColdSettings(), localstack_endpoint, "us-east-1")
    with pytest.raises(Exception) as ei:
        client.put_object_retention(
            Bucket=bucket, Key=res.key,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": dt.datetime.now(dt.UTC) + dt.timedelta(days=1)})
    assert "AccessDenied" in str(ei.value)
    assert store.verify(res.key, man).ok
