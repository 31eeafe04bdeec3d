"""``pipeline status``: streams, segments, protection state and the per-record code path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import _accel
from pipeline.cli import main
from pipeline.hot.writer import HotLog


def test_status_reports_segments_protection_and_accelerator(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    log = HotLog(tmp_path, "app", heartbeat_interval=0)  # immutable="auto": real attributes here (root)
    log.append({"a": 1})
    log.seal()
    log.append({"b": 2})
    log.close(seal=False)
    capsys.readouterr()
    assert main(["status", "--hot", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["accelerator"] == _accel.describe()
    (stream,) = doc["streams"]
    assert stream["stream"] == "app" and len(stream["segments"]) == 2
    first, second = stream["segments"]
    if doc["platform"]["has_capability"]:
        assert first["immutable"] and second["append_only"] and not second["immutable"]
    assert stream["sealed_segments"] == (1 if doc["platform"]["has_capability"] else 0)
    assert main(["status", "--hot", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "per-record work:" in text and "stream app: 2 segments" in text


def test_status_of_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    assert main(["status", "--hot", str(tmp_path / "nope")]) == 2
