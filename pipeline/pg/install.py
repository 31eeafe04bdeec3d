"""``pipeline pg install`` (the hardening SQL) and ``pipeline pg check`` (the hardening as it is).

Three layers protect an audit table in PostgreSQL (docs/POSTGRES.md says what each one
stops and where it ends):

1. privileges: ``audit_writer`` may only INSERT (and take ids from the sequence); PUBLIC
   has nothing on the schema, the table or the sequence;
2. triggers: a row trigger refuses UPDATE and DELETE and a statement trigger refuses
   TRUNCATE, for every role including the owner and superusers, enabled ``ALWAYS`` so that
   ``session_replication_role = replica`` does not switch them off; an event trigger
   records every DDL command on the schema in ``<schema>.ddl_log`` (itself INSERT-only),
   so that ``ALTER TABLE ... DISABLE TRIGGER`` leaves evidence;
3. the chain: a publication and a logical replication slot through which the sidecar's
   source carries every committed row (and every ``ddl_log`` row) into the hash chain.

Everything is idempotent: running install again re-applies the same state (and leaves a
``ddl_log`` row for each DDL it ran, which is the point of the log).
"""

# The SQL below is built from schema and table names that check_identifier restricted to
# [a-z_][a-z0-9_]* (no quoting to get wrong), so that --print-sql shows exactly what runs.
# ruff: noqa: S608

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.pg import PgError

WRITER_ROLE = "audit_writer"
READER_ROLE = "audit_reader"
TAIL_ROLE = "audit_tail"
DDL_LOG = "ddl_log"
ROW_TRIGGER = "append_only_no_update_delete"
TRUNCATE_TRIGGER = "append_only_no_truncate"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")
# a relation's OID from "schema.name" through the catalogs, which every role may read:
# ::regclass would need USAGE on the schema, which install gives neither the source's role
# nor an auditor (two parameters: the qualified name twice)
REL_OID = ("(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
           "WHERE n.nspname = split_part(%s, '.', 1) AND c.relname = split_part(%s, '.', 2))")


def check_identifier(what: str, name: str) -> str:
    """Schema and table names are written into SQL and into object names: lower-case
    letters, digits and ``_`` only (no quoting rules to get wrong), at most 48 characters
    so that the derived names stay within PostgreSQL's 63."""
    if not _IDENT.match(name):
        raise PgError(f"{what} {name!r}: use 1-48 characters from a-z 0-9 _, starting with a letter or _")
    return name


@dataclass(frozen=True)
class Target:
    """The names install creates for one audit table."""

    schema: str = "audit"
    table: str = "events"

    def __post_init__(self) -> None:
        check_identifier("--schema", self.schema)
        check_identifier("--table", self.table)
        if len(self.schema) + len(self.table) > 56:
            raise PgError(f"--schema and --table: at most 56 characters together (the slot is "
                          f"<schema>_<table>_chain, and PostgreSQL names end at 63), got {self.schema}.{self.table}")
        if self.table == DDL_LOG:
            raise PgError(f"--table {DDL_LOG} is the name of the schema's DDL log; choose another table name")

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def ddl_log(self) -> str:
        return f"{self.schema}.{DDL_LOG}"

    @property
    def sequence(self) -> str:
        return f"{self.schema}.{self.table}_id_seq"

    @property
    def slot(self) -> str:
        return f"{self.schema}_{self.table}_chain"

    @property
    def publication(self) -> str:
        return f"{self.schema}_{self.table}_chain"

    @property
    def event_trigger(self) -> str:
        return f"{self.schema}_record_ddl"

    @property
    def refuse_function(self) -> str:
        return f"{self.schema}.append_only_refuse"

    @property
    def ddl_function(self) -> str:
        return f"{self.schema}.record_ddl"

    def tables(self) -> list[str]:
        """The tables the source tails and the reconciliation compares."""
        return [self.qualified, self.ddl_log]


def primary_key(conn: Any, table: str) -> list[str]:
    """The primary key columns of ``schema.table``, in key order (empty: none)."""
    rows = conn.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                        f"AND a.attnum = ANY(i.indkey) WHERE i.indrelid = {REL_OID} AND i.indisprimary "
                        "ORDER BY array_position(i.indkey::int2[], a.attnum)", (table, table)).fetchall()
    return [r[0] for r in rows]


def table_columns(conn: Any, table: str) -> list[tuple[str, int]]:
    """(name, type OID) of every column of ``schema.table``, in order (empty: no such table)."""
    rows = conn.execute(f"SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = {REL_OID} "
                        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (table, table)).fetchall()
    return [(r[0], r[1]) for r in rows]


def install_statements(t: Target) -> list[str]:
    """The SQL of ``pipeline pg install``, one statement per item, in order."""
    s, q, ddl = t.schema, t.qualified, t.ddl_log
    stmts = [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        # the seed design's columns; detail as JSONB
        f"""CREATE TABLE IF NOT EXISTS {q} (
    id          bigserial PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text,
    detail      jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    client_addr inet DEFAULT inet_client_addr(),
    db_user     text NOT NULL DEFAULT session_user
)""",
        f"""CREATE TABLE IF NOT EXISTS {ddl} (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    db_user         text NOT NULL DEFAULT session_user,
    event           text NOT NULL,
    command_tag     text NOT NULL,
    object_type     text,
    object_identity text,
    command         text
)""",
        # an UPDATE or DELETE that gets past the triggers carries the whole old row in the
        # WAL, so the chain receives what was there before
        f"ALTER TABLE {q} REPLICA IDENTITY FULL",
        f"ALTER TABLE {ddl} REPLICA IDENTITY FULL",
        _create_role(WRITER_ROLE, "NOLOGIN"),
        _create_role(READER_ROLE, "NOLOGIN"),
        # the source's role: REPLICATION (to read the slot) is a role attribute, not
        # inherited through membership, so it is the login role itself
        _create_role(TAIL_ROLE, "LOGIN REPLICATION"),
        f"REVOKE ALL ON SCHEMA {s} FROM PUBLIC",
    ]
    for table in (q, ddl):
        seq = f"{table}_id_seq"
        stmts += [
            f"REVOKE ALL ON TABLE {table} FROM PUBLIC",
            f"REVOKE ALL ON SEQUENCE {seq} FROM PUBLIC",
            f"REVOKE ALL ON TABLE {table} FROM {WRITER_ROLE}, {READER_ROLE}, {TAIL_ROLE}",
            f"REVOKE ALL ON SEQUENCE {seq} FROM {WRITER_ROLE}, {READER_ROLE}, {TAIL_ROLE}",
            f"GRANT SELECT ON TABLE {table} TO {READER_ROLE}",
        ]
    stmts += [
        f"GRANT USAGE ON SCHEMA {s} TO {WRITER_ROLE}, {READER_ROLE}",
        f"GRANT INSERT ON TABLE {q} TO {WRITER_ROLE}",
        f"GRANT USAGE ON SEQUENCE {t.sequence} TO {WRITER_ROLE}",
        f"""CREATE OR REPLACE FUNCTION {t.refuse_function}() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $worm${refuse_body()}$worm$""",
        f"""CREATE OR REPLACE FUNCTION {t.ddl_function}() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $worm${ddl_body(t)}$worm$""",
        f"REVOKE ALL ON FUNCTION {t.ddl_function}() FROM PUBLIC",
    ]
    for table in (q, ddl):
        stmts += [
            f"CREATE OR REPLACE TRIGGER {ROW_TRIGGER} BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {t.refuse_function}()",
            f"CREATE OR REPLACE TRIGGER {TRUNCATE_TRIGGER} BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {t.refuse_function}()",
            # ALWAYS: also under session_replication_role = replica (a logical replication
            # apply worker, or a session that sets it to skip ordinary triggers)
            f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {ROW_TRIGGER}",
            f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {TRUNCATE_TRIGGER}",
        ]
    stmts += [
        f"""DO $worm$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = '{t.event_trigger}') THEN
        CREATE EVENT TRIGGER {t.event_trigger} ON ddl_command_end EXECUTE FUNCTION {t.ddl_function}();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = '{t.event_trigger}_drop') THEN
        CREATE EVENT TRIGGER {t.event_trigger}_drop ON sql_drop EXECUTE FUNCTION {t.ddl_function}();
    END IF;
END $worm$""",
        f"ALTER EVENT TRIGGER {t.event_trigger} ENABLE ALWAYS",
        f"ALTER EVENT TRIGGER {t.event_trigger}_drop ENABLE ALWAYS",
        f"""DO $worm$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = '{t.publication}') THEN
        CREATE PUBLICATION {t.publication} FOR TABLE {q}, {ddl};
    ELSE
        ALTER PUBLICATION {t.publication} SET TABLE {q}, {ddl};
    END IF;
END $worm$""",
        f"ALTER PUBLICATION {t.publication} SET (publish = 'insert, update, delete, truncate')",
    ]
    return stmts


# The bodies of the two functions install creates: check and the source compare what the
# server holds with them (a function replaced by one that lets the change through leaves
# its trigger "enabled ALWAYS").
def refuse_body() -> str:
    return """
BEGIN
    RAISE EXCEPTION 'worm-pipeline: % on %.% refused: audit rows are append-only', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
"""


def ddl_body(t: Target) -> str:
    s, ddl = t.schema, t.ddl_log
    return f"""
DECLARE r record;
BEGIN
    IF TG_EVENT = 'sql_drop' THEN
        FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
            IF r.schema_name = '{s}' OR (r.object_type = 'schema' AND r.object_identity = '{s}') THEN
                INSERT INTO {ddl} (event, command_tag, object_type, object_identity, command)
                VALUES (TG_EVENT, TG_TAG, r.object_type, r.object_identity, current_query());
            END IF;
        END LOOP;
    ELSE
        FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
            IF r.schema_name = '{s}' OR (r.object_type = 'schema' AND r.object_identity = '{s}') THEN
                INSERT INTO {ddl} (event, command_tag, object_type, object_identity, command)
                VALUES (TG_EVENT, r.command_tag, r.object_type, r.object_identity, current_query());
            END IF;
        END LOOP;
    END IF;
END
"""


# pg_trigger.tgtype of the refusing triggers: ROW(1) | BEFORE(2) | DELETE(8) | UPDATE(16),
# and BEFORE(2) | TRUNCATE(32) for each statement
TRIGGER_TYPES = {ROW_TRIGGER: 1 | 2 | 8 | 16, TRUNCATE_TRIGGER: 2 | 32}


def trigger_states(conn: Any, t: Target) -> dict[tuple[str, str], tuple[str, list[str]]]:
    """The refusing triggers found on the tables: (table, trigger) -> (tgenabled, what in
    its definition differs from what install made: another function, a changed function
    body or language, a WHEN condition, a column list, other events)."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname, tg.tgname, tg.tgenabled::text, tg.tgtype::int, tg.tgqual IS NOT NULL, "
        "coalesce(array_length(tg.tgattr::int2[], 1), 0), pn.nspname || '.' || p.proname, p.prosrc, l.lanname "
        "FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_proc p ON p.oid = tg.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace "
        "JOIN pg_language l ON l.oid = p.prolang "
        "WHERE tg.tgname IN (%s, %s) AND NOT tg.tgisinternal AND n.nspname || '.' || c.relname = ANY(%s)",
        (ROW_TRIGGER, TRUNCATE_TRIGGER, t.tables())).fetchall()
    out: dict[tuple[str, str], tuple[str, list[str]]] = {}
    for table, name, enabled, tgtype, has_when, ncols, func, src, lang in rows:
        altered = []
        if func != t.refuse_function:
            altered.append(f"calls {func}, not {t.refuse_function}")
        elif src != refuse_body() or lang != "plpgsql":
            altered.append(f"function {func} was replaced (its body is not the one pg install wrote)")
        if tgtype != TRIGGER_TYPES[name]:
            altered.append(f"fires on other events (tgtype {tgtype}, not {TRIGGER_TYPES[name]})")
        if has_when:
            altered.append("has a WHEN condition")
        if ncols:
            altered.append("fires only for UPDATE OF some columns")
        out[(table, name)] = (enabled, altered)
    return out


def event_trigger_states(conn: Any, t: Target) -> dict[str, tuple[str, list[str]]]:
    """The DDL-recording event triggers found: name -> (evtenabled, what differs from what
    install made: event, a tag filter, another function, a changed function body)."""
    rows = conn.execute(
        "SELECT e.evtname, e.evtenabled::text, e.evtevent, e.evttags IS NOT NULL, pn.nspname || '.' || p.proname, "
        "p.prosrc FROM pg_event_trigger e JOIN pg_proc p ON p.oid = e.evtfoid "
        "JOIN pg_namespace pn ON pn.oid = p.pronamespace WHERE e.evtname IN (%s, %s)",
        (t.event_trigger, f"{t.event_trigger}_drop")).fetchall()
    out: dict[str, tuple[str, list[str]]] = {}
    for name, enabled, event, has_tags, func, src in rows:
        altered = []
        want = "sql_drop" if name.endswith("_drop") else "ddl_command_end"
        if event != want:
            altered.append(f"fires on {event}, not {want}")
        if has_tags:
            altered.append("fires only for some command tags (WHEN TAG IN)")
        if func != t.ddl_function:
            altered.append(f"calls {func}, not {t.ddl_function}")
        elif src != ddl_body(t):
            altered.append(f"function {func} was replaced (its body is not the one pg install wrote)")
        out[name] = (enabled, altered)
    return out


def slot_statement(t: Target) -> str:
    """Create the source's slot unless it exists (needs ``wal_level = logical``).  A slot
    PostgreSQL invalidated (``wal_status = 'lost'``: it fell behind
    ``max_slot_wal_keep_size``) cannot be read again: it is dropped and created anew,
    and the source records the gap in the chain when it next reads (docs/POSTGRES.md)."""
    return f"""DO $worm$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{t.slot}' AND wal_status = 'lost') THEN
        PERFORM pg_drop_replication_slot('{t.slot}');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{t.slot}') THEN
        PERFORM pg_create_logical_replication_slot('{t.slot}', 'pgoutput');
    END IF;
END $worm$"""


def _create_role(name: str, options: str) -> str:
    return (f"DO $worm$ BEGIN\n    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN\n"
            f"        CREATE ROLE {name} {options};\n    END IF;\nEND $worm$")


def wal_level_problem(conn: Any) -> str | None:
    """None when the server can decode logically, else one line saying what to change."""
    level = conn.execute("SHOW wal_level").fetchone()[0]
    if level == "logical":
        return None
    return (f"wal_level is {level!r}: tailing the table into the chain needs wal_level = logical "
            "(ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL)")


def install(conn: Any, t: Target, *, echo: Any = None, slot: bool = True) -> list[str]:
    """Run the hardening in one transaction; the slot after it (a slot cannot be created
    in a transaction that has written), unless ``slot`` is false (a replica, which nothing
    tails).  Returns the statements run.  Raises PgError when the connected role is not a
    superuser (event triggers need one) or when the slot cannot be created because of
    ``wal_level`` (everything else is then in place)."""
    is_super = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if not is_super or not is_super[0]:
        raise PgError("pg install needs a superuser connection (event triggers, roles with REPLICATION); "
                      "connect as one, or give the --print-sql output to your DBA")
    ran: list[str] = []
    with conn.transaction():
        for stmt in install_statements(t):
            if echo:
                echo(stmt)
            conn.execute(stmt)
            ran.append(stmt)
    if not slot:
        return ran
    problem = wal_level_problem(conn)
    if problem:
        raise PgError(problem + "; everything else is installed: run pg install again afterwards to create the slot")
    stmt = slot_statement(t)
    if echo:
        echo(stmt)
    conn.execute(stmt)
    ran.append(stmt)
    return ran


# ------------------------------------------------------------------------------ check


@dataclass
class CheckReport:
    """``pipeline pg check``: one line per fact, findings in the verify-tier shape."""

    target: Target
    facts: list[tuple[str, str]] = field(default_factory=list)  # (topic, text)
    findings: list[Any] = field(default_factory=list)  # pipeline.pg.report.PgFinding

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)


_PRIVS = {"a": "INSERT", "r": "SELECT", "w": "UPDATE", "d": "DELETE", "D": "TRUNCATE", "x": "REFERENCES",
          "t": "TRIGGER", "U": "USAGE", "C": "CREATE", "X": "EXECUTE"}


def check(conn: Any, t: Target, *, slot: bool = True) -> CheckReport:
    """The hardening as it is; with ``slot`` false (a replica) the slot, the publication
    and wal_level are not judged."""
    from pipeline.pg.report import PgFinding

    rep = CheckReport(t)

    def finding(code: str, message: str, *, table: str = "", severity: str = "error") -> None:
        rep.findings.append(PgFinding(code, table or t.qualified, message, severity=severity))

    version = conn.execute("SHOW server_version").fetchone()[0]
    level = conn.execute("SHOW wal_level").fetchone()[0]
    rep.facts.append(("server", f"PostgreSQL {version}, wal_level = {level}"))
    problem = wal_level_problem(conn) if slot else None
    if problem:
        finding("wal-level", problem)
    enc = conn.execute("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"
                       ).fetchone()[0]
    if enc != "UTF8":
        finding("encoding", f"the database encoding is {enc}: the chain holds UTF-8 JSON; use a UTF8 database")
    for table in t.tables():
        _check_table(conn, t, table, rep, finding)
    _check_event_triggers(conn, t, rep, finding)
    if slot:
        _check_slot(conn, t, rep, finding)
    _check_bypass(conn, t, rep, finding)
    return rep


def _acl(conn: Any, sql: str, args: tuple[Any, ...]) -> dict[str, set[str]]:
    rows = conn.execute(sql, args).fetchall()
    out: dict[str, set[str]] = {}
    for grantee, priv in rows:
        out.setdefault(grantee or "PUBLIC", set()).add(priv)
    return out


def _check_table(conn: Any, t: Target, table: str, rep: CheckReport, finding: Any) -> None:
    schema, name = table.split(".")
    row = conn.execute("SELECT c.oid, pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON "
                       "n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND c.relkind = 'r'",
                       (schema, name)).fetchone()
    if row is None:
        finding("table-missing", f"table {table} does not exist: run pipeline pg install", table=table)
        return
    oid, owner = row
    rep.facts.append((table, f"owner {owner}"))
    acl_sql = ("SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type "
               "FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a WHERE c.oid = %s")
    acl = _acl(conn, acl_sql, (oid,))
    for grantee, privs in sorted(acl.items()):
        rep.facts.append((table, f"{grantee}: {', '.join(sorted(privs))}"))
    if "PUBLIC" in acl:
        finding("public-privilege", f"PUBLIC holds {', '.join(sorted(acl['PUBLIC']))} on {table}", table=table)
    writer = acl.get(WRITER_ROLE, set())
    if table == t.qualified and "INSERT" not in writer:
        finding("writer-cannot-insert", f"{WRITER_ROLE} lacks INSERT on {table}", table=table)
    extra = writer - ({"INSERT"} if table == t.qualified else set())
    if extra:
        finding("writer-privilege", f"{WRITER_ROLE} holds {', '.join(sorted(extra))} on {table}: INSERT only",
                table=table)
    for grantee, privs in acl.items():
        bad = privs & {"UPDATE", "DELETE", "TRUNCATE", "TRIGGER"}
        if grantee not in ("PUBLIC", owner) and bad:
            finding("change-privilege", f"{grantee} holds {', '.join(sorted(bad))} on {table}", table=table)
    seq = f"{table}_id_seq"
    if conn.execute(f"SELECT {REL_OID} IS NOT NULL", (seq, seq)).fetchone()[0]:
        sacl = _acl(conn, "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, "
                          "a.privilege_type FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('s', "
                          f"c.relowner))) a WHERE c.oid = {REL_OID}", (seq, seq))
        if "PUBLIC" in sacl:
            finding("public-privilege", f"PUBLIC holds {', '.join(sorted(sacl['PUBLIC']))} on {seq}", table=table)
        if table == t.qualified and "USAGE" not in sacl.get(WRITER_ROLE, set()):
            finding("writer-cannot-insert", f"{WRITER_ROLE} lacks USAGE on {seq}", table=table)
    triggers = {r[0] for r in conn.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal",
                                           (oid,))}
    states = trigger_states(conn, t)
    for tg, what in ((ROW_TRIGGER, "refuses UPDATE and DELETE"), (TRUNCATE_TRIGGER, "refuses TRUNCATE")):
        state = states.get((table, tg))
        if state is None:
            finding("trigger-missing", f"trigger {tg} on {table} ({what}) is missing", table=table)
            continue
        enabled = _ENABLED.get(state[0], state[0])
        rep.facts.append((table, f"trigger {tg}: {enabled}" + "".join(f"; {a}" for a in state[1])))
        if state[0] != "A":
            finding("trigger-disabled", f"trigger {tg} on {table} is {enabled}, not enabled ALWAYS", table=table)
        if state[1]:
            finding("trigger-altered", f"trigger {tg} on {table} may not refuse what it should ({what}): "
                                       f"{'; '.join(state[1])}", table=table)
    others = sorted(set(triggers) - {ROW_TRIGGER, TRUNCATE_TRIGGER})
    if others:
        rep.facts.append((table, f"other triggers: {', '.join(others)}"))
    rls = conn.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s", (oid,)).fetchone()
    if rls[0]:
        rep.facts.append((table, "row level security enabled" + (" (forced)" if rls[1] else "")))
    sacl = _acl(conn, "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, "
                      "a.privilege_type FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', "
                      "n.nspowner))) a WHERE n.nspname = %s", (schema,))
    if "PUBLIC" in sacl:
        finding("public-privilege", f"PUBLIC holds {', '.join(sorted(sacl['PUBLIC']))} on schema {schema}",
                table=table)


_ENABLED = {"O": "enabled (origin and local only)", "D": "DISABLED", "R": "enabled on replicas only",
            "A": "enabled ALWAYS"}


def _check_event_triggers(conn: Any, t: Target, rep: CheckReport, finding: Any) -> None:
    states = event_trigger_states(conn, t)
    for name in (t.event_trigger, f"{t.event_trigger}_drop"):
        state = states.get(name)
        if state is None:
            finding("event-trigger-missing", f"event trigger {name} (records DDL on schema {t.schema}) is missing")
            continue
        enabled = _ENABLED.get(state[0], state[0])
        rep.facts.append(("ddl", f"event trigger {name}: {enabled}" + "".join(f"; {a}" for a in state[1])))
        if state[0] != "A":
            finding("event-trigger-disabled", f"event trigger {name} is {enabled}, not enabled ALWAYS")
        if state[1]:
            finding("event-trigger-altered", f"event trigger {name} no longer records every DDL command on schema "
                                             f"{t.schema}: {'; '.join(state[1])}")


def _check_slot(conn: Any, t: Target, rep: CheckReport, finding: Any) -> None:
    pub = conn.execute("SELECT array_agg(schemaname || '.' || tablename ORDER BY 1) FROM pg_publication_tables "
                       "WHERE pubname = %s", (t.publication,)).fetchone()[0]
    if not pub:
        finding("publication-missing", f"publication {t.publication} does not exist or publishes nothing")
    else:
        missing = [x for x in t.tables() if x not in pub]
        if missing:
            finding("publication-incomplete", f"publication {t.publication} lacks {', '.join(missing)}")
        rep.facts.append(("chain", f"publication {t.publication}: {', '.join(pub)}"))
    slot = conn.execute("SELECT plugin, active, wal_status, confirmed_flush_lsn::text, "
                        "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                        "FROM pg_replication_slots WHERE slot_name = %s", (t.slot,)).fetchone()
    if slot is None:
        finding("slot-missing", f"replication slot {t.slot} does not exist: run pipeline pg install")
        return
    plugin, active, wal_status, confirmed, lag = slot
    rep.facts.append(("chain", f"slot {t.slot}: {plugin}, {'active' if active else 'idle'}, wal {wal_status}, "
                               f"confirmed {confirmed}, {lag} bytes behind"))
    if plugin != "pgoutput":
        finding("slot-plugin", f"slot {t.slot} uses {plugin}, the source reads pgoutput")
    if wal_status == "lost":
        finding("slot-lost", f"slot {t.slot} was invalidated (behind max_slot_wal_keep_size): rows were lost to "
                             "the chain; pg install recreates it and pg verify names the missing rows")
    elif wal_status == "unreserved":
        finding("slot-behind-retention", f"slot {t.slot} is past max_slot_wal_keep_size: WAL it needs is about to "
                                         "be removed")


def _check_bypass(conn: Any, t: Target, rep: CheckReport, finding: Any) -> None:
    """Who could get past the triggers: superusers (disable them), the owner of each table
    and every role that is a member of the owner (ALTER TABLE ... DISABLE TRIGGER, DROP),
    roles with BYPASSRLS (row security), REPLICATION roles (read the WAL; with a slot of
    their own, skip what the source reads).  Each is a ``can-bypass`` warning."""
    rows = conn.execute("SELECT rolname, rolsuper, rolbypassrls, rolreplication, rolcanlogin FROM pg_roles "
                        "WHERE (rolsuper OR rolbypassrls OR rolreplication) AND rolname NOT LIKE 'pg\\_%%' "
                        "ORDER BY rolname").fetchall()
    supers = {name for name, sup, *_ in rows if sup}
    for name, sup, bypass, repl, login in rows:
        what = [w for w, on in (("superuser", sup), ("BYPASSRLS", bypass), ("REPLICATION", repl)) if on]
        rep.facts.append(("bypass", f"{name}: {', '.join(what)}{'' if login else ' (no login)'}"))
        finding("can-bypass", f"{name} ({', '.join(what)}) could get past the triggers: the chain and the replica "
                              "are the layers that catch it", severity="warning")
    for table in t.tables():
        owner = conn.execute(f"SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = {REL_OID}",
                             (table, table)).fetchone()
        if owner is None:
            continue
        rep.facts.append(("bypass", f"{owner[0]}: owner of {table} (can disable its triggers)"))
        if owner[0] not in supers:
            finding("can-bypass", f"{owner[0]} (owner of {table}) could disable its triggers: the chain and the "
                                  "replica are the layers that catch it", table=table, severity="warning")
        # a member of the owner role acts as the owner (inherited, or after SET ROLE)
        members = conn.execute("SELECT r.rolname, r.rolcanlogin FROM pg_roles r WHERE r.rolname <> %s AND NOT "
                               "r.rolsuper AND r.rolname NOT LIKE 'pg\\_%%' AND pg_has_role(r.oid, "
                               "(SELECT oid FROM pg_roles WHERE rolname = %s), 'MEMBER') ORDER BY 1",
                               (owner[0], owner[0])).fetchall()
        for member, login in members:
            rep.facts.append(("bypass", f"{member}: member of {owner[0]}, the owner of {table}"
                                        f"{'' if login else ' (no login)'}"))
            finding("can-bypass", f"{member} (member of {owner[0]}, the owner of {table}) could disable its "
                                  "triggers: the chain and the replica are the layers that catch it", table=table,
                    severity="warning")
