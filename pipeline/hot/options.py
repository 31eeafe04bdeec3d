"""How a log is written: the one definition of the writer's options and their defaults.

``HotLog``, ``open_log`` (pipeline/__init__.py) and the sidecar's ``[hot]`` configuration
all take their defaults from ``LogOptions``; the configuration file's documented defaults
are checked against it by tests/test_public_api.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.crypt.writer import EncryptionSettings

DURABILITY_MODES = ("fsync", "group", "os")


@dataclass(frozen=True)
class LogOptions:
    """Options of one stream's writer.  Frozen: build a variant with ``replace(...)``."""

    # "group": an append waits until a shared fsync covers it (default); "fsync": one
    # fsync per append; "os": written to the OS, fsynced every ``os_sync_interval``.
    durability: str = "group"
    segment_window: float = 300.0  # seconds a segment stays open before it is sealed; 0 = size only
    segment_max_bytes: int = 64 << 20  # a segment is sealed when it reaches this size
    heartbeat_interval: float = 60.0  # seconds between heartbeat records while idle; 0 = none
    group_interval: float = 0.010  # seconds a group commit waits to gather appends
    os_sync_interval: float = 1.0  # "os" durability: seconds between background fsyncs
    max_pending_bytes: int = 8 << 20  # bytes queued before an append waits for the flusher
    # The append-only attribute on segment files: "auto" (set it where possible),
    # "require" (refuse to write without it), "off"; None: $PIPELINE_HOT_IMMUTABLE or "auto".
    immutable: str | None = None
    proofs: bool = True  # keep the Merkle tiles that inclusion and consistency proofs need
    # encrypt every event to these age recipients (pipeline.crypt; docs/ENCRYPTION.md); None: clear
    encryption: EncryptionSettings | None = None

    def __post_init__(self) -> None:
        if self.durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY_MODES)}, not {self.durability!r}")
        if self.segment_max_bytes < 4096:
            raise ValueError("segment_max_bytes must be at least 4096")
        if self.segment_window < 0 or self.heartbeat_interval < 0 or self.group_interval < 0:
            raise ValueError("intervals must not be negative")

    def replace(self, **changes: Any) -> LogOptions:
        return dataclasses.replace(self, **changes)

    def writer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``HotLog`` (everything but ``proofs``, which picks the tile store)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del out["proofs"]
        return out


DEFAULTS = LogOptions()
