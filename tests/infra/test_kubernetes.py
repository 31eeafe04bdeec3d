"""deploy/kubernetes/: schema-valid for current Kubernetes, and the sidecar is set up as documented."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
# Oldest release the manifests target: native sidecars (restartPolicy: Always on an
# init container) and the preStop sleep action are on by default there.
MIN_VERSION = "1.33.0"
OPS_PORT = 9464


def _resource_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in _resource_files():
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _one(kind: str) -> dict[str, Any]:
    found = [d for d in _docs() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _versions() -> list[str]:
    latest = kubernetes_validate.latest_version()
    assert tuple(int(x) for x in latest.split(".")[:2]) >= (1, 33), latest
    return sorted({MIN_VERSION, latest})


@pytest.mark.parametrize("version", _versions())
@pytest.mark.parametrize("path", _resource_files(), ids=lambda p: p.name)
def test_schema_valid_strict(path: Path, version: str) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_kustomization_lists_every_resource() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in _resource_files())


def _pod() -> dict[str, Any]:
    return dict(_one("StatefulSet")["spec"]["template"])


def _sidecar() -> dict[str, Any]:
    inits = _pod()["spec"]["initContainers"]
    sidecar = next(c for c in inits if c["name"] == "worm-pipeline")
    return dict(sidecar)


def test_native_sidecar_with_probes() -> None:
    sidecar = _sidecar()
    assert sidecar["restartPolicy"] == "Always", "a native sidecar"
    assert sidecar["args"] == ["run", "--config", "/etc/worm-pipeline/pipeline.toml"]
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports == {"pipeline-ops": OPS_PORT}
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert sidecar[probe]["httpGet"]["port"] in ("pipeline-ops", OPS_PORT)
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(sidecar["resources"][kind])


def test_security_context_only_linux_immutable() -> None:
    pod = _pod()
    sidecar = _sidecar()
    ctx = sidecar["securityContext"]
    assert ctx["capabilities"] == {"drop": ["ALL"], "add": ["LINUX_IMMUTABLE"]}
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["privileged"] is False
    assert pod["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["spec"].get("hostUsers", True) is True, "CAP_LINUX_IMMUTABLE does not work in a user namespace"
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["PIPELINE_HOT_IMMUTABLE"] == "require"
    for app in pod["spec"]["containers"]:
        actx = app["securityContext"]
        assert actx["capabilities"] == {"drop": ["ALL"]}
        assert actx["runAsNonRoot"] is True
        assert actx["readOnlyRootFilesystem"] is True
        assert actx["allowPrivilegeEscalation"] is False


def test_hot_dir_on_a_persistent_claim_and_socket_shared() -> None:
    sts = _one("StatefulSet")
    pod = _pod()
    claims = {t["metadata"]["name"]: t for t in sts["spec"]["volumeClaimTemplates"]}
    assert claims["hot"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["name"]: m["mountPath"] for m in _sidecar()["volumeMounts"]}
    config = tomllib.loads(_one("ConfigMap")["data"]["pipeline.toml"])
    assert Path(config["hot"]["dir"]).is_relative_to(mounts["hot"])
    assert "hot" not in {v["name"] for v in pod["spec"]["volumes"]}, "the hot dir is not an emptyDir"
    socket_dir = str(Path(config["ingest"]["socket"]).parent)
    assert mounts["ingest-socket"] == socket_dir
    for app in pod["spec"]["containers"]:
        assert {m["name"]: m["mountPath"] for m in app["volumeMounts"]}["ingest-socket"] == socket_dir
    # Everything the read-only root filesystem would refuse is a volume.
    assert mounts["tmp"] == "/tmp"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def _seconds(value: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return int(value[:-1]) * units[value[-1]]


def test_grace_period_covers_the_drain() -> None:
    pod = _pod()
    config = tomllib.loads(_one("ConfigMap")["data"]["pipeline.toml"])
    drain = _seconds(config["ops"]["shutdown_grace"])
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    pre_stop = sum(
        c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        for c in pod["spec"]["containers"]
    )
    assert pre_stop > 0, "the application deregisters before SIGTERM"
    assert grace == 90
    assert grace >= drain + pre_stop + 20, "app shutdown + sidecar drain must fit in the grace period"


def test_config_map_holds_the_documented_keys() -> None:
    config = tomllib.loads(_one("ConfigMap")["data"]["pipeline.toml"])
    assert set(config) == {"hot", "cold", "ingest", "ops", "signing"}
    assert config["ops"]["listen"].endswith(f":{OPS_PORT}")
    assert config["cold"]["allow_unlocked"] is False
    assert config["cold"]["retention_days"] == 2555
    assert config["ingest"]["http"].startswith("127.0.0.1:")
    mounts = {m["name"]: m["mountPath"] for m in _sidecar()["volumeMounts"]}
    assert Path(config["ingest"]["token_file"]).is_relative_to(mounts["ingest-token"])
    assert Path(config["signing"]["key_file"]).is_relative_to(mounts["signing-key"])


def _secret_volumes() -> dict[str, dict[str, Any]]:
    return {v["name"]: v["secret"] for v in _pod()["spec"]["volumes"] if "secret" in v}


def test_signing_key_is_mounted_into_the_sidecar_only() -> None:
    # issue 18: the application shared the Secret (and the fsGroup) and could read the key
    pod = _pod()
    key_volumes = {name for name, sec in _secret_volumes().items() if "signing" in sec["secretName"]}
    assert key_volumes == {"signing-key"}
    for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]:
        mounted = {m["name"] for m in c.get("volumeMounts", [])}
        assert (c["name"] == "worm-pipeline") == bool(mounted & key_volumes), c["name"]
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef", {})
            assert c["name"] == "worm-pipeline" or "signing" not in ref.get("name", ""), c["name"]


def test_example_config_and_secret_modes_pass_run_check(tmp_path: Path) -> None:
    """Replays the pod: the ConfigMap's pipeline.toml with its paths moved under tmp_path,
    the signing key in a Secret volume laid out by the kubelet with the mode the pod's
    fsGroup gives it (defaultMode | group read), and `pipeline run --check` as in the image."""
    import os
    import subprocess
    import sys

    from pipeline.checkpoint import Signer
    from tests.infra.test_signing_key import kubelet_secret_volume

    pod = _pod()
    assert pod["spec"]["securityContext"]["fsGroup"] == 10001
    mode = _secret_volumes()["signing-key"]["defaultMode"] | 0o040  # what fsGroup does on the node
    text = _one("ConfigMap")["data"]["pipeline.toml"]
    config = tomllib.loads(text)
    key_file = config["signing"]["key_file"]
    token_file = config["ingest"]["token_file"]
    signer = Signer.generate("example.com/audit")
    with kubelet_secret_volume(tmp_path, {Path(key_file).name: signer.to_string() + "\n"}, mode) as mnt:
        token = tmp_path / "ingest-token"
        token.write_text("t" * 32)
        token.chmod(0o440)  # as the kubelet projects the token Secret (defaultMode 0440): nothing for others
        (tmp_path / "run").mkdir()
        text = (text.replace(key_file, str(mnt / Path(key_file).name)).replace(token_file, str(token))
                .replace(config["hot"]["dir"], str(tmp_path / "hot"))
                .replace(config["ingest"]["socket"], str(tmp_path / "run" / "ingest.sock")))
        cfg = tmp_path / "pipeline.toml"
        cfg.write_text(text)
        env = {k: v for k, v in os.environ.items() if k != "PIPELINE_SIGNING_KEY"}
        env.update({e["name"]: e["value"] for e in _sidecar()["env"] if "value" in e and "$(" not in e["value"]})
        p = subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", str(cfg), "--check"],
                           capture_output=True, text=True, timeout=60, env=dict(env, PYTHONPATH=str(ROOT)))
    assert p.returncode == 0, p.stderr


def test_prometheus_and_workload_identity() -> None:
    pod = _pod()
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(OPS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    sa = _one("ServiceAccount")
    assert pod["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert sa["automountServiceAccountToken"] is False
