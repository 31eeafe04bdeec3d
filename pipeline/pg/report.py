"""Findings and the report of ``pipeline pg verify`` / ``pg check``, in verify-tier's shape.

``PgFinding.to_dict`` writes exactly the keys of verify-tier's findings (``code``,
``severity``, ``stream``, ``segment``, ``key``, ``seq``, ``message``, ``offset``,
``reason``: ``pipeline.findings.Finding.to_dict`` through ``as_finding``, the one adapter
to the shared finding type) plus ``changes`` (column -> [logged, now]).  The
mapping: ``stream`` = the table (``audit.events``), ``key`` = the row's primary key as
text, ``seq`` = the chain record holding the row (when there is one), ``segment`` = its
segment file.  The report has verify-tier's top-level keys (``schema``, ``ok``, ``mode``,
``findings``, ``totals``, ``elapsed_s``).  Exit codes: 0 ok, 1 findings, 2 could not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.findings import ERROR, WARNING, Finding, codes, info

__all__ = ["CODES", "ERROR", "SCHEMA", "WARNING", "PgFinding", "PgReport"]
SCHEMA = "worm-pipeline/pg-verify/v1"

# every code pg verify and pg check can report: their view of the one registry
# (pipeline.findings; docs/POSTGRES.md lists the same tables, tests/verify/test_findings.py
# checks they agree)
CODES: dict[str, tuple[str, str]] = {
    c: (i.severity, i.meaning) for family in ("pg", "pg-check") for c, i in codes(family=family).items()}


@dataclass(frozen=True)
class PgFinding:
    code: str
    table: str
    message: str
    row: str | None = None  # the primary key, as text
    changes: dict[str, list[Any]] = field(default_factory=dict)  # column -> [logged, now]
    seq: int | None = None
    segment: str = ""
    severity: str = ""

    def __post_init__(self) -> None:
        registered = info(self.code).severity  # ValueError for a code the registry does not know
        if not self.severity:
            object.__setattr__(self, "severity", registered)
        elif self.severity != registered:
            raise ValueError(f"finding {self.code!r} is registered as {registered}, not {self.severity}")

    def to_dict(self) -> dict[str, Any]:
        """verify-tier's finding keys, written by the shared type itself (``offset`` null,
        ``reason`` = ``code``), plus ``changes``."""
        out = self.as_finding().to_dict()
        out["changes"] = self.changes
        return out

    def as_finding(self) -> Finding:
        """The same finding in the one findings model (without ``changes``)."""
        return Finding.of(self.code, self.table, self.segment, self.message, self.seq, self.row)


@dataclass
class PgReport:
    mode: str  # "chain" | "chain+replica" | "replica"
    tables: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> counts
    findings: list[PgFinding] = field(default_factory=list)
    sources: dict[str, Any] = field(default_factory=dict)  # what was compared
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    def totals(self) -> dict[str, int]:
        out = {"rows": 0, "logged": 0, "errors": 0, "warnings": 0}
        for counts in self.tables.values():
            out["rows"] += counts.get("rows", 0)
            out["logged"] += counts.get("logged", 0)
        out["errors"] = sum(1 for f in self.findings if f.severity == ERROR)
        out["warnings"] = sum(1 for f in self.findings if f.severity == WARNING)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "ok": self.ok, "mode": self.mode, "sources": self.sources,
                "tables": self.tables, "findings": [f.to_dict() for f in self.findings],
                "totals": self.totals(), "elapsed_s": round(self.elapsed_s, 3)}


def render(report: PgReport) -> str:
    out: list[str] = []
    for f in report.findings:
        where = f"{f.table} id {f.row}" if f.row is not None else f.table
        out.append(f"{'INVALID' if f.severity == ERROR else 'warning'}: {f.code}: {where}: {f.message}")
        # [logged, now] against the chain; [replica, primary] against the replica; [old, new]
        # for a change the chain recorded
        first, second = {"replica": ("replica", "primary"), "change": ("old", "new")}.get(
            f.code.split("-")[0], ("logged", "now"))
        for col, (was, now) in sorted(f.changes.items()):
            out.append(f"    {col}: {first} {_short(was)}, {second} {_short(now)}")
    for table, counts in report.tables.items():
        out.append(f"{table}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    t = report.totals()
    out.append(f"{'OK' if report.ok else 'FAILED'}: {t['rows']} rows, {t['logged']} logged, {t['errors']} error(s), "
               f"{t['warnings']} warning(s) in {report.elapsed_s:.1f} s [{report.mode}]")
    return "\n".join(out)


def _short(value: Any) -> str:
    import orjson

    text = orjson.dumps(value).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
