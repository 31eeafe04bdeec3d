"""One retry policy for every backend: tenacity, exponential backoff with jitter, bounded
in total time, and only for failures that retrying can fix.

The SDKs' own retry loops are switched off (botocore ``max_attempts=1``, azure-core
``retry_total=0``) so that this is the only policy and its time bound really holds.
Create-only puts make whole-operation retries safe: if a PUT succeeded but its response
was lost, the retry gets 412/409 and the store verifies the existing object instead.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from pipeline.cold.base import ColdSettings

T = TypeVar("T")

RETRYABLE_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests",
    "ServerBusy", "OperationTimedOut", "InternalServerError", "IncompleteBody",
})
# Never retried whatever the status says: retrying cannot make them succeed, and
# retrying BadDigest could hide a corrupted body.
PERMANENT_CODES = frozenset({
    "AccessDenied", "InvalidRequest", "BadDigest", "InvalidDigest", "PreconditionFailed",
    "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthorizationFailure",
    "AuthenticationFailed", "BlobAlreadyExists", "InvalidArgument", "XAmzContentSHA256Mismatch",
    "ObjectLockConfigurationNotFoundError", "InvalidObjectState", "MalformedXML",
})
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


def error_code_and_status(exc: BaseException) -> tuple[str | None, int | None]:
    """The service error code and HTTP status of a botocore or azure-core error."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        code = response.get("Error", {}).get("Code")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return (str(code) if code is not None else None, int(status) if status is not None else None)
    if response is not None:  # azure-core HttpResponseError
        status = getattr(response, "status_code", None)
        headers = getattr(response, "headers", None) or {}
        code = getattr(exc, "error_code", None) or headers.get("x-ms-error-code")
        return (str(code) if code else None, int(status) if status is not None else None)
    return None, None


def is_retryable(exc: BaseException) -> bool:
    code, status = error_code_and_status(exc)
    if code in PERMANENT_CODES:
        return False
    if code in RETRYABLE_CODES or (status is not None and status in RETRYABLE_STATUS):
        return True
    if status is not None:
        return False  # any other answered HTTP error (4xx) is the request's fault
    name = type(exc).__name__
    # botocore: EndpointConnectionError, ConnectionClosedError, ReadTimeoutError,
    # ConnectTimeoutError, ResponseStreamingError, IncompleteReadError;
    # azure-core: ServiceRequestError, ServiceResponseError (connection and read failures).
    transient_names = {
        "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
        "ResponseStreamingError", "IncompleteReadError", "ProtocolError", "ServiceRequestError",
        "ServiceResponseError", "IncompleteRead", "ChunkedEncodingError", "ConnectionError",
        "ServiceRequestTimeoutError", "ServiceResponseTimeoutError",
    }
    if name in transient_names:
        return True
    if isinstance(exc, ConnectionError | TimeoutError | socket.timeout):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNREFUSED,
                                                      errno.ETIMEDOUT, errno.ECONNABORTED)


def call_with_retry(
    fn: Callable[[], T],
    settings: ColdSettings,
    on_retry: Callable[[BaseException, int], None] | None = None,
) -> T:
    """Run ``fn`` until it succeeds, a non-retryable error occurs, or the time budget ends.
    The last exception is re-raised as is; callers translate it into a ColdError."""

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if exc is not None:
                on_retry(exc, state.attempt_number)

    retrying = Retrying(
        retry=retry_if_exception(is_retryable),
        stop=stop_after_delay(settings.retry_max_seconds),
        # exponential backoff plus up to one initial interval of random jitter, so that
        # many shippers throttled together do not retry in lockstep
        wait=wait_exponential(multiplier=settings.retry_initial_backoff, max=settings.retry_max_backoff)
        + wait_random(0, settings.retry_initial_backoff),
        reraise=True,
        before_sleep=before_sleep,
    )
    return retrying(fn)
