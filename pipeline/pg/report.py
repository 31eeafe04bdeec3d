"""Findings and the report of ``pipeline pg verify`` / ``pg check``, in verify-tier's shape.

``PgFinding.to_dict`` writes exactly the keys of ``pipeline.verify.tier.TierFinding``
(``code``, ``severity``, ``stream``, ``segment``, ``key``, ``seq``, ``message``) plus
``changes`` (column -> [logged, now]); ``as_tier_finding`` is the thin adapter to the
shared finding type, so that whatever unifies findings later changes one function.  The
mapping: ``stream`` = the table (``audit.events``), ``key`` = the row's primary key as
text, ``seq`` = the chain record holding the row (when there is one), ``segment`` = its
segment file.  The report has verify-tier's top-level keys (``schema``, ``ok``, ``mode``,
``findings``, ``totals``, ``elapsed_s``).  Exit codes: 0 ok, 1 findings, 2 could not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ERROR, WARNING = "error", "warning"
SCHEMA = "worm-pipeline/pg-verify/v1"

# every code pg verify can report, with its meaning (docs/POSTGRES.md lists them)
CODES: dict[str, tuple[str, str]] = {
    "row-changed": (ERROR, "a row differs from what the chain logged when it was committed"),
    "row-deleted": (ERROR, "a row the chain logged is no longer in the table"),
    "row-not-logged": (ERROR, "a row in the table is not in the chain (committed while the source was blind, "
                              "or inserted behind the slot)"),
    "row-logged-twice": (ERROR, "the chain holds two INSERT events for one row"),
    "change-logged": (ERROR, "the chain recorded an UPDATE, DELETE or TRUNCATE of the audit table"),
    "gap-logged": (ERROR, "the chain recorded that the source could not read part of the WAL"),
    "reset-logged": (ERROR, "the chain recorded that the database's history was rewound (a restore, a promotion, "
                            "a slot that went back): positions start over there"),
    "replica-row-differs": (ERROR, "primary and replica hold different values for a row"),
    "replica-row-missing": (ERROR, "a row of the primary is not on the replica"),
    "replica-row-extra": (ERROR, "the replica holds a row the primary does not"),
    "replica-lagging": (WARNING, "the replica has not yet applied the newest rows of the primary"),
    "redacted": (WARNING, "a value the sanitiser redacted before logging cannot be compared"),
    "chain-unreadable": (ERROR, "a chain record could not be read"),
    # pg check
    "wal-level": (ERROR, "wal_level is not logical: the table cannot be tailed into the chain"),
    "encoding": (ERROR, "the database is not UTF8"),
    "table-missing": (ERROR, "the audit table does not exist"),
    "public-privilege": (ERROR, "PUBLIC holds a privilege on the schema, table or sequence"),
    "writer-cannot-insert": (ERROR, "the writer role cannot insert"),
    "writer-privilege": (ERROR, "the writer role holds more than INSERT"),
    "change-privilege": (ERROR, "a role other than the owner may UPDATE, DELETE, TRUNCATE or add triggers"),
    "trigger-missing": (ERROR, "a refusing trigger is missing"),
    "trigger-disabled": (ERROR, "a refusing trigger is disabled or not enabled ALWAYS"),
    "event-trigger-missing": (ERROR, "the DDL-recording event trigger is missing"),
    "event-trigger-disabled": (ERROR, "the DDL-recording event trigger is disabled or not enabled ALWAYS"),
    "publication-missing": (ERROR, "the publication the source reads does not exist"),
    "publication-incomplete": (ERROR, "the publication lacks a table"),
    "slot-missing": (ERROR, "the source's replication slot does not exist"),
    "slot-plugin": (ERROR, "the slot uses another output plugin"),
    "slot-lost": (ERROR, "the slot was invalidated: WAL it needed is gone"),
    "slot-behind-retention": (ERROR, "the slot is past max_slot_wal_keep_size"),
    "can-bypass": (WARNING, "a role that could get past the triggers"),
}


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
        if not self.severity:
            object.__setattr__(self, "severity", CODES.get(self.code, (ERROR, ""))[0])

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "stream": self.table, "segment": self.segment,
                "key": self.row, "seq": self.seq, "message": self.message, "changes": self.changes}

    def as_tier_finding(self) -> Any:
        """The same finding as verify-tier's ``TierFinding`` (without ``changes``)."""
        from pipeline.verify.tier import TierFinding

        return TierFinding(self.code, self.table, self.segment, self.message, self.seq, self.row)


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
        for col, (was, now) in sorted(f.changes.items()):
            out.append(f"    {col}: logged {_short(was)}, now {_short(now)}")
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
