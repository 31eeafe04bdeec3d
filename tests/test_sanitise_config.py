"""[sanitise] in pipeline.toml and PIPELINE_SANITISE_* (validated, every problem named), and
the `pipeline sanitise --check` dry run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.sanitise import Rules

REPO = Path(__file__).resolve().parent.parent


def cfg(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "pipeline.toml"
    p.write_text(f'[hot]\ndir = "{tmp_path}"\n' + body)
    return p


def test_defaults_are_the_builtin_rules(tmp_path: Path) -> None:
    c = load_config(cfg(tmp_path, ""), {})
    assert c.sanitise.enabled and c.sanitise.rules() == Rules()
    assert c.redacted_dict()["sanitise"]["marker"] == "[REDACTED:{rule}]"


def test_file_and_environment(tmp_path: Path) -> None:
    path = cfg(tmp_path, '[sanitise]\nextra_keys = ["patient_mrn"]\nkeep = ["trace_token"]\n'
                         'marker = "<redacted:{rule}>"\n[sanitise.value_patterns]\nmrn = \'MRN-\\d{7}\'\n')
    c = load_config(path, {"PIPELINE_SANITISE_DISABLE": "card-number, jwt",
                           "PIPELINE_SANITISE_KEY_PATTERNS": '["^x_", "ssn,2"]'})
    r = c.sanitise.rules()
    assert r.extra_keys == ("patient_mrn",) and r.keep == ("trace_token",) and r.marker == "<redacted:{rule}>"
    assert r.value_patterns == (("mrn", r"MRN-\d{7}"),) and r.disable == ("card-number", "jwt")
    assert r.key_patterns == ("^x_", "ssn,2")
    assert c.origin("sanitise.disable") == "PIPELINE_SANITISE_DISABLE"
    s = c.sanitise.sanitiser(c.ingest.max_event_bytes)
    out = orjson.loads(s.prepare({"patient_mrn": 1, "n": "MRN-1234567", "trace_token": "t", "x_a": 2,
                                  "c": "4111111111111111"}))
    assert out == {"patient_mrn": "<redacted:secret-key>", "n": "<redacted:mrn>", "trace_token": "t",
                   "x_a": "<redacted:secret-key>", "c": "4111111111111111"}
    c = load_config(path, {"PIPELINE_SANITISE_VALUE_PATTERNS": '{"ward": "WARD-[0-9]+"}',
                           "PIPELINE_SANITISE_ENABLED": "off"})
    assert c.sanitise.value_patterns == (("ward", "WARD-[0-9]+"),) and not c.sanitise.enabled


def test_every_problem_is_named(tmp_path: Path) -> None:
    path = cfg(tmp_path, '[sanitise]\nextra_keys = "password"\nkey_patterns = ["(unclosed"]\n'
                         'disable = ["card-numbr"]\nmarker = "***"\nkeepp = []\n'
                         '[sanitise.value_patterns]\njwt = "x"\n"Bad Name" = "y"\nempty = "a*"\n')
    with pytest.raises(ConfigError) as ei:
        load_config(path, {"PIPELINE_SANITISE_ENABLED": "maybe", "PIPELINE_SANITISE_VALUE_PATTERNS": "{not json"})
    text = str(ei.value)
    for expected in ('sanitise.keepp: unknown key (did you mean "keep"?)',
                     "PIPELINE_SANITISE_ENABLED: expected true or false",
                     "sanitise.extra_keys: expected a list of key names",
                     "sanitise.key_patterns: expected a list of regular expressions",
                     'did you mean "card-number"?',
                     "PIPELINE_SANITISE_VALUE_PATTERNS: expected a table",
                     "sanitise.marker: '***' must contain {rule}"):
        assert expected in text, text
    # value_patterns from the file (the environment's bad one replaced it above)
    with pytest.raises(ConfigError) as ei:
        load_config(path, {})
    text = str(ei.value)
    assert "rule name 'jwt' is a built-in rule" in text and "'Bad Name' must be lower-case" in text
    assert "value_patterns.empty: 'a*' matches the empty string" in text


def test_a_marker_that_would_be_redacted_again_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="would itself be redacted"):
        load_config(cfg(tmp_path, '[sanitise]\nmarker = "password={rule}"\n'), {})


def run_check(args: list[str], stdin: bytes = b"",
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "pipeline", "sanitise", *args], input=stdin, capture_output=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))


def test_check_dry_run(tmp_path: Path) -> None:
    sample = tmp_path / "sample.ndjson"
    sample.write_bytes(b'{"a":1}\n{"msg":"login password=hunter2 ok","patient_mrn":"MRN77"}\nnot json\n\n'
                       b'{"k":"ghp_abcdefghijklmnopqrstuvwxyz0123456789"}\n')
    p = run_check(["--check", str(sample)])
    assert p.returncode == 1, p.stderr
    out = p.stdout.decode()
    assert "line 2: would redact kv-secret" in out and "line 3: would be refused" in out
    assert "line 5: would redact github-token" in out and "line 1:" not in out
    assert "4 event(s): 2 would be redacted, 1 refused, 1 stored unchanged" in out
    assert "hunter2" not in out and "abcdefghijklmnop" not in out and "MRN77" in out  # not a rule yet
    conf = cfg(tmp_path, '[sanitise]\nextra_keys = ["patient_mrn"]\n')
    p = run_check(["--check", "-", "--config", str(conf), "--json"], stdin=sample.read_bytes())
    assert p.returncode == 1
    reports = [orjson.loads(x) for x in p.stdout.splitlines()]
    assert reports[0] == {"line": 2, "rules": {"kv-secret": 1, "secret-key": 1},
                          "stored": {"msg": "login password=[REDACTED:kv-secret] ok",
                                     "patient_mrn": "[REDACTED:secret-key]"}}
    assert reports[-1] == {"events": 4, "redacted": 2, "refused": 1,
                           "by_rule": {"github-token": 1, "kv-secret": 1, "secret-key": 1}}
    # the environment's rules apply without --config
    p = run_check(["--check", str(sample), "--json"], env={"PIPELINE_SANITISE_DISABLE": "github-token"})
    assert orjson.loads(p.stdout.splitlines()[-1])["by_rule"] == {"kv-secret": 1}
    clean = tmp_path / "clean.ndjson"
    clean.write_bytes(b'{"a":1}\n{"b":"passage"}\n')
    p = run_check(["--check", str(clean)])
    assert p.returncode == 0 and "2 event(s): 0 would be redacted" in p.stdout.decode()
    assert run_check(["--check", str(tmp_path / "missing")]).returncode == 2
    bad = cfg(tmp_path, '[sanitise]\ndisable = ["nope"]\n')
    p = run_check(["--check", str(clean), "--config", str(bad)])
    assert p.returncode == 2 and b"sanitise.disable" in p.stderr
