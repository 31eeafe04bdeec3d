"""The alert rules and the Grafana dashboard (deploy/prometheus, deploy/grafana).

- ``promtool check rules`` and ``promtool test rules`` (Debian's ``prometheus`` package) pass,
  and every alert has a case where it fires and one where it must stay silent;
- the Prometheus Operator component carries exactly the same groups as the plain rule file;
- every metric a rule or a dashboard panel names is one the code exports (the sidecar's
  registry, pipeline/ops.py, and the monitor's), so a renamed metric cannot leave an alert
  that never fires or a panel that shows "no data".
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.test_docs_metrics import metric_names as exported_metric_names  # the sidecar's and the monitor's

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "worm-pipeline.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "worm-pipeline.test.yml"
OPERATOR_RULE = ROOT / "deploy" / "components" / "prometheusrule" / "prometheusrule.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "worm-pipeline.json"

# a metric selector: a name followed by `{`, `[` or the end of an expression term
SELECTOR = re.compile(r"(?<![A-Za-z0-9_:$.\"'])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{|\[)")
PREFIXED = re.compile(r"(?<![A-Za-z0-9_])((?:worm|process)_[a-z0-9_]+)")
# series every Prometheus has for each target (not exported by the code)
SCRAPE_SERIES = {"up"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed (Debian's prometheus package): run tools/install-test-deps.sh")
    return found


def alerts() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


def exported() -> set[str]:
    return exported_metric_names() | SCRAPE_SERIES


def names_in(expr: str) -> set[str]:
    return set(SELECTOR.findall(expr)) | set(PREFIXED.findall(expr))


def test_promtool_checks_the_rule_file() -> None:
    p = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_promtool_unit_tests_pass() -> None:
    p = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                       timeout=120, cwd=RULE_TESTS.parent)
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    fires: set[str] = set()
    silent: set[str] = set()
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    assert set(alerts()) - fires == set(), "alerts never tested firing"
    assert set(alerts()) - silent == set(), "alerts never tested staying silent"


def test_every_alert_says_how_bad_and_what_happened() -> None:
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_the_operator_component_carries_the_same_rules() -> None:
    operator = yaml.safe_load(OPERATOR_RULE.read_text())
    assert operator["kind"] == "PrometheusRule"
    assert operator["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_rules_name_only_exported_metrics() -> None:
    known = exported()
    for name, rule in alerts().items():
        unknown = names_in(rule["expr"]) - known
        assert not unknown, f"{name}: {rule['expr']!r} names metrics nothing exports: {sorted(unknown)}"


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    out += [(v["name"], v["query"]["query"]) for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)]
    return out


def test_dashboard_names_only_exported_metrics() -> None:
    known = exported()
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    for title, expr in exprs:
        unknown = names_in(expr.replace("label_values(", "(")) - known
        assert not unknown, f"panel {title!r}: {expr!r} names metrics nothing exports: {sorted(unknown)}"


def test_dashboard_covers_what_operators_watch() -> None:
    """The issue's list: ingest rate, durability latency, cold lag, backlog, findings."""
    text = " ".join(e for _t, e in dashboard_exprs())
    for metric in ("worm_events_appended_total", "worm_ingest_ack_seconds_bucket", "worm_cold_lag_seconds",
                   "worm_segments", "worm_monitor_findings_active", "worm_verification_failures_total"):
        assert metric in text, metric


def test_the_name_check_itself_catches_a_typo() -> None:
    assert names_in('rate(worm_events_apended_total{job="x"}[5m])') - exported() == {"worm_events_apended_total"}
    assert names_in("sum by (code) (worm_monitor_findings_active)") <= exported()
