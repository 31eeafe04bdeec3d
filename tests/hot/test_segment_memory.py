"""Describing a segment keeps the shipper's memory bounded (issue 13): a mapped segment is
hashed and scanned in windows with the pages behind dropped, and the manifest is exactly
the one a single pass over the whole mapping gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.format import segment
from pipeline.format.segment import build_manifest, list_segments
from pipeline.hot.writer import HotLog
from tests.rss import rss_growth

EVENT = {"actor": "svc-orders", "action": "order.update", "resource": "orders/2026/11/000123456",
         "detail": "status changed to shipped"}


def _segments(hot: Path, n: int, max_bytes: int) -> list[Path]:
    with HotLog(hot, "app", segment_max_bytes=max_bytes, heartbeat_interval=0, durability="os") as log:
        for i in range(n):
            log.append(dict(EVENT, n=i, pad="x" * (i % 97)), wait=False)
            if i % 5000 == 4999:
                log.heartbeat()
    return list_segments(hot / "app")


@pytest.mark.parametrize("window", [segment.MAP_WINDOW, 1 << 16, 4096, 300])
def test_windowed_manifest_is_the_whole_pass_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      window: int) -> None:
    segs = _segments(tmp_path / "hot", 30_000, 2 << 20)
    assert len(segs) >= 3
    monkeypatch.setattr(segment, "MAP_WINDOW", 1 << 40)  # one window: the whole mapping at once
    whole = [build_manifest(p) for p in segs]
    monkeypatch.setattr(segment, "MAP_WINDOW", window)
    assert [build_manifest(p) for p in segs] == whole
    assert all(m.sealed for m in whole[:-1])


def test_describing_a_large_segment_does_not_hold_it_in_memory(tmp_path: Path) -> None:
    segs = _segments(tmp_path / "hot", 150_000, 48 << 20)
    big = max(segs, key=lambda p: p.stat().st_size)
    assert big.stat().st_size > 40 << 20
    with rss_growth() as growth:
        build_manifest(big)
    # a whole-file mapping added the segment's size (~45 MiB); windows add about two
    assert growth.mib < 3 * segment.MAP_WINDOW / (1 << 20), (growth.base, growth.peak)
