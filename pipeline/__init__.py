"""worm-pipeline: tamper-evident audit logs.

This module is the public API; everything else under ``pipeline.`` is internal and may
change between releases.  The common tasks::

    import pipeline

    with pipeline.open_log("/var/lib/worm-pipeline/hot", "payments") as log:
        receipt = log.append({"actor": "alice", "action": "refund"})   # a pipeline.Receipt

    reports = pipeline.verify_log("/var/lib/worm-pipeline/hot")        # chain, FSS, witnesses
    store = pipeline.open_cold_store("s3://bucket/prefix")
    report = pipeline.verify_tier(store, pipeline.TierOptions(hot=Path("/var/lib/worm-pipeline/hot")))
    pipeline.export_events(store, sys.stdout.buffer, stream="payments", since=time.time() - 86400)
    pipeline.restore_log(store, "/var/lib/worm-pipeline/restored")

What verification finds about the data is a ``pipeline.Finding`` in a report (its ``code``
is one of the registry's, documented in docs/FORMAT.md §8.1, docs/PROOFS.md §6 and
docs/VERIFY-TIER.md); what stops a call from running is a ``pipeline.PipelineError``:
every error these calls raise on purpose derives from it.
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
    from collections.abc import Callable, Sequence
    from typing import IO

    from pipeline.cold.base import ColdSettings, ColdStore
    from pipeline.cold.errors import ColdError
    from pipeline.findings import Finding
    from pipeline.hot.writer import HotLog, HotLogError, Receipt
    from pipeline.sanitise import InvalidEvent, Sanitiser
    from pipeline.verify.chain import StreamReport
    from pipeline.verify.export import ExportFailed, ExportResult
    from pipeline.verify.hot import VerifyError
    from pipeline.verify.readback import ReadbackError
    from pipeline.verify.restore import RestoredStream, RestoreFailed
    from pipeline.verify.tier import TierError, TierOptions, TierReport

__all__ = [
    "ColdError", "ColdSettings", "ColdStore", "ExportFailed", "ExportResult", "Finding", "HotLog", "HotLogError",
    "InvalidEvent", "LogOptions", "PipelineError", "ReadbackError", "Receipt", "RestoreFailed", "RestoredStream",
    "StreamReport", "TierError", "TierOptions", "TierReport", "VerifyError", "__version__", "export_events",
    "open_cold_store", "open_log", "restore_log", "verify_log", "verify_tier",
]

# name -> module it lives in; imported on first access (module __getattr__, PEP 562)
_LAZY = {
    "ColdError": "pipeline.cold.errors",
    "ColdSettings": "pipeline.cold.base",
    "ColdStore": "pipeline.cold.base",
    "ExportFailed": "pipeline.verify.export",
    "ExportResult": "pipeline.verify.export",
    "Finding": "pipeline.findings",
    "HotLog": "pipeline.hot.writer",
    "HotLogError": "pipeline.hot.writer",
    "InvalidEvent": "pipeline.sanitise",
    "ReadbackError": "pipeline.verify.readback",
    "Receipt": "pipeline.hot.writer",
    "RestoreFailed": "pipeline.verify.restore",
    "RestoredStream": "pipeline.verify.restore",
    "StreamReport": "pipeline.verify.chain",
    "TierError": "pipeline.verify.tier",
    "TierOptions": "pipeline.verify.tier",
    "TierReport": "pipeline.verify.tier",
    "VerifyError": "pipeline.verify.hot",
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



def export_events(
    source: str | os.PathLike[str] | ColdStore,
    out: IO[bytes],
    *,
    stream: str | None = None,
    since: float | None = None,
    until: float | None = None,
    match: Sequence[str] = (),
    ledger: str | os.PathLike[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> ExportResult:
    """Write the verified events of a hot tier (``source``: its directory) or a cold store
    (``source``: an open store) to ``out`` as NDJSON, each line the original record line, as
    ``pipeline export`` does (docs/VERIFY-TIER.md, "pipeline export").  A segment's events
    are written only once the whole segment verified; ``ExportFailed`` (its ``finding``
    names the segment, seq and code) stops the export at the first one that does not.
    ``since``/``until``: epoch seconds; ``match``: ``FIELD=VALUE`` as ``--match``;
    ``ledger``: with a cold store, a host's hot directory whose shipper ledger must have
    shipped every object.  Raises ``PipelineError`` when it cannot run."""
    from pipeline.verify.export import export_events as run

    return run(source, out, stream=stream, since=since, until=until, match=match, ledger=ledger,
               progress=progress, on_note=on_note)


def restore_log(
    store: ColdStore,
    to: str | os.PathLike[str],
    *,
    stream: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[RestoredStream]:
    """Rebuild the hot tier ``to`` from ``store`` (every stream, or ``stream``), as
    ``pipeline restore`` does: each stream is downloaded, checked and verified completely
    before anything of it is written; a new log then continues its chain.  Raises
    ``RestoreFailed`` (with the ``finding``) when a stream does not verify, and
    ``PipelineError`` when it cannot run."""
    from pipeline.verify.restore import restore_log as run

    return run(store, to, stream=stream, progress=progress)
