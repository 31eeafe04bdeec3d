"""A witness that is a directory the log's host cannot rewrite (another mount, another owner).

Layout: ``<dir>/<escaped origin>/<size:020d>.note`` for every checkpoint accepted (created
exclusively, mode 0444, never replaced) and ``<dir>/<escaped origin>/latest.note``.  In
production the directory is a mount that the host can append to but not rewrite (an NFS
export with a different owner, a WORM share); the code here refuses rollbacks and forks
so an honest host notices, and the history files let an auditor notice a dishonest one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.format.checkpoint import Checkpoint, NoteError, Verifier, open_checkpoint, split_note
from pipeline.format.files import atomic_write, create_exclusive
from pipeline.format.layout import WITNESS_LATEST, escape_origin, witness_note_name
from pipeline.witness import ConsistencyFn, WitnessError
from pipeline.witness._common import check_extends

LATEST = WITNESS_LATEST  # kept for old imports


class DirectoryWitness:
    def __init__(self, directory: Path, *, verifiers: Sequence[Verifier] = ()) -> None:
        self.dir = Path(directory)
        self.name = f"dir:{self.dir}"
        self.verifiers = list(verifiers)

    def _origin_dir(self, origin: str) -> Path:
        return self.dir / escape_origin(origin)

    def latest(self, origin: str) -> tuple[Checkpoint, bytes] | None:
        path = self._origin_dir(origin) / WITNESS_LATEST
        try:
            note = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            if self.verifiers:
                cp, _ = open_checkpoint(note, self.verifiers, origin=origin)
            else:
                cp = Checkpoint.parse(split_note(note)[0])
        except NoteError as exc:
            raise WitnessError(f"{self.name}: stored checkpoint {path} is unreadable: {exc}") from exc
        return cp, note

    def add_checkpoint(self, note: bytes, checkpoint: Checkpoint, prove: ConsistencyFn) -> list[str]:
        d = self._origin_dir(checkpoint.origin)
        d.mkdir(parents=True, exist_ok=True)
        prev = self.latest(checkpoint.origin)
        check_extends(prev[0] if prev else None, checkpoint, prove, self.name)
        hist = d / witness_note_name(checkpoint.size)
        if not create_exclusive(hist, note):
            existing = Checkpoint.parse(split_note(hist.read_bytes())[0])
            if existing.root != checkpoint.root:
                raise WitnessError(
                    f"{self.name}: FORK: {hist} already holds a different root for size {checkpoint.size}",
                    status=409, fork=True, size=checkpoint.size,
                )
        atomic_write(d / WITNESS_LATEST, note, mode=0o644)
        return []

    def checkpoints(self, origin: str) -> list[bytes]:
        """Every checkpoint note this witness accepted for ``origin``, in size order."""
        d = self._origin_dir(origin)
        if not d.is_dir():
            return []
        return [p.read_bytes() for p in sorted(d.glob("[0-9]*.note"))]


def read_witness_checkpoints(directory: Path, origin: str) -> list[bytes]:
    """Checkpoint notes kept by a directory witness for ``origin`` (for ``pipeline verify``)."""
    return DirectoryWitness(directory).checkpoints(origin)
