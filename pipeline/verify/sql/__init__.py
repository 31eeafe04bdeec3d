"""The reconciliation SQL of ``verify-tier --inventory``: one source, rendered per engine.

``reconcile.sql`` is written in DuckDB's dialect (the embedded reference engine) and
rendered with sqlglot for the others (``athena`` = Trino SQL, as Athena engine v3 runs it).
Values are substituted as literals before rendering, each one validated or quoted here,
never taken as SQL text from the command line.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from dataclasses import dataclass
from importlib import resources
from typing import Any

DIALECTS = {"duckdb": "duckdb", "athena": "athena"}
SOURCE_DIALECT = "duckdb"
_NAME = re.compile(r"^-- name: ([a-z_]+)\s*$", re.M)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def _sqlglot() -> Any:
    try:
        import sqlglot
    except ImportError as exc:  # the fleet extra
        raise RuntimeError("verify-tier --inventory needs sqlglot: pip install 'worm-pipeline[fleet]'") from exc
    return sqlglot


def statements() -> dict[str, str]:
    """name -> SQL text (with $placeholders) of every statement in reconcile.sql."""
    text = resources.files(__package__).joinpath("reconcile.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    out: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        out[name] = body.strip().rstrip(";")
    return out


def identifier(name: str) -> str:
    """A table name (``table`` or ``database.table``), refused unless plain."""
    if not _IDENT.match(name):
        raise ValueError(f"table name {name!r}: use letters, digits and _ (optionally database.table)")
    return name


def literal(value: str) -> str:
    """A SQL string literal ('' doubles a quote; the same in DuckDB and Trino)."""
    return "'" + value.replace("'", "''") + "'"


def timestamp(t: dt.datetime) -> str:
    """A timestamp-with-time-zone literal both engines read."""
    u = t.astimezone(dt.UTC)
    return f"CAST({literal(u.strftime('%Y-%m-%d %H:%M:%S.%f'))} || ' UTC' AS TIMESTAMP WITH TIME ZONE)"


@dataclass(frozen=True)
class Params:
    inventory_table: str
    index_table: str
    bucket: str
    prefix: str  # the store prefix with a trailing "/", or ""
    inventory_time: dt.datetime
    now: dt.datetime
    retention_days: int
    expiry_warning_days: int
    heartbeat_ms: int
    check_locks: bool
    stream: str | None = None
    fraction: float = 0.0
    covering: tuple[tuple[str, int], ...] = ()  # (stream, seq): the segment holding that seq is sampled

    def values(self) -> dict[str, str]:
        for table in (self.inventory_table, self.index_table):
            identifier(table)
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError("the sample fraction must be between 0 and 1")
        covering = " OR ".join(f"(stream = {literal(s)} AND first_seq <= {int(q)} AND last_seq >= {int(q)})"
                               for s, q in self.covering) or "FALSE"
        return {
            "inventory": self.inventory_table, "index": self.index_table, "bucket": literal(self.bucket),
            "prefix": literal(self.prefix), "prefix_re": literal(re.escape(self.prefix)),
            "inventory_time": timestamp(self.inventory_time), "now": timestamp(self.now),
            "retention_days": str(int(self.retention_days)), "expiry_warning_days": str(int(self.expiry_warning_days)),
            "heartbeat_ms": str(int(self.heartbeat_ms)), "check_locks": "TRUE" if self.check_locks else "FALSE",
            "stream_filter": f"stream = {literal(self.stream)}" if self.stream else "TRUE",
            "genesis": literal("0" * 64), "fraction": repr(float(self.fraction)), "covering": f"({covering})",
        }


def source(name: str, params: Params) -> str:
    """Statement ``name`` with its values substituted, still in the source (DuckDB) dialect."""
    return string.Template(statements()[name]).substitute(params.values())


def render(name: str, params: Params, engine: str) -> str:
    """Statement ``name`` as engine ``engine`` (duckdb | athena) runs it."""
    return to_engine(source(name, params), engine)


def to_engine(text: str, engine: str) -> str:
    """SQL in the source (DuckDB) dialect as ``engine`` runs it: the one translation."""
    if engine not in DIALECTS:
        raise ValueError(f"unknown engine {engine!r}: use {' or '.join(DIALECTS)}")
    sqlglot = _sqlglot()
    tree = sqlglot.parse_one(text, read=SOURCE_DIALECT)
    if engine != "duckdb":
        # MATERIALIZED is a DuckDB planning hint Trino does not accept: its planner decides
        for cte in tree.find_all(sqlglot.exp.CTE):
            cte.set("materialized", None)
    return str(tree.sql(dialect=DIALECTS[engine], pretty=True))
