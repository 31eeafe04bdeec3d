"""The one findings model: the registry of codes, the docs' tables, and every place a finding
is made (issue 15, step 4)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pipeline.findings import (
    DECRYPT,
    ERROR,
    MONITOR,
    PG_CHECK,
    PG_VERIFY,
    REGISTRY,
    VERIFY,
    VERIFY_TIER,
    WARNING,
    Finding,
    codes,
    info,
)
from pipeline.verify.chain import REASONS
from pipeline.verify.tier import CODES

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "pipeline"
ROW = re.compile(r"^\| `([a-z0-9-]+)` \| (error|warning) \|(.*)\|$", re.M)


def _table(doc: str, heading: str) -> dict[str, tuple[str, list[str]]]:
    """code -> (severity, remaining cells) of the first code table after ``heading``."""
    text = (REPO / "docs" / doc).read_text(encoding="utf-8")
    assert heading in text, f"{doc}: no {heading!r}"
    section = text.split(heading, 1)[1]
    block = section[section.index("| code |"):].split("\n\n", 1)[0]
    rows: dict[str, tuple[str, list[str]]] = {}
    for code, severity, rest in ROW.findall(block):
        assert code not in rows, f"{doc}: {code} listed twice"
        rows[code] = (severity, [c.strip() for c in rest.split("|")])
    assert rows, f"{doc}: empty table after {heading!r}"
    return rows


def _plain(text: str) -> str:
    return text.replace("`", "").strip()


# (doc, heading, the registry's families whose home the table is, columns before the meaning)
HOME_TABLES = [
    ("FORMAT.md", "### 8.1 Finding codes", ("chain", "fss"), 0),
    ("PROOFS.md", "**Finding codes.**", ("witness",), 1),
    ("VERIFY-TIER.md", "## Finding codes", ("tier",), 0),
    ("POSTGRES.md", "#### `pg verify` finding codes", ("pg",), 0),
    ("POSTGRES.md", "#### `pg check` finding codes", ("pg-check",), 0),
    ("MONITOR.md", "#### Monitor finding codes", ("monitor",), 0),
    ("ENCRYPTION.md", "#### Finding codes", ("crypt",), 0),
]


@pytest.mark.parametrize(("doc", "heading", "families", "extra"), HOME_TABLES, ids=[t[0] for t in HOME_TABLES])
def test_each_family_has_its_table(doc: str, heading: str, families: tuple[str, ...], extra: int) -> None:
    """Every code of a family is in its home table with the registry's severity and meaning,
    and the table's rows of that family are all registered."""
    rows = _table(doc, heading)
    mine = {c: i for c, i in REGISTRY.items() if i.family in families}
    missing = set(mine) - set(rows)
    assert not missing, f"{doc} does not document {sorted(missing)}"
    for code, entry in mine.items():
        severity, cells = rows[code]
        assert severity == entry.severity, (doc, code)
        assert _plain(cells[extra]) == _plain(entry.meaning), (doc, code, cells[extra], entry.meaning)
        if extra:  # the "reported by" column
            assert {_plain(v) for v in cells[0].split(",")} == set(entry.reports), (doc, code)


def test_every_documented_code_is_registered() -> None:
    documented: dict[str, str] = {}
    for doc, heading, _, _ in HOME_TABLES:
        for code, (severity, _) in _table(doc, heading).items():
            assert code in REGISTRY, f"{doc} documents {code!r}, which no verifier emits (not registered)"
            assert REGISTRY[code].severity == severity, (doc, code)
            documented[code] = doc
    assert set(documented) == set(REGISTRY)


def test_verify_tier_table_is_what_verify_tier_reports() -> None:
    """docs/VERIFY-TIER.md lists exactly the codes a verify-tier report can carry (its own,
    the chain codes of --deep and of the hot scans, the checkpoint and witness codes)."""
    rows = _table("VERIFY-TIER.md", "## Finding codes")
    tier = codes(report=VERIFY_TIER)
    assert set(rows) == set(tier), (set(tier) - set(rows), set(rows) - set(tier))
    assert {c: s for c, (s, _) in rows.items()} == {c: i.severity for c, i in tier.items()}
    assert {c: (i.severity, i.meaning) for c, i in tier.items()} == CODES  # the old name, a view


def test_views_of_the_registry() -> None:
    assert {c: i.meaning for c, i in REGISTRY.items() if i.family == "chain"} == REASONS
    reports = {VERIFY, VERIFY_TIER, PG_VERIFY, PG_CHECK, MONITOR, DECRYPT}
    assert all(i.reports <= reports and i.reports for i in REGISTRY.values())
    assert all(i.severity in (ERROR, WARNING) for i in REGISTRY.values())


def test_finding_refuses_unregistered_codes_and_other_severities() -> None:
    with pytest.raises(ValueError, match="not registered"):
        Finding.of("made-up-code", "app", "seg", "x")
    with pytest.raises(ValueError, match="registered as error"):
        Finding("hash-mismatch", WARNING, "app", "seg", 3, 0, "x")
    f = Finding.of("hash-mismatch", "app", "seg-1.jsonl", "altered", 3, 120)
    assert (f.severity, f.offset, f.key, f.reason, f.is_error) == (ERROR, 120, None, "hash-mismatch", True)
    k = Finding.of("expiring-soon", "app", "seg-1.jsonl", "soon", where="p/app/seg-1.jsonl.zst")
    assert (k.severity, k.offset, k.key, k.is_error) == (WARNING, None, "p/app/seg-1.jsonl.zst", False)
    # both report shapes' keys in one dict
    assert set(f.to_dict()) == {"code", "severity", "stream", "segment", "key", "seq", "offset", "reason",
                                "message"}


# ---------------------------------------------------------------------------- the code


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"), str(p))) for p in sorted(PKG.rglob("*.py"))]


def _callee(call: ast.Call) -> str:
    f = call.func
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        return f"{f.value.id}.{f.attr}"
    if isinstance(f, ast.Name):
        return f.id
    return ""


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


# Functions that take a finding code as their first argument and build a Finding from it.
# Every call to one of them (and to Finding itself) must pass registered literal codes, or a
# code that came from another finding / a RecordError (checked at runtime by Finding).
MAKERS = {"Finding", "Finding.of", "add", "finding", "problem"}


def test_no_finding_is_built_with_an_unregistered_code() -> None:
    seen: set[str] = set()
    bad: list[str] = []
    for path, tree in _modules():
        if path.name == "findings.py":
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _callee(node) not in MAKERS:
                continue
            arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "code"), None)
            if arg is None:
                continue
            # the code argument: literal codes (also both arms of a conditional) are checked;
            # f-strings and messages are not codes
            literals = [s for s in _strings(arg) if not isinstance(arg, ast.JoinedStr)]
            for code in literals:
                seen.add(code)
                if code not in REGISTRY:
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {code!r}")
    assert not bad, "findings built with unregistered codes:\n" + "\n".join(bad)
    assert len(seen) > 40, sorted(seen)  # the scan found the places findings are made


def test_every_registered_code_can_be_emitted() -> None:
    """No dead entries: every registered code is written somewhere in the code outside the
    registry (where a finding is made, or, for the record checks, where parse_record raises)."""
    literals: set[str] = set()
    for path, tree in _modules():
        if path.name != "findings.py":
            literals.update(_strings(tree))
    assert not set(REGISTRY) - literals, sorted(set(REGISTRY) - literals)


def test_info_names_the_unregistered_code() -> None:
    assert info("fss-invalid").family == "fss"
    with pytest.raises(ValueError, match="'nope'"):
        info("nope")
