"""The backend contract: the same behaviour, checked the same way, on every cold backend.

Each backend is a thin client of primitives under ``ColdTier`` (pipeline/cold/tier.py,
docs/COLD.md "The backend contract").  These tests drive real stores -- a directory with the
immutable attribute, moto's S3 server over HTTP, Azurite -- through the public store
interface and the primitives.  A new backend is checked by adding one ``Harness`` below.

What a harness provides:
- ``worm``: a store that enforces WORM, or one with ``allow_unlocked`` where no emulator here
  can enforce it (Azurite accepts immutability headers without enforcing them: FACTS.md);
- ``unlocked``: a store on storage that does not enforce WORM (file:// without the
  immutable attribute, an S3 bucket without Object Lock, an Azurite container);
- ``tamper(store, key, data)``: replace an object's bytes behind the store's back, as an
  attacker with write access (or a broken service) would.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.cold import (
    ColdSettings,
    ObjectConflictError,
    VerificationError,
    WormNotEnforcedError,
    open_store,
)
from pipeline.cold.base import encode_metadata, required_retain_until
from pipeline.cold.codec import prepare_body
from pipeline.cold.tier import ColdTier, NewObject
from pipeline.format import attr
from tests.cold.coldutil import clear_immutable_tree, new_bucket, write_segment


@dataclasses.dataclass
class Harness:
    name: str
    make: Callable[..., ColdTier]  # make(worm: bool, **settings)
    tamper: Callable[[ColdTier, str, bytes], None]
    enforces: bool  # whether ``make(worm=True)`` really enforces WORM (not only allowed unlocked)

    def worm(self, **settings: Any) -> ColdTier:
        if not self.enforces:
            settings.setdefault("allow_unlocked", True)
        return self.make(True, **settings)

    def unlocked(self, **settings: Any) -> ColdTier:
        return self.make(False, **settings)


def _file_harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    root = tmp_path / "cold"

    def make(worm: bool, **settings: Any) -> ColdTier:
        if not worm:
            # a filesystem where the immutable attribute cannot be set (no CAP_LINUX_IMMUTABLE)
            def refuse(path: Any, policy: Any = None) -> bool:
                raise attr.AppendOnlyError(1, "Operation not permitted")

            monkeypatch.setattr(attr, "protect_immutable", refuse)
        store = open_store(f"file://{root}/{'worm' if worm else 'plain'}", ColdSettings(**settings))
        assert isinstance(store, ColdTier)
        return store

    def tamper(store: ColdTier, key: str, data: bytes) -> None:
        path = Path(store.endpoint.removeprefix("file://")) / key
        attr.clear_protection(path)
        path.write_bytes(data)

    return Harness("file", make, tamper, enforces=True)


def _s3_harness(endpoint: str) -> Harness:
    def make(worm: bool, **settings: Any) -> ColdTier:
        bucket = new_bucket(endpoint, lock=worm)
        store = open_store(f"s3://{bucket}/audit?endpoint_url={endpoint}&region=us-east-1", ColdSettings(**settings))
        assert isinstance(store, ColdTier)
        return store

    def tamper(store: ColdTier, key: str, data: bytes) -> None:
        # a plain PUT over a locked key adds a newer version, which is what readers then see
        from pipeline.cold.s3 import make_client

        client = make_client(ColdSettings(), endpoint, "us-east-1")
        meta = store.stat(key).metadata
        client.put_object(Bucket=getattr(store, "bucket"), Key=key, Body=data, Metadata=dict(meta),
                          ChecksumAlgorithm="SHA256")
        client.close()

    return Harness("s3", make, tamper, enforces=True)


def _azure_harness(request: pytest.FixtureRequest) -> Harness:
    request.getfixturevalue("azure_env")

    def make(worm: bool, **settings: Any) -> ColdTier:
        container = request.getfixturevalue("azure_container") if worm else _new_container(request)
        store = open_store(f"az://devstoreaccount1/{container}/audit", ColdSettings(**settings))
        assert isinstance(store, ColdTier)
        return store

    def tamper(store: ColdTier, key: str, data: bytes) -> None:
        cc = getattr(store, "_cc")
        blob = cc.get_blob_client(key)
        meta = blob.get_blob_properties().metadata
        blob.upload_blob(data, overwrite=True, metadata=meta)

    return Harness("azure", make, tamper, enforces=False)  # Azurite cannot enforce immutability


def _new_container(request: pytest.FixtureRequest) -> str:
    from azure.storage.blob import BlobServiceClient

    name = f"cold{uuid.uuid4().hex[:16]}"
    svc = BlobServiceClient.from_connection_string(request.getfixturevalue("azure_env"), retry_total=0)
    svc.create_container(name)
    svc.close()
    return name


@pytest.fixture(params=["file", "s3", pytest.param("azure", marks=pytest.mark.azurite)])
def harness(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    if request.param == "file":
        h = _file_harness(tmp_path, monkeypatch)
        if not h.worm().capabilities().worm_enforced:
            pytest.fail("this machine cannot set the immutable attribute (the suite runs as root with "
                        "CAP_LINUX_IMMUTABLE; the capability-missing path has its own tests)")
        yield h
        clear_immutable_tree(tmp_path / "cold")
    elif request.param == "s3":
        yield _s3_harness(request.getfixturevalue("moto_endpoint"))
    else:
        yield _azure_harness(request)


def test_fails_closed_on_storage_that_does_not_enforce_worm(harness: Harness, tmp_path: Path) -> None:
    store = harness.unlocked()
    caps = store.capabilities()
    assert not caps.worm_enforced and "WORM not enforced" in caps.reason
    path, man = write_segment(tmp_path / "hot", records=20)
    with pytest.raises(WormNotEnforcedError) as ei:
        store.put_segment("app", path.name, str(path), man)
    assert "fail closed" in str(ei.value) and path.name in str(ei.value)
    assert list(store.list()) == []  # nothing was sent
    # Stored anyway (development), the object still does not verify under the fail-closed rule.
    dev = dataclasses.replace(store.settings, allow_unlocked=True)
    store.settings = dev
    res = store.put_segment("app", path.name, str(path), man)
    assert res.verify.ok and res.lock_status == "UNLOCKED (allowed for development)"
    store.settings = dataclasses.replace(dev, allow_unlocked=False)
    strict = store.verify(res.key, man)
    assert not strict.ok and strict.reasons == ["not-locked"]


def test_create_only(harness: Harness, tmp_path: Path) -> None:
    store = harness.worm()
    path, man = write_segment(tmp_path / "hot", records=50)
    first = store.put_segment("app", path.name, str(path), man)
    assert first.created and first.verify.ok
    again = store.put_segment("app", path.name, str(path), man)
    assert not again.created and again.verify.ok and again.key == first.key
    forged, fman = write_segment(tmp_path / "forged", records=50, salt="forged")
    assert forged.name == path.name
    with pytest.raises(ObjectConflictError):
        store.put_segment("app", forged.name, str(forged), fman)
    assert store.verify(first.key, man, deep=True).ok  # the original is untouched
    assert [o.key for o in store.list("app/")] == [first.key]


def test_copy_then_verify_detects_a_corrupted_upload(harness: Harness, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store = harness.worm()
    path, man = write_segment(tmp_path / "hot", records=50)
    real = store.create_object

    def create_then_corrupt(obj: NewObject) -> bool:
        created = real(obj)
        harness.tamper(store, obj.key, b"not what was sent\n")
        return created

    monkeypatch.setattr(store, "create_object", create_then_corrupt)
    with pytest.raises(VerificationError) as ei:
        store.put_segment("app", path.name, str(path), man)
    assert "stored-size-mismatch" in ei.value.result.reasons


@pytest.mark.parametrize("corrupt", ["size", "bytes"])
def test_index_parts_are_created_once_and_copied_then_verified(harness: Harness, corrupt: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A manifest index part (docs/INDEX.md) goes through the same policy as a segment:
    create-only (a second put returns the stored part, never replaces it) and copy-then-verify
    (a stored part whose size or SHA-256 differs from what was sent is refused)."""
    from pipeline.ship.index import index_key

    store = harness.worm()
    data = b"PAR1 the index part as sent PAR1"
    stored = b"not the part" if corrupt == "size" else data[:-1] + b"X"  # shorter / same size, other bytes
    first = store.put_index_part(index_key(store.prefix, "app", "2026-12-01", 0), data, {"worm_index_part": "0"})
    assert first.created and first.size == len(data)
    again = store.put_index_part(first.key, b"another part", {})
    assert not again.created and again.existing == data and again.sha256 == first.sha256
    real = store.create_object

    def create_then_corrupt(obj: NewObject) -> bool:
        created = real(obj)
        harness.tamper(store, obj.key, stored)
        return created

    monkeypatch.setattr(store, "create_object", create_then_corrupt)
    with pytest.raises(VerificationError) as ei:
        store.put_index_part(index_key(store.prefix, "app", "2026-12-01", 1), data, {"worm_index_part": "1"})
    want = "stored-size-mismatch" if corrupt == "size" else "stored-sha256-mismatch"
    assert want in ei.value.result.reasons, ei.value.result.reasons


def test_deep_verify_rereads_the_segment(harness: Harness, tmp_path: Path) -> None:
    """An object consistent with its own metadata (size, stored SHA-256, manifest fields)
    but holding another segment passes a normal verification; only deep verification,
    which decompresses and re-hashes the records, finds it."""
    store = harness.worm()
    path, man = write_segment(tmp_path / "hot", records=50)
    good = store.put_segment("app", path.name, str(path), man)
    deep = store.verify(good.key, man, deep=True)
    assert deep.ok and deep.deep

    other, oman = write_segment(tmp_path / "other", first_seq=1000, records=50, salt="other")
    twin, tman = write_segment(tmp_path / "twin", first_seq=1000, records=50, salt="twin")
    body = prepare_body(str(twin), tman, store.settings)  # the bytes of one segment...
    try:
        key = store.key_for("app", other.name)
        meta = encode_metadata(oman, body.compression, body.size, body.sha256)  # ...described as another
        caps = store.capabilities()
        assert store.create_object(NewObject(key, other.name, body, meta, required_retain_until(store.settings),
                                             caps.worm_enforced, False, False))
    finally:
        body.cleanup()
    assert store.verify(key, oman).ok
    forged = store.verify(key, oman, deep=True)
    assert not forged.ok and forged.reasons


def test_a_backend_cannot_override_the_policy() -> None:
    with pytest.raises(TypeError, match="overrides the cold policy"):
        class Careless(ColdTier):
            backend = "careless"

            def put_segment(self, *a: Any, **kw: Any) -> Any:
                raise AssertionError("never reached")
