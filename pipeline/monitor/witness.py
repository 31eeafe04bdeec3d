"""Comparing the log's own checkpoint with what each witness holds, read-only.

Every ``witness.interval`` and stream: the log's latest checkpoint
(``<stream>/checkpoints/latest.note``, signature checked with ``witness.vkey``) against each
witness's latest for the same origin (``DirectoryWitness.latest`` / ``S3Witness.latest``,
the classes the sidecar publishes with):

- a witness larger than the log: ``checkpoint-rollback`` (records removed after witnessing);
- the same size with another root, or a root that differs from the log's own stored
  checkpoint of that size: ``checkpoint-fork``;
- a witnessed root that the hot tier's tree (its tiles, read-only) does not give at that
  size: ``witness-root-mismatch`` (recomputed once per new witnessed size; O(log n));
- a witness that has not advanced while the log's checkpoint is larger, for longer than
  ``witness.max_lag``: ``witness-stale`` (it stopped accepting, or the host stopped publishing).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.format.checkpoint import Checkpoint, CheckpointStore, NoteError, Verifier, open_checkpoint
from pipeline.monitor.config import WitnessWatch
from pipeline.monitor.findings import MonitorFinding

log = logging.getLogger("pipeline.monitor")


@dataclass
class WitnessState:
    # "<stream>|<location>" -> {"size": witnessed size, "since": wall time the log was first
    # seen ahead of it at this size (None: not behind), "checked_size": size whose root was recomputed}
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WitnessState:
        return cls(dict(d.get("seen") or {}))


class WitnessWatcher:
    def __init__(self, opts: WitnessWatch, hot: Path, state: WitnessState) -> None:
        from pipeline.format.checkpoint import load_verifiers
        from pipeline.sidecar import open_witnesses

        self.opts = opts
        self.hot = hot
        self.state = state
        assert opts.vkey is not None
        self.verifiers: list[Verifier] = load_verifiers([opts.vkey])
        self.witnesses = list(zip(opts.locations, open_witnesses(opts.locations), strict=True))
        self.last: dict[str, list[MonitorFinding]] = {}

    def check(self, stream: str) -> tuple[list[MonitorFinding], bool]:
        """(findings, whether every read succeeded)."""
        out: list[MonitorFinding] = []
        stream_dir = self.hot / stream
        store = CheckpointStore(stream_dir)
        note = store.latest()
        if note is None:
            return out, True  # nothing signed yet: nothing to compare
        try:
            log_cp, _ = open_checkpoint(note, self.verifiers)
        except NoteError as exc:
            out.append(MonitorFinding("checkpoint-signature-invalid", stream, "", f"the log's latest checkpoint does "
                                      f"not verify with witness.vkey: {exc}", None, "hot"))
            return out, True
        origin = self.opts.origin or log_cp.origin
        ok = True
        now = time.time()
        for loc, w in self.witnesses:
            where = f"witness:{loc}"
            try:
                held = w.latest(origin)
            except Exception as exc:  # a witness of any kind, unreachable: the check did not run
                out.append(MonitorFinding("witness-unreadable", stream, "", f"cannot read witness {loc}: {exc}",
                                          None, where))
                ok = False
                continue
            wcp: Checkpoint | None = None
            if held is not None:
                try:
                    wcp, _ = open_checkpoint(held[1], self.verifiers, origin=origin)
                except NoteError as exc:
                    out.append(MonitorFinding("checkpoint-signature-invalid", stream, "", f"witness {loc} holds a "
                                              f"checkpoint that does not verify with the log's key: {exc}", None,
                                              where))
                    continue
            if wcp is not None and wcp.size > log_cp.size:
                # the emitter stores the log's checkpoint BEFORE it hands it to the witnesses, so
                # one emitted since the log's was read is at the witness already: read the log's
                # again, after the witness's, before calling it a rollback
                newer = store.latest()
                with contextlib.suppress(NoteError):
                    if newer is not None:
                        log_cp = open_checkpoint(newer, self.verifiers)[0]
            out += self._compare(stream, stream_dir, store, log_cp, wcp, loc, where, now)
        return out, ok

    def _compare(self, stream: str, stream_dir: Path, store: CheckpointStore, log_cp: Checkpoint,
                 wcp: Checkpoint | None, loc: str, where: str, now: float) -> list[MonitorFinding]:
        out: list[MonitorFinding] = []
        wsize = wcp.size if wcp else 0
        seen = self.state.seen.setdefault(f"{stream}|{loc}", {"size": None, "since": None, "checked_size": None})
        if wcp is not None and wcp.size > log_cp.size:
            out.append(MonitorFinding("checkpoint-rollback", stream, "", f"witness {loc} holds size {wcp.size}, the "
                                      f"log's latest checkpoint is size {log_cp.size}: records were removed after "
                                      "they were witnessed", wcp.size, where))
        elif wcp is not None:
            own = log_cp if wcp.size == log_cp.size else _stored(store, wcp.size, self.verifiers)
            if own is not None and own.root != wcp.root:
                out.append(MonitorFinding("checkpoint-fork", stream, "", f"witness {loc} holds root "
                                          f"{wcp.root.hex()[:16]}… at size {wcp.size}, the log signed "
                                          f"{own.root.hex()[:16]}… for that size", wcp.size, where))
            if seen.get("checked_size") != wcp.size:
                problem = _tree_problem(stream_dir, wcp)
                if problem is None:
                    seen["checked_size"] = wcp.size
                elif problem[0] == "witness-root-mismatch":
                    out.append(MonitorFinding(problem[0], stream, "", f"witness {loc}: {problem[1]}", wcp.size, where))
                else:
                    seen["checked_size"] = wcp.size  # not recomputable here (evicted leaves): not retried
                    log.info("monitor: %s: %s", where, problem[1])
        if seen.get("size") != wsize:
            seen["size"], seen["since"] = wsize, None
        if wsize < log_cp.size:
            if seen.get("since") is None:
                seen["since"] = now
            behind = now - float(seen["since"])
            if behind > self.opts.max_lag:
                out.append(MonitorFinding("witness-stale", stream, "", f"witness {loc} has held size {wsize} for "
                                          f"{behind:.0f} s while the log signed size {log_cp.size} "
                                          f"(witness.max_lag {self.opts.max_lag:g} s): it stopped accepting "
                                          "checkpoints, or the host stopped publishing them", wsize, where))
        else:
            seen["since"] = None
        return out


def _stored(store: CheckpointStore, size: int, verifiers: list[Verifier]) -> Checkpoint | None:
    note = store.by_size(size)
    if note is None:
        return None
    try:
        return open_checkpoint(note, verifiers)[0]
    except NoteError:
        return None


def _tree_problem(stream_dir: Path, cp: Checkpoint) -> tuple[str, str] | None:
    from pipeline.hot.tree import TreeStore, TreeStoreError

    try:
        tree = TreeStore(stream_dir, readonly=True)
        try:
            tree.extend_readonly(cp.size)
            root = tree.root(cp.size)
        finally:
            tree.close()
    except (TreeStoreError, OSError, ValueError) as exc:
        return "checkpoint-unchecked", f"cannot recompute the tree at size {cp.size} from the hot tier: {exc}"
    if root != cp.root:
        return "witness-root-mismatch", (f"the hot tier's tree gives root {root.hex()[:16]}… at size {cp.size}, the "
                                         f"witness holds {cp.root.hex()[:16]}…: the log was rewritten after it was "
                                         "witnessed")
    return None
