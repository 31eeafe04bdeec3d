"""Open a stream's writer with everything the stream directory is set up for.

``HotLog`` itself knows nothing of proofs or forward-secure seals (they are plugged in
through ``tree_store`` and ``seal_extension``); commands and the sidecar open streams
through ``open_hotlog`` so that a stream prepared with ``pipeline fss-setup`` always gets
its forward-secure seals and every stream keeps its Merkle tiles for proofs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.hot.writer import HotLog

if TYPE_CHECKING:
    from pipeline.config import Config


def open_hotlog(hot_dir: str | os.PathLike[str], stream: str, *, proofs: bool = True, **kwargs: Any) -> HotLog:
    from pipeline.fss import STATE_DIR, STATE_FILE, FssSealer
    from pipeline.hot.tree import TreeStore
    from pipeline.record import validate_stream_name

    stream_dir = Path(hot_dir) / validate_stream_name(stream)
    stream_dir.mkdir(parents=True, exist_ok=True)
    if (stream_dir / STATE_DIR / STATE_FILE).exists() and "seal_extension" not in kwargs:
        kwargs["seal_extension"] = FssSealer(stream_dir)
    if proofs and "tree_store" not in kwargs:
        kwargs["tree_store"] = TreeStore(stream_dir)
    return HotLog(hot_dir, stream, **kwargs)


def open_configured_hotlog(cfg: Config, **kwargs: Any) -> HotLog:
    """The configured stream with its ``[hot]`` settings and, as its sanitiser, the
    ``[sanitise]`` rules (with ``ingest.max_event_bytes``): the one sanitiser every path into
    the log applies.  ``kwargs`` override."""
    merged: dict[str, Any] = {**cfg.hot.hotlog_kwargs(), **kwargs}
    merged.setdefault("sanitiser", cfg.sanitise.sanitiser(cfg.ingest.max_event_bytes))
    return open_hotlog(cfg.hot.dir, cfg.hot.stream, **merged)
