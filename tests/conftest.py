"""Shared fixtures.  Segment files carry the append-only/immutable attribute, which even
root cannot unlink without clearing it first; every test directory is cleared on teardown."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.hot import attr


def clear_tree_attributes(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                continue
            with contextlib.suppress(OSError):
                attr.clear_protection(p)


@pytest.fixture
def hot_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "hot"
    d.mkdir()
    yield d
    clear_tree_attributes(d)


@pytest.fixture(autouse=True)
def _clear_tmp_attributes(tmp_path: Path) -> Iterator[None]:
    yield
    clear_tree_attributes(tmp_path)
