"""localstack/: the compose stack, its init hook and the host runner are well-formed.

Nothing here starts LocalStack (tests that need it use localstack/run-host.sh); the
init hook is run against a stand-in `awslocal` that records its calls.
"""

from __future__ import annotations

import os
import py_compile
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LS = ROOT / "localstack"
COMPOSE = LS / "docker-compose.yml"
HOOK = LS / "init" / "ready.d" / "create-buckets.sh"
RUN_HOST = LS / "run-host.sh"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_services_and_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"localstack", "azurite", "secrets-init", "pipeline", "demo-app"}
    for name in ("localstack", "azurite", "pipeline"):
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check["retries"] >= 3, name
    assert "/_localstack/" in " ".join(services["localstack"]["healthcheck"]["test"])
    assert "/readyz" in " ".join(services["pipeline"]["healthcheck"]["test"])
    assert re.fullmatch(r"localstack/localstack:\d+\.\d+\.\d+", services["localstack"]["image"])
    assert re.fullmatch(r".+/azurite:\d+\.\d+\.\d+", services["azurite"]["image"])
    assert "--skipApiVersionCheck" in services["azurite"]["command"]


def test_pipeline_service_built_from_the_dockerfile(compose: dict[str, Any]) -> None:
    pipeline = compose["services"]["pipeline"]
    build = pipeline["build"]
    assert (LS / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert pipeline["cap_drop"] == ["ALL"]
    assert pipeline["cap_add"] == ["LINUX_IMMUTABLE"]
    assert pipeline["read_only"] is True
    assert "no-new-privileges:true" in pipeline["security_opt"]
    assert pipeline["depends_on"]["localstack"]["condition"] == "service_healthy"
    assert pipeline["depends_on"]["secrets-init"]["condition"] == "service_completed_successfully"
    config = tomllib.loads((LS / "pipeline.toml").read_text())
    grace = int(config["ops"]["shutdown_grace"].rstrip("s"))
    assert int(str(pipeline["stop_grace_period"]).rstrip("s")) > grace
    assert "endpoint_url=http://localstack:4566" in config["cold"]["url"]
    assert config["cold"]["allow_unlocked"] is False, "LocalStack enforces Object Lock"


def test_demo_app_shares_the_sidecar_namespace(compose: dict[str, Any]) -> None:
    app = compose["services"]["demo-app"]
    assert app["network_mode"] == "service:pipeline"
    assert app["depends_on"]["pipeline"]["condition"] == "service_healthy"
    assert "10001" in [str(g) for g in app["group_add"]]
    assert app["cap_drop"] == ["ALL"]
    py_compile.compile(str(LS / "demo-app" / "app.py"), doraise=True)


def test_bind_mounts_exist(compose: dict[str, Any]) -> None:
    named = set(compose["volumes"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source in named:
                continue
            assert (LS / source).exists(), f"{name}: bind mount {source} missing"


def test_local_config_has_the_production_keys() -> None:
    local = tomllib.loads((LS / "pipeline.toml").read_text())
    configmap = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "configmap.yaml").read_text())
    production = tomllib.loads(configmap["data"]["pipeline.toml"])
    assert {s: set(v) for s, v in local.items()} == {s: set(v) for s, v in production.items()}


def test_create_buckets_hook_matches_the_terraform(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    shim = tmp_path / "awslocal"
    shim.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {log}\n'
        # head-bucket: the bucket does not exist yet
        'if [[ "$2" == head-bucket ]]; then exit 254; fi\n'
    )
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "LOCK_RETENTION_DAYS": "3"}
    proc = subprocess.run(["bash", str(HOOK)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    for bucket in ("audit-logs", "audit-witness"):
        mine = [c for c in calls if f"--bucket {bucket}" in c]
        verbs = [c.split()[1] for c in mine]
        assert verbs == ["head-bucket", "create-bucket", "put-bucket-versioning", "put-object-lock-configuration",
                         "put-public-access-block", "get-object-lock-configuration"], verbs
        assert "--object-lock-enabled-for-bucket" in mine[1]
        assert "Status=Enabled" in mine[2]
        assert '"Mode":"COMPLIANCE"' in mine[3] and '"Days":3' in mine[3]


def test_run_host_script_follows_the_recipe() -> None:
    text = RUN_HOST.read_text()
    for needle in ("localstack-core[runtime]==4.13.1", "cbor2<6", "cryptography<45", "pyopenssl<25",
                   "service-identity", "OVERRIDE_IN_DOCKER=0", "SERVICES=s3", "GATEWAY_LISTEN=",
                   "LOCALSTACK_HOST=", "FILESYSTEM_ROOT=", "DISABLE_EVENTS=1", "SKIP_SSL_CERT_DOWNLOAD=1",
                   "localstack.runtime.main", "--install-only", ".tools/localstack-venv"):
        assert needle in text, needle
    for script in (RUN_HOST, HOOK, ROOT / "tools" / "install-checkov.sh"):
        assert os.access(script, os.X_OK), f"{script} is not executable"
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr


def test_run_host_arguments() -> None:
    usage = subprocess.run(["bash", str(RUN_HOST), "--help"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 0 and "--install-only" in usage.stdout
    bad = subprocess.run(["bash", str(RUN_HOST), "--bogus"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr


@pytest.mark.parametrize("which", ["kubernetes", "localstack"])
def test_configs_load_with_the_real_loader(which: str, tmp_path: Path) -> None:
    """Both shipped configs pass pipeline.config's validation (secrets stubbed)."""
    from pipeline.config import load_config

    if which == "kubernetes":
        configmap = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "configmap.yaml").read_text())
        text = configmap["data"]["pipeline.toml"]
    else:
        text = (LS / "pipeline.toml").read_text()
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    (tmp_path / "ingest-token").write_text("token\n")
    (tmp_path / "ingest-token").chmod(0o600)  # a token others can read is refused
    (tmp_path / "app.key").write_text("key\n")
    environ = {
        "PIPELINE_INGEST_TOKEN_FILE": str(tmp_path / "ingest-token"),
        "PIPELINE_SIGNING_KEY_FILE": str(tmp_path / "app.key"),
        "PIPELINE_INGEST_SOCKET": str(tmp_path / "ingest.sock"),
        "PIPELINE_HOT_DIR": str(tmp_path / "hot"),
        "PIPELINE_HOT_STREAM": "shop-0",
        "PIPELINE_HOT_IMMUTABLE": "require",
    }
    config = load_config(path, environ)
    assert config is not None
