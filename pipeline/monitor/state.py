"""The monitor's durable position: one JSON document per part, in its own state directory.

Each part (a stream's hot trail, the cold watch, the alerts) is saved with an atomic
replace (temporary file, fsync, rename, directory fsync), so after a crash a part is either
the previous or the new version, never a mix; a restart resumes from it instead of
re-verifying the whole log.  The directory is locked (``flock``) for the life of the
process: two monitors on one state would each believe the other's position.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.errors import PipelineError
from pipeline.format.files import atomic_write

SCHEMA = "worm-pipeline/monitor-state/v1"


class StateError(PipelineError):
    """The state directory cannot be used (another monitor holds it, permissions, a corrupt file)."""


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(f"cannot use state directory {self.path}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise StateError(f"state directory {self.path} is in use by another monitor process") from exc
        self._saved: dict[str, bytes] = {}

    def _file(self, part: str) -> Path:
        return self.path / f"{quote(part, safe='')}.json"

    def load(self, part: str) -> dict[str, Any] | None:
        f = self._file(part)
        try:
            raw = f.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {f}: {exc}") from exc
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise StateError(f"{f} is not valid JSON ({exc}): it was not written by the monitor's atomic "
                             "replace; move it away to start this part afresh") from exc
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("data"), dict):
            raise StateError(f"{f} is not a monitor state file of schema {SCHEMA}")
        self._saved[part] = raw
        data: dict[str, Any] = doc["data"]
        return data

    def save(self, part: str, data: dict[str, Any]) -> None:
        """Replace the part atomically; a no-op when nothing changed since the last save."""
        raw = json.dumps({"schema": SCHEMA, "data": data}, sort_keys=True, separators=(",", ":")).encode()
        if self._saved.get(part) == raw:
            return
        try:
            atomic_write(self._file(part), raw, mode=0o600)
        except OSError as exc:
            raise StateError(f"cannot write {self._file(part)}: {exc}") from exc
        self._saved[part] = raw

    def close(self) -> None:
        os.close(self._lock_fd)
