"""Every metric name the docs mention exists in the code's registries (pipeline/ops.py, and
the monitor's pipeline/monitor/metrics.py).

Metric names and cold-object metadata keys share the ``worm_`` prefix; a ``worm_`` name
in the docs must be one or the other, both taken from the code.  ``pipeline_`` is the
prefix the metrics do NOT have (the docs once told operators to grep for it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.cold.base import META_PREFIX, METADATA_KEYS
from pipeline.ops import Metrics

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
# not after "." (an attribute such as capabilities().worm_enforced)
MENTION = re.compile(r"(?<![A-Za-z0-9_.])(?:worm|pipeline)_[a-z0-9_]*(?![a-z0-9_]*-)")


def wired_metrics() -> Metrics:
    """The registry as the sidecar wires it: with the collectors it adds at start-up
    (``track_redactions``, where this version has it) as well as the fixed metrics."""
    m = Metrics()
    track_redactions = getattr(m, "track_redactions", None)
    if track_redactions is not None:
        track_redactions(dict)
    # [source.postgres] adds its metrics to the same registry when configured
    from pipeline.pg.source import register_metrics

    register_metrics(m.registry)
    return m


def metric_names() -> set[str]:
    """Family names and every exposed sample name (_total, _bucket, _count, _sum, _created)."""
    from pipeline.monitor.metrics import MonitorMetrics  # `pipeline monitor`'s own (docs/MONITOR.md)

    names: set[str] = set()
    for family in [*wired_metrics().registry.collect(), *MonitorMetrics().registry.collect()]:
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
    return names


def metadata_keys() -> set[str]:
    from pipeline.ship.index import INDEX_METADATA_KEYS

    return {META_PREFIX + k for k in (*METADATA_KEYS, "stored_sha256_composite")} | set(INDEX_METADATA_KEYS)


def mentions(path: Path) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        out.extend((lineno, m.group(0)) for m in MENTION.finditer(line))
    return out


def test_the_registry_is_not_empty() -> None:
    assert "worm_cold_lag_seconds" in metric_names()
    assert "worm_events_appended_total" in metric_names()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_metric_named_in_the_docs_exists(doc: Path) -> None:
    known = metric_names() | metadata_keys()
    wrong = []
    for lineno, name in mentions(doc):
        if name.endswith("_"):  # a prefix, like worm_stored_*
            if not any(k.startswith(name) for k in known):
                wrong.append(f"{doc.name}:{lineno}: {name}*")
        elif name not in known:
            wrong.append(f"{doc.name}:{lineno}: {name}")
    assert not wrong, "names in the docs that are neither a metric in pipeline/ops.py nor a cold metadata key:\n" + \
        "\n".join(wrong)


def test_the_metric_list_in_the_docs_is_complete() -> None:
    """Every metric family the sidecar exports is named somewhere an operator reads."""
    text = "\n".join(p.read_text() for p in DOCS)
    families = {f.name for f in wired_metrics().registry.collect()}
    missing = sorted(n for n in families if not re.search(rf"{n}(?![a-z])", text))
    assert not missing, f"metrics exported but never documented: {missing}"
