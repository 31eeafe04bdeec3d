"""Host-mode reconciliation and version listing (issue 12): what must NOT be a finding
(a crash-recovered stream, evicted segments, a stray note in the bucket), what the report
says when evidence is missing (no ledger), and the request cost of the version listing.
Every tamper against every mode is in tests/cold/test_tamper_matrix.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.cli import main
from pipeline.cold import ColdSettings, open_store
from pipeline.hot import attr
from pipeline.hot.segment import list_segments
from pipeline.hot.tree import TreeStore
from pipeline.hot.writer import HotLog
from pipeline.ship.ledger import LEDGER_DIR
from pipeline.ship.shipper import Shipper
from tests.tierutil import build_hot, new_bucket, s3_client, ship_hot, ship_pipeline


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main([*args, "--json"])
    return code, orjson.loads(capsys.readouterr().out)


def _codes(doc: dict[str, Any], severity: str) -> list[str]:
    return [f["code"] for f in doc["findings"] if f["severity"] == severity]


def _tier(hot: Path, url: str, *extra: str) -> list[str]:
    return ["verify-tier", "--hot", str(hot), "--cold", url, "--allow-unlocked", "--heartbeat-interval", "0", *extra]


def _unprotect(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            attr.clear_protection(p)


def test_a_crash_recovered_stream_reconciles_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A writer killed mid-segment (torn last line), recovered by the next writer (recovery
    record, abandoned segment shipped as evidence): the abandoned segment's reused seqs are
    not a hot/cold disagreement."""
    side = build_hot(tmp_path, segments=2, events_per_segment=5)
    sd = side.hot / "app"
    code = ("import os, sys\nfrom pathlib import Path\nfrom pipeline.hot.tree import TreeStore\n"
            "from pipeline.hot.writer import HotLog\nsd = Path(sys.argv[1])\n"
            "log = HotLog(sd.parent, 'app', tree_store=TreeStore(sd), heartbeat_interval=0, segment_window=0, "
            "immutable='off')\nfor i in range(4):\n    log.append({'n': 100 + i}, wait=True)\nos._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, str(sd)], check=True, env=dict(os.environ), timeout=60)
    with open(list_segments(sd)[-1], "ab") as f:
        f.write(b'{"v":1,"stream":"app","torn')  # the crash's torn last line
    log = HotLog(side.hot, "app", tree_store=TreeStore(sd), heartbeat_interval=0, segment_window=0, immutable="off")
    for i in range(3):
        log.append({"n": 200 + i})
    log.seal()
    log.append({"n": 300})
    log.close()
    url = f"file://{tmp_path / 'cold'}"
    ship_hot(side, url, ColdSettings(allow_unlocked=True))
    try:
        assert main(["verify", "--hot", str(side.hot)]) == 0
        capsys.readouterr()
        for extra in ([], ["--deep"]):
            rc, doc = _run(_tier(side.hot, url, *extra), capsys)
            assert rc == 0, doc["findings"]
            states = {s["segment"]: s["hot_state"] for s in doc["streams"][0]["segments"]}
            assert "confirmed" in states.values()
    finally:
        _unprotect(tmp_path / "cold")


def test_evicted_segments_are_not_missing_from_the_hot_tier(tmp_path: Path, moto_endpoint: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    pl = ship_pipeline(tmp_path, moto_endpoint, segments=3, events_per_segment=10, evict=True)
    assert not list_segments(pl.hot / "app")
    rc, doc = _run(pl.base_args(), capsys)
    assert rc == 0 and "hot-segment-missing" not in _codes(doc, "error"), doc["findings"]
    assert {s["hot_state"] for s in doc["streams"][0]["segments"]} == {"evicted"}


def test_without_the_ledger_the_report_says_what_was_not_checked(tmp_path: Path, moto_endpoint: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pl = ship_pipeline(tmp_path, moto_endpoint, segments=3, events_per_segment=10)
    for p in (pl.hot / LEDGER_DIR).iterdir():
        p.unlink()
    rc, doc = _run(pl.base_args(), capsys)
    assert rc == 0, doc["findings"]
    assert "ledger-missing" in _codes(doc, "warning") and "unshipped-object" not in _codes(doc, "error")


def test_one_non_segment_object_under_the_stream_prefix_invents_no_stream(
        tmp_path: Path, moto_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12 item 5: it used to become a stream "" whose ledger filter matched every row,
    so every confirmed segment was reported missing."""
    pl = ship_pipeline(tmp_path, moto_endpoint, segments=3, events_per_segment=10)
    pl.client.put_object(Bucket=pl.bucket, Key=f"{pl.prefix}/app/NOTES.txt", Body=b"hello")
    for args in (pl.base_args(), [*pl.base_args(), "--deep"]):
        rc, doc = _run(args, capsys)
        assert rc == 0, doc["findings"]
        assert [s["stream"] for s in doc["streams"]] == ["app"]
        assert _codes(doc, "warning").count("unexpected-object") == 1
        assert doc["totals"]["valid"] == 3 and doc["totals"]["missing"] == 0


@pytest.mark.slow
def test_the_version_listing_costs_one_request_per_1000_keys(moto_endpoint: str) -> None:
    bucket = new_bucket(moto_endpoint)
    c = s3_client(moto_endpoint)
    for i in range(1001):
        c.put_object(Bucket=bucket, Key=f"p/app/k{i:05d}", Body=b"")
    store = open_store(f"s3://{bucket}/p?endpoint_url={moto_endpoint}&region=us-east-1",
                       ColdSettings(allow_unlocked=True))
    try:
        before = dict(store.requests)  # type: ignore[attr-defined]
        versions = list(store.list_versions("app/"))
        after = dict(store.requests)  # type: ignore[attr-defined]
    finally:
        store.close()
    assert len({v.key for v in versions}) == 1001 and all(v.latest for v in versions)
    assert after.get("ListObjectVersions", 0) - before.get("ListObjectVersions", 0) == 2


def test_host_mode_verifies_its_own_streams_not_a_fleet_neighbours(tmp_path: Path, moto_endpoint: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Two hosts ship into one bucket prefix: each host's ledger accounts for its own
    streams; the other host's objects are neither 'unshipped' nor HEADed."""
    pl = ship_pipeline(tmp_path / "a", moto_endpoint, segments=2, events_per_segment=10)
    neighbour = tmp_path / "b" / "hot"
    log = HotLog(neighbour, "billing", heartbeat_interval=0, segment_window=0, immutable="off")
    for seg in range(3):
        for i in range(10):
            log.append({"n": seg * 10 + i})
        log.seal()
    log.close()
    store = open_store(pl.url, ColdSettings(allow_unlocked=True))
    assert Shipper(neighbour, store, hot_retention=1e9).run_once().failed == 0
    store.close()
    rc, doc = _run(pl.base_args(), capsys)
    assert rc == 0, doc["findings"]
    assert [s["stream"] for s in doc["streams"]] == ["app"] and doc["requests"]["head"] == 2
    rc, doc = _run(["verify-tier", "--cold-only", "--cold", pl.url, "--allow-unlocked", "--heartbeat-interval", "0",
                    "--vkey", str(pl.vkey)], capsys)
    assert sorted(s["stream"] for s in doc["streams"]) == ["app", "billing"]
    # asked for by name from this host: judged, but not as objects this ledger failed to ship
    rc, doc = _run(_tier(pl.hot, pl.url, "--stream", "billing"), capsys)
    assert rc == 0 and "unshipped-object" not in _codes(doc, "error"), doc["findings"]
    assert doc["totals"]["valid"] == 3


def test_eviction_while_verify_tier_reads_is_not_a_deletion(tmp_path: Path, moto_endpoint: str,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The shipper evicts between verify-tier's read of the ledger and its read of the hot
    files: the file is gone, the row it read says confirmed; the row read again says evicted."""
    from pipeline.verify import chain

    pl = ship_pipeline(tmp_path, moto_endpoint, segments=3, events_per_segment=10)
    real = chain.scan_all
    evicted: list[int] = []

    def evict_then_scan(paths: list[Path], *a: Any, **kw: Any) -> Any:
        if not evicted:
            store = open_store(pl.url, ColdSettings(allow_unlocked=True, retention_days=1))
            shipper = Shipper(pl.hot, store, hot_retention=0.0)
            evicted.append(shipper.evict())
            shipper.ledger.close()
            store.close()
        return real(paths, *a, **kw)

    monkeypatch.setattr("pipeline.verify.tier.chain.scan_all", evict_then_scan)
    rc, doc = _run(pl.base_args(), capsys)
    assert evicted == [3] and not list_segments(pl.hot / "app")
    assert rc == 0, doc["findings"]
