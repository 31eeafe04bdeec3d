"""Preparing upload bodies (optional zstd) and deep verification of stored bytes.

Two layers are checked (issue 8): the stored bytes (what the object checksum covers) and
what they decompress to (the segment: its SHA-256, its records and their Merkle root).
Everything streams: memory stays bounded by the chunk size and zstd's window, never by
the segment size, and decompression stops at the size the manifest declares, so a
decompression bomb is refused after reading at most ``limit + 1`` bytes of output.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

import zstandard

from pipeline.cold.base import ColdSettings, ReadStream, VerifyResult
from pipeline.cold.errors import SourceMismatchError
from pipeline.format import merkle
from pipeline.format.record import MAX_LINE_BYTES, Kind, RecordError, overlong, parse_record
from pipeline.format.segment import SegmentManifest, fast_record_run, parse_segment_name

CHUNK = 1 << 20
# zstd level 3 on segments uses windows of a few MiB; refusing frames that ask for more
# than 64 MiB bounds decompressor memory whatever the object claims.
MAX_WINDOW = 1 << 26


@dataclass
class PreparedBody:
    """The bytes to upload: the hot file itself, or the compressed body (in memory when it
    fits ``memory_limit``, otherwise in a spool file)."""

    path: str | None
    size: int
    sha256: str  # hex, of the stored bytes
    compression: str
    part_size: int = 0
    part_digests: list[bytes] | None = None  # SHA-256 of each part_size slice, for multipart
    data: bytes | None = None  # the compressed body when it was kept in memory
    _temp: bool = False

    @property
    def composite_sha256(self) -> str | None:
        """S3's checksum of a multipart object: SHA-256 over the concatenated part digests."""
        if not self.part_digests:
            return None
        return hashlib.sha256(b"".join(self.part_digests)).hexdigest()

    def open(self) -> BinaryIO:
        """A fresh reader positioned at the first byte (one per upload attempt: a retry must
        send the body from its start).  The caller closes it."""
        if self.data is not None:
            # BytesIO over immutable bytes shares the buffer: no copy per attempt.
            return io.BytesIO(self.data)
        assert self.path is not None
        return open(self.path, "rb")

    def cleanup(self) -> None:
        self.data = None
        if self._temp and self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def prepare_body(source_path: str, manifest: SegmentManifest, settings: ColdSettings) -> PreparedBody:
    """Hash (and compress) the hot segment, checking it against its manifest first.

    The hot file is read exactly once: the same pass that checks it against the manifest
    produces the compressed body and the stored-bytes hash, which S3 needs up front (the
    ``ChecksumSHA256`` header and the create-only PUT cover the stored bytes, so they must
    be known before the first byte is sent).
    """
    on_disk = os.stat(source_path).st_size
    if on_disk != manifest.size:
        # Checked before compressing: zstd is told the size up front and would fail obscurely.
        _check_source(source_path, manifest, on_disk, "(not hashed)")
    if settings.compression == "none":
        # Part digests are only worth computing for bodies that may go multipart.
        part_size = settings.part_size if manifest.size >= settings.multipart_threshold else 0
        ph = PartHasher(part_size)
        size = 0
        with open(source_path, "rb") as f:
            while chunk := f.read(CHUNK):
                ph.update(chunk)
                size += len(chunk)
        _check_source(source_path, manifest, size, ph.hexdigest())
        return PreparedBody(source_path, size, ph.hexdigest(), "none", part_size, ph.finish())
    return _prepare_zstd(source_path, manifest, settings)


def zstd_compressor(settings: ColdSettings, size: int) -> zstandard.ZstdCompressor:
    """The compressor every backend uses (see docs/FORMAT.md section 10): one frame, with
    the content size in its header (so ``zstd -l`` shows it and a decoder can refuse a
    frame that claims more than the manifest) and zstd's own XXH64 content checksum (so
    ``zstd -t`` detects a damaged object without the metadata)."""
    params = zstandard.ZstdCompressionParameters.from_level(
        settings.compression_level, source_size=size, write_content_size=1, write_checksum=1,
        threads=settings.compression_threads)
    return zstandard.ZstdCompressor(compression_params=params)


def _prepare_zstd(source_path: str, manifest: SegmentManifest, settings: ColdSettings) -> PreparedBody:
    content = hashlib.sha256()
    size = 0
    # The compressed size is unknown until the end; a body that may reach the multipart
    # threshold is hashed per part as it is produced (cheap: it is the smaller stream).
    part_size = settings.part_size if manifest.size >= settings.multipart_threshold else 0
    stored = PartHasher(part_size)
    sink = _SpoolWriter(stored, settings.part_size, settings.spool_dir, manifest.segment)
    ok = False
    try:
        cctx = zstd_compressor(settings, manifest.size)
        # Where the time goes (bench/bench_compression.py): compressing dominates, then the
        # SHA-256 of the segment; hashing the ~6x smaller output and copying it are minor.
        # With compression_threads > 0 zstd compresses on its own worker threads and
        # write() only hands the input over, so the SHA-256 below runs alongside it.
        with cctx.stream_writer(cast(IO[bytes], sink), size=manifest.size, write_size=CHUNK,
                                closefd=False) as zw, open(source_path, "rb") as f:
            while chunk := f.read(CHUNK):
                zw.write(chunk)
                content.update(chunk)
                size += len(chunk)
        _check_source(source_path, manifest, size, content.hexdigest())
        ok = True
        return PreparedBody(sink.path, sink.count, stored.hexdigest(), "zstd", part_size, stored.finish(),
                            data=sink.getvalue(), _temp=sink.path is not None)
    finally:
        sink.close()
        if not ok:
            sink.discard()


class _SpoolWriter:
    """Write-only sink for the compressed body: hashes and counts what passes through, keeps
    it in memory up to ``memory_limit`` bytes and spills to a temporary file beyond that.

    A compressed segment of a few minutes is a few MiB, so the usual body never touches
    the disk (no temp file to create, write, re-read and unlink); memory per concurrent
    upload stays bounded by ``memory_limit`` (the multipart part size), whatever the
    segment size."""

    def __init__(self, h: PartHasher, memory_limit: int, spool_dir: str | None, segment: str) -> None:
        self._h = h
        self._limit = memory_limit
        self._dir = spool_dir or tempfile.gettempdir()
        self._segment = segment
        self._buf: bytearray | None = bytearray()
        self._file: IO[bytes] | None = None
        self.path: str | None = None
        self.count = 0

    def write(self, data: bytes) -> int:
        self._h.update(data)
        self.count += len(data)
        if self._buf is not None:
            if len(self._buf) + len(data) <= self._limit:
                self._buf += data
                return len(data)
            # Spill: the body outgrew the memory budget.
            fd, self.path = tempfile.mkstemp(prefix=f".{self._segment}.", suffix=".zst.tmp", dir=self._dir)
            self._file = os.fdopen(fd, "wb")
            self._file.write(self._buf)
            self._buf = None
        assert self._file is not None
        self._file.write(data)
        return len(data)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def getvalue(self) -> bytes | None:
        return bytes(self._buf) if self._buf is not None else None

    def close(self) -> None:
        # No fsync: the spool is temporary; durability comes from the hot copy until the
        # upload verifies.
        if self._file is not None:
            self._file.close()

    def discard(self) -> None:
        self._buf = None
        if self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _check_source(path: str, manifest: SegmentManifest, size: int, sha: str) -> None:
    if size != manifest.size or sha != manifest.sha256:
        # The hot file is sealed (immutable attribute) and must match the manifest the
        # shipper built; anything else is a local problem to investigate before shipping.
        raise SourceMismatchError(
            f"hot file {Path(path).name} is {size} bytes with sha256 {sha[:16]}…, manifest says "
            f"{manifest.size} bytes with sha256 {manifest.sha256[:16]}…",
            segment=manifest.segment,
        )


class PartHasher:
    """SHA-256 of the whole byte stream and of each ``part_size`` slice of it."""

    def __init__(self, part_size: int) -> None:
        self.whole = hashlib.sha256()
        self.part_size = part_size
        self.parts: list[bytes] = []
        self._cur = hashlib.sha256()
        self._cur_len = 0

    def update(self, data: bytes) -> None:
        self.whole.update(data)
        if not self.part_size:
            return
        view = memoryview(data)
        while view:
            take = min(len(view), self.part_size - self._cur_len)
            self._cur.update(view[:take])
            self._cur_len += take
            view = view[take:]
            if self._cur_len == self.part_size:
                self.parts.append(self._cur.digest())
                self._cur, self._cur_len = hashlib.sha256(), 0

    def finish(self) -> list[bytes] | None:
        if not self.part_size:
            return None
        if self._cur_len:
            self.parts.append(self._cur.digest())
            self._cur, self._cur_len = hashlib.sha256(), 0
        return self.parts

    def hexdigest(self) -> str:
        return self.whole.hexdigest()


class HashingReader:
    """Hashes and counts the stored bytes as the decompressor pulls them."""

    def __init__(self, stream: ReadStream, observer: Callable[[bytes], None] | None = None) -> None:
        self._stream = stream
        self.sha = hashlib.sha256()
        self.count = 0
        self._observer = observer  # sees every stored byte too (the §10 frame check)

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size if size and size > 0 else CHUNK)
        self.sha.update(data)
        self.count += len(data)
        if self._observer is not None and data:
            self._observer(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class FrameChecker:
    """docs/FORMAT.md §10, checked on the stored bytes as they stream past (no buffering
    beyond a frame header): the body MUST be exactly ONE Zstandard frame (RFC 8878 §3.1.1)
    that starts at byte 0 (so no leading skippable frame), declares Frame_Content_Size equal
    to the metadata's ``worm_size``, sets Content_Checksum_flag, has no Dictionary_ID and a
    window of at most 64 MiB; and NOTHING may follow the frame (no second frame, no
    skippable frame, no trailing bytes).  The block headers are walked to find where the
    frame ends; block contents are skipped (the decompressor checks them).  ``problem`` is
    the first rule broken, or None."""

    def __init__(self, declared_size: int | None) -> None:
        self.declared_size = declared_size
        self.problem: str | None = None
        self._buf = b""
        self._state = "header"  # header | block | skip | checksum | done
        self._skip = 0
        self._last_block = False
        self._checksum = False
        self.content_size: int | None = None

    def feed(self, data: bytes) -> None:
        if self.problem is not None:
            return
        self._buf += data
        while self.problem is None:
            if self._state == "skip":
                n = min(self._skip, len(self._buf))
                self._buf = self._buf[n:]
                self._skip -= n
                if self._skip:
                    return
                self._state = "checksum" if self._last_block else "block"
                if self._state == "checksum" and not self._checksum:
                    self._state = "done"
            elif self._state == "header":
                if not self._header():
                    return
            elif self._state == "block":
                if len(self._buf) < 3:
                    return
                bh = int.from_bytes(self._buf[:3], "little")
                self._buf = self._buf[3:]
                self._last_block = bool(bh & 1)
                btype, bsize = (bh >> 1) & 3, bh >> 3
                if btype == 3:
                    self.problem = "reserved block type inside the frame"
                    return
                self._skip = 1 if btype == 1 else bsize
                self._state = "skip"
            elif self._state == "checksum":
                if len(self._buf) < 4:
                    return
                self._buf = self._buf[4:]
                self._state = "done"
            else:  # done: anything more is a second frame, a skippable frame or garbage
                if self._buf:
                    kind = ("a skippable frame" if self._buf[:4][1:] == b"\x2a\x4d\x18"
                            and 0x50 <= self._buf[0] <= 0x5F else
                            "a second zstd frame" if self._buf[:4] == ZSTD_MAGIC else "trailing bytes")
                    self.problem = f"{kind} after the frame (§10: exactly one frame, nothing after it)"
                return

    def _header(self) -> bool:
        b = self._buf
        if len(b) < 5:
            return False
        if b[:4] != ZSTD_MAGIC:
            skippable = b[1:4] == b"\x2a\x4d\x18" and 0x50 <= b[0] <= 0x5F
            self.problem = ("the body starts with a skippable frame (§10: no skippable frames)" if skippable
                            else "the body does not start with a zstd frame (magic 28 B5 2F FD)")
            return False
        fhd = b[4]
        fcs_flag, single, checksum, did_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
        if fhd & 0x08:
            self.problem = "the frame header's reserved bit is set"
            return False
        did_size = (0, 1, 2, 4)[did_flag]
        fcs_size = (1 if single else 0, 2, 4, 8)[fcs_flag]
        need = 5 + (0 if single else 1) + did_size + fcs_size
        if len(b) < need:
            return False
        pos = 5
        window: int | None = None
        if not single:
            wd = b[pos]
            pos += 1
            base = 1 << (10 + (wd >> 3))
            window = base + (base // 8) * (wd & 7)
        dict_id = int.from_bytes(b[pos:pos + did_size], "little") if did_size else 0
        pos += did_size
        fcs: int | None = None
        if fcs_size:
            fcs = int.from_bytes(b[pos:pos + fcs_size], "little") + (256 if fcs_size == 2 else 0)
        self.content_size = fcs
        if single:
            window = fcs
        if fcs is None:
            self.problem = "the frame does not declare its content size (§10: Frame_Content_Size present)"
        elif self.declared_size is not None and fcs != self.declared_size:
            self.problem = f"the frame declares {fcs} content bytes but the metadata says {self.declared_size}"
        elif not checksum:
            self.problem = "the frame carries no content checksum (§10: Content_Checksum_flag 1)"
        elif dict_id:
            self.problem = f"the frame needs dictionary {dict_id} (§10: no dictionary)"
        elif window is not None and window > MAX_WINDOW:
            self.problem = f"the frame's window is {window} bytes, over the 64 MiB limit"
        self._checksum = bool(checksum)
        self._buf = b[need:]
        self._state = "block"
        return True

    def finish(self) -> str | None:
        """After the last byte: the first rule broken, or None."""
        if self.problem is None and self._state != "done":
            self.problem = "the body ends inside the frame (truncated)"
        return self.problem


class SegmentScanner:
    """``pipeline.hot.segment.build_manifest`` over a byte stream instead of a path.

    Applies the same rules (record self-check, seq continuity, prev links, nothing after
    the seal, Merkle root over the records before the seal) to decompressed bytes, so
    that deep verification never needs the segment on local disk.
    """

    def __init__(self, segment: str) -> None:
        self.segment = segment
        self.sha = hashlib.sha256()
        self.cr = merkle.CompactRange()
        self.size = 0
        self.count = 0
        self.pending = b""
        # bytes of the current line past the format's longest line: counted, not held
        # (docs/FORMAT.md §1, check 2); 0 while the line is within it
        self.overlong = 0
        self.stream = ""
        self.first_seq = self.last_seq = -1
        self.first_prev = self.last_hash = self.first_ts = self.last_ts = ""
        self.sealed = False

    def feed(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)
        if self.overlong:
            nl = data.find(b"\n")
            if nl >= 0:
                raise RecordError("bad-line", overlong(self.overlong + nl + 1))
            self.overlong += len(data)
            return
        buf = self.pending + data if self.pending else data
        start = 0
        while True:
            if self.count and not self.sealed:
                run = fast_record_run(buf, start, self.stream, self.last_seq, self.last_hash, self.cr)
                if run is not None:
                    start, n, last = run
                    self.last_seq, self.last_hash, self.last_ts = last.seq, last.hash, last.ts
                    self.count += n
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if nl + 1 - start > MAX_LINE_BYTES:
                raise RecordError("bad-line", overlong(nl + 1 - start))
            self._line(buf[start : nl + 1])
            start = nl + 1
        self.pending = buf[start:]
        if len(self.pending) > MAX_LINE_BYTES:
            self.overlong, self.pending = len(self.pending), b""

    def _line(self, line: bytes) -> None:
        rec = parse_record(line)
        if self.count == 0:
            self.stream, self.first_seq, self.first_prev, self.first_ts = rec.stream, rec.seq, rec.prev, rec.ts
        else:
            if self.sealed:
                raise RecordError("after-seal", f"record seq {rec.seq} follows the seal")
            if rec.seq != self.last_seq + 1:
                raise RecordError("seq-gap", f"seq {rec.seq} follows {self.last_seq}")
            if rec.prev != self.last_hash:
                raise RecordError("broken-link", f"seq {rec.seq} does not link to seq {self.last_seq}")
        self.last_seq, self.last_hash, self.last_ts = rec.seq, rec.hash, rec.ts
        self.count += 1
        if rec.kind == Kind.SEAL.value:
            self.sealed = True
        else:
            self.cr.append(merkle.leaf_hash(line[:-1]))

    def finish(self) -> SegmentManifest:
        if self.count == 0:
            parsed = parse_segment_name(self.segment)
            if not self.torn_bytes or parsed is None:
                raise RecordError("empty", "no complete record")
            # an abandoned segment whose first line was torn (docs/FORMAT.md §5): only torn
            # bytes; stream and links are not in its content (the neighbours' are checked)
            return SegmentManifest(stream="", segment=self.segment, first_seq=parsed[0], last_seq=parsed[0] - 1,
                                   records=0, size=self.size, sha256=self.sha.hexdigest(),
                                   merkle_root=self.cr.root().hex(), first_prev="", last_hash="", sealed=False,
                                   first_ts="", last_ts="", torn_bytes=self.torn_bytes)
        return SegmentManifest(
            stream=self.stream,
            segment=self.segment,
            first_seq=self.first_seq,
            last_seq=self.last_seq,
            records=self.count,
            size=self.size,
            sha256=self.sha.hexdigest(),
            merkle_root=self.cr.root().hex(),
            first_prev=self.first_prev,
            last_hash=self.last_hash,
            sealed=self.sealed,
            first_ts=self.first_ts,
            last_ts=self.last_ts,
            torn_bytes=self.torn_bytes,
        )

    @property
    def torn_bytes(self) -> int:
        """The bytes after the last complete line so far."""
        return self.overlong or len(self.pending)


def hash_stream(opener: Callable[[], ReadStream]) -> tuple[str, int]:
    """SHA-256 (hex) and length of a stored object, streamed."""
    stream = opener()
    try:
        reader = HashingReader(stream)
        reader.drain()
        return reader.sha.hexdigest(), reader.count
    finally:
        stream.close()


_COMPARED = ("stream", "first_seq", "last_seq", "records", "first_prev", "last_hash", "sealed")


def deep_check(
    opener: Callable[[], ReadStream],
    manifest: SegmentManifest,
    compression: str,
    expected_stored_sha256: str | None,
    expected_stored_size: int | None,
    result: VerifyResult,
) -> None:
    """Download, re-hash the stored bytes, decompress (bounded) and re-verify every record.

    Adds checks to ``result`` with distinct reasons: ``stored-sha256-mismatch`` (the stored
    bytes are not what was uploaded), ``decompress-failed``, ``decompression-bomb``,
    ``record-invalid``, ``content-sha256-mismatch`` and ``merkle-root-mismatch`` (the stored
    bytes are intact but decode to a segment other than the manifest's).
    """
    limit = manifest.size
    stream = opener()
    frames = FrameChecker(manifest.size) if compression == "zstd" else None
    reader = HashingReader(stream, frames.feed if frames is not None else None)
    scanner = SegmentScanner(manifest.segment)
    content_problem: tuple[str, str] | None = None
    try:
        if compression == "zstd":
            dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
            try:
                with dctx.stream_reader(cast(IO[bytes], reader), read_size=CHUNK, read_across_frames=True,
                                        closefd=False) as zr:
                    while True:
                        # Never ask for more than one byte past the declared size: a bomb is
                        # caught after producing at most limit + 1 bytes.
                        want = min(CHUNK, limit + 1 - scanner.size)
                        chunk = zr.read(want)
                        if not chunk:
                            break
                        if scanner.size + len(chunk) > limit:
                            content_problem = ("decompression-bomb",
                                               f"decompresses past the declared {limit} bytes; refused")
                            break
                        scanner.feed(chunk)
            except zstandard.ZstdError as exc:
                content_problem = ("decompress-failed", f"zstd: {exc}")
            except RecordError as exc:
                content_problem = ("record-invalid", f"{exc.reason}: {exc.detail}")
        else:
            try:
                while chunk := reader.read(CHUNK):
                    if scanner.size + len(chunk) > max(limit, 0) + CHUNK:
                        content_problem = ("size-mismatch", f"object is larger than the declared {limit} bytes")
                        break
                    scanner.feed(chunk)
            except RecordError as exc:
                content_problem = ("record-invalid", f"{exc.reason}: {exc.detail}")
        # Hash every stored byte, even after a content problem, so the two layers are
        # reported independently (bounded: the object size was checked by stat first).
        reader.drain()
    finally:
        stream.close()

    stored_hex = reader.sha.hexdigest()
    if expected_stored_sha256 is not None:
        result.add("deep stored sha256", stored_hex == expected_stored_sha256,
                   f"downloaded {reader.count} bytes, sha256 {stored_hex}"
                   + ("" if stored_hex == expected_stored_sha256 else f", expected {expected_stored_sha256}"),
                   "stored-sha256-mismatch")
    if expected_stored_size is not None and reader.count != expected_stored_size:
        result.add("deep stored size", False, f"downloaded {reader.count} bytes, expected {expected_stored_size}",
                   "stored-size-mismatch")

    if frames is not None and (frame_problem := frames.finish()) is not None:
        result.add("deep zstd frame", False, frame_problem, "frame-invalid")
    if content_problem is not None:
        result.add("deep content", False, content_problem[1], content_problem[0])
        return
    try:
        got = scanner.finish()
    except RecordError as exc:
        result.add("deep content", False, f"{exc.reason}: {exc.detail}", "record-invalid")
        return
    if got.torn_bytes and manifest.sealed:
        # (an unsealed segment is one the writer abandoned: its torn bytes are evidence, which
        # the recovery record in the next segment describes and --deep's chain check compares)
        result.add("deep content", False, f"{got.torn_bytes} bytes after the last complete record",
                   "record-invalid")
    result.add("deep content sha256", got.sha256 == manifest.sha256 and got.size == manifest.size,
               f"{got.size} bytes, sha256 {got.sha256}"
               + ("" if got.sha256 == manifest.sha256 else f", manifest says {manifest.sha256}"),
               "content-sha256-mismatch")
    result.add("deep merkle root", got.merkle_root == manifest.merkle_root,
               f"{got.records} records, root {got.merkle_root}"
               + ("" if got.merkle_root == manifest.merkle_root else f", manifest says {manifest.merkle_root}"),
               "merkle-root-mismatch")
    compared = _COMPARED if got.records else ("first_seq", "last_seq", "records", "sealed")
    diffs = [f"{k}={getattr(got, k)!r} (manifest {getattr(manifest, k)!r})"
             for k in compared if getattr(got, k) != getattr(manifest, k)]
    result.add("deep records", not diffs, "; ".join(diffs) or f"seq {got.first_seq}..{got.last_seq} chained",
               "manifest-mismatch")
