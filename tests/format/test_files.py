"""The one atomic replace and directory fsync (pipeline/format/files.py)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from pipeline.format import files
from pipeline.format.files import atomic_write, create_exclusive, fsync_dir


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    p = tmp_path / "state.json"
    p.write_bytes(b"old")
    atomic_write(p, b"new" * 100_000)
    assert p.read_bytes() == b"new" * 100_000
    assert _leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "head.json"
    p.write_bytes(b"old")

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        atomic_write(p, b"new")
    monkeypatch.undo()
    assert p.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_the_directory_is_fsynced_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real_replace, real_fsync_dir = os.replace, files.fsync_dir

    def replace(a: Path, b: Path) -> None:
        order.append("rename")
        real_replace(a, b)

    def fsync_dir_(d: Path) -> None:
        order.append(f"fsync {Path(d).name}")
        real_fsync_dir(d)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(files, "fsync_dir", fsync_dir_)
    atomic_write(tmp_path / "f", b"x")
    assert order == ["rename", f"fsync {tmp_path.name}"]


@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_the_mode_is_applied_under_the_umask(tmp_path: Path, mode: int) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "f", b"x", mode=mode)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == mode


def test_concurrent_writers_never_share_a_temporary(tmp_path: Path) -> None:
    p = tmp_path / "latest.note"
    payloads = [bytes([65 + i]) * 50_000 for i in range(8)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(20):
                atomic_write(p, data)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(d,)) for d in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert p.read_bytes() in payloads  # one writer's whole bytes, never a mixture
    assert _leftovers(tmp_path) == []


def test_create_exclusive_never_replaces(tmp_path: Path) -> None:
    p = tmp_path / "00000000000000000001.note"
    assert create_exclusive(p, b"first")
    assert not create_exclusive(p, b"second")
    assert p.read_bytes() == b"first"
    assert stat.S_IMODE(p.stat().st_mode) == 0o444


def test_fsync_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "f")
