"""The reconciliation SQL: one source, rendered per engine; Athena driven through a boto3 Stubber."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlglot
from botocore.stub import Stubber

from pipeline.cold import ColdSettings, open_store
from pipeline.verify import sql as sqlmod
from pipeline.verify.inventory import DuckDBEngine, InventoryOptions, verify_inventory
from tests.tierutil import new_bucket, ship_pipeline
from tests.verify.inventoryutil import write_inventory

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def params(**kw: Any) -> sqlmod.Params:
    base: dict[str, Any] = dict(inventory_table="s3_inventory", index_table="segment_index", bucket="b'x",
                                prefix="audit/", inventory_time=NOW, now=NOW, retention_days=2555,
                                expiry_warning_days=30, heartbeat_ms=60_000, check_locks=True, stream="app",
                                fraction=0.001, covering=(("app", 17),))
    base.update(kw)
    return sqlmod.Params(**base)


@pytest.mark.parametrize("name", sorted(sqlmod.statements()))
def test_every_statement_renders_as_trino_and_runs_on_duckdb(name: str, tmp_path: Path) -> None:
    athena = sqlmod.render(name, params(), "athena")
    assert "AS MATERIALIZED" not in athena  # a DuckDB hint Trino rejects
    for dialect in ("trino", "athena"):
        sqlglot.parse_one(athena, read=dialect)  # raises on anything Trino cannot parse
    # the quoted bucket name stays one literal in both renderings
    assert "'b''x'" in athena or name in ("continuity", "summary", "sample")
    # the same source, rendered for DuckDB, runs against the two schemas (empty tables)
    from pipeline.ship.index import PartMeta, build_part

    index = tmp_path / "part.parquet"
    index.write_bytes(build_part(PartMeta("1", "app", "2026-12-01", 0, "0" * 64, 0, 0, 0), []))
    engine = DuckDBEngine([], [index], "s3_inventory", "segment_index", tmp_path)
    try:
        assert list(engine.query(sqlmod.render(name, params(), "duckdb"))) == []
    finally:
        engine.close()


def test_values_are_literals_not_sql() -> None:
    with pytest.raises(ValueError, match="table name"):
        sqlmod.render("summary", params(index_table="x; DROP TABLE y"), "duckdb")
    with pytest.raises(ValueError, match="fraction"):
        sqlmod.render("sample", params(fraction=2.0), "duckdb")
    rendered = sqlmod.render("summary", params(stream="a'b"), "athena")
    assert "'a''b'" in rendered


def _athena_value(v: Any) -> dict[str, str]:
    if v is None:
        return {}
    if isinstance(v, bool):
        return {"VarCharValue": "true" if v else "false"}
    return {"VarCharValue": str(v)}


def _athena_type(rows: list[tuple[Any, ...]], col: int) -> str:
    vals = [r[col] for r in rows if r[col] is not None]
    if vals and all(isinstance(v, bool) for v in vals):
        return "boolean"
    if vals and all(isinstance(v, int) for v in vals):
        return "bigint"
    return "varchar"


@pytest.mark.slow
def test_athena_submits_the_sql_duckdb_ran(tmp_path: Path, moto_endpoint: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pl = ship_pipeline(tmp_path, moto_endpoint, segments=3, events_per_segment=10, lock=True)
    pl.client.delete_object(Bucket=pl.bucket, Key=pl.object_keys()[1])
    dest = new_bucket(moto_endpoint)
    manifest = write_inventory(pl.client, pl.bucket, dest, endpoint=moto_endpoint)
    index = f"s3://{pl.bucket}/{pl.prefix}/_index/?endpoint_url={moto_endpoint}&region=us-east-1"

    ran: list[tuple[str, list[tuple[Any, ...]]]] = []
    original = DuckDBEngine.query

    def recording(self: DuckDBEngine, sql: str) -> Iterator[tuple[Any, ...]]:
        rows = list(original(self, sql))
        ran.append((sql, rows))
        return iter(rows)

    monkeypatch.setattr(DuckDBEngine, "query", recording)

    def opts(**kw: Any) -> InventoryOptions:
        return InventoryOptions(inventory=manifest, index=index, retention_days=1, heartbeat_interval=0,
                                sample_fraction=0.0, witness_dirs=[pl.witness], now=NOW, **kw)

    store = open_store(pl.url, ColdSettings())
    try:
        duck = verify_inventory(store, opts())
        assert len(ran) == 6  # objects, strays, index_objects, continuity, summary, sample

        client = boto3.client("athena", region_name="us-east-1")
        with Stubber(client) as stub:
            for i, (sql, rows) in enumerate(ran):
                # the SQL DuckDB ran, translated to Athena's dialect, is what Athena must receive
                athena_sql = sqlmod.to_engine(sql, "athena")
                assert "AS MATERIALIZED" not in athena_sql
                stub.add_response("start_query_execution", {"QueryExecutionId": f"q{i}"},
                                  {"QueryString": athena_sql, "WorkGroup": "audit",
                                   "QueryExecutionContext": {"Database": "worm"}})
                stub.add_response("get_query_execution", {"QueryExecution": {"Status": {"State": "RUNNING"}}},
                                  {"QueryExecutionId": f"q{i}"})
                stub.add_response("get_query_execution", {"QueryExecution": {"Status": {"State": "SUCCEEDED"}}},
                                  {"QueryExecutionId": f"q{i}"})
                width = len(rows[0]) if rows else 8
                header = {"Data": [{"VarCharValue": f"c{c}"} for c in range(width)]}
                info = [{"Name": f"c{c}", "Type": _athena_type(rows, c)} for c in range(width)]
                # two result pages: Athena pages at 1,000 rows; the engine must follow NextToken
                half = len(rows) // 2
                pages = [rows[:half], rows[half:]]
                for p, chunk in enumerate(pages):
                    resp: dict[str, Any] = {"ResultSet": {
                        "Rows": ([header] if p == 0 else []) + [{"Data": [_athena_value(v) for v in r]} for r in chunk],
                        "ResultSetMetadata": {"ColumnInfo": info}}}
                    expected: dict[str, Any] = {"QueryExecutionId": f"q{i}"}
                    if p == 1:
                        expected["NextToken"] = f"t{i}"
                    if p == 0:
                        resp["NextToken"] = f"t{i}"
                    stub.add_response("get_query_results", resp, expected)
            monkeypatch.setattr("pipeline.verify.inventory.time.sleep", lambda s: None)
            athena = verify_inventory(store, opts(engine="athena", workgroup="audit", athena_database="worm",
                                                  athena_client=client))
            stub.assert_no_pending_responses()
    finally:
        store.close()

    def key(r: Any) -> list[tuple[str, str, str, int | None]]:
        return sorted((f.code, f.stream, f.segment, f.seq) for f in r.findings)

    assert key(duck) == key(athena)
    assert {"missing-object", "delete-marker"} <= {f.code for f in athena.findings}
    assert athena.totals()["segments"] == duck.totals()["segments"] == 3
    assert athena.requests["other"] == 6 * 5  # start + 2 polls + 2 result pages per statement
