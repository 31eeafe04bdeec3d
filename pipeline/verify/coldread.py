"""Reading one cold object back as a segment file: stream, hash, decompress (bounded), write.

Shared by ``verify-tier --deep``, ``export`` and ``restore``.  The object is streamed in
chunks: the stored bytes are hashed as they arrive (layer 1: what the object checksum and
``worm_stored_sha256`` cover) and, for zstd objects, decompressed into a local file named
exactly like the segment (so ``pipeline.verify.chain.scan_segment`` can check the name
against the first seq).  Decompression never produces more than the uncompressed size
recorded in the metadata plus one byte, so a decompression bomb costs at most that much
disk.  Memory stays bounded by the chunk size and zstd's window.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import zstandard

from pipeline.cold.base import ColdStore, ObjectStat
from pipeline.cold.codec import MAX_WINDOW, FrameChecker, HashingReader
from pipeline.format.layout import decode_metadata, segment_of_key

CHUNK = 1 << 20


@dataclass
class Fetched:
    """A cold object written to ``path`` as its (uncompressed) segment file."""

    key: str
    path: Path
    stored_size: int = 0
    stored_sha256: str = ""
    size: int = 0  # uncompressed bytes written
    sha256: str = ""  # of the uncompressed bytes
    problem: str | None = None  # reason code when the bytes could not be turned into a segment
    detail: str = ""
    frame_problem: str | None = None  # zstd objects: the docs/FORMAT.md §10 frame rule broken, if any

    @property
    def ok(self) -> bool:
        return self.problem is None


def declared_size(st: ObjectStat) -> int | None:
    """The uncompressed segment size the metadata declares (the decompression limit)."""
    v = decode_metadata(st.metadata).get("size", "")
    return int(v) if v.isdigit() else None


def fetch_segment(store: ColdStore, st: ObjectStat, dest_dir: Path, *, max_size: int | None = None) -> Fetched:
    """Download ``st.key`` into ``dest_dir/<segment name>``.  Never raises for bad content:
    a problem is reported in the result (``decompress-failed``, ``decompression-bomb``,
    ``oversize``); transport errors (ColdError) propagate."""
    parsed = segment_of_key(st.key)
    name = parsed[1] if parsed else Path(st.key).name
    compression = parsed[2] if parsed else "none"
    out = Fetched(st.key, dest_dir / name)
    declared = declared_size(st)
    # Without a declared size the store's own ceiling applies: never unbounded.
    limit = declared if declared is not None else (max_size or store.settings.max_segment_size)
    content = hashlib.sha256()
    stream = store.open(st.key)
    frames = FrameChecker(declared) if compression == "zstd" else None
    reader = HashingReader(stream, frames.feed if frames is not None else None)
    try:
        with open(out.path, "wb") as f:
            if compression == "zstd":
                dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
                try:
                    with dctx.stream_reader(cast(IO[bytes], reader), read_size=CHUNK, read_across_frames=True,
                                            closefd=False) as zr:
                        while True:
                            # ask for at most one byte past the declared size: a bomb stops there
                            chunk = zr.read(min(CHUNK, limit + 1 - out.size))
                            if not chunk:
                                break
                            if out.size + len(chunk) > limit:
                                out.problem, out.detail = ("decompression-bomb",
                                                           f"decompresses past the declared {limit} bytes; refused")
                                break
                            content.update(chunk)
                            f.write(chunk)
                            out.size += len(chunk)
                except zstandard.ZstdError as exc:
                    out.problem, out.detail = "decompress-failed", f"zstd: {exc}"
            else:
                while chunk := reader.read(CHUNK):
                    if out.size + len(chunk) > limit:
                        out.problem, out.detail = "oversize", f"object is larger than the declared {limit} bytes"
                        break
                    content.update(chunk)
                    f.write(chunk)
                    out.size += len(chunk)
        if out.problem is None or out.problem != "oversize":
            # hash every stored byte so the stored layer is judged on its own (bounded: the
            # stat already told the object size)
            reader.drain()
    finally:
        stream.close()
    out.stored_size = reader.count
    if frames is not None and out.problem != "oversize":
        out.frame_problem = frames.finish()
    out.stored_sha256 = reader.sha.hexdigest()
    out.sha256 = content.hexdigest()
    return out


def discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
