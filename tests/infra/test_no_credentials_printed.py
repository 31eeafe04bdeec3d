"""No command prints credentials (issue 18): every verb of `pipeline`, found from the argument
parser (a new verb is covered without editing this file), is run as a real process with
URLs that carry user-info and SAS-style signatures, in the arguments, the configuration
file and the environment; neither the secret user, password nor signature may appear in
what it prints, whether the verb succeeds, refuses the URL or cannot reach the endpoint."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.checkpoint import Signer, write_key_pair
from pipeline.cli import build_parser
from pipeline.cold.errors import mask_credentials, url_has_credentials
from tests.ship.test_shipper import write_events

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD, SIG = "AKIAEXAMPLESECRETUSER", "s3cr3t-Passw0rd", "SiGsEcReTvAlUe"
SECRETS = (USER, PASSWORD, SIG)
S3_URL = f"s3://audit-bucket/p?endpoint_url=http://{USER}:{PASSWORD}@127.0.0.1:9&region=us-east-1"
S3_URL_ENCODED = f"s3://audit-bucket/p?endpoint_url=http%3A%2F%2F{USER}%3A{PASSWORD}%40127.0.0.1%3A9"
AZ_URL = f"az://acct/container/p?endpoint_url=http://127.0.0.1:9/acct?sv=2024&sig={SIG}"
WITNESS_URL = f"https://{USER}:{PASSWORD}@127.0.0.1:9/witness"
COLD_URLS = [S3_URL, S3_URL_ENCODED, AZ_URL]


def _leaves(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...],
                                                                                          argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(prefix, parser)]
    out = []
    for name, sub in subs[0].choices.items():
        out += _leaves(sub, (*prefix, name))
    return out


VERBS = _leaves(build_parser())


def _takes_url(parser: argparse.ArgumentParser) -> bool:
    return any(a.dest in ("cold", "witness_s3") for a in parser._actions)


# verbs with a URL option run with each kind of URL; the others once (with the config file's URLs)
CASES = [pytest.param(verb, parser, cold, id=f"{' '.join(verb)}-{kind}")
         for verb, parser in VERBS
         for kind, cold in (zip(("s3-userinfo", "s3-encoded", "az-sig"), COLD_URLS, strict=True)
                            if _takes_url(parser) else [("config", S3_URL)])]


@pytest.fixture
def world(tmp_path: Path, hot_dir: Path) -> dict[str, Path]:
    """Inputs every verb may need: a hot tier with sealed segments, keys, a proof file, a config."""
    write_events(hot_dir, 300, max_bytes=16 * 1024)
    signer = Signer.generate("example.com/audit")
    key, pub = write_key_pair(signer, tmp_path / "keys")
    wkey, _ = write_key_pair(Signer.generate("witness.example", cosigner=True), tmp_path / "wkeys")
    proof = tmp_path / "proof.json"
    proof.write_text("{}")
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(f'[hot]\ndir = "{hot_dir}"\nstream = "app"\n[cold]\nurl = "{S3_URL}"\n'
                   f'[signing]\nwitnesses = ["{WITNESS_URL}"]\n')
    return {"hot": hot_dir, "key": key, "pub": pub, "wkey": wkey, "proof": proof, "config": cfg, "tmp": tmp_path}


def _argv(verb: tuple[str, ...], parser: argparse.ArgumentParser, w: dict[str, Path], cold: str) -> list[str]:
    values = {
        "hot": str(w["hot"]), "stream": "app", "cold": cold, "witness_s3": cold, "config": str(w["config"]),
        "to": str(w["tmp"] / "restored"), "name": "example.com/x", "out": str(w["tmp"] / "newkeys"),
        "vkey": str(w["pub"]), "proof": str(w["proof"]), "dir": str(w["tmp"] / "wdir"), "trust": str(w["pub"]),
        "key": str(w["wkey"] if verb[0] == "witness" else w["key"]),
        "check": str(w["pub"]),  # `sanitise --check FILE`: any readable file
        # `pg`: a PostgreSQL URI with user-info, to a port nothing listens on
        "dsn": f"postgresql://{USER}:{PASSWORD}@127.0.0.1:9/audit?connect_timeout=2",
        "identity": str(w["key"]),  # `decrypt --identity FILE`: refused (not an age identity), says why
    }
    argv = list(verb)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        url_option = action.dest in ("cold", "witness_s3", "config")
        if not (action.required or url_option):
            continue
        if action.dest not in values:
            pytest.fail(f"{' '.join(verb)}: no test value for required {action.dest}: add one to _argv")
        if action.option_strings:
            argv += [action.option_strings[0], values[action.dest]]
        else:
            argv.append(values[action.dest])
    if any("--once" in a.option_strings for a in parser._actions):
        argv.append("--once")  # `ship` would loop otherwise
    return argv


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 20) -> tuple[int | None, str]:
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=full_env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # a server verb (witness serve): stop it, keep what it printed
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    return proc.returncode, out


def _assert_clean(what: str, out: str) -> None:
    leaked = [s for s in SECRETS if s in out]
    assert not leaked, f"{what} printed {leaked}:\n{out[-3000:]}"


@pytest.mark.parametrize(("verb", "parser", "cold"), CASES)
def test_no_verb_prints_credentials(verb: tuple[str, ...], parser: argparse.ArgumentParser, cold: str,
                                    world: dict[str, Path]) -> None:
    argv = _argv(verb, parser, world, cold)
    timeout = 3 if verb[0] == "witness" else 60
    code, out = _run(argv, timeout=timeout)
    _assert_clean(" ".join(argv[:2]), out)
    if "--cold" in argv:
        assert code == 2, f"{' '.join(verb)} accepted a cold URL with credentials (exit {code}):\n{out[-2000:]}"


def test_run_refuses_credentials_from_the_environment_too(world: dict[str, Path]) -> None:
    for url in COLD_URLS:
        for argv in (["run", "--check"], ["run"]):
            code, out = _run(argv, env={"PIPELINE_HOT_DIR": str(world["hot"]), "PIPELINE_COLD_URL": url})
            _assert_clean(f"{argv} with PIPELINE_COLD_URL", out)
            assert code == 2 and "PIPELINE_COLD_URL" in out, out


def test_run_check_shows_witness_urls_masked(world: dict[str, Path]) -> None:
    cfg = world["tmp"] / "ok.toml"
    cfg.write_text(f'[hot]\ndir = "{world["hot"]}"\n[cold]\nurl = "s3://audit-bucket/p?region=us-east-1"\n'
                   f'[signing]\nwitnesses = ["{WITNESS_URL}"]\n')
    code, out = _run(["run", "--config", str(cfg), "--check"])
    _assert_clean("run --check", out)
    assert code == 0, out
    shown = json.loads(out)
    assert shown["signing"]["witnesses"] == ["https://***@127.0.0.1:9/witness"]


@pytest.mark.parametrize("url", [S3_URL, S3_URL_ENCODED, AZ_URL, WITNESS_URL,
                                 "https://acct.blob.core.windows.net/c/b?sp=r&sig=abc%2Bdef&se=2030"])
def test_mask_credentials(url: str) -> None:
    masked = mask_credentials(url)
    assert url_has_credentials(url) and not url_has_credentials(masked)
    assert all(s not in masked for s in (*SECRETS, "abc%2Bdef"))
    assert "127.0.0.1" in masked or "windows.net" in masked, "the endpoint itself stays visible"


def test_mask_credentials_leaves_plain_text_alone() -> None:
    for text in ("s3://b/p?region=eu-west-1&endpoint_url=http://127.0.0.1:9000", "user@example.com wrote a=b",
                 "file:///var/lib/x"):
        assert mask_credentials(text) == text and not url_has_credentials(text)
