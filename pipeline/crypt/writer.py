"""What the hot log keeps to encrypt events: one key epoch per key record.

The process holds, per stream, at most one chain key: K(s) for the next seq s it may
encrypt (in the C accelerator's memory, or a bytearray without it; overwritten in place at
every step and zeroed when the segment is sealed).  Once the event at seq s is queued, K(s)
is replaced by K(s+1) before the append returns, so nothing the process keeps opens an
event it has acknowledged (docs/ENCRYPTION.md states what Python cannot promise about
copies, and what the C path removes).
"""

from __future__ import annotations

import binascii
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyrage
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pipeline._accel import native
from pipeline.crypt import scheme
from pipeline.crypt.scheme import RATCHET_STATE
from pipeline.errors import PipelineError


class EncryptionConfigError(PipelineError, ValueError):
    """Encryption settings that cannot be used (a malformed recipient, a reserved field)."""


@dataclass(frozen=True)
class EncryptionSettings:
    """Encrypt every event to ``recipients`` (age X25519 public keys, ``age1...``), keeping
    the top-level event fields named in ``clear_fields`` also in clear for routing."""

    recipients: tuple[str, ...]
    clear_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipients", tuple(self.recipients))
        object.__setattr__(self, "clear_fields", tuple(self.clear_fields))
        if not self.recipients:
            raise EncryptionConfigError("encryption needs at least one recipient (an age1... public key)")
        for r in self.recipients:
            parse_recipient(r)
        for f in self.clear_fields:
            if not isinstance(f, str) or not f:
                raise EncryptionConfigError(f"clear field {f!r} must be a non-empty string")
            if f == scheme.ENC_FIELD:
                raise EncryptionConfigError(f"clear field {f!r} is reserved for the ciphertext")

    @classmethod
    def of(cls, recipients: Any, clear_fields: Any = ()) -> EncryptionSettings | None:
        """Settings from configuration values; None when ``recipients`` is empty (no encryption)."""
        if not recipients:
            if clear_fields:
                raise EncryptionConfigError("clear_fields is set but encryption has no recipients")
            return None
        return cls(tuple(recipients), tuple(clear_fields))


def parse_recipient(text: str) -> pyrage.x25519.Recipient:
    if not isinstance(text, str) or not text.startswith("age1"):
        raise EncryptionConfigError(f"recipient {text!r} is not an age X25519 public key (age1...)")
    try:
        return pyrage.x25519.Recipient.from_str(text)
    except Exception as exc:  # pyrage raises its own RecipientError
        raise EncryptionConfigError(f"recipient {text!r} is not a valid age X25519 public key: {exc}") from None


class PyRatchet:
    """One key record's chain key and the per-event steps of the scheme, in Python: the
    reference for ``pipeline._native.Ratchet`` (same bytes; tests/crypt/test_ratchet_bytes.py),
    used when the accelerator is not built or ``PIPELINE_NO_NATIVE=1``.  The chain key is a
    bytearray overwritten in place; the hash and HMAC results are transient ``bytes``
    (docs/ENCRYPTION.md, "What Python cannot guarantee")."""

    __slots__ = ("_aad_prefix", "_at", "_enc_head", "_k", "_key_seq")

    def __init__(self, seed: bytes | None, key_seq: int, aad_prefix: bytes) -> None:
        """``seed`` None draws a fresh one (the writer's case)."""
        self._k = bytearray(os.urandom(scheme.KEY_BYTES) if seed is None else seed)  # K(self._at)
        if len(self._k) != scheme.KEY_BYTES:
            raise ValueError(f"Ratchet: the seed must be {scheme.KEY_BYTES} bytes")
        self._at = self._key_seq = key_seq
        self._aad_prefix = aad_prefix
        self._enc_head = b'"_enc":{"key_seq":%d,"ct":"' % key_seq

    def seal(self, seq: int, plaintext: bytes, head: bytes) -> bytes:
        """``head`` followed by the ``_enc`` member of the event at ``seq``; leaves the ratchet
        at K(seq) (``consumed`` steps past it once the record is queued)."""
        if seq < self._at or seq <= self._key_seq:
            raise RuntimeError(f"the key of seq {seq} was already erased (ratchet at {self._at})")
        k = self._k
        while self._at < seq:
            h = RATCHET_STATE.copy()
            h.update(k)
            k[:] = h.digest()
            self._at += 1
        ct = ChaCha20Poly1305(hmac.digest(k, scheme.RECORD_KEY_LABEL, "sha256")).encrypt(
            scheme.NONCE, plaintext, self._aad_prefix + b"%d\x00%d" % (seq, self._key_seq))
        return b"".join((head, self._enc_head, binascii.b2a_base64(ct, newline=False), b'"}}'))

    def wrap(self, encrypt: Callable[[bytes], bytes]) -> bytes:
        """``encrypt(seed)``, for the key record, while the ratchet is still at its seed."""
        if self._at != self._key_seq:
            raise RuntimeError("the seed was already erased: wrap() comes first")
        return encrypt(bytes(self._k))

    def consumed(self, seq: int) -> None:
        if self._at == seq:
            h = RATCHET_STATE.copy()
            h.update(self._k)
            self._k[:] = h.digest()
            self._at += 1

    def erase(self) -> None:
        for i in range(len(self._k)):
            self._k[i] = 0
        self._at = _ERASED  # seal() refuses every seq from now on

    def held(self) -> tuple[int, bytes]:
        return self._at, bytes(self._k)


_ERASED = 1 << 62

# bound once (pipeline._accel): the C ratchet keeps the chain key in C memory, cleansed as it
# advances, and never makes a key a Python object
Ratchet: type[PyRatchet] = native.Ratchet if native is not None else PyRatchet


class Epoch:
    """The keys of one key record: created with a fresh seed, it gives the key record's data
    and then encrypts the events after it, in seq order."""

    def __init__(self, settings: EncryptionSettings, *, stream: str, segment: str, key_seq: int,
                 seed: bytes | None = None) -> None:
        """A fresh seed K(key_seq), drawn inside the ratchet (``seed`` is for tests)."""
        self.settings = settings
        self.stream = stream
        self.segment = segment
        self.key_seq = key_seq
        self.ratchet = Ratchet(seed, key_seq, scheme.aad_prefix(stream, segment))
        recipients = [parse_recipient(r) for r in settings.recipients]
        self.wrapped = self.ratchet.wrap(lambda k: pyrage.encrypt(k, recipients))
        self._clear = frozenset(settings.clear_fields)
        self.has_clear = bool(self._clear)  # else every event's data starts with b"{" (see head)

    def key_record_data(self) -> dict[str, Any]:
        return {
            "v": scheme.VERSION,
            "scheme": scheme.SCHEME,
            "segment": self.segment,
            "recipients": list(self.settings.recipients),
            "clear_fields": list(self.settings.clear_fields),
            "wrapped": scheme.b64(self.wrapped),
        }

    def heads(self, plaintexts: list[bytes], start: int) -> list[bytes] | None:
        """What each event's data starts with, for ``plaintexts[start:]``: ``{`` and its clear
        members (FORMAT §11.3); None when no field is kept in clear (every head is ``{``)."""
        if not self._clear:
            return None
        return [self.head(p) for p in plaintexts[start:]]

    def head(self, plaintext: bytes) -> bytes:
        """What the event's data starts with: ``{`` and its clear members, if any."""
        if not self._clear:
            return b"{"
        event = orjson.loads(plaintext)
        clear = {k: v for k, v in event.items() if k in self._clear} if isinstance(event, dict) else {}
        return orjson.dumps(clear)[:-1] + (b"," if clear else b"")

    def encrypt(self, seq: int, plaintext: bytes) -> bytes:
        """The data bytes of the event at ``seq``.  Leaves the ratchet at K(seq): call
        ``consumed(seq)`` once the record is queued (a record that did not fit is encrypted
        again, in a new segment)."""
        return self.ratchet.seal(seq, plaintext, self.head(plaintext))

    def consumed(self, seq: int) -> None:
        """The event at ``seq`` is queued: erase K(seq), keeping K(seq+1)."""
        self.ratchet.consumed(seq)

    def erase(self) -> None:
        self.ratchet.erase()

    def held_key(self) -> tuple[int, bytes]:
        """(s, K(s)) -- what the process keeps; for tests that play the attacker."""
        return self.ratchet.held()


SETTINGS_FILE = "encryption.json"


def stored_settings(stream_dir: Path) -> EncryptionSettings | None:
    """The recipients a stream was last written with (``<stream>/encryption.json``), so that
    every writer of an encrypted stream keeps encrypting, however it is opened -- as a stream
    prepared with ``fss-setup`` is never sealed without its key.  None when there is none."""
    try:
        raw = (stream_dir / SETTINGS_FILE).read_bytes()
    except FileNotFoundError:
        return None
    try:
        doc = orjson.loads(raw)
        return EncryptionSettings(tuple(doc["recipients"]), tuple(doc.get("clear_fields", ())))
    except (orjson.JSONDecodeError, KeyError, TypeError, EncryptionConfigError) as exc:
        raise EncryptionConfigError(f"{stream_dir / SETTINGS_FILE} is unreadable ({exc}): fix it or configure "
                                    "[encryption] explicitly") from None


def store_settings(stream_dir: Path, settings: EncryptionSettings | None) -> None:
    """Record (or, for None, remove) the stream's encryption settings, atomically."""
    from pipeline.format.files import atomic_write, fsync_dir

    path = stream_dir / SETTINGS_FILE
    if settings is None:
        if path.exists():
            path.unlink()
            fsync_dir(stream_dir)
        return
    doc = orjson.dumps({"recipients": list(settings.recipients), "clear_fields": list(settings.clear_fields)})
    if path.exists() and path.read_bytes() == doc:
        return
    atomic_write(path, doc, mode=0o644)
