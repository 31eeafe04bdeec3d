"""Signed notes, checkpoints and cosignatures, byte-compatible with Go's golang.org/x/mod/sumdb/note.

Specifications implemented (docs/PROOFS.md gives the exact bytes and a worked example):

- C2SP signed-note (c2sp.org/signed-note): text ending in ``\\n``, a blank line, then
  signature lines ``— <name> base64(keyID[4] || signature)\\n`` (U+2014 em dash).
  Key ID = ``SHA-256(name || 0x0A || alg || public key)[:4]`` big-endian; alg 0x01 is plain
  Ed25519 over the note text.
- Verifier key strings ``name+<8 hex key ID>+base64(alg || pubkey)`` and signer key strings
  ``PRIVATE+KEY+name+<8 hex key ID>+base64(alg || 32-byte seed)``, as note.NewVerifier /
  note.NewSigner parse them.
- C2SP tlog-checkpoint (c2sp.org/tlog-checkpoint): origin line, decimal tree size, base64
  root hash, optional extension lines, each ``\\n``-terminated.
- C2SP tlog-cosignature (c2sp.org/tlog-cosignature) Ed25519 variant, alg 0x04: signature is
  ``u64 big-endian timestamp || Ed25519 sig`` over
  ``"cosignature/v1\\ntime <t>\\n" || checkpoint body``.

Private keys are never logged or put in exception messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
import struct
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pipeline.errors import PipelineError
from pipeline.format.files import atomic_write, fsync_dir
from pipeline.format.layout import CHECKPOINT_DIR, CHECKPOINT_HISTORY, CHECKPOINT_LATEST

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
SIG_PREFIX = "— "  # U+2014 EM DASH, U+0020
MAX_SIGNATURES = 100  # note.Open refuses more; the spec requires accepting at least 16
ENV_SIGNING_KEY = "PIPELINE_SIGNING_KEY"


class NoteError(PipelineError, ValueError):
    """A note, key or checkpoint is malformed or does not verify."""


def _valid_name(name: str) -> bool:
    # signed-note §Format: non-empty, no Unicode spaces, no '+'
    return bool(name) and "+" not in name and not any(c.isspace() or unicodedata.category(c) == "Zs" for c in name)


def key_id(name: str, alg: int, public_key: bytes) -> int:
    """signed-note §Signatures: SHA-256(name || 0x0A || alg || public key)[:4], big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()
    return int(struct.unpack(">I", digest[:4])[0])


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise NoteError(f"{what} is not valid base64") from exc


@dataclass(frozen=True)
class Verifier:
    """A public key that can check signatures on notes (alg 0x01) or cosignatures (alg 0x04)."""

    name: str
    alg: int
    public_key: bytes

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.alg, self.public_key)

    def to_string(self) -> str:
        enc = base64.b64encode(bytes([self.alg]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{enc}"

    @classmethod
    def from_string(cls, vkey: str) -> Verifier:
        """Parse ``name+hash+base64`` (note.NewVerifier's format)."""
        vkey = vkey.strip()
        parts = vkey.split("+", 2)  # base64 may contain "+": split off name and hash only
        if len(parts) != 3:
            raise NoteError("verifier key must look like name+<8 hex digits>+<base64>")
        name, hash16, b64 = parts
        if not _valid_name(name) or len(hash16) != 8:
            raise NoteError("verifier key has an invalid name or key hash")
        try:
            claimed = int(hash16, 16)
        except ValueError as exc:
            raise NoteError("verifier key hash is not hexadecimal") from exc
        raw = _b64decode(b64, "verifier key")
        if len(raw) != 33 or raw[0] not in (ALG_ED25519, ALG_COSIGNATURE_V1):
            raise NoteError("verifier key is not an Ed25519 (0x01) or cosignature (0x04) key")
        v = cls(name, raw[0], raw[1:])
        if v.key_id != claimed:
            raise NoteError(f"verifier key hash {hash16} does not match the key for {name!r}")
        return v

    def _ed(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_key)

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """Check a plain Ed25519 note signature (alg 0x01)."""
        if self.alg != ALG_ED25519:
            return False
        try:
            self._ed().verify(sig, msg)
        except InvalidSignature:
            return False
        return True

    def verify_cosignature(self, body: bytes, sig: bytes) -> int | None:
        """Check a tlog-cosignature/v1 (alg 0x04); returns its timestamp or None."""
        if self.alg != ALG_COSIGNATURE_V1 or len(sig) != 8 + 64:
            return None
        (ts,) = struct.unpack(">Q", sig[:8])
        if ts >= 2**63:
            return None
        try:
            self._ed().verify(sig[8:], cosignature_message(body, ts))
        except InvalidSignature:
            return None
        return int(ts)


@dataclass(frozen=True, repr=False)
class Signer:
    """A private Ed25519 key with its name.  ``repr`` never shows the key."""

    name: str
    alg: int
    _seed: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, key_id={self.key_id:08x})"

    @property
    def public_key(self) -> bytes:
        return (
            Ed25519PrivateKey.from_private_bytes(self._seed)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
        )

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.alg, self.public_key)

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.alg, self.public_key)

    @classmethod
    def generate(cls, name: str, *, cosigner: bool = False) -> Signer:
        if not _valid_name(name):
            raise NoteError(f"invalid key name {name!r}: it must be non-empty, without spaces or '+'")
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        return cls(name, ALG_COSIGNATURE_V1 if cosigner else ALG_ED25519, seed)

    def to_string(self) -> str:
        """``PRIVATE+KEY+name+hash+base64(alg || seed)`` (note.NewSigner's format for alg 0x01)."""
        enc = base64.b64encode(bytes([self.alg]) + self._seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{enc}"

    @classmethod
    def from_string(cls, skey: str) -> Signer:
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
            raise NoteError("signer key must look like PRIVATE+KEY+name+<8 hex digits>+<base64>")
        name, hash16, b64 = parts[2], parts[3], parts[4]
        if not _valid_name(name) or len(hash16) != 8:
            raise NoteError("signer key has an invalid name or key hash")
        try:
            raw = base64.b64decode(b64.encode("ascii"), validate=True)
            claimed = int(hash16, 16)
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            # deliberately no detail: the text is secret
            raise NoteError("signer key is not valid base64/hex") from exc
        if len(raw) != 33 or raw[0] not in (ALG_ED25519, ALG_COSIGNATURE_V1):
            raise NoteError("signer key is not an Ed25519 (0x01) or cosignature (0x04) key")
        s = cls(name, raw[0], raw[1:])
        if s.key_id != claimed:
            raise NoteError(f"signer key hash {hash16} does not match the key for {name!r}")
        return s

    def sign(self, msg: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self._seed).sign(msg)

    def signature_line(self, text: bytes) -> str:
        """A note signature line for ``text`` (alg 0x01)."""
        if self.alg != ALG_ED25519:
            raise NoteError("a cosigner key signs with cosignature_line, not signature_line")
        sig = struct.pack(">I", self.key_id) + self.sign(text)
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(sig).decode()}\n"

    def cosignature_line(self, body: bytes, timestamp: int | None = None) -> str:
        """A tlog-cosignature/v1 line: sig = u64be(time) || Ed25519(cosignature_message)."""
        if self.alg != ALG_COSIGNATURE_V1:
            raise NoteError("only a cosigner key (alg 0x04) makes cosignatures")
        ts = int(time.time()) if timestamp is None else timestamp
        sig = struct.pack(">IQ", self.key_id, ts) + self.sign(cosignature_message(body, ts))
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(sig).decode()}\n"


def cosignature_message(body: bytes, timestamp: int) -> bytes:
    """tlog-cosignature §Ed25519 signed message."""
    return b"cosignature/v1\ntime %d\n" % timestamp + body


# ---------------------------------------------------------------------- key files


def write_key_pair(signer: Signer, out_dir: Path) -> tuple[Path, Path]:
    """Write ``NAME.key`` (mode 0600, created exclusively) and ``NAME.pub``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fname = signer.name.replace("/", "_")
    key_path = out_dir / f"{fname}.key"
    pub_path = out_dir / f"{fname}.pub"
    # O_EXCL: never overwrite an existing key; 0600 from creation, not chmod afterwards
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # umask cannot widen 0600, but be explicit
        os.write(fd, (signer.to_string() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    pub_path.write_text(signer.verifier().to_string() + "\n")
    return key_path, pub_path


# The kubelet writes a Secret volume through its "atomic writer": every file in the mount
# is a symlink through ``..data`` to a timestamped directory ``..YYYY_MM_DD_...``.  With a
# pod-level fsGroup it also adds the group read bit to every file (kubernetes#57923), so
# mode 0400 becomes 0440 and no defaultMode can avoid it.  Access to such a file is
# decided by which containers mount the volume, not by its mode bits.
KUBELET_DATA_LINK = "..data"


def _kubelet_projected(path: Path, st: os.stat_result) -> bool:
    """True when ``path`` is a file of a Kubernetes Secret/projected volume: reached through
    the kubelet's ``..data`` symlink in its own directory, owned by root, on a read-only
    mount.  An attacker able to fake this layout could already write the key itself."""
    link = path.parent / KUBELET_DATA_LINK
    if not link.is_symlink() or st.st_uid != 0:
        return False
    try:
        real = path.resolve(strict=True)
        data_dir = link.resolve(strict=True)
        ro = bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False
    return ro and real.parent == data_dir and data_dir.parent == path.parent.resolve()


def check_key_file_mode(path: Path, st: os.stat_result) -> None:
    """Refuse a key file that another account may read or any account but its owner may write.

    Allowed: no group or other bits at all; or group read only (no write, no execute, nothing
    for others) on a file the kubelet projected from a Secret (``_kubelet_projected``).
    """
    mode = stat.S_IMODE(st.st_mode)
    if not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return
    if mode & (stat.S_IWGRP | stat.S_IXGRP | stat.S_IRWXO) == 0 and _kubelet_projected(path, st):
        return
    raise NoteError(f"key file {path} is accessible by group or others (mode {mode:o}); chmod 600 it, "
                    "or mount it from a Kubernetes Secret volume into the sidecar container only")


def load_signer(path: Path | str | None = None, *, env: str = ENV_SIGNING_KEY) -> Signer:
    """Load a signer from ``path`` or, when none is given, from environment variable ``env``.

    A key file readable by group or others is refused (``check_key_file_mode``): a signing
    key that leaked to another account no longer proves anything.  Every failure is a
    one-line NoteError that names the file or variable and never the key.
    """
    if path is None:
        value = os.environ.get(env)
        if not value:
            raise NoteError(f"no signing key: pass a key file or set {env}")
        try:
            return Signer.from_string(value.strip())
        except NoteError as exc:
            raise NoteError(f"{env}: {exc}") from None
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise NoteError(f"key file {p} is not a regular file")
        check_key_file_mode(p, st)
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise NoteError(f"cannot read key file {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise NoteError(f"key file {p} is not UTF-8 text") from None
    try:
        return Signer.from_string(text.strip())
    except NoteError as exc:
        raise NoteError(f"key file {p}: {exc}") from None


def configured_signer(key_file: Path | str | None, *, env: str = ENV_SIGNING_KEY) -> Signer | None:
    """The sidecar's checkpoint signer: ``[signing] key_file`` or the environment variable
    ``env`` (for a Kubernetes ``secretKeyRef``), None when neither is set.  Both set is
    refused: which key signs must never be a guess."""
    in_env = bool(os.environ.get(env))
    if key_file is not None and in_env:
        raise NoteError(f"signing key given twice: [signing] key_file and {env}; set only one")
    if key_file is None and not in_env:
        return None
    return load_signer(key_file, env=env)


def load_verifiers(paths: Iterable[Path | str]) -> list[Verifier]:
    out: list[Verifier] = []
    for p in paths:
        for line in Path(p).read_text().splitlines():
            if line.strip():
                out.append(Verifier.from_string(line))
    return out


# ---------------------------------------------------------------------- notes


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: int
    sig: bytes  # after the 4-byte key ID
    line: str

    @property
    def b64(self) -> str:
        return base64.b64encode(struct.pack(">I", self.key_id) + self.sig).decode()


@dataclass
class OpenedNote:
    text: bytes
    verified: list[NoteSignature]
    cosigned: list[tuple[NoteSignature, int]]  # (signature, timestamp)
    unverified: list[NoteSignature]


def split_note(msg: bytes) -> tuple[bytes, list[NoteSignature]]:
    """Split a note into its text and signatures (signed-note §Format), without verifying."""
    try:
        decoded = msg.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError("note is not valid UTF-8") from exc
    if any(ord(c) < 0x20 and c != "\n" for c in decoded):
        raise NoteError("note contains control characters other than newline")
    split = msg.rfind(b"\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, sig_block = msg[: split + 1], msg[split + 2 :]
    if not sig_block or not sig_block.endswith(b"\n"):
        raise NoteError("note has no signature lines, or they do not end in a newline")
    sigs: list[NoteSignature] = []
    for raw_line in sig_block.decode().split("\n")[:-1]:
        if not raw_line.startswith(SIG_PREFIX):
            raise NoteError("signature line does not start with an em dash and a space")
        name, _, b64 = raw_line[len(SIG_PREFIX) :].partition(" ")
        data = _b64decode(b64, "signature") if b64 else b""
        if not _valid_name(name) or len(data) < 5:
            raise NoteError("malformed signature line")
        sigs.append(NoteSignature(name, int(struct.unpack(">I", data[:4])[0]), data[4:], raw_line + "\n"))
        if len(sigs) > MAX_SIGNATURES:
            raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    return text, sigs


def sign_note(text: bytes, signers: Sequence[Signer]) -> bytes:
    if not text.endswith(b"\n"):
        raise NoteError("note text must end with a newline")
    return text + b"\n" + "".join(s.signature_line(text) for s in signers).encode()


def open_note(msg: bytes, verifiers: Sequence[Verifier], *, require: bool = True) -> OpenedNote:
    """Verify a note as note.Open does: unknown keys ignored, a bad known signature rejects.

    Cosigner verifiers (alg 0x04) check tlog-cosignature lines; at least one plain
    signature (alg 0x01) from a known key must verify when ``require`` is set.
    """
    text, sigs = split_note(msg)
    known = {(v.name, v.key_id): v for v in verifiers}
    out = OpenedNote(text, [], [], [])
    seen: set[tuple[str, int]] = set()
    for s in sigs:
        v = known.get((s.name, s.key_id))
        if v is None:
            out.unverified.append(s)
            continue
        if (s.name, s.key_id) in seen:
            continue
        seen.add((s.name, s.key_id))
        if v.alg == ALG_COSIGNATURE_V1:
            ts = v.verify_cosignature(text, s.sig)
            if ts is None:
                raise NoteError(f"cosignature by {s.name} ({s.key_id:08x}) does not verify")
            out.cosigned.append((s, ts))
        elif v.verify(text, s.sig):
            out.verified.append(s)
        else:
            raise NoteError(f"signature by {s.name} ({s.key_id:08x}) does not verify")
    if require and not out.verified:
        raise NoteError("note is not signed by any trusted log key")
    return out


def add_signature_lines(msg: bytes, lines: Iterable[str]) -> bytes:
    """Append signature lines (e.g. a witness's cosignatures), dropping exact duplicates."""
    _, sigs = split_note(msg)
    have = {s.line for s in sigs}
    extra = "".join(line for line in lines if line not in have)
    return msg + extra.encode()


# ---------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint body: origin, tree size, root hash, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> bytes:
        if not self.origin or "\n" in self.origin:
            raise NoteError("checkpoint origin must be one non-empty line")
        if len(self.root) != 32:
            raise NoteError("checkpoint root must be 32 bytes")
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def parse(cls, text: bytes) -> Checkpoint:
        """Parse a checkpoint body (the note text)."""
        try:
            lines = text.decode("utf-8").split("\n")
        except UnicodeDecodeError as exc:
            raise NoteError("checkpoint is not UTF-8") from exc
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("checkpoint needs origin, size and root lines, each newline-terminated")
        origin, size_s, root_b64 = lines[0], lines[1], lines[2]
        extensions = tuple(lines[3:-1])
        if not origin:
            raise NoteError("checkpoint origin is empty")
        if not size_s.isdigit() or (len(size_s) > 1 and size_s[0] == "0") or not size_s.isascii():
            raise NoteError("checkpoint size is not a decimal number without leading zeros")
        size = int(size_s)
        if size >= 2**63:
            raise NoteError("checkpoint size is too large")
        root = _b64decode(root_b64, "checkpoint root")
        if len(root) != 32:
            raise NoteError("checkpoint root is not a 32-byte hash")
        if any(not e for e in extensions):
            raise NoteError("checkpoint extension lines must not be empty")
        return cls(origin, size, root, extensions)

    def sign(self, signers: Sequence[Signer]) -> bytes:
        return sign_note(self.body(), signers)


def open_checkpoint(
    msg: bytes, verifiers: Sequence[Verifier], *, origin: str | None = None
) -> tuple[Checkpoint, OpenedNote]:
    """Verify a signed checkpoint note and parse it; optionally require an origin."""
    opened = open_note(msg, verifiers)
    cp = Checkpoint.parse(opened.text)
    if origin is not None and cp.origin != origin:
        raise NoteError(f"checkpoint origin is {cp.origin!r}, expected {origin!r}")
    return cp, opened


class CheckpointStore:
    """A stream's stored checkpoints, ``<stream_dir>/checkpoints/``:

    - ``latest.note``: the newest signed checkpoint (with any witness cosignatures), replaced
      atomically (``pipeline.format.files.atomic_write``).
    - ``history.jsonl``: one line per checkpoint, appended and fsynced:
      ``{"size":N,"root":"<hex>","time":<unix s>,"note":"<note text>"}``.  ``size`` comes first
      so a checkpoint of one exact size is found by a byte search, without parsing the file.
    """

    def __init__(self, stream_dir: Path) -> None:
        self.dir = Path(stream_dir) / CHECKPOINT_DIR

    def save(self, checkpoint: Checkpoint, note: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        entry = json.dumps({"size": checkpoint.size, "root": checkpoint.root.hex(), "time": int(time.time()),
                            "note": note.decode()}, separators=(",", ":"))
        new = not (self.dir / CHECKPOINT_HISTORY).exists()
        fd = os.open(self.dir / CHECKPOINT_HISTORY, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, entry.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            fsync_dir(self.dir)
        atomic_write(self.dir / CHECKPOINT_LATEST, note, mode=0o644)

    def update_latest(self, note: bytes) -> None:
        """Replace latest.note with the same checkpoint carrying more (co)signatures."""
        atomic_write(self.dir / CHECKPOINT_LATEST, note, mode=0o644)

    def latest(self) -> bytes | None:
        try:
            return (self.dir / CHECKPOINT_LATEST).read_bytes()
        except FileNotFoundError:
            return None

    def by_size(self, size: int) -> bytes | None:
        """The last stored checkpoint of exactly ``size`` leaves, or None."""
        try:
            data = (self.dir / CHECKPOINT_HISTORY).read_bytes()
        except FileNotFoundError:
            return None
        i = data.rfind(b'{"size":%d,' % size)
        if i < 0:
            return None
        end = data.find(b"\n", i)
        entry = json.loads(data[i : end if end >= 0 else len(data)])
        note: str = entry["note"]
        return note.encode()

    def sizes(self) -> list[int]:
        try:
            lines = (self.dir / CHECKPOINT_HISTORY).read_bytes().splitlines()
        except FileNotFoundError:
            return []
        return [int(json.loads(ln)["size"]) for ln in lines if ln.strip()]
