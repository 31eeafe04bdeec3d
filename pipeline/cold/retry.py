"""One retry policy for every backend: tenacity, exponential backoff with jitter, bounded
in total time, and only for failures that retrying can fix.

The SDKs' own retry loops are switched off (botocore ``max_attempts=1``, azure-core
``retry_total=0``) so that this is the only policy and its time bound really holds.
Create-only puts make whole-operation retries safe: if a PUT succeeded but its response
was lost, the retry gets 412/409 and the store verifies the existing object instead.

A ``Deadline`` bounds everything further: the shipper runs each upload inside
``bounded_by(deadline)``, and while that deadline is set (the SIGTERM drain sets it to the
end of ``ops.shutdown_grace``) the retry budget, the waits between attempts and every
request's socket read timeout (``request_timeout``, applied by the backends' request hooks)
end with it, so no cold-storage behaviour can hold the process past its grace period.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from pipeline.cold.base import ColdSettings
from pipeline.errors import PipelineError

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


class DeadlineExceeded(PipelineError, TimeoutError):
    """The operation's deadline (e.g. the end of the shutdown grace period) has passed.
    A TimeoutError, so backends report it as the endpoint being unavailable."""


class Deadline:
    """A moment (``time.monotonic()``) after which cold-storage work must stop, or None for
    no deadline.  Mutable and shared: the drain sets it while uploads are in flight, and
    every request those uploads make afterwards sees it."""

    def __init__(self) -> None:
        self._at: float | None = None
        self._lock = threading.Lock()

    def set(self, at: float | None) -> None:
        with self._lock:
            self._at = at

    @property
    def at(self) -> float | None:
        with self._lock:
            return self._at

    def remaining(self) -> float | None:
        at = self.at
        return None if at is None else at - time.monotonic()


_current: ContextVar[Deadline | None] = ContextVar("pipeline_cold_deadline", default=None)
# The shortest socket timeout handed to a request near the deadline: zero would mean
# "no timeout" to some clients.
MIN_REQUEST_TIMEOUT = 0.05


@contextlib.contextmanager
def bounded_by(deadline: Deadline) -> Iterator[None]:
    """Run the enclosed cold-storage calls (on this thread) under ``deadline``."""
    token = _current.set(deadline)
    try:
        yield
    finally:
        _current.reset(token)


def remaining() -> float | None:
    """Seconds left before the current deadline, or None when there is none."""
    d = _current.get()
    return None if d is None else d.remaining()


def request_timeout(configured: float) -> float:
    """A request's socket timeout: the configured one, cut to what is left of the deadline."""
    left = remaining()
    if left is None:
        return configured
    return max(MIN_REQUEST_TIMEOUT, min(configured, left))


class RetryBudget:
    """Total time one command may spend retrying, across all its operations and threads.

    ``settings.retry_max_seconds`` bounds each operation; a CLI command (verify-tier,
    export, ship --once ...) makes many, and an unreachable endpoint would otherwise cost
    the budget once per operation (a bounded but untruthful "up to 60 s" that took 127 s).
    The clock starts at the command's first failed attempt and is never refunded: once it
    has run out, each later operation is tried once and not retried."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._started: float | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._started is None:
                self._started = time.monotonic()

    def left(self) -> float | None:
        """Seconds of retrying left, or None before the first failure."""
        with self._lock:
            started = self._started
        return None if started is None else started + self.seconds - time.monotonic()


_command_budget: RetryBudget | None = None


def use_command_budget(budget: RetryBudget | None) -> None:
    """Install (or remove) the process-wide budget of a CLI command.  The sidecar installs
    none: its operations are retried each within ``retry_max_seconds``, again and again."""
    global _command_budget
    _command_budget = budget


def retry_report(exc: BaseException) -> str:
    """How the retry loop ended for ``exc``, as measured: "gave up after N attempts over
    X s (retry budget Y s)"."""
    attempts = getattr(exc, "retry_attempts", None)
    elapsed = getattr(exc, "retry_elapsed", None)
    budget = getattr(exc, "retry_budget", None)
    if attempts is None or elapsed is None:
        return "failed"
    what = f"gave up after {attempts} attempt{'s' if attempts != 1 else ''} over {elapsed:.1f} s"
    total = getattr(exc, "retry_command_total", None)
    if total is not None and total > elapsed + 0.05:
        what += f", {total:.1f} s of retrying in this command"
    return f"{what} (retry budget {budget:g} s)" if budget is not None else what


class _PastDeadline(stop_base):
    """Stop retrying once the current deadline (if any) is reached."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        left = remaining()
        return left is not None and left <= MIN_REQUEST_TIMEOUT


class _BudgetSpent(stop_base):
    """Stop retrying once the command's budget (if any) is used up; a failure starts its clock."""

    def __init__(self, budget: RetryBudget | None) -> None:
        self.budget = budget

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self.budget is None:
            return False
        self.budget.start()
        spare = self.budget.left()
        return spare is not None and spare <= 0


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

    left = remaining()
    if left is not None and left <= 0:
        raise DeadlineExceeded("the deadline for cold-storage work has passed (shutdown grace period over)")
    # exponential backoff plus up to one initial interval of random jitter, so that
    # many shippers throttled together do not retry in lockstep
    backoff = wait_exponential(multiplier=settings.retry_initial_backoff, max=settings.retry_max_backoff) \
        + wait_random(0, settings.retry_initial_backoff)

    budget = _command_budget

    def wait(state: RetryCallState) -> float:
        left = remaining()
        delay = backoff(state) if left is None else max(0.0, min(backoff(state), left))
        spare = budget.left() if budget is not None else None
        return delay if spare is None else max(0.0, min(delay, spare))

    retrying = Retrying(
        retry=retry_if_exception(is_retryable),
        stop=stop_after_delay(settings.retry_max_seconds) | _PastDeadline() | _BudgetSpent(budget),
        wait=wait,
        reraise=True,
        before_sleep=before_sleep,
    )
    t0 = time.monotonic()
    try:
        return retrying(fn)
    except Exception as exc:
        # measured, so that the error reports what happened, not what was configured
        with contextlib.suppress(AttributeError, TypeError):
            exc.retry_attempts = retrying.statistics.get("attempt_number", 1)  # type: ignore[attr-defined]
            exc.retry_elapsed = time.monotonic() - t0  # type: ignore[attr-defined]
            exc.retry_budget = (min(settings.retry_max_seconds, budget.seconds)  # type: ignore[attr-defined]
                                if budget is not None else settings.retry_max_seconds)
            left = budget.left() if budget is not None else None
            exc.retry_command_total = (budget.seconds - left  # type: ignore[attr-defined]
                                       if budget is not None and left is not None else None)
        raise
