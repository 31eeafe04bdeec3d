"""The ``list_versions`` primitive of each backend (issue 12 item 6).

S3 against moto's server over HTTP (an Object Lock bucket: a DELETE without version id and a
plain PUT over a locked key); Azure's mapping of blob versions with a stand-in container
client (Azurite has no blob versioning, so the versioned answer cannot come from it: this is
a unit test of the mapping, the Azurite behaviour itself is covered by the tamper matrix);
file:// says it keeps none."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.cold import ColdSettings, open_store
from pipeline.cold.azure import AzureStore
from pipeline.cold.base import VersionsUnavailable
from tests.tierutil import new_bucket, s3_client


def test_s3_lists_delete_markers_and_extra_versions(moto_endpoint: str) -> None:
    bucket = new_bucket(moto_endpoint, lock=True)
    c = s3_client(moto_endpoint)
    for key, body in (("p/app/a", b"1"), ("p/app/b", b"1"), ("p/app/b", b"2")):
        c.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256")
    c.delete_object(Bucket=bucket, Key="p/app/a")  # no version id: a delete marker, the version stays
    store = open_store(f"s3://{bucket}/p?endpoint_url={moto_endpoint}&region=us-east-1", ColdSettings())
    try:
        vs = list(store.list_versions("app/"))
    finally:
        store.close()
    a = [v for v in vs if v.key == "p/app/a"]
    b = [v for v in vs if v.key == "p/app/b"]
    assert sorted((v.delete_marker, v.latest) for v in a) == [(False, False), (True, True)]
    assert len(b) == 2 and sum(v.latest for v in b) == 1 and not any(v.delete_marker for v in b)
    assert {v.size for v in b} == {1} and all(v.version_id for v in vs)


@dataclass
class _Blob:
    name: str
    version_id: str | None
    is_current_version: bool | None
    size: int = 10
    last_modified: dt.datetime | None = None


class _Container:
    container_name = "c"
    url = "https://acct.blob.core.windows.net/c"

    def __init__(self, blobs: list[_Blob]) -> None:
        self.blobs = blobs
        self.asked: dict[str, Any] = {}

    def list_blobs(self, **kw: Any) -> list[_Blob]:
        self.asked = kw
        return [b for b in self.blobs if b.name.startswith(kw["name_starts_with"])]

    def close(self) -> None:
        pass


def _azure(blobs: list[_Blob]) -> tuple[AzureStore, _Container]:
    cc = _Container(blobs)
    return AzureStore(cc, "p", ColdSettings()), cc  # type: ignore[arg-type]


def test_azure_maps_blob_versions() -> None:
    store, cc = _azure([
        _Blob("p/app/a", "v1", True),
        _Blob("p/app/b", "v1", False), _Blob("p/app/b", "v2", True),  # overwritten: two versions
        _Blob("p/app/c", "v1", False),  # deleted under versioning: no current version left
    ])
    vs = list(store.list_versions("app/"))
    assert cc.asked["include"] == ["versions"] and cc.asked["results_per_page"] == 1000
    assert [(v.key, v.latest, v.delete_marker) for v in vs if v.key == "p/app/a"] == [("p/app/a", True, False)]
    assert sorted(v.latest for v in vs if v.key == "p/app/b") == [False, True]
    c = [(v.latest, v.delete_marker) for v in vs if v.key == "p/app/c"]
    assert sorted(c) == [(False, False), (True, True)]  # the hidden blob reads as a latest delete marker


def test_azure_without_versioning_says_so() -> None:
    store, _ = _azure([_Blob("p/app/a", None, None)])
    with pytest.raises(VersionsUnavailable, match="no blob versions"):
        list(store.list_versions("app/"))


def test_a_directory_keeps_no_versions(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}", ColdSettings(allow_unlocked=True))
    with pytest.raises(VersionsUnavailable, match="keeps no object versions"):
        list(store.list_versions("app/"))
