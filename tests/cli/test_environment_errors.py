"""A failure of the environment (credentials, network) is one line with the fix and exit 2,
never a traceback (unless --debug); retry budgets are what the flags say and are reported as
measured.  Run as real processes: logging, SDK output and tracebacks are part of what is tested."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.cli.conftest import Tier
from tests.hotutil import PYTHON, REPO
from tests.netutil import free_port


def pipeline(*argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_"))}
    e.update(env or {})
    return subprocess.run([PYTHON, "-m", "pipeline", *argv], capture_output=True, text=True, cwd=REPO,
                          env=e, timeout=timeout)


def test_azure_without_credentials_is_one_line_and_exit_2(tier: Tier) -> None:
    port = free_port()  # nothing listens: the credential chain fails before any request
    r = pipeline("verify-tier", "--hot", str(tier.hot), "--retry-max-seconds", "2s",
                 "--cold", f"az://acct/cont?endpoint_url=https://127.0.0.1:{port}/acct",
                 env={"IDENTITY_ENDPOINT": "", "MSI_ENDPOINT": ""})
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "credentials" in lines[0] and ("az login" in lines[0] or "SAS" in lines[0])


def test_unreachable_s3_is_bounded_by_the_budget_and_says_so_truthfully(tier: Tier) -> None:
    port = free_port()
    t0 = time.monotonic()
    r = pipeline("verify-tier", "--hot", str(tier.hot), "--cold", f"s3://bucket?endpoint_url=http://127.0.0.1:{port}",
                 "--retry-max-seconds", "3s")
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stdout + r.stderr
    assert took < 3 + 10, took  # one budget for the command, not one per operation
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert "gave up after" in line and "retry budget 3 s" in line, line
    assert "shipper" not in line  # verify-tier is not the shipper
    assert "of -" not in line
    assert "--retry-max-seconds" in line and "cold.retry_max_seconds" in line  # advice that exists
    # ... and the advice names a flag and a key that really exist
    assert "--retry-max-seconds" in pipeline("verify-tier", "--help").stdout
    from pipeline.config import load_config

    cfg = load_config(None, {"PIPELINE_COLD_RETRY_MAX_SECONDS": "5m", "PIPELINE_HOT_DIR": str(tier.hot)})
    assert cfg.cold.settings().retry_max_seconds == 300.0


def test_debug_shows_the_traceback(tier: Tier, tmp_path: Path) -> None:
    port = free_port()
    url = f"az://acct/cont?endpoint_url=https://127.0.0.1:{port}/acct"
    r = pipeline("--debug", "verify-tier", "--hot", str(tier.hot), "--cold", url, "--retry-max-seconds", "1s")
    assert r.returncode != 0
    assert "Traceback" in r.stderr
