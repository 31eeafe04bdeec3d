"""Segment files: listing, reading lines, and building the segment manifest (names:
``pipeline.format.layout``; the manifest: ``pipeline.format.manifest``).

A stream directory ``<hot>/<stream>/`` holds segment files named
``seg-<first_seq, 20 digits>.jsonl``.  If a file of that name already exists when a
segment must start at the same seq (only after a crash tore the very first line of a
segment), the writer uses ``seg-<first_seq>.<attempt>.jsonl`` with attempt 1, 2, ...
Segments sort by (first_seq, attempt).
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline._accel import native as _native
from pipeline.format import merkle
from pipeline.format.layout import SEGMENT_RE, parse_segment_name, segment_name, stream_dirs
from pipeline.format.manifest import SegmentManifest
from pipeline.format.record import MAX_LINE_BYTES, Kind, Record, RecordError, overlong, parse_record

__all__ = [
    "MAP_WINDOW", "READ_CHUNK", "SEGMENT_RE", "SegmentManifest", "build_manifest", "drop_pages", "fast_record_run",
    "hash_mapped", "iter_lines", "list_segments", "list_streams", "parse_segment_name", "read_first_record",
    "read_last_line", "segment_name",
]

READ_CHUNK = 1 << 20


def list_segments(stream_dir: str | os.PathLike[str]) -> list[Path]:
    """Segment files of a stream in stream order."""
    d = Path(stream_dir)
    found: list[tuple[tuple[int, int], Path]] = []
    try:
        entries = list(os.scandir(d))
    except FileNotFoundError:
        return []
    for entry in entries:
        key = parse_segment_name(entry.name)
        if key is not None and entry.is_file(follow_symlinks=False):
            found.append((key, d / entry.name))
    found.sort(key=lambda x: x[0])
    return [p for _, p in found]


def list_streams(hot_dir: str | os.PathLike[str]) -> list[str]:
    """The stream directories of a hot tier, sorted; other directories (``lost+found``) are
    not streams.  The rule lives in pipeline.format.layout."""
    return stream_dirs(hot_dir)


_join = b"".join  # (a name of its own: tests count the joins)


def iter_lines(path: str | os.PathLike[str], limit: int | None = None,
               max_line: int | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, line)`` for each ``\\n``-terminated line, then the unterminated
    tail (if any) as a final line without a newline.  Reads in bounded chunks, and with
    ``limit`` only the file's first ``limit`` bytes (what follows is never read).

    With ``max_line``, a line longer than that is not held: its first ``max_line + 1``
    bytes are yielded (more than a line may hold, so no parser takes them for a record) and
    the iteration ends there.  Callers that stop at the first line that is not a record pass
    ``MAX_LINE_BYTES`` (docs/FORMAT.md §1): their memory is then bounded whatever the file
    holds."""
    cap = -1 if max_line is None else max(0, max_line)
    with open(path, "rb") as f:
        offset = 0
        left = -1 if limit is None else max(0, limit)
        # the start of a line longer than a chunk, in parts: joined once, when its newline
        # comes (joining at every chunk would copy a long line once per chunk: quadratic)
        parts: list[bytes] = []
        pending = 0
        while left:
            chunk = f.read(READ_CHUNK if left < 0 else min(READ_CHUNK, left))
            if not chunk:
                break
            if left > 0:
                left -= len(chunk)
            start = 0
            nl = chunk.find(b"\n")
            if nl >= 0 and parts:
                if 0 <= cap < pending + nl + 1:
                    yield offset, _join([*parts, chunk[: cap + 1 - pending]])  # (pending <= cap here)
                    return
                parts.append(chunk[: nl + 1])
                line = _join(parts)
                parts = []
                pending = 0
                yield offset, line
                offset += len(line)
                start = nl + 1
                nl = chunk.find(b"\n", start)
            while nl >= 0:
                if 0 <= cap < nl + 1 - start:
                    yield offset, chunk[start : start + cap + 1]
                    return
                yield offset, chunk[start : nl + 1]
                offset += nl + 1 - start
                start = nl + 1
                nl = chunk.find(b"\n", start)
            if start < len(chunk):
                parts.append(chunk[start:])
                pending += len(chunk) - start
                if 0 <= cap < pending:
                    # the last part cut first: one join of cap + 1 bytes, no cut of the join
                    parts[-1] = parts[-1][: len(parts[-1]) - (pending - cap - 1)]
                    yield offset, _join(parts)
                    return
        if parts:
            yield offset, _join(parts)


def read_first_record(path: str | os.PathLike[str]) -> Record | None:
    """The first record of a segment, or None if its first line is not a valid record."""
    for _off, line in iter_lines(path, max_line=MAX_LINE_BYTES):
        try:
            return parse_record(line)
        except RecordError:
            return None
    return None


def read_last_line(path: str | os.PathLike[str], max_len: int = 1 << 22) -> bytes | None:
    """The last complete line of a file, or None.  Reads backwards from the end."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return None
        step = 8192
        pos = size
        buf = b""
        while pos > 0 and len(buf) <= max_len:
            read = min(step, pos)
            pos -= read
            f.seek(pos)
            buf = f.read(read) + buf
            if not buf.endswith(b"\n"):
                return None  # torn tail: caller scans the segment instead
            nl = buf.rfind(b"\n", 0, len(buf) - 1)
            if nl >= 0:
                return buf[nl + 1 :]
            step *= 2
        return buf if pos == 0 else None


# A mapped segment is read in windows, and the pages behind are dropped from the process
# (MADV_DONTNEED; they stay in the page cache): describing a 64 MiB segment would otherwise
# add 64 MiB to the resident memory of the shipper, on top of its uploads (issue 13).
MAP_WINDOW = 8 << 20


def drop_pages(buf: bytes | mmap.mmap, upto: int) -> None:
    """Drop the mapped pages of ``buf`` before offset ``upto`` from this process's memory."""
    if isinstance(buf, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        n = min(upto, len(buf))
        n -= n % mmap.PAGESIZE
        if n > 0:
            buf.madvise(mmap.MADV_DONTNEED, 0, n)


def hash_mapped(h: Any, buf: bytes | mmap.mmap) -> None:
    """``h.update(buf)``, window by window for a mapping, dropping the pages behind."""
    if not isinstance(buf, mmap.mmap):
        h.update(buf)
        return
    with memoryview(buf) as view:
        for off in range(0, len(view), MAP_WINDOW):
            h.update(view[off:off + MAP_WINDOW])
            drop_pages(buf, off + MAP_WINDOW)


def fast_record_run(buf: bytes | mmap.mmap, pos: int, stream: str, last_seq: int, last_hash: str,
                    cr: merkle.CompactRange) -> tuple[int, int, Record] | None:
    """The manifest rules for a run of ordinary records, in C: the event and heartbeat
    lines from ``pos`` that each follow the previous record (seq and prev), self-checked
    and leaf-hashed into ``cr``.  ``(end, count, last record)``, or None when the
    accelerator is not built or the line at ``pos`` is not such a record (the caller's
    line-by-line loop then judges it; the C checks are the same rules and stricter).
    A mapping is scanned ``MAP_WINDOW`` bytes at a time, dropping the pages behind."""
    if _native is None:
        return None
    size = len(buf)
    window = MAP_WINDOW if isinstance(buf, mmap.mmap) else size
    total, last_start, prev = 0, -1, last_hash.encode()
    next_seq = last_seq + 1
    with memoryview(buf) as whole:
        while True:
            limit = min(size, pos + window)
            with whole[:limit] as view:
                end, start, n, next_seq, prev, _ts, _gap, _after = _native.scan_lines(
                    view, pos, stream.encode(), next_seq, prev, None, 0.0, None, cr, None)
            if n:
                total, last_start = total + n, start
            cut_by_window = limit < size and buf.find(b"\n", end, limit) < 0
            pos = end
            if not (n and cut_by_window):
                break  # a line the C rules do not accept, or the end of the buffer
            drop_pages(buf, pos)
    if not total:
        return None
    return pos, total, parse_record(buf[last_start:pos])


def build_manifest(path: str | os.PathLike[str], *, valid_bytes: int | None = None,
                   chain_prev: str | None = None) -> SegmentManifest:
    """Read a segment once and describe it.  Raises RecordError on a malformed record;
    chain links inside the segment are checked, the link to the previous segment is not.

    For a segment the writer abandoned (docs/FORMAT.md §5), ``valid_bytes`` is the valid
    length V its recovery record gives: the records are those in ``[0, V)`` and every byte
    after V is ``torn_bytes`` (evidence, shipped with the segment).  An abandoned segment may
    hold no record at all (its first line was torn): it is described with ``records`` 0,
    ``first_seq`` from its name, ``last_seq`` = ``first_seq`` − 1, and ``first_prev`` =
    ``last_hash`` = ``chain_prev``, the hash of the record before it, so that it links to its
    neighbours like any segment."""
    p = Path(path)
    parsed = parse_segment_name(p.name)
    if parsed is None:
        raise ValueError(f"{p.name} is not a segment file name")
    sha = hashlib.sha256()
    cr = merkle.CompactRange()
    stream = ""
    first_seq = last_seq = -1
    first_prev = last_hash = first_ts = last_ts = ""
    count = 0
    sealed = False
    torn = 0
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        buf: bytes | mmap.mmap = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) if size else b""
    end = size if valid_bytes is None else valid_bytes
    if not 0 <= end <= size:
        raise RecordError("recovery-mismatch", f"{p.name} is {size} bytes, fewer than the {end} valid bytes its "
                          "recovery record names")
    mapped = buf
    try:
        hash_mapped(sha, buf)
        if end < size:
            buf = buf[:end]  # the records are judged in [0, V) only (a copy: abandoned segments are rare)
        pos = dropped = 0
        while pos < end:
            if pos - dropped >= MAP_WINDOW:  # the line-by-line path drops the pages behind too
                drop_pages(buf, pos)
                dropped = pos
            if count and not sealed:
                run = fast_record_run(buf, pos, stream, last_seq, last_hash, cr)
                if run is not None:
                    pos, n, last = run
                    last_seq, last_hash, last_ts = last.seq, last.hash, last.ts
                    count += n
                    if pos >= end:
                        break
            nl = buf.find(b"\n", pos)
            if nl < 0:
                torn = size - pos
                break
            if nl + 1 - pos > MAX_LINE_BYTES:  # judged before a copy (docs/FORMAT.md §1)
                raise RecordError("bad-line", f"{overlong(nl + 1 - pos)} at offset {pos} of {p.name}")
            line = buf[pos : nl + 1]
            pos = nl + 1
            rec = parse_record(line)
            if count == 0:
                stream, first_seq, first_prev, first_ts = rec.stream, rec.seq, rec.prev, rec.ts
            else:
                if sealed:
                    raise RecordError("after-seal", f"record seq {rec.seq} follows the seal in {p.name}")
                if rec.seq != last_seq + 1:
                    raise RecordError("seq-gap", f"seq {rec.seq} follows {last_seq} in {p.name}")
                if rec.prev != last_hash:
                    raise RecordError("broken-link", f"seq {rec.seq} does not link to seq {last_seq} in {p.name}")
            last_seq, last_hash, last_ts = rec.seq, rec.hash, rec.ts
            count += 1
            if rec.kind == Kind.SEAL.value:
                sealed = True
            else:
                cr.append(merkle.leaf_hash(line[:-1]))
    finally:
        if isinstance(mapped, mmap.mmap):
            mapped.close()
    if valid_bytes is not None:
        if torn:
            raise RecordError("recovery-mismatch", f"{p.name}: no record ends at offset {end}, where its recovery "
                              "record says the valid bytes end")
        torn = size - end
    if count == 0:
        if valid_bytes is None or chain_prev is None:
            raise RecordError("empty", f"{p.name} holds no complete record")
        return SegmentManifest(
            stream=p.parent.name, segment=p.name, first_seq=parsed[0], last_seq=parsed[0] - 1, records=0,
            size=size, sha256=sha.hexdigest(), merkle_root=cr.root().hex(), first_prev=chain_prev,
            last_hash=chain_prev, sealed=False, first_ts="", last_ts="", torn_bytes=torn)
    return SegmentManifest(
        stream=stream,
        segment=p.name,
        first_seq=first_seq,
        last_seq=last_seq,
        records=count,
        size=size,
        sha256=sha.hexdigest(),
        merkle_root=cr.root().hex(),
        first_prev=first_prev,
        last_hash=last_hash,
        sealed=sealed,
        first_ts=first_ts,
        last_ts=last_ts,
        torn_bytes=torn,
    )
