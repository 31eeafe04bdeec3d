"""Shared witness logic: deciding whether a new checkpoint extends the one last seen."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline import merkle
from pipeline.checkpoint import Checkpoint
from pipeline.witness import ConsistencyFn, WitnessError


def check_extends(old: Checkpoint | None, new: Checkpoint, prove: ConsistencyFn, where: str) -> None:
    """Raise WitnessError unless ``new`` is ``old`` or an append-only extension of it."""
    if old is None:
        return
    if old.origin != new.origin:
        raise WitnessError(f"{where}: origin {new.origin!r} differs from stored {old.origin!r}", status=409)
    if new.size < old.size:
        raise WitnessError(
            f"{where}: rollback refused: checkpoint size {new.size} is below the witnessed size {old.size}",
            status=409, size=old.size,
        )
    if new.size == old.size:
        if new.root != old.root:
            raise WitnessError(
                f"{where}: FORK: two different roots were signed for size {new.size}", status=409, fork=True,
                size=old.size,
            )
        return
    proof = prove(old.size, new.size)
    try:
        merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    except merkle.ProofError as exc:
        raise WitnessError(
            f"{where}: FORK: checkpoint {new.size} is not consistent with witnessed size {old.size}: {exc}",
            status=422, fork=True, size=old.size,
        ) from exc


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary file, fsync, rename over ``path``, fsync the directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def create_exclusive(path: Path, data: bytes) -> bool:
    """Create ``path`` with ``data`` unless it exists.  Returns False if it already existed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    except FileExistsError:
        return False
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    return True
