"""The writer's errors (re-exported by ``pipeline.hot.writer``, their documented home)."""

from __future__ import annotations

from pipeline.errors import PipelineError

__all__ = ["HotLogError", "WriterLockedError"]


class HotLogError(PipelineError, RuntimeError):
    """An append could not be made durable, or the log is closed.  Nothing is half-written:
    the chain stays verifiable and later appends continue it."""

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause

    def diagnostics(self) -> str:
        return str(self)


class WriterLockedError(HotLogError):
    """Another writer holds the stream directory."""
