"""The log's layout: every path and object key that a stage writes and another reads, named
once (docs/FORMAT.md §2, §6, §10; docs/COLD.md; docs/LEDGER.md).

A hot tier ``<hot>/``::

    <hot>/.ship/ledger.sqlite                the shipper's ledger (SHIP_DIR, LEDGER_FILE)
    <hot>/<stream>/                          one directory per stream (a valid stream name)
        seg-<first seq:020d>[.<attempt>].jsonl   segments (segment_name, parse_segment_name)
        head.json                            the stream head (HEAD_FILE; StreamHead, read_head, write_head)
        LOCK                                 the writer's lock, holding its pid (LOCK_FILE)
        checkpoints/latest.note, history.jsonl   signed checkpoints (CHECKPOINT_DIR, ...)
        tree/                                Merkle tiles (TREE_DIR)
        fss/state.json                       forward-secure sealing state (FSS_DIR, FSS_STATE_FILE)

A cold store: one object per segment, ``[<prefix>/]<stream>/<segment name>[.zst]``
(``object_key``, ``stream_prefix``, ``segment_of_key``), the segment manifest in the
object's metadata (``encode_metadata``, ``decode_metadata``, ``manifest_from_metadata``).

Witnesses: a directory witness keeps ``<dir>/<escaped origin>/<size:020d>.note`` and
``latest.note``; an S3 witness ``<prefix>/<escaped origin>/<size:020d>``; the witness
server ``<dir>/<escaped origin>.note`` (``escape_origin``, ``witness_note_name``).

What a hot tier and a stream directory are is decided here too, the one place commands
decide whether a path is what they expect (README, "Exit codes, wrong paths and errors"):

- A **stream directory** is a directory whose name is a valid stream name and which holds at
  least one segment file (``seg-<first seq>[.<attempt>].jsonl``), the writer's ``head.json``
  or its ``LOCK`` file.  The writer creates ``LOCK`` when it opens a stream, so a stream
  exists from its first append on; a stream whose segments were all shipped and evicted
  keeps ``head.json`` and ``LOCK``.
- A **hot tier** is a directory that holds the shipper's ledger directory (``.ship/``) or at
  least one stream directory.  Other entries (a ``lost+found``, a README) are ignored: they
  are neither streams nor a reason to refuse.

Commands that read or change a hot tier refuse any other path (a file, an empty directory,
a repository, a typo) with one line naming the problem and the fix, and create nothing
(README, "Exit codes, wrong paths and errors").  Creating a stream is explicit: ``pipeline
append`` (its first append) or the sidecar's ingest.

This module depends on nothing but the other format modules: every stage (hot, ship,
cold, verify, witness, ingest, cli) reads its names from here.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import orjson

from pipeline.errors import PipelineError
from pipeline.format.files import atomic_write
from pipeline.format.manifest import SegmentManifest
from pipeline.format.record import validate_stream_name

StrPath = str | os.PathLike[str]

# ---------------------------------------------------------------------------- hot tier names

SHIP_DIR = ".ship"  # the shipper's directory in a hot tier
LEDGER_DIR = SHIP_DIR
LEDGER_FILE = "ledger.sqlite"
HEAD_FILE = "head.json"
LOCK_FILE = "LOCK"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_LATEST = "latest.note"
CHECKPOINT_HISTORY = "history.jsonl"
TREE_DIR = "tree"
FSS_DIR = "fss"
FSS_STATE_FILE = "state.json"

# ASCII digits only (\d would take other scripts' digits), no attempt 0 or leading zero (one name
# per (first seq, attempt)), and \Z: "$" would also match before a trailing newline
SEGMENT_RE = re.compile(r"^seg-([0-9]{20})(?:\.([1-9][0-9]{0,5}))?\.jsonl\Z")


def segment_name(first_seq: int, attempt: int = 0) -> str:
    if attempt:
        return f"seg-{first_seq:020d}.{attempt}.jsonl"
    return f"seg-{first_seq:020d}.jsonl"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """``(first seq, attempt)`` of a segment file name, or None for any other name."""
    m = SEGMENT_RE.match(name)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2) or 0)


def ledger_path(hot: StrPath) -> Path:
    return Path(hot) / SHIP_DIR / LEDGER_FILE


# ---------------------------------------------------------------------------- recognising a hot tier

def is_stream_dir(path: str | os.PathLike[str]) -> bool:
    d = Path(path)
    try:
        validate_stream_name(d.name)
    except ValueError:
        return False
    try:
        with os.scandir(d) as it:
            for entry in it:
                if entry.name in (HEAD_FILE, LOCK_FILE) or parse_segment_name(entry.name) is not None:
                    return True
    except (NotADirectoryError, FileNotFoundError, PermissionError):
        return False
    return False


def stream_dirs(hot: str | os.PathLike[str]) -> list[str]:
    """Names of the stream directories in ``hot``, sorted."""
    d = Path(hot)
    try:
        with os.scandir(d) as it:
            names = [e.name for e in it if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    except (NotADirectoryError, FileNotFoundError, PermissionError):
        return []
    return sorted(n for n in names if is_stream_dir(d / n))


def is_hot_tier(path: str | os.PathLike[str]) -> bool:
    d = Path(path)
    return d.is_dir() and ((d / SHIP_DIR).is_dir() or bool(stream_dirs(d)))


def hot_tier_problem(path: str | os.PathLike[str]) -> str | None:
    """None if ``path`` is a hot tier, else one line naming what it is and the fix."""
    d = Path(path)
    if not d.exists():
        return f"hot directory {d} does not exist: check the --hot path (nothing was created)"
    if not d.is_dir():
        return f"--hot {d} is a file, not a hot-tier directory: give the directory that holds the stream directories"
    if is_hot_tier(d):
        return None
    try:
        empty = not any(os.scandir(d))
    except PermissionError:
        return f"cannot read {d}: permission denied (run as the user that owns the hot tier)"
    what = "an empty directory" if empty else "a directory with no stream directories and no .ship/ ledger"
    return (f"{d} is not a hot tier ({what}): check the --hot path; a hot tier holds one directory per "
            "stream (segments, head.json, LOCK)")


def stream_problem(hot: str | os.PathLike[str], stream: str) -> str | None:
    """None if ``hot/stream`` is a stream directory, else one line naming the problem and the fix."""
    try:
        validate_stream_name(stream)
    except ValueError as exc:
        return str(exc)
    if is_stream_dir(Path(hot) / stream):
        return None
    known = stream_dirs(hot)
    listing = ", ".join(known[:10]) + (" …" if len(known) > 10 else "") if known else "none"
    return (f"stream {stream!r} does not exist in {hot} (streams there: {listing}): check --stream; "
            "a stream is created by its first append")


# ---------------------------------------------------------------------------- head.json (FORMAT §6)


class HeadError(PipelineError, ValueError):
    """``head.json`` exists but cannot be read or is not a stream head (FORMAT §6)."""


def _hexes(value: Any, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
        raise HeadError(f"{what} is not a list of hex hashes")
    try:
        return tuple(bytes.fromhex(h) for h in value)
    except ValueError as exc:
        raise HeadError(f"{what} is not a list of hex hashes ({exc})") from None


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise HeadError(f"{what} is not an integer")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise HeadError(f"{what} is not a string")
    return value


@dataclass(frozen=True)
class StreamHead:
    """The stream head (docs/FORMAT.md §6): the chain state at ``next_seq`` and, when that
    state lies inside an open segment, where that segment starts.  Hashes in the file are
    lowercase hex; ``frontier`` and ``segment_start_frontier`` hold the raw digests."""

    stream: str
    next_seq: int
    last_hash: str
    tree_size: int
    frontier: tuple[bytes, ...]
    segment: str | None = None
    segment_first_seq: int | None = None
    segment_first_prev: str | None = None
    segment_start_frontier: tuple[bytes, ...] | None = None
    closed_cleanly: bool = False

    @property
    def anchor_seq(self) -> int:
        """Where the head says the newest segment starts (FORMAT §6, "the anchor")."""
        return self.segment_first_seq if self.segment_first_seq is not None else self.next_seq

    def anchor(self) -> tuple[int, str, int, tuple[bytes, ...]]:
        """The chain state at the anchor: ``(seq, prev hash hex, tree size, frontier)``."""
        if self.segment_first_seq is not None:
            assert self.segment_first_prev is not None and self.segment_start_frontier is not None
            return (self.segment_first_seq, self.segment_first_prev, self.segment_first_seq,
                    self.segment_start_frontier)
        return self.next_seq, self.last_hash, self.tree_size, self.frontier

    def to_json(self) -> bytes:
        """The file's bytes: compact JSON, keys in the order FORMAT §6 lists them."""
        out: dict[str, Any] = {"stream": self.stream, "next_seq": self.next_seq, "last_hash": self.last_hash,
                               "tree_size": self.tree_size, "frontier": [h.hex() for h in self.frontier]}
        if self.segment_first_seq is not None:
            assert self.segment_start_frontier is not None
            out["segment"] = self.segment
            out["segment_first_seq"] = self.segment_first_seq
            out["segment_first_prev"] = self.segment_first_prev
            out["segment_start_frontier"] = [h.hex() for h in self.segment_start_frontier]
        if self.closed_cleanly:
            out["closed_cleanly"] = True
        return orjson.dumps(out)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StreamHead:
        try:
            head = cls(stream=_str(d.get("stream", ""), "stream"), next_seq=_int(d["next_seq"], "next_seq"),
                       last_hash=_str(d["last_hash"], "last_hash"), tree_size=_int(d["tree_size"], "tree_size"),
                       frontier=_hexes(d["frontier"], "frontier"))
            if "segment_first_seq" in d:
                head = dataclasses.replace(
                    head, segment=_str(d.get("segment", ""), "segment"),
                    segment_first_seq=_int(d["segment_first_seq"], "segment_first_seq"),
                    segment_first_prev=_str(d["segment_first_prev"], "segment_first_prev"),
                    segment_start_frontier=_hexes(d["segment_start_frontier"], "segment_start_frontier"))
        except KeyError as exc:
            raise HeadError(f"{exc.args[0]} is missing") from None
        closed = d.get("closed_cleanly", False)
        if type(closed) is not bool:
            raise HeadError("closed_cleanly is not true or false")
        return dataclasses.replace(head, closed_cleanly=closed)


def head_path(stream_dir: StrPath) -> Path:
    return Path(stream_dir) / HEAD_FILE


def read_head(stream_dir: StrPath) -> StreamHead | None:
    """The stream head of ``stream_dir``: None when there is none, HeadError when it cannot
    be read or is malformed.  A file holding JSON that is not an object is treated as no
    head, as every reader always did (only a damaged or forged file holds one)."""
    path = head_path(stream_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HeadError(f"cannot read {path}: {exc}") from exc
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HeadError(f"{path} is not JSON ({exc})") from None
    if not isinstance(d, dict):
        return None
    try:
        return StreamHead.from_dict(d)
    except HeadError as exc:
        raise HeadError(f"{path} is malformed ({exc})") from None


def read_head_or_none(stream_dir: StrPath) -> StreamHead | None:
    """``read_head`` for verifiers and the shipper, which treat an unreadable head like none
    (the shipper then evicts nothing; a verifier has nothing to compare with)."""
    try:
        return read_head(stream_dir)
    except HeadError:
        return None


def write_head(stream_dir: StrPath, head: StreamHead) -> None:
    """Replace ``head.json`` atomically and durably (FORMAT §6)."""
    atomic_write(head_path(stream_dir), head.to_json())


# ---------------------------------------------------------------------------- cold object keys

COMPRESSION_SUFFIX = {"none": "", "zstd": ".zst"}


def object_key(prefix: str, stream: str, segment_name: str, compression: str) -> str:
    """``[<prefix>/]<stream>/<segment name>[.zst]``: listing a stream's prefix returns its
    segments in name order."""
    validate_stream_name(stream)
    if parse_segment_name(segment_name) is None:
        raise ValueError(f"{segment_name!r} is not a segment file name")
    base = f"{stream}/{segment_name}{COMPRESSION_SUFFIX[compression]}"
    prefix = prefix.strip("/")
    return f"{prefix}/{base}" if prefix else base


def stream_prefix(prefix: str, stream: str) -> str:
    validate_stream_name(stream)
    prefix = prefix.strip("/")
    return f"{prefix}/{stream}/" if prefix else f"{stream}/"


def segment_of_key(key: str) -> tuple[str, str, str] | None:
    """``(stream, segment_name, compression)`` for a cold object key, or None."""
    parts = key.rsplit("/", 2)
    if len(parts) < 2:
        return None
    stream, name = parts[-2], parts[-1]
    compression = "none"
    if name.endswith(".zst"):
        name, compression = name[: -len(".zst")], "zstd"
    if parse_segment_name(name) is None:
        return None
    return stream, name, compression


# The file:// cold store's own directories beside the objects (docs/COLD.md)
COLD_META_DIR = ".meta"
COLD_HOLD_DIR = ".holds"

# ---------------------------------------------------------------------------- cold object metadata

# Metadata keys: lowercase, underscores only, so the same names are valid S3 user metadata
# (x-amz-meta-*) and Azure metadata (which must be C# identifiers: no hyphens).
META_PREFIX = "worm_"
METADATA_FORMAT = "1"
METADATA_KEYS = (
    "format",
    "stream",
    "segment",
    "first_seq",
    "last_seq",
    "records",
    "size",  # uncompressed segment size
    "sha256",  # uncompressed segment SHA-256 (hex)
    "merkle_root",
    "first_prev",
    "last_hash",
    "sealed",
    "first_ts",
    "last_ts",
    "compression",
    "stored_size",  # size of the stored (possibly compressed) bytes
    "stored_sha256",  # SHA-256 (hex) of the stored bytes
)
# S3 limits user metadata to 2 KB (keys + values); the longest possible set here is ~1 KB.
S3_METADATA_LIMIT = 2048

def encode_metadata(
    manifest: SegmentManifest,
    compression: str,
    stored_size: int,
    stored_sha256: str,
    stored_sha256_composite: str | None = None,
) -> dict[str, str]:
    values = {
        "format": METADATA_FORMAT,
        "stream": manifest.stream,
        "segment": manifest.segment,
        "first_seq": str(manifest.first_seq),
        "last_seq": str(manifest.last_seq),
        "records": str(manifest.records),
        "size": str(manifest.size),
        "sha256": manifest.sha256,
        "merkle_root": manifest.merkle_root,
        "first_prev": manifest.first_prev,
        "last_hash": manifest.last_hash,
        "sealed": "true" if manifest.sealed else "false",
        "first_ts": manifest.first_ts,
        "last_ts": manifest.last_ts,
        "compression": compression,
        "stored_size": str(stored_size),
        "stored_sha256": stored_sha256,
    }
    out = {META_PREFIX + k: values[k] for k in METADATA_KEYS}
    if stored_sha256_composite:
        # Multipart S3 objects carry a checksum of the part checksums, not of the whole
        # body; recording it lets a single HEAD verify them too.
        out[META_PREFIX + "stored_sha256_composite"] = stored_sha256_composite
    total = sum(len(k) + len(v) for k, v in out.items())
    if total > S3_METADATA_LIMIT:  # only an absurd stream name could do this; refuse, do not truncate
        raise ValueError(f"segment metadata is {total} bytes, over the 2 KB S3 limit")
    return out


def decode_metadata(raw: Mapping[str, str]) -> dict[str, str]:
    """Our keys without the prefix.  Case-insensitive: some services lowercase metadata names."""
    out: dict[str, str] = {}
    for k, v in raw.items():
        lk = k.lower()
        if lk.startswith(META_PREFIX):
            out[lk[len(META_PREFIX):]] = v
    return out


def manifest_from_metadata(meta: Mapping[str, str]) -> SegmentManifest:
    """Rebuild a manifest from object metadata (for auditors without the hot copy)."""
    m = decode_metadata(meta)
    try:
        return SegmentManifest(
            stream=m["stream"],
            segment=m["segment"],
            first_seq=int(m["first_seq"]),
            last_seq=int(m["last_seq"]),
            records=int(m["records"]),
            size=int(m["size"]),
            sha256=m["sha256"],
            merkle_root=m["merkle_root"],
            first_prev=m["first_prev"],
            last_hash=m["last_hash"],
            sealed=m["sealed"] == "true",
            first_ts=m["first_ts"],
            last_ts=m["last_ts"],
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"object metadata does not describe a segment ({exc})") from exc


# ---------------------------------------------------------------------------- witnesses

WITNESS_LATEST = "latest.note"  # a directory witness's newest checkpoint per origin


def escape_origin(origin: str) -> str:
    """Origin as one path component / object-key segment: percent-encoding, nothing kept."""
    return quote(origin, safe="")


def unescape_origin(component: str) -> str:
    return unquote(component)


def witness_note_name(size: int) -> str:
    """A directory witness's file for the checkpoint of tree size ``size`` (sorts by size)."""
    return f"{size:020d}.note"


def witness_object_key(prefix: str, origin: str, size: int) -> str:
    """An S3 witness's object for the checkpoint of tree size ``size`` (sorts by size)."""
    return f"{witness_origin_prefix(prefix, origin)}{size:020d}"


def witness_origin_prefix(prefix: str, origin: str) -> str:
    return f"{prefix}/{escape_origin(origin)}/"


def witness_server_note(directory: StrPath, origin: str) -> Path:
    """The witness server's latest cosigned checkpoint for ``origin``."""
    return Path(directory) / f"{escape_origin(origin)}.note"
