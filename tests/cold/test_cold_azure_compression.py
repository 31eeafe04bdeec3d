"""Compressed objects on Azurite: the two verification layers fail with distinct reasons,
and a decompression bomb is refused (the moto counterparts are in test_cold_s3.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import zstandard
from azure.storage.blob import ContainerClient

from pipeline.cold import ColdSettings, open_store
from pipeline.cold.azure import AzureStore
from pipeline.cold.base import encode_metadata
from tests.cold.coldutil import write_segment

pytestmark = pytest.mark.azurite


def _store(container: str) -> AzureStore:
    # Azurite enforces no immutability (FACTS.md): the checks under test are the data checks.
    st = open_store(f"az://devstoreaccount1/{container}/audit", ColdSettings(allow_unlocked=True))
    assert isinstance(st, AzureStore)
    return st


def _craft(env: str, container: str, key: str, body: bytes, meta: dict[str, str]) -> None:
    cc = ContainerClient.from_connection_string(env, container, retry_total=0)
    cc.get_blob_client(key).upload_blob(body, metadata=meta, overwrite=True)
    cc.close()


def test_round_trip_then_corrupted_and_tampered_have_distinct_reasons(
    azure_container: str, azure_env: str, tmp_path: Path
) -> None:
    store = _store(azure_container)
    path, man = write_segment(tmp_path / "good", records=200, salt="genuine")
    res = store.put_segment("app", path.name, str(path), man)
    assert res.compression == "zstd" and res.key.endswith(".zst") and res.stored_size < man.size / 3
    assert res.verify.ok, res.verify.describe()  # read-back SHA-256 of the compressed bytes
    deep = store.verify(res.key, man, deep=True)
    assert deep.ok and any(c.name == "deep merkle root" and c.ok for c in deep.checks), deep.describe()
    stream = store.open(res.key)
    try:
        good = b"".join(iter(lambda: stream.read(1 << 20), b""))
    finally:
        stream.close()
    assert zstandard.ZstdDecompressor().decompress(good) == path.read_bytes()

    # 1. Stored bytes corrupted, metadata untouched: the stored layer fails.
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    key1 = store.key_for("corrupt", path.name)
    _craft(azure_env, azure_container, key1, bytes(bad),
           encode_metadata(man, "zstd", len(good), hashlib.sha256(good).hexdigest()))
    normal = store.verify(key1, man)
    assert not normal.ok and "stored-sha256-mismatch" in normal.reasons
    assert "content-sha256-mismatch" not in normal.reasons

    # 2. A valid object, consistent with its own checksum, that decodes to another
    #    well-formed segment of the same length: only the content layer fails.
    forged_path, forged_man = write_segment(tmp_path / "forged", records=200, salt="forged!")
    assert forged_man.size == man.size and forged_man.sha256 != man.sha256
    forged = zstandard.ZstdCompressor(level=1).compress(forged_path.read_bytes())
    key2 = store.key_for("forged", path.name)
    _craft(azure_env, azure_container, key2, forged,
           encode_metadata(man, "zstd", len(forged), hashlib.sha256(forged).hexdigest()))
    assert store.verify(key2, man).ok  # the stored layer and metadata are consistent...
    deep2 = store.verify(key2, man, deep=True)
    assert not deep2.ok  # ...only decompressing shows the segment is not the manifest's
    assert {"content-sha256-mismatch", "merkle-root-mismatch"} <= set(deep2.reasons)
    assert "stored-sha256-mismatch" not in deep2.reasons


def test_decompression_bomb_is_refused(azure_container: str, azure_env: str, tmp_path: Path) -> None:
    store = _store(azure_container)
    path, man = write_segment(tmp_path, records=20)
    cobj = zstandard.ZstdCompressor(level=19).compressobj(size=256 << 20)
    chunk = b"\n" * (1 << 20)
    bomb = b"".join(cobj.compress(chunk) for _ in range(256)) + cobj.flush()
    assert len(bomb) < 1 << 20
    key = store.key_for("app", path.name)
    _craft(azure_env, azure_container, key, bomb,
           encode_metadata(man, "zstd", len(bomb), hashlib.sha256(bomb).hexdigest()))
    res = store.verify(key, man, deep=True)
    assert "decompression-bomb" in res.reasons, res.describe()
    assert "stored-sha256-mismatch" not in res.reasons
