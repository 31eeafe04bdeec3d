"""`pipeline run` as a real process against moto's server: drain, kill -9 storms, reload,
backpressure.  Acknowledged events must end up in cold storage exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.ship.ledger import Ledger
from pipeline.verify.chain import verify_stream
from tests.hotutil import wait_for
from tests.netutil import free_port
from tests.ship.conftest import s3_client
from tests.ship.test_shipper import download_stream

REPO = Path(__file__).resolve().parents[2]


class Sidecar:
    def __init__(self, tmp: Path, endpoint: str, bucket: str, **overrides: Any) -> None:
        self.hot = tmp / "hot"
        self.sock = tmp / "ingest.sock"
        self.http_port = free_port()
        self.ops_port = free_port()
        self.cfg = tmp / "pipeline.toml"
        hot = {"dir": str(self.hot), "stream": "app", "segment_window": "2s", "segment_max_bytes": 65536,
               "heartbeat_interval": "1s", "hot_retention": "0s", "high_water_percent": 99}
        hot.update(overrides.pop("hot", {}))
        ops = {"listen": f"127.0.0.1:{self.ops_port}", "shutdown_grace": "30s", "log_format": "json"}
        ops.update(overrides.pop("ops", {}))
        self.sections: dict[str, dict[str, Any]] = {
            "hot": hot,
            "cold": {"url": f"s3://{bucket}/sc?endpoint_url={endpoint}&region=us-east-1", "retention_days": 1},
            "ingest": {"socket": str(self.sock), "http": f"127.0.0.1:{self.http_port}"},
            "ops": ops,
        }
        self.write_config()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "sidecar.log"

    def write_config(self) -> None:
        lines = []
        for section, values in self.sections.items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        self.cfg.write_text("\n".join(lines) + "\n")

    def start(self, wait_ready: bool = True) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--config", str(self.cfg)],
                                         env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        if wait_ready:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if self.get("/readyz")[0] == 200:
                    return
                assert self.proc.poll() is None, self.log.read_text()[-2000:]
                time.sleep(0.05)
            raise AssertionError("sidecar never became ready:\n" + self.log.read_text()[-2000:])

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ops_port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def post(self, events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        body = b"".join(orjson.dumps(e) + b"\n" for e in events)
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/v1/events", data=body,
                                     headers={"Content-Type": "application/x-ndjson"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, {"body": e.read().decode()}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def socket_send(path: Path, events: list[dict[str, Any]], timeout: float = 30) -> list[dict[str, Any]]:
    """Send a batch over the Unix socket; return one ack per event (raises if cut off).
    Writes on a second thread while reading the answers, as the protocol asks of clients
    (docs/INGEST.md): a large batch written before reading could fill both sides' buffers."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        payload = b"".join(orjson.dumps(e) + b"\n" for e in events)
        failed: list[OSError] = []

        def write() -> None:
            try:
                s.sendall(payload)
            except OSError as exc:  # reported below if the answers are cut short too
                failed.append(exc)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        buf = b""
        while buf.count(b"\n") < len(events):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before every ack arrived ({failed or 'no write error'})")
            buf += chunk
        writer.join(timeout)
    return [orjson.loads(line) for line in buf.splitlines()]


def cold_events(endpoint: str, bucket: str, dest: Path) -> tuple[list[dict[str, Any]], Any]:
    download_stream(endpoint, bucket, "sc/app/", dest)
    report = verify_stream(dest, workers=1)
    events = []
    for seg in sorted(dest.iterdir()):
        for line in seg.read_bytes().splitlines():
            rec = orjson.loads(line)
            if rec["kind"] == "event":
                events.append(rec)
    return events, report


def test_sigterm_drains_and_the_next_start_resumes(tmp_path: Path, s3_endpoint: str, locked_bucket: str) -> None:
    sc = Sidecar(tmp_path, s3_endpoint, locked_bucket)
    sc.start()
    assert sc.get("/healthz")[0] == 200
    acked = []  # seqs acknowledged one by one (the socket)
    ranges = []  # (first_seq, last_seq, events) acknowledged by HTTP requests
    last_hashes = []  # HTTP answers carry the seq range and the last record's hash
    for batch in range(5):
        # a request with a refused event stores nothing (docs/INGEST.md), then its good events
        code, doc = sc.post([{"batch": batch, "i": i} for i in range(50)] + ["not an object"])  # type: ignore[list-item]
        assert code == 422 and '"rejected":1' in doc["body"]
        code, doc = sc.post([{"batch": batch, "i": i} for i in range(50)])
        assert code == 200 and doc["accepted"] == 50
        # a seal can fall inside the range when the segment rotates during the request
        ranges.append((doc["first_seq"], doc["last_seq"], 50))
        last_hashes.append((doc["last_seq"], doc["last_hash"]))
    via_socket = socket_send(sc.sock, [{"via": "socket", "i": i} for i in range(20)])
    acked += [r["seq"] for r in via_socket]
    last_hashes += [(r["seq"], r["hash"]) for r in via_socket]  # the socket answers every line
    status, metrics = sc.get("/metrics")
    assert status == 200 and "worm_events_appended_total 270.0" in metrics
    assert sc.stop(signal.SIGTERM) == 0
    counts = Ledger(sc.hot).counts()
    assert counts["sealed"] == counts["uploading"] == counts["quarantined"] == 0
    assert counts["evicted"] >= 1
    # restart resumes the same chain
    sc.start()
    code, doc = sc.post([{"after": "restart"}])
    assert code == 200
    ranges.append((doc["first_seq"], doc["last_seq"], 1))
    last_hashes.append((doc["last_seq"], doc["last_hash"]))
    assert sc.stop() == 0
    events, report = cold_events(s3_endpoint, locked_bucket, tmp_path / "cold" / "app")
    assert report.ok, report.findings[:3]
    seqs = sorted(e["seq"] for e in events)
    in_ranges = [q for q in seqs if any(a <= q <= b for a, b, _n in ranges)]
    assert sorted(in_ranges + acked) == seqs  # nothing stored that was not acknowledged
    for a, b, n in ranges:
        assert len([q for q in seqs if a <= q <= b]) == n
    by_seq = {e["seq"]: e["hash"] for e in events}
    assert all(by_seq[seq] == h for seq, h in last_hashes)


def test_backpressure_above_high_water_returns_429(tmp_path: Path, s3_endpoint: str, locked_bucket: str) -> None:
    sc = Sidecar(tmp_path, s3_endpoint, locked_bucket, hot={"high_water_percent": 1})
    sc.start(wait_ready=False)
    # /healthz answers as soon as the ops server is up; /readyz says "starting" until the
    # sidecar's start() has returned a moment later: wait for both before reading its verdict
    deadline = time.monotonic() + 30
    while (sc.get("/healthz")[0] != 200 or sc.get("/readyz")[1].strip() == "starting") \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    status, body = sc.get("/readyz")
    assert status == 503 and "high-water" in body
    code, doc = sc.post([{"a": 1}])
    assert code == 429 and "high-water" in doc["body"]
    assert "worm_backpressure_active 1.0" in sc.get("/metrics")[1]
    # SIGHUP reload lowers the pressure without a restart
    sc.sections["hot"]["high_water_percent"] = 99
    sc.write_config()
    assert sc.proc is not None
    sc.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while sc.get("/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sc.get("/readyz")[0] == 200
    assert sc.post([{"a": 2}])[0] == 200
    assert sc.stop() == 0


def test_kill_9_storm_while_ingest_continues(tmp_path: Path, s3_endpoint: str, locked_bucket: str) -> None:
    sc = Sidecar(tmp_path, s3_endpoint, locked_bucket, hot={"segment_window": "1s", "segment_max_bytes": 16384})
    acked: list[tuple[int, str, int]] = []
    stop = threading.Event()
    counter = [0]
    unacked: set[int] = set()

    def client() -> None:
        while not stop.is_set():
            n = counter[0]
            batch: list[dict[str, Any]] = [{"client": "c1", "n": n + i} for i in range(10)]
            try:
                acks = socket_send(sc.sock, batch)
            except OSError:
                # sidecar down or restarting: not acknowledged, so the client resends the same
                # events (at-least-once): they may already be durable, and then appear twice
                unacked.update(e["n"] for e in batch)
                time.sleep(0.02)
                continue
            for ev, ack in zip(batch, acks, strict=True):
                assert ack["ok"], ack
                acked.append((ack["seq"], ack["hash"], ev["n"]))
            counter[0] += 10

    def acknowledged_more() -> None:
        """Wait until this run of the sidecar has acknowledged a batch of its own."""
        since = len(acked)
        wait_for(lambda: len(acked) > since, timeout=60, what="the sidecar to acknowledge a batch")

    sc.start()
    t = threading.Thread(target=client, daemon=True)
    t.start()
    rng = random.Random(1234)
    kills = 0
    ready = True
    try:
        for _ in range(50):
            if ready:
                # a run started ready is killed once it has acknowledged something, then at a
                # random moment after: with wall-clock kill points alone a slow machine can kill
                # the runs before they acknowledge anything (and len(acked) > 100 fails).  The
                # runs not waited for are still killed at any point of start-up and recovery.
                acknowledged_more()
            time.sleep(rng.uniform(0.05, 0.6))
            assert sc.proc is not None
            sc.proc.kill()
            sc.proc.wait()
            kills += 1
            ready = rng.random() < 0.5
            sc.start(wait_ready=ready)
        # the last run takes events too, and is up (its SIGTERM handler in place) for the drain
        acknowledged_more()
    finally:
        stop.set()
        t.join(timeout=30)
    assert kills == 50
    assert len(acked) > 100
    assert sc.stop(signal.SIGTERM) == 0
    ledger = Ledger(sc.hot)
    counts = ledger.counts()
    assert counts["quarantined"] == 0
    # nothing was evicted that is not confirmed in cold storage
    c = s3_client(s3_endpoint)
    # paginated: a fast shipper stores more than one page (1,000 versions) in this test
    keys = [v["Key"] for page in c.get_paginator("list_object_versions").paginate(Bucket=locked_bucket,
                                                                               Prefix="sc/app/")
            for v in page.get("Versions", [])]
    assert len(keys) == len(set(keys)), "an object was written twice"
    cold_names = {k.rsplit("/", 1)[1].removesuffix(".zst") for k in keys}
    for e in ledger.entries(states=("evicted",)):
        assert e.segment in cold_names
    # every acknowledged event is in cold storage exactly once, with the acknowledged hash
    events, report = cold_events(s3_endpoint, locked_bucket, tmp_path / "cold" / "app")
    hot_left = [p for p in (sc.hot / "app").iterdir() if p.name.startswith("seg-")]
    assert report.ok or hot_left == [], report.findings[:3]
    by_seq = {e["seq"]: e for e in events}
    missing = [(s, h) for s, h, _n in acked if s not in by_seq or by_seq[s]["hash"] != h]
    if missing:
        # the rest can only be in hot segments still waiting to be shipped
        pending = {(r.seq, r.hash) for p in hot_left for r in _records(p)}
        assert all(m in pending for m in missing), missing[:5]
    for seq, h, n in acked:
        if seq in by_seq:
            assert by_seq[seq]["hash"] == h and by_seq[seq]["data"]["n"] == n
    ns = [e["data"]["n"] for e in events if e["data"].get("client") == "c1"]
    twice = {n for n, k in Counter(ns).items() if k > 1}
    assert twice <= unacked, "an event stored twice although its first send was acknowledged"


def _records(path: Path) -> list[Any]:
    from pipeline.record import RecordError, parse_record

    out = []
    for line in path.read_bytes().splitlines(keepends=True):
        try:
            out.append(parse_record(line))
        except RecordError:
            break
    return out


@pytest.mark.parametrize("bad", ["durability = \"fast\"", "segment_window = \"soon\""])
def test_bad_config_is_refused_with_the_key_named(tmp_path: Path, bad: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f"[hot]\ndir = \"{tmp_path}/hot\"\n{bad}\n[cold]\nurl = \"file:///tmp/x\"\n")
    p = subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", str(cfg)], capture_output=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert p.returncode == 2
    assert bad.split()[0].encode() in p.stderr


def test_checkpoints_signed_and_published_to_a_witness(tmp_path: Path, s3_endpoint: str,
                                                      locked_bucket: str) -> None:
    from pipeline.checkpoint import Signer, write_key_pair
    from pipeline.witness.directory import read_witness_checkpoints

    signer = Signer.generate("example.com/audit")
    key_path, pub_path = write_key_pair(signer, tmp_path / "keys")
    witness = tmp_path / "witness"
    sc = Sidecar(tmp_path, s3_endpoint, locked_bucket, hot={"hot_retention": "1h"})
    sc.sections["signing"] = {"key_file": str(key_path), "checkpoint_interval": "1s",
                              "origin": "example.com/audit/app", "witnesses": [f"file://{witness}"]}
    sc.write_config()
    sc.start()
    for batch in range(3):
        assert sc.post([{"batch": batch, "i": i} for i in range(30)])[0] == 200
        time.sleep(1.2)
    assert sc.stop() == 0
    notes = read_witness_checkpoints(witness, "example.com/audit/app")
    assert notes, "no checkpoint reached the witness"
    assert all(n.startswith(b"example.com/audit/app\n") for n in notes)
    # the same key signed the manifest index parts the drain wrote (docs/INDEX.md "Signature")
    from pipeline.ship.index import check_part_signature, read_part_meta, read_part_signature

    client = s3_client(s3_endpoint)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=locked_bucket, Prefix="sc/_index/").get("Contents", [])]
    assert keys, "the drain wrote no index part"
    for i, key in enumerate(keys):
        path = tmp_path / f"part-{i}.parquet"
        path.write_bytes(client.get_object(Bucket=locked_bucket, Key=key)["Body"].read())
        note = read_part_signature(str(path))
        assert note is not None, f"{key} is unsigned"
        meta, _rows = read_part_meta(str(path))
        check_part_signature(str(path), note, meta, [signer.verifier()], "example.com/audit/app")
    p = subprocess.run([sys.executable, "-m", "pipeline", "verify", "--hot", str(sc.hot), "--witness-dir",
                        str(witness), "--vkey", str(pub_path), "--origin", "example.com/audit/app", "--json"],
                       capture_output=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert p.returncode == 0, p.stdout.decode()[-2000:] + p.stderr.decode()[-2000:]


def test_sighup_and_sigterm_back_to_back_still_drain(tmp_path: Path, s3_endpoint: str, locked_bucket: str) -> None:
    # regression: the handlers used to set threading Events, which can deadlock when a
    # second signal arrives inside Event.wait(); the SIGTERM was then lost
    sc = Sidecar(tmp_path, s3_endpoint, locked_bucket)
    sc.start()
    assert sc.proc is not None
    time.sleep(0.5)
    sc.proc.send_signal(signal.SIGHUP)
    assert sc.stop(signal.SIGTERM, timeout=30) == 0
