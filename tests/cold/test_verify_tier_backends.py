"""verify-tier against the other two backends, end to end: a real HotLog shipped by the real
Shipper into a file:// store (immutable attribute, for real on this machine) and into Azure
blob storage on Azurite over HTTP, then reconciled, then an object deleted behind the
pipeline's back.  tests/verify/test_verify_tier.py covers every finding against S3 (moto); these
check that the listing, HEAD and GET paths of the other stores feed the same verdicts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.cli import main
from pipeline.cold import ColdSettings
from pipeline.hot import attr
from tests.tierutil import HotSide, build_hot, ship_hot

SEGMENTS = 4
EVENTS = 12


def _verify(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main([*args, "--json"])
    return code, orjson.loads(capsys.readouterr().out)


def _args(side: HotSide, url: str, *, cold_only: bool = False) -> list[str]:
    where = ["--cold-only"] if cold_only else ["--hot", str(side.hot)]
    return ["verify-tier", *where, "--cold", url, "--allow-unlocked", "--vkey", str(side.vkey), "--witness-dir",
            str(side.witness), "--heartbeat-interval", "0"]


def _check_clean_then_deleted(side: HotSide, url: str, delete_third: Callable[[], None],
                              capsys: pytest.CaptureFixture[str], *, counts_requests: bool) -> None:
    code, doc = _verify(_args(side, url), capsys)
    assert code == 0, doc["findings"]
    t = doc["totals"]
    assert (t["segments"], t["valid"], t["missing"]) == (SEGMENTS, SEGMENTS, 0)
    assert t["records"] == SEGMENTS * (EVENTS + 1)
    cps = doc["streams"][0]["checkpoints"]
    assert cps["signatures_verified"] == cps["notes"] > 0
    code, deep = _verify([*_args(side, url), "--deep"], capsys)
    assert code == 0, deep["findings"]
    if counts_requests:  # a network store: --deep downloads every segment once
        assert deep["requests"]["get"] == SEGMENTS

    delete_third()
    code, doc = _verify(_args(side, url), capsys)
    assert code == 1
    assert {f["code"] for f in doc["findings"] if f["severity"] == "error"} == {"missing-object", "missing-segment"}
    gap = doc["streams"][0]["gaps"][0]
    assert (gap["from_seq"], gap["to_seq"]) == (2 * (EVENTS + 1), 3 * (EVENTS + 1) - 1)
    code, doc = _verify(_args(side, url, cold_only=True), capsys)
    assert code == 1 and [f["code"] for f in doc["findings"] if f["severity"] == "error"] == ["missing-segment"]


def test_verify_tier_over_a_file_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    side = build_hot(tmp_path, segments=SEGMENTS, events_per_segment=EVENTS)
    cold = tmp_path / "cold"
    url = f"file://{cold}"
    ship_hot(side, url, ColdSettings(allow_unlocked=True))
    objects = sorted(p for p in (cold / "app").rglob("seg-*") if p.is_file())
    assert len(objects) == SEGMENTS

    def delete_third() -> None:
        attr.clear_protection(objects[2])  # what root with CAP_LINUX_IMMUTABLE can do
        objects[2].unlink()

    try:
        _check_clean_then_deleted(side, url, delete_third, capsys, counts_requests=False)
    finally:
        for p in cold.rglob("*"):
            if p.is_file():
                attr.clear_protection(p)


def test_verify_tier_over_azure_blob_storage(tmp_path: Path, azure_container: str, azure_env: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from azure.storage.blob import BlobServiceClient

    side = build_hot(tmp_path, segments=SEGMENTS, events_per_segment=EVENTS)
    url = f"az://devstoreaccount1/{azure_container}/audit"
    ship_hot(side, url, ColdSettings(allow_unlocked=True))  # Azurite does not enforce WORM
    svc = BlobServiceClient.from_connection_string(azure_env, retry_total=0)
    container = svc.get_container_client(azure_container)
    names = sorted(b.name for b in container.list_blobs(name_starts_with="audit/app/"))
    assert len(names) == SEGMENTS

    try:
        _check_clean_then_deleted(side, url, lambda: container.delete_blob(names[2]), capsys, counts_requests=True)
    finally:
        svc.close()
