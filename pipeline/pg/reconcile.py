"""``pipeline pg verify``: the audit table against the chain (hot and cold), and primary
against replica.

Table against chain, both directions, at one consistent point:

1. On the primary, a REPEATABLE READ transaction takes its snapshot S, then reads the
   WAL position W.  Every row visible in S was committed before W.
2. It waits until the source's slot has moved to W or past it (``--wait``): the source
   moves its slot only after the events are durable, so every row visible in S is then in
   the chain.  A slot that does not get there in time is a "could not run" (exit 2), not a
   finding: the comparison would be unfair.
3. The chain is read (every hot segment of the stream(s), plus the cold objects of
   segments no longer on the hot disk); INSERT events of transactions that S does not see
   (committed after S, by xid) are left for the next run.
4. The table is read in S, ordered by primary key.  Each row is rendered as the source
   renders it (``pipeline.pg.decode.row_json``) and passed through the same sanitiser as
   the log's (``--config``'s ``[sanitise]``, else the defaults), then compared with the
   logged row: ``row-changed`` names every column that differs (logged value, value now),
   ``row-not-logged`` a row the chain lacks; what the chain holds and the table no longer
   does is ``row-deleted``.  UPDATE/DELETE/TRUNCATE events and gaps in the chain are
   findings in themselves (``change-logged``, ``gap-logged``).

Memory: one SHA-256 and a few integers per logged row (about 150 bytes); full rows are
re-read from the chain only for the rows that differ.

Primary against replica: the audit table (not the DDL log, which each instance keeps for
its own DDL) is read on both, ordered by primary key, and merged; every row missing on
either side and every differing column is named.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pipeline.pg import PgError, require_psycopg
from pipeline.pg.decode import SESSION_SETTINGS, Column, parse_lsn, row_json
from pipeline.pg.install import Target, primary_key, table_columns
from pipeline.pg.report import PgFinding, PgReport
from pipeline.pg.stream import with_timeouts


@dataclass
class VerifyOptions:
    target: Target = field(default_factory=Target)
    hot: Path | None = None
    streams: list[str] | None = None  # default: every stream of the hot tier
    cold_store: Any = None  # an open ColdStore, or None
    slot: str | None = None
    replica_dsn: str | None = None
    chain: bool = True  # compare with the chain (needs hot)
    wait: float = 30.0  # seconds to wait for the source to reach the snapshot's WAL position
    sanitiser: Any = None  # the log's Sanitiser (its rules decide what was redacted before logging)
    # where each segment read lives (hot file, or the cold object's download until the end)
    _paths: dict[tuple[str, str], Path] = field(default_factory=dict)
    _tmp: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class _Logged:
    digest: bytes
    seq: int
    segment: str
    stream: str


def connect(dsn: str) -> Any:
    psycopg = require_psycopg()
    conn = psycopg.connect(with_timeouts(dsn), autocommit=True, application_name="worm-pipeline pg verify")
    for stmt in SESSION_SETTINGS:
        conn.execute(stmt)
    return conn


def verify(primary_dsn: str, opts: VerifyOptions) -> PgReport:
    started = time.monotonic()
    mode = "+".join(m for m, on in (("chain", opts.chain), ("replica", opts.replica_dsn is not None)) if on)
    report = PgReport(mode=mode or "none")
    conn = connect(primary_dsn)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snap_text, wal = conn.execute("SELECT pg_current_snapshot()::text, pg_current_wal_lsn()::text").fetchone()
        snapshot = _Snapshot.parse(snap_text)
        report.sources["snapshot_wal_lsn"] = wal
        if opts.chain:
            if opts.wait > 0:
                _nudge(primary_dsn, opts.slot or opts.target.slot)
                _wait_for_slot(conn, primary_dsn, opts.slot or opts.target.slot, opts.target.publication,
                               parse_lsn(wal), opts.wait)
            logged = _read_chain(opts, snapshot, report)
            for table in opts.target.tables():
                _compare_table(conn, table, logged.get(table, {}), opts, report)
        if opts.replica_dsn is not None:
            replica = connect(opts.replica_dsn)
            try:
                replica.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                # the audit table only: each instance's DDL log records its own DDL (the
                # replica's subscription carries the audit table, docs/POSTGRES.md)
                _compare_replica(conn, replica, opts.target.qualified, report)
                replica.execute("COMMIT")
            finally:
                replica.close()
        conn.execute("COMMIT")
    finally:
        conn.close()
        for tmp in opts._tmp:
            tmp.cleanup()
    report.elapsed_s = time.monotonic() - started
    return report


# ------------------------------------------------------------------------------ snapshot


@dataclass(frozen=True)
class _Snapshot:
    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> _Snapshot:
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def sees(self, xid32: int) -> bool:
        """Whether a transaction (pgoutput's 32-bit xid, widened with the snapshot's
        epoch) committed before this snapshot was taken."""
        full = (self.xmax & ~0xFFFFFFFF) | xid32
        if full > self.xmax:
            full -= 1 << 32
        if full < self.xmin:
            return True
        return full < self.xmax and full not in self.xip


def _nudge(dsn: str, slot: str) -> None:
    """Write the source's own logical message after the snapshot's WAL position: a record
    after W that the source reads, and moves its slot past once everything before it is
    durable, whatever the audit table does.  (A running source also confirms the server's
    keepalive position at the end of each read, which passes W as well, so a role that may
    not write messages just waits, ``--wait``.)"""
    from pipeline.pg.source import MESSAGE_PREFIX

    psycopg = require_psycopg()
    try:
        with psycopg.connect(with_timeouts(dsn), autocommit=True, application_name="worm-pipeline pg verify") as conn:
            conn.execute("SELECT pg_logical_emit_message(false, %s, %s)", (MESSAGE_PREFIX, slot))
    except psycopg.Error:
        pass


def _wait_for_slot(conn: Any, dsn: str, slot: str, publication: str, wal: int, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        row = conn.execute("SELECT confirmed_flush_lsn::text, active FROM pg_replication_slots "
                           "WHERE slot_name = %s", (slot,)).fetchone()
        if row is None:
            raise PgError(f"replication slot {slot} does not exist: the source cannot have logged the newest rows; "
                          "pipeline pg check says why (compare anyway with --wait 0)")
        if row[0] is not None and parse_lsn(row[0]) >= wal:
            return
        if not row[1] and _no_changes_before(dsn, slot, publication, wal):
            return  # the source is stopped, but what lies between its slot and W changes no audit row
        if time.monotonic() >= deadline:
            raise PgError(f"the source's slot {slot} is at {row[0]}, behind the snapshot's WAL position "
                          f"{_lsn(wal)} after waiting {wait:g} s: the chain cannot be complete yet; is the sidecar "
                          "running? (raise --wait, or --wait 0 to compare anyway)")
        time.sleep(0.2)


def _no_changes_before(dsn: str, slot: str, publication: str, wal: int) -> bool:
    """Whether the WAL between the slot and ``wal`` holds no row change of the published
    tables: peeked (the slot does not move), which needs the REPLICATION attribute; a role
    without it answers False and waits for the source instead."""
    psycopg = require_psycopg()
    try:
        with psycopg.connect(with_timeouts(dsn), autocommit=True, application_name="worm-pipeline pg verify") as peek:
            row = peek.execute(
                "SELECT count(*) FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, NULL, 'proto_version', '1', "
                "'publication_names', %s) WHERE get_byte(data, 0) IN (73, 85, 68, 84)",  # I, U, D, T
                (slot, _lsn(wal), publication)).fetchone()
    except psycopg.Error:
        return False
    return row is not None and row[0] == 0


def _lsn(v: int) -> str:
    from pipeline.pg.decode import format_lsn

    return format_lsn(v)


# ------------------------------------------------------------------------------ the chain


def _row_digest(row: Any) -> bytes:
    return hashlib.sha256(orjson.dumps(row, option=orjson.OPT_SORT_KEYS)).digest()


def _pk_text(pk: Any) -> str:
    if isinstance(pk, dict) and len(pk) == 1:
        return str(next(iter(pk.values())))
    return orjson.dumps(pk, option=orjson.OPT_SORT_KEYS).decode()


def iter_chain(opts: VerifyOptions, report: PgReport) -> Iterator[tuple[str, str, int, dict[str, Any]]]:
    """(stream, segment, seq, data) of every record of the stream(s): cold objects of
    segments no longer hot first (they are older), then the hot segments."""
    from pipeline.format.record import RecordError, parse_record
    from pipeline.format.segment import iter_lines, list_segments, list_streams

    assert opts.hot is not None
    streams = opts.streams or list_streams(opts.hot)
    sources: list[str] = []
    for stream in streams:
        hot_segments = list_segments(opts.hot / stream)
        hot_names = {p.name for p in hot_segments}
        files: list[tuple[str, Path]] = []
        if opts.cold_store is not None:
            from pipeline.verify.readback import fetch_checked, stream_objects

            tmp = tempfile.TemporaryDirectory(prefix="worm-pg-verify-")
            opts._tmp.append(tmp)
            for seg in stream_objects(opts.cold_store, stream):
                if seg.name in hot_names:
                    continue
                checked = fetch_checked(opts.cold_store, seg, Path(tmp.name))
                for problem in checked.problems:
                    report.findings.append(PgFinding("chain-unreadable", stream, f"{problem.code}: {problem.message}",
                                                     segment=seg.name))
                if checked.fetched.ok:
                    files.append((seg.name, checked.fetched.path))
                    sources.append(f"cold:{seg.key}")
        for p in hot_segments:
            files.append((p.name, p))
            sources.append(f"hot:{stream}/{p.name}")
        for name, path in files:
            opts._paths[(stream, name)] = path
        for name, path in files:
            for _off, line in iter_lines(path):
                if not line.endswith(b"\n"):
                    continue  # a torn tail: pipeline verify explains it
                try:
                    rec = parse_record(line)
                except RecordError as exc:
                    report.findings.append(PgFinding("chain-unreadable", stream, f"{name}: {exc}",
                                                     segment=name))
                    continue
                if rec.kind == "event" and rec.data.get("source") == "postgres":
                    yield stream, name, rec.seq, rec.data
    report.sources["segments"] = len(sources)


def _read_chain(opts: VerifyOptions, snapshot: _Snapshot, report: PgReport) -> dict[str, dict[str, _Logged]]:
    slot = opts.slot or opts.target.slot
    logged: dict[str, dict[str, _Logged]] = {}
    for stream, segment, seq, data in iter_chain(opts, report):
        if data.get("slot") != slot:
            continue
        op = data.get("op")
        table = str(data.get("table", ""))
        if op in ("gap", "reset"):
            code, what = ("gap-logged", "a gap") if op == "gap" else ("reset-logged", "a restart of positions")
            report.findings.append(PgFinding(code, opts.target.qualified,
                                             f"the chain records {what} from {data.get('from_lsn')} to "
                                             f"{data.get('to_lsn')}: {data.get('reason')}", seq=seq, segment=segment))
            continue
        pk = _pk_text(data.get("pk"))
        if op in ("update", "delete", "truncate"):
            changes: dict[str, list[Any]] = {}
            old, new = data.get("old") or {}, data.get("row") or {}
            for col in sorted(set(old) | set(new)):
                if old.get(col) != new.get(col):
                    changes[col] = [old.get(col), new.get(col)]
            what = {"update": f"UPDATE committed at {data.get('commit_time')} (lsn {data.get('lsn')})",
                    "delete": f"DELETE committed at {data.get('commit_time')} (lsn {data.get('lsn')})",
                    "truncate": f"TRUNCATE of {', '.join(data.get('tables') or [])} committed at "
                                f"{data.get('commit_time')}"}[op]
            report.findings.append(PgFinding("change-logged", table, f"the chain recorded an {what}: the table was "
                                             "changed past its triggers", row=None if op == "truncate" else pk,
                                             changes=changes, seq=seq, segment=segment))
            continue
        if op != "insert" or table not in opts.target.tables():
            continue
        xid = data.get("xid")
        if isinstance(xid, int) and not snapshot.sees(xid):
            continue  # committed after the snapshot: the next run compares it
        row = data.get("row") if "unloggable" not in data else {"unloggable": data["unloggable"]}
        entry = _Logged(_row_digest(row), seq, segment, stream)
        per_table = logged.setdefault(table, {})
        before = per_table.get(pk)
        if before is not None:
            report.findings.append(PgFinding("row-logged-twice", table, f"logged at seq {before.seq} "
                                             f"({before.segment}) and again at seq {seq}", row=pk, seq=seq,
                                             segment=segment))
            continue
        per_table[pk] = entry
    return logged


def _logged_row(opts: VerifyOptions, entry: _Logged) -> dict[str, Any]:
    """Re-read one logged row (only for rows that differ)."""
    from pipeline.format.record import parse_record
    from pipeline.format.segment import iter_lines

    path = opts._paths.get((entry.stream, entry.segment))
    if path is not None and path.exists():
        for _off, line in iter_lines(path):
            if line.endswith(b"\n") and f'"seq":{entry.seq},'.encode() in line[:80]:
                data = parse_record(line).data
                row = data.get("row")
                return row if isinstance(row, dict) else {"unloggable": data.get("unloggable")}
    return {}


# ------------------------------------------------------------------------------ the table


def _columns(conn: Any, table: str) -> tuple[list[Column], list[str]]:
    cols = table_columns(conn, table)
    if not cols:
        raise PgError(f"table {table} does not exist (or this role cannot see it)")
    return [Column(n, t) for n, t in cols], primary_key(conn, table) or [n for n, _t in cols]


def _text_rows(conn: Any, table: str, columns: list[Column], pk: list[str], name: str) -> Iterator[list[str | None]]:
    """Every row as the text its columns' output functions write (what pgoutput sends),
    in primary key order, through a server-side cursor (bounded memory)."""
    from psycopg.adapt import Loader

    class _Text(Loader):
        def load(self, data: Any) -> str:
            return bytes(data).decode("utf-8", "replace")

    from psycopg import sql

    schema, rel = table.split(".", 1)
    query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in columns), sql.Identifier(schema, rel),
        sql.SQL(", ").join(sql.Identifier(k) for k in pk))
    cur = conn.cursor(name=name)
    for c in columns:
        cur.adapters.register_loader(c.type_oid, _Text)
    cur.itersize = 5000
    cur.execute(query)
    try:
        yield from cur
    finally:
        cur.close()


def _sanitised(opts: VerifyOptions, row: dict[str, Any]) -> Any:
    """The row as the log would hold it: through the log's sanitiser (redaction)."""
    if opts.sanitiser is None:
        return row
    from pipeline.format.record import loads_data
    from pipeline.sanitise import InvalidEvent

    try:
        return loads_data(opts.sanitiser.prepare({"row": row}))["row"]
    except InvalidEvent:
        return row


def _compare_table(conn: Any, table: str, logged: dict[str, _Logged], opts: VerifyOptions,
                   report: PgReport) -> None:
    columns, pk = _columns(conn, table)
    counts = {"rows": 0, "logged": len(logged), "changed": 0, "not_logged": 0, "deleted": 0}
    for values in _text_rows(conn, table, columns, pk, "worm_pg_verify_rows"):
        counts["rows"] += 1
        row = row_json(columns, values)
        key = _pk_text({k: row[k] for k in pk})
        entry = logged.pop(key, None)
        if entry is None:
            counts["not_logged"] += 1
            report.findings.append(PgFinding("row-not-logged", table, "in the table, not in the chain", row=key))
            continue
        now = _sanitised(opts, row)
        if _row_digest(now) == entry.digest:
            continue
        was = _logged_row(opts, entry)
        unloggable = was.get("unloggable")
        if isinstance(unloggable, dict) and unloggable.get("row_sha256") == \
                hashlib.sha256(orjson.dumps(row, option=orjson.OPT_SORT_KEYS)).hexdigest():
            continue
        changes = {c: [was.get(c), now.get(c)] for c in sorted(set(was) | set(now)) if was.get(c) != now.get(c)}
        counts["changed"] += 1
        report.findings.append(PgFinding("row-changed", table, "differs from the chain: "
                                         + ", ".join(changes) + f" (logged at seq {entry.seq})", row=key,
                                         changes=changes, seq=entry.seq, segment=entry.segment))
    for key, entry in sorted(logged.items(), key=lambda kv: _sort_key(kv[0])):
        counts["deleted"] += 1
        report.findings.append(PgFinding("row-deleted", table, f"logged at seq {entry.seq} ({entry.segment}), no "
                                         "longer in the table", row=key, changes={}, seq=entry.seq,
                                         segment=entry.segment))
    report.tables[table] = counts


def _sort_key(key: str) -> tuple[int, Any]:
    return (0, int(key)) if key.lstrip("-").isdigit() else (1, key)


# ------------------------------------------------------------------------------ replica


def _compare_replica(primary: Any, replica: Any, table: str, report: PgReport) -> None:
    columns, pk = _columns(primary, table)
    rcolumns, _ = _columns(replica, table)
    if [c.name for c in rcolumns] != [c.name for c in columns]:
        report.findings.append(PgFinding("replica-row-differs", table, "the replica's columns differ: "
                                         f"{[c.name for c in rcolumns]} vs {[c.name for c in columns]}"))
        return
    counts = {"rows": 0, "replica_rows": 0, "differ": 0, "missing_on_replica": 0, "extra_on_replica": 0}
    p_iter = _keyed(_text_rows(primary, table, columns, pk, "worm_pg_verify_p"), columns, pk)
    r_iter = _keyed(_text_rows(replica, table, rcolumns, pk, "worm_pg_verify_r"), rcolumns, pk)
    p, r = next(p_iter, None), next(r_iter, None)
    missing: list[tuple[str, Any]] = []  # (key as text, key as sorted)
    replica_max: Any = None
    while p is not None or r is not None:
        if p is not None and (r is None or p[0] < r[0]):
            counts["rows"] += 1
            missing.append((p[1], p[0]))
            counts["missing_on_replica"] += 1
            p = next(p_iter, None)
        elif r is not None and (p is None or r[0] < p[0]):
            counts["replica_rows"] += 1
            counts["extra_on_replica"] += 1
            replica_max = r[0]
            report.findings.append(PgFinding("replica-row-extra", table, "on the replica, not on the primary",
                                             row=r[1], changes={c: [None, v] for c, v in r[2].items()}))
            r = next(r_iter, None)
        else:
            assert p is not None and r is not None
            counts["rows"] += 1
            counts["replica_rows"] += 1
            replica_max = r[0]
            if p[2] != r[2]:
                changes = {c: [r[2].get(c), p[2].get(c)] for c in p[2] if p[2].get(c) != r[2].get(c)}
                counts["differ"] += 1
                report.findings.append(PgFinding("replica-row-differs", table, "primary and replica differ: "
                                                 + ", ".join(changes) + " (values: [replica, primary])", row=p[1],
                                                 changes=changes))
            p, r = next(p_iter, None), next(r_iter, None)
    # rows missing only after the replica's newest row are (most likely) not applied yet
    for key, sortable in missing:
        if replica_max is None or sortable > replica_max:
            report.findings.append(PgFinding("replica-lagging", table, "newer than the replica's newest row: "
                                             "not applied yet, or replication stopped", row=key))
        else:
            report.findings.append(PgFinding("replica-row-missing", table, "on the primary, not on the replica",
                                             row=key))
    report.tables[f"{table} (replica)"] = counts


def _keyed(rows: Iterator[list[str | None]], columns: list[Column], pk: list[str]) -> Iterator[tuple[Any, str,
                                                                                                      dict[str, Any]]]:
    for values in rows:
        row = row_json(columns, values)
        keyvals = tuple(row[k] for k in pk)
        sortable = keyvals[0] if len(keyvals) == 1 else keyvals
        yield sortable, _pk_text({k: row[k] for k in pk}), row
