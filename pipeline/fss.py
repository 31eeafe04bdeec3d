"""Forward-secure seals: a symmetric key that evolves and forgets (after Schneier-Kelsey, Bellare-Yee).

This is a symmetric scheme: the verification key IS the initial key K0 (plus the epoch
clock), so whoever holds it can derive every epoch key and forge seals.  The auditor keeps
it offline.  journald's FSS uses a different construction (a public-key-like sequence
where the verifier cannot forge); ours gives the same property against a host compromise:
an attacker who steals the state at epoch e cannot compute the keys of earlier epochs.

Exact bytes (docs/PROOFS.md "Forward-secure seals"):

- epoch keys:  ``K(i+1) = SHA-256(b"worm-pipeline fss evolve" || K(i))``, 32 bytes.
- seal keys within epoch i (one per seal, so each seal's key is erased right after use):
  ``S(i,0) = SHA-256(b"worm-pipeline fss seal" || K(i))``,
  ``S(i,j+1) = SHA-256(b"worm-pipeline fss seal evolve" || S(i,j))``.
- MAC stored in the seal's ``data.fss = {"epoch": i, "index": j, "mac": hex}``:
  ``HMAC-SHA256(S(i,j), b"worm-pipeline fss v1\\n" || u64be(i) || u64be(j) || u64be(tree_size)
  || merkle_root[32] || tree_root[32])`` where merkle_root/tree_root are the raw bytes of
  the seal's hex fields and tree_size its ``tree_size`` field.
- epoch i covers wall-clock time ``[start + i*interval, start + (i+1)*interval)``.
- verification key string: ``fss-v1:<start unix seconds>:<interval seconds>:<K0 hex>``.

State on the host (``<stream_dir>/fss/state.json``, mode 0600) holds only ``S(i,j)`` and
``K(i+1)``: never ``K(i)`` or anything earlier.  Each evolution writes a temporary file,
fsyncs it, renames it over the old one and fsyncs the directory.  (A journaling or
copy-on-write file system or an SSD may keep old blocks physically; the erase is as good
as the storage allows, which docs/PROOFS.md says.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.format.files import atomic_write
from pipeline.format.layout import FSS_DIR, FSS_STATE_FILE
from pipeline.format.record import ts_epoch

EVOLVE = b"worm-pipeline fss evolve"
SEAL = b"worm-pipeline fss seal"
SEAL_EVOLVE = b"worm-pipeline fss seal evolve"
MAC_LABEL = b"worm-pipeline fss v1\n"
DEFAULT_INTERVAL = 900
# clock skew tolerated between the epoch chosen by the sealer and the seal record's ts
TS_SLACK = 120.0
STATE_DIR = FSS_DIR  # names kept for old imports; the layout owns them
STATE_FILE = FSS_STATE_FILE


class FssError(PipelineError, ValueError):
    """FSS state or key is missing or malformed."""


def evolve(key: bytes) -> bytes:
    return hashlib.sha256(EVOLVE + key).digest()


def seal_key0(epoch_key: bytes) -> bytes:
    return hashlib.sha256(SEAL + epoch_key).digest()


def seal_evolve(seal_key: bytes) -> bytes:
    return hashlib.sha256(SEAL_EVOLVE + seal_key).digest()


def mac_message(epoch: int, index: int, seal_data: dict[str, Any]) -> bytes:
    try:
        merkle_root = bytes.fromhex(seal_data["merkle_root"])
        tree_root = bytes.fromhex(seal_data["tree_root"])
        tree_size = int(seal_data["tree_size"])
    except (KeyError, ValueError, TypeError) as exc:
        raise FssError("seal data lacks merkle_root, tree_root or tree_size") from exc
    if len(merkle_root) != 32 or len(tree_root) != 32:
        raise FssError("seal merkle_root/tree_root are not 32-byte hashes")
    return MAC_LABEL + struct.pack(">QQQ", epoch, index, tree_size) + merkle_root + tree_root


def compute_mac(seal_key: bytes, epoch: int, index: int, seal_data: dict[str, Any]) -> str:
    return hmac.new(seal_key, mac_message(epoch, index, seal_data), hashlib.sha256).hexdigest()


@dataclass(frozen=True, repr=False)
class VerificationKey:
    start: int
    interval: int
    k0: bytes

    def __repr__(self) -> str:
        return f"VerificationKey(start={self.start}, interval={self.interval})"

    def to_string(self) -> str:
        return f"fss-v1:{self.start}:{self.interval}:{self.k0.hex()}"

    @classmethod
    def from_string(cls, text: str) -> VerificationKey:
        parts = text.strip().split(":")
        if len(parts) != 4 or parts[0] != "fss-v1":
            raise FssError("FSS verification key must look like fss-v1:<start>:<interval>:<64 hex>")
        try:
            start, interval, k0 = int(parts[1]), int(parts[2]), bytes.fromhex(parts[3])
        except ValueError as exc:
            raise FssError("FSS verification key has a malformed number or hex key") from exc
        if len(k0) != 32 or interval <= 0:
            raise FssError("FSS verification key needs a 32-byte key and a positive interval")
        return cls(start, interval, k0)


def _write_private(path: Path, data: bytes) -> None:
    """Atomic replace of a file only its owner may read (0600)."""
    atomic_write(path, data, mode=0o600)


class FssSealer:
    """Host side: holds ``S(i,j)`` and ``K(i+1)``; use as the writer's ``seal_extension``."""

    def __init__(self, stream_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(stream_dir) / STATE_DIR / STATE_FILE
        self._clock = clock
        self._lock = threading.Lock()
        try:
            st = json.loads(self.path.read_text())
            self.start = int(st["start"])
            self.interval = int(st["interval"])
            self.epoch = int(st["epoch"])
            self.index = int(st["index"])
            self._seal_key = bytes.fromhex(st["seal_key"])
            self._next_epoch_key = bytes.fromhex(st["next_epoch_key"])
        except FileNotFoundError as exc:
            raise FssError(f"no FSS state at {self.path}: run `pipeline fss-setup` first") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise FssError(f"FSS state {self.path} is malformed") from exc

    @classmethod
    def setup(
        cls, stream_dir: Path, *, interval: int = DEFAULT_INTERVAL, start: int | None = None
    ) -> VerificationKey:
        """Create K0, store the host state for epoch 0 and return the verification key (once)."""
        if interval <= 0:
            raise FssError("FSS epoch interval must be positive")
        path = Path(stream_dir) / STATE_DIR / STATE_FILE
        if path.exists():
            raise FssError(f"FSS state already exists at {path}; refusing to replace it")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        k0 = secrets.token_bytes(32)
        vk = VerificationKey(int(time.time()) if start is None else start, interval, k0)
        cls._store(path, vk.start, interval, 0, 0, seal_key0(k0), evolve(k0))
        return vk

    @staticmethod
    def _store(path: Path, start: int, interval: int, epoch: int, index: int, sk: bytes, nk: bytes) -> None:
        doc = {"v": 1, "start": start, "interval": interval, "epoch": epoch, "index": index,
               "seal_key": sk.hex(), "next_epoch_key": nk.hex()}
        _write_private(path, json.dumps(doc).encode())

    def _time_epoch(self) -> int:
        return max(0, int((self._clock() - self.start) // self.interval))

    def _advance_locked(self, target: int) -> None:
        if target <= self.epoch:
            return
        key = self._next_epoch_key  # K(epoch+1)
        for _ in range(target - self.epoch - 1):
            key = evolve(key)
        self.epoch, self.index = target, 0
        self._seal_key, self._next_epoch_key = seal_key0(key), evolve(key)
        self._store(self.path, self.start, self.interval, self.epoch, 0, self._seal_key, self._next_epoch_key)

    def tick(self) -> None:
        """Advance to the current time epoch, erasing older keys even when nothing is sealed."""
        with self._lock:
            self._advance_locked(self._time_epoch())

    def __call__(self, seal_data: dict[str, Any]) -> dict[str, Any]:
        """Seal extension: MAC with S(i,j), then erase S(i,j) before the seal is written."""
        with self._lock:
            self._advance_locked(self._time_epoch())
            epoch, index = self.epoch, self.index
            mac = compute_mac(self._seal_key, epoch, index, seal_data)
            self._seal_key = seal_evolve(self._seal_key)
            self.index += 1
            self._store(self.path, self.start, self.interval, self.epoch, self.index,
                        self._seal_key, self._next_epoch_key)
            return {"epoch": epoch, "index": index, "mac": mac}


class FssVerifier:
    """Auditor side.  Derives keys from K0 (walking forward, cached) and checks each seal.

    ``check`` is stateful over one stream: (epoch, index) must strictly increase from seal
    to seal, and a seal's record timestamp must fall inside its epoch's time window, so a
    seal re-made with a key stolen later cannot claim an earlier position or time.
    """

    def __init__(self, key: VerificationKey | str) -> None:
        self.key = key if isinstance(key, VerificationKey) else VerificationKey.from_string(key)
        self._epoch = 0
        self._epoch_key = self.key.k0
        self._last: tuple[int, int] | None = None

    def epoch_key(self, epoch: int) -> bytes:
        if epoch < self._epoch:
            self._epoch, self._epoch_key = 0, self.key.k0
        while self._epoch < epoch:
            self._epoch_key = evolve(self._epoch_key)
            self._epoch += 1
        return self._epoch_key

    def seal_key(self, epoch: int, index: int) -> bytes:
        key = seal_key0(self.epoch_key(epoch))
        for _ in range(index):
            key = seal_evolve(key)
        return key

    def verify(self, seal_data: dict[str, Any], seal_ts: str | None = None) -> str | None:
        """Check one seal in isolation; returns a human-readable problem or None."""
        fss = seal_data.get("fss")
        if not isinstance(fss, dict):
            return "seal carries no forward-secure MAC (data.fss missing)"
        epoch, index, mac = fss.get("epoch"), fss.get("index"), fss.get("mac")
        if type(epoch) is not int or type(index) is not int or type(mac) is not str:  # true is not 1
            return "seal's data.fss is malformed (epoch, index, mac)"
        if epoch < 0 or index < 0 or index > 10_000_000 or epoch > 100_000_000:
            return f"seal's FSS epoch {epoch} / index {index} is out of range"
        try:
            want = compute_mac(self.seal_key(epoch, index), epoch, index, seal_data)
        except FssError as exc:
            return str(exc)
        if not hmac.compare_digest(want, mac):
            return f"forward-secure MAC of the seal does not verify for epoch {epoch} index {index}"
        if seal_ts is not None:
            try:
                t = ts_epoch(seal_ts)
            except ValueError:
                return f"seal timestamp {seal_ts!r} is malformed"
            lo = self.key.start + epoch * self.key.interval - TS_SLACK
            hi = self.key.start + (epoch + 1) * self.key.interval + TS_SLACK
            if not lo <= t < hi:
                return (f"seal at {seal_ts} claims FSS epoch {epoch}, whose window is "
                        f"{datetime.fromtimestamp(lo + TS_SLACK, UTC).isoformat()} onwards "
                        f"for {self.key.interval} s: re-sealed with a later key?")
        return None

    def check(self, seal_data: dict[str, Any], seal_ts: str | None = None) -> str | None:
        """``verify`` plus ordering against the previous seal checked by this object."""
        problem = self.verify(seal_data, seal_ts)
        if problem is not None:
            return problem
        fss = seal_data["fss"]
        pos = (int(fss["epoch"]), int(fss["index"]))
        if self._last is not None and pos <= self._last:
            return (f"seal's FSS position (epoch {pos[0]}, index {pos[1]}) does not follow the previous "
                    f"seal's ({self._last[0]}, {self._last[1]}): seals were re-made or reordered")
        self._last = pos
        return None


_VERIFIERS: dict[str, FssVerifier] = {}


def verify_fss_seal(
    verification_key: str | VerificationKey | FssVerifier,
    seal_data: dict[str, Any],
    seal_ts: str | None = None,
) -> str | None:
    """Check one seal's forward-secure MAC (and, given the seal's ``ts``, its epoch window).

    Returns None when valid, else a human-readable problem.  Pass an ``FssVerifier`` to
    also check that seals of a stream come in strictly increasing (epoch, index) order.
    """
    if isinstance(verification_key, FssVerifier):
        return verification_key.check(seal_data, seal_ts)
    text = verification_key.to_string() if isinstance(verification_key, VerificationKey) else verification_key
    v = _VERIFIERS.get(text)
    if v is None:
        try:
            v = FssVerifier(text)
        except FssError as exc:
            return str(exc)
        _VERIFIERS.clear()  # one key at a time is the common case; keep memory bounded
        _VERIFIERS[text] = v
    return v.verify(seal_data, seal_ts)
