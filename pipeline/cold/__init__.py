"""Cold tier: write-once object storage for sealed segments, with copy-then-verify.

``open_store(url, settings)`` picks the backend from the URL:

- ``s3://bucket/prefix?endpoint_url=http://host:port&region=us-east-1&profile=name``
- ``az://account/container/prefix`` (``?endpoint_url=`` for emulators or sovereign clouds;
  ``AZURE_STORAGE_CONNECTION_STRING`` from the environment wins when set)
- ``file:///absolute/path/prefix``

Credentials never appear in URLs accepted here: they come from boto3's default chain and
azure-identity (or the connection string in the environment).  See docs/COLD.md.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.cold.base import Capabilities, ColdSettings, ColdStore, ObjectInfo, ObjectStat, PutResult, VerifyResult
from pipeline.cold.errors import (
    ColdConfigError,
    ColdError,
    ColdRequestError,
    ColdUnavailableError,
    ObjectArchivedError,
    ObjectConflictError,
    ObjectNotFoundError,
    SourceMismatchError,
    VerificationError,
    WormNotEnforcedError,
    url_has_credentials,
)
from pipeline.cold.tier import ColdTier, NewObject
from pipeline.format.layout import manifest_from_metadata, object_key, segment_of_key, stream_prefix

__all__ = [
    "Capabilities", "ColdConfigError", "ColdError", "ColdRequestError", "ColdSettings", "ColdStore", "ColdTier",
    "ColdUnavailableError", "NewObject", "ObjectArchivedError", "ObjectConflictError", "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStat", "PutResult", "SourceMismatchError", "VerificationError", "VerifyResult",
    "WormNotEnforcedError", "manifest_from_metadata", "object_key", "open_store", "segment_of_key",
    "stream_prefix",
]

_ALLOWED_QUERY = {"s3": {"endpoint_url", "region", "profile"}, "az": {"endpoint_url"}, "file": set()}


def open_store(url: str, settings: ColdSettings | None = None, *, transport: Any = None) -> ColdTier:
    """Open a cold store: the backend for the URL's scheme under the one cold policy
    (``ColdTier``: fail closed, create-only, copy-then-verify).  ``transport`` is injected by
    tests and tools: for ``s3://`` a ready boto3 S3 client, for ``az://`` an azure-core
    ``HttpTransport``."""
    settings = settings or ColdSettings()
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ColdConfigError(f"cannot parse cold store URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in _ALLOWED_QUERY:
        raise ColdConfigError(f"unsupported cold store scheme {scheme!r}",
                              action="use s3://bucket/prefix, az://account/container/prefix or file:///path")
    if parts.username or parts.password or url_has_credentials(url):
        # Refuse rather than use: credentials in a URL end up in shell history and logs
        # (also those in a nested endpoint_url, or a SAS signature).
        raise ColdConfigError("credentials in the cold store URL are not accepted",
                              action="use the standard credential chains (AWS profile/environment/IAM role, "
                              "azure-identity) instead")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=False).items()}
    unknown = set(query) - _ALLOWED_QUERY[scheme]
    if unknown:
        raise ColdConfigError(f"unknown cold store URL parameter(s): {', '.join(sorted(unknown))}",
                              action=f"allowed: {', '.join(sorted(_ALLOWED_QUERY[scheme])) or 'none'}")
    path = unquote(parts.path)

    if scheme == "file":
        from pipeline.cold.filesystem import FileStore

        if parts.netloc not in ("", "localhost"):
            raise ColdConfigError("file:// URLs must be local (file:///absolute/path)")
        if not path.startswith("/"):
            raise ColdConfigError("file:// URLs need an absolute path")
        return FileStore(path, "", settings)

    if scheme == "s3":
        from pipeline.cold.s3 import S3Store, make_client

        bucket = parts.hostname or ""
        if not bucket:
            raise ColdConfigError("s3:// URL has no bucket", action="use s3://bucket/prefix")
        client = transport or make_client(settings, query.get("endpoint_url"), query.get("region"),
                                          query.get("profile"))
        return S3Store(bucket, path.strip("/"), settings, client=client)

    from pipeline.cold.azure import AzureStore, make_container_client

    account = parts.hostname or ""
    segs = path.strip("/").split("/", 1)
    container = segs[0]
    if not container:
        raise ColdConfigError("az:// URL has no container", action="use az://account/container/prefix")
    prefix = segs[1] if len(segs) > 1 else ""
    holder: list[AzureStore] = []

    def hook(request: Any) -> None:
        if holder:
            holder[0].count_request(request)

    cc = make_container_client(account, container, settings, endpoint_url=query.get("endpoint_url"),
                               transport=transport, raw_request_hook=hook)
    store = AzureStore(cc, prefix, settings)
    holder.append(store)
    return store
