"""deploy/kubernetes/: schema-valid for current Kubernetes, and the sidecar is set up as documented."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
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
    secret_mount = {m["name"]: m["mountPath"] for m in _sidecar()["volumeMounts"]}["secrets"]
    for key in (config["ingest"]["token_file"], config["signing"]["key_file"]):
        assert Path(key).is_relative_to(secret_mount)


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
