"""One sanitiser, owned by the log, on every path into it (issue 14): a custom rule
(``extra_keys = ["patient_mrn"]`` and a custom value pattern) redacts through ``append``
(the C lane and the Python path), ``append_many``, ingest over HTTP and the Unix socket
(the server's public behaviour, with no sanitiser passed to it), the logging handler
(both modes), and ``pipeline append --config``; and a live ``reconfigure`` (SIGHUP)
reaches the C fast path's cached verdicts."""

from __future__ import annotations

import http.client
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.hot.writer import HotLog
from pipeline.ingest import AuditLogHandler, IngestServer
from pipeline.sanitise import Rules, Sanitiser
from tests.hotutil import records, without_sender
from tests.netutil import free_port

REPO = Path(__file__).resolve().parent.parent
STREAM = "app"
RULES = Rules(extra_keys=("patient_mrn",), value_patterns=(("ward-code", r"WARD-(?P<secret>\d{4})"),))
MRN, WARD = "MRN0042917", "WARD-7731"


def custom() -> Sanitiser:
    return Sanitiser(rules=RULES)


@pytest.fixture
def hotlog(hot_dir: Path) -> Iterator[HotLog]:
    log = HotLog(hot_dir, STREAM, durability="group", heartbeat_interval=0, segment_window=0, sanitiser=custom())
    yield log
    log.close()


def stored(hot_dir: Path) -> list[dict[str, Any]]:
    return [without_sender(r.data, required=False) for r in records(hot_dir / STREAM) if r.kind == "event"]


def assert_redacted(events: list[dict[str, Any]], hot_dir: Path) -> None:
    blob = b"".join(p.read_bytes() for p in (hot_dir / STREAM).glob("seg-*.jsonl"))
    assert MRN.encode() not in blob and b"7731" not in blob
    for ev in events:
        flat = orjson.dumps(ev).decode()
        if '"patient_mrn":' in flat:
            assert '"patient_mrn":"[REDACTED:secret-key]"' in flat
        if "WARD-" in flat:
            assert "WARD-[REDACTED:ward-code]" in flat


def test_log_owns_its_sanitiser(hotlog: HotLog) -> None:
    assert hotlog.sanitiser.rules == RULES
    with pytest.raises(AttributeError):
        hotlog.sanitiser = custom()  # type: ignore[misc]


def test_append_both_lanes(hot_dir: Path, hotlog: HotLog) -> None:
    # a clean event first: its key set is then cached clean, and the C lane takes the common case
    hotlog.append({"patient": "p1", "n": 1})
    hotlog.append({"patient": "p1", "n": 2})
    hotlog.append({"patient_mrn": MRN, "n": 3})
    hotlog.append({"note": f"moved to {WARD}", "n": 4})
    hotlog.append({"deep": {"list": [{"PatientMRN": MRN}]}})
    hotlog.sync()
    evs = stored(hot_dir)
    assert evs[2] == {"patient_mrn": "[REDACTED:secret-key]", "n": 3}
    assert evs[3] == {"note": "moved to WARD-[REDACTED:ward-code]", "n": 4}
    assert evs[4] == {"deep": {"list": [{"PatientMRN": "[REDACTED:secret-key]"}]}}
    assert_redacted(evs, hot_dir)
    assert hotlog.sanitiser.counts.snapshot() == {"secret-key": 2, "ward-code": 1}


def test_append_many(hot_dir: Path, hotlog: HotLog) -> None:
    hotlog.append_many([{"a": 1}, {"patient_mrn": MRN}, {"msg": f"patient_mrn={MRN} at {WARD}"}])
    hotlog.sync()
    evs = stored(hot_dir)
    assert evs[1] == {"patient_mrn": "[REDACTED:secret-key]"}
    assert evs[2] == {"msg": "patient_mrn=[REDACTED:kv-secret] at WARD-[REDACTED:ward-code]"}
    assert_redacted(evs, hot_dir)


def _post(port: int, body: bytes) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/x-ndjson"})
        resp = conn.getresponse()
        assert resp.status == 200
        doc: dict[str, Any] = orjson.loads(resp.read())
        return doc
    finally:
        conn.close()


def _socket(path: Path, body: bytes, n: int) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(body)
        buf = b""
        while buf.count(b"\n") < n:
            chunk = s.recv(65536)
            assert chunk, "closed before every answer"
            buf += chunk
    return [orjson.loads(x) for x in buf.splitlines()]


def test_ingest_http_and_socket_use_the_logs_sanitiser(hot_dir: Path, hotlog: HotLog, tmp_path: Path) -> None:
    path = tmp_path / "ingest.sock"
    port = free_port()
    lines = [{"patient_mrn": MRN, "via": "x"}, {"note": f"bed in {WARD}"}, {"ok": 1}]
    body = b"".join(orjson.dumps(x) + b"\n" for x in lines)
    with IngestServer(hotlog, socket_path=path, http_listen=("127.0.0.1", port)):  # no sanitiser passed
        doc = _post(port, body)
        assert doc["accepted"] == 3
        answers = _socket(path, body, 3)
        assert all(a["ok"] for a in answers)
    hotlog.sync()
    evs = stored(hot_dir)
    assert len(evs) == 6
    assert evs[0] == evs[3] == {"patient_mrn": "[REDACTED:secret-key]", "via": "x"}
    assert evs[1] == evs[4] == {"note": "bed in WARD-[REDACTED:ward-code]"}
    assert_redacted(evs, hot_dir)


@pytest.mark.parametrize("mode", ["direct", "socket"])
def test_logging_handler(hot_dir: Path, hotlog: HotLog, tmp_path: Path, mode: str) -> None:
    path = tmp_path / "ingest.sock"
    srv = IngestServer(hotlog, socket_path=path).start() if mode == "socket" else None
    handler = (AuditLogHandler(log=hotlog, raise_on_error=True) if mode == "direct"
               else AuditLogHandler(socket_path=path, raise_on_error=True))
    logger = logging.getLogger(f"redaction.{mode}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("admitted to %s", WARD, extra={"audit": {"patient_mrn": MRN}})
    finally:
        handler.close()
        if srv is not None:
            srv.stop(5)
    hotlog.sync()
    evs = stored(hot_dir)
    assert evs[0]["audit"] == {"patient_mrn": "[REDACTED:secret-key]"}
    assert evs[0]["message"] == "admitted to WARD-[REDACTED:ward-code]"
    assert_redacted(evs, hot_dir)
    if mode == "direct":
        assert handler.sanitiser is hotlog.sanitiser
        with pytest.raises(ValueError, match="own sanitiser"):
            AuditLogHandler(log=hotlog, sanitiser=Sanitiser())


def test_cli_append_with_config(hot_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(f'[hot]\ndir = "{hot_dir}"\nstream = "{STREAM}"\n'
                   '[sanitise]\nextra_keys = ["patient_mrn"]\n'
                   '[sanitise.value_patterns]\nward-code = \'WARD-(?P<secret>\\d{4})\'\n')
    events = [{"patient_mrn": MRN}, {"note": f"to {WARD}"}, {"plain": True}]
    stdin = b"".join(orjson.dumps(e) + b"\n" for e in events)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "pipeline", "append", "--config", str(cfg)], input=stdin,
                       capture_output=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    assert orjson.loads(p.stdout)["accepted"] == 3
    evs = stored(hot_dir)
    assert evs[:2] == [{"patient_mrn": "[REDACTED:secret-key]"}, {"note": "to WARD-[REDACTED:ward-code]"}]
    assert_redacted(evs, hot_dir)
    # without --config the PIPELINE_SANITISE_* variables still apply
    p = subprocess.run([sys.executable, "-m", "pipeline", "append", "--hot", str(hot_dir), "--stream", STREAM],
                       input=b'{"bed_no": "12"}\n', capture_output=True, timeout=60,
                       env=dict(env, PIPELINE_SANITISE_EXTRA_KEYS="bed_no"))
    assert p.returncode == 0, p.stderr.decode()
    assert stored(hot_dir)[-1] == {"bed_no": "[REDACTED:secret-key]"}
    # a bad rule is refused with the key named, and nothing is written
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[hot]\ndir = "{hot_dir}"\n[sanitise]\ndisable = ["jwtt"]\n')
    p = subprocess.run([sys.executable, "-m", "pipeline", "append", "--config", str(bad)], input=stdin,
                       capture_output=True, env=env, timeout=60)
    assert p.returncode == 2, (p.returncode, p.stderr.decode())
    assert b"sanitise.disable" in p.stderr and b'did you mean "jwt"' in p.stderr, p.stderr.decode()


def test_reconfigure_reaches_the_fast_path(hot_dir: Path, hotlog: HotLog) -> None:
    for _ in range(3):  # the key set {"ward"} is now cached clean; the C lane takes it
        hotlog.append({"ward": "east"})
    hotlog.sanitiser.reconfigure(Rules(extra_keys=("patient_mrn", "ward")))
    hotlog.append({"ward": "east"})
    hotlog.append_many([{"ward": "west"}])
    hotlog.sync()
    evs = stored(hot_dir)
    assert evs[:3] == [{"ward": "east"}] * 3
    assert evs[3:] == [{"ward": "[REDACTED:secret-key]"}] * 2
    # the old custom value pattern is gone with the old rules
    assert orjson.loads(hotlog.sanitiser.prepare({"n": WARD})) == {"n": WARD}


# The shapes issue 14 reports as stored verbatim through the sidecar's ingest: each must
# now arrive redacted, with the secret part nowhere in the segment.
ISSUE_14_SHAPES = [
    ({"msg": "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl issued"}, "c2lnbmF0dXJlLXZhbHVl"),
    ({"jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl"}, "c2lnbmF0dXJlLXZhbHVl"),
    ({"cmd": "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}, "bPxRfiCYEXAMPLEKEY"),
    ({"aws_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}, "bPxRfiCYEXAMPLEKEY"),
    ({"dsn": "postgres://app:Pw-7d1e@db:5432/orders"}, "Pw-7d1e"),
    ({"url": "https://api.example.com/login?user=bob&password=Pw-7d1e&x=1"}, "Pw-7d1e"),
    ({"pwd": "Pw-7d1e"}, "Pw-7d1e"), ({"pass": "Pw-7d1e"}, "Pw-7d1e"), ({"passcode": "Pw-7d1e"}, "Pw-7d1e"),
    ({"private-key": "Pw-7d1e"}, "Pw-7d1e"), ({"sessionid": "Pw-7d1e"}, "Pw-7d1e"),
    ({"session-id": "Pw-7d1e"}, "Pw-7d1e"), ({"ssn": "078-05-1120"}, "078-05-1120"),
    ({"gh": "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"}, "a1B2c3D4e5F6g7H8i9J0"),
    ({"slack": "xoxb-123456789012-123456789012-a1B2c3D4e5F6g7H8i9J0k1L2"}, "a1B2c3D4e5F6g7H8i9J0"),
    ({"stripe": "sk_live_a1B2c3D4e5F6g7H8i9J0k1L2"}, "a1B2c3D4e5F6g7H8i9J0"),
    ({"card": "4111.1111.1111.1111"}, "4111.1111.1111.1111"), ({"amount": 4111111111111111.0}, "4111111111111111"),
    ({"ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8": True}, "a1B2c3D4e5F6g7H8i9J0"),
    ({"p\u0430ssword": "Pw-7d1e"}, "Pw-7d1e"), ({"pass\u200bword": "Pw-7d1e"}, "Pw-7d1e"),
    ({"message": "refund 1 issued password=hunter2"}, "hunter2"),
]


def test_issue_14_shapes_through_ingest(hot_dir: Path, tmp_path: Path) -> None:
    log = HotLog(hot_dir, STREAM, durability="group", heartbeat_interval=0, segment_window=0)  # built-in rules
    port = free_port()
    try:
        with IngestServer(log, http_listen=("127.0.0.1", port)):
            doc = _post(port, b"".join(orjson.dumps(e) + b"\n" for e, _ in ISSUE_14_SHAPES))
            assert doc["accepted"] == len(ISSUE_14_SHAPES)
        log.sync()
    finally:
        log.close()
    blob = b"".join(p.read_bytes() for p in (hot_dir / STREAM).glob("seg-*.jsonl"))
    leaked = [secret for _e, secret in ISSUE_14_SHAPES if secret.encode() in blob]
    assert not leaked
    assert len(stored(hot_dir)) == len(ISSUE_14_SHAPES)
    assert all(b"[REDACTED:" in orjson.dumps(ev) for ev in stored(hot_dir))
