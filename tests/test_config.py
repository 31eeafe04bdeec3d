"""Configuration: TOML + PIPELINE_* environment, validation messages, redaction."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline.config import (
    Config,
    ConfigError,
    load_config,
    parse_duration,
    parse_listen,
)

FULL = """
[hot]
dir = "{hot}"
stream = "shop-0"
durability = "fsync"
segment_window = "30s"
segment_max_bytes = 1048576
heartbeat_interval = "0s"
immutable = "off"
hot_retention = "2h"
high_water_percent = 90

[cold]
url = "s3://bucket/prefix?region=eu-west-1&endpoint_url=http://127.0.0.1:5000"
retention_days = 30
allow_unlocked = true
compression = "none"
compression_level = 9
storage_class = "STANDARD_IA"
sse = "aws:kms"
kms_key_id = "arn:aws:kms:eu-west-1:123:key/abc"
upload_concurrency = 8
legal_hold = true

[ingest]
socket = "{sock}"
socket_mode = "0600"
http = "127.0.0.1:8087"
token_file = "{token}"
max_request_bytes = 2048
max_event_bytes = 1024

[ops]
listen = "[::1]:9000"
shutdown_grace = "1500ms"
log_format = "text"

[signing]
checkpoint_interval = "1d"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pipeline.toml"
    p.write_text(text)
    return p


def problems_of(path: Path | None, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_config(path, env or {})
    return list(ei.value.problems)


def test_defaults_with_only_required_key(tmp_path: Path) -> None:
    cfg = load_config(None, {"PIPELINE_HOT_DIR": str(tmp_path)})
    assert cfg.hot.dir == tmp_path
    assert cfg.hot.stream == "app"
    assert cfg.hot.durability == "group"
    assert cfg.hot.segment_window == 300.0
    assert cfg.hot.segment_max_bytes == 67108864
    assert cfg.hot.heartbeat_interval == 60.0
    assert cfg.hot.immutable == "auto"
    assert cfg.hot.hot_retention == 86400.0
    assert cfg.hot.high_water_percent == 85
    assert cfg.cold.url is None
    assert cfg.cold.retention_days == 2555
    assert cfg.cold.allow_unlocked is False
    assert (cfg.cold.compression, cfg.cold.compression_level, cfg.cold.compression_threads) == ("zstd", 1, 0)
    assert cfg.cold.storage_class is None and cfg.cold.kms_key_id is None
    assert cfg.cold.sse is None  # no header: the bucket default applies
    assert cfg.cold.upload_concurrency == 4 and cfg.cold.legal_hold is False
    assert cfg.ingest.socket is None and cfg.ingest.http is None and cfg.ingest.token_file is None
    assert cfg.ingest.socket_mode == 0o660
    assert (cfg.ingest.max_request_bytes, cfg.ingest.max_event_bytes) == (10485760, 1048576)
    assert cfg.ops.listen == "127.0.0.1:9464" and cfg.ops.address == ("127.0.0.1", 9464)
    assert cfg.ops.shutdown_grace == 60.0 and cfg.ops.log_format == "json"
    assert cfg.signing.key_file is None and cfg.signing.checkpoint_interval == 60.0
    assert cfg.origin("hot.dir") == "PIPELINE_HOT_DIR"
    assert cfg.origin("hot.stream") == "default"


def test_full_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    token.chmod(0o600)
    path = write(tmp_path, FULL.format(hot=tmp_path / "hot", sock=tmp_path / "ingest.sock", token=token))
    cfg = load_config(path, {})
    assert cfg.source == path
    assert cfg.hot.stream == "shop-0" and cfg.hot.durability == "fsync"
    assert cfg.hot.segment_window == 30.0 and cfg.hot.heartbeat_interval == 0.0
    assert cfg.hot.hot_retention == 7200.0 and cfg.hot.high_water_percent == 90
    assert cfg.cold.url is not None and cfg.cold.url.startswith("s3://bucket/prefix")
    assert cfg.cold.sse == "aws:kms" and cfg.cold.legal_hold is True
    assert cfg.ingest.socket_mode == 0o600
    assert cfg.ingest.http_address == ("127.0.0.1", 8087)
    assert cfg.ingest.read_token() == "s3cr3t-token"
    assert cfg.ops.address == ("::1", 9000) and cfg.ops.shutdown_grace == 1.5
    assert cfg.signing.checkpoint_interval == 86400.0
    assert cfg.origin("cold.url") == "file"
    kwargs = cfg.hot.hotlog_kwargs()
    assert kwargs["durability"] == "fsync" and kwargs["immutable"] == "off"
    settings = cfg.cold.settings()
    assert settings.retention_days == 30 and settings.compression == "none" and settings.kms_key_id


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, f'[hot]\ndir = "{tmp_path}"\ndurability = "fsync"\nhigh_water_percent = 50\n')
    env = {
        "PIPELINE_HOT_DURABILITY": "os",
        "PIPELINE_HOT_HIGH_WATER_PERCENT": "70",
        "PIPELINE_COLD_ALLOW_UNLOCKED": "true",
        "PIPELINE_COLD_STORAGE_CLASS": "GLACIER_IR",
        "PIPELINE_COLD_SSE": "none",
        "PIPELINE_INGEST_SOCKET_MODE": "0600",
        "PIPELINE_SIGNING_KEY": "never-parsed-as-config",  # key material for pipeline.checkpoint
        "PIPELINE_NO_NATIVE": "1",  # the accelerator switch (pipeline._accel), not configuration
        "HOME": "/root",
    }
    cfg = load_config(path, env)
    assert cfg.hot.durability == "os"
    assert cfg.hot.high_water_percent == 70
    assert cfg.cold.allow_unlocked is True
    assert cfg.cold.storage_class == "GLACIER_IR"
    assert cfg.cold.sse is None
    assert cfg.ingest.socket_mode == 0o600
    assert cfg.origin("hot.durability") == "PIPELINE_HOT_DURABILITY"


def test_messages_name_key_and_expected_value(tmp_path: Path) -> None:
    path = write(tmp_path, f'[hot]\ndir = "{tmp_path}"\ndurability = "fast"\n')
    problems = problems_of(path, {"PIPELINE_HOT_SEGMENT_WINDOW": "abc"})
    assert 'hot.durability: expected one of fsync, group, os, got "fast"' in problems
    assert any(p.startswith('PIPELINE_HOT_SEGMENT_WINDOW: expected a duration like 30s, 5m, 1h')
               and p.endswith('got "abc"') for p in problems)
    assert len(problems) == 2


def test_every_problem_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, """
[hot]
durability = "fast"
segmnt_window = "5m"
high_water_percent = 100
segment_max_bytes = true

[cold]
url = "ftp://example.com/x"
compression = "gzip"
sse = "AES256"
kms_key_id = "k"

[ingest]
socket_mode = "777x"
max_event_bytes = 4096
max_request_bytes = 2048

[ops]
listen = "localhost"

[colld]
url = "s3://b"
""")
    env = {"PIPELINE_HOT_STREM": "x", "PIPELINE_OPS_SHUTDOWN_GRACE": "60", "PIPELINE_HOTT_DIR": "/x"}
    with pytest.raises(ConfigError) as ei:
        load_config(path, env)
    problems = ei.value.problems
    text = "\n".join(problems)
    assert "hot.dir: required" in text and "PIPELINE_HOT_DIR" in text
    assert 'hot.durability: expected one of fsync, group, os, got "fast"' in problems
    assert 'hot.segmnt_window: unknown key (did you mean "segment_window"?)' in problems
    assert "hot.high_water_percent: expected an integer from 1 to 99, got 100" in problems
    assert "hot.segment_max_bytes: expected an integer of at least 4096, got true" in problems
    assert any(p.startswith("cold.url: expected a URL like s3://") for p in problems)
    assert 'cold.compression: expected one of zstd, none, got "gzip"' in problems
    assert any(p.startswith('cold.kms_key_id: needs cold.sse = "aws:kms"') for p in problems)
    assert 'ingest.socket_mode: expected an octal permission string like "0660", got "777x"' in problems
    assert "ingest.max_event_bytes: expected at most ingest.max_request_bytes (2048), got 4096" in problems
    assert any(p.startswith("ops.listen: expected host:port") for p in problems)
    assert any(p.startswith('[colld]: unknown section (did you mean "cold"?)') for p in problems)
    assert 'PIPELINE_HOT_STREM: unknown key (did you mean "PIPELINE_HOT_STREAM"?)' in problems
    assert any(p.startswith("PIPELINE_OPS_SHUTDOWN_GRACE: expected a duration") and p.endswith('got "60"')
               for p in problems)
    assert any(p.startswith("PIPELINE_HOTT_DIR: unknown section") and "PIPELINE_HOT_" in p for p in problems)
    assert len(problems) == 15, text
    diag = ei.value.diagnostics()
    assert "15 problems" in diag and all(p in diag for p in problems)
    assert isinstance(ei.value, ValueError)


def test_file_errors(tmp_path: Path) -> None:
    assert "configuration file not found" in problems_of(tmp_path / "missing.toml")[0]
    bad = write(tmp_path, "[hot\ndir = 1\n")
    assert "not valid TOML" in problems_of(bad)[0]
    top = write(tmp_path, 'hot = "x"\n')
    assert problems_of(top)[0] == 'hot: expected a [hot] table, got "x"'


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("2d", 172800.0), ("1.5s", 1.5), ("0s", 0.0),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "-1s", "1w", "abc", "1h30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


def test_listen_parsing() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::]:9464") == ("::", 9464)
    for bad in ("127.0.0.1", ":80", "::1:80", "host:99999", "host:x"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_cold_urls(tmp_path: Path) -> None:
    base = {"PIPELINE_HOT_DIR": str(tmp_path)}
    for good in ("s3://b/p?region=us-east-1", "az://acct/container/prefix", "file:///var/cold"):
        assert load_config(None, {**base, "PIPELINE_COLD_URL": good}).cold.url == good
    for bad in ("s3:///nobucket", "file://host/x", "s3://b/p?secret=1", "az://acct"):
        problems = problems_of(None, {**base, "PIPELINE_COLD_URL": bad})
        assert problems[0].startswith("PIPELINE_COLD_URL: expected"), problems
    # credentials in the URL: refused, and not echoed back
    problems = problems_of(None, {**base, "PIPELINE_COLD_URL": "s3://AKIA:hunter2@bucket/p"})
    assert "hunter2" not in problems[0] and "got a URL with credentials" in problems[0]


def test_require(tmp_path: Path) -> None:
    cfg = load_config(None, {"PIPELINE_HOT_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"cold\.url: required here.*PIPELINE_COLD_URL"):
        cfg.require("cold.url")
    cfg2 = load_config(None, {"PIPELINE_HOT_DIR": str(tmp_path), "PIPELINE_COLD_URL": "file:///x"})
    cfg2.require("cold.url")


def test_files_checked_at_start(tmp_path: Path) -> None:
    env = {"PIPELINE_HOT_DIR": str(tmp_path), "PIPELINE_INGEST_TOKEN_FILE": str(tmp_path / "nope"),
           "PIPELINE_SIGNING_KEY_FILE": str(tmp_path), "PIPELINE_INGEST_SOCKET": str(tmp_path / "no" / "s.sock")}
    problems = problems_of(None, env)
    assert any(p.startswith("PIPELINE_INGEST_TOKEN_FILE: expected a readable file") for p in problems)
    assert any(p.startswith("PIPELINE_SIGNING_KEY_FILE: expected a regular file") for p in problems)
    assert any(p.startswith("PIPELINE_INGEST_SOCKET: expected a path in an existing directory") for p in problems)
    hot_file = tmp_path / "f"
    hot_file.write_text("")
    assert problems_of(None, {"PIPELINE_HOT_DIR": str(hot_file)})[0].startswith("PIPELINE_HOT_DIR: expected a dir")
    assert problems_of(None, {"PIPELINE_HOT_DIR": str(tmp_path), "PIPELINE_HOT_STREAM": "../x"})[0].startswith(
        "PIPELINE_HOT_STREAM: expected a stream name")


def test_frozen_and_redacted(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("very-secret-token-value")
    token.chmod(0o600)
    path = write(tmp_path, FULL.format(hot=tmp_path / "hot", sock=tmp_path / "s.sock", token=token))
    cfg: Config = load_config(path, {"PIPELINE_SIGNING_KEY": "ed25519-key-material"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.hot.stream = "other"  # type: ignore[misc]
    red = cfg.redacted_dict()
    dumped = json.dumps(red)  # plain data only
    assert "very-secret-token-value" not in dumped and "ed25519-key-material" not in dumped
    assert red["ingest"]["token"] == "<redacted>"
    assert red["ingest"]["token_file"] == str(token)
    assert red["ingest"]["socket_mode"] == "0600"
    assert red["hot"]["segment_window"] == "30s" and red["ops"]["shutdown_grace"] == "1500ms"
    assert "token" not in load_config(None, {"PIPELINE_HOT_DIR": str(tmp_path)}).redacted_dict()["ingest"]


def test_empty_token_file_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("  \n")
    token.chmod(0o600)
    cfg = load_config(None, {"PIPELINE_HOT_DIR": str(tmp_path), "PIPELINE_INGEST_TOKEN_FILE": str(token)})
    with pytest.raises(ConfigError, match="is empty"):
        cfg.ingest.read_token()
