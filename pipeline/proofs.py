"""Proof documents for auditors (the JSON of ``pipeline prove``) and their offline verification.

Inclusion: ``{"index", "tree_size", "leaf": base64(record line without \\n), "hashes": [hex,
leaf-to-root], "checkpoint": note}``.  Consistency: ``{"old_size", "size", "hashes",
"old_checkpoint", "checkpoint"}``.  Proofs are always made against a stored SIGNED
checkpoint, never a bare root, so the verifier needs only the log's verifier key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.findings import Finding
from pipeline.format import merkle
from pipeline.format.checkpoint import Checkpoint, CheckpointStore, NoteError, Verifier, open_checkpoint, split_note
from pipeline.format.record import RecordError, parse_record
from pipeline.format.segment import list_segments, parse_segment_name
from pipeline.hot.tree import SegmentLeafSource, TreeStore, TreeStoreError


class ProveError(PipelineError, RuntimeError):
    """A proof cannot be produced (no checkpoint of that size, segment gone, store disagrees)."""


def _checkpoint(store: CheckpointStore, size: int | None) -> tuple[Checkpoint, bytes]:
    note = store.latest() if size is None else store.by_size(size)
    if note is None:
        what = "no checkpoint is stored" if size is None else f"no signed checkpoint of size {size} is stored"
        raise ProveError(f"{what} under {store.dir}")
    return Checkpoint.parse(split_note(note)[0]), note


def _tree(stream_dir: Path, size: int, root: bytes) -> TreeStore:
    tree = TreeStore(stream_dir, readonly=True)
    try:
        tree.extend_readonly(size)
        got = tree.root(size)
    except TreeStoreError as exc:
        raise ProveError(f"cannot rebuild the tree of size {size}: {exc}") from exc
    if got != root:
        raise ProveError(
            f"the stored tree's root at size {size} does not match the signed checkpoint: the hot tier "
            "was altered or the tree store is stale (run pipeline verify)"
        )
    return tree


def prove_inclusion(stream_dir: Path, seq: int, *, size: int | None = None) -> dict[str, Any]:
    cp, note = _checkpoint(CheckpointStore(stream_dir), size)
    if not 0 <= seq < cp.size:
        raise ProveError(f"seq {seq} is not covered by the checkpoint of size {cp.size}; wait for the next one")
    tree = _tree(stream_dir, cp.size, cp.root)
    try:
        leaf = SegmentLeafSource(stream_dir).lines(seq, seq + 1)[0]
        hashes = tree.inclusion_proof(seq, cp.size)
    except TreeStoreError as exc:
        raise ProveError(str(exc)) from exc
    return {
        "index": seq,
        "tree_size": cp.size,
        "leaf": base64.b64encode(leaf).decode(),
        "hashes": [h.hex() for h in hashes],
        "checkpoint": note.decode(),
    }


def prove_consistency(stream_dir: Path, old_size: int, size: int | None = None) -> dict[str, Any]:
    store = CheckpointStore(stream_dir)
    old_cp, old_note = _checkpoint(store, old_size)
    cp, note = _checkpoint(store, size)
    if old_cp.size > cp.size:
        raise ProveError(f"old size {old_cp.size} is larger than size {cp.size}")
    tree = _tree(stream_dir, cp.size, cp.root)
    try:
        hashes = tree.consistency_proof(old_cp.size, cp.size)
    except TreeStoreError as exc:
        raise ProveError(str(exc)) from exc
    return {
        "old_size": old_cp.size,
        "size": cp.size,
        "hashes": [h.hex() for h in hashes],
        "old_checkpoint": old_note.decode(),
        "checkpoint": note.decode(),
    }


def _hashes(doc: dict[str, Any]) -> list[bytes]:
    raw = doc.get("hashes")
    if not isinstance(raw, list) or not all(isinstance(h, str) for h in raw):
        raise ValueError("hashes must be a list of hex strings")
    out = [bytes.fromhex(h) for h in raw]
    if any(len(h) != 32 for h in out):
        raise ValueError("every proof hash must be 32 bytes")
    return out


def _int(doc: dict[str, Any], key: str) -> int:
    v = doc.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{key} must be a non-negative integer")
    return v


def verify_proof_document(doc: dict[str, Any], verifiers: Sequence[Verifier]) -> str | None:
    """None when the proof is valid; otherwise why not.  Raises ValueError when malformed."""
    try:
        if "index" in doc:
            index, size = _int(doc, "index"), _int(doc, "tree_size")
            cp, _ = open_checkpoint(str(doc["checkpoint"]).encode(), verifiers)
            if cp.size != size:
                return f"proof is for tree size {size} but the checkpoint is for {cp.size}"
            leaf = base64.b64decode(str(doc["leaf"]), validate=True)
            try:
                rec = parse_record(leaf + b"\n")
            except RecordError as exc:
                return f"leaf is not a well-formed record line: {exc}"
            if rec.seq != index:
                return f"leaf is record seq {rec.seq}, not index {index}"
            merkle.verify_inclusion(index, size, merkle.leaf_hash(leaf), _hashes(doc), cp.root)
            return None
        if "old_size" in doc:
            old_size, size = _int(doc, "old_size"), _int(doc, "size")
            old_cp, _ = open_checkpoint(str(doc["old_checkpoint"]).encode(), verifiers)
            cp, _ = open_checkpoint(str(doc["checkpoint"]).encode(), verifiers, origin=old_cp.origin)
            if (old_cp.size, cp.size) != (old_size, size):
                return "proof sizes do not match the sizes of its checkpoints"
            merkle.verify_consistency(old_size, size, old_cp.root, cp.root, _hashes(doc))
            return None
    except NoteError as exc:
        return f"checkpoint does not verify: {exc}"
    except merkle.ProofError as exc:
        return str(exc)
    except (binascii.Error, KeyError) as exc:
        raise ValueError(f"proof document is malformed: {exc}") from exc
    raise ValueError("proof document has neither 'index' nor 'old_size'")


# ---------------------------------------------------------------------- witness audit


def _leaves_in_order(stream_dir: Path) -> Iterable[tuple[int, bytes]]:
    """(seq, line without newline) for each complete line, segments deduplicated by attempt."""
    by_first: dict[int, Path] = {}
    for path in list_segments(stream_dir):
        parsed = parse_segment_name(path.name)
        if parsed is not None:
            by_first[parsed[0]] = path
    for first in sorted(by_first):
        with open(by_first[first], "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                yield first, line[:-1]


def verify_against_witnesses(
    stream_dir: Path, witness_checkpoints: Iterable[bytes], vkey: str | Path | Verifier | Sequence[Verifier]
) -> list[Finding]:
    """Recompute the stream's tree from the hot segments and compare it with witnessed checkpoints.

    Each witnessed checkpoint (verified with ``vkey``) fixes the root of the first ``size``
    record lines.  A chain rewritten after the checkpoint was witnessed, even re-hashed and
    re-signed with a stolen key, gives a different root at that size.  Returns the findings
    (``seq`` is the checkpoint's tree size); empty when everything matches.
    """
    stream_dir = Path(stream_dir)
    stream = stream_dir.name
    if isinstance(vkey, Verifier):
        verifiers: list[Verifier] = [vkey]
    elif isinstance(vkey, (str, Path)):
        text = Path(vkey).read_text() if Path(str(vkey)).is_file() else str(vkey)
        verifiers = [Verifier.from_string(ln) for ln in text.splitlines() if ln.strip()]
    else:
        verifiers = list(vkey)
    findings: list[Finding] = []

    def finding(code: str, size: int | None, message: str) -> None:
        findings.append(Finding.of(code, stream, "", message, size))

    wanted: dict[int, list[Checkpoint]] = {}
    for note in witness_checkpoints:
        try:
            cp, _ = open_checkpoint(note, verifiers)
        except NoteError as exc:
            finding("witness-checkpoint-unverifiable", None,
                    f"a witnessed checkpoint does not verify with the log key: {exc}")
            continue
        wanted.setdefault(cp.size, []).append(cp)
    if not wanted:
        return findings
    cr = merkle.CompactRange()

    def check(size: int) -> None:
        root = cr.root()
        for cp in wanted.pop(size, []):
            if cp.root != root:
                finding("witness-root-mismatch", size,
                        f"the hot segments give root {root.hex()} at size {size}, but a witness holds a "
                        f"checkpoint signed with root {cp.root.hex()}: records up to seq {size - 1} were "
                        "rewritten after they were witnessed (the chain was rebuilt)")

    check(0)
    current = -1
    gap = False
    for first, leaf in _leaves_in_order(stream_dir):
        if not wanted:
            break
        if first != current:
            current = first
            if first != cr.size:
                gap = True
                finding("checkpoint-unchecked", None,
                        f"segment starting at seq {first} follows {cr.size} records: segments are missing "
                        "from the hot tier, so later witnessed checkpoints cannot be recomputed here")
                break
        cr.append(merkle.leaf_hash(leaf))
        check(cr.size)
    for size in sorted(wanted):
        if gap:
            break
        finding("witness-ahead", size,
                f"a witness holds a checkpoint of size {size} but the hot segments hold only {cr.size} "
                "records: records were removed after they were witnessed")
    return findings
