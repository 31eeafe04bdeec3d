"""Run tests/ingest_proc.py as a child process and talk to it (hostile-input and memory tests)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass
class ProcServer:
    proc: subprocess.Popen[bytes]
    addr: tuple[str, int]
    hot: Path
    socket: Path
    stderr: list[str] = field(default_factory=list)

    def vm_hwm_kib(self) -> int:
        return self._status("VmHWM")

    def vm_rss_kib(self) -> int:
        return self._status("VmRSS")

    def _status(self, key: str) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"no {key} for pid {self.proc.pid}")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def alive(self) -> bool:
        return self.proc.poll() is None


@contextlib.contextmanager
def ingest_process(tmp_path: Path, max_request_bytes: int, *extra: str) -> Iterator[ProcServer]:
    """The server in a child process; on exit, stops it and checks that everything it
    wrote on stderr is the structured (JSON) log: no raw tracebacks."""
    hot, sock = tmp_path / "hot", tmp_path / "ingest.sock"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "tests.ingest_proc", str(hot), str(sock), str(max_request_bytes),
                             *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO, env=env)
    assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise RuntimeError("ingest process failed: " + proc.stderr.read().decode(errors="replace"))
    host, port = json.loads(line)["http"]
    server = ProcServer(proc, (host, int(port)), hot, sock)
    err_lines: list[bytes] = []
    # drained while it runs: a full pipe would block the child's logging (and its event loop)
    drain = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    drain.start()
    try:
        yield server
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        drain.join(10)
        server.stderr = [b.decode(errors="replace").rstrip("\n") for b in err_lines]
        proc.stdout.close()
        proc.stderr.close()
    for text in server.stderr:
        json.loads(text)  # every line is a structured log record (a raw traceback is not)
    assert proc.returncode == 0, server.stderr[-5:]


def post(addr: tuple[str, int], body: bytes, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
    try:
        h = {"Content-Type": "application/x-ndjson"}
        h.update(headers or {})
        conn.request("POST", "/v1/events", body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data) if data else None
    finally:
        conn.close()
