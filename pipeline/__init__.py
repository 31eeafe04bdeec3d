"""worm-pipeline: tamper-evident audit logs.

This module is the public API; everything else under ``pipeline.`` is internal and may
change between releases.  The common tasks::

    import pipeline

    with pipeline.open_log("/var/lib/worm-pipeline/hot", "payments") as log:
        receipt = log.append({"actor": "alice", "action": "refund"})   # a pipeline.Receipt

    reports = pipeline.verify_log("/var/lib/worm-pipeline/hot")        # chain, FSS, witnesses
    store = pipeline.open_cold_store("s3://bucket/prefix")
    report = pipeline.verify_tier(store, pipeline.TierOptions(hot=Path("/var/lib/worm-pipeline/hot")))

Every error these calls raise on purpose derives from ``pipeline.PipelineError``.
Names are loaded on first use, so ``import pipeline`` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pipeline.errors import PipelineError
from pipeline.hot.options import LogOptions

if TYPE_CHECKING:
    from pipeline.cold.base import ColdSettings, ColdStore
    from pipeline.cold.errors import ColdError
    from pipeline.hot.writer import HotLog, HotLogError, Receipt
    from pipeline.sanitise import InvalidEvent, Sanitiser
    from pipeline.verify.chain import StreamReport
    from pipeline.verify.tier import TierOptions, TierReport

__all__ = [
    "ColdError", "ColdSettings", "ColdStore", "HotLog", "HotLogError", "InvalidEvent", "LogOptions",
    "PipelineError", "Receipt", "StreamReport", "TierOptions", "TierReport", "__version__", "open_cold_store",
    "open_log", "verify_log", "verify_tier",
]

# name -> module it lives in; imported on first access (module __getattr__, PEP 562)
_LAZY = {
    "ColdError": "pipeline.cold.errors",
    "ColdSettings": "pipeline.cold.base",
    "ColdStore": "pipeline.cold.base",
    "HotLog": "pipeline.hot.writer",
    "HotLogError": "pipeline.hot.writer",
    "InvalidEvent": "pipeline.sanitise",
    "Receipt": "pipeline.hot.writer",
    "StreamReport": "pipeline.verify.chain",
    "TierOptions": "pipeline.verify.tier",
    "TierReport": "pipeline.verify.tier",
}


# The one place the version is written: pyproject.toml reads it ([tool.setuptools.dynamic]),
# `pipeline --version` prints it, CHANGELOG.md names it.
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def open_log(
    hot_dir: str | os.PathLike[str],
    stream: str = "app",
    options: LogOptions | None = None,
    *,
    sanitiser: Sanitiser | None = None,
) -> HotLog:
    """Open (create or continue) the hash-chained log of ``stream`` under ``hot_dir``.

    The writer takes the directory's lock, recovers from a crash, keeps the Merkle tiles
    proofs need and, on a stream prepared with ``pipeline fss-setup``, seals with its
    forward-secure key.  ``options``: ``LogOptions`` (durability, segment window and size,
    ...); the defaults when None.  Use it as a context manager, or ``close()`` it."""
    from pipeline.hot.factory import open_hotlog

    extra: dict[str, Any] = {} if sanitiser is None else {"sanitiser": sanitiser}
    return open_hotlog(hot_dir, stream, options=options or LogOptions(), **extra)


def verify_log(
    hot_dir: str | os.PathLike[str],
    stream: str | None = None,
    *,
    fss_key: str | None = None,
    witness_dirs: Iterable[str | os.PathLike[str]] = (),
    vkey: str | os.PathLike[str] | None = None,
    origin: str | None = None,
    workers: int | None = None,
) -> list[StreamReport]:
    """Verify the hot tier as ``pipeline verify`` does: every record, link, seq, seal and
    Merkle root of ``stream`` (all streams when None), then the forward-secure MAC of every
    seal (``fss_key``: ``fss-v1:...`` or a file) and the checkpoints held by directory
    witnesses (``witness_dirs``, with the log's verifier key file ``vkey``).

    One ``StreamReport`` per stream; ``report.ok`` is False when anything was found.
    Raises ``PipelineError`` when verification could not run (a missing directory or
    stream, an unreadable file, an unusable key)."""
    from pipeline.verify.hot import verify_hot

    return verify_hot(hot_dir, stream, fss_key=fss_key, witness_dirs=witness_dirs, vkey=vkey, origin=origin,
                      workers=workers)


def open_cold_store(url: str, settings: ColdSettings | None = None) -> ColdStore:
    """The cold store at ``url`` (``s3://bucket/prefix``, ``az://account/container/prefix``
    or ``file:///path``), with credentials from the standard chains (docs/COLD.md)."""
    from pipeline.cold import open_store

    return open_store(url, settings)


def verify_tier(store: ColdStore, options: TierOptions) -> TierReport:
    """Reconcile hot tier, shipper ledger and cold store (docs/VERIFY-TIER.md), as
    ``pipeline verify-tier`` does.  Raises ``PipelineError`` when it cannot run."""
    from pipeline.verify.tier import verify_tier as run

    return run(store, options)

