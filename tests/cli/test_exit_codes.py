"""Exit codes mean one thing in every verb (issue 16): 0 done / all valid, 1 findings about the
data, 2 could not run.  The walk covers every verb the parser knows: a verb added without a row
here fails ``test_every_verb_is_walked``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.cli import build_parser
from pipeline.hot import attr
from pipeline.hot.segment import list_segments
from tests.cli.conftest import Tier, cli

Case = Callable[[Tier, Path], list[str]]


def _config(tier: Tier, tmp: Path) -> str:
    p = tmp / "c.toml"
    p.write_text(f'[hot]\ndir = "{tier.hot}"\nstream = "app"\n[cold]\nurl = "{tier.cold_url}"\n'
                 'allow_unlocked = true\n[ops]\nlisten = "127.0.0.1:0"\n')
    return str(p)


def _monitor_config(tier: Tier, tmp: Path) -> str:
    """One cycle of `pipeline monitor` on the tier (a webhook nobody listens on: with nothing
    found there is nothing to send)."""
    from tests.netutil import free_port

    (tmp / "hook.key").write_text("k")
    p = tmp / "monitor.toml"
    p.write_text(f'[monitor]\nstate_dir = "{tmp / "mstate"}"\ntrailing_delay = "0s"\n[hot]\ndir = "{tier.hot}"\n'
                 f'[webhook]\nurl = "http://127.0.0.1:{free_port()}/"\nsecret_file = "{tmp / "hook.key"}"\n')
    return str(p)


def _sample(tmp: Path, name: str, text: str) -> str:
    """A sample NDJSON file for `pipeline sanitise --check`."""
    path = tmp / name
    path.write_text(text)
    return str(path)


def _keys(tmp: Path) -> Path:
    d = tmp / "keys"
    if not d.exists():
        from pipeline.cli import main

        assert main(["keygen", "--name", "log", "--out", str(d)]) == 0
    return d


def _age_identity(tmp: Path) -> str:
    """An auditor's age identity (made by the real age-keygen)."""
    import subprocess

    path = tmp / "auditor.key"
    if not path.exists():
        subprocess.run(["age-keygen", "-o", str(path)], capture_output=True, check=True)
    return str(path)


# verb -> {exit code: argv builder}; code 1 only where a verb reports findings about the data.
# checkpoint, prove and verify-proof need a signed log: their 0 and 1 are walked end to end in
# tests/cli/test_proofs_cli.py::test_end_to_end (valid proof 0, altered proof 1, unreadable 2);
# ship --once: the rule in test_ship_once_exit_code_rule (quarantine itself: tests/ship); quickstart's 0 in
# tests/cli/test_quickstart.py.
WALK: dict[str, dict[int, Case]] = {
    "append": {0: lambda t, d: ["append", "--hot", str(t.hot), "--stream", "app"],
               2: lambda t, d: ["append", "--hot", str(t.hot / "app" / "LOCK"), "--stream", "app"]},
    "seal": {0: lambda t, d: ["seal", "--hot", str(t.hot), "--stream", "app"],
             2: lambda t, d: ["seal", "--hot", str(t.hot), "--stream", "nope"]},
    "status": {0: lambda t, d: ["status", "--hot", str(t.hot)],
               2: lambda t, d: ["status", "--hot", str(d / "typo")]},
    "verify": {0: lambda t, d: ["verify", "--hot", str(t.hot)],
               1: lambda t, d: ["verify", "--hot", str(_tamper_hot(t))],
               2: lambda t, d: ["verify", "--hot", str(d)]},
    "verify-tier": {0: lambda t, d: ["verify-tier", "--hot", str(t.hot), "--cold", t.cold_url, "--allow-unlocked"],
                    1: lambda t, d: ["verify-tier", "--hot", str(t.hot), "--cold", _tamper_cold(t),
                                     "--allow-unlocked"],
                    2: lambda t, d: ["verify-tier", "--hot", str(t.hot), "--cold", f"file://{d}/typo"]},
    "export": {0: lambda t, d: ["export", "--hot", str(t.hot)],
               1: lambda t, d: ["export", "--hot", str(_tamper_hot(t))],
               2: lambda t, d: ["export", "--cold", f"file://{d}/typo"]},
    "restore": {0: lambda t, d: ["restore", "--cold", t.cold_url, "--to", str(d / "restored")],
                1: lambda t, d: ["restore", "--cold", _tamper_cold(t), "--to", str(d / "restored")],
                2: lambda t, d: ["restore", "--cold", f"file://{d}/typo", "--to", str(d / "restored")]},
    "ship": {0: lambda t, d: ["ship", "--once", "--hot", str(t.hot), "--cold", t.cold_url, "--allow-unlocked"],
             2: lambda t, d: ["ship", "--once", "--hot", str(t.hot), "--cold", "ftp://host/p"]},  # pending: below
    "hold": {0: lambda t, d: ["hold", "--cold", t.cold_url, "--stream", "app", "--on", "--dry-run"],
             2: lambda t, d: ["hold", "--cold", t.cold_url, "--stream", "ap", "--on"]},
    "keygen": {0: lambda t, d: ["keygen", "--name", "x", "--out", str(d / "k")],
               2: lambda t, d: ["keygen", "--name", "bad name", "--out", str(d / "k2")]},
    "fss-setup": {0: lambda t, d: ["fss-setup", "--hot", str(t.hot), "--stream", "fresh"],
                  2: lambda t, d: ["fss-setup", "--hot", str(d / "typo"), "--stream", "app"]},
    "checkpoint": {2: lambda t, d: ["checkpoint", "--hot", str(t.hot), "--stream", "app"]},  # none stored yet
    "prove": {2: lambda t, d: ["prove", "--hot", str(t.hot), "--stream", "app", "--seq", "0"]},
    "verify-proof": {2: lambda t, d: ["verify-proof", "--vkey", str(_keys(d) / "log.pub"), str(d / "none.json")]},
    "witness": {2: lambda t, d: ["witness", "serve", "--dir", str(d / "w"), "--key", str(d / "missing.key"),
                                 "--trust", str(_keys(d) / "log.pub")]},
    "run": {0: lambda t, d: ["run", "--check", "--config", _config(t, d)],
            2: lambda t, d: ["run", "--config", str(d / "missing.toml")]},
    # decrypt and disclose on encrypted logs: tests/crypt (wrong identity 2, tampering 1, disclosure 0/1)
    "decrypt": {0: lambda t, d: ["decrypt", "--identity", _age_identity(d), "--hot", str(t.hot)],
                1: lambda t, d: ["decrypt", "--identity", _age_identity(d), "--hot", str(_tamper_hot(t))],
                2: lambda t, d: ["decrypt", "--identity", str(d / "missing.key"), "--hot", str(t.hot)]},
    "disclose": {2: lambda t, d: ["disclose", "--identity", _age_identity(d), "--hot", str(t.hot), "--stream", "app",
                                  "--seq", "0", "--no-proof"]},  # a clear event: nothing to disclose
    "quickstart": {2: lambda t, d: ["quickstart", "--dir", str(t.hot)]},  # not empty
    # exit 1 needs a PostgreSQL server: tests/pg (check, verify) walks it
    "pg": {0: lambda t, d: ["pg", "install", "--dsn", "host=db.invalid", "--print-sql"],
           2: lambda t, d: ["pg", "verify", "--dsn", "host=db.invalid", "--hot", str(d / "typo")]},
    "monitor": {0: lambda t, d: ["monitor", "--once", "--config", _monitor_config(t, d)],
                1: lambda t, d: ["monitor", "--once", "--config", _monitor_config(_tamper_tier(t), d)],
                2: lambda t, d: ["monitor", "--once", "--config", str(d / "missing.toml")]},
    "sanitise": {0: lambda t, d: ["sanitise", "--check", _sample(d, "clean.ndjson", '{"user":"alice"}\n')],
                 1: lambda t, d: ["sanitise", "--check", _sample(d, "secret.ndjson", '{"password":"hunter2"}\n')],
                 2: lambda t, d: ["sanitise", "--check", str(d / "missing.ndjson")]},
}


def _tamper_hot(t: Tier) -> Path:
    """A line that is not a record, appended to the active (append-only) segment."""
    active = list_segments(t.hot / "app")[-1]
    with open(active, "ab") as f:
        f.write(b'{"not":"a record"}\n')
    return t.hot


def _tamper_tier(t: Tier) -> Tier:
    _tamper_hot(t)
    return t


def _tamper_cold(t: Tier) -> str:
    """One byte of the stored object changed (the file store's immutable attribute cleared,
    as root can)."""
    root = Path(t.cold_url.removeprefix("file://"))
    obj = next(p for p in root.rglob("seg-*") if p.is_file() and ".meta" not in p.parts)
    attr.clear_protection(obj)
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    return t.cold_url


def test_every_verb_is_walked() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    assert sorted(sub.choices) == sorted(WALK)  # type: ignore[arg-type]


@pytest.mark.parametrize(("verb", "code"), [(v, c) for v in sorted(WALK) for c in sorted(WALK[v])])
def test_exit_code(verb: str, code: int, tier: Tier, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    argv = WALK[verb][code](tier, work)
    r = cli(*argv, stdin=b'{"x":1}\n' if verb == "append" else b"", capsys=capsys)
    assert r.code == code, (argv, r.out, r.err)
    assert "Traceback" not in r.err
    if code == 2:
        assert r.err.strip(), "a command that could not run says why"


@pytest.mark.parametrize("verb", sorted(WALK))
def test_usage_errors_exit_2(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    r = cli(verb, "--no-such-option", capsys=capsys)
    assert r.code == 2


def test_ship_once_with_a_segment_in_backoff_is_not_success(tier: Tier, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("seal", "--hot", str(tier.hot), "--stream", "app", capsys=capsys).code == 0
    r = cli("ship", "--once", "--hot", str(tier.hot), "--cold", "s3://bucket/p?endpoint_url=http://127.0.0.1:9",
            "--retry-max-seconds", "1s", capsys=capsys)
    assert r.code == 2
    assert "pending 1" in r.out
    assert "not shipped yet" in r.err
    r = cli("status", "--hot", str(tier.hot), capsys=capsys)
    assert r.code == 0
    assert "1 pending, 1 in backoff" in r.out and "last error" in r.out


def test_status_reports_shipping(tier: Tier, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    r = cli("status", "--hot", str(tier.hot), "--json", capsys=capsys)
    ship = json.loads(r.out)["shipping"]
    assert ship["confirmed"] == 1 and ship["pending"] == 0 and ship["in_backoff"] == 0
    assert ship["cold_lag_seconds"] == 0.0


def test_append_is_all_or_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hot = tmp_path / "hot"
    body = b'{"a":1}\n{"b":nul}\n{"c":3}\n'
    r = cli("append", "--hot", str(hot), "--stream", "app", stdin=body, capsys=capsys)
    assert r.code == 2
    assert "line 2" in r.err and "nothing was stored" in r.err
    assert "invalid literal" not in r.err and "expected 'null'" not in r.err  # no parser internals
    assert not hot.exists()
    # the fixed input, sent again whole, is stored once
    r = cli("append", "--hot", str(hot), "--stream", "app", stdin=body.replace(b"nul", b"null"), capsys=capsys)
    assert r.code == 0 and '"accepted":3' in r.out
    r = cli("verify", "--hot", str(hot), capsys=capsys)
    assert "3 records" in r.out or "  total: 1 segments, 3 records, OK" in r.out


def test_quickstart_refuses_what_it_cannot_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "hot").mkdir()
    assert cli("quickstart", "--dir", str(tmp_path / "used"), capsys=capsys).code == 2
    r = cli("quickstart", "--dir", str(tmp_path / "q"), "--stream", "bad/name", capsys=capsys)
    assert r.code == 2 and "invalid stream name" in r.err and not (tmp_path / "q").exists()
    assert cli("quickstart", "--events", "-5", capsys=capsys).code == 2
    assert cli("quickstart", "--events", "0", capsys=capsys).code == 2


def test_main_can_run_twice_in_one_process(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cold import retry

    cli("verify-tier", "--cold-only", "--cold", "file:///nonexistent", "--vkey", "/nonexistent",
        "--retry-max-seconds", "1s", capsys=capsys)
    assert retry._command_budget is None
    assert os.environ.get("PIPELINE_DEBUG") is None


def test_ship_once_exit_code_rule(capsys: pytest.CaptureFixture[str]) -> None:
    """Findings (a quarantined copy) win over work left pending; pending or failed is 2."""
    from pipeline.cli.ship import once_exit_code
    from pipeline.ship.shipper import ShipSummary

    assert once_exit_code(ShipSummary(confirmed=3), {}) == 0
    assert once_exit_code(ShipSummary(quarantined=1, pending=2, failed=1), {}) == 1
    assert once_exit_code(ShipSummary(pending=1), {"failing": [{"last_error": "timeout\nmore"}]}) == 2
    assert "last error: timeout" in capsys.readouterr().err
    assert once_exit_code(ShipSummary(failed=1), {}) == 2
