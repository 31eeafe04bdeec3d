"""The command's retry budget is shared by all its operations and reported as measured; a
port in use is refused by its configuration key before anything is created."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from pipeline.cold.base import ColdSettings
from pipeline.cold.retry import RetryBudget, call_with_retry, retry_report, use_command_budget
from tests.cli.conftest import cli, snapshot


def _refused() -> None:
    raise ConnectionRefusedError(111, "Connection refused")


def test_one_budget_for_all_operations_of_a_command() -> None:
    settings = ColdSettings(retry_max_seconds=30.0, retry_initial_backoff=0.05, retry_max_backoff=0.2)
    use_command_budget(RetryBudget(1.0))
    try:
        t0 = time.monotonic()
        errors = []
        for _ in range(3):
            with pytest.raises(ConnectionRefusedError) as info:
                call_with_retry(_refused, settings)
            errors.append(info.value)
        took = time.monotonic() - t0
    finally:
        use_command_budget(None)
    assert took < 1.8, took  # not 3 x 1 s, and far from the per-operation 30 s
    first, *later = errors
    assert getattr(first, "retry_attempts") > 1
    assert all(getattr(e, "retry_attempts") == 1 for e in later)  # the budget was spent: tried once
    assert "retry budget 1 s" in retry_report(first) and "gave up after" in retry_report(first)
    assert "s of retrying in this command" in retry_report(later[0])


def test_without_a_command_budget_each_operation_has_its_own() -> None:
    settings = ColdSettings(retry_max_seconds=0.3, retry_initial_backoff=0.05, retry_max_backoff=0.1)
    for _ in range(2):
        with pytest.raises(ConnectionRefusedError) as info:
            call_with_retry(_refused, settings)
        assert getattr(info.value, "retry_attempts") > 1
        assert 0.25 < getattr(info.value, "retry_elapsed") < 1.0


def test_run_names_the_listener_whose_port_is_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[hot]\ndir = "{tmp_path}/hot"\nstream = "app"\n[cold]\nurl = "file://{tmp_path}/cold"\n'
                       f'allow_unlocked = true\n[ops]\nlisten = "127.0.0.1:{port}"\n')
        before = snapshot(tmp_path)
        r = cli("run", "--config", str(cfg), capsys=capsys)
    assert r.code == 2
    assert "ops.listen" in r.err and "already in use" in r.err
    assert snapshot(tmp_path) == before  # no hot directory, no cold directory
