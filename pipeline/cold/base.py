"""The cold-store protocol, its result types, settings, object naming and metadata.

One small protocol (in the spirit of Litestream's ReplicaClient) with one module per
backend.  Every backend stores a sealed segment as ONE object, named
``<prefix>/<stream>/<segment file name>`` (plus ``.zst`` when compressed), so listing a
stream's prefix returns its segments in seq order.  The segment manifest travels as
object metadata (keys in ``METADATA_KEYS``), not as a second object: one PUT per
segment, and a single HEAD returns everything normal verification needs.

Object keys and metadata are part of the log's layout and live in
``pipeline.format.layout``; the names re-exported here (``object_key``, ``stream_prefix``,
``segment_of_key``, ``encode_metadata``, ``decode_metadata``, ``manifest_from_metadata``,
``META_PREFIX``, ``METADATA_FORMAT``, ``METADATA_KEYS``, ``S3_METADATA_LIMIT``,
``COMPRESSION_SUFFIX``, ``SegmentManifest``) are kept for one release: import them from
``pipeline.format`` instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from pipeline.errors import PipelineError
from pipeline.format.layout import COMPRESSION_SUFFIX as COMPRESSION_SUFFIX
from pipeline.format.layout import META_PREFIX as META_PREFIX
from pipeline.format.layout import METADATA_FORMAT as METADATA_FORMAT
from pipeline.format.layout import METADATA_KEYS as METADATA_KEYS
from pipeline.format.layout import S3_METADATA_LIMIT as S3_METADATA_LIMIT
from pipeline.format.layout import decode_metadata as decode_metadata
from pipeline.format.layout import encode_metadata as encode_metadata
from pipeline.format.layout import manifest_from_metadata as manifest_from_metadata
from pipeline.format.layout import object_key as object_key
from pipeline.format.layout import segment_of_key as segment_of_key
from pipeline.format.layout import stream_prefix as stream_prefix
from pipeline.format.manifest import SegmentManifest as SegmentManifest

Compression = Literal["none", "zstd"]
MiB = 1 << 20

@dataclass(frozen=True)
class ColdSettings:
    """Policy and tuning for a cold store.  Holds no credentials: those come from the
    standard chains (boto3's default chain, azure-identity) at client construction."""

    retention_days: int = 2555  # seven years
    allow_unlocked: bool = False  # fail closed: unlocked storage is an error unless allowed
    legal_hold: bool = False  # place a legal hold on every new object
    # S3 server-side encryption.  None (the default) sends no encryption header, so the
    # bucket's default encryption applies (SSE-KMS with its key in terraform/aws); "AES256"
    # or "aws:kms" (optionally with kms_key_id) override it per object.  kms_key_id alone
    # means "aws:kms" with that key.
    sse: str | None = None
    kms_key_id: str | None = None
    storage_class: str | None = None  # S3 StorageClass, Azure access tier (Hot, Cool, Cold)
    compression: Compression = "zstd"
    # Level 1: on ~313-byte chained audit records level 1 measured both faster and smaller
    # than 3 (5.5x vs 5.0x); level 3 shipped slower than no compression at all.  No zstd
    # worker threads by default: the shipper already compresses up to 4 segments at once
    # (one per upload thread; zstd releases the GIL), where one thread per segment shipped
    # as fast as two (191 vs 169 MB/s), and the workers' buffers cost ~9 MiB per upload,
    # what kept the sidecar above its 150 MB target (issue 13).  Figures: docs/BENCHMARKS.md.
    compression_level: int = 1
    compression_threads: int = 0  # zstd worker threads; 0 = compress on the calling thread
    multipart_threshold: int = 64 * MiB  # segments at or above this size go multipart (S3)
    part_size: int = 8 * MiB  # multipart part size / Azure block size: bounds client memory
    retry_max_seconds: float = 60.0  # total time budget for retrying one operation
    retry_initial_backoff: float = 0.2
    retry_max_backoff: float = 5.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    azure_retry_total: int = 0  # azure-core's own retries: off, tenacity is the one policy
    # How long a bucket's (container's) lock state is trusted before it is read again: a
    # refusal is re-checked soon, so that shipping resumes by itself once the operator fixes
    # the bucket; an enforced lock cannot be switched off on S3, so it is re-read rarely.
    lock_recheck_seconds: float = 30.0
    lock_cache_seconds: float = 600.0
    max_segment_size: int = 1 << 34  # refuse to decompress or accept segments larger than this
    spool_dir: str | None = None  # where compressed bodies are staged (default: system temp)

    def __post_init__(self) -> None:
        if self.retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        if self.compression not in COMPRESSION_SUFFIX:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSION_SUFFIX)}")
        if self.compression_threads < -1:
            raise ValueError("compression_threads must be -1 (one per core), 0 (calling thread) or more")
        if self.part_size < 5 * MiB:
            raise ValueError("part_size must be at least 5 MiB (the S3 minimum part size)")
        if self.multipart_threshold < self.part_size:
            raise ValueError("multipart_threshold must be at least part_size")
        if self.sse not in (None, "AES256", "aws:kms"):
            raise ValueError("sse must be AES256, aws:kms or None")
        if self.kms_key_id and self.sse is None:
            object.__setattr__(self, "sse", "aws:kms")
        if self.kms_key_id and self.sse != "aws:kms":
            raise ValueError("kms_key_id needs sse='aws:kms'")
        if self.lock_recheck_seconds <= 0 or self.lock_cache_seconds <= 0:
            raise ValueError("lock_recheck_seconds and lock_cache_seconds must be positive")


@dataclass(frozen=True)
class Capabilities:
    backend: str
    endpoint: str  # redacted
    worm_enforced: bool
    legal_hold: bool  # legal holds can be set and are enforced
    native_sha256: bool  # the service itself stores and reports a SHA-256 of the object
    notes: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        return "; ".join(self.notes)


def lock_state_expired(caps: Capabilities, read_at: float, settings: ColdSettings) -> bool:
    """Whether a cached lock state (read at ``read_at``, ``time.monotonic()``) must be read
    again: a refusal after ``lock_recheck_seconds``, an enforced lock after ``lock_cache_seconds``."""
    import time

    ttl = settings.lock_cache_seconds if caps.worm_enforced else settings.lock_recheck_seconds
    return time.monotonic() - read_at >= ttl


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: dt.datetime | None = None


@dataclass(frozen=True)
class ObjectStat:
    key: str
    size: int
    sha256: str | None  # hex SHA-256 of the stored bytes when the service reports one
    lock_mode: str | None  # "COMPLIANCE", "GOVERNANCE", "Locked", "IMMUTABLE", None
    retain_until: dt.datetime | None
    legal_hold: bool | None  # None: the endpoint does not report it
    metadata: Mapping[str, str]
    storage_class: str | None = None
    last_modified: dt.datetime | None = None
    version_id: str | None = None
    checksum_parts: int = 0  # >0: S3 composite (multipart) checksum over this many parts
    archived: bool = False  # must be restored before it can be read
    restore: str | None = None  # S3 x-amz-restore / Azure archive status, as reported
    sse: str | None = None  # S3 ServerSideEncryption as reported ("aws:kms", "AES256"); None: not reported
    sse_kms_key_id: str | None = None  # S3 SSEKMSKeyId (a key ARN) for aws:kms objects

    @property
    def segment_metadata(self) -> dict[str, str]:
        return decode_metadata(self.metadata)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class VerifyResult:
    key: str
    ok: bool = True
    checks: list[Check] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # machine-readable failure codes, in order
    lock_status: str = "unknown"  # e.g. "COMPLIANCE until 2033-11-20T...", "UNLOCKED (allowed for development)"
    deep: bool = False
    requests: int = 0  # read requests spent on this verification

    def add(self, name: str, ok: bool, detail: str, reason: str | None = None) -> None:
        self.checks.append(Check(name, ok, detail))
        if not ok:
            self.ok = False
            code = reason or name
            if code not in self.reasons:
                self.reasons.append(code)

    def describe(self, indent: str = "") -> str:
        lines = [f"{indent}{'OK' if self.ok else 'FAILED'} {self.key} ({'deep' if self.deep else 'normal'})",
                 f"{indent}  lock: {self.lock_status}"]
        for c in self.checks:
            lines.append(f"{indent}  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        return "\n".join(lines)


@dataclass(frozen=True)
class PutResult:
    key: str
    created: bool  # False: the object already existed (create-only) and was verified instead
    stored_size: int
    stored_sha256: str
    compression: str
    verify: VerifyResult
    multipart: bool = False
    requests: int = 0  # all requests for this segment: PUT(s) + verification reads

    @property
    def lock_status(self) -> str:
        return self.verify.lock_status


class ReadStream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


@runtime_checkable
class ColdStore(Protocol):
    """What the shipper and verify-tier need from write-once storage."""

    settings: ColdSettings
    endpoint: str  # where the store is, credentials redacted

    def put_segment(
        self, stream: str, segment_name: str, source_path: str, manifest: SegmentManifest
    ) -> PutResult:
        """Create-only upload followed by copy-then-verify.  Never overwrites: when the object
        exists it is verified against ``manifest`` instead (``created`` is False).  Raises
        ObjectConflictError when an existing object differs, VerificationError when the stored
        object does not prove the segment safe (e.g. unlocked and not allowed)."""
        ...

    def stat(self, key: str) -> ObjectStat: ...

    def open(self, key: str) -> ReadStream: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def list_versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """Every version and delete marker, or VersionsUnavailable saying why not."""
        ...

    def set_legal_hold(self, key: str, on: bool) -> None: ...

    def capabilities(self) -> Capabilities: ...

    def verify(
        self,
        key: str,
        manifest: SegmentManifest | None = None,
        deep: bool = False,
        *,
        expected_stored_sha256: str | None = None,
        expected_stored_size: int | None = None,
        min_retain_until: dt.datetime | None = None,
    ) -> VerifyResult:
        """Copy-then-verify.  Normal: one metadata read (size, checksum, metadata, lock).
        Deep: also download, re-hash and (for zstd) decompress and re-check every record.
        Failed checks are reported in the result, not raised; transport failures raise."""
        ...

    def key_for(self, stream: str, segment_name: str) -> str: ...

    def close(self) -> None: ...


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def required_retain_until(settings: ColdSettings, now: dt.datetime | None = None) -> dt.datetime:
    # Whole seconds: services store retain-until with second (S3) or millisecond precision,
    # and a comparison must not fail on a truncated fraction.
    t = (now or utcnow()) + dt.timedelta(days=settings.retention_days)
    return t.replace(microsecond=0)


@dataclass(frozen=True)
class ObjectVersion:
    """One entry of a version listing: an object version or a delete marker.

    ``latest`` is what a plain GET/HEAD of the key sees; on S3 a DELETE without a version
    id adds a delete marker that becomes the latest entry and hides the (still locked)
    object, and a plain PUT over a locked key adds a second version that readers see."""

    key: str
    version_id: str | None
    latest: bool
    delete_marker: bool = False
    size: int = 0
    last_modified: dt.datetime | None = None


class VersionsUnavailable(PipelineError):
    """The store cannot list object versions (backend without versioning, or no permission):
    the message says which, so a report can say what was not checked."""
