"""External witnesses: places the log's host cannot rewrite that keep the latest checkpoint.

A witness receives each signed checkpoint together with a consistency proof from the
checkpoint it saw last (C2SP tlog-witness), refuses rollbacks and forks, and may return
cosignatures.  Implementations: ``DirectoryWitness`` (a directory on another mount),
``S3Witness`` (create-only objects under a prefix with separate credentials) and
``HttpWitness`` (a C2SP tlog-witness ``add-checkpoint`` endpoint such as
``pipeline witness serve``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pipeline.errors import PipelineError
from pipeline.format.checkpoint import Checkpoint
from pipeline.format.layout import escape_origin as escape_origin  # re-exported for old imports

ConsistencyFn = Callable[[int, int], list[bytes]]


class WitnessError(PipelineError, RuntimeError):
    """A witness refused a checkpoint or could not be reached.

    ``status`` mirrors the tlog-witness HTTP status (409 conflict/fork, 422 bad proof,
    403/404 untrusted key or origin); ``fork`` is set when the refusal proves that two
    inconsistent views of the log were signed.
    """

    def __init__(self, message: str, *, status: int = 0, fork: bool = False, size: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.fork = fork
        self.size = size


class Witness(Protocol):
    name: str

    def add_checkpoint(self, note: bytes, checkpoint: Checkpoint, prove: ConsistencyFn) -> list[str]:
        """Submit a signed checkpoint; return cosignature lines (possibly none).

        ``prove(old_size, new_size)`` returns the RFC 6962 consistency proof.  Raises
        ``WitnessError`` when the witness refuses the checkpoint.
        """
        ...




__all__ = ["ConsistencyFn", "Witness", "WitnessError", "escape_origin"]
