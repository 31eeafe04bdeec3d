"""[source.postgres] in pipeline.toml and PIPELINE_SOURCE_POSTGRES_* (no database needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config


def _load(tmp_path: Path, body: str, env: dict[str, str] | None = None) -> object:
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(f'[hot]\ndir = "{tmp_path / "hot"}"\n' + body)
    return load_config(cfg, env or {})


def test_defaults_file_and_environment(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '[source.postgres]\ndsn = "host=db dbname=app user=audit_tail"\ntable = "logins"\n',
                {"PIPELINE_SOURCE_POSTGRES_POLL_INTERVAL": "1s"})
    pg = cfg.postgres  # type: ignore[attr-defined]
    assert pg.dsn == "host=db dbname=app user=audit_tail" and pg.table == "logins" and pg.schema == "audit"
    assert pg.poll_interval == 1.0 and pg.batch_rows == 10000 and pg.check_interval == 10.0
    settings = pg.settings()
    assert settings.slot_name == "audit_logins_chain" and settings.publication_name == "audit_logins_chain"
    assert cfg.origin("source.postgres.poll_interval") == "PIPELINE_SOURCE_POSTGRES_POLL_INTERVAL"  # type: ignore[attr-defined]
    shown = cfg.redacted_dict()["source.postgres"]  # type: ignore[attr-defined]
    assert shown["poll_interval"] == "1s" and shown["table"] == "logins"


def test_unset_means_no_source(tmp_path: Path) -> None:
    assert _load(tmp_path, "").postgres.dsn is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(("body", "env", "message"), [
    ('[source.postgres]\ndsn = "host=db password=hunter2"\n', {},
     "source.postgres.dsn: expected a libpq connection string or postgresql:// URI without a password"),
    ('[source.postgres]\ndsn = "postgresql://u:hunter2@db/app"\n', {}, "got a connection string with a password"),
    ("", {"PIPELINE_SOURCE_POSTGRES_DSN": "host=db?password=x"}, "PIPELINE_SOURCE_POSTGRES_DSN: expected"),
    ('[source.postgres]\ntable = "Events; DROP"\n', {}, "source.postgres.table: expected a PostgreSQL name"),
    ('[source.kafka]\nbrokers = "x"\n', {}, "[source.kafka]: unknown source; expected one of [source.postgres]"),
    ('[source.postgres]\ntabel = "x"\n', {}, 'source.postgres.tabel: unknown key (did you mean "table"?)'),
    ("", {"PIPELINE_SOURCE_POSTGRES_TABL": "x"}, 'did you mean "PIPELINE_SOURCE_POSTGRES_TABLE"?'),
    ('[source.postgres]\nbatch_rows = 5\n', {}, "source.postgres.batch_rows: expected an integer from 100"),
])
def test_bad_settings_are_named(tmp_path: Path, body: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, body, env)
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)
