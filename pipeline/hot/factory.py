"""Open a stream's writer with everything the stream directory is set up for.

``HotLog`` knows nothing of proofs (they are plugged in through ``tree_store``); commands,
the sidecar and ``pipeline.open_log`` open streams here so that every stream keeps its
Merkle tiles for proofs.  A stream prepared with ``pipeline fss-setup`` gets its
forward-secure sealer from ``HotLog`` itself, however it is opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.hot.options import DEFAULTS, LogOptions
from pipeline.hot.writer import HotLog

if TYPE_CHECKING:
    from pipeline.config import Config


def open_hotlog(
    hot_dir: str | os.PathLike[str],
    stream: str,
    *,
    options: LogOptions | None = None,
    proofs: bool | None = None,
    **kwargs: Any,
) -> HotLog:
    """``HotLog`` for ``<hot_dir>/<stream>`` with ``options`` (``LogOptions``; defaults when
    None), the tile store unless ``proofs`` is off, and any further ``HotLog`` keyword
    arguments (``sanitiser``, ``clock``, ...) passed through.  Keyword arguments naming an
    option override ``options`` (the older calling convention)."""
    from pipeline.format.record import validate_stream_name
    from pipeline.hot.tree import TreeStore

    opts = options or DEFAULTS
    option_names = set(opts.writer_kwargs()) | {"proofs"}
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in option_names}
    if proofs is not None:
        overrides["proofs"] = proofs
    if overrides:
        opts = opts.replace(**overrides)
    stream_dir = Path(hot_dir) / validate_stream_name(stream)
    stream_dir.mkdir(parents=True, exist_ok=True)
    if opts.proofs and "tree_store" not in kwargs:
        kwargs["tree_store"] = TreeStore(stream_dir)
    return HotLog(hot_dir, stream, **opts.writer_kwargs(), **kwargs)


def open_configured_hotlog(cfg: Config, **kwargs: Any) -> HotLog:
    """The configured stream with its ``[hot]`` settings and, as its sanitiser, the
    ``[sanitise]`` rules (with ``ingest.max_event_bytes``): the one sanitiser every path into
    the log applies.  ``kwargs`` override."""
    merged: dict[str, Any] = {**cfg.hot.hotlog_kwargs(), **kwargs}
    merged.setdefault("sanitiser", cfg.sanitise.sanitiser(cfg.ingest.max_event_bytes))
    if "encryption" not in kwargs:
        merged["encryption"] = cfg.encryption.settings()
    return open_hotlog(cfg.hot.dir, cfg.hot.stream, **merged)
