"""The error base of the public API: every error ``pipeline``'s library calls raise on
purpose derives from ``PipelineError`` (programming errors such as a bad argument type stay
``TypeError``/``ValueError``).

An error means the pipeline could not do something (the CLI's exit code 2); a finding about
the data is a ``pipeline.findings.Finding`` in a report (exit code 1).  The two errors that
stop a verified read-back at a finding (``ExportFailed``, ``RestoreFailed``) carry that
finding.  Subclasses keep their older bases as well (``ValueError``, ``RuntimeError``,
``OSError``, ...), so ``except`` clauses written against those still catch them.
tests/verify/test_errors.py checks that every exception class under ``pipeline`` derives
from ``PipelineError``.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Something the pipeline could not do.  ``str(err)`` says what; ``action`` what the user
    should do about it, when the error knows; ``diagnostics()`` everything a person needs
    (the CLI prints it with ``--debug``); ``one_line()`` the CLI's error line."""

    action: str | None = None

    def diagnostics(self) -> str:
        return str(self) if not self.action else f"{self}\n  action: {self.action}"

    def one_line(self) -> str:
        """What failed and what to do, on one line."""
        text = str(self).strip()
        first = text.splitlines()[0] if text else type(self).__name__
        if self.action and self.action not in text:
            return f"{first}; {self.action}"
        return first
