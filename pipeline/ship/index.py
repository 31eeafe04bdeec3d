"""The manifest index: per stream and UTC day, locked Parquet parts listing every confirmed segment.

docs/INDEX.md specifies the format (what a verifier MUST check); docs/SCALING.md says why
it exists: S3 Inventory carries no user metadata and no checksum values, so a fleet-scale
verify-tier joins the inventory with this index instead of sending one HEAD per object.

Crash safety follows the ledger's rule (written before acted on):

1. the rows of the next part are chosen in one ledger transaction (``index_parts`` row in
   state ``writing``; ``segments.index_part`` set for each row), with the SHA-256 of the
   previous stored part of the stream as the chain link;
2. the part is built from those ledger rows (deterministically) and uploaded through the
   cold tier's policy (``ColdTier.put_index_part``: fail closed, create-only,
   copy-then-verify including the lock);
3. the part is marked ``stored`` with its SHA-256, the next part's link.

A crash after 1 re-runs 2 with the same rows; a crash after the PUT finds the object
(create-only) and adopts it when it holds exactly the chosen rows at the same position in
the chain (else the stream's index stops, reported, never written twice).  A segment
confirmed before a crash and not yet in a part is still ``index_part IS NULL`` in the
ledger: the next pass writes it.  So no confirmed segment's row is ever lost.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.errors import PipelineError
from pipeline.format.checkpoint import NoteError, Signer, Verifier, open_note, sign_note
from pipeline.format.layout import decode_metadata
from pipeline.ship.ledger import Entry, IndexPart, Ledger

log = logging.getLogger("pipeline.ship.index")

INDEX_DIR = "_index"
INDEX_FORMAT = "1"
FOOTER_KEY = b"worm.index"
SIGNATURE_KEY = b"worm.index.signature"  # the signed note (docs/INDEX.md "Signature")
NOTE_HEADER = "worm-pipeline/index-part/v1"
GENESIS_PART_HASH = "0" * 64
# the object metadata of a part (informational: the Parquet footer is authoritative)
INDEX_METADATA_KEYS = ("worm_index_format", "worm_index_stream", "worm_index_part", "worm_index_prev_sha256")
MAX_ROWS_PER_PART = 100_000  # bounds the writer's memory (~300 bytes a row) and a reader's row group


class IndexConflict(PipelineError, RuntimeError):
    """An object already stored under the next part's key is not the part the ledger chose."""


def _schema() -> Any:
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    return pa.schema([
        ("stream", pa.string()), ("dt", pa.string()), ("segment", pa.string()), ("key", pa.string()),
        ("first_seq", pa.int64()), ("last_seq", pa.int64()), ("records", pa.int64()),
        ("size", pa.int64()), ("sha256", pa.string()),
        ("stored_size", pa.int64()), ("stored_sha256", pa.string()), ("stored_md5", pa.string()),
        ("compression", pa.string()), ("merkle_root", pa.string()),
        ("first_prev", pa.string()), ("last_hash", pa.string()), ("sealed", pa.bool_()),
        ("first_ts", ts), ("last_ts", ts), ("tree_size", pa.int64()), ("tree_root", pa.string()),
        ("confirmed_at", ts),
    ])


COLUMNS = ("stream", "dt", "segment", "key", "first_seq", "last_seq", "records", "size", "sha256", "stored_size",
           "stored_sha256", "stored_md5", "compression", "merkle_root", "first_prev", "last_hash", "sealed",
           "first_ts", "last_ts", "tree_size", "tree_root", "confirmed_at")


def index_key(prefix: str, stream: str, day: str, part: int) -> str:
    """``<prefix>/_index/<stream>/dt=YYYY-MM-DD/<part, 10 digits>.parquet``.  A stream name
    starts with a letter or digit, so ``_index`` is never a stream."""
    base = f"{INDEX_DIR}/{stream}/dt={day}/{part:010d}.parquet"
    prefix = prefix.strip("/")
    return f"{prefix}/{base}" if prefix else base


def is_index_key(key: str, prefix: str) -> bool:
    """Whether ``key`` (a full object key) lies under the store prefix's ``_index/``."""
    prefix = prefix.strip("/")
    return key.startswith(f"{prefix}/{INDEX_DIR}/" if prefix else f"{INDEX_DIR}/")


def record_time(ts: str) -> dt.datetime | None:
    """A record ``ts`` (RFC 3339 UTC, microseconds) as an aware datetime; None when empty."""
    if not ts:
        return None
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(dt.UTC)


def day_of(entry: Entry) -> str:
    """The UTC day a segment is indexed under: its first record's, else its confirmation's."""
    t = record_time(entry.first_ts)
    if t is None:
        t = dt.datetime.fromtimestamp(entry.confirmed_at or entry.discovered_at, dt.UTC)
    return t.date().isoformat()


@dataclass(frozen=True)
class PartMeta:
    """The footer metadata of one part (Parquet key-value metadata ``worm.index``)."""

    format: str
    stream: str
    dt: str
    part: int
    prev_sha256: str
    rows: int
    first_seq: int
    last_seq: int

    def to_json(self) -> bytes:
        return json.dumps({"format": self.format, "stream": self.stream, "dt": self.dt, "part": self.part,
                           "prev_sha256": self.prev_sha256, "rows": self.rows, "first_seq": self.first_seq,
                           "last_seq": self.last_seq}, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> PartMeta:
        try:
            d = json.loads(raw)
            return cls(str(d["format"]), str(d["stream"]), str(d["dt"]), int(d["part"]), str(d["prev_sha256"]),
                       int(d["rows"]), int(d["first_seq"]), int(d["last_seq"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"index part footer metadata is not a worm.index record ({exc})") from exc


MAX_EXACT_INT = 2**53 - 1  # RFC 8785 (JCS) numbers are IEEE doubles: larger integers are not canonical


def rows_sha256(table: Any) -> str:
    """docs/INDEX.md "Signature": SHA-256 over the rows in file order, each the RFC 8785
    (JCS) serialisation of the array of its values in ``COLUMNS`` order followed by ``\\n``;
    timestamps as integer microseconds since the Unix epoch.  Independent of the Parquet
    encoding, so any reader recomputes it from the values it reads."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for name in COLUMNS:
        col = table.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        if pa.types.is_integer(col.type) and len(col) and col.null_count < len(col):
            lo, hi = pc.min_max(col).values()
            if max(abs(lo.as_py()), abs(hi.as_py())) > MAX_EXACT_INT:
                raise ValueError(f"column {name} holds an integer outside the exact range of RFC 8785")
        columns.append(col.to_pylist())
    digest = hashlib.sha256()
    for values in zip(*columns, strict=True):
        # for strings, integers, booleans and null, orjson writes exactly RFC 8785's bytes (the
        # same as json.dumps(ensure_ascii=False, separators=(",", ":")); tests/ship/test_index.py)
        digest.update(orjson.dumps(values) + b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class PartNote:
    """The body of an index part's signed note (docs/INDEX.md "Signature")."""

    origin: str
    meta: PartMeta
    rows_sha256: str

    def body(self) -> bytes:
        m = self.meta
        for value in (self.origin, m.stream, m.dt):
            if not value or any(c in value for c in "\n\r") or not value.isprintable():
                raise NoteError(f"index note field {value!r} must be one printable line")
        lines = [NOTE_HEADER, f"origin {self.origin}", f"format {m.format}", f"stream {m.stream}", f"dt {m.dt}",
                 f"part {m.part}", f"prev {m.prev_sha256}", f"rows {m.rows}", f"first_seq {m.first_seq}",
                 f"last_seq {m.last_seq}", f"rows_sha256 {self.rows_sha256}"]
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def parse(cls, text: bytes) -> PartNote:
        try:
            lines = text.decode("utf-8").split("\n")
        except UnicodeDecodeError as exc:
            raise NoteError("index note is not UTF-8") from exc
        names = ("origin", "format", "stream", "dt", "part", "prev", "rows", "first_seq", "last_seq", "rows_sha256")
        if len(lines) != len(names) + 2 or lines[0] != NOTE_HEADER or lines[-1] != "":
            raise NoteError(f"index note is not a {NOTE_HEADER} body ({len(names) + 1} lines)")
        values: dict[str, str] = {}
        for name, line in zip(names, lines[1:-1], strict=True):
            key, sep, value = line.partition(" ")
            if key != name or not sep or not value:
                raise NoteError(f"index note line {line!r}: expected '{name} <value>'")
            values[name] = value
        try:
            ints = {k: int(values[k]) for k in ("part", "rows", "first_seq", "last_seq")}
        except ValueError as exc:
            raise NoteError(f"index note has a non-decimal number ({exc})") from exc
        if any(str(v) != values[k] for k, v in ints.items()):
            raise NoteError("index note numbers must be decimal without sign or leading zeros")
        meta = PartMeta(values["format"], values["stream"], values["dt"], ints["part"], values["prev"],
                        ints["rows"], ints["first_seq"], ints["last_seq"])
        return cls(values["origin"], meta, values["rows_sha256"])


def build_part(meta: PartMeta, rows: Sequence[dict[str, Any]], *, signer: Signer | None = None,
               origin: str | None = None) -> bytes:
    """The Parquet bytes of one part: the same rows and metadata give the same bytes (with
    one pyarrow version), so a retry after a crash writes what the first attempt wrote.
    With a signer, the footer also carries the signed note (Ed25519 is deterministic and
    the note's body is a function of the rows and metadata: still the same bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(list(rows), schema=_schema())
    footer = {FOOTER_KEY: meta.to_json()}
    if signer is not None:
        note = PartNote(origin or meta.stream, meta, rows_sha256(table))
        footer[SIGNATURE_KEY] = sign_note(note.body(), [signer])
    table = table.replace_schema_metadata(footer)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=MAX_ROWS_PER_PART)
    return buf.getvalue()


def read_part_signature(path_or_bytes: str | bytes) -> bytes | None:
    """The signed note in a part's footer, None when the part is unsigned."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        src = pa.BufferReader(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
        kv = pq.ParquetFile(src).metadata.metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"not a Parquet file ({exc})") from exc
    note: bytes | None = kv.get(SIGNATURE_KEY)
    return note


def check_part_signature(path: str, note: bytes, meta: PartMeta, verifiers: Sequence[Verifier],
                         origin: str | None = None) -> PartNote:
    """docs/INDEX.md "Signature", what a verifier MUST check: a trusted key signed the note,
    its body repeats the footer record, and its rows digest is the file's.  NoteError
    names the first disagreement."""
    import pyarrow.parquet as pq

    opened = open_note(note, verifiers)
    body = PartNote.parse(opened.text)
    if body.meta != meta:
        raise NoteError(f"the signed note describes {body.meta}, the footer says {meta}")
    if origin is not None and body.origin != origin:
        raise NoteError(f"the signed note names origin {body.origin!r}, expected {origin!r}")
    try:
        actual = rows_sha256(pq.read_table(path, columns=list(COLUMNS)))
    except (ValueError, KeyError) as exc:
        raise NoteError(f"the rows cannot be digested ({exc})") from exc
    if actual != body.rows_sha256:
        raise NoteError(f"the rows hash to {actual[:16]}…, the signed note says {body.rows_sha256[:16]}…: "
                        "the rows were changed after signing")
    return body


def read_part_meta(path_or_bytes: str | bytes) -> tuple[PartMeta, int]:
    """(footer metadata, row count in the file) of a part; ValueError when it is not one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        src = pa.BufferReader(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
        md = pq.ParquetFile(src).metadata
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"not a Parquet file ({exc})") from exc
    kv = md.metadata or {}
    if FOOTER_KEY not in kv:
        raise ValueError("Parquet file without worm.index footer metadata")
    return PartMeta.from_json(kv[FOOTER_KEY]), md.num_rows


def part_segments(data: bytes) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    return [str(s) for s in pq.read_table(pa.BufferReader(data), columns=["segment"]).column(0).to_pylist()]


class IndexWriter:
    """Writes the index parts of every stream from the ledger (see the module docstring)."""

    def __init__(self, store: Any, ledger: Ledger, *, max_rows: int = MAX_ROWS_PER_PART,
                 signer: Signer | None = None, origin: str | None = None) -> None:
        self.store = store
        self.ledger = ledger
        self.max_rows = max(1, max_rows)
        # the log's checkpoint key signs every part (docs/INDEX.md "Signature"); the origin
        # is the checkpoints' (the stream name when none is configured)
        self.signer = signer
        self.origin = origin

    def flush(self, now: float) -> int:
        """Write every pending part; returns the number of parts stored.  ColdError and
        IndexConflict propagate (the shipper reports them; the rows stay in the ledger)."""
        written = 0
        for stream in self.ledger.index_streams():
            for part in self.ledger.index_parts(stream, state="writing"):
                self._store(part, self.ledger.index_rows(part.key), now)
                written += 1
            while rows := self.ledger.unindexed(stream, self.max_rows):
                day = day_of(rows[0])
                run: list[Entry] = []
                for e in rows:
                    if day_of(e) != day:
                        break
                    run.append(e)
                stored = self.ledger.index_parts(stream)
                number = stored[-1].part + 1 if stored else 0
                prev = stored[-1].sha256 if stored else GENESIS_PART_HASH
                if prev is None:  # the previous part is not stored: never chain to an unknown link
                    raise IndexConflict(f"index part {number - 1} of {stream} has no stored SHA-256")
                part = IndexPart(stream, number, index_key(self.store.prefix, stream, day, number), day, prev,
                                 None, None, len(run), "writing", now, None)
                self.ledger.begin_index_part(part, [e.segment for e in run])
                self._store(part, run, now)
                written += 1
        return written

    def _row(self, e: Entry, day: str) -> dict[str, Any]:
        stored_size, stored_sha = e.stored_size, e.stored_sha256
        key = e.cold_key or self.store.key_for(e.stream, e.segment)
        if stored_size is None or not stored_sha:
            # the object already existed when shipped (create-only found it and verified it):
            # what it holds is recorded in its metadata (one HEAD, only in that case)
            meta = decode_metadata(self.store.stat(key).metadata)
            stored_size = int(meta.get("stored_size", "0") or 0)
            stored_sha = meta.get("stored_sha256", "")
        confirmed = e.confirmed_at if e.confirmed_at is not None else e.updated_at
        return {
            "stream": e.stream, "dt": day, "segment": e.segment, "key": key, "first_seq": e.first_seq,
            "last_seq": e.last_seq, "records": e.records, "size": e.size, "sha256": e.sha256,
            "stored_size": stored_size, "stored_sha256": stored_sha, "stored_md5": None,
            "compression": "zstd" if key.endswith(".zst") else "none", "merkle_root": e.merkle_root,
            "first_prev": e.first_prev, "last_hash": e.last_hash, "sealed": e.sealed,
            "first_ts": record_time(e.first_ts), "last_ts": record_time(e.last_ts), "tree_size": e.tree_size,
            "tree_root": e.tree_root, "confirmed_at": dt.datetime.fromtimestamp(confirmed, dt.UTC),
        }

    def _store(self, part: IndexPart, rows: list[Entry], now: float) -> None:
        meta = PartMeta(INDEX_FORMAT, part.stream, part.dt, part.part, part.prev_sha256, len(rows),
                        min(e.first_seq for e in rows), max(e.last_seq for e in rows))
        data = build_part(meta, [self._row(e, part.dt) for e in rows], signer=self.signer, origin=self.origin)
        obj_meta = dict(zip(INDEX_METADATA_KEYS, (INDEX_FORMAT, part.stream, str(part.part), part.prev_sha256),
                            strict=True))
        res = self.store.put_index_part(part.key, data, obj_meta)
        if not res.created and res.existing is not None:
            # a retry after a crash: adopt the object only if it is this part, row for row
            try:
                found, _n = read_part_meta(res.existing)
                same = (found.stream, found.part, found.prev_sha256) == (part.stream, part.part, part.prev_sha256) \
                    and part_segments(res.existing) == [e.segment for e in rows]
            except ValueError:
                same = False
            if not same:
                raise IndexConflict(f"{part.key} already exists and is not index part {part.part} of {part.stream} "
                                    "as the ledger chose it: the stream's index stops here (investigate)")
            log.info("index part %s was stored by an earlier attempt: adopted", part.key)
        self.ledger.finish_index_part(part.stream, part.part, res.sha256, res.size, now)
        log.info("index part %s stored (%d rows, %s)", part.key, len(rows), res.lock_status)
