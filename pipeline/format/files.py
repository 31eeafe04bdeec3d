"""Durable file updates: the one ``fsync_dir`` and the one atomic replace.

Every file of the log's layout that is replaced rather than appended (``head.json``, a
checkpoint's ``latest.note``, forward-secure sealing state, a witness's notes, the file://
cold store's metadata) is written the same way (docs/FORMAT.md §6): a temporary file in
the same directory, every byte written, ``fsync``, ``rename`` over the old file, ``fsync``
of the directory.  A crash leaves either the old or the new file, never a mixture, and
once ``atomic_write`` returns the new file survives a power loss.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

StrPath = str | os.PathLike[str]


def fsync_dir(path: StrPath) -> None:
    """Make a directory's entries durable (a created, renamed or removed name)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write(path: StrPath, data: bytes, *, mode: int = 0o666) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    The temporary file ``.<name>.<pid>.<random>.tmp`` is created exclusively beside
    ``path`` with ``mode`` (the process umask applies, as for ``open``), so two writers never
    share one; it is removed again when anything fails before the rename, leaving ``path``
    as it was."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(p.parent)


def create_exclusive(path: StrPath, data: bytes, *, mode: int = 0o444) -> bool:
    """Create ``path`` holding ``data`` durably unless it exists; False when it already
    existed (nothing is written then)."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        return False
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(p.parent)
    return True
