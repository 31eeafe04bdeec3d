"""Fixtures for the CLI suites: a real hot tier written, sealed and shipped through the CLI
itself (file:// cold store), and a helper that runs ``pipeline.cli.main`` in-process."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli(*argv: str, stdin: bytes = b"", capsys: pytest.CaptureFixture[str]) -> Result:
    """Run one verb in this process, with ``stdin`` as its standard input."""
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    finally:
        sys.stdin = saved
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def snapshot(root: Path) -> set[str]:
    """Every path under ``root`` (what a refused command must leave as it was), except
    SQLite's -wal/-shm files."""
    if not root.exists():
        return set()
    if root.is_file():
        return {str(root)}
    out = {str(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        # SQLite's own -wal/-shm files come and go as connections open and close
        out.update(os.path.join(dirpath, n) for n in dirnames + filenames if not n.endswith(("-wal", "-shm")))
    return out


@dataclass
class Tier:
    hot: Path
    cold_url: str
    stream: str = "app"


EVENTS = b"".join(b'{"actor":"alice","action":"login","n":%d}\n' % i for i in range(20))


@pytest.fixture
def tier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Tier]:
    hot = tmp_path / "hot"
    cold = tmp_path / "cold"
    cold.mkdir()
    t = Tier(hot, f"file://{cold}")
    r = cli("append", "--hot", str(hot), "--stream", t.stream, "--seal", stdin=EVENTS, capsys=capsys)
    assert r.code == 0, r.err
    r = cli("ship", "--once", "--hot", str(hot), "--cold", t.cold_url, "--allow-unlocked", "--hot-retention", "1d",
            capsys=capsys)
    assert r.code == 0, r.out + r.err
    r = cli("append", "--hot", str(hot), "--stream", t.stream, stdin=b'{"more":1}\n', capsys=capsys)
    assert r.code == 0, r.err
    yield t
