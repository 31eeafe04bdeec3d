"""The library's one door: ``pipeline`` (its ``__all__``) does the common tasks alone, the
README's example runs as written, and a stream prepared for forward-secure seals cannot be
written without its sealer, however it is opened."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import pipeline
from pipeline.cli import main
from tests.conftest import clear_tree_attributes

REPO = Path(__file__).resolve().parent.parent
README_HOT = "/var/lib/worm-pipeline/hot"


def _public() -> dict[str, object]:
    """Only what ``pipeline.__all__`` offers, the way ``from pipeline import *`` sees it."""
    return {name: getattr(pipeline, name) for name in pipeline.__all__}


def test_all_names_resolve_and_nothing_else_is_advertised() -> None:
    api = _public()
    assert set(api) == set(pipeline.__all__) and len(api) == len(pipeline.__all__)
    for name in ("open_log", "LogOptions", "Receipt", "verify_log", "verify_tier", "open_cold_store",
                 "PipelineError", "__version__"):
        assert name in api
    with pytest.raises(AttributeError):
        pipeline.__getattr__("no_such_name")


def test_common_tasks_through_all_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = _public()
    open_log, options_t, receipt_t = api["open_log"], api["LogOptions"], api["Receipt"]
    verify_log, error_t = api["verify_log"], api["PipelineError"]
    hot = tmp_path / "hot"
    options = options_t(durability="fsync", heartbeat_interval=0)  # type: ignore[operator]
    with open_log(hot, "payments", options) as log:  # type: ignore[operator]
        receipts = [log.append({"actor": "alice", "n": i}) for i in range(5)]
        assert all(isinstance(r, receipt_t) for r in receipts)  # type: ignore[arg-type]
        assert [r.seq for r in receipts] == [0, 1, 2, 3, 4]
        with pytest.raises(error_t):  # type: ignore[call-overload]
            log.append({"password": object()})  # refused: nothing written
    reports = verify_log(hot)  # type: ignore[operator]
    assert [r.stream for r in reports] == ["payments"] and reports[0].ok and reports[0].records >= 5
    with pytest.raises(error_t, match="does not exist"):  # type: ignore[call-overload]
        verify_log(tmp_path / "nowhere")  # type: ignore[operator]
    with pytest.raises(error_t, match="not found"):  # type: ignore[call-overload]
        verify_log(hot, "other")  # type: ignore[operator]

    # cold: ship with the CLI (a deployment does that), then reconcile through the library
    cold = tmp_path / "cold"
    try:
        assert main(["ship", "--hot", str(hot), "--cold", f"file://{cold}", "--once", "--allow-unlocked"]) == 0
        settings_t, tier_options_t = api["ColdSettings"], api["TierOptions"]
        store = api["open_cold_store"](f"file://{cold}", settings_t(allow_unlocked=True))  # type: ignore[operator]
        try:
            report = api["verify_tier"](store, tier_options_t(hot=hot, allow_unlocked=True,  # type: ignore[operator]
                                                                 heartbeat_interval=0))
        finally:
            store.close()
        assert report.ok, report
    finally:
        clear_tree_attributes(cold)
    capsys.readouterr()


def test_version_has_one_source() -> None:
    """pyproject.toml takes the version from ``pipeline.__version__`` (setuptools dynamic), so
    the package metadata, ``pipeline --version`` and the module cannot disagree."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "pipeline.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", pipeline.__version__)


def test_readme_python_example_runs(tmp_path: Path) -> None:
    text = (REPO / "README.md").read_text()
    block = re.search(r"From Python:\n\n```python\n(.*?)```", text, re.S)
    assert block, "README has no 'From Python:' example"
    code = block.group(1)
    assert "import pipeline\n" in code and "pipeline.hot" not in code  # the public API only
    hot = tmp_path / "hot"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        out = subprocess.run([sys.executable, "-c", code.replace(README_HOT, str(hot))], env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    finally:
        clear_tree_attributes(hot)
    seq, digest = out.splitlines()[0].split()
    assert seq == "0" and re.fullmatch(r"[0-9a-f]{64}", digest)
    assert out.splitlines()[1] == "payments OK"


def test_docs_show_only_the_public_api() -> None:
    """README and docs/*.md examples import nothing but ``pipeline`` itself."""
    offenders = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in re.findall(r"```python\n(.*?)```", doc.read_text(), re.S):
            for line in block.splitlines():
                if re.match(r"\s*(from pipeline\.|import pipeline\.)", line):
                    offenders.append(f"{doc.name}: {line.strip()}")
    assert offenders == []


def test_hotlog_on_a_forward_secure_stream_seals_with_its_key(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The trap in issue 15: ``HotLog`` opened directly (the old README way) on a stream set
    up with ``pipeline fss-setup`` wrote seals without the forward-secure MAC."""
    from pipeline.hot.writer import HotLog  # the old import path, on purpose

    hot = tmp_path / "hot"
    try:
        hot.mkdir()  # fss-setup prepares a stream only inside an existing hot directory
        assert main(["fss-setup", "--hot", str(hot), "--stream", "app"]) == 0
        key = next(w for w in capsys.readouterr().out.split() if w.startswith("fss-v1:"))
        with HotLog(hot, "app", heartbeat_interval=0) as log:
            log.append({"n": 1})
            log.seal()
            log.append({"n": 2})
        assert main(["verify", "--hot", str(hot), "--fss-key", key]) == 0, capsys.readouterr().out
        reports = pipeline.verify_log(hot, fss_key=key)
        assert reports[0].ok and sum(1 for s in reports[0].segments if s.sealed) >= 1
    finally:
        clear_tree_attributes(hot)


def test_config_defaults_are_the_writers(tmp_path: Path) -> None:
    """One set of defaults: the sidecar's documented [hot] defaults are LogOptions'."""
    from pipeline.config import load_config

    cfg = load_config(None, {"PIPELINE_HOT_DIR": str(tmp_path)})
    defaults = pipeline.LogOptions()
    assert cfg.hot.log_options() == defaults.replace(immutable="auto")
    assert {k: v for k, v in cfg.hot.hotlog_kwargs().items() if k != "immutable"} == \
        {k: v for k, v in defaults.writer_kwargs().items() if k != "immutable"}


def test_a_forward_secure_stream_with_unreadable_state_is_refused(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Refuse rather than write seals without the MAC: broken FSS state stops the writer."""
    from pipeline.fss import STATE_DIR, STATE_FILE

    hot = tmp_path / "hot"
    hot.mkdir()
    assert main(["fss-setup", "--hot", str(hot), "--stream", "app"]) == 0
    capsys.readouterr()
    state = hot / "app" / STATE_DIR / STATE_FILE
    state.write_text("{not json")
    with pytest.raises(pipeline.PipelineError, match="malformed"):
        pipeline.open_log(hot, "app")
    assert not any((hot / "app").glob("seg-*"))  # nothing was written


def test_an_idle_forward_secure_log_erases_past_epoch_keys(tmp_path: Path) -> None:
    """docs/PROOFS.md §5: the key of an epoch that has passed is erased on time even when no
    seal is written (the writer's background thread ticks the sealer)."""
    import json
    import time

    from pipeline.fss import STATE_DIR, STATE_FILE, FssSealer

    hot = tmp_path / "hot"
    (hot / "app").mkdir(parents=True)
    FssSealer.setup(hot / "app", interval=1, start=int(time.time()))
    state = hot / "app" / STATE_DIR / STATE_FILE
    first = json.loads(state.read_text())
    with pipeline.open_log(hot, "app", pipeline.LogOptions(heartbeat_interval=0)):
        deadline = time.monotonic() + 10
        while json.loads(state.read_text())["epoch"] < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        now = json.loads(state.read_text())
    assert now["epoch"] >= 2 and now["seal_key"] != first["seal_key"]
    clear_tree_attributes(hot)
