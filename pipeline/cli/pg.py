"""``pipeline pg``: the PostgreSQL layer (docs/POSTGRES.md).

  install   harden an audit table: INSERT-only role, refusing triggers (ALWAYS), DDL record,
            publication and replication slot for the sidecar's [source.postgres]
  check     report the hardening as it is; exit 1 when a layer is missing or switched off
  verify    compare the table with the chain (hot and cold), and primary with replica

Needs psycopg 3: pip install 'worm-pipeline[postgres]'.  Exit codes: 0 ok, 1 findings,
2 could not run (connection, permissions, a source that has not caught up).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from pipeline.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK
from pipeline.cli._common import DURATION_HELP, add_verb, duration, err, refuse_wrong_hot
from pipeline.errors import PipelineError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_verb(sub, "pg", summary="PostgreSQL audit tables: install the hardening, check it, verify against "
                 "the chain", description=__doc__ or "",
                 examples=[("harden audit.events (prints every statement it runs)",
                            "pipeline pg install --dsn 'host=db dbname=app user=postgres'"),
                           ("only print the SQL, for a DBA to review",
                            "pipeline pg install --dsn 'host=db dbname=app' --print-sql"),
                           ("report privileges, triggers and who could bypass them",
                            "pipeline pg check --dsn 'host=db dbname=app user=auditor' --json"),
                           ("the table against the chain and the locked cold copies, and against the replica",
                            "pipeline pg verify --dsn 'host=db dbname=app' --hot /var/lib/worm "
                            "--cold s3://audit-logs/prod --replica 'host=replica dbname=app'")])
    verbs = p.add_subparsers(dest="pg_verb", metavar="SUBCOMMAND")
    verbs.required = True

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--dsn", required=True, help="libpq connection string or URI of the primary (no password: "
                       "use ~/.pgpass, passfile= or PGPASSWORD)")
        q.add_argument("--schema", default="audit", help="schema of the audit table (default audit)")
        q.add_argument("--table", default="events", help="the audit table (default events)")

    i = verbs.add_parser("install", help="create or re-apply the hardening (superuser)",
                         description="Create, idempotently: schema, table, roles (audit_writer: INSERT only; "
                         "audit_reader: SELECT; audit_tail: LOGIN REPLICATION for the source), REVOKEs from PUBLIC, "
                         "triggers refusing UPDATE/DELETE/TRUNCATE enabled ALWAYS, the DDL-recording event "
                         "triggers, the publication and the replication slot.  Prints each statement as it runs.")
    common(i)
    i.add_argument("--print-sql", action="store_true", help="print the SQL and change nothing (no connection)")
    i.add_argument("--no-slot", action="store_true", help="everything but the replication slot: for a replica, "
                   "which nothing tails (no wal_level = logical needed)")
    i.set_defaults(func=run_install)

    c = verbs.add_parser("check", help="report the hardening as it is (exit 1 when a layer is missing or off)")
    common(c)
    c.add_argument("--no-slot", action="store_true", help="a replica: do not judge the slot, the publication "
                   "and wal_level")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=run_check)

    v = verbs.add_parser("verify", help="table against chain (hot, cold) and primary against replica",
                         description="Every row of the table is in the chain with identical content, every row "
                         "the chain holds is still in the table unchanged; with --replica, every difference between "
                         "primary and replica.  The same JSON report shape and exit codes as verify-tier.")
    common(v)
    v.add_argument("--hot", type=Path, help="the hot tier the sidecar writes (required unless --replica-only)")
    v.add_argument("--stream", action="append", default=[], help="stream(s) holding the events (default: every "
                   "stream of the hot tier)")
    v.add_argument("--cold", help="cold store URL: also read the segments no longer on the hot disk")
    v.add_argument("--replica", help="libpq connection string of the replica to compare with the primary")
    v.add_argument("--replica-only", action="store_true", help="only compare primary and replica")
    v.add_argument("--slot", help="the source's slot (default <schema>_<table>_chain)")
    v.add_argument("--config", type=Path, help="the sidecar's pipeline.toml: its [sanitise] rules say what was "
                   "redacted before logging (default: the built-in rules)")
    v.add_argument("--wait", type=duration, default=30.0, help=f"how long to wait for the source to log the "
                   f"newest rows, {DURATION_HELP} (default 30s)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=run_verify)


class _NeverRaised(PipelineError):
    """Raised by nothing: the ``Error`` of ``_NoPsycopg``, so that its except clauses match nothing."""


class _NoPsycopg:
    """Stands in for the module until it is imported (its ``Error`` matches nothing)."""

    Error = _NeverRaised


def _target(args: argparse.Namespace) -> Any:
    from pipeline.pg.install import Target

    return Target(args.schema, args.table)


def _connect(dsn: str) -> Any:
    from pipeline.pg.reconcile import connect

    return connect(dsn)


def _db_error(exc: BaseException) -> int:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    err(f"PostgreSQL: {text}")
    return EXIT_ERROR


def run_install(args: argparse.Namespace) -> int:
    from pipeline.pg import PgError, require_psycopg
    from pipeline.pg.install import install, install_statements, slot_statement

    psycopg: Any = _NoPsycopg
    try:
        target = _target(args)
        if args.print_sql:
            for stmt in [*install_statements(target), *([] if args.no_slot else [slot_statement(target)])]:
                print(stmt + ";\n")
            return EXIT_OK
        psycopg = require_psycopg()
        conn = _connect(args.dsn)
    except PgError as exc:
        err(str(exc))
        return EXIT_ERROR
    except psycopg.Error as exc:
        return _db_error(exc)
    try:
        install(conn, target, echo=lambda stmt: print(stmt + ";\n", flush=True), slot=not args.no_slot)
    except PgError as exc:
        err(str(exc))
        return EXIT_ERROR
    except psycopg.Error as exc:
        return _db_error(exc)
    finally:
        conn.close()
    print(f"-- installed: {target.qualified} hardened, publication {target.publication}"
          + ("" if args.no_slot else f", slot {target.slot}"))
    return EXIT_OK


def run_check(args: argparse.Namespace) -> int:
    from pipeline.pg import PgError, require_psycopg
    from pipeline.pg.install import check

    psycopg: Any = _NoPsycopg
    try:
        psycopg = require_psycopg()
        target = _target(args)
        conn = _connect(args.dsn)
        try:
            rep = check(conn, target, slot=not args.no_slot)
        finally:
            conn.close()
    except PgError as exc:
        err(str(exc))
        return EXIT_ERROR
    except psycopg.Error as exc:
        return _db_error(exc)
    if args.json:
        doc = {"schema": "worm-pipeline/pg-check/v1", "ok": rep.ok, "table": target.qualified,
               "facts": [{"topic": t, "fact": f} for t, f in rep.facts],
               "findings": [f.to_dict() for f in rep.findings],
               "totals": {"errors": sum(1 for f in rep.findings if f.severity == "error"),
                          "warnings": sum(1 for f in rep.findings if f.severity == "warning")}}
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for topic, fact in rep.facts:
            print(f"{topic}: {fact}")
        for f in rep.findings:
            print(f"{'INVALID' if f.severity == 'error' else 'warning'}: {f.code}: {f.message}")
        errors = sum(1 for f in rep.findings if f.severity == "error")
        print(f"{'OK' if rep.ok else 'FAILED'}: {target.qualified}: {errors} error(s)")
    return EXIT_OK if rep.ok else EXIT_FINDINGS


def run_verify(args: argparse.Namespace) -> int:
    from pipeline.pg import PgError, require_psycopg
    from pipeline.pg.reconcile import VerifyOptions, verify
    from pipeline.pg.report import render

    if args.replica_only and not args.replica:
        err("pg verify --replica-only needs --replica DSN")
        return EXIT_ERROR
    if not args.replica_only:
        if args.hot is None:
            err("pg verify needs --hot DIR (the chain to compare with), or --replica DSN --replica-only")
            return EXIT_ERROR
        refused = refuse_wrong_hot(args.hot)
        if refused is not None:
            return refused
    store = None
    psycopg: Any = _NoPsycopg
    try:
        psycopg = require_psycopg()
        target = _target(args)
        sanitiser = _sanitiser(args.config)
        if args.cold and not args.replica_only:
            from pipeline.cli._common import open_for_reading

            store = open_for_reading(args.cold, args)
        opts = VerifyOptions(target=target, hot=args.hot, streams=args.stream or None, cold_store=store,
                             slot=args.slot, replica_dsn=args.replica, chain=not args.replica_only, wait=args.wait,
                             sanitiser=sanitiser)
        report = verify(args.dsn, opts)
    except PgError as exc:
        err(str(exc))
        return EXIT_ERROR
    except psycopg.Error as exc:
        return _db_error(exc)
    finally:
        if store is not None:
            store.close()
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render(report))
    return EXIT_OK if report.ok else EXIT_FINDINGS


def _sanitiser(config: Path | None) -> Any:
    from pipeline.config import load_config
    from pipeline.sanitise import Sanitiser

    if config is None:
        return Sanitiser(max_event_bytes=1 << 30)
    cfg = load_config(config)
    return cfg.sanitise.sanitiser(max_event_bytes=1 << 30)
