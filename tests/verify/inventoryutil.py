"""An S3 Inventory report built from a real bucket's version listing, as AWS delivers one.

moto does not generate inventory reports, so this writes what S3 would: Parquet data files
with the documented schema (docs.aws.amazon.com, "Amazon S3 Inventory list": bucket, key,
version_id, is_latest, is_delete_marker, size, last_modified_date, e_tag, storage_class,
is_multipart_uploaded, replication_status, encryption_status, object_lock_retain_until_date,
object_lock_mode, object_lock_legal_hold_status, checksum_algorithm; timestamps as
TIMESTAMP_MILLIS), a manifest.json (sourceBucket, destinationBucket ARN, version
2016-11-30, creationTimestamp in ms, fileFormat, fileSchema, files with key/size/MD5checksum)
and manifest.checksum, under ``<dest prefix>/<source bucket>/<config id>/``.  Every value
comes from ListObjectVersions and a HEAD of each version (the lock fields are not in the
listing), i.e. from the bucket's real state.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

FILE_SCHEMA = (
    "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); optional binary "
    "version_id (UTF8); optional boolean is_latest; optional boolean is_delete_marker; optional int64 size; "
    "optional int64 last_modified_date (TIMESTAMP_MILLIS); optional binary e_tag (UTF8); optional binary "
    "storage_class (UTF8); optional boolean is_multipart_uploaded; optional binary replication_status (UTF8); "
    "optional binary encryption_status (UTF8); optional int64 object_lock_retain_until_date (TIMESTAMP_MILLIS); "
    "optional binary object_lock_mode (UTF8); optional binary object_lock_legal_hold_status (UTF8); optional "
    "binary checksum_algorithm (UTF8);}"
)
TS = pa.timestamp("ms", tz="UTC")
SCHEMA = pa.schema([
    ("bucket", pa.string()), ("key", pa.string()), ("version_id", pa.string()), ("is_latest", pa.bool_()),
    ("is_delete_marker", pa.bool_()), ("size", pa.int64()), ("last_modified_date", TS), ("e_tag", pa.string()),
    ("storage_class", pa.string()), ("is_multipart_uploaded", pa.bool_()), ("replication_status", pa.string()),
    ("encryption_status", pa.string()), ("object_lock_retain_until_date", TS), ("object_lock_mode", pa.string()),
    ("object_lock_legal_hold_status", pa.string()), ("checksum_algorithm", pa.string()),
])


def inventory_rows(client: Any, bucket: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            version = {} if v["VersionId"] == "null" else {"VersionId": v["VersionId"]}  # unversioned bucket
            head = client.head_object(Bucket=bucket, Key=v["Key"], **version)
            rows.append({
                "bucket": bucket, "key": v["Key"], "version_id": v["VersionId"], "is_latest": v["IsLatest"],
                "is_delete_marker": False, "size": v["Size"], "last_modified_date": v["LastModified"],
                "e_tag": v["ETag"].strip('"'), "storage_class": v.get("StorageClass", "STANDARD"),
                "is_multipart_uploaded": "-" in v["ETag"], "replication_status": None,
                "encryption_status": "SSE-S3" if head.get("ServerSideEncryption") == "AES256" else "NOT-SSE",
                "object_lock_retain_until_date": head.get("ObjectLockRetainUntilDate"),
                "object_lock_mode": head.get("ObjectLockMode"),
                "object_lock_legal_hold_status": head.get("ObjectLockLegalHoldStatus", "OFF"),
                "checksum_algorithm": (v.get("ChecksumAlgorithm") or [None])[0],
            })
        for m in page.get("DeleteMarkers", []):
            rows.append({"bucket": bucket, "key": m["Key"], "version_id": m["VersionId"], "is_latest": m["IsLatest"],
                         "is_delete_marker": True, "size": None, "last_modified_date": m["LastModified"]})
    return rows


def write_inventory(client: Any, source: str, dest: str, *, prefix: str = "inventory", config: str = "daily",
                    endpoint: str, rows_per_file: int = 50, created: dt.datetime | None = None) -> str:
    """Build the report of ``source`` into ``dest``; returns the manifest.json s3:// URL."""
    rows = inventory_rows(client, source)
    created = created or dt.datetime.now(dt.UTC)
    base = f"{prefix}/{source}/{config}"
    files = []
    for i in range(0, max(len(rows), 1), rows_per_file):
        chunk = rows[i:i + rows_per_file]
        if not chunk:
            break
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(chunk, schema=SCHEMA), buf)
        data = buf.getvalue()
        key = f"{base}/data/{uuid.uuid4()}.parquet"
        client.put_object(Bucket=dest, Key=key, Body=data)
        files.append({"key": key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()})
    manifest = json.dumps({
        "sourceBucket": source, "destinationBucket": f"arn:aws:s3:::{dest}", "version": "2016-11-30",
        "creationTimestamp": str(int(created.timestamp() * 1000)), "fileFormat": "Parquet",
        "fileSchema": FILE_SCHEMA, "files": files}).encode()
    stamp = created.strftime("%Y-%m-%dT%H-%MZ")
    client.put_object(Bucket=dest, Key=f"{base}/{stamp}/manifest.json", Body=manifest)
    client.put_object(Bucket=dest, Key=f"{base}/{stamp}/manifest.checksum",
                      Body=hashlib.md5(manifest).hexdigest().encode())
    return f"s3://{dest}/{base}/{stamp}/manifest.json?endpoint_url={endpoint}&region=us-east-1"
