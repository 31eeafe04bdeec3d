"""The cold policy, written once: every backend is a thin client of storage primitives.

``ColdTier`` owns what makes a cold copy trustworthy, the same way for every store:

- **fail closed**: nothing is uploaded while the store does not enforce WORM (unless
  ``allow_unlocked``), and the store's lock state is cached only for a bounded time;
- compression and the object metadata (``prepare_body``, ``encode_metadata``);
- **create-only** upload: an existing object is never replaced, it is verified instead;
- **copy-then-verify**: an upload counts only once a read-back proves size, checksum,
  metadata and lock (``verify``), and ``verify(deep=True)`` re-reads and re-checks the bytes;
- retries with one time budget, and one error vocabulary (``pipeline.cold.errors``).

A backend subclasses ``ColdTier`` and implements only the primitives below (the backend
contract, docs/COLD.md): it cannot override the policy methods -- ``__init_subclass__``
refuses a class that tries -- so a new backend cannot forget the fail-closed rule.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

from pipeline.cold.base import (
    Capabilities,
    ColdSettings,
    ObjectInfo,
    ObjectStat,
    ObjectVersion,
    PutResult,
    ReadStream,
    VerifyResult,
    lock_state_expired,
    required_retain_until,
)
from pipeline.cold.checks import evaluate_lock, evaluate_stat, start_verify
from pipeline.cold.codec import PreparedBody, deep_check, hash_stream, prepare_body
from pipeline.cold.errors import (
    ColdError,
    ColdRequestError,
    ObjectArchivedError,
    ObjectConflictError,
    VerificationError,
    WormNotEnforcedError,
)
from pipeline.cold.retry import call_with_retry, error_code_and_status
from pipeline.format.layout import encode_metadata, object_key, segment_of_key
from pipeline.format.segment import SegmentManifest

T = TypeVar("T")

# The policy: a backend that defines one of these is refused at class creation.
POLICY_METHODS = frozenset({"put_segment", "verify", "capabilities", "key_for", "_call", "put_index_part"})


@dataclasses.dataclass(frozen=True)
class NewObject:
    """One create-only write, as the tier hands it to a backend's ``create_object``."""

    key: str
    segment: str  # the segment file name, for error messages
    body: PreparedBody
    metadata: dict[str, str]
    retain_until: dt.datetime
    # Whether the store enforces WORM: a backend sends its lock headers only then when the
    # service refuses them on unlocked storage (S3's 400 InvalidRequest).
    locked: bool
    legal_hold: bool
    multipart: bool


class ColdTier(abc.ABC):
    """A cold store: the policy here, the primitives in the backend subclass."""

    backend: ClassVar[str]
    noun: ClassVar[str] = "object"  # what the service calls a stored object ("blob" on Azure)
    log: ClassVar[logging.Logger] = logging.getLogger("pipeline.cold")
    # Exceptions of the backend's client library that ``translate`` maps to ColdError.
    transport_errors: ClassVar[tuple[type[BaseException], ...]] = (OSError,)

    settings: ColdSettings
    prefix: str
    endpoint: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overridden = sorted(POLICY_METHODS & set(vars(cls)))
        if overridden:
            raise TypeError(f"{cls.__name__} overrides the cold policy ({', '.join(overridden)}): a backend "
                            "implements only the primitives (docs/COLD.md, the backend contract)")

    def __init__(self, prefix: str, settings: ColdSettings) -> None:
        self.prefix = prefix.strip("/")
        self.settings = settings
        self._caps: Capabilities | None = None
        self._caps_read_at = 0.0

    # ---- primitives every backend implements ---------------------------------------------

    @abc.abstractmethod
    def read_capabilities(self) -> Capabilities:
        """Ask the service whether it enforces WORM here (one request; the tier caches it)."""

    @abc.abstractmethod
    def refusal(self, caps: Capabilities) -> tuple[str, str | None]:
        """(summary, action) of the fail-closed refusal: what is wrong with this store, and
        the operator's command to fix it."""

    @abc.abstractmethod
    def create_object(self, obj: NewObject) -> bool:
        """Store ``obj`` only if its key does not exist (never replace), under the lock when
        ``obj.locked``.  True: created; False: the key already existed (the tier verifies it)."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectStat:
        """One metadata read (HEAD): size, service checksum, lock, legal hold, metadata.
        ObjectNotFoundError when absent."""

    @abc.abstractmethod
    def open(self, key: str) -> ReadStream:
        """A stream of the stored bytes.  ObjectNotFoundError / ObjectArchivedError."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``<store prefix>/<prefix>``, in key order."""

    @abc.abstractmethod
    def list_versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """Every version and delete marker, or VersionsUnavailable saying why not."""

    @abc.abstractmethod
    def set_legal_hold(self, key: str, on: bool) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    # ---- primitives with a default -----------------------------------------------------------

    def translate(self, what: str, exc: BaseException, segment: str | None) -> ColdError:
        """Map a client-library exception to the cold error vocabulary."""
        return ColdRequestError(f"{what}: {exc}", segment=segment, endpoint=self.where())

    def archived_error(self, what: str, st: ObjectStat, segment: str | None) -> ObjectArchivedError:
        """The error for reading an archived object, with the command that makes it readable."""
        return ObjectArchivedError(f"{what}: {self.noun} is archived and cannot be read", segment=segment,
                                   endpoint=self.where())

    def where(self) -> str:
        """Where objects go, as error messages name it (endpoint, plus bucket on S3)."""
        return self.endpoint

    def uses_multipart(self, body: PreparedBody) -> bool:
        return False

    def composite_checksum(self, body: PreparedBody) -> str | None:
        """A checksum the service will report instead of the whole-body SHA-256 (S3's
        multipart composite), to be recorded in the metadata."""
        return None

    def requests_sent(self) -> int:
        """Requests (or store operations) sent so far: ``PutResult`` / ``VerifyResult`` report
        the difference."""
        counter = getattr(self, "requests", None)
        return sum(counter.values()) if counter is not None else 0

    # ---- the policy --------------------------------------------------------------------------

    def key_for(self, stream: str, segment_name: str) -> str:
        return object_key(self.prefix, stream, segment_name, self.settings.compression)

    def full_prefix(self, prefix: str) -> str:
        """A listing prefix under the store's own prefix."""
        return f"{self.prefix}/{prefix.lstrip('/')}" if self.prefix else prefix.lstrip("/")

    def capabilities(self) -> Capabilities:
        """The store's lock state, read again once it is older than ``lock_recheck_seconds``
        (a refusal: shipping resumes by itself once the operator fixes the store) or
        ``lock_cache_seconds`` (an enforced lock)."""
        if self._caps is not None and not lock_state_expired(self._caps, self._caps_read_at, self.settings):
            return self._caps
        self._caps = self.read_capabilities()
        self._caps_read_at = time.monotonic()
        return self._caps

    def _call(self, what: str, fn: Callable[[], T], segment: str | None = None) -> T:
        """Run one request under the single retry policy; failures leave as ColdError."""
        def on_retry(exc: BaseException, attempt: int) -> None:
            code, status = error_code_and_status(exc)
            # INFO: retrying is routine; an operation that still fails is reported once
            # by its caller (the shipper's conditions), not once per attempt
            self.log.info("cold %s %s of %s: attempt %d failed (%s), retrying", self.backend, what,
                          segment or "-", attempt, code or status or type(exc).__name__)

        try:
            return call_with_retry(fn, self.settings, on_retry)
        except self.transport_errors as exc:
            raise self.translate(what, exc, segment) from exc

    def put_segment(
        self, stream: str, segment_name: str, source_path: str, manifest: SegmentManifest
    ) -> PutResult:
        """Create-only upload followed by copy-then-verify (see ``ColdStore.put_segment``)."""
        key = self.key_for(stream, segment_name)
        caps = self.capabilities()
        if not caps.worm_enforced and not self.settings.allow_unlocked:
            summary, action = self.refusal(caps)
            raise WormNotEnforcedError(summary, segment=segment_name, endpoint=self.where(), action=action)
        before = self.requests_sent()
        body = prepare_body(source_path, manifest, self.settings)
        try:
            retain_until = required_retain_until(self.settings)
            multipart = self.uses_multipart(body)
            meta = encode_metadata(manifest, body.compression, body.size, body.sha256,
                                   self.composite_checksum(body) if multipart else None)
            created = self.create_object(NewObject(key, segment_name, body, meta, retain_until, caps.worm_enforced,
                                                   self.settings.legal_hold, multipart))
            result = self.verify(
                key, manifest, expected_stored_sha256=body.sha256 if created else None,
                expected_stored_size=body.size if created else None,
                min_retain_until=retain_until - dt.timedelta(seconds=1) if created else None,
            )
            if not created and not result.ok:
                raise ObjectConflictError(f"create-only upload found an existing {self.noun} that does not match",
                                          result, segment=segment_name, endpoint=self.where())
            if not result.ok:
                raise VerificationError(f"uploaded {self.noun} failed copy-then-verify", result,
                                        segment=segment_name, endpoint=self.where())
            return PutResult(key, created, body.size, body.sha256, body.compression, result, multipart=multipart,
                             requests=self.requests_sent() - before)
        finally:
            body.cleanup()

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
        """Copy-then-verify (see ``ColdStore.verify``).  A store that keeps no SHA-256 of its
        objects (Azure) is read back and re-hashed even by a normal verification."""
        caps = self.capabilities()
        before = self.requests_sent()
        start = start_verify(key, manifest, deep, self.settings, self.stat, missing=f"no such {self.noun}")
        result = start.result
        if start.done:
            return result
        st, manifest, compression = start.stat, start.manifest, start.compression
        assert st is not None and manifest is not None
        readable = True
        if st.sha256 is None and st.archived:
            # No service checksum, and the bytes cannot be read to compute one.
            err = self.archived_error("verification", st, start.segment)
            result.add("readable", False, f"{err.summary}: {err.action}", "archived")
            readable = False
        elif st.sha256 is None and not deep:
            sha, _ = hash_stream(lambda: self.open(key))
            st = dataclasses.replace(st, sha256=sha)
        evaluate_stat(
            st, manifest, compression, self.settings, result,
            expected_stored_sha256=expected_stored_sha256, expected_stored_size=expected_stored_size,
            min_retain_until=min_retain_until, worm_enforced=caps.worm_enforced, worm_note=caps.reason,
            expect_legal_hold=self.settings.legal_hold if expected_stored_sha256 else None,
        )
        if deep and readable:
            if st.archived:
                err = self.archived_error("deep verification", st, start.segment)
                result.add("deep", False, f"{err.summary}: {err.action}", "archived")
            else:
                full_sha = expected_stored_sha256 or st.segment_metadata.get("stored_sha256")
                deep_check(lambda: self.open(key), manifest, compression, full_sha, st.size, result)
        result.requests = self.requests_sent() - before
        return result


    def put_index_part(self, key: str, data: bytes, metadata: dict[str, str]) -> IndexPutResult:
        """A manifest index part (docs/INDEX.md) under the same rules as a segment: fail
        closed on unlocked storage, create-only, then copy-then-verify (size, SHA-256 and the
        lock, read back).  When the key already exists (a retry after a crash) nothing is
        written and the existing object is read back whole, so the caller can judge it;
        ``created`` is False then.  Raises VerificationError when the stored object does not
        prove the part safe."""
        caps = self.capabilities()
        if not caps.worm_enforced and not self.settings.allow_unlocked:
            summary, action = self.refusal(caps)
            raise WormNotEnforcedError(summary, segment=key, endpoint=self.where(), action=action)
        sha = hashlib.sha256(data).hexdigest()
        body = PreparedBody(None, len(data), sha, "none", data=data)
        retain_until = required_retain_until(self.settings)
        created = self.create_object(NewObject(key, key.rsplit("/", 1)[-1], body, metadata, retain_until,
                                               caps.worm_enforced, self.settings.legal_hold, False))
        existing: bytes | None = None
        if not created:
            stream = self.open(key)
            try:
                existing = stream.read()
            finally:
                stream.close()
        want = existing if existing is not None else data
        want_sha = sha if existing is None else hashlib.sha256(existing).hexdigest()
        st = self.stat(key)
        result = VerifyResult(key)
        result.add("stored size", st.size == len(want), f"{st.size} bytes, expected {len(want)}",
                   "stored-size-mismatch")
        got_sha = st.sha256 if st.sha256 is not None else hash_stream(lambda: self.open(key))[0]
        result.add("stored sha256", got_sha == want_sha, f"{got_sha}, expected {want_sha}", "stored-sha256-mismatch")
        evaluate_lock(st, self.settings, result, caps.worm_enforced, caps.reason,
                      retain_until - dt.timedelta(seconds=1) if created else None)
        if not result.ok:
            raise VerificationError(f"index part {key} failed copy-then-verify", result, segment=key,
                                    endpoint=self.where())
        return IndexPutResult(key, created, len(want), want_sha, existing, result.lock_status)


@dataclasses.dataclass(frozen=True)
class IndexPutResult:
    key: str
    created: bool  # False: the key existed; ``existing`` holds its bytes (verified and locked)
    size: int
    sha256: str  # of the stored bytes
    existing: bytes | None
    lock_status: str


def segment_for_key(key: str) -> str:
    """The segment file name a key stands for (or the key itself), for error messages."""
    seg = segment_of_key(key)
    return seg[1] if seg else key
