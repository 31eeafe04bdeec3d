"""Storage classes and archive tiers (issue 8), over moto's server and Azurite.

Upload-time classes come from ``ColdSettings.storage_class``; objects in an archive class
(S3 GLACIER / DEEP_ARCHIVE, Azure Archive) cannot be read until restored, and every read
path must say so with an action naming the restore command, not fail with a bare 403/409.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.cold import ColdSettings, ObjectArchivedError, open_store
from pipeline.cold.azure import AzureStore
from pipeline.cold.s3 import S3Store
from tests.cold.coldutil import new_bucket, write_segment


def s3_store(endpoint: str, bucket: str, **settings: Any) -> S3Store:
    st = open_store(f"s3://{bucket}/audit?endpoint_url={endpoint}&region=us-east-1", ColdSettings(**settings))
    assert isinstance(st, S3Store)
    return st


@pytest.mark.parametrize("storage_class", ["STANDARD_IA", "GLACIER_IR"])
def test_s3_upload_storage_class_compressed(moto_endpoint: str, tmp_path: Path, raw_s3: Any,
                                            storage_class: str) -> None:
    bucket = new_bucket(moto_endpoint)
    store = s3_store(moto_endpoint, bucket, storage_class=storage_class)
    path, man = write_segment(tmp_path, records=300)
    res = store.put_segment("app", path.name, str(path), man)
    assert res.created and res.compression == "zstd" and res.verify.ok, res.verify.describe()
    # What the service recorded, asked without our code in between.
    head = raw_s3.head_object(Bucket=bucket, Key=res.key)
    assert head["StorageClass"] == storage_class
    assert store.stat(res.key).storage_class == storage_class
    # Both are instant-retrieval classes: deep verification reads them like STANDARD.
    deep = store.verify(res.key, man, deep=True)
    assert deep.ok and not store.stat(res.key).archived, deep.describe()


def test_s3_default_storage_class_sends_none(moto_endpoint: str, tmp_path: Path, raw_s3: Any) -> None:
    bucket = new_bucket(moto_endpoint)
    store = s3_store(moto_endpoint, bucket)
    path, man = write_segment(tmp_path, records=20)
    res = store.put_segment("app", path.name, str(path), man)
    assert raw_s3.head_object(Bucket=bucket, Key=res.key).get("StorageClass", "STANDARD") == "STANDARD"
    assert store.stat(res.key).storage_class == "STANDARD"


@pytest.mark.parametrize("storage_class", ["GLACIER", "DEEP_ARCHIVE"])
def test_s3_archived_object_read_says_restore_first(moto_endpoint: str, tmp_path: Path, raw_s3: Any,
                                                     storage_class: str) -> None:
    bucket = new_bucket(moto_endpoint)
    store = s3_store(moto_endpoint, bucket, storage_class=storage_class)
    path, man = write_segment(tmp_path, records=50)
    # Normal copy-then-verify is a HEAD, which archive classes answer: the upload verifies.
    res = store.put_segment("app", path.name, str(path), man)
    assert res.verify.ok, res.verify.describe()
    st = store.stat(res.key)
    assert st.storage_class == storage_class and st.archived

    with pytest.raises(ObjectArchivedError) as ei:
        store.open(res.key)
    err = ei.value
    assert err.code == "InvalidObjectState" and err.segment == path.name
    assert storage_class in str(err)
    action = err.action or ""
    assert "restore-object" in action and bucket in action and res.key in action
    assert "restore" in err.diagnostics().lower()

    deep = store.verify(res.key, man, deep=True)
    assert not deep.ok and deep.reasons == ["archived"], deep.describe()
    assert any("restore" in c.detail for c in deep.checks if not c.ok)

    # Once restored (moto completes the restore at once) the object reads and verifies.
    raw_s3.restore_object(Bucket=bucket, Key=res.key, RestoreRequest={"Days": 1})
    assert not store.stat(res.key).archived
    assert store.verify(res.key, man, deep=True).ok


@pytest.mark.azurite
def test_azure_access_tier_at_upload_and_archive(azure_container: str, azure_env: str, tmp_path: Path) -> None:
    from azure.storage.blob import ContainerClient

    store = open_store(f"az://devstoreaccount1/{azure_container}/audit",
                       ColdSettings(allow_unlocked=True, storage_class="Cool"))
    assert isinstance(store, AzureStore)
    path, man = write_segment(tmp_path, records=100)
    res = store.put_segment("app", path.name, str(path), man)
    assert res.verify.ok, res.verify.describe()
    cc = ContainerClient.from_connection_string(azure_env, azure_container)
    assert str(cc.get_blob_client(res.key).get_blob_properties().blob_tier) == "Cool"
    assert store.stat(res.key).storage_class == "Cool"
    assert store.verify(res.key, man, deep=True).ok

    cc.get_blob_client(res.key).set_standard_blob_tier("Archive")
    st = store.stat(res.key)
    assert st.archived and st.storage_class == "Archive"
    with pytest.raises(ObjectArchivedError) as ei:
        store.open(res.key).read()
    assert "rehydrate" in (ei.value.action or "") and res.key in (ei.value.action or "")
    normal = store.verify(res.key, man)
    assert not normal.ok and "archived" in normal.reasons
    deep = store.verify(res.key, man, deep=True)
    assert not deep.ok and "archived" in deep.reasons
