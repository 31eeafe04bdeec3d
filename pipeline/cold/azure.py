"""Azure Blob backend: create-only upload with a Locked immutability policy.

``upload_blob(overwrite=False)`` (the SDK sends ``If-None-Match: *``) with
``ImmutabilityPolicy(expiry_time, policy_mode=Locked)`` and an optional legal hold, so the
REST request carries ``x-ms-immutability-policy-until-date``,
``x-ms-immutability-policy-mode: Locked`` and ``x-ms-legal-hold``.  Every request body is
MD5-validated in transit (``validate_content=True``); Azure keeps no SHA-256, so
copy-then-verify reads the blob back and re-hashes it: 1 upload + 2 reads per segment
(properties, then the streaming download).

Endpoints that accept the immutability headers without enforcing them (Azurite) are
recognised from what they report -- the container's version-level immutability flag and
the blob's policy expiry come back empty -- never from an upload failing.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import (
    BlobImmutabilityPolicyMode,
    BlobServiceClient,
    ContainerClient,
    ImmutabilityPolicy,
    StandardBlobTier,
)

from pipeline.cold.base import (
    Capabilities,
    ColdSettings,
    ObjectInfo,
    ObjectStat,
    ObjectVersion,
    ReadStream,
    VersionsUnavailable,
)
from pipeline.cold.codec import CHUNK, PreparedBody
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

log = logging.getLogger("pipeline.cold.azure")
CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"


def make_container_client(
    account: str,
    container: str,
    settings: ColdSettings,
    *,
    endpoint_url: str | None = None,
    transport: Any = None,
    raw_request_hook: Callable[[Any], None] | None = None,
) -> ContainerClient:
    """A container client from ``AZURE_STORAGE_CONNECTION_STRING`` if set, otherwise
    DefaultAzureCredential (environment, workload identity, managed identity, CLI...).

    azure-core's retries are set to ``settings.azure_retry_total`` (0 by default) so the
    tenacity policy in ``pipeline.cold.retry`` is the only one; crc64 is never requested
    (Azurite cannot do it) -- integrity comes from MD5 in transit and SHA-256 on read-back.
    """
    kwargs: dict[str, Any] = {
        "retry_total": settings.azure_retry_total,
        "max_single_put_size": settings.multipart_threshold,
        "max_block_size": settings.part_size,
        "max_chunk_get_size": settings.part_size,
        "connection_timeout": settings.connect_timeout,
        "read_timeout": settings.read_timeout,
    }
    if transport is not None:
        kwargs["transport"] = transport

    def hook(request: Any) -> None:
        bound_request_timeouts(request, settings)
        if raw_request_hook is not None:
            raw_request_hook(request)

    kwargs["raw_request_hook"] = hook
    conn = os.environ.get(CONNECTION_STRING_ENV)
    if conn:
        service = BlobServiceClient.from_connection_string(conn, **kwargs)
    else:
        from azure.identity import DefaultAzureCredential

        url = endpoint_url or f"https://{account}.blob.core.windows.net"
        service = BlobServiceClient(url, credential=DefaultAzureCredential(), **kwargs)
    return service.get_container_client(container)


def bound_request_timeouts(request: Any, settings: ColdSettings) -> None:
    """Under a deadline (the drain's grace period), cut this request's connect and read
    timeouts to what is left of it: azure-core passes ``request.context.options`` on to the
    transport for this one request."""
    if remaining() is None:
        return
    options = request.context.options
    options["connection_timeout"] = request_timeout(settings.connect_timeout)
    options["read_timeout"] = request_timeout(settings.read_timeout)


class _DownloadStream:
    """A StorageStreamDownloader as a plain ``read``/``close`` stream."""

    def __init__(self, downloader: Any) -> None:
        self._dl = downloader

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = self._dl.read(size if size and size > 0 else CHUNK)
        return data

    def close(self) -> None:
        self._dl = None


class AzureStore(ColdTier):
    """The Azure Blob primitives; the policy (fail closed, create-only, copy-then-verify) is
    ColdTier's.  Azure keeps no SHA-256, so the tier's verification reads blobs back."""

    backend = "az"
    noun = "blob"
    log: ClassVar[logging.Logger] = log
    transport_errors = (AzureError, OSError)

    def __init__(self, container_client: ContainerClient, prefix: str, settings: ColdSettings) -> None:
        super().__init__(prefix, settings)
        self._cc = container_client
        self.container = container_client.container_name
        self.endpoint = redact_endpoint(container_client.url)
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"AzureStore(container={self.container!r}, prefix={self.prefix!r}, endpoint={self.endpoint!r})"

    def count_request(self, request: Any) -> None:
        """``raw_request_hook`` for request accounting (bench, tests, verify-tier's report).
        Counted by HTTP method, except that a listing (a GET with ``comp=list``) counts as
        ``ListBlobs`` and a container query (``restype=container``) as ``GetContainer``:
        reports count lists and blob GETs separately."""
        http = request.http_request
        query = urllib.parse.urlsplit(http.url).query
        params = urllib.parse.parse_qs(query)
        if params.get("comp") == ["list"]:
            kind = "ListBlobs"
        elif params.get("restype") == ["container"]:
            kind = "GetContainer"
        else:
            kind = http.method
        with self._lock:
            self.requests[kind] += 1

    def close(self) -> None:
        self._cc.close()

    def translate(self, what: str, exc: BaseException, segment: str | None) -> ColdError:
        code, status = error_code_and_status(exc)
        kw: dict[str, Any] = {"segment": segment, "endpoint": self.where(), "code": code or type(exc).__name__}
        if isinstance(exc, ResourceNotFoundError):
            return ObjectNotFoundError(f"{what}: not found", **kw)
        if code == "BlobArchived":
            return ObjectArchivedError(f"{what}: blob is in the Archive tier", **kw)
        if status in (401, 403):
            return ColdRequestError(f"{what}: not authorised", action="give the identity the Storage Blob Data "
                                    "Contributor role (and Storage Blob Data Owner for legal holds) on the "
                                    "container; the hot copy is untouched", **kw)
        if status == 501 or code == "APINotImplemented":
            return ColdRequestError(f"{what}: the endpoint does not implement this operation",
                                    action="this endpoint is an emulator (Azurite answers 501 for immutability "
                                    "and legal-hold calls); use real Azure Blob Storage", **kw)
        if code == "Md5Mismatch":
            return ColdRequestError(f"{what}: the service received bytes whose MD5 differs from the one sent",
                                    action="run `pipeline verify` on the hot segment, then ship again", **kw)
        if is_retryable(exc):
            return ColdUnavailableError(
                f"{what}: {retry_report(exc)}", **kw)
        return ColdRequestError(f"{what}: {type(exc).__name__} {status or ''}".rstrip(), **kw)

    # ---- capabilities ------------------------------------------------------------------------

    def read_capabilities(self) -> Capabilities:
        props = self._call("read container properties", self._cc.get_container_properties)
        flag = getattr(props, "immutable_storage_with_versioning_enabled", None)
        if flag is True:
            notes = (f"container {self.container} has version-level immutability: Locked policies are enforced",)
        elif flag is None:
            notes = (f"WORM not enforced: container {self.container} does not report version-level "
                     "immutability (Azurite accepts immutability headers but does not enforce them)",)
        else:
            notes = (f"WORM not enforced: container {self.container} has no version-level immutability",)
        return Capabilities("az", self.endpoint, flag is True, flag is True, False, notes)

    # ---- put ---------------------------------------------------------------------------------

    def refusal(self, caps: Capabilities) -> tuple[str, str | None]:
        return ("refusing to upload to a container that does not enforce immutability (fail closed)",
                caps.reason + "; enable version-level immutability on the container (the state is read again "
                f"every {self.settings.lock_recheck_seconds:g} s and shipping resumes by itself), or set "
                "allow_unlocked for development only")

    def uses_multipart(self, body: PreparedBody) -> bool:
        return body.size > self.settings.multipart_threshold

    def create_object(self, obj: NewObject) -> bool:
        blob = self._cc.get_blob_client(obj.key)
        kwargs: dict[str, Any] = {
            "overwrite": False, "metadata": obj.metadata, "validate_content": True, "max_concurrency": 1,
            "length": obj.body.size,
            # Sent even where the container cannot enforce them (allowed only with
            # allow_unlocked): on an enforcing endpoint they are what makes the blob WORM.
            "immutability_policy": ImmutabilityPolicy(expiry_time=obj.retain_until,
                                                      policy_mode=BlobImmutabilityPolicyMode.LOCKED),
        }
        if obj.legal_hold:
            kwargs["legal_hold"] = True
        if self.settings.storage_class:
            kwargs["standard_blob_tier"] = StandardBlobTier(self.settings.storage_class)

        def attempt() -> bool:
            with obj.body.open() as f:
                try:
                    blob.upload_blob(f, **kwargs)
                    return True
                except ResourceExistsError:
                    return False

        return self._call("upload", attempt, obj.segment)

    # ---- read side ---------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectStat:
        props = self._call("read blob properties", self._cc.get_blob_client(key).get_blob_properties,
                           segment_for_key(key))
        policy = getattr(props, "immutability_policy", None)
        expiry = getattr(policy, "expiry_time", None)
        mode = getattr(policy, "policy_mode", None)
        tier = getattr(props, "blob_tier", None)
        status = getattr(props, "archive_status", None)
        # Still unreadable while a rehydration is pending (archive_status
        # "rehydrate-pending-to-…"): the tier changes only when it completes.
        archived = str(tier) == "Archive"
        return ObjectStat(
            key=key,
            size=int(props.size),
            sha256=None,  # Azure stores no SHA-256; verify re-hashes on read-back
            lock_mode=str(mode) if expiry is not None and mode else None,
            retain_until=expiry,
            legal_hold=getattr(props, "has_legal_hold", None),
            metadata=dict(props.metadata or {}),
            storage_class=str(tier) if tier else None,
            last_modified=props.last_modified,
            version_id=getattr(props, "version_id", None),
            archived=archived,
            restore=str(status) if status else None,
        )

    def open(self, key: str) -> ReadStream:
        segment = segment_for_key(key)
        try:
            dl = self._call("download", lambda: self._cc.get_blob_client(key).download_blob(max_concurrency=1),
                            segment)
        except ObjectArchivedError as exc:
            # The 409 only says BlobArchived; the properties say whether a rehydration runs.
            try:
                st = self.stat(key)
            except ColdError:
                raise exc from None
            raise self.archived_error("download", st, segment) from exc
        return _DownloadStream(dl)

    def archived_error(self, what: str, st: ObjectStat, segment: str | None) -> ObjectArchivedError:
        """The error for reading a blob in the Archive tier, with the rehydrate command."""
        pending = bool(st.restore and st.restore.startswith("rehydrate-pending"))
        account = self._cc.account_name or "<account>"
        action = (
            (f"wait for the running rehydration ({st.restore}) to finish" if pending else
             f"rehydrate it first: az storage blob set-tier --account-name {account} --container-name "
             f"{self.container} --name {st.key} --tier Cool --rehydrate-priority Standard")
            + "; rehydration takes up to 15 hours (Standard) or under 1 hour for blobs under 10 GB (High); "
            "the blob is readable once its tier is no longer Archive, then run the command again")
        state = "rehydration pending" if pending else "no rehydration requested"
        return ObjectArchivedError(f"{what}: blob is in the Archive tier and cannot be read until rehydrated "
                                   f"({state})", segment=segment, endpoint=self.where(), code="BlobArchived",
                                   action=action)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = self.full_prefix(prefix)
        for page in self._cc.list_blobs(name_starts_with=full, results_per_page=1000).by_page():
            for b in page:
                yield ObjectInfo(b.name, int(b.size), b.last_modified)

    def list_versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """Blob versions (``include=versions``, 1,000 per page).  Azure has no delete markers:
        a blob deleted under versioning keeps its versions with none current, reported here as
        a latest delete marker.  A container without blob versioning (Azurite: not
        implemented) reports no version ids: VersionsUnavailable says so."""
        full = self.full_prefix(prefix)
        try:
            blobs: list[Any] = self._call("list versions", lambda: list(self._cc.list_blobs(
                name_starts_with=full, include=["versions"], results_per_page=1000)))
        except ColdError as exc:
            raise VersionsUnavailable(f"cannot list blob versions ({exc.code}): {exc}") from exc
        if any(getattr(b, "version_id", None) is None for b in blobs):
            raise VersionsUnavailable("the container reports no blob versions (blob versioning is off, or the "
                                      "endpoint does not implement it, as Azurite does not): deleted or "
                                      "overwritten blobs cannot be listed here")
        current: set[str] = set()
        for b in blobs:
            latest = bool(getattr(b, "is_current_version", False))
            if latest:
                current.add(b.name)
            yield ObjectVersion(b.name, b.version_id, latest, False, int(b.size), b.last_modified)
        for name in sorted({b.name for b in blobs} - current):
            yield ObjectVersion(name, None, True, True)

    def set_legal_hold(self, key: str, on: bool) -> None:
        self._call(f"turn legal hold {'on' if on else 'off'}",
                   lambda: self._cc.get_blob_client(key).set_legal_hold(on), segment_for_key(key))
