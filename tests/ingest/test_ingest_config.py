"""Unsafe ingest settings refuse to start, one line naming each key (issue 13), and
``pipeline run --check`` finds all of them at once."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.hot.writer import HotLog
from pipeline.ingest.server import IngestServer
from tests.hotutil import pipeline_cli


def problems_of(tmp_path: Path, env: dict[str, str]) -> list[str]:
    base = {"PIPELINE_HOT_DIR": str(tmp_path / "hot"), "PIPELINE_COLD_URL": f"file://{tmp_path}/cold"}
    try:
        load_config(None, {**base, **env})
    except ConfigError as exc:
        return list(exc.problems)
    return []


def token(tmp_path: Path, mode: int) -> Path:
    p = tmp_path / f"token-{mode:o}"
    p.write_text("s3cret\n")
    p.chmod(mode)
    return p


def test_network_listener_needs_a_token(tmp_path: Path) -> None:
    # issue 13: authentication (a token); issue 17: TLS too, unless plaintext is allowed by name
    for host in ("0.0.0.0", "*", "[::]"):
        problems = problems_of(tmp_path, {"PIPELINE_INGEST_HTTP": f"{host}:8087"})
        assert len(problems) == 2 and all(p.startswith("PIPELINE_INGEST_HTTP: a listener on ") for p in problems)
        assert any("reachable from the network" in p and "ingest.token_file" in p for p in problems), problems
        assert any("without TLS" in p and "ingest.allow_plaintext = true" in p for p in problems), problems
        tok = str(token(tmp_path, 0o600))
        only_tls = problems_of(tmp_path, {"PIPELINE_INGEST_HTTP": f"{host}:8087", "PIPELINE_INGEST_TOKEN_FILE": tok})
        assert len(only_tls) == 1 and "without TLS" in only_tls[0], only_tls
        assert problems_of(tmp_path, {"PIPELINE_INGEST_HTTP": f"{host}:8087", "PIPELINE_INGEST_TOKEN_FILE": tok,
                                      "PIPELINE_INGEST_ALLOW_PLAINTEXT": "true"}) == []
    for loopback in ("127.0.0.1:8087", "[::1]:8087", "localhost:8087"):
        assert problems_of(tmp_path, {"PIPELINE_INGEST_HTTP": loopback}) == []


def test_socket_and_token_accessible_by_others_refused(tmp_path: Path) -> None:
    sock = str(tmp_path / "ingest.sock")
    for mode in ("0666", "0662", "0604"):
        problems = problems_of(tmp_path, {"PIPELINE_INGEST_SOCKET": sock, "PIPELINE_INGEST_SOCKET_MODE": mode})
        assert problems == [f'PIPELINE_INGEST_SOCKET_MODE: expected no access for others (like "0660" or "0600"), '
                            f'got "{mode}": any local user could write events']
    for ok in ("0660", "0600", "0640"):
        assert problems_of(tmp_path, {"PIPELINE_INGEST_SOCKET": sock, "PIPELINE_INGEST_SOCKET_MODE": ok}) == []
    for bits in (0o644, 0o606, 0o602):
        problems = problems_of(tmp_path, {"PIPELINE_INGEST_TOKEN_FILE": str(token(tmp_path, bits))})
        assert len(problems) == 1 and problems[0].startswith("PIPELINE_INGEST_TOKEN_FILE: expected a file not "
                                                             "accessible by others"), problems
        assert f"mode {bits:04o}" in problems[0]
    for fine in (0o600, 0o640, 0o440):  # group access is how Kubernetes shares a Secret between containers
        assert problems_of(tmp_path, {"PIPELINE_INGEST_TOKEN_FILE": str(token(tmp_path, fine))}) == []


def test_addresses_that_cannot_be_bound(tmp_path: Path) -> None:
    for bad in ("no-such-host.invalid:8087", "192.0.2.1:8087"):  # unresolvable; TEST-NET-1, not ours
        problems = problems_of(tmp_path, {"PIPELINE_INGEST_HTTP": bad})
        assert len(problems) == 1 and problems[0].startswith("PIPELINE_INGEST_HTTP: expected an address"), problems


def test_run_check_reports_every_unsafe_setting(tmp_path: Path) -> None:
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(f"""
[hot]
dir = "{tmp_path / 'hot'}"
[cold]
url = "file://{tmp_path / 'cold'}"
[ingest]
socket = "{tmp_path / 'ingest.sock'}"
socket_mode = "0666"
http = "0.0.0.0:8087"
""")
    out = pipeline_cli("run", "--config", str(cfg), "--check")
    assert out.returncode == 2
    lines = [ln.strip() for ln in out.stderr.splitlines()]
    assert any(ln.startswith("ingest.socket_mode: expected no access for others") for ln in lines), out.stderr
    assert any(ln.startswith("ingest.http: a listener on 0.0.0.0 is reachable from the network") for ln in lines)
    assert any(ln.startswith("ingest.http: a listener on 0.0.0.0 without TLS") and "ingest.allow_plaintext" in ln
               for ln in lines), out.stderr
    # the same file with the problems fixed passes the check
    tok = token(tmp_path, 0o600)
    cfg.write_text(cfg.read_text().replace('"0666"', '"0660"') + f'token_file = "{tok}"\nallow_plaintext = true\n')
    out = pipeline_cli("run", "--config", str(cfg), "--check")
    assert out.returncode == 0, out.stderr


def test_bind_failure_names_the_key(hot_dir: Path, tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    log = HotLog(hot_dir, "app", heartbeat_interval=0, segment_window=0)
    try:
        with pytest.raises(OSError, match=rf"^\[Errno 98\] ingest\.http: cannot listen on 127\.0\.0\.1:{port}: "):
            IngestServer(log, http_listen=f"127.0.0.1:{port}").start()
        regular = tmp_path / "not-a-socket"
        regular.write_text("keep")
        with pytest.raises(FileExistsError, match=r"ingest\.socket: cannot listen on "):
            IngestServer(log, socket_path=regular).start()
    finally:
        taken.close()
        log.close()
