"""Checkpoint emitter: signs the durable tree head on each seal and every interval, off the append path.

Storage (``<stream_dir>/checkpoints/``) is ``pipeline.format.checkpoint.CheckpointStore``.

The emitter runs on its own thread.  The writer's seal listener only sets an event, so
signing (and witness round trips) never delay an append.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from pipeline.format.checkpoint import (
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    add_signature_lines,
    open_checkpoint,
)
from pipeline.format.checkpoint import CheckpointStore as CheckpointStore  # re-exported for old imports
from pipeline.format.layout import CHECKPOINT_DIR as CHECKPOINT_DIR
from pipeline.format.layout import CHECKPOINT_LATEST as LATEST
from pipeline.hot.tree import TreeStore
from pipeline.witness import Witness, WitnessError

log = logging.getLogger(__name__)
DEFAULT_INTERVAL = 60.0


class HotLogLike(Protocol):
    stream: str

    def add_seal_listener(self, fn: Any) -> None: ...

    def durable_tree_head(self) -> tuple[int, bytes]: ...


def default_origin(stream: str, prefix: str | None = None) -> str:
    """The checkpoint origin: the stream name, or ``<prefix>/<stream>`` (e.g. example.com/worm/app)."""
    return f"{prefix.rstrip('/')}/{stream}" if prefix else stream


class CheckpointEmitter:
    def __init__(
        self,
        log_: HotLogLike,
        stream_dir: Path,
        signer: Signer,
        *,
        tree_store: TreeStore | None = None,
        origin: str | None = None,
        witnesses: Sequence[Witness] = (),
        interval: float = DEFAULT_INTERVAL,
        fss_tick: Any = None,
        on_witness: Callable[[str, bool], None] | None = None,
    ) -> None:
        if witnesses and tree_store is None:
            raise ValueError("witnesses need consistency proofs: pass the writer's tree_store")
        self.log = log_
        self.store = CheckpointStore(stream_dir)
        self.signer = signer
        self.tree = tree_store
        self.origin = origin or log_.stream
        self.witnesses = list(witnesses)
        self.interval = interval
        self._fss_tick = fss_tick
        # observers for the ops metrics (last checkpoint, witness publish results); called on
        # this emitter's thread after the note is saved, never while a lock is held
        self.on_checkpoint: Callable[[int], None] | None = None
        self._on_witness = on_witness
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._emit_lock = threading.Lock()
        self._pending_lock = threading.Lock()  # never held while signing or publishing
        self._pending_seal: tuple[int, bytes] | None = None
        self.last_size = -1
        # the newest problems only: a witness down for a month must not grow this list for ever
        self.errors: collections.deque[str] = collections.deque(maxlen=100)
        latest = self.store.latest()
        if latest is not None:
            try:
                cp, _ = open_checkpoint(latest, [signer.verifier()])
                self.last_size = cp.size
            except NoteError as exc:
                log.warning("checkpoints: ignoring unreadable %s: %s", self.store.dir / LATEST, exc)

    def start(self) -> CheckpointEmitter:
        self.log.add_seal_listener(self._on_seal)
        self._thread = threading.Thread(target=self._run, name=f"checkpoints-{self.origin}", daemon=True)
        self._thread.start()
        return self

    def _on_seal(self, info: Any) -> None:
        # called on the writer's background thread: only note the head and signal, never sign
        # here.  The head is the one right after the seal, so the checkpoint lands exactly on
        # the segment boundary however late this thread runs (appends may follow the seal).
        with self._pending_lock:
            if self._pending_seal is None or info.tree_size_after > self._pending_seal[0]:
                self._pending_seal = (info.tree_size_after, info.tree_root_after)
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                if self._fss_tick is not None:
                    self._fss_tick()
                with self._pending_lock:
                    head, self._pending_seal = self._pending_seal, None
                if head is not None:
                    self._emit_head(*head)
                else:
                    self.emit()
            except Exception as exc:  # keep the thread alive; the next round retries
                log.exception("checkpoints: emission failed")
                self.errors.append(str(exc))

    def stop(self, *, final: bool = True) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if final:
            self.emit()

    def emit(self, *, force: bool = False) -> bytes | None:
        """Sign, store and publish a checkpoint of the durable tree head (if it grew)."""
        size, root = self.log.durable_tree_head()
        return self._emit_head(size, root, force=force)

    def _emit_head(self, size: int, root: bytes, *, force: bool = False) -> bytes | None:
        with self._emit_lock:
            if size <= self.last_size and not force:
                return None
            if self.tree is not None and self.tree.size >= size and self.tree.root(size) != root:
                # never sign a root our own proofs could not back
                raise RuntimeError(
                    f"tree store root at size {size} differs from the writer's: rebuild {self.tree.dir}"
                )
            cp = Checkpoint(self.origin, size, root)
            note = cp.sign([self.signer])
            self.store.save(cp, note)
            self.last_size = size
            if self.on_checkpoint is not None:
                self.on_checkpoint(size)
            note = self._publish(cp, note)
            return note

    def _witness_result(self, name: str, ok: bool) -> None:
        if self._on_witness is not None:
            self._on_witness(name, ok)

    def _publish(self, cp: Checkpoint, note: bytes) -> bytes:
        cosigs: list[str] = []
        for w in self.witnesses:
            try:
                assert self.tree is not None
                cosigs += w.add_checkpoint(note, cp, self.tree.consistency_proof)
            except WitnessError as exc:
                level = logging.ERROR if exc.fork else logging.WARNING
                log.log(level, "checkpoints: witness %s refused size %d: %s", w.name, cp.size, exc)
                self.errors.append(str(exc))
                self._witness_result(w.name, False)
            except Exception as exc:
                log.warning("checkpoints: witness %s failed for size %d: %s", w.name, cp.size, exc)
                self.errors.append(str(exc))
                self._witness_result(w.name, False)
            else:
                self._witness_result(w.name, True)
        if cosigs:
            note = add_signature_lines(note, cosigs)
            self.store.update_latest(note)
        return note


def load_latest_checkpoint(stream_dir: Path, verifiers: Sequence[Verifier]) -> tuple[Checkpoint, bytes]:
    note = CheckpointStore(stream_dir).latest()
    if note is None:
        raise NoteError(f"no checkpoint stored under {Path(stream_dir) / CHECKPOINT_DIR}")
    cp, _ = open_checkpoint(note, verifiers)
    return cp, note
