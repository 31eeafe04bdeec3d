"""file:// backend and the `pipeline hold` verb."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main
from pipeline.cold import ColdSettings, ObjectConflictError, WormNotEnforcedError, open_store
from pipeline.cold.filesystem import FileStore
from pipeline.format import attr
from tests.cold.coldutil import clear_immutable_tree, new_bucket, write_segment


@pytest.fixture
def cold_dir(tmp_path: Path) -> Any:
    d = tmp_path / "cold"
    yield d
    clear_immutable_tree(d)


def test_file_store_put_verify_and_conflict(cold_dir: Path, tmp_path: Path) -> None:
    store = open_store(f"file://{cold_dir}", ColdSettings())
    assert isinstance(store, FileStore)
    caps = store.capabilities()
    path, man = write_segment(tmp_path / "hot", records=100)
    if not caps.worm_enforced:
        with pytest.raises(WormNotEnforcedError):
            store.put_segment("app", path.name, str(path), man)
        pytest.skip("this machine cannot set the immutable attribute (needs CAP_LINUX_IMMUTABLE)")
    res = store.put_segment("app", path.name, str(path), man)
    assert res.created and res.verify.ok and res.lock_status.startswith("IMMUTABLE")
    stored = cold_dir / res.key
    assert attr.is_immutable(stored)
    with pytest.raises(PermissionError):
        stored.write_bytes(b"overwrite")
    assert store.verify(res.key, man, deep=True).ok
    assert not store.put_segment("app", path.name, str(path), man).created
    p2, m2 = write_segment(tmp_path / "forged", records=100, salt="x")
    with pytest.raises(ObjectConflictError):
        store.put_segment("app", p2.name, str(p2), m2)
    assert [o.key for o in store.list("app/")] == [res.key]


def test_file_store_without_attribute_fails_closed(cold_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Any, policy: Any = None) -> bool:
        raise attr.AppendOnlyError(1, "Operation not permitted")

    monkeypatch.setattr(attr, "protect_immutable", refuse)
    store = open_store(f"file://{cold_dir}", ColdSettings())
    assert not store.capabilities().worm_enforced
    assert "WORM not enforced" in store.capabilities().reason
    path, man = write_segment(tmp_path / "hot", records=10)
    with pytest.raises(WormNotEnforcedError):
        store.put_segment("app", path.name, str(path), man)
    dev = open_store(f"file://{cold_dir}", ColdSettings(allow_unlocked=True))
    res = dev.put_segment("app", path.name, str(path), man)
    assert res.lock_status == "UNLOCKED (allowed for development)"


def test_hold_cli_over_s3(moto_endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bucket = new_bucket(moto_endpoint)
    url = f"s3://{bucket}/h?endpoint_url={moto_endpoint}&region=us-east-1"
    store = open_store(url, ColdSettings())
    prev = "0" * 64
    keys = []
    for first in (0, 11, 22, 33):
        p, m = write_segment(tmp_path / str(first), first_seq=first, records=10, prev=prev)
        prev = m.last_hash
        keys.append(store.put_segment("app", p.name, str(p), m).key)
    # seqs 15..25 touch the segments starting at 11 and 22 only
    assert main(["hold", "--cold", url, "--stream", "app", "--from-seq", "15", "--to-seq", "25", "--on"]) == 0
    assert [store.stat(k).legal_hold for k in keys] == [False, True, True, False]
    assert main(["hold", "--cold", url, "--stream", "app", "--from-seq", "0", "--off"]) == 0
    assert [store.stat(k).legal_hold for k in keys] == [False] * 4
    assert main(["hold", "--cold", url, "--stream", "nosuch", "--on"]) == 2  # nothing done: could not run
    out = capsys.readouterr()
    assert "legal hold on: " + keys[1] in out.out
