"""docs/FORMAT.md §10, enforced exactly: one zstd frame from byte 0 with content size and
checksum, no dictionary, window ≤ 64 MiB, nothing after it (pipeline.cold.codec.FrameChecker),
as seen by the shipper's deep verification (deep_check) and by verify-tier/export/restore
(pipeline.verify.coldread.fetch_segment)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import zstandard

from pipeline.cold import ColdSettings
from pipeline.cold.base import VerifyResult
from pipeline.cold.codec import FrameChecker, deep_check
from pipeline.hot.segment import build_manifest
from tests.tierutil import build_hot

DATA = b"".join(b'{"n":%d,"pad":"%s"}\n' % (i, b"x" * (i % 50)) for i in range(5000))


def _zstd(data: bytes = DATA, **kw: object) -> bytes:
    args: dict[str, object] = {"level": 1, "write_content_size": True, "write_checksum": True}
    args.update(kw)
    return zstandard.ZstdCompressor(**args).compress(data)  # type: ignore[arg-type]


def _skippable(payload: bytes, nibble: int = 0) -> bytes:
    return bytes([0x50 + nibble]) + b"\x2a\x4d\x18" + len(payload).to_bytes(4, "little") + payload


def check(body: bytes, size: int | None = len(DATA), step: int = 4096) -> str | None:
    fc = FrameChecker(size)
    for i in range(0, len(body), step):
        fc.feed(body[i:i + step])
    return fc.finish()


@pytest.mark.parametrize("step", [1, 3, 4096, 1 << 20])
def test_a_compliant_frame_passes_whatever_the_chunking(step: int) -> None:
    assert check(_zstd(), step=step) is None


def test_the_shippers_own_multithreaded_frames_pass() -> None:
    out = io.BytesIO()
    big = DATA * 40
    c = zstandard.ZstdCompressor(level=1, write_content_size=True, write_checksum=True, threads=2)
    with c.stream_writer(out, size=len(big), closefd=False) as w:
        w.write(big)
    assert check(out.getvalue(), len(big)) is None


@pytest.mark.parametrize(("body", "words"), [
    (_zstd(write_checksum=False), "no content checksum"),
    (_zstd(write_content_size=False), "does not declare its content size"),
    (_skippable(b"hidden payload") + _zstd(), "starts with a skippable frame"),
    (_skippable(b"", 15) + _zstd(), "starts with a skippable frame"),
    (_zstd() + _skippable(b"hidden payload"), "skippable frame after the frame"),
    (_zstd() + _zstd(b"more\n"), "second zstd frame after the frame"),
    (_zstd() + b"\n", "trailing bytes after the frame"),
    (_zstd()[:-2], "ends inside the frame"),
    (b"not zstd at all", "does not start with a zstd frame"),
    (b"", "ends inside the frame"),
])
def test_every_rule_of_section_10(body: bytes, words: str) -> None:
    problem = check(body)
    assert problem is not None and words in problem, problem


def test_the_declared_size_must_match_the_metadata() -> None:
    problem = check(_zstd(), size=len(DATA) - 1)
    assert problem is not None and f"declares {len(DATA)} content bytes" in problem


def test_a_dictionary_frame_is_refused() -> None:
    d = zstandard.train_dictionary(2048, [DATA[i:i + 400] for i in range(0, 200_000, 400)])
    body = zstandard.ZstdCompressor(level=1, dict_data=d, write_content_size=True, write_checksum=True,
                                    write_dict_id=True).compress(DATA)
    problem = check(body)
    assert problem is not None and "dictionary" in problem


def test_a_window_over_64_mib_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters(window_log=27, write_content_size=True, write_checksum=True)
    cobj = zstandard.ZstdCompressor(compression_params=params).compressobj(size=len(DATA) * 4000)
    head = cobj.compress(DATA)  # a frame too large to be single-segment keeps its window descriptor
    head += cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    fc = FrameChecker(len(DATA) * 4000)
    fc.feed(head)
    assert fc.problem is not None and "window" in fc.problem and "64 MiB" in fc.problem


def test_deep_check_reports_frame_invalid(tmp_path: Path) -> None:
    side = build_hot(tmp_path, segments=1, events_per_segment=10)
    seg = next((side.hot / "app").glob("seg-*.jsonl"))
    manifest = build_manifest(seg)
    raw = seg.read_bytes()
    good, bad = _zstd(raw), _skippable(b"x") + _zstd(raw)
    for body, ok in ((good, True), (bad, False)):
        result = VerifyResult("k")
        stored = io.BytesIO(body)
        deep_check(lambda: stored, manifest, "zstd", None, None, result)
        assert result.ok is ok and (ok or result.reasons == ["frame-invalid"]), result.describe()
    assert ColdSettings().compression == "zstd"  # the format the shipper writes by default
