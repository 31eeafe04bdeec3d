"""Real Prometheus (Debian's package) scraping a real sidecar and a real `pipeline monitor`,
evaluating the shipped rules.

The promtool unit tests (test_prometheus_rules.py) prove the rules' logic on synthetic
series; this proves the joint: the names, labels and types the running processes expose are
the ones the rules query, every rule evaluates without error on real scrapes, and alerts go
pending or fire when their conditions really occur: the sidecar killed (its own "down" alert,
and the monitor's silence finding through Prometheus), then the monitor killed."""

from __future__ import annotations

import contextlib
import http.server
import json
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitor.conftest import monitor_process
from tests.netutil import free_port
from tests.ship.conftest import make_bucket
from tests.ship.test_sidecar import Sidecar

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "worm-pipeline.rules.yml"

pytestmark = pytest.mark.slow


class Prometheus:
    def __init__(self, tmp: Path, targets: dict[str, str]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed (Debian's prometheus package): run tools/install-test-deps.sh")
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                               for job, target in targets.items()],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.log = tmp / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        self.wait_for(lambda: self._get("/-/ready") is not None, "Prometheus never became ready")

    def _get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                body = r.read()
        except OSError:
            return None
        return json.loads(body) if path.startswith("/api/") else body

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert answer is not None and answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def rules(self) -> list[dict[str, Any]]:
        answer = self._get("/api/v1/rules")
        assert answer is not None and answer["status"] == "success", answer
        return [r for g in answer["data"]["groups"] for r in g["rules"]]

    def wait_for(self, cond: Callable[[], Any], what: str, timeout: float = 45) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            value = cond()
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"{what}\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def signed_sidecar(tmp_path: Path, moto_endpoint: str) -> Iterator[Sidecar]:
    from pipeline.checkpoint import Signer, write_key_pair

    key_path, _pub = write_key_pair(Signer.generate("example.com/audit"), tmp_path / "keys")
    sc = Sidecar(tmp_path, moto_endpoint, make_bucket(moto_endpoint), hot={"hot_retention": "1h"})
    sc.sections["signing"] = {"key_file": str(key_path), "checkpoint_interval": "1s",
                              "origin": "example.com/audit/app", "witnesses": [f"file://{tmp_path / 'witness'}"]}
    sc.write_config()
    sc.start()
    yield sc
    if sc.proc is not None and sc.proc.poll() is None:
        sc.stop()


@contextlib.contextmanager
def webhook_sink() -> Iterator[str]:
    """A webhook receiver that accepts every notification (the monitor needs one channel)."""

    class Accept(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()


def test_prometheus_scrapes_sidecar_and_monitor_and_evaluates_every_rule(tmp_path: Path,
                                                                          signed_sidecar: Sidecar) -> None:
    sc = signed_sidecar
    started = time.time()
    (tmp_path / "hook.key").write_bytes(b"k" * 32)
    with webhook_sink() as hook, monitor_process(tmp_path, {
        "monitor": {"interval": "300ms", "trailing_delay": "500ms"},
        "hot": {"dir": str(sc.hot), "heartbeat_interval": "1s", "silence_factor": 3},
        "webhook": {"url": hook, "secret_file": str(tmp_path / "hook.key")},
    }) as mon:
        _scrape_and_alert(tmp_path, sc, mon, started)


def _scrape_and_alert(tmp_path: Path, sc: Sidecar, mon: Any, started: float) -> None:
    prom = Prometheus(tmp_path / "prom", {"worm-pipeline": f"127.0.0.1:{sc.ops_port}",
                                          "worm-monitor": f"127.0.0.1:{mon.port}"})
    try:
        for batch in range(3):
            assert sc.post([{"batch": batch, "i": i} for i in range(50)])[0] == 200
        # what the rules and the dashboard read, with the types and labels they expect
        prom.wait_for(lambda: prom.query('worm_ingest_ack_seconds_count{transport="http",job="worm-pipeline"} > 0'),
                      "the durable-acknowledgement histogram never reached Prometheus")
        prom.wait_for(lambda: prom.query(f'worm_last_checkpoint_timestamp_seconds{{origin="example.com/audit/app"}}'
                                         f' > {started}'), "no checkpoint time after the start")
        prom.wait_for(lambda: prom.query(f"worm_last_witness_publish_timestamp_seconds > {started}"),
                      "no witness publish time after the start")
        prom.wait_for(lambda: prom.query(f'worm_last_seal_timestamp_seconds{{stream="app"}} > {started}'),
                      "no seal time after the start")  # segment_window is 2s in the test config
        assert prom.query('worm_build_info{job="worm-pipeline"} == 1')
        assert prom.query('process_resident_memory_bytes{job="worm-pipeline"} > 0')
        prom.wait_for(lambda: prom.query(
            f'worm_monitor_last_cycle_timestamp_seconds{{job="worm-monitor"}} > {started}'),
                      "the monitor's cycles never reached Prometheus")
        prom.wait_for(lambda: prom.query('worm_monitor_last_verified_seq{job="worm-monitor",stream="app"} > 0'),
                      "the monitor never verified a record")

        # every shipped rule loads and evaluates on the real series without error
        def evaluated() -> list[dict[str, Any]]:
            rules = prom.rules()
            return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else []

        rules = prom.wait_for(evaluated, "the rules were never evaluated")
        assert {r["name"] for r in rules} >= {"WormPipelineDown", "WormPipelineColdLag", "WormMonitorDown"}
        bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        assert not bad, bad
        # healthy processes: nothing is pending or firing
        assert not prom.query('ALERTS{alertname=~"Worm.*"}')

        # the condition really occurs: the sidecar dies and its "down" alert goes pending
        sc.proc.kill()  # type: ignore[union-attr]
        sc.proc.wait()  # type: ignore[union-attr]
        pending = prom.wait_for(
            lambda: prom.query('ALERTS{alertname="WormPipelineDown",alertstate="pending"}'),
            "WormPipelineDown never went pending after the sidecar was killed")
        assert pending[0]["metric"]["job"] == "worm-pipeline"
        # ... and the monitor sees the silence, which Prometheus alerts on as a second path
        prom.wait_for(lambda: prom.query('ALERTS{alertname="WormMonitorFindings",code="silence",'
                                         'alertstate="firing"}'),
                      "the monitor's silence finding never fired WormMonitorFindings")

        # the monitor itself dies: its "down" alert goes pending
        mon.proc.kill()
        mon.proc.wait()
        prom.wait_for(lambda: prom.query('ALERTS{alertname="WormMonitorDown",alertstate="pending"}'),
                      "WormMonitorDown never went pending after the monitor was killed")
    finally:
        prom.stop()
