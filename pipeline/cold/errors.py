"""Typed cold-tier errors.  Every one names the segment, the endpoint and what to do.

Like sigstore-python's errors, each carries a short summary for logs and a longer
``diagnostics()`` text for people.  Endpoints are always shown through
``redact_endpoint`` so that credentials (URL user-info, SAS tokens, connection-string
keys) never reach a log line, an exception message or a metric label.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.cold.base import VerifyResult


# user-info of any URL in a text, plain or percent-encoded (a URL nested in a query
# string, e.g. ``endpoint_url=http%3A%2F%2Fuser%3Apass%40host``)
_USERINFO = re.compile(r"(?i)([a-z][a-z0-9+.\-]*(?::|%3A)(?://|%2F%2F))([^\s/?#@\"']*?)(@|%40)")
# query parameters that carry a secret (Azure SAS `sig`, presigned S3 URLs, tokens, keys)
_SECRET_PARAM = re.compile(
    r"(?i)([?&](?:sig|sas|token|password|passwd|secret|key|access_?key|secret_?key|account_?key|sharedkey|"
    r"x-amz-signature|x-amz-security-token|x-amz-credential|code)=)[^&#\s\"']*")
MASK = "***"


def mask_credentials(text: str) -> str:
    """``text`` with every URL's user-info and every secret-bearing query parameter replaced
    by ``***``; everything else (scheme, host, path, other parameters) is kept so that a
    message still says which endpoint it is about.  Used wherever a configured URL or a
    message that may quote one is printed or logged (issue 18)."""
    if "@" not in text and "%40" not in text.lower() and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{MASK}", text)


def url_has_credentials(url: str) -> bool:
    """True when ``url`` (or a URL nested in its query string) carries user-info or a
    secret-bearing parameter."""
    return mask_credentials(url) != url


def redact_endpoint(url: str | None) -> str:
    """Scheme, host, port and path only: no user-info and no query string (SAS tokens live there)."""
    if not url:
        return "<default endpoint>"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable endpoint>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class ColdError(PipelineError):
    """Base of every cold-tier failure."""

    default_action = "check the cold store configuration and retry; the hot copy is kept until a verified upload"

    def __init__(
        self,
        summary: str,
        *,
        segment: str | None = None,
        endpoint: str | None = None,
        action: str | None = None,
        code: str | None = None,
    ) -> None:
        self.summary = summary
        self.segment = segment
        self.endpoint = redact_endpoint(endpoint) if endpoint is not None else None
        self.action = action or self.default_action
        self.code = code
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.segment:
            where.append(f"segment {self.segment}")
        if self.endpoint:
            where.append(f"endpoint {self.endpoint}")
        loc = f" [{', '.join(where)}]" if where else ""
        code = f" ({self.code})" if self.code else ""
        return f"{self.summary}{code}{loc}: {self.action}"

    def one_line(self) -> str:
        """What failed and what to do, on one line (the CLI's error line).  A missing or
        refused credential gets the credential fix rather than the class's generic action."""
        hint = credential_hint(self)
        if hint is None:
            return str(self)
        code = f" ({self.code})" if self.code else ""
        loc = f" [endpoint {self.endpoint}]" if self.endpoint else ""
        return f"{self.summary}{code}{loc}: {hint}"

    def diagnostics(self) -> str:
        lines = [f"{type(self).__name__}: {self.summary}"]
        if self.code:
            lines.append(f"  error code: {self.code}")
        if self.segment:
            lines.append(f"  segment:    {self.segment}")
        if self.endpoint:
            lines.append(f"  endpoint:   {self.endpoint}")
        lines.append(f"  what to do: {self.action}")
        return "\n".join(lines)


class ColdConfigError(ColdError):
    """The store URL or settings are unusable."""

    default_action = "fix the --cold URL or the cold settings"


class WormNotEnforcedError(ColdError):
    """The endpoint (bucket, container, directory) does not enforce write-once storage."""

    default_action = (
        "use a bucket created with Object Lock enabled (or an Azure container with version-level "
        "immutability); only for development, set allow_unlocked to store without a lock"
    )


class ColdRequestError(ColdError):
    """A request failed for a reason that retrying will not fix (access denied, bad request, bad digest)."""

    default_action = "check credentials, permissions and the request; the hot copy is untouched"


class ColdUnavailableError(ColdError):
    """Retryable failures went on past the retry budget (throttling, 5xx, resets, timeouts)."""

    default_action = (
        "check the endpoint, the network and the service's health; a longer retry budget "
        "(--retry-max-seconds, or cold.retry_max_seconds in the configuration) rides out longer "
        "outages; the hot copy is untouched"
    )


class SourceMismatchError(ColdError):
    """The hot segment file does not match the manifest it is being shipped with."""

    default_action = (
        "the hot copy changed after it was sealed or the manifest is stale: run `pipeline verify` on "
        "the hot tier before shipping; nothing was uploaded"
    )


class ObjectNotFoundError(ColdError):
    default_action = "the segment has not been shipped (or the prefix is wrong): ship it again from the hot tier"


class ObjectArchivedError(ColdError):
    """The object sits in an archive class and must be restored (thawed) before it can be read."""

    default_action = (
        "restore the object first (S3 RestoreObject, or rehydrate the Azure blob to Hot/Cool), "
        "then verify again"
    )


class ObjectConflictError(ColdError):
    """A create-only put found an object of that name whose contents differ from the segment."""

    default_action = (
        "an object with this name already exists and does not match the hot segment: do NOT delete "
        "either copy; investigate (a second writer, a restored hot tier, or tampering) with "
        "`pipeline verify-tier --deep`"
    )

    def __init__(self, summary: str, result: VerifyResult, **kw: str | None) -> None:
        self.result = result
        super().__init__(summary, **kw)

    def diagnostics(self) -> str:
        return super().diagnostics() + "\n" + self.result.describe(indent="  ")


class VerificationError(ColdError):
    """Copy-then-verify failed: the stored object does not prove the segment is safe."""

    default_action = "the segment is NOT confirmed in cold storage; keep the hot copy and investigate"

    def __init__(self, summary: str, result: VerifyResult, **kw: str | None) -> None:
        self.result = result
        kw.setdefault("code", ",".join(result.reasons) or None)
        super().__init__(summary, **kw)

    def diagnostics(self) -> str:
        return super().diagnostics() + "\n" + self.result.describe(indent="  ")


# Exceptions (by class name, anywhere in the cause chain) that mean "no usable credentials",
# and the fix to print instead of the SDK's own multi-line text.
_CREDENTIAL_FIXES = {
    "NoCredentialsError": "no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, or run where an instance/task role is available",
    "PartialCredentialsError": "incomplete AWS credentials: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                               "(or AWS_PROFILE)",
    "InvalidAccessKeyId": "the AWS access key is not known to the endpoint: check AWS_ACCESS_KEY_ID / AWS_PROFILE "
                          "and the endpoint_url",
    "SignatureDoesNotMatch": "the AWS secret key does not match the access key: check AWS_SECRET_ACCESS_KEY",
    "ClientAuthenticationError": "Azure refused or could not obtain credentials: put a SAS token or account key "
                                 "in the az:// URL's query, or set AZURE_CLIENT_ID/AZURE_TENANT_ID/"
                                 "AZURE_CLIENT_SECRET, or sign in with `az login`",
    "CredentialUnavailableError": "no Azure credentials found: set AZURE_CLIENT_ID/AZURE_TENANT_ID/"
                                  "AZURE_CLIENT_SECRET, sign in with `az login`, or put a SAS token in the az:// URL",
}


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out and len(out) < 16:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def credential_hint(exc: BaseException) -> str | None:
    """The credential fix if ``exc`` (or its cause) says credentials are missing or refused."""
    for e in _chain(exc):
        for name in (type(e).__name__, getattr(e, "code", None), _service_code(e)):
            if isinstance(name, str) and name in _CREDENTIAL_FIXES:
                return _CREDENTIAL_FIXES[name]
    return None


def _service_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return getattr(exc, "error_code", None)


def environment_failure(exc: BaseException) -> str | None:
    """One line (problem: fix) for an exception that says the environment is wrong (no
    credentials, a refused permission, a full disk), or None when it is not recognised."""
    import errno

    if isinstance(exc, ColdError):
        return exc.one_line()
    hint = credential_hint(exc)
    if hint is not None:
        return f"{type(exc).__name__}: {hint}"
    for e in _chain(exc):
        if isinstance(e, PermissionError):
            return f"permission denied: {e.filename or e}: run as the user that owns it, or fix its permissions"
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return f"no space left on device{f' ({e.filename})' if e.filename else ''}: free disk space and retry"
    return None
