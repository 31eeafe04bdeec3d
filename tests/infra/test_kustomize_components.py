"""deploy/components: every combination of the examples and the optional components is
rendered with `kubectl kustomize`, validated with kubernetes-validate (strict, oldest and
newest supported Kubernetes), checked for what the sidecar/agent needs, replayed against
the Pod Security Standards, and passed through checkov with its documented skips."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.tools  # kubectl (kustomize) and checkov

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ROOT / "deploy" / "components"
EXAMPLES = ["sidecar-statefulset", "node-agent", "witness"]
OPTIONAL = ["podmonitor", "prometheusrule", "networkpolicy", "irsa", "azure-workload-identity"]
VERSIONS = sorted({"1.33.0", kubernetes_validate.latest_version()})
CRDS = {"PodMonitor", "PrometheusRule"}  # monitoring.coreos.com: no bundled schema
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
# Pod Security "baseline" allows adding only these capabilities
BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                 "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed (kustomize is built in): run tools/install-test-deps.sh")
    return found


def render(tmp: Path, example: str, extra: tuple[str, ...]) -> list[dict[str, Any]]:
    tmp.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(ROOT, tmp)  # kustomize refuses absolute paths
    k = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
         "resources": [f"{rel}/deploy/examples/{example}"],
         "components": [f"{rel}/deploy/components/{c}" for c in extra]}
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump(k))
    proc = subprocess.run([_kubectl(), "kustomize", str(tmp)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc["spec"]["template"]["spec"])


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def check_semantics(docs: list[dict[str, Any]], example: str, extra: tuple[str, ...]) -> None:
    kinds = [d["kind"] for d in docs]
    by_kind_name = {(d["kind"], d["metadata"]["name"]) for d in docs}
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    assert workloads
    for w in workloads:
        spec = _pod_spec(w)
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in _containers(spec):
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes or m["name"] in claims, f"{w['metadata']['name']}/{c['name']}: {m['name']}"
        for v in volumes.values():  # generated ConfigMaps are referenced by their hashed names
            name = v.get("configMap", {}).get("name", "")
            if name.startswith("worm-pipeline-") and name != "worm-pipeline-witness-trust":  # that one: by hand
                assert ("ConfigMap", v["configMap"]["name"]) in by_kind_name, v
        key_volumes = {n for n, v in volumes.items() if "signing-key" in v.get("secret", {}).get("secretName", "")}
        for c in _containers(spec):
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            if mounts & key_volumes:
                assert c["name"] == "worm-pipeline", f"{c['name']} mounts the signing key"
    if example == "sidecar-statefulset":
        (sts,) = [w for w in workloads if w["kind"] == "StatefulSet"]
        (sidecar,) = [c for c in _pod_spec(sts).get("initContainers", []) if c["name"] == "worm-pipeline"]
        assert sidecar["restartPolicy"] == "Always", "a native sidecar"
        assert sidecar["image"].startswith("registry.example.com/worm-pipeline:")
        assert [c["name"] for c in _pod_spec(sts)["containers"]] == ["app"], "the application's containers stay"
    if example == "node-agent":
        svc = next(d for d in docs if d["kind"] == "Service")
        assert svc["spec"]["internalTrafficPolicy"] == "Local"
    if "irsa" in extra:
        for sa in (d for d in docs if d["kind"] == "ServiceAccount"):
            assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    if "azure-workload-identity" in extra:
        for w in workloads:
            if w["metadata"]["name"] != "worm-pipeline-witness":
                assert w["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    for comp in ("podmonitor", "prometheusrule", "networkpolicy"):
        kind = {"podmonitor": "PodMonitor", "prometheusrule": "PrometheusRule", "networkpolicy": "NetworkPolicy"}[comp]
        assert (kind in kinds) == (comp in extra or (kind == "NetworkPolicy" and example == "witness")), (comp, kinds)


def check_crd(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    if doc["kind"] == "PodMonitor":
        (ep,) = doc["spec"]["podMetricsEndpoints"]
        assert ep["port"] == "pipeline-ops" and ep["path"] == "/metrics"
    else:
        # the rendered rules name only metrics the sidecar and the monitor export (the same
        # check as tests/infra/test_prometheus_rules.py, on what kustomize rendered)
        from tests.infra.test_prometheus_rules import exported, names_in

        known = exported()
        for group in doc["spec"]["groups"]:
            for rule in group["rules"]:
                unknown = names_in(rule["expr"]) - known
                assert not unknown, (rule["alert"], sorted(unknown))


@pytest.mark.slow  # 32 renders per example (kubectl ~0.5 s each on a busy machine) + validation
@pytest.mark.parametrize("example", EXAMPLES)
def test_every_combination_renders_and_validates(example: str, tmp_path: Path) -> None:
    combos = [c for n in range(len(OPTIONAL) + 1) for c in itertools.combinations(OPTIONAL, n)]
    assert len(combos) == 32
    validated: set[str] = set()  # most documents recur unchanged across combinations
    for i, extra in enumerate(combos):
        docs = render(tmp_path / str(i), example, extra)
        for doc in docs:
            key = json.dumps(doc, sort_keys=True)
            if key in validated:
                continue
            validated.add(key)
            if doc["kind"] in CRDS:
                check_crd(doc)
                continue
            for version in VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)
        check_semantics(docs, example, extra)
    assert len(validated) > 5


def pod_security_violations(spec: dict[str, Any], level: str) -> set[str]:
    """The Pod Security Standards rules (baseline, restricted) a pod spec breaks, by name."""
    out = set()
    if any("hostPath" in v for v in spec.get("volumes", [])):
        out.add("hostPath")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.add(key)
    pod_ctx = spec.get("securityContext", {})
    for c in _containers(spec):
        ctx = c.get("securityContext", {})
        if ctx.get("privileged"):
            out.add("privileged")
        added = set(ctx.get("capabilities", {}).get("add", []))
        if added - BASELINE_CAPS:
            out.add("capabilities:" + ",".join(sorted(added - BASELINE_CAPS)))
        if level == "restricted":
            if added - {"NET_BIND_SERVICE"}:
                out.add("restricted-capabilities")
            if "ALL" not in ctx.get("capabilities", {}).get("drop", []):
                out.add("drop-all")
            if ctx.get("allowPrivilegeEscalation") is not False:
                out.add("allowPrivilegeEscalation")
            non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
            if non_root is not True or ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
                out.add("runAsNonRoot")
            seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {})).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                out.add("seccomp")
    return out


@pytest.mark.parametrize(("example", "needs"), [
    # the capability (and, for the agent, the node's disk) is what forces "privileged"
    ("sidecar-statefulset", {"capabilities:LINUX_IMMUTABLE"}),
    ("node-agent", {"capabilities:LINUX_IMMUTABLE", "hostPath"}),
    ("witness", set()),
])
def test_pod_security_needs_are_exactly_documented(example: str, needs: set[str], tmp_path: Path) -> None:
    docs = render(tmp_path, example, ())
    (ns,) = [d for d in docs if d["kind"] == "Namespace"]
    enforce = ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
    for w in (d for d in docs if d["kind"] in WORKLOADS):
        baseline = pod_security_violations(_pod_spec(w), "baseline")
        assert baseline == needs, baseline
        if not needs:
            assert pod_security_violations(_pod_spec(w), "restricted") == set()
            assert enforce == "restricted"
        else:
            assert enforce == "privileged", "the namespace must admit what the pod needs"
    if example == "node-agent":
        # an application using the agent needs nothing: its own namespace can stay restricted
        client = {"containers": [{"name": "app", "image": "x", "securityContext": {
            "runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}}]}
        assert pod_security_violations(client, "restricted") == set()


def _checkov() -> str:
    for c in (os.environ.get("CHECKOV_BIN"), str(ROOT / ".tools" / "checkov-venv" / "bin" / "checkov"),
              shutil.which("checkov")):
        if c and Path(c).is_file():
            return c
    pytest.fail("checkov is not installed: run tools/install-checkov.sh")


# Graph check skipped for the sidecar pattern only: a NetworkPolicy selects whole pods, and a
# sidecar's pod belongs to the application, whose policy it is (components/networkpolicy).
SKIPS = {"sidecar-statefulset": ["CKV2_K8S_6"], "node-agent": [], "witness": []}


@pytest.mark.slow
def test_checkov_clean_with_documented_skips(tmp_path: Path) -> None:
    out = tmp_path / "rendered"
    out.mkdir()
    for example in EXAMPLES:
        extra = ("networkpolicy",) if example == "node-agent" else ()
        docs = render(tmp_path / example, example, extra)
        target = out / example
        target.mkdir()
        (target / "all.yaml").write_text(yaml.safe_dump_all(docs))
        argv = [_checkov(), "-d", str(target), "--framework", "kubernetes", "--compact", "-o", "json"]
        if SKIPS[example]:
            argv += ["--skip-check", ",".join(SKIPS[example])]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        report = json.loads(proc.stdout)
        reports = report if isinstance(report, list) else [report]
        failed = [(f["check_id"], f["resource"]) for r in reports for f in r["results"]["failed_checks"]]
        assert not failed, f"{example}: {failed}"
        skipped = {f["check_id"] for r in reports for f in r["results"]["skipped_checks"]}
        reasons = dict(v.split("=", 1) for d in docs for k, v in d["metadata"].get("annotations", {}).items()
                       if k.startswith("checkov.io/skip"))
        assert skipped <= set(reasons) | set(SKIPS[example]), skipped
        assert all(len(reason) > 30 for reason in reasons.values()), "every skip carries its reason"
        assert sum(r["summary"]["passed"] for r in reports) > 40
