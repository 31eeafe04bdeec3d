"""The wrong-path audit (issue 16): every verb that takes a hot tier, a stream or a cold store,
pointed at the wrong kind of path (an empty directory, a file, the repository, a typo), must
not exit 0 (nothing was verified or done) and must create nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import Tier, cli, snapshot
from tests.hotutil import REPO

# verb -> argv builder for a hot directory (and stream); each refuses a path that is not a hot tier
HOT_VERBS: dict[str, Callable[[str, str], list[str]]] = {
    "verify": lambda hot, s: ["verify", "--hot", hot],
    "verify --stream": lambda hot, s: ["verify", "--hot", hot, "--stream", s],
    "status": lambda hot, s: ["status", "--hot", hot],
    "seal": lambda hot, s: ["seal", "--hot", hot, "--stream", s],
    "ship --once": lambda hot, s: ["ship", "--once", "--hot", hot, "--cold", "file:///nonexistent-cold",
                                   "--allow-unlocked"],
    "ship --stream": lambda hot, s: ["ship", "--once", "--hot", hot, "--stream", s, "--cold",
                                     "file:///nonexistent-cold", "--allow-unlocked"],
    "checkpoint": lambda hot, s: ["checkpoint", "--hot", hot, "--stream", s],
    "prove": lambda hot, s: ["prove", "--hot", hot, "--stream", s, "--seq", "0"],
    "export --hot": lambda hot, s: ["export", "--hot", hot],
    "verify-tier": lambda hot, s: ["verify-tier", "--hot", hot, "--cold", "file:///nonexistent-cold"],
    "verify-tier --stream": lambda hot, s: ["verify-tier", "--hot", hot, "--stream", s, "--cold",
                                            "file:///nonexistent-cold"],
}


def _wrong(kind: str, tmp_path: Path) -> Path:
    if kind == "empty dir":
        d = tmp_path / "empty"
        d.mkdir()
        return d
    if kind == "file":
        f = tmp_path / "a-file"
        f.write_text("not a hot tier\n")
        return f
    if kind == "repository":
        return REPO
    assert kind == "typo"
    return tmp_path / "hto"


@pytest.mark.parametrize("kind", ["empty dir", "file", "repository", "typo"])
@pytest.mark.parametrize("verb", sorted(HOT_VERBS))
def test_hot_verbs_refuse_a_path_that_is_not_a_hot_tier(verb: str, kind: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = _wrong(kind, tmp_path)
    watched = tmp_path if kind != "repository" else REPO
    before = snapshot(watched) if kind != "repository" else set(p.name for p in REPO.iterdir())
    r = cli(*HOT_VERBS[verb](str(path), "app"), capsys=capsys)
    assert r.code == 2, (verb, kind, r.code, r.out, r.err)
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("pipeline: "), lines
    assert "Traceback" not in r.err
    after = snapshot(watched) if kind != "repository" else set(p.name for p in REPO.iterdir())
    assert after == before, (verb, kind, after ^ before)
    assert not Path("/nonexistent-cold").exists()


@pytest.mark.parametrize("verb", sorted(v for v in HOT_VERBS if "stream" in v or v in (
    "seal", "checkpoint", "prove")))
def test_a_mistyped_stream_is_refused_and_not_created(verb: str, tier: Tier,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(tier.hot)
    argv = HOT_VERBS[verb](str(tier.hot), "ap")
    argv = [tier.cold_url if a == "file:///nonexistent-cold" else a for a in argv]
    r = cli(*argv, capsys=capsys)
    assert r.code == 2, (verb, r.out, r.err)
    if verb.startswith("verify-tier"):  # a neighbour's stream may be named: the cold objects decide
        assert "found no segment of stream 'ap'" in r.err and "nothing was verified" in r.err
    else:
        assert "stream 'ap' does not exist" in r.err and "app" in r.err  # names the streams that do
    assert snapshot(tier.hot) == before
    assert not (tier.hot / "ap").exists()


def test_verify_skips_directories_that_are_not_streams(tier: Tier, capsys: pytest.CaptureFixture[str]) -> None:
    (tier.hot / "lost+found").mkdir()
    (tier.hot / "notes").mkdir()
    r = cli("verify", "--hot", str(tier.hot), capsys=capsys)
    assert r.code == 0, r.err
    assert "stream app" in r.out and "lost+found" not in r.out and "notes" not in r.out


def test_seal_and_ship_of_a_typo_create_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's cron job: a typo in --hot used to create a phantom tier that verify called OK."""
    for argv in (["seal", "--hot", str(tmp_path / "hto"), "--stream", "app"],
                 ["ship", "--once", "--hot", str(tmp_path / "hto"), "--cold", f"file://{tmp_path}/cold",
                  "--allow-unlocked"]):
        assert cli(*argv, capsys=capsys).code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_verify_tier_names_the_prefix_the_ledger_used(tier: Tier, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # ship again into a store with a prefix, then point verify-tier at a mistyped prefix:
    # the ledger's keys say where the objects went; a typo is not evidence destruction
    hot = tmp_path / "hot2"
    cold = tmp_path / "cold2"
    cold.mkdir()
    assert cli("append", "--hot", str(hot), "--stream", "app", "--seal", stdin=b'{"a":1}\n', capsys=capsys).code == 0
    from pipeline.ship.ledger import open_ledger_readonly

    r = cli("ship", "--once", "--hot", str(hot), "--cold", f"file://{cold}", "--allow-unlocked", capsys=capsys)
    assert r.code == 0, r.err
    ledger = open_ledger_readonly(hot)
    assert ledger is not None
    key = ledger.entries()[0].cold_key
    ledger.close()
    assert key and key.startswith("app/")
    # a prefix the ledger never used: simulate the typo by rewriting the recorded keys' prefix
    import sqlite3

    db = sqlite3.connect(hot / ".ship" / "ledger.sqlite")
    db.execute("UPDATE segments SET cold_key = 'audit/' || cold_key")
    db.commit()
    db.close()
    r = cli("verify-tier", "--hot", str(hot), "--cold", f"file://{cold}", "--allow-unlocked", capsys=capsys)
    assert r.code == 2, r.out + r.err
    assert "prefix 'audit'" in r.err and "check the --cold URL" in r.err
    assert "missing-object" not in r.out


@pytest.mark.parametrize("verb", ["verify-tier --cold-only", "export --cold", "restore"])
def test_cold_verbs_refuse_a_store_that_is_not_there(verb: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    url = f"file://{tmp_path}/no-such-store"
    assert cli("keygen", "--name", "t", "--out", str(tmp_path / "keys"), capsys=capsys).code == 0
    vkey = tmp_path / "keys" / "t.pub"
    argv = {"verify-tier --cold-only": ["verify-tier", "--cold-only", "--vkey", str(vkey), "--cold", url],
            "export --cold": ["export", "--cold", url],
            "restore": ["restore", "--cold", url, "--to", str(tmp_path / "restored")]}[verb]
    before = snapshot(tmp_path)
    r = cli(*argv, capsys=capsys)
    assert r.code == 2, (verb, r.out, r.err)
    assert "Traceback" not in r.err
    assert "no-such-store does not exist" in r.err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("verb", ["verify-tier --cold-only", "export --cold", "restore", "hold"])
def test_cold_verbs_do_not_call_an_empty_store_valid(verb: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty-store"
    empty.mkdir()
    url = f"file://{empty}"
    assert cli("keygen", "--name", "t", "--out", str(tmp_path / "keys"), capsys=capsys).code == 0
    argv = {"verify-tier --cold-only": ["verify-tier", "--cold-only", "--vkey", str(tmp_path / "keys" / "t.pub"),
                                        "--cold", url, "--allow-unlocked"],
            "export --cold": ["export", "--cold", url],
            "restore": ["restore", "--cold", url, "--to", str(tmp_path / "restored")],
            "hold": ["hold", "--cold", url, "--stream", "app", "--on"]}[verb]
    r = cli(*argv, capsys=capsys)
    assert r.code == 2, (verb, r.out, r.err)
    assert not (tmp_path / "restored").exists()


def test_export_of_a_mistyped_stream_is_not_an_empty_success(tier: Tier, capsys: pytest.CaptureFixture[str]) -> None:
    r = cli("export", "--cold", tier.cold_url, "--stream", "ap", capsys=capsys)
    assert r.code == 2 and "stream 'ap' has no objects" in r.err and r.out == ""
    r = cli("export", "--cold", tier.cold_url, "--stream", "app", capsys=capsys)
    assert r.code == 0 and r.out.count("\n") == 20


@pytest.mark.parametrize("verb", ["keygen --out", "fss-setup --hot", "append --hot", "restore --to",
                                  "verify-proof"])
def test_verbs_that_create_refuse_a_file_where_a_directory_belongs(verb: str, tier: Tier, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "a-file"
    f.write_text("x\n")
    argv = {"keygen --out": ["keygen", "--name", "k", "--out", str(f)],
            "fss-setup --hot": ["fss-setup", "--hot", str(f), "--stream", "app"],
            "append --hot": ["append", "--hot", str(f), "--stream", "app"],
            "restore --to": ["restore", "--cold", tier.cold_url, "--to", str(f)],
            "verify-proof": ["verify-proof", "--vkey", str(f), str(tmp_path)]}[verb]
    r = cli(*argv, stdin=b'{"a":1}\n', capsys=capsys)
    assert r.code == 2, (verb, r.out, r.err)
    assert "Errno" not in r.err or verb == "verify-proof"
    assert f.read_text() == "x\n"


def test_verify_of_streams_without_segments_is_not_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A stream directory left by an old typo (only LOCK) holds nothing to verify."""
    (tmp_path / "hot" / "app").mkdir(parents=True)
    (tmp_path / "hot" / "app" / "LOCK").write_text("1\n")
    r = cli("verify", "--hot", str(tmp_path / "hot"), capsys=capsys)
    assert r.code == 2 and "nothing was verified" in r.err
