"""Shared fixtures.  Segment files carry the append-only/immutable attribute, which even
root cannot unlink without clearing it first; every test directory is cleared on teardown.
Every test process gets dummy AWS credentials (never the developer's), and one moto server
over HTTP for the whole session (``moto_endpoint``)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.hot import attr
from tests.netutil import DUMMY_SECRET, free_port

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto server access lines drown test output


def clear_tree_attributes(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                continue
            with contextlib.suppress(OSError):
                attr.clear_protection(p)


@contextlib.contextmanager
def mounted_tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``mnt`` for disk-full tests (the suite runs as root, as CI
    does: a failed mount is a failure, never a skip); attributes cleared, then unmounted."""
    mnt.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the suite runs as root): {res.stderr}")
    try:
        yield mnt
    finally:
        clear_tree_attributes(mnt)
        subprocess.run(["umount", "-l", str(mnt)], check=False)


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


@pytest.fixture(scope="session", autouse=True)
def _aws_dummy_env() -> Iterator[None]:
    """Dummy credentials for the emulators, via the environment (boto3's default chain)."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "AWS_CONFIG_FILE",
                                            "AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY=DUMMY_SECRET,
                      AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE="/dev/null",
                      AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    os.environ.pop("AWS_PROFILE", None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's ThreadedMotoServer: HTTP, real boto3 clients, path-style, dummy credentials."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


# Tests that need a server from outside PyPI carry its marker, derived from the fixtures they
# use so that no test can forget it: `make test-fast` deselects them (a machine with only
# Python), CI runs them all.
_FIXTURE_MARKERS = {"azurite_connection_string": "azurite", "localstack_endpoint": "localstack"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, marker in _FIXTURE_MARKERS.items():
            if fixture in used:
                item.add_marker(getattr(pytest.mark, marker))
