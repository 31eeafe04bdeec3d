"""Helpers for the encryption tests: age identities made by the real ``age-keygen``."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class AgeKey:
    identity_file: Path
    recipient: str


def make_age_key(path: Path) -> AgeKey:
    out = subprocess.run(["age-keygen", "-o", str(path)], capture_output=True, text=True, check=True)
    recipient = next(line.split()[-1] for line in (out.stderr + out.stdout).splitlines() if "age1" in line)
    return AgeKey(path, recipient)


@pytest.fixture
def auditor(tmp_path: Path) -> AgeKey:
    return make_age_key(tmp_path / "auditor.key")


@pytest.fixture
def escrow(tmp_path: Path) -> AgeKey:
    return make_age_key(tmp_path / "escrow.key")
