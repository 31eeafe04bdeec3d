"""The encryption scheme's bytes, defined once (docs/FORMAT.md §9 says the same in words).

A key record (kind ``key``) carries a fresh 32-byte seed K wrapped to every recipient with
age.  The seed belongs to the key record's seq S: K(S) = seed, and for every later seq s,
K(s) = SHA-256(RATCHET_DOMAIN || K(s-1)).  The event at seq s is encrypted with
k(s) = HMAC-SHA256(K(s), RECORD_KEY_LABEL) under ChaCha20-Poly1305, a zero nonce (each
k(s) encrypts exactly one payload) and ``aad(stream, segment, seq, S)``.  Disclosing k(s)
opens that record and no other: k(s) is a one-way function of K(s), and K(s) is not
derivable from k(s).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pipeline.errors import PipelineError

KEY_KIND = "key"
ENC_FIELD = "_enc"  # the data member holding an encrypted event's ciphertext
SCHEME = "age-x25519+sha256-ratchet+chacha20-poly1305"
VERSION = 1
RATCHET_DOMAIN = b"worm-pipeline/ratchet/v1\x00"
RECORD_KEY_LABEL = b"worm-pipeline/record-key/v1"
AAD_DOMAIN = b"worm-pipeline/event/v1"
NONCE = bytes(12)  # every record key encrypts exactly one payload
KEY_BYTES = 32


class PayloadError(PipelineError, ValueError):
    """An encrypted payload could not be opened: wrong key, or moved/altered bytes."""


RATCHET_STATE = hashlib.sha256(RATCHET_DOMAIN)  # the domain prefix, hashed once and copied per step


def ratchet_step(key: bytes | bytearray | memoryview) -> bytes:
    """K(s+1) from K(s)."""
    h = RATCHET_STATE.copy()
    h.update(key)
    return h.digest()


def record_key(chain_key: bytes | bytearray | memoryview) -> bytes:
    """k(s) from K(s)."""
    return hmac.digest(chain_key, RECORD_KEY_LABEL, "sha256")


def aad_prefix(stream: str, segment: str) -> bytes:
    """The bytes of ``aad`` before the seqs (constant for one key record)."""
    return b"\x00".join((AAD_DOMAIN, stream.encode(), segment.encode(), b""))


def chain_key_at(seed: bytes, key_seq: int, seq: int) -> bytearray:
    """K(seq) from the seed of the key record at ``key_seq`` (seq > key_seq)."""
    if seq <= key_seq:
        raise ValueError(f"seq {seq} is not after its key record's seq {key_seq}")
    k = bytearray(seed)
    for _ in range(seq - key_seq):
        k[:] = ratchet_step(k)
    return k


def aad(stream: str, segment: str, seq: int, key_seq: int) -> bytes:
    """The associated data binding a ciphertext to its place in the log."""
    return b"\x00".join((AAD_DOMAIN, stream.encode(), segment.encode(), b"%d" % seq, b"%d" % key_seq))


def seal_payload(rkey: bytes, plaintext: bytes, associated: bytes) -> bytes:
    return ChaCha20Poly1305(rkey).encrypt(NONCE, plaintext, associated)


def open_payload(rkey: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(rkey).decrypt(NONCE, ciphertext, associated)
    except InvalidTag:
        raise PayloadError("the ciphertext does not open with its key at this position "
                           "(altered, or moved from another record, segment or stream)") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise PayloadError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError(f"{what} is not valid base64") from None


def enc_member(data: dict[str, Any]) -> dict[str, Any] | None:
    """The ``_enc`` member of an event's data when the event is encrypted, else None."""
    member = data.get(ENC_FIELD)
    return member if isinstance(member, dict) else None
