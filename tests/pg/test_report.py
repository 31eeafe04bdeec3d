"""The report of pg verify / pg check in verify-tier's shape (no database needed)."""

from __future__ import annotations

from pipeline.findings import Finding
from pipeline.pg.report import PgFinding, PgReport


def test_a_finding_has_exactly_verify_tiers_keys_plus_changes() -> None:
    f = PgFinding("row-changed", "audit.events", "differs", row="4", changes={"actor": ["a", "b"]}, seq=3,
                  segment="seg-00000000000000000000.jsonl")
    tier = Finding.of("row-changed", "audit.events", "seg-00000000000000000000.jsonl", "differs", 3, "4").to_dict()
    d = f.to_dict()
    assert set(d) == set(tier) | {"changes"}
    assert {k: d[k] for k in tier} == tier  # key = the primary key, offset null, reason = code
    assert d["reason"] == "row-changed" and d["offset"] is None and d["changes"] == {"actor": ["a", "b"]}


def test_report_top_level_keys_and_ok() -> None:
    rep = PgReport(mode="chain")
    assert rep.to_dict()["ok"] is True
    rep.findings.append(PgFinding("replica-lagging", "audit.events", "newer", row="9"))
    assert rep.ok and rep.totals()["warnings"] == 1  # a warning does not fail the report
    rep.findings.append(PgFinding("row-deleted", "audit.events", "gone", row="2"))
    doc = rep.to_dict()
    assert not rep.ok and doc["totals"]["errors"] == 1
    assert set(doc) >= {"schema", "ok", "mode", "findings", "totals", "elapsed_s"}


def test_text_output_names_the_sides_of_each_change() -> None:
    from pipeline.pg.report import render

    rep = PgReport(mode="chain+replica")
    rep.findings.append(PgFinding("row-changed", "audit.events", "differs", row="4", changes={"actor": ["a", "m"]}))
    rep.findings.append(PgFinding("replica-row-differs", "audit.events", "differ", row="4",
                                  changes={"actor": ["a", "m"]}))
    rep.findings.append(PgFinding("change-logged", "audit.events", "UPDATE", row="4", changes={"actor": ["a", "m"]}))
    lines = render(rep).splitlines()
    assert "    actor: logged 'a', now 'm'" in lines
    assert "    actor: replica 'a', primary 'm'" in lines
    assert "    actor: old 'a', new 'm'" in lines
