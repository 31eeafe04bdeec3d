"""prepare_body: the compressed body in memory or spilled to the spool directory, the
same bytes either way, nothing left behind (issue 8: no temp file per ordinary segment)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import zstandard

from pipeline.cold import ColdSettings, SourceMismatchError
from pipeline.cold.codec import prepare_body
from tests.cold.coldutil import write_segment


def small_memory(settings: ColdSettings, limit: int) -> ColdSettings:
    # part_size is validated >= 5 MiB (S3's minimum part); the memory budget reuses it,
    # so a test forces a small one past the validation to exercise the spill path.
    object.__setattr__(settings, "part_size", limit)
    return settings


@pytest.mark.parametrize("threads", [0, 2])
def test_in_memory_and_spilled_bodies_are_identical(tmp_path: Path, threads: int) -> None:
    path, man = write_segment(tmp_path / "hot", records=3000, payload=300)
    spool = tmp_path / "spool"
    spool.mkdir()
    mem = prepare_body(str(path), man, ColdSettings(spool_dir=str(spool), compression_threads=threads))
    assert mem.data is not None and mem.path is None and list(spool.iterdir()) == []
    spilled = prepare_body(str(path), man, small_memory(
        ColdSettings(spool_dir=str(spool), compression_threads=threads), 4096))
    assert spilled.data is None and spilled.path and Path(spilled.path).parent == spool
    for body in (mem, spilled):
        with body.open() as f:
            raw = f.read()
        assert len(raw) == body.size and hashlib.sha256(raw).hexdigest() == body.sha256
        assert zstandard.ZstdDecompressor().decompress(raw) == path.read_bytes()
        params = zstandard.get_frame_parameters(raw)
        assert params.content_size == man.size and params.has_checksum
    # Every attempt gets a fresh reader from the first byte (retries resend everything).
    with mem.open() as a, mem.open() as b:
        assert a.read(10) == b.read(10)
    spilled.cleanup()
    mem.cleanup()
    assert list(spool.iterdir()) == []


def test_source_mismatch_leaves_no_spool_file(tmp_path: Path) -> None:
    path, man = write_segment(tmp_path / "hot", records=500)
    spool = tmp_path / "spool"
    spool.mkdir()
    lying = dataclasses.replace(man, sha256="00" * 32)
    with pytest.raises(SourceMismatchError):
        prepare_body(str(path), lying, small_memory(ColdSettings(spool_dir=str(spool)), 1024))
    assert list(spool.iterdir()) == []


def test_uncompressed_body_is_the_hot_file(tmp_path: Path) -> None:
    path, man = write_segment(tmp_path / "hot", records=50)
    body = prepare_body(str(path), man, ColdSettings(compression="none"))
    assert body.path == str(path) and body.sha256 == man.sha256 and body.data is None
    body.cleanup()
    assert path.exists()  # never delete the hot copy


def test_settings_reject_bad_thread_count() -> None:
    with pytest.raises(ValueError, match="compression_threads"):
        ColdSettings(compression_threads=-2)
