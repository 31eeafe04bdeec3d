"""Export and restore as library calls (``pipeline.export_events``, ``pipeline.restore_log``)
over a real shipped file:// store: the same verified read-back the CLI verbs render, with the
finding that stopped it when a stored object was altered."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

import pipeline
from pipeline.cli import main
from pipeline.findings import REGISTRY
from pipeline.ship.index import is_index_key
from tests.conftest import clear_tree_attributes

EVENTS_PER_SEGMENT = 5
SEGMENTS = 3


@pytest.fixture
def shipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[Path, pipeline.ColdStore]]:
    hot, cold = tmp_path / "hot", tmp_path / "cold"
    options = pipeline.LogOptions(heartbeat_interval=0)
    with pipeline.open_log(hot, "app", options) as log:
        for s in range(SEGMENTS):
            for i in range(EVENTS_PER_SEGMENT):
                log.append({"user": f"u{i % 2}", "n": s * EVENTS_PER_SEGMENT + i})
            log.seal()
    assert main(["ship", "--hot", str(hot), "--cold", f"file://{cold}", "--once", "--allow-unlocked"]) == 0
    capsys.readouterr()
    store = pipeline.open_cold_store(f"file://{cold}", pipeline.ColdSettings(allow_unlocked=True))
    try:
        yield hot, store
    finally:
        store.close()
        for d in (hot, cold, tmp_path / "restored"):
            clear_tree_attributes(d)


def test_export_from_cold_and_hot_agree(shipped: tuple[Path, pipeline.ColdStore]) -> None:
    hot, store = shipped
    cold_out, hot_out = io.BytesIO(), io.BytesIO()
    cold = pipeline.export_events(store, cold_out)
    warm = pipeline.export_events(hot, hot_out, stream="app")
    total = SEGMENTS * EVENTS_PER_SEGMENT
    assert (cold.events, cold.segments, cold.streams) == (total, SEGMENTS, ["app"])
    assert cold_out.getvalue() == hot_out.getvalue() and warm.events == total
    only = io.BytesIO()
    assert pipeline.export_events(store, only, match=["user=u1", "n=3"]).events == 1
    assert b'"n":3' in only.getvalue()
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        pipeline.export_events(store, io.BytesIO(), match=["novalue"])


def test_restore_then_verify_and_continue(shipped: tuple[Path, pipeline.ColdStore], tmp_path: Path) -> None:
    _hot, store = shipped
    to = tmp_path / "restored"
    (restored,) = pipeline.restore_log(store, to)
    assert (restored.stream, restored.segments, restored.path) == ("app", SEGMENTS, to / "app")
    (report,) = pipeline.verify_log(to)
    assert report.ok and report.records == restored.records
    with pipeline.open_log(to, "app", pipeline.LogOptions(heartbeat_interval=0)) as log:
        receipt = log.append({"after": "restore"})
    assert receipt.seq == restored.records
    assert pipeline.verify_log(to)[0].ok
    with pytest.raises(pipeline.ReadbackError, match="already holds segments"):
        pipeline.restore_log(store, to)


def test_an_altered_object_stops_both_with_its_finding(shipped: tuple[Path, pipeline.ColdStore],
                                                       tmp_path: Path) -> None:
    _hot, store = shipped
    keys = sorted(info.key for info in store.list("") if not is_index_key(info.key, ""))  # segment objects
    victim = Path(store.root) / keys[1]  # type: ignore[attr-defined]  # file:// store: a file per object
    clear_tree_attributes(victim.parent)
    body = bytearray(victim.read_bytes())
    body[len(body) // 2] ^= 0x01
    victim.write_bytes(bytes(body))

    out = io.BytesIO()
    with pytest.raises(pipeline.ExportFailed) as stopped:
        pipeline.export_events(store, out)
    finding = stopped.value.finding
    assert isinstance(finding, pipeline.Finding) and finding.code in REGISTRY and finding.is_error
    assert finding.code == "object-replaced" and finding.key == keys[1] and finding.stream == "app"
    # the first segment verified and was released; nothing of the altered one or after it
    assert out.getvalue().count(b"\n") == EVENTS_PER_SEGMENT

    to = tmp_path / "restored"
    with pytest.raises(pipeline.RestoreFailed) as refused:
        pipeline.restore_log(store, to)
    assert refused.value.finding.code == "object-replaced"
    assert not (to / "app").exists() or not any((to / "app").glob("seg-*"))
