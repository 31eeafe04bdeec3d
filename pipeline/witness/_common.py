"""Shared witness logic: deciding whether a new checkpoint extends the one last seen."""

from __future__ import annotations

from pipeline.format import merkle
from pipeline.format.checkpoint import Checkpoint
from pipeline.witness import ConsistencyFn, WitnessError


def check_extends(old: Checkpoint | None, new: Checkpoint, prove: ConsistencyFn, where: str) -> None:
    """Raise WitnessError unless ``new`` is ``old`` or an append-only extension of it."""
    if old is None:
        return
    if old.origin != new.origin:
        raise WitnessError(f"{where}: origin {new.origin!r} differs from stored {old.origin!r}", status=409)
    if new.size < old.size:
        raise WitnessError(
            f"{where}: rollback refused: checkpoint size {new.size} is below the witnessed size {old.size}",
            status=409, size=old.size,
        )
    if new.size == old.size:
        if new.root != old.root:
            raise WitnessError(
                f"{where}: FORK: two different roots were signed for size {new.size}", status=409, fork=True,
                size=old.size,
            )
        return
    proof = prove(old.size, new.size)
    try:
        merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    except merkle.ProofError as exc:
        raise WitnessError(
            f"{where}: FORK: checkpoint {new.size} is not consistent with witnessed size {old.size}: {exc}",
            status=422, fork=True, size=old.size,
        ) from exc


