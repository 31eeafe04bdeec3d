"""Normal (metadata-level) verification shared by every backend.

Copy-then-verify: a segment counts as stored only once a read-back of the object's
attributes proves size, checksum, metadata and lock.  Backends turn their service's
answer into an ``ObjectStat``; the judgement is made here once, the same way for all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.cold.base import ColdSettings, ObjectStat, VerifyResult
from pipeline.cold.errors import ObjectNotFoundError
from pipeline.format.layout import manifest_from_metadata, segment_of_key
from pipeline.format.segment import SegmentManifest

# For a standalone verification the required retain-until is derived from the object's
# upload time; allow a day for clock skew and for services that round retention dates.
STANDALONE_SLACK = dt.timedelta(days=1)
LOCK_MODES_ACCEPTED = {"COMPLIANCE", "LOCKED", "IMMUTABLE"}

_META_FIELDS = ("stream", "segment", "first_seq", "last_seq", "records", "size", "sha256", "merkle_root",
                "first_prev", "last_hash")


def evaluate_stat(
    st: ObjectStat,
    manifest: SegmentManifest | None,
    compression: str,
    settings: ColdSettings,
    result: VerifyResult,
    *,
    expected_stored_sha256: str | None,
    expected_stored_size: int | None,
    expected_composite: str | None = None,
    min_retain_until: dt.datetime | None,
    worm_enforced: bool,
    worm_note: str,
    expect_legal_hold: bool | None = None,
) -> None:
    meta = st.segment_metadata
    # Layer 1: the stored bytes.  What we sent (or, standalone, what the metadata recorded
    # at upload) against what the service says it holds.
    want_sha = expected_stored_sha256 or meta.get("stored_sha256")
    want_size = expected_stored_size
    if want_size is None and meta.get("stored_size", "").isdigit():
        want_size = int(meta["stored_size"])
    result.add("stored size", want_size is not None and st.size == want_size,
               f"{st.size} bytes" + ("" if st.size == want_size else f", expected {want_size}"),
               "stored-size-mismatch")
    if st.sha256 is None:
        result.add("stored sha256", True, "the service reports no SHA-256; deep verification re-hashes")
    else:
        # A multipart S3 object's checksum is SHA-256 over its part digests (composite);
        # it was computed before upload and recorded in the metadata.
        composite = expected_composite or meta.get("stored_sha256_composite")
        accepted = {x for x in (want_sha, composite) if x}
        detail = f"service checksum {st.sha256}" + (f" over {st.checksum_parts} parts" if st.checksum_parts else "")
        ok = st.sha256 in accepted
        result.add("stored sha256", ok, detail + ("" if ok else f", expected one of {sorted(accepted)}"),
                   "stored-sha256-mismatch")
    if expected_stored_sha256 and meta.get("stored_sha256"):
        # Also catches metadata that was written for some other body.
        result.add("metadata stored sha256", meta["stored_sha256"] == expected_stored_sha256,
                   meta["stored_sha256"], "metadata-mismatch")

    # Layer 2: the segment the bytes stand for, as recorded in the metadata.
    if meta.get("compression", compression) != compression:
        result.add("compression", False, f"metadata says {meta.get('compression')}, key says {compression}",
                   "metadata-mismatch")
    if manifest is not None:
        expected = {
            "stream": manifest.stream, "segment": manifest.segment, "first_seq": str(manifest.first_seq),
            "last_seq": str(manifest.last_seq), "records": str(manifest.records), "size": str(manifest.size),
            "sha256": manifest.sha256, "merkle_root": manifest.merkle_root, "first_prev": manifest.first_prev,
            "last_hash": manifest.last_hash,
        }
        diffs = [f"{k}: stored {meta.get(k)!r} != manifest {v!r}" for k, v in expected.items() if meta.get(k) != v]
        result.add("metadata", not diffs, "; ".join(diffs) or "matches the segment manifest", "metadata-mismatch")
    else:
        missing = [k for k in _META_FIELDS if k not in meta]
        result.add("metadata", not missing, f"missing {', '.join(missing)}" if missing else "complete",
                   "metadata-mismatch")

    evaluate_lock(st, settings, result, worm_enforced, worm_note, min_retain_until)
    if expect_legal_hold:
        result.add("legal hold", st.legal_hold is True, f"legal hold is {st.legal_hold}", "legal-hold-missing")


def evaluate_lock(st: ObjectStat, settings: ColdSettings, result: VerifyResult, worm_enforced: bool,
                  worm_note: str, min_retain_until: dt.datetime | None) -> None:
    """The lock judgement of copy-then-verify (segments and index parts alike): COMPLIANCE
    (or an enforced immutability policy) until at least ``min_retain_until`` (standalone:
    upload + retention - 1 day)."""
    mode = (st.lock_mode or "").upper()
    if min_retain_until is None and st.last_modified is not None:
        min_retain_until = st.last_modified + dt.timedelta(days=settings.retention_days) - STANDALONE_SLACK
    locked = worm_enforced and mode in LOCK_MODES_ACCEPTED
    retain_ok = True
    if locked and mode != "IMMUTABLE":
        retain_ok = (st.retain_until is not None and min_retain_until is not None
                     and st.retain_until >= min_retain_until)
    if locked and retain_ok:
        until = st.retain_until.isoformat() if st.retain_until else "the attribute is cleared"
        result.lock_status = f"{mode} until {until}"
        result.add("lock", True, result.lock_status)
    elif locked:
        result.lock_status = f"{mode} until {st.retain_until} (too short)"
        result.add("lock", settings.allow_unlocked,
                   f"retain-until {st.retain_until} is before the required {min_retain_until}",
                   "retention-too-short")
        if settings.allow_unlocked:
            result.lock_status += " (allowed for development)"
    else:
        why = worm_note if not worm_enforced else f"lock mode is {st.lock_mode or 'none'}"
        if settings.allow_unlocked:
            result.lock_status = "UNLOCKED (allowed for development)"
            result.add("lock", True, f"{why}; UNLOCKED (allowed for development)")
        else:
            result.lock_status = "UNLOCKED"
            result.add("lock", False, f"{why}; unlocked storage is refused (fail closed)", "not-locked")


@dataclass
class VerifyStart:
    """What every backend's ``verify`` needs before its own checks: the result being built,
    the object's attributes and the manifest to compare with (from the caller, or rebuilt
    from the object's metadata for an auditor without the hot copy)."""

    result: VerifyResult
    stat: ObjectStat | None
    manifest: SegmentManifest | None
    compression: str
    segment: str

    @property
    def done(self) -> bool:
        """True when the object is missing or its metadata unusable: nothing more to check."""
        return self.stat is None or self.manifest is None


def start_verify(key: str, manifest: SegmentManifest | None, deep: bool, settings: ColdSettings,
                 stat: Callable[[str], ObjectStat], *, missing: str = "no such object") -> VerifyStart:
    result = VerifyResult(key, deep=deep)
    seg = segment_of_key(key)
    compression = seg[2] if seg else settings.compression
    name = seg[1] if seg else key
    try:
        st = stat(key)
    except ObjectNotFoundError:
        result.add("exists", False, missing, "missing")
        return VerifyStart(result, None, manifest, compression, name)
    if manifest is None:
        try:
            manifest = manifest_from_metadata(st.metadata)
        except ValueError as exc:
            result.add("metadata", False, str(exc), "metadata-mismatch")
            return VerifyStart(result, st, None, compression, name)
    return VerifyStart(result, st, manifest, compression, name)
