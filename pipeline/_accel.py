"""Access to the optional C accelerator, ``pipeline._native``.

``native`` is the module, or None when it is not built (no compiler or OpenSSL headers at
install time) or when ``PIPELINE_NO_NATIVE=1`` is set, which forces the pure-Python paths
(the test suite runs the equivalence tests both ways).  Both paths write the same bytes and
reach the same verdicts; only speed differs.  ``pipeline status`` and the benchmarks say
which one is in use.
"""

from __future__ import annotations

import os
from types import ModuleType

native: ModuleType | None
if os.environ.get("PIPELINE_NO_NATIVE") == "1":
    native = None
else:
    try:
        from pipeline import _native as native
    except ImportError:  # not built: the pure-Python paths are used
        native = None


def describe() -> str:
    """One line for status output and benchmarks."""
    if native is not None:
        return "native (C accelerator, OpenSSL SHA-256)"
    if os.environ.get("PIPELINE_NO_NATIVE") == "1":
        return "pure Python (PIPELINE_NO_NATIVE=1)"
    return "pure Python (C accelerator not built)"


def fsync(fd: int, data_only: bool = False) -> None:
    """``os.fsync`` (``os.fdatasync`` with ``data_only``).  With the accelerator, the C one,
    which hands the GIL back from appending threads at once (see _native.c, gil_waiters):
    the writer's background flush must not wait a switch interval after every sync."""
    if native is not None:
        native.fsync(fd, data_only)
    elif data_only:
        os.fdatasync(fd)
    else:
        os.fsync(fd)
