"""Real components for the monitor's tests: Debian's Alertmanager on free ports with its own
storage, routing every alert to a webhook receiver of the test's own; the monitor as a
child process (`pipeline monitor --config ...`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.netutil import free_port

REPO = Path(__file__).resolve().parents[2]
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


@dataclass
class Receiver:
    """An HTTP server that keeps every JSON body POSTed to it (with its headers)."""

    server: ThreadingHTTPServer
    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    status: int = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self, path: str = "") -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(b) for p, _h, b in self.posts if p.startswith(path)]

    def alerts(self, path: str = "") -> list[dict[str, Any]]:
        """Every alert in every notification, in arrival order (Alertmanager and monitor webhooks
        both carry an ``alerts`` list with ``status``, ``labels`` and ``annotations``)."""
        return [a for b in self.bodies(path) for a in b.get("alerts", [])]

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float, path: str = "",
                 what: str = "alert") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for a in self.alerts(path):
                if pred(a):
                    return a
            time.sleep(0.1)
        seen = [(a.get("status"), a.get("labels", {}).get("alertname"), a.get("labels", {}).get("code"))
                for a in self.alerts(path)]
        raise AssertionError(f"no {what} at the receiver within {timeout} s; received: {seen[-30:]}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with rec.lock:
                rec.posts.append((self.path, dict(self.headers.items()), body))
            self.send_response(rec.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec = Receiver(server)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    yield rec
    server.shutdown()
    server.server_close()


@dataclass
class Alertmanager:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/api/v2/alerts", timeout=5) as r:
            out: list[dict[str, Any]] = json.loads(r.read())
        return out


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[Alertmanager]:
    """Alertmanager from Debian's package, routing every alert to ``receiver`` at /am (with
    resolved notifications), flushing groups every second."""
    port = free_port()
    cfg = tmp_path / "alertmanager.yml"
    cfg.write_text(f"""
route:
  receiver: test
  group_by: [alertname, stream, segment, code]
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: test
    webhook_configs:
      - url: {receiver.url}/am
        send_resolved: true
""")
    storage = tmp_path / "am-data"
    storage.mkdir()
    log = tmp_path / "alertmanager.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([ALERTMANAGER, f"--config.file={cfg}", f"--storage.path={storage}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                                 "--log.level=warn"], stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    am = Alertmanager(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(am.url + "/-/ready", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("alertmanager did not start:\n" + log.read_text()[-2000:]) from None
            time.sleep(0.1)
    yield am
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def write_toml(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class MonitorProc:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text: str = r.read().decode()
        return text

    def metric(self, name: str, **labels: str) -> float | None:
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        for line in self.metrics().splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return None

    def wait_metric(self, name: str, pred: Callable[[float], bool], timeout: float, **labels: str) -> float:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                last = self.metric(name, **labels)
                if last is not None and pred(last):
                    return last
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.1)
        raise AssertionError(f"{name}{labels} = {last} after {timeout} s:\n" + self.log.read_text()[-3000:])

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(30)


@contextlib.contextmanager
def monitor_process(tmp_path: Path, sections: dict[str, dict[str, Any]]) -> Iterator[MonitorProc]:
    port = free_port()
    sections = {k: dict(v) for k, v in sections.items()}
    sections.setdefault("monitor", {})
    sections["monitor"].setdefault("state_dir", str(tmp_path / "monitor-state"))
    sections["monitor"]["listen"] = f"127.0.0.1:{port}"
    cfg = write_toml(tmp_path / "monitor.toml", sections)
    log = tmp_path / "monitor.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "monitor", "--config", str(cfg)], env=env,
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    mp = MonitorProc(proc, port, log)
    try:
        mp.wait_metric("worm_monitor_last_cycle_timestamp_seconds", lambda v: v > 0, 30)
        yield mp
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
