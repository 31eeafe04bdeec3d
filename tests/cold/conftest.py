"""Fixtures for the cold tier: real endpoints started by the suite, on free local ports.

- moto's ThreadedMotoServer (HTTP, real boto3 clients, path-style, dummy credentials)
- LocalStack on the host via localstack/run-host.sh (marker ``localstack``: these FAIL,
  not skip, when LocalStack cannot be installed or started in time)
- Azurite from node_modules (marker ``azurite``; ``npm install`` at the repo root)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.hot.segment import SegmentManifest
from tests.cold.coldutil import AZURITE_KEY, write_segment
from tests.faultproxy import FaultProxy
from tests.netutil import free_port

REPO = Path(__file__).resolve().parents[2]
LOCALSTACK_START_TIMEOUT = 120.0
AZURITE_START_TIMEOUT = 30.0


# ---- segments ---------------------------------------------------------------------------------

@pytest.fixture
def segment_factory(tmp_path: Path) -> Callable[..., tuple[Path, SegmentManifest]]:
    hot = tmp_path / "hot"

    def make(**kw: Any) -> tuple[Path, SegmentManifest]:
        return write_segment(hot, **kw)

    return make


# ---- moto (the in-process server, moto_endpoint, is in tests/conftest.py) -------------------

@pytest.fixture(scope="session")
def moto_process_endpoint() -> Iterator[str]:
    """moto in a separate process: for measuring the client's own memory (an in-process
    server's copies of the uploaded bytes would count against the client)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture
def raw_s3(moto_endpoint: str) -> Any:
    from pipeline.cold.base import ColdSettings
    from pipeline.cold.s3 import make_client

    client = make_client(ColdSettings(), moto_endpoint, "us-east-1")
    yield client
    client.close()


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    host, port = moto_endpoint.removeprefix("http://").split(":")
    p = FaultProxy(host, int(port))
    yield p
    p.close()


# ---- LocalStack ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def localstack_endpoint() -> Iterator[str]:
    script = REPO / "localstack" / "run-host.sh"
    if not script.exists():
        pytest.fail(f"{script} is missing: LocalStack tests cannot run (deselect with -m 'not localstack')")
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="localstack-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(["bash", str(script), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + LOCALSTACK_START_TIMEOUT
    ready = False
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/_localstack/health", timeout=2) as r:
                health = json.loads(r.read())
            if health.get("services", {}).get("s3") in ("available", "running"):
                ready = True
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    if not ready:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        tail = Path(log.name).read_text(errors="replace")[-2000:]
        pytest.fail(f"LocalStack did not become ready on {url} within {LOCALSTACK_START_TIMEOUT:.0f} s "
                    f"(exit {proc.poll()}); install log tail:\n{tail}\n"
                    "run `localstack/run-host.sh --install-only` or deselect with -m 'not localstack'")
    yield url
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    with contextlib.suppress(OSError):
        os.unlink(log.name)


# ---- Azurite ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def azurite_connection_string() -> Iterator[str]:
    binary = REPO / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `npm install` at the repository root "
                    "(or deselect with -m 'not azurite')")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="azurite-")
    errlog = open(os.path.join(workdir, "stderr.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        # --inMemoryPersistence excludes --location; cwd keeps any stray files in workdir.
        [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port),
         "--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry", "--silent"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=errlog, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + AZURITE_START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            break
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    else:
        proc.terminate()
        pytest.fail(f"Azurite did not listen on 127.0.0.1:{port} within {AZURITE_START_TIMEOUT:.0f} s")
    if proc.poll() is not None:
        errlog.close()
        err = Path(workdir, "stderr.log").read_text(errors="replace")[-1500:]
        pytest.fail(f"Azurite exited with {proc.returncode}: {err}")
    conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    yield conn
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    errlog.close()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def azure_env(azurite_connection_string: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string)
    return azurite_connection_string


@pytest.fixture
def azure_container(azure_env: str) -> str:
    from azure.storage.blob import BlobServiceClient

    name = f"cold{uuid.uuid4().hex[:16]}"
    svc = BlobServiceClient.from_connection_string(azure_env, retry_total=0)
    svc.create_container(name)
    svc.close()
    return name
