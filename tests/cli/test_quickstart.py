"""The README's first command runs `pipeline quickstart`: it must work end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quickstart_ships_to_the_embedded_locked_s3_and_verifies(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "pipeline", "quickstart", "--events", "120", "--dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    assert '"password":"[REDACTED:secret-key]"' in out and "[REDACTED:card-number]" in out
    assert "total: 1 segments, 121 records, OK" in out
    assert "lock COMPLIANCE until" in out
    assert "deleting the locked version is refused: AccessDenied" in out
    assert "evicted from the hot tier after confirmation: 1 segment(s)" in out
    assert "\n   OK: 1 segments, 1 valid, 0 invalid, 0 missing, 0 error(s)" in out
    # what is left on the hot disk still verifies, starting after the evicted segment
    v = subprocess.run([sys.executable, "-m", "pipeline", "verify", "--hot", str(tmp_path / "hot")],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert v.returncode == 0, v.stdout + v.stderr
