"""verify-tier --cold-only --ndjson: the same findings as the in-process report, written as it
goes, with memory that does not grow with the listing."""

from __future__ import annotations

import datetime as dt
import gc
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.cli import main
from pipeline.cold.base import ColdSettings, ObjectStat, ObjectVersion, encode_metadata
from pipeline.hot.segment import SegmentManifest, segment_name
from pipeline.record import GENESIS_HASH
from pipeline.verify.streaming import StreamingVerifier, grouped_versions
from pipeline.verify.tier import TierOptions, bounded_map
from tests.tierutil import ship_pipeline


def test_same_findings_as_the_in_process_report(tmp_path: Path, moto_endpoint: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    pl = ship_pipeline(tmp_path, moto_endpoint, segments=5, events_per_segment=10, lock=True)
    keys = pl.object_keys()
    pl.client.delete_object(Bucket=pl.bucket, Key=keys[2])  # delete marker, seq gap
    pl.put(keys[3], pl.get(keys[3]) + b"x", dict(pl.head(keys[3])["Metadata"]))  # second version, appended
    pl.put(keys[0] + ".orig", b"x", {})  # segment-like stray
    base = ["verify-tier", "--cold-only", "--cold", pl.url, "--vkey", str(pl.vkey), "--witness-dir",
            str(pl.witness), "--heartbeat-interval", "0", "--retention-days", "1"]
    assert main([*base, "--json"]) == 1
    report = orjson.loads(capsys.readouterr().out)
    assert main([*base, "--ndjson"]) == 1
    lines = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[-1]["type"] == "summary" and lines[-1]["ok"] is False
    found = sorted((f["code"], f["segment"], f["seq"]) for f in lines if f["type"] == "finding")
    assert found == sorted((f["code"], f["segment"], f["seq"]) for f in report["findings"])
    assert {"delete-marker", "missing-segment", "extra-version", "appended-bytes", "unexpected-segment-object"} <= \
        {c for c, _s, _q in found}
    segs = {x["segment"]: x["status"] for x in lines if x["type"] == "segment"}
    assert segs == {s["segment"]: s["status"] for s in report["streams"][0]["segments"]}
    t, r = lines[-1]["totals"], report["totals"]
    assert (t["segments"], t["valid"], t["invalid"], t["missing"], t["records"], t["errors"]) == \
        (r["segments"], r["valid"], r["invalid"], r["missing"], r["records"], r["errors"])
    cps = next(x for x in lines if x["type"] == "checkpoints")
    assert cps["recomputed"] >= 1 and cps["signatures_verified"] == cps["notes"]
    # the request cost is direct mode's: a listing, one HEAD per current object (+ the checkpoint's segment)
    assert (lines[-1]["requests"]["head"], lines[-1]["requests"]["list"]) == \
        (report["requests"]["head"], report["requests"]["list"])
    # needs --cold-only
    assert main(["verify-tier", "--hot", str(pl.hot), "--cold", pl.url, "--ndjson"]) == 2


def test_grouped_versions_reorders_within_the_window() -> None:
    def v(key: str, marker: bool = False) -> ObjectVersion:
        return ObjectVersion(key, "v", not marker, marker)

    # a page's versions come before its delete markers, and a key spans the page boundary
    page1 = [v("a"), v("b"), v("c"), v("a", True)]
    page2 = [v("c"), v("d"), v("c", True)]
    got = [(k, len(vs)) for k, vs in grouped_versions(page1 + page2, window=4)]
    assert got == [("a", 2), ("b", 1), ("c", 3), ("d", 1)]


def test_bounded_map_keeps_order_and_bounds_what_is_pending() -> None:
    live, peak = [0], [0]
    lock = threading.Lock()
    submitted = [0]

    def items() -> Iterator[int]:
        for i in range(200):
            submitted[0] = i
            yield i

    def work(i: int) -> int:
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.001)
        with lock:
            live[0] -= 1
        return i * 2

    out = []
    for r in bounded_map(work, items(), workers=4, window=8):
        out.append(r)
        assert submitted[0] - len(out) < 8  # never more than the window ahead of the consumer
    assert out == [i * 2 for i in range(200)] and peak[0] <= 4


class _FakeStore:
    """An in-process store of ``n`` chained segments' metadata (a unit test of memory only;
    the behaviour against a real S3 API is the test above)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.settings = ColdSettings(retention_days=1)
        self.endpoint = "fake://"
        self.prefix = ""
        self.requests: dict[str, int] = {}
        self.now = dt.datetime.now(dt.UTC)

    def capabilities(self) -> Any:
        from pipeline.cold.base import Capabilities

        return Capabilities("fake", "fake://", True, True, True)

    def _hash(self, i: int) -> str:
        return GENESIS_HASH if i < 0 else f"{i:064x}"

    def list_versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        for i in range(self.n):
            yield ObjectVersion(f"app/{segment_name(i * 10)}.zst", "v1", True, False, 100, self.now)

    def stat(self, key: str) -> ObjectStat:
        i = int(key.split("seg-")[1][:20]) // 10
        m = SegmentManifest("app", segment_name(i * 10), i * 10, i * 10 + 9, 10, 1000, "ab" * 32, "cd" * 32,
                            self._hash(i - 1), self._hash(i), True, "", "")
        meta = encode_metadata(m, "zstd", 100, "ef" * 32)
        self.requests["HeadObject"] = self.requests.get("HeadObject", 0) + 1
        return ObjectStat(key, 100, "ef" * 32, "COMPLIANCE", self.now + dt.timedelta(days=2), None, meta,
                          last_modified=self.now)


def _peak(n: int) -> int:
    gc.collect()
    tracemalloc.start()
    sink = type("Sink", (), {"write": lambda self, b: len(b), "flush": lambda self: None})()
    store: Any = _FakeStore(n)
    ok = StreamingVerifier(store, TierOptions(cold_only=True, heartbeat_interval=0, workers=4), sink).run()
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert ok
    return peak


@pytest.mark.slow
def test_memory_does_not_grow_with_the_listing() -> None:
    # both beyond the listing's reorder window (2,000 entries): what is kept is that window, the
    # HEADs in flight and one previous segment; the in-process report would keep ~1 KB per
    # segment (about 25 MB more at the larger size)
    small, large = _peak(3_000), _peak(30_000)
    assert large - small < 200_000, (small, large)


class _UnreadableStore(_FakeStore):
    """No segment bytes: a root recomputation fails (a finding), which is not what is tested."""

    def open(self, key: str) -> Any:
        from pipeline.cold.errors import ObjectNotFoundError

        raise ObjectNotFoundError(f"{key}: no bytes in this fake store")


def test_kept_segments_do_not_grow_with_the_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a checkpoint at every segment boundary: default mode recomputes only the newest one, so
    # only the segments around that size may be kept (keeping the segments of every size grew
    # with the checkpoints, and checking each segment against every size cost O(N x C) time)
    from pipeline.format.checkpoint import Checkpoint, Signer
    from pipeline.verify import streaming

    n = 400
    signer = Signer.generate("test")
    files = []
    for i in range(1, n + 1):
        f = tmp_path / f"{i}.note"
        f.write_bytes(Checkpoint("app", i * 10, bytes([i % 256]) * 32).sign([signer]))
        files.append(f)
    kept: list[int] = []
    finish = streaming._StreamRun.finish

    def recording(run: Any) -> None:
        finish(run)
        kept.append(len(run.kept))

    monkeypatch.setattr(streaming._StreamRun, "finish", recording)
    out = tmp_path / "out.ndjson"
    opts = TierOptions(cold_only=True, heartbeat_interval=0, workers=4, verifiers=[signer.verifier()],
                       checkpoint_files=files)
    store: Any = _UnreadableStore(n)
    with out.open("wb") as sink:
        StreamingVerifier(store, opts, sink).run()
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    cps = next(x for x in lines if x["type"] == "checkpoints")
    assert cps["notes"] == n and cps["signatures_verified"] == n and cps["log_latest_size"] == n * 10
    assert sum(1 for x in lines if x["type"] == "segment") == n
    assert kept == [1], kept  # the last segment: it ends at the newest checkpoint's size
