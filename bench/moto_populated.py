"""A moto S3 server holding N shipped segments, populated inside its own process.

Uploading a million segments over HTTP would take hours (moto takes ~50-80 PUTs/s on this
machine), so this launcher starts moto's ``ThreadedMotoServer`` and fills its in-memory
backend directly: a bucket created over HTTP with Object Lock (default retention
COMPLIANCE), the FIRST segment PUT over HTTP with real boto3 and exactly the shipper's
arguments (pipeline/cold/s3.py ``_put_single``: COMPLIANCE retain-until, SHA-256 checksum,
the cold metadata, If-None-Match), and every other segment through moto's own backend API
(``S3Backend.put_object`` + ``set_metadata`` / ``set_acl`` / ``checksum_algorithm``, the
same calls moto's PUT handler makes) with the same lock mode, retain-until format, checksum
algorithm and metadata layout.  A parity check then HEADs the HTTP-made object and a
backend-made one over HTTP and refuses to serve unless both answers carry the same headers.
The segments are real: chained records and seals with correct Merkle roots and frontiers
(bench/bench_verify_tier.py's generator), so verify-tier judges every one as valid.

moto's ``list_object_versions`` deep-copies and sorts EVERY version of the bucket for every
page (O(N) per page, so O(N^2/1000) for a listing: hours at 1 M keys).  This launcher
replaces it with a paged equivalent (a sorted key index, bisect to the key marker, copies of
the page's items only) that returns the same pages: ``check_listing_equivalence`` compares
the two on a scratch bucket with several versions per key and delete markers before the
server is announced.  HEAD and GET are moto's own code.

Run by bench/direct_memory.py; standalone:

    .venv/bin/python bench/moto_populated.py --segments 10000

prints one JSON line ``{"endpoint", "bucket", "prefix", "segments", "populate_s", "rss_mb",
"tree_size", "tree_root"}`` (the stream's tree head, for a signed checkpoint) on stdout when
ready, and serves until stdin closes.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import copy
import datetime as dt
import hashlib
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ACCOUNT = "123456789012"  # moto's default account
STREAM = "app"


# ---------------------------------------------------------------- moto's listing, paged


def _install_paged_listing() -> Any:
    """Replace S3Backend.list_object_versions with a paged equivalent; returns the original."""
    from moto.core.utils import unix_time_millis
    from moto.s3.models import FakeKey, S3Backend

    original = S3Backend.list_object_versions
    cache: dict[int, tuple[int, list[str]]] = {}

    def sorted_names(bucket: Any) -> list[str]:
        # the served buckets do not change after population: re-sorted only when the key count does
        hit = cache.get(id(bucket))
        if hit is None or hit[0] != len(bucket.keys):
            hit = (len(bucket.keys), sorted(bucket.keys.keys()))
            cache[id(bucket)] = hit
        return hit[1]

    def paged(self: Any, bucket_name: str, delimiter: str | None = None, key_marker: str | None = None,
              max_keys: int | None = 1000, prefix: str = "", version_id_marker: str | None = None) -> Any:
        if delimiter:
            return original(self, bucket_name, delimiter=delimiter, key_marker=key_marker, max_keys=max_keys,
                            prefix=prefix, version_id_marker=version_id_marker)
        bucket = self.get_bucket(bucket_name)
        names = sorted_names(bucket)
        # moto's loop, started at the first name that can matter instead of at the first key of
        # the bucket: every version of a name below the key marker (or, without one, below the
        # prefix) is skipped by that loop without changing its state
        start = bisect.bisect_left(names, key_marker if key_marker is not None else prefix)
        versions: list[Any] = []
        markers: list[Any] = []
        next_key: str | None = None
        next_version: str | None = None
        skip = key_marker is not None
        last: Any = None
        for name in names[start:]:
            if not name.startswith(prefix) and name > prefix:
                break  # past the prefix: moto's loop adds nothing more
            ordered = sorted(bucket.keys.getlist(name), key=lambda r: -unix_time_millis(r.last_modified))
            for i, version in enumerate(ordered):
                if skip:
                    if not version_id_marker:
                        skip = version.name < key_marker
                        continue
                    if version.name == key_marker and version.version_id == version_id_marker:
                        skip = False
                    continue
                if not name.startswith(prefix):
                    continue
                if max_keys is not None and len(versions) + len(markers) >= max_keys:
                    next_key = last.name if last is not None else name
                    next_version = last.version_id if last is not None else None
                    break
                item = copy.deepcopy(version)
                item.is_latest = i == 0
                last = item
                (versions if isinstance(version, FakeKey) else markers).append(item)
            if next_key is not None:
                break
        return versions, [], markers, next_key, next_version

    setattr(S3Backend, "list_object_versions", paged)  # noqa: B010 (a method replaced on purpose)
    return original


def check_listing_equivalence(backend: Any, original: Any, client: Any) -> None:
    """The paged listing against moto's own, on a scratch bucket: 1,300 keys, some with three
    versions (PUT twice more) or a delete marker, every page of several prefixes (moto's own
    listing copies the whole bucket per page, so the check is kept small)."""
    bucket = "listing-check"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for i in range(1300):
        backend.put_object(bucket, f"p/{i % 3}/k{i:05d}", b"x", disable_notification=True)
    for i in range(0, 1300, 97):
        backend.put_object(bucket, f"p/{i % 3}/k{i:05d}", b"y", disable_notification=True)
        backend.put_object(bucket, f"p/{i % 3}/k{i:05d}", b"z", disable_notification=True)
    for i in range(5, 1300, 89):
        backend.delete_object(bucket, f"p/{i % 3}/k{i:05d}")

    def pages(fn: Any, prefix: str, max_keys: int) -> list[Any]:
        out = []
        km: str | None = None
        vm: str | None = None
        while True:
            v, _cp, d, km, vm = fn(backend, bucket, key_marker=km, max_keys=max_keys, prefix=prefix,
                                   version_id_marker=vm or "")
            out.append(([(x.name, x.version_id, x.is_latest) for x in v],
                        [(x.name, x.version_id, x.is_latest) for x in d], km, vm))
            if km is None:
                return out
            # both answers are then compared page by page, so either would diverge here

    from moto.s3.models import S3Backend

    paged = S3Backend.list_object_versions
    for prefix, max_keys in (("", 500), ("p/1/", 100), ("p/2/", 250)):
        want, got = pages(original, prefix, max_keys), pages(paged, prefix, max_keys)
        if want != got:
            raise SystemExit(f"paged listing differs from moto's for prefix {prefix!r}: refusing to serve")


# ---------------------------------------------------------------- population


def _shipper_put(client: Any, bucket: str, key: str, body: bytes, meta: dict[str, str],
                 retain_until: dt.datetime) -> None:
    # pipeline/cold/s3.py _put_single + _common_args, locked, no SSE / storage class settings
    client.put_object(Bucket=bucket, Key=key, Body=body, ContentLength=len(body), ChecksumAlgorithm="SHA256",
                      ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(), IfNoneMatch="*",
                      Metadata=meta, ContentType="application/octet-stream", ObjectLockMode="COMPLIANCE",
                      ObjectLockRetainUntilDate=retain_until)


def populate(backend: Any, client: Any, bucket: str, prefix: str, n: int, retention_days: int) -> dict[str, Any]:
    from moto.s3.utils import metadata_from_headers

    b = backend.get_bucket(bucket)
    retain_until = dt.datetime.now(dt.UTC) + dt.timedelta(days=retention_days + 1)
    from bench.bench_verify_tier import iter_segments

    first_key = None
    ref: Any = None
    signed_payload = False
    head: dict[str, Any] = {}
    for i, (name, body, meta) in enumerate(iter_segments(n, head)):
        key = f"{prefix}/{STREAM}/{name}.zst"
        if i == 0:
            _shipper_put(client, bucket, key, body, meta, retain_until)
            first_key = key
            ref = b.keys[key]
            # botocore signs the payload over plain http and moto keeps that header as metadata
            signed_payload = ref.metadata.get("x-amz-content-sha256") == hashlib.sha256(body).hexdigest()
            continue
        new = backend.put_object(bucket, key, body, storage="STANDARD", lock_mode=ref.lock_mode,
                                 lock_legal_status=ref.lock_legal_status, lock_until=ref.lock_until,
                                 checksum_value=base64.b64encode(hashlib.sha256(body).digest()).decode(),
                                 disable_notification=True)
        # what moto's PUT handler does after put_object, from the headers boto3 sends
        headers = {f"x-amz-meta-{k}": v for k, v in meta.items()}
        headers["Content-Type"] = "application/octet-stream"
        if signed_payload:
            headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
        new.set_metadata(metadata_from_headers(headers))
        new.set_acl(ref.acl)
        new.checksum_algorithm = ref.checksum_algorithm
    assert first_key is not None
    return {"first_key": first_key, "second_key": f"{prefix}/{STREAM}/{_name_of(1)}.zst" if n > 1 else None,
            "tree_size": head["size"], "tree_root": head["root"].hex()}


def _name_of(i: int) -> str:
    from pipeline.format.segment import segment_name

    return segment_name(i * 3)  # bench segments hold 3 records (2 events + seal)


def check_head_parity(client: Any, bucket: str, http_key: str, backend_key: str | None) -> None:
    """The HEAD answer of a backend-made object must carry the headers of the HTTP-PUT one."""
    if backend_key is None:
        return

    def head(key: str) -> dict[str, Any]:
        r = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        return dict(r)

    a, b = head(http_key), head(backend_key)
    def fields(r: dict[str, Any]) -> list[str]:
        return sorted(k for k in r if k != "ResponseMetadata")

    ha = sorted(a["ResponseMetadata"]["HTTPHeaders"])
    hb = sorted(b["ResponseMetadata"]["HTTPHeaders"])
    same = (fields(a) == fields(b) and ha == hb and a["ObjectLockMode"] == b["ObjectLockMode"] == "COMPLIANCE"
            and a["ObjectLockRetainUntilDate"] == b["ObjectLockRetainUntilDate"]
            and sorted(a["Metadata"]) == sorted(b["Metadata"]) and "ChecksumSHA256" in b)
    if not same:
        raise SystemExit(f"backend-made object differs from the HTTP-PUT one: {fields(a)} {ha} vs {fields(b)} {hb}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, required=True)
    ap.add_argument("--retention-days", type=int, default=2555)
    args = ap.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    from moto.backends import get_backend
    from moto.server import ThreadedMotoServer

    from pipeline.cold import ColdSettings
    from pipeline.cold.s3 import make_client

    original = _install_paged_listing()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        client = make_client(ColdSettings(), endpoint, "us-east-1")
        backend = get_backend("s3")[ACCOUNT]["global"]
        check_listing_equivalence(backend, original, client)
        bucket, prefix = "audit-bench", "audit"
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        client.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": args.retention_days}}})
        t = time.monotonic()
        keys = populate(backend, client, bucket, prefix, args.segments, args.retention_days)
        took = time.monotonic() - t
        check_head_parity(client, bucket, keys["first_key"], keys["second_key"])
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"endpoint": endpoint, "bucket": bucket, "prefix": prefix, "segments": args.segments,
                          "populate_s": round(took, 1), "rss_mb": round(rss_mb), "tree_size": keys["tree_size"],
                          "tree_root": keys["tree_root"]}), flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin (or dies)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
