"""S3 backend: PutObject into an Object Lock bucket, COMPLIANCE mode, create-only.

Requests per segment in the normal case: 1 PutObject + 1 HeadObject (ChecksumMode
ENABLED returns size, SHA-256, lock mode, retain-until, legal hold, metadata and storage
class in one answer).  The bucket's Object Lock configuration is cached per store: a
refusal for ``lock_recheck_seconds``, an enforced lock for ``lock_cache_seconds``.
Large bodies go multipart, read part by part from disk, with the lock headers on
CreateMultipartUpload and an abort on any failure.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.cold.base import (
    Capabilities,
    ColdSettings,
    ObjectInfo,
    ObjectStat,
    ObjectVersion,
    ReadStream,
    VersionsUnavailable,
)
from pipeline.cold.codec import PreparedBody
from pipeline.cold.errors import (
    ColdError,
    ColdRequestError,
    ColdUnavailableError,
    ObjectArchivedError,
    ObjectNotFoundError,
    redact_endpoint,
)
from pipeline.cold.retry import (
    error_code_and_status,
    is_retryable,
    remaining,
    request_timeout,
    retry_report,
)
from pipeline.cold.tier import ColdTier, NewObject, segment_for_key

log = logging.getLogger("pipeline.cold.s3")
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _checksum_to_hex(value: str | None) -> tuple[str | None, int]:
    """S3's base64 checksum (``b64`` or composite ``b64-N``) as hex plus the part count."""
    if not value:
        return None, 0
    b64, _, parts = value.partition("-")
    try:
        return base64.b64decode(b64).hex(), int(parts) if parts else 0
    except ValueError:
        return None, 0


def make_client(
    settings: ColdSettings,
    endpoint_url: str | None = None,
    region: str | None = None,
    profile: str | None = None,
) -> Any:
    """A boto3 S3 client from the default credential chain (or a named profile).

    botocore's own retries are off: ``pipeline.cold.retry`` is the single, time-bounded
    policy.  Path-style addressing when an endpoint is given (emulators, most S3-compatible
    services); virtual-hosted style on AWS.
    """
    session = boto3.session.Session(profile_name=profile, region_name=region)
    config = Config(
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        # Checksums are computed by us (SHA-256, before the request) and validated by us.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


class S3Store(ColdTier):
    """The S3 primitives; the policy (fail closed, create-only, copy-then-verify) is ColdTier's."""

    backend = "s3"
    log: ClassVar[logging.Logger] = log
    transport_errors = (ClientError, BotoCoreError, OSError)

    def __init__(self, bucket: str, prefix: str, settings: ColdSettings, *, client: Any) -> None:
        super().__init__(prefix, settings)
        self.bucket = bucket
        self._client = client
        self.endpoint = redact_endpoint(getattr(client.meta, "endpoint_url", None))
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # HTTP requests sent, by operation (incl. retries)
        client.meta.events.register("before-send.s3", self._count_request)
        client.meta.events.register("before-send.s3", self._bound_read_timeout)

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={self.endpoint!r})"

    def _count_request(self, **kwargs: Any) -> None:
        name = str(kwargs.get("event_name", "")).rsplit(".", 1)[-1]
        with self._lock:
            self.requests[name] += 1

    def _bound_read_timeout(self, request: Any = None, **kwargs: Any) -> None:
        # botocore honours a per-request ``read_timeout`` in the request context: under a
        # deadline (the drain's grace period) no socket read may outlast it.
        if request is not None and remaining() is not None and getattr(request, "context", None) is not None:
            request.context["read_timeout"] = request_timeout(self.settings.read_timeout)

    def close(self) -> None:
        self._client.meta.events.unregister("before-send.s3", self._count_request)
        self._client.meta.events.unregister("before-send.s3", self._bound_read_timeout)
        self._client.close()

    def where(self) -> str:
        # path-style form, whatever addressing the client uses: it names endpoint and bucket
        return f"{self.endpoint.rstrip('/')}/{self.bucket}"

    # ---- error translation -----------------------------------------------------------------

    def translate(self, what: str, exc: BaseException, segment: str | None) -> ColdError:
        code, status = error_code_and_status(exc)
        kw: dict[str, Any] = {"segment": segment, "endpoint": self.where(), "code": code or type(exc).__name__}
        if code in NOT_FOUND_CODES or (status == 404 and code not in ("NoSuchBucket", "NoSuchUpload")):
            return ObjectNotFoundError(f"{what}: object not found", **kw)
        if code == "InvalidObjectState":
            return ObjectArchivedError(f"{what}: object is in an archive storage class", **kw)
        if code == "AccessDenied":
            return ColdRequestError(
                f"{what}: access denied", action="grant s3:PutObject, s3:PutObjectRetention, "
                "s3:PutObjectLegalHold, s3:GetObject, s3:GetObjectRetention, s3:GetObjectLegalHold, "
                "s3:GetBucketObjectLockConfiguration and s3:ListBucket on the bucket; the hot copy is untouched",
                **kw)
        if code == "BadDigest" or code == "InvalidDigest" or code == "XAmzContentSHA256Mismatch":
            return ColdRequestError(
                f"{what}: the service received bytes whose checksum differs from the one sent",
                action="the body changed in transit or on disk during upload; run `pipeline verify` on the hot "
                "segment, then ship again (nothing was stored)", **kw)
        if is_retryable(exc):
            return ColdUnavailableError(
                f"{what}: {retry_report(exc)}", **kw)
        return ColdRequestError(f"{what}: {type(exc).__name__} {status or ''}".rstrip(), **kw)

    # ---- capabilities ------------------------------------------------------------------------

    def read_capabilities(self) -> Capabilities:
        def get() -> dict[str, Any] | None:
            try:
                resp: dict[str, Any] = self._client.get_object_lock_configuration(Bucket=self.bucket)
                return resp
            except ClientError as exc:
                code, _ = error_code_and_status(exc)
                if code == "ObjectLockConfigurationNotFoundError":
                    return None
                raise

        conf = self._call("read the bucket's Object Lock configuration", get)
        enabled = conf is not None and \
            conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        notes: list[str] = []
        if enabled:
            rule = (conf or {}).get("ObjectLockConfiguration", {}).get("Rule", {}).get("DefaultRetention")
            notes.append(f"Object Lock enabled on bucket {self.bucket}"
                         + (f" (default retention {rule})" if rule else ""))
        else:
            notes.append(f"bucket {self.bucket} has no Object Lock configuration: WORM not enforced, "
                         "objects can be overwritten or deleted")
        return Capabilities("s3", self.endpoint, enabled, enabled, True, tuple(notes))

    # ---- put ---------------------------------------------------------------------------------

    def refusal(self, caps: Capabilities) -> tuple[str, str | None]:
        return (f"refusing to upload into bucket {self.bucket}: it has no Object Lock (fail closed)", (
            f"enable Object Lock on the bucket (aws s3api put-bucket-versioning --bucket {self.bucket} "
            "--versioning-configuration Status=Enabled, then aws s3api put-object-lock-configuration "
            f"--bucket {self.bucket} --object-lock-configuration ObjectLockEnabled=Enabled) or point "
            "cold.url at a bucket created with Object Lock; the lock state is read again every "
            f"{self.settings.lock_recheck_seconds:g} s and shipping resumes by itself "
            "(allow_unlocked is for development only)"))

    def create_object(self, obj: NewObject) -> bool:
        extra = self._common_args(obj.metadata, obj.locked, obj.retain_until)
        if obj.multipart:
            return self._put_multipart(obj.key, obj.body, extra, obj.segment)
        return self._put_single(obj.key, obj.body, extra, obj.segment)

    def uses_multipart(self, body: PreparedBody) -> bool:
        return body.size >= self.settings.multipart_threshold and bool(body.part_digests)

    def composite_checksum(self, body: PreparedBody) -> str | None:
        return body.composite_sha256

    def _common_args(self, meta: dict[str, str], locked: bool, retain_until: dt.datetime) -> dict[str, Any]:
        s = self.settings
        args: dict[str, Any] = {"Metadata": meta, "ContentType": "application/octet-stream"}
        if locked:
            # AWS refuses lock headers on a bucket without Object Lock (400 InvalidRequest),
            # so they are only sent where the bucket can enforce them.
            args["ObjectLockMode"] = "COMPLIANCE"
            args["ObjectLockRetainUntilDate"] = retain_until
            if s.legal_hold:
                args["ObjectLockLegalHoldStatus"] = "ON"
        if s.sse:
            args["ServerSideEncryption"] = s.sse
            if s.kms_key_id:
                args["SSEKMSKeyId"] = s.kms_key_id
        if s.storage_class:
            args["StorageClass"] = s.storage_class
        return args

    def _put_single(self, key: str, body: PreparedBody, extra: dict[str, Any], segment: str) -> bool:
        checksum = _b64(bytes.fromhex(body.sha256))

        def attempt() -> bool:
            # Reopened on every attempt: a retry must send the body from its first byte.
            with body.open() as f:
                try:
                    self._client.put_object(
                        Bucket=self.bucket, Key=key, Body=f, ContentLength=body.size,
                        ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum, IfNoneMatch="*", **extra)
                    return True
                except ClientError as exc:
                    code, status = error_code_and_status(exc)
                    if status == 412 or code == "PreconditionFailed":
                        return False  # exists: verify it instead of overwriting
                    raise

        return self._call("upload", attempt, segment)

    def _put_multipart(self, key: str, body: PreparedBody, extra: dict[str, Any], segment: str) -> bool:
        # A HEAD first: do not send hundreds of MiB only to learn the object exists.
        try:
            self.stat(key)
            return False
        except ObjectNotFoundError:
            pass
        digests = body.part_digests or []
        upload_id: str = self._call("start multipart upload", lambda: self._client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256", **extra)["UploadId"], segment)
        completed = False
        try:
            parts: list[dict[str, Any]] = []
            with body.open() as f:
                for number, digest in enumerate(digests, start=1):
                    f.seek((number - 1) * body.part_size)
                    data = f.read(body.part_size)  # one part in memory at a time
                    checksum = _b64(digest)

                    def upload_part(data: bytes = data, number: int = number, checksum: str = checksum) -> str:
                        resp = self._client.upload_part(
                            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data,
                            ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum)
                        return str(resp["ETag"])

                    etag = self._call(f"upload part {number}/{len(digests)}", upload_part, segment)
                    parts.append({"PartNumber": number, "ETag": etag, "ChecksumSHA256": checksum})
                    del data

            def complete() -> bool:
                try:
                    self._client.complete_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts},
                        IfNoneMatch="*")
                    return True
                except ClientError as exc:
                    code, status = error_code_and_status(exc)
                    if status == 412 or code == "PreconditionFailed":
                        return False
                    if code == "NoSuchUpload":
                        # A retried Complete whose first attempt succeeded but lost its
                        # response: the upload is gone because it completed.  Verification
                        # below decides whether the object is ours.
                        return True
                    raise

            created = self._call("complete multipart upload", complete, segment)
            completed = True
            return created
        finally:
            if not completed:
                try:
                    self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                except (ClientError, BotoCoreError, OSError) as exc:
                    log.warning("cold s3: could not abort multipart upload of %s (%s); a bucket lifecycle "
                                "rule AbortIncompleteMultipartUpload cleans it up", segment,
                                type(exc).__name__)

    # ---- read side ---------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectStat:
        segment = segment_for_key(key)
        resp: dict[str, Any] = self._call(
            "read object attributes",
            lambda: self._client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED"), segment)
        sha, parts = _checksum_to_hex(resp.get("ChecksumSHA256"))
        hold = resp.get("ObjectLockLegalHoldStatus")
        storage_class = resp.get("StorageClass") or "STANDARD"
        restore = resp.get("Restore") or ""
        archived = storage_class in ARCHIVE_CLASSES and 'ongoing-request="false"' not in restore
        caps = self._caps
        return ObjectStat(
            key=key,
            size=int(resp.get("ContentLength", 0)),
            sha256=sha,
            lock_mode=resp.get("ObjectLockMode"),
            retain_until=resp.get("ObjectLockRetainUntilDate"),
            # Absent header on a lock-enabled bucket means "no hold"; elsewhere it is unknown.
            legal_hold=(hold == "ON") if hold else (False if caps and caps.worm_enforced else None),
            metadata=dict(resp.get("Metadata") or {}),
            storage_class=storage_class,
            last_modified=resp.get("LastModified"),
            version_id=resp.get("VersionId"),
            checksum_parts=parts,
            archived=archived,
            restore=restore or None,
            sse=resp.get("ServerSideEncryption"),
            sse_kms_key_id=resp.get("SSEKMSKeyId"),
        )

    def expected_encryption(self) -> tuple[str, str | None] | None:
        """The encryption every shipped object should carry: the configured ``sse`` /
        ``kms_key_id`` when set, else the bucket's default encryption rule.  None when it
        cannot be known (no default rule, or a role not allowed GetEncryptionConfiguration)."""
        if self.settings.sse:
            return self.settings.sse, self.settings.kms_key_id
        try:
            conf = self._client.get_bucket_encryption(Bucket=self.bucket)
        except (ClientError, BotoCoreError):  # AccessDenied, no configuration: unknown, not a finding
            return None
        for rule in conf.get("ServerSideEncryptionConfiguration", {}).get("Rules", []):
            default = rule.get("ApplyServerSideEncryptionByDefault") or {}
            if default.get("SSEAlgorithm"):
                return default["SSEAlgorithm"], default.get("KMSMasterKeyID")
        return None

    def open(self, key: str) -> ReadStream:
        segment = segment_for_key(key)
        try:
            resp = self._call("download", lambda: self._client.get_object(Bucket=self.bucket, Key=key), segment)
        except ObjectArchivedError as exc:
            # GetObject only says InvalidObjectState; one HEAD (on this failure path only)
            # names the class and whether a restore is already running, so the message can
            # say exactly what to do.
            try:
                st = self.stat(key)
            except ColdError:
                raise exc from None
            raise self.archived_error("download", st, segment) from exc
        body: ReadStream = resp["Body"]
        return body

    def archived_error(self, what: str, st: ObjectStat, segment: str | None) -> ObjectArchivedError:
        """The error for reading an object in GLACIER / DEEP_ARCHIVE, with the restore command."""
        running = 'ongoing-request="true"' in (st.restore or "")
        hours = "within 12 hours (Standard tier; Bulk up to 48)" if st.storage_class == "DEEP_ARCHIVE" else \
            "3-5 hours (Standard tier; Expedited 1-5 minutes, Bulk 5-12 hours)"
        state = "a restore is already in progress" if running else "no restore has been requested"
        action = (
            ("wait for the running restore to finish" if running else
             f"restore it first: aws s3api restore-object --bucket {self.bucket} --key {st.key} "
             "--restore-request '{\"Days\":7,\"GlacierJobParameters\":{\"Tier\":\"Standard\"}}'")
            + f"; a restore takes {hours}; `aws s3api head-object --bucket {self.bucket} --key {st.key}` shows "
            "Restore: ongoing-request=\"false\" when the copy is readable, then run the command again. "
            "The restore makes a temporary readable copy; the locked object keeps its class and retention")
        return ObjectArchivedError(f"{what}: object is in the {st.storage_class} archive class and cannot be read "
                                   f"until restored ({state})", segment=segment, endpoint=self.where(),
                                   code="InvalidObjectState", action=action)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = self.full_prefix(prefix)
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full}
            if token:
                args["ContinuationToken"] = token
            page: dict[str, Any] = self._call("list", self._lister(args))
            for obj in page.get("Contents", []):
                yield ObjectInfo(obj["Key"], int(obj["Size"]), obj.get("LastModified"))
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    def _lister(self, args: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        def page() -> dict[str, Any]:
            resp: dict[str, Any] = self._client.list_objects_v2(**args)
            return resp

        return page

    def list_versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """ListObjectVersions, 1,000 keys per request: every version and delete marker under
        ``prefix``.  Needs s3:ListBucketVersions; AccessDenied raises VersionsUnavailable."""
        full = self.full_prefix(prefix)
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full, "MaxKeys": 1000}
        while True:
            try:
                resp: dict[str, Any] = self._call("list versions", self._version_lister(dict(args)))
            except ColdRequestError as exc:
                raise VersionsUnavailable(f"cannot list object versions ({exc.code}): grant "
                                          "s3:ListBucketVersions to check for delete markers and overwritten "
                                          "versions") from exc
            for v in resp.get("Versions", []):
                yield ObjectVersion(v["Key"], v.get("VersionId"), bool(v.get("IsLatest")), False,
                                    int(v.get("Size", 0)), v.get("LastModified"))
            for d in resp.get("DeleteMarkers", []):
                yield ObjectVersion(d["Key"], d.get("VersionId"), bool(d.get("IsLatest")), True, 0,
                                    d.get("LastModified"))
            if not resp.get("IsTruncated"):
                return
            args["KeyMarker"] = resp.get("NextKeyMarker")
            args["VersionIdMarker"] = resp.get("NextVersionIdMarker") or ""

    def _version_lister(self, args: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        def page() -> dict[str, Any]:
            resp: dict[str, Any] = self._client.list_object_versions(**args)
            return resp

        return page

    def set_legal_hold(self, key: str, on: bool) -> None:
        self._call(
            f"turn legal hold {'on' if on else 'off'}",
            lambda: self._client.put_object_legal_hold(
                Bucket=self.bucket, Key=key, LegalHold={"Status": "ON" if on else "OFF"}),
            segment_for_key(key))
