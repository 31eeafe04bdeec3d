"""Faults between boto3 and moto's server (tests/faultproxy.py): the segment ends up stored
exactly once and verified, or the failure is reported with the hot copy untouched."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.cold import ColdRequestError, ColdSettings, ColdUnavailableError, open_store
from pipeline.cold.retry import is_retryable
from pipeline.cold.s3 import S3Store
from tests.cold.coldutil import new_bucket, write_segment
from tests.faultproxy import FaultProxy

FAST = {"retry_initial_backoff": 0.02, "retry_max_backoff": 0.2, "retry_max_seconds": 10.0,
        "read_timeout": 1.0, "connect_timeout": 1.0}


def via_proxy(proxy: FaultProxy, bucket: str, **settings: Any) -> S3Store:
    st = open_store(f"s3://{bucket}/p?endpoint_url={proxy.url}&region=us-east-1",
                    ColdSettings(**{**FAST, **settings}))
    assert isinstance(st, S3Store)
    st.capabilities()  # the bucket check goes through before faults are planned
    st.requests.clear()
    return st


def versions(raw_s3: Any, bucket: str) -> list[dict[str, Any]]:
    return list(raw_s3.list_object_versions(Bucket=bucket).get("Versions", []))


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_503_slowdown_burst_is_retried(moto_endpoint: str, proxy: FaultProxy, tmp_path: Path,
                                       raw_s3: Any) -> None:
    bucket = new_bucket(moto_endpoint)
    store = via_proxy(proxy, bucket)
    path, man = write_segment(tmp_path)
    proxy.plan("status:503:SlowDown", "status:503:SlowDown", "status:503:SlowDown")
    res = store.put_segment("app", path.name, str(path), man)
    assert res.created and res.verify.ok
    assert store.requests["PutObject"] == 4 and store.requests["HeadObject"] == 1
    assert len(versions(raw_s3, bucket)) == 1


def test_connection_resets_are_retried(moto_endpoint: str, proxy: FaultProxy, tmp_path: Path,
                                       raw_s3: Any) -> None:
    bucket = new_bucket(moto_endpoint)
    store = via_proxy(proxy, bucket)
    path, man = write_segment(tmp_path)
    proxy.plan("reset", "reset")
    res = store.put_segment("app", path.name, str(path), man)
    assert res.created and res.verify.ok
    assert len(versions(raw_s3, bucket)) == 1


def test_lost_response_ends_stored_exactly_once(moto_endpoint: str, proxy: FaultProxy, tmp_path: Path,
                                                raw_s3: Any) -> None:
    """The PUT reaches the server and succeeds, but its answer is lost: the retry meets
    IfNoneMatch (412), verifies the existing object and counts it as stored."""
    bucket = new_bucket(moto_endpoint)
    store = via_proxy(proxy, bucket)
    path, man = write_segment(tmp_path)
    proxy.plan("drop_response")
    res = store.put_segment("app", path.name, str(path), man)
    assert not res.created and res.verify.ok, res.verify.describe()
    assert res.lock_status.startswith("COMPLIANCE")
    assert store.requests["PutObject"] == 2
    assert len(versions(raw_s3, bucket)) == 1


def test_slow_server_read_timeout_is_retried(moto_endpoint: str, proxy: FaultProxy, tmp_path: Path,
                                             raw_s3: Any) -> None:
    bucket = new_bucket(moto_endpoint)
    store = via_proxy(proxy, bucket)
    path, man = write_segment(tmp_path)
    proxy.plan("delay:2.5")
    res = store.put_segment("app", path.name, str(path), man)
    assert res.verify.ok
    time.sleep(2.0)  # let the delayed request reach the server too: it must not add a version
    assert len(versions(raw_s3, bucket)) == 1


def test_persistent_outage_reports_and_keeps_hot_copy(moto_endpoint: str, proxy: FaultProxy, tmp_path: Path,
                                                      raw_s3: Any) -> None:
    bucket = new_bucket(moto_endpoint)
    store = via_proxy(proxy, bucket, retry_max_seconds=1.0)
    path, man = write_segment(tmp_path)
    before = file_sha(path)
    proxy.plan(*["status:503:ServiceUnavailable"] * 200)
    t0 = time.monotonic()
    with pytest.raises(ColdUnavailableError) as ei:
        store.put_segment("app", path.name, str(path), man)
    elapsed = time.monotonic() - t0
    proxy.clear()
    assert elapsed < 5, "the retry budget bounds total time"
    msg = str(ei.value)
    assert path.name in msg and proxy.url.removeprefix("http://") in msg and "hot copy is untouched" in msg
    assert store.requests["PutObject"] >= 3
    assert path.exists() and file_sha(path) == before
    assert versions(raw_s3, bucket) == []


@pytest.mark.parametrize("code,status", [("AccessDenied", 403), ("BadDigest", 400), ("InvalidRequest", 400)])
def test_permanent_errors_are_not_retried(moto_endpoint: str, proxy: FaultProxy, tmp_path: Path,
                                          code: str, status: int) -> None:
    store = via_proxy(proxy, new_bucket(moto_endpoint))
    path, man = write_segment(tmp_path)
    proxy.plan(f"status:{status}:{code}")
    with pytest.raises(ColdRequestError) as ei:
        store.put_segment("app", path.name, str(path), man)
    assert store.requests["PutObject"] == 1
    assert ei.value.code == code and path.name in str(ei.value)
    if code == "AccessDenied":
        assert "s3:PutObjectRetention" in (ei.value.action or "")


def test_multipart_part_failure_retried_then_aborted_on_error(
    moto_endpoint: str, proxy: FaultProxy, tmp_path: Path, raw_s3: Any
) -> None:
    mib = 1 << 20
    bucket = new_bucket(moto_endpoint, lock=False)
    store = via_proxy(proxy, bucket, compression="none", part_size=5 * mib, multipart_threshold=5 * mib,
                      allow_unlocked=True)
    path, man = write_segment(tmp_path, records=7000, payload=900)
    # HEAD (404), Create, part 1 fails twice then succeeds, part 2, Complete, HEAD.
    proxy.plan("pass", "pass", "status:503:SlowDown", "reset")
    res = store.put_segment("app", path.name, str(path), man)
    assert res.multipart and res.verify.ok
    assert store.requests["UploadPart"] == 4

    path2, man2 = write_segment(tmp_path / "b", stream="other", records=7000, payload=900)
    store2 = via_proxy(proxy, bucket, compression="none", part_size=5 * mib, multipart_threshold=5 * mib,
                       allow_unlocked=True)
    # HEAD, Create, then part 1 is refused for good: the upload is aborted.  (During a
    # total outage the abort fails too; a lifecycle rule AbortIncompleteMultipartUpload,
    # see docs/COLD.md, removes such leftovers.)
    proxy.plan("pass", "pass", "status:403:AccessDenied")
    with pytest.raises(ColdRequestError):
        store2.put_segment("other", path2.name, str(path2), man2)
    assert store2.requests["AbortMultipartUpload"] == 1
    assert raw_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # aborted


def test_retry_classification() -> None:
    from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

    def ce(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")

    assert is_retryable(ce("SlowDown", 503))
    assert is_retryable(ce("InternalError", 500))
    assert is_retryable(ce("RequestTimeout", 400))
    assert is_retryable(EndpointConnectionError(endpoint_url="http://x"))
    assert is_retryable(ConnectionClosedError(endpoint_url="http://x"))
    assert is_retryable(ConnectionResetError())
    for code, status in [("AccessDenied", 403), ("InvalidRequest", 400), ("BadDigest", 400),
                         ("PreconditionFailed", 412), ("NoSuchBucket", 404)]:
        assert not is_retryable(ce(code, status)), code


@pytest.mark.parametrize("backend", ["s3", "az"])
def test_a_deadline_bounds_every_request_and_retry(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a deadline (the drain's grace period) a request to a frozen endpoint (accepts,
    never answers) and the retry budget both end with it, whatever read_timeout and
    retry_max_seconds say."""
    from pipeline.cold.retry import Deadline, bounded_by
    from tests.cold.coldutil import AZURITE_KEY
    from tests.ship.gate import Gate

    frozen = Gate("127.0.0.1", 9, mode="hang")
    settings = ColdSettings(read_timeout=60.0, connect_timeout=60.0, retry_max_seconds=120.0)
    try:
        if backend == "s3":
            store = open_store(f"s3://bucket-x/p?endpoint_url={frozen.url}&region=us-east-1", settings)
        else:
            monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                               "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                               f"AccountKey={AZURITE_KEY};BlobEndpoint={frozen.url}/devstoreaccount1;")
            store = open_store("az://devstoreaccount1/c/p", settings)
        deadline = Deadline()
        deadline.set(time.monotonic() + 1.0)
        t0 = time.monotonic()
        with bounded_by(deadline), pytest.raises(ColdUnavailableError):
            store.stat("p/app/seg-00000000000000000000.jsonl.zst")
        assert time.monotonic() - t0 < 2.0
        assert frozen.requests  # the request was sent, and hung
        # past the deadline nothing is even tried
        sent = len(frozen.requests)
        with bounded_by(deadline), pytest.raises(ColdUnavailableError):
            store.stat("p/app/seg-00000000000000000000.jsonl.zst")
        assert len(frozen.requests) == sent
        store.close()
    finally:
        frozen.close()
