"""Access to the optional C accelerator, ``pipeline._native``.

``native`` is the module, or None when it is not built (no compiler or OpenSSL headers at
install time) or when ``PIPELINE_NO_NATIVE=1`` is set, which forces the pure-Python paths
(the test suite runs the equivalence tests both ways).  Both paths write the same bytes and
reach the same verdicts; only speed differs.  ``pipeline status`` and the benchmarks say
which one is in use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
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
        return "native (C accelerator, OpenSSL SHA-256 and ChaCha20-Poly1305)"
    if os.environ.get("PIPELINE_NO_NATIVE") == "1":
        return "pure Python (PIPELINE_NO_NATIVE=1)"
    return "pure Python (C accelerator not built)"


def _py_fsync(fd: int, data_only: bool, /) -> None:
    if data_only:
        os.fdatasync(fd)
    else:
        os.fsync(fd)


# bound once: with the accelerator the C one, a single call without the GIL
_fsync: Callable[[int, bool], None] = native.fsync if native is not None else _py_fsync


def fsync(fd: int, data_only: bool = False) -> None:
    """``os.fsync`` (``os.fdatasync`` with ``data_only``).  Callers look it up here at call
    time (tests replace it to simulate a failing disk)."""
    _fsync(fd, data_only)
