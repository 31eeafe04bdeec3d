"""Decryption for auditors: unwrap key records with age identities, open events, disclose
one record's key and check a disclosure (docs/FORMAT.md §11; docs/ENCRYPTION.md).

Nothing here writes to the log or needs the host: an identity file stays with the auditor.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyrage

from pipeline.crypt import scheme
from pipeline.errors import PipelineError
from pipeline.format.record import Kind, Record, RecordError, parse_record


class IdentityError(PipelineError):
    """The identity file is missing, unreadable, holds no age X25519 identity, or opens none
    of a key record's recipients: decryption could not run."""


class OpenError(PipelineError, ValueError):
    """A record that must open does not: its ciphertext, key reference or clear fields were
    altered or moved.  A finding about the data."""

    def __init__(self, segment: str, seq: int, message: str) -> None:
        super().__init__(f"{segment} seq {seq}: {message}")
        self.segment, self.seq = segment, seq


def load_identities(path: str | os.PathLike[str]) -> list[pyrage.x25519.Identity]:
    """The age X25519 identities in ``path`` (the format ``age-keygen`` writes: one
    ``AGE-SECRET-KEY-1...`` per line, ``#`` comments)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentityError(f"cannot read identity file {path}: {exc}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(pyrage.x25519.Identity.from_str(line))
        except Exception:
            raise IdentityError(f"identity file {path} line {n} is not an age X25519 identity "
                                "(AGE-SECRET-KEY-1...)") from None
    if not out:
        raise IdentityError(f"identity file {path} holds no age identity (AGE-SECRET-KEY-1...); "
                            "create one with age-keygen")
    return out


def unwrap_seed(key_data: dict[str, Any], identities: list[pyrage.x25519.Identity], *, where: str) -> bytes:
    """The seed of a key record, or IdentityError naming its recipients."""
    wrapped = scheme.unb64(key_data.get("wrapped"), f"{where}: wrapped")
    try:
        seed = pyrage.decrypt(wrapped, identities)
    except pyrage.DecryptError:
        mine = ", ".join(str(i.to_public()) for i in identities)
        theirs = ", ".join(str(r) for r in key_data.get("recipients", [])) or "?"
        raise IdentityError(f"{where}: the identity (public key {mine}) is not a recipient of this key record "
                            f"(recipients: {theirs}); use the identity of one of them") from None
    if len(seed) != scheme.KEY_BYTES:
        raise IdentityError(f"{where}: the wrapped seed is {len(seed)} bytes, not {scheme.KEY_BYTES}")
    return bytes(seed)


def check_key_record(data: dict[str, Any], where: str) -> None:
    if data.get("v") != scheme.VERSION or data.get("scheme") != scheme.SCHEME:
        raise PipelineError(f"{where}: key record of an unknown scheme {data.get('scheme')!r} "
                            f"(v {data.get('v')!r}); this version reads v{scheme.VERSION} {scheme.SCHEME}")


@dataclass
class _Ratchet:
    segment: str
    key_seq: int
    at: int
    key: bytearray

    def key_at(self, seq: int) -> bytes:
        """k(seq), walking forward (records are read in order; a step back re-derives)."""
        if seq <= self.key_seq:
            raise ValueError(f"seq {seq} is not after its key record (seq {self.key_seq})")
        if seq < self.at:
            return scheme.record_key(scheme.chain_key_at(bytes(self._seed), self.key_seq, seq))
        while self.at < seq:
            self.key[:] = scheme.ratchet_step(self.key)
            self.at += 1
        return scheme.record_key(self.key)

    _seed: bytes = b""


def open_event(rec: Record, ratchet: _Ratchet, segment_file: str) -> dict[str, Any]:
    """The plaintext data of an encrypted event (checking its clear fields against it)."""
    enc = scheme.enc_member(rec.data)
    assert enc is not None
    try:
        ct = scheme.unb64(enc.get("ct"), "ct")
        rkey = ratchet.key_at(rec.seq)
        plain = scheme.open_payload(rkey, ct, scheme.aad(rec.stream, ratchet.segment, rec.seq, ratchet.key_seq))
        data = orjson.loads(plain)
    except (scheme.PayloadError, ValueError) as exc:
        raise OpenError(segment_file, rec.seq, str(exc)) from None
    if not isinstance(data, dict):
        raise OpenError(segment_file, rec.seq, "the plaintext is not a JSON object")
    for name, value in rec.data.items():
        if name != scheme.ENC_FIELD and data.get(name, _MISSING) != value:
            raise OpenError(segment_file, rec.seq, f"clear field {name!r} differs from the encrypted event")
    return data


_MISSING = object()


class RecordOpener:
    """Opens records as they stream past, one segment after another: call ``begin(segment)``
    at each segment's start, then ``open`` on every record in order.  A key record is
    unwrapped only when an event that needs it is opened, so records outside what is asked
    for (another time range, a segment wrapped to a rotated-out identity) need no key."""

    def __init__(self, identities: list[pyrage.x25519.Identity]) -> None:
        self.identities = identities
        self._segment = ""
        self._keys: dict[int, dict[str, Any]] = {}
        self._ratchets: dict[int, _Ratchet] = {}

    def begin(self, segment: str) -> None:
        self._segment = segment.removesuffix(".zst")
        self._keys, self._ratchets = {}, {}

    def open(self, rec: Record, *, decrypt: bool = True) -> dict[str, Any] | None:
        """The plaintext of an encrypted event (None when ``decrypt`` is False), the data of a
        clear one, None for the log's own records.  Raises OpenError (a finding) or
        IdentityError (cannot run)."""
        if rec.kind == Kind.KEY.value:
            check_key_record(rec.data, f"{self._segment} seq {rec.seq}")
            if rec.data.get("segment") != self._segment:
                raise OpenError(self._segment, rec.seq, f"key record names segment {rec.data.get('segment')!r}, "
                                f"not {self._segment!r}")
            self._keys[rec.seq] = rec.data
            return None
        if rec.kind != Kind.EVENT.value:
            return None
        enc = scheme.enc_member(rec.data)
        if enc is None:
            return rec.data
        key_seq = enc.get("key_seq")
        if not isinstance(key_seq, int) or key_seq not in self._keys:
            raise OpenError(self._segment, rec.seq, f"key_seq {key_seq!r} names no key record earlier in this segment")
        if not decrypt:
            return None
        ratchet = self._ratchets.get(key_seq)
        if ratchet is None:
            seed = unwrap_seed(self._keys[key_seq], self.identities, where=f"{self._segment} seq {key_seq}")
            ratchet = self._ratchets[key_seq] = _Ratchet(self._segment, key_seq, key_seq, bytearray(seed), seed)
        return open_event(rec, ratchet, self._segment)


class SegmentReader:
    """Reads one segment's records in order, opening its encrypted events."""

    def __init__(self, identities: list[pyrage.x25519.Identity]) -> None:
        self.identities = identities

    def records(self, path: Path, seal_segment: str | None = None, *,
                want: Callable[[Record], bool] | None = None) -> Iterator[tuple[Record, dict[str, Any] | None]]:
        """(record, opened data) for every record; opened data is the plaintext for an
        encrypted event (only for events ``want`` accepts, when given), the data as stored
        for a clear one, None for the log's own."""
        opener = RecordOpener(self.identities)
        opener.begin(seal_segment or path.name)
        with path.open("rb") as f:
            for line in f:
                try:
                    rec = parse_record(line)
                except RecordError as exc:
                    raise OpenError(path.name, -1, f"unreadable record: {exc}") from None
                yield rec, opener.open(rec, decrypt=want is None or want(rec))


def seal_segment_name(path: Path) -> str | None:
    """The ``segment`` named by the segment's seal (its last line), if sealed."""
    last = b""
    with path.open("rb") as f:
        for line in f:
            last = line
    try:
        rec = parse_record(last)
    except RecordError:
        return None
    if rec.kind == Kind.SEAL.value and isinstance(rec.data.get("segment"), str):
        return str(rec.data["segment"])
    return None


# ---------------------------------------------------------------- selective disclosure

def disclose(paths: Iterable[Path], seq: int, identities: list[pyrage.x25519.Identity]) -> dict[str, Any]:
    """The record at ``seq`` and its record key k(seq), from the segments ``paths``."""
    reader = SegmentReader(identities)
    for path in paths:
        for rec, opened in reader.records(path, seal_segment_name(path), want=lambda r: r.seq == seq):
            if rec.seq != seq:
                continue
            enc = scheme.enc_member(rec.data) if rec.kind == Kind.EVENT.value else None
            if enc is None:
                raise PipelineError(f"seq {seq} is not an encrypted event (kind {rec.kind}): nothing to disclose")
            return {"record": rec.line.decode(), "segment": _segment_of(path, rec), "record_key": _record_key(
                path, rec, identities), "event": opened}
    raise PipelineError(f"seq {seq} is in none of the segments read")


def _segment_of(path: Path, rec: Record) -> str:
    return seal_segment_name(path) or path.name.removesuffix(".zst")


def _record_key(path: Path, rec: Record, identities: list[pyrage.x25519.Identity]) -> str:
    enc = scheme.enc_member(rec.data)
    assert enc is not None
    key_seq = enc["key_seq"]
    with path.open("rb") as f:
        for line in f:
            key_rec = parse_record(line)
            if key_rec.seq == key_seq and key_rec.kind == Kind.KEY.value:
                seed = unwrap_seed(key_rec.data, identities, where=f"{path.name} seq {key_seq}")
                return scheme.record_key(scheme.chain_key_at(seed, key_seq, rec.seq)).hex()
    raise PipelineError(f"the key record of seq {rec.seq} (seq {key_seq}) is not in {path.name}")


def open_disclosed(record_line: str, segment: str, record_key_hex: str) -> dict[str, Any]:
    """The event a disclosure opens: the record line, the segment it is in and k(seq).
    Raises OpenError when the key does not open this record at this position."""
    rec = parse_record((record_line if record_line.endswith("\n") else record_line + "\n").encode())
    enc = scheme.enc_member(rec.data)
    if rec.kind != Kind.EVENT.value or enc is None or not isinstance(enc.get("key_seq"), int):
        raise OpenError(segment, rec.seq, "the disclosed record is not an encrypted event")
    try:
        rkey = bytes.fromhex(record_key_hex)
        ct = scheme.unb64(enc.get("ct"), "ct")
        plain = scheme.open_payload(rkey, ct, scheme.aad(rec.stream, segment, rec.seq, enc["key_seq"]))
        data = orjson.loads(plain)
    except (scheme.PayloadError, ValueError) as exc:
        raise OpenError(segment, rec.seq, str(exc)) from None
    if not isinstance(data, dict):
        raise OpenError(segment, rec.seq, "the plaintext is not a JSON object")
    return data
