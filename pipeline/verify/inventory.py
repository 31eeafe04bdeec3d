"""``verify-tier --inventory URL --index URL``: fleet-scale reconciliation (docs/SCALING.md).

The object facts come from an S3 Inventory report (Parquet, every version), the segment
facts from the manifest index the shipper writes (docs/INDEX.md), and the checks are SQL
(``pipeline/verify/sql/reconcile.sql``) run by an engine: DuckDB embedded (default) or
Athena.  Results map onto direct mode's finding codes and JSON report
(``worm-pipeline/verify-tier/v1``), so auditors' tooling does not change.

What is read, and why:

- the inventory's ``manifest.json`` (and ``manifest.checksum``), and for DuckDB its data
  files, each checked against the manifest's size and MD5 before use (a corrupt or
  truncated report must not look like missing objects);
- every index part, hashed as it is read: the chain (each part names the SHA-256 of the
  previous) is checked here, and DuckDB queries exactly the bytes that were hashed.  DuckDB's
  ``httpfs`` extension is not installed (and cannot be fetched offline), so S3 objects are
  downloaded with boto3 into a temporary directory first; Athena reads its tables itself;
- the sampled segments (``--sample``, plus the one under each stream's newest witnessed
  checkpoint), read from the cold store end to end and verified like ``--deep``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.cold.base import ColdSettings, ColdStore
from pipeline.cold.errors import ColdError
from pipeline.findings import Finding
from pipeline.format.checkpoint import Checkpoint, NoteError, Verifier, open_checkpoint, split_note
from pipeline.ship.index import (
    GENESIS_PART_HASH,
    INDEX_DIR,
    PartMeta,
    check_part_signature,
    index_key,
    read_part_meta,
    read_part_signature,
)
from pipeline.verify import chain
from pipeline.verify import sql as sqlmod
from pipeline.verify.coldread import fetch_segment
from pipeline.verify.tier import (
    CheckpointSummary,
    SegmentLine,
    StreamTier,
    TierError,
    TierOptions,
    TierReport,
    _collect_checkpoints,
    roots_in_segment,
)

# The inventory fields the checks read (AWS's Parquet names).  ObjectLockMode,
# ObjectLockRetainUntilDate, ETag, Size, LastModifiedDate are optional fields of an
# inventory configuration; IncludedObjectVersions must be All (version_id, is_latest,
# is_delete_marker).
REQUIRED_FIELDS = ("bucket", "key", "version_id", "is_latest", "is_delete_marker", "size", "last_modified_date",
                   "e_tag", "object_lock_mode", "object_lock_retain_until_date")
FINDING_STATEMENTS = ("objects", "strays", "index_objects", "continuity")


def finding(code: str, stream: str, segment: str, message: str, seq: int | None = None,
            key: str | None = None) -> Finding:
    """The one place the fleet modes (inventory, and direct mode's --ndjson in
    pipeline.verify.streaming) build a finding: direct mode's model and codes."""
    return Finding.of(code, stream, segment, message, seq, key)


# ---------------------------------------------------------------------------- locations


@dataclass(frozen=True)
class Location:
    """An s3://bucket/key[?endpoint_url=&region=&profile=] URL or a local path."""

    raw: str
    bucket: str | None
    key: str  # S3 key or prefix; local: the path
    query: dict[str, str]

    @classmethod
    def parse(cls, url: str) -> Location:
        parts = urlsplit(url)
        if parts.scheme == "s3":
            if not parts.hostname:
                raise TierError(f"{url!r}: use s3://bucket/key[?endpoint_url=...]")
            return cls(url, parts.netloc.split("@")[-1], unquote(parts.path).lstrip("/"),
                       {k: v[-1] for k, v in parse_qs(parts.query).items()})
        if parts.scheme in ("", "file"):
            return cls(url, None, unquote(parts.path) if parts.scheme else url, {})
        raise TierError(f"{url!r}: use an s3:// URL or a local path")

    @property
    def local(self) -> Path | None:
        return Path(self.key) if self.bucket is None else None

    def client(self) -> Any:
        from pipeline.cold.s3 import make_client

        return make_client(ColdSettings(), self.query.get("endpoint_url"), self.query.get("region"),
                           self.query.get("profile"))


class Requests:
    """Requests this mode sends, by kind (the report's ``requests``)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n


def _download(client: Any, bucket: str, key: str, dest: Path, requests: Requests) -> str:
    """GET ``key`` into ``dest``; returns the hex SHA-256 of what was written."""
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
    except Exception as exc:
        raise TierError(f"cannot read s3://{bucket}/{key}: {exc}") from exc
    requests.add("get")
    h = hashlib.sha256()
    with open(dest, "wb") as f:
        while chunk := body.read(1 << 20):
            h.update(chunk)
            f.write(chunk)
    body.close()
    return h.hexdigest()


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- the inventory


@dataclass
class Inventory:
    source_bucket: str
    created: dt.datetime
    files: list[Path]  # local copies (DuckDB); empty for Athena
    file_count: int


def _manifest_bytes(loc: Location, requests: Requests) -> tuple[bytes, bytes | None]:
    if loc.local is not None:
        p = loc.local
        if p.is_dir():
            p = p / "manifest.json"
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise TierError(f"cannot read the inventory manifest {p}: {exc.strerror}") from exc
        checksum = p.with_name("manifest.checksum")
        return data, checksum.read_bytes() if checksum.exists() else None
    assert loc.bucket is not None
    client = loc.client()
    key = loc.key if loc.key.endswith("manifest.json") else loc.key.rstrip("/") + "/manifest.json"
    try:
        data = client.get_object(Bucket=loc.bucket, Key=key)["Body"].read()
        requests.add("get")
    except Exception as exc:
        raise TierError(f"cannot read the inventory manifest s3://{loc.bucket}/{key}: {exc}") from exc
    try:
        checksum = client.get_object(Bucket=loc.bucket, Key=key[: -len("manifest.json")] + "manifest.checksum")
        requests.add("get")
        return data, checksum["Body"].read()
    except Exception:
        return data, None


def load_inventory(loc: Location, tmp: Path, requests: Requests, download: bool) -> Inventory:
    """Read and check an S3 Inventory report's manifest.json; with ``download``, fetch its
    data files (checking each one's size and MD5 against the manifest)."""
    raw, checksum = _manifest_bytes(loc, requests)
    digest = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    if checksum is not None and checksum.strip().decode(errors="replace").lower() != digest:
        raise TierError("the inventory's manifest.checksum does not match manifest.json: the report is damaged")
    try:
        man = json.loads(raw)
        fmt, files, schema = man["fileFormat"], man["files"], man["fileSchema"]
        source = str(man["sourceBucket"])
        created = dt.datetime.fromtimestamp(int(man["creationTimestamp"]) / 1000, dt.UTC)
    except (ValueError, KeyError, TypeError) as exc:
        raise TierError(f"{loc.raw} is not an S3 Inventory manifest.json ({exc})") from exc
    if str(fmt).lower() != "parquet":
        raise TierError(f"the inventory is {fmt}: verify-tier reads Parquet inventories (set the inventory "
                        "configuration's format to Parquet)")
    missing = [f for f in REQUIRED_FIELDS if f not in str(schema)]
    if missing:
        raise TierError(f"the inventory lacks {', '.join(missing)}: configure IncludedObjectVersions=All and the "
                        "optional fields Size, LastModifiedDate, ETag, ObjectLockMode, ObjectLockRetainUntilDate")
    out = Inventory(source, created, [], len(files))
    if not download:
        return out
    dest_bucket = str(man.get("destinationBucket", "")).rsplit(":", 1)[-1]
    client = loc.client() if loc.local is None else None
    for i, f in enumerate(files):
        key, size, md5 = str(f["key"]), int(f["size"]), str(f.get("MD5checksum", "")).lower()
        if client is not None:
            path = tmp / f"inventory-{i:06d}.parquet"
            _download(client, dest_bucket, key, path, requests)
        else:
            assert loc.local is not None
            base = loc.local if loc.local.is_dir() else loc.local.parent
            path = base.parent / "data" / Path(key).name
        try:
            data_size = path.stat().st_size
        except OSError as exc:
            raise TierError(f"inventory data file {key} is missing ({path}): {exc.strerror}") from exc
        if data_size != size:
            raise TierError(f"inventory data file {key} is {data_size} bytes, the manifest says {size}")
        if md5:
            h = hashlib.md5(usedforsecurity=False)  # the manifest's own checksum: the report's integrity
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
            if h.hexdigest() != md5:
                raise TierError(f"inventory data file {key} does not match the manifest's MD5: the report is damaged")
        out.files.append(path)
    return out


# ---------------------------------------------------------------------------- the index


@dataclass
class LoadedPart:
    key: str  # the object key (S3) or file path (local) it was read from
    path: Path
    sha256: str
    meta: PartMeta
    rows: int
    signature: bytes | None = None  # the signed note in the footer (docs/INDEX.md "Signature")


def load_index(loc: Location, tmp: Path, requests: Requests,
               problems: Callable[[str, str, str, str], None]) -> list[LoadedPart]:
    """Every index part under ``loc`` (hashed as read).  Unreadable parts are reported
    (``index-part-invalid``) and left out of the query."""
    found: list[tuple[str, Path, str]] = []
    if loc.local is not None:
        root = loc.local
        if not root.is_dir():
            raise TierError(f"--index {root} is not a directory")
        for p in sorted(root.rglob("*.parquet")):
            found.append((str(p), p, _hash_file(p)))
    else:
        assert loc.bucket is not None
        client = loc.client()
        prefix = loc.key
        keys: list[str] = []
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
                requests.add("list")
                keys.extend(o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".parquet"))
        except Exception as exc:
            raise TierError(f"cannot list the index under {loc.raw}: {exc}") from exc
        for i, key in enumerate(sorted(keys)):
            path = tmp / f"index-{i:08d}.parquet"
            found.append((key, path, _download(client, loc.bucket, key, path, requests)))
    out: list[LoadedPart] = []
    for key, path, sha in found:
        try:
            meta, rows = read_part_meta(str(path))
            signature = read_part_signature(str(path))
        except ValueError as exc:
            problems("index-part-invalid", "", key, f"{key} is not an index part: {exc}")
            continue
        if rows != meta.rows:
            problems("index-part-invalid", meta.stream, key, f"{key} holds {rows} rows, its footer says {meta.rows}")
            continue
        out.append(LoadedPart(key, path, sha, meta, rows, signature))
    if not out:
        raise TierError(f"no index part under {loc.raw}: check --index (the shipper writes "
                        f"<prefix>/{INDEX_DIR}/<stream>/dt=YYYY-MM-DD/<part>.parquet)")
    return out


def check_chain(parts: Sequence[LoadedPart], prefix: str, s3: bool,
                add: Callable[[str, str, str, str], None]) -> None:
    """docs/INDEX.md: per stream, parts 0..n, each naming the SHA-256 of the one before."""
    by_stream: dict[str, list[LoadedPart]] = {}
    for p in parts:
        by_stream.setdefault(p.meta.stream, []).append(p)
        if s3 and p.key != index_key(prefix, p.meta.stream, p.meta.dt, p.meta.part):
            add("index-part-invalid", p.meta.stream, p.key, f"{p.key} holds part {p.meta.part} of {p.meta.stream} "
                f"for {p.meta.dt}, which belongs under {index_key(prefix, p.meta.stream, p.meta.dt, p.meta.part)}")
    for stream, ps in sorted(by_stream.items()):
        ps.sort(key=lambda p: p.meta.part)
        expected_prev, expected_part = GENESIS_PART_HASH, 0
        for p in ps:
            if p.meta.part < expected_part:
                add("index-chain-broken", stream, p.key, f"two index parts claim part {p.meta.part} of {stream}")
                continue
            if p.meta.part > expected_part:
                add("index-part-missing", stream, p.key, f"index parts {expected_part}..{p.meta.part - 1} of {stream} "
                    f"are missing before {p.key}")
            elif p.meta.prev_sha256 != expected_prev:
                add("index-chain-broken", stream, p.key, f"{p.key} names {p.meta.prev_sha256[:16]}… as the previous "
                    f"part's SHA-256 but part {p.meta.part - 1} hashes to {expected_prev[:16]}…: an index part was "
                    "rewritten")
            expected_prev, expected_part = p.sha256, p.meta.part + 1


def check_signatures(parts: Sequence[LoadedPart], verifiers: Sequence[Verifier], origin: str | None,
                     require: bool, add: Callable[[str, str, str, str], None]) -> None:
    """docs/INDEX.md "Signature": every signed part's note verifies with a trusted key and
    describes the part as read.  An unsigned part is a warning (a shipper without a signing
    key) unless signing is required or an earlier part of its stream was signed: a
    signature does not disappear from a stream by itself (stripped: a forged part)."""
    by_stream: dict[str, list[LoadedPart]] = {}
    for p in parts:
        by_stream.setdefault(p.meta.stream, []).append(p)
    unchecked = 0
    for stream, ps in sorted(by_stream.items()):
        ps.sort(key=lambda p: p.meta.part)
        signed_before: LoadedPart | None = None
        unsigned: list[LoadedPart] = []
        for p in ps:
            if p.signature is None:
                if require or signed_before is not None:
                    why = ("signed index parts are required (--require-signed-index)" if signed_before is None else
                           f"part {signed_before.meta.part} before it is signed: a signature was stripped, or the "
                           "part was written without the log's key")
                    add("index-signature-invalid", stream, p.key, f"{p.key} is not signed, but {why}")
                else:
                    unsigned.append(p)
                continue
            signed_before = p
            if not verifiers:
                unchecked += 1
                continue
            try:
                check_part_signature(str(p.path), p.signature, p.meta, verifiers, origin)
            except NoteError as exc:
                add("index-signature-invalid", stream, p.key, f"{p.key}: its signature does not prove it: {exc}")
        if unsigned:
            add("index-part-unsigned", stream, unsigned[0].key,
                f"{len(unsigned)} of {len(ps)} index parts of {stream} are not signed (first: {unsigned[0].key}): "
                "the shipper has no signing key, so a part rewritten without versioning evidence (the newest "
                "in particular) cannot be detected; configure [signing] key_file")
    if unchecked:
        add("index-signature-unchecked", "", "", f"{unchecked} signed index part(s) were not checked: give --vkey "
            "(the log's verifier key)")


# ---------------------------------------------------------------------------- engines


class Engine(Protocol):
    name: str
    executed: list[str]

    def query(self, sql: str) -> Iterator[tuple[Any, ...]]: ...

    def close(self) -> None: ...


INVENTORY_COLUMNS = (("bucket", "VARCHAR"), ("key", "VARCHAR"), ("version_id", "VARCHAR"), ("is_latest", "BOOLEAN"),
                     ("is_delete_marker", "BOOLEAN"), ("size", "BIGINT"), ("last_modified_date", "TIMESTAMPTZ"),
                     ("e_tag", "VARCHAR"), ("storage_class", "VARCHAR"), ("object_lock_mode", "VARCHAR"),
                     ("object_lock_retain_until_date", "TIMESTAMPTZ"), ("object_lock_legal_hold_status", "VARCHAR"))


class DuckDBEngine:
    """Embedded DuckDB over local Parquet copies; memory capped, sorts spill to ``tmp``."""

    name = "duckdb"

    def __init__(self, inventory_files: Sequence[Path], index_files: Sequence[Path], inventory_table: str,
                 index_table: str, tmp: Path, memory_limit: str = "1GB", threads: int | None = None) -> None:
        try:
            import duckdb
        except ImportError as exc:
            raise TierError("verify-tier --inventory needs duckdb: pip install 'worm-pipeline[fleet]'") from exc
        self.executed: list[str] = []
        self.con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(tmp / "duckdb"),
                                          "threads": threads or max(1, min(4, os.cpu_count() or 1)),
                                          "preserve_insertion_order": False})
        self.con.execute("SET TimeZone = 'UTC'")

        inventory_table, index_table = sqlmod.identifier(inventory_table), sqlmod.identifier(index_table)

        def files(paths: Sequence[Path]) -> str:
            return "[" + ", ".join(sqlmod.literal(str(p)) for p in paths) + "]"

        if inventory_files:
            # names checked by sqlmod.identifier, paths quoted by sqlmod.literal
            self.con.execute(f"CREATE VIEW {inventory_table} AS SELECT * FROM "  # noqa: S608
                             f"read_parquet({files(inventory_files)}, hive_partitioning = false, union_by_name = true)")
        else:  # an empty bucket's report lists no data file
            cols = ", ".join(f"{n} {t}" for n, t in INVENTORY_COLUMNS)
            self.con.execute(f"CREATE TABLE {inventory_table} ({cols})")
        self.con.execute(f"CREATE VIEW {index_table} AS SELECT * FROM "  # noqa: S608
                         f"read_parquet({files(index_files)}, hive_partitioning = false)")

    def query(self, sql: str) -> Iterator[tuple[Any, ...]]:
        self.executed.append(sql)
        cur = self.con.execute(sql)
        while rows := cur.fetchmany(10_000):
            yield from rows

    def close(self) -> None:
        self.con.close()


_ATHENA_TYPES: dict[str, Callable[[str], Any]] = {
    "bigint": int, "integer": int, "smallint": int, "tinyint": int, "double": float, "real": float,
    "boolean": lambda v: v.lower() == "true",
}


class AthenaEngine:
    """The same statements through boto3's Athena client, in a workgroup; results paged."""

    name = "athena"

    def __init__(self, client: Any, workgroup: str, database: str | None, output: str | None,
                 poll_interval: float = 1.0, timeout: float = 3600.0) -> None:
        self.client = client
        self.workgroup = workgroup
        self.database = database
        self.output = output
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.executed: list[str] = []
        self.requests = 0

    def query(self, sql: str) -> Iterator[tuple[Any, ...]]:
        self.executed.append(sql)
        args: dict[str, Any] = {"QueryString": sql, "WorkGroup": self.workgroup}
        if self.database:
            args["QueryExecutionContext"] = {"Database": self.database}
        if self.output:
            args["ResultConfiguration"] = {"OutputLocation": self.output}
        try:
            qid = self.client.start_query_execution(**args)["QueryExecutionId"]
            self.requests += 1
            deadline = time.monotonic() + self.timeout
            while True:
                st = self.client.get_query_execution(QueryExecutionId=qid)["QueryExecution"]["Status"]
                self.requests += 1
                state = st["State"]
                if state == "SUCCEEDED":
                    break
                if state in ("FAILED", "CANCELLED"):
                    raise TierError(f"Athena query {qid} {state.lower()}: {st.get('StateChangeReason', '')}")
                if time.monotonic() > deadline:
                    raise TierError(f"Athena query {qid} did not finish within {self.timeout:g} s")
                time.sleep(self.poll_interval)
            token: str | None = None
            first = True
            while True:
                page = self.client.get_query_results(QueryExecutionId=qid, **({"NextToken": token} if token else {}))
                self.requests += 1
                types = [c["Type"].lower() for c in page["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]]
                rows = page["ResultSet"]["Rows"]
                if first:
                    rows = rows[1:]  # the header row
                    first = False
                for r in rows:
                    yield tuple(None if "VarCharValue" not in c else _ATHENA_TYPES.get(t, str)(c["VarCharValue"])
                                for c, t in zip(r["Data"], types, strict=True))
                token = page.get("NextToken")
                if not token:
                    break
        except TierError:
            raise
        except Exception as exc:
            raise TierError(f"Athena ({self.workgroup}): {exc}") from exc

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------- the run


@dataclass
class InventoryOptions:
    inventory: str
    index: str
    engine: str = "duckdb"
    workgroup: str | None = None
    athena_database: str | None = None
    athena_output: str | None = None
    inventory_table: str = "s3_inventory"
    index_table: str = "segment_index"
    stream: str | None = None
    heartbeat_interval: float = 60.0
    retention_days: int | None = None
    allow_unlocked: bool = False
    expiry_warning_days: float = 30.0
    sample_fraction: float = 0.0001
    verifiers: list[Verifier] = field(default_factory=list)
    require_signed_index: bool = False  # an unsigned index part is an error, not a warning
    witness_dirs: list[Path] = field(default_factory=list)
    witness_s3: list[tuple[Any, str, str]] = field(default_factory=list)
    checkpoint_files: list[Path] = field(default_factory=list)
    origin: str | None = None
    temp_dir: str | None = None
    memory_limit: str = "1GB"
    athena_client: Any = None  # a boto3 Athena client (default: one from the standard chain)
    now: dt.datetime | None = None


class InventoryStream(StreamTier):
    """A stream of an inventory-mode report: ``segments`` lists only the segments with
    findings (a sampled segment without findings is counted in ``sampled``, not listed); the
    totals count every indexed segment."""

    counted: dict[str, int]

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.counted = {"segments": 0, "records": 0, "bytes_stored": 0, "newer_than_inventory": 0}

    def totals(self) -> dict[str, int]:
        c = super().totals()
        bad = sum(1 for s in self.segments if s.status in ("INVALID", "missing"))
        c["segments"] = self.counted["segments"]
        c["valid"] = self.counted["segments"] - bad - c.get("pending", 0)
        c["records"] = self.counted["records"]
        c["bytes_stored"] = self.counted["bytes_stored"]
        c["newer_than_inventory"] = self.counted["newer_than_inventory"]
        c["sampled"] = self.counted.get("sampled", 0)
        return c


def _message(code: str, row: tuple[Any, ...], retention_days: int, hb: float) -> str:
    _code, stream, segment, key, seq, a, b, detail = row
    what = {
        "missing-object": f"the index lists {segment} under {key} but the inventory holds no current version of it "
                          "(deleted?)",
        "delete-marker": f"{key}: {a} delete marker(s)" + (" hide the object: readers no longer see it although its "
                                                          "locked version remains" if detail == "hides" else
                                                          ", under a newer version: the key was deleted and written "
                                                          "again"),
        "extra-version": f"{key} has {a} object versions: something was PUT over the shipped object and readers see "
                         "the newest",
        "appended-bytes": f"object is {a} bytes, {b} were uploaded (+{(a or 0) - (b or 0)} bytes)",
        "truncated-object": f"object is {a} bytes, {b} were uploaded ({(a or 0) - (b or 0)} bytes)",
        "object-replaced": f"the current version's ETag {detail} differs from the shipped version's: replaced",
        "not-locked": f"lock mode is {detail}: the object can be overwritten or deleted",
        "retention-too-short": f"retain-until {detail} is before the policy's {retention_days} days from upload",
        "expiring-soon": f"retention ends {detail}",
        "renamed-object": f"the index row for {stream}/{segment} names key {key}",
        "unexpected-object": f"{key} is not a segment object",
        "unexpected-segment-object": f"{key} is under stream {stream}'s prefix and looks like a segment object but "
                                     "its name is not a valid segment name",
        "unshipped-object": f"{key} is in the inventory but no index part lists it, although the index covers "
                            "that time: forged, or uploaded by someone else",
        "index-part-replaced": f"index part {key} has {a} version(s) and {b} delete marker(s): an index part was "
                               "rewritten or hidden",
        "missing-start": f"the index starts {stream} at seq {seq}: records 0..{b} are not indexed",
        "missing-segment": f"records {a}..{b} ({(b or 0) - (a or 0) + 1} records) are missing between {detail} and "
                           f"{segment}",
        "overlapping-segment": f"{segment} starts at seq {a} but {detail} already holds up to {b}",
        "broken-link": f"first record of {segment} does not link to the last record of {detail}",
        "unsealed-segment": f"{segment} ends unsealed at seq {seq}",
        "time-gap": f"no record for {(a or 0) / 1000:.0f} s between {detail} and {segment} (heartbeat interval "
                    f"{hb:g} s): possible suppression",
    }
    return what.get(code, f"{code}: {key}")


class InventoryVerifier:
    def __init__(self, store: ColdStore | None, opts: InventoryOptions) -> None:
        self.store = store
        self.opts = opts
        self.requests = Requests()
        self.now = opts.now or dt.datetime.now(dt.UTC)
        self.retention_days = opts.retention_days or (store.settings.retention_days if store else 2555)
        self.streams: dict[str, InventoryStream] = {}
        self.global_findings: list[Finding] = []
        self.engine: Engine | None = None

    # -- findings ------------------------------------------------------------------------
    def _stream(self, name: str) -> InventoryStream:
        if name not in self.streams:
            self.streams[name] = InventoryStream(name)
        return self.streams[name]

    def add(self, code: str, stream: str, segment: str, message: str, seq: int | None = None,
            key: str | None = None) -> None:
        f = finding(code, stream, segment, message, seq, key)
        if not stream:
            self.global_findings.append(f)
            return
        res = self._stream(stream)
        res.findings.append(f)
        if not segment or code in ("missing-segment", "missing-start", "time-gap"):
            return
        line = next((s for s in res.segments if s.segment == segment), None)
        if line is None:
            line = SegmentLine(segment, key, "valid")
            res.segments.append(line)
        if code == "expiring-soon":
            line.retain_until = message.removeprefix("retention ends ")
        if f.severity == "error":
            line.status = "missing" if code in ("missing-object", "delete-marker") and line.status != "INVALID" \
                else "INVALID"
        if code not in line.reasons:
            line.reasons.append(code)

    # -- the run -------------------------------------------------------------------------
    def run(self) -> TierReport:
        t0 = time.monotonic()
        opts = self.opts
        if opts.engine not in sqlmod.DIALECTS:
            raise TierError(f"--engine {opts.engine!r}: use duckdb or athena")
        prefix = str(getattr(self.store, "prefix", "") or "").strip("/")
        bucket = getattr(self.store, "bucket", None)
        tmp = Path(tempfile.mkdtemp(prefix="verify-inventory-", dir=opts.temp_dir))
        report = TierReport("inventory", self.store.endpoint if self.store else opts.index, None, True, None, None)
        try:
            inv = load_inventory(Location.parse(opts.inventory), tmp, self.requests, download=opts.engine == "duckdb")
            if bucket is not None and inv.source_bucket != bucket:
                raise TierError(f"the inventory lists bucket {inv.source_bucket!r}, --cold names {bucket!r}")
            index_loc = Location.parse(opts.index)
            parts = load_index(index_loc, tmp, self.requests,
                               lambda code, stream, key, msg: self.add(code, stream, "", msg, None, key))
            if opts.stream:  # the other streams' parts are not judged (their rows are filtered in SQL too)
                parts = [p for p in parts if p.meta.stream == opts.stream]
                if not parts:
                    raise TierError(f"no index part of stream {opts.stream!r} under {opts.index}")
            check_chain(parts, prefix, index_loc.bucket is not None,
                        lambda code, stream, key, msg: self.add(code, stream, "", msg, None, key))
            check_signatures(parts, opts.verifiers, opts.origin, opts.require_signed_index,
                             lambda code, stream, key, msg: self.add(code, stream, "", msg, None, key or None))
            params = sqlmod.Params(
                opts.inventory_table, opts.index_table, inv.source_bucket, f"{prefix}/" if prefix else "",
                inv.created, self.now, self.retention_days, int(opts.expiry_warning_days),
                int(opts.heartbeat_interval * 1000), not opts.allow_unlocked, opts.stream)
            self.engine = self._engine(inv, parts, tmp)
            for name in FINDING_STATEMENTS:
                for row in self.engine.query(sqlmod.render(name, params, opts.engine)):
                    code, stream, segment, key, seq = row[0], row[1] or "", row[2] or "", row[3], row[4]
                    self.add(code, stream, segment, _message(code, row, self.retention_days, opts.heartbeat_interval),
                             seq, key)
            log_sizes: dict[str, int] = {}
            for stream, n, records, stored, log_size, _until, newer, _newest in self.engine.query(
                    sqlmod.render("summary", params, opts.engine)):
                res = self._stream(stream)
                res.counted.update(segments=int(n), records=int(records or 0), bytes_stored=int(stored or 0),
                                   newer_than_inventory=int(newer or 0))
                res.records = int(records or 0)
                res.log_size = log_sizes[stream] = int(log_size or 0)
            witnessed = self._checkpoints(log_sizes)
            covering = tuple((s, size - 1) for s, (size, _root) in witnessed.items() if size > 0)
            sample = sqlmod.Params(**{**params.__dict__, "fraction": opts.sample_fraction, "covering": covering})
            self._deep(list(self.engine.query(sqlmod.render("sample", sample, opts.engine))), witnessed, tmp)
            if not self.streams:
                raise TierError(f"the index under {opts.index} lists no segment"
                                + (f" of stream {opts.stream!r}" if opts.stream else ""))
        finally:
            if self.engine is not None:
                self.engine.close()
            shutil.rmtree(tmp, ignore_errors=True)
        report.streams = [self.streams[s] for s in sorted(self.streams)]
        for s in report.streams:
            s.segments.sort(key=lambda ln: ln.segment)
            for ln in s.segments:
                # what the inventory said of the lock (only lines with findings are listed)
                if ln.status != "missing" and not opts.allow_unlocked:
                    ln.lock = "UNLOCKED" if "not-locked" in ln.reasons else "COMPLIANCE"
        report.global_findings = self.global_findings
        segments = sum(s.counted["segments"] for s in self.streams.values())
        c = self.requests.counts
        athena = getattr(self.engine, "requests", 0)
        report.requests = {"total": sum(c.values()) + athena, "list": c.get("list", 0), "head": c.get("head", 0),
                           "get": c.get("get", 0), "other": athena, "segments": segments}
        report.elapsed_s = time.monotonic() - t0
        return report

    def _engine(self, inv: Inventory, parts: Sequence[LoadedPart], tmp: Path) -> Engine:
        opts = self.opts
        if opts.engine == "duckdb":
            return DuckDBEngine(inv.files, [p.path for p in parts], opts.inventory_table, opts.index_table, tmp,
                                memory_limit=opts.memory_limit)
        if not opts.workgroup:
            raise TierError("--engine athena needs --workgroup (and the tables of docs/INDEX.md, 'Athena')")
        client = opts.athena_client
        if client is None:
            import boto3

            client = boto3.client("athena")
        return AthenaEngine(client, opts.workgroup, opts.athena_database, opts.athena_output)

    # -- checkpoints -----------------------------------------------------------------------
    def _checkpoints(self, log_sizes: dict[str, int]) -> dict[str, tuple[int, bytes]]:
        """Signatures, forks and witness-ahead for every stream; returns each stream's newest
        witnessed (size, root), whose covering segment is then read and recomputed."""
        opts = self.opts
        topts = TierOptions(stream=None, verifiers=opts.verifiers, witness_dirs=opts.witness_dirs,
                            witness_s3=opts.witness_s3, checkpoint_files=opts.checkpoint_files, origin=opts.origin,
                            cold_only=True)
        newest: dict[str, tuple[int, bytes]] = {}
        if not (opts.witness_dirs or opts.witness_s3 or opts.checkpoint_files):
            return newest
        for stream, log_size in log_sizes.items():
            res = self._stream(stream)
            summary: CheckpointSummary = res.checkpoints
            notes = _collect_checkpoints(stream, topts, summary,
                                         lambda code, msg, seq, s=stream: self.add(code, s, "", msg, seq))
            by_size: dict[int, dict[bytes, set[str]]] = {}
            seen: set[bytes] = set()
            for n in notes:
                digest = hashlib.sha256(n.source.encode() + b"\0" + n.note).digest()
                if digest in seen:
                    continue
                seen.add(digest)
                summary.notes += 1
                try:
                    if opts.verifiers:
                        cp, _ = open_checkpoint(n.note, opts.verifiers)
                        summary.signatures_verified += 1
                    else:
                        cp = Checkpoint.parse(split_note(n.note)[0])
                except NoteError as exc:
                    self.add("checkpoint-signature-invalid", stream, "", f"a checkpoint from {n.source} does not "
                             f"verify: {exc}")
                    continue
                by_size.setdefault(cp.size, {}).setdefault(cp.root, set()).add(n.source)
                if n.witness:
                    summary.witness_latest[n.source] = max(summary.witness_latest.get(n.source) or 0, cp.size)
                    if cp.size <= log_size and cp.size > newest.get(stream, (0, b""))[0]:
                        newest[stream] = (cp.size, cp.root)
            for size, variants in sorted(by_size.items()):
                if len(variants) > 1:
                    self.add("checkpoint-fork", stream, "", f"size {size} was signed with {len(variants)} different "
                             "roots", size)
                if size > log_size:
                    srcs = sorted({s for v in variants.values() for s in v})
                    self.add("witness-ahead", stream, "", f"{', '.join(srcs)} holds a checkpoint of size {size} "
                             f"but the index holds only {log_size} records: records were removed after they were "
                             "witnessed", size)
        return newest

    # -- sampled deep checks ---------------------------------------------------------------------
    def _deep(self, rows: list[tuple[Any, ...]], witnessed: dict[str, tuple[int, bytes]], tmp: Path) -> None:
        if not rows:
            return
        if self.store is None:
            raise TierError("sampled deep checks need --cold (where the segments are)")
        for stream, segment, key, first_seq, last_seq, size, sha256, stored_size, stored_sha256, merkle_root in rows:
            res = self._stream(stream)
            res.counted["sampled"] = res.counted.get("sampled", 0) + 1
            d = Path(tempfile.mkdtemp(dir=tmp))
            try:
                try:
                    st = self.store.stat(key)
                    self.requests.add("head")
                    fr = fetch_segment(self.store, st, d)
                    self.requests.add("get")
                except ColdError as exc:
                    self.add("unreadable-object", stream, segment, f"{key}: {exc.summary}", first_seq, key)
                    continue
                if fr.stored_sha256 != stored_sha256 or fr.stored_size != stored_size:
                    self.add("object-replaced", stream, segment, f"downloaded bytes hash to {fr.stored_sha256[:16]}… "
                             f"({fr.stored_size} bytes); the index says {stored_sha256[:16]}… ({stored_size})",
                             first_seq, key)
                if fr.frame_problem is not None:
                    self.add("frame-invalid", stream, segment, fr.frame_problem, first_seq, key)
                if not fr.ok:
                    self.add("content-invalid", stream, segment, f"{fr.problem}: {fr.detail}", first_seq, key)
                    continue
                if fr.sha256 != sha256 or fr.size != size:
                    self.add("content-mismatch", stream, segment, f"decompresses to {fr.size} bytes with SHA-256 "
                             f"{fr.sha256[:16]}…; the index says {size} bytes, {sha256[:16]}…", first_seq, key)
                scan = chain.scan_segment(fr.path, stream=stream)
                for f in scan.findings:
                    self.add(f.reason, stream, segment, f.message, f.seq, key)
                root = (scan.seal or {}).get("merkle_root", scan.merkle_root)
                if not scan.findings and root != merkle_root:
                    self.add("content-mismatch", stream, segment, f"Merkle root {str(root)[:16]}… differs from the "
                             f"index's {merkle_root[:16]}…", first_seq, key)
                w = witnessed.get(stream)
                if w is not None and first_seq < w[0] <= last_seq + 1:
                    got = roots_in_segment(fr.path, [w[0]]).get(w[0])
                    res.checkpoints.recomputed += isinstance(got, bytes)
                    if got is None or isinstance(got, str):
                        self.add("checkpoint-unchecked", stream, "", f"checkpoint of size {w[0]}: {got}", w[0])
                    elif got != w[1]:
                        self.add("witness-root-mismatch", stream, "", f"the segments give root {got.hex()[:16]}… at "
                                 f"size {w[0]} but a witness holds {w[1].hex()[:16]}…: records before seq {w[0]} "
                                 "were rewritten after they were witnessed", w[0])
            finally:
                shutil.rmtree(d, ignore_errors=True)


def verify_inventory(store: ColdStore | None, opts: InventoryOptions) -> TierReport:
    return InventoryVerifier(store, opts).run()
