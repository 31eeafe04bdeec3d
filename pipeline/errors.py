"""The error base of the public API: every error ``pipeline``'s library calls raise on
purpose derives from ``PipelineError`` (programming errors such as a bad argument type stay
``TypeError``/``ValueError``)."""

from __future__ import annotations


class PipelineError(Exception):
    """Something the pipeline could not do.  ``str(err)`` says what; ``diagnostics()`` adds
    where and what to do about it when the error knows (``action``)."""

    action: str | None = None

    def diagnostics(self) -> str:
        return str(self) if not self.action else f"{self}\n  action: {self.action}"
