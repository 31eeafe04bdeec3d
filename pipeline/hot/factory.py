"""Open a stream's writer with everything the stream directory is set up for.

``HotLog`` itself knows nothing of proofs or forward-secure seals (they are plugged in
through ``tree_store`` and ``seal_extension``); commands and the sidecar open streams
through ``open_hotlog`` so that a stream prepared with ``pipeline fss-setup`` always gets
its forward-secure seals and every stream keeps its Merkle tiles for proofs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.hot.writer import HotLog


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
