"""file:// backend for development, tests and air-gapped copies.

Layout under the root directory::

    <root>/<prefix>/<stream>/<segment>[.zst]        the object, create-only, immutable attribute
    <root>/.meta/<key>.json                          its metadata (same keys as S3/Azure)
    <root>/.holds/<key>                              present while a legal hold is on

Create-only: the body is written to a temporary file, fsynced, then hard-linked to its
final name (``link`` fails with EEXIST instead of replacing, unlike ``rename``).  The
immutable attribute (``chattr +i``) is the only WORM this backend has; capabilities say
``worm_enforced`` only when setting it really works here, and note that root with
CAP_LINUX_IMMUTABLE can clear it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from pipeline.cold.base import (
    Capabilities,
    ColdSettings,
    ObjectInfo,
    ObjectStat,
    ObjectVersion,
    ReadStream,
    VersionsUnavailable,
)
from pipeline.cold.codec import CHUNK, PreparedBody
from pipeline.cold.errors import (
    ColdConfigError,
    ColdRequestError,
    ObjectNotFoundError,
)
from pipeline.cold.tier import ColdTier, NewObject
from pipeline.format import attr
from pipeline.format.files import atomic_write, fsync_dir
from pipeline.format.layout import COLD_HOLD_DIR, COLD_META_DIR

META_DIR = COLD_META_DIR  # names kept for old imports; the layout owns them
HOLD_DIR = COLD_HOLD_DIR


class FileStore(ColdTier):
    """The directory primitives; the policy (fail closed, create-only, copy-then-verify) is
    ColdTier's."""

    backend = "file"

    def __init__(self, root: str | os.PathLike[str], prefix: str, settings: ColdSettings) -> None:
        super().__init__(prefix, settings)
        self.root = Path(root)
        self.endpoint = f"file://{self.root}"
        # Store operations (a write, a stat, a read) stand in for requests: one each.
        self._ops = 0
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ColdConfigError(f"cannot create cold directory ({exc.strerror})", endpoint=self.endpoint) from exc

    def __repr__(self) -> str:
        return f"FileStore(root={str(self.root)!r}, prefix={self.prefix!r})"

    def close(self) -> None:
        pass

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/") or key.split("/", 1)[0] in (META_DIR, HOLD_DIR):
            raise ColdRequestError(f"invalid object key {key!r}", endpoint=self.endpoint)
        return self.root / key

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / f"{key}.json"

    def _hold_path(self, key: str) -> Path:
        return self.root / HOLD_DIR / key

    def requests_sent(self) -> int:
        return self._ops

    def read_capabilities(self) -> Capabilities:
        enforced = self._probe_immutable()
        notes = ["immutable file attribute set on every stored file; root with CAP_LINUX_IMMUTABLE can "
                 "clear it, so this is tamper-resistance, not compliance-grade WORM"]
        if not enforced:
            notes = ["WORM not enforced: the immutable attribute cannot be set here (needs "
                     "CAP_LINUX_IMMUTABLE and a filesystem with inode flags)"]
        return Capabilities("file", self.endpoint, enforced, True, False, tuple(notes))

    def refusal(self, caps: Capabilities) -> tuple[str, str | None]:
        return "refusing to store without the immutable attribute (fail closed)", None

    def _probe_immutable(self) -> bool:
        fd, probe = tempfile.mkstemp(prefix=".worm-probe-", dir=self.root)
        os.close(fd)
        try:
            attr.protect_immutable(probe, policy="require")
            ok = attr.is_immutable(probe)
            attr.clear_protection(probe)
            return ok
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe)

    # ---- put ---------------------------------------------------------------------------------

    def create_object(self, obj: NewObject) -> bool:
        self._ops += 1
        sidecar = {"metadata": obj.metadata, "retain_until": obj.retain_until.isoformat()}
        return self._create(self._path(obj.key), obj.key, obj.body, sidecar, obj.segment, obj.legal_hold)

    def _create(self, dest: Path, key: str, body: PreparedBody, sidecar: Mapping[str, object], segment: str,
                legal_hold: bool) -> bool:
        if dest.exists():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        meta_path = self._meta_path(key)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        # The metadata goes first (replaceable while the object does not exist), then the
        # object is linked into place: the link is the commit point and never replaces.
        atomic_write(meta_path, json.dumps(sidecar, sort_keys=True).encode(), mode=0o600)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, body.open() as inp:
                shutil.copyfileobj(inp, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, dest)
            except FileExistsError:
                return False
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                return False
            raise ColdRequestError(f"cannot write the cold copy ({exc.strerror})", segment=segment,
                                   endpoint=self.endpoint, action="check free space and permissions of the "
                                   "cold directory; the hot copy is untouched") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        fsync_dir(dest.parent)
        for p in (dest, meta_path):
            # capabilities() already said whether this works; verify reports the outcome
            with contextlib.suppress(OSError):
                attr.protect_immutable(p, policy="require")
        if legal_hold:
            self.set_legal_hold(key, True)
        return True


    # ---- read side ---------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectStat:
        self._ops += 1
        path = self._path(key)
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise ObjectNotFoundError("object not found", segment=key, endpoint=self.endpoint) from exc
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                sha.update(chunk)
        meta: dict[str, str] = {}
        retain: dt.datetime | None = None
        try:
            side = json.loads(self._meta_path(key).read_bytes())
            meta = {str(k): str(v) for k, v in side.get("metadata", {}).items()}
            retain = dt.datetime.fromisoformat(side["retain_until"]) if side.get("retain_until") else None
        except (FileNotFoundError, ValueError, KeyError):
            pass
        immutable = attr.is_immutable(path)
        return ObjectStat(
            key=key, size=st.st_size, sha256=sha.hexdigest(),
            lock_mode="IMMUTABLE" if immutable else None, retain_until=retain,
            legal_hold=self._hold_path(key).exists(), metadata=meta,
            storage_class=None, last_modified=dt.datetime.fromtimestamp(st.st_mtime, dt.UTC),
        )

    def open(self, key: str) -> ReadStream:
        self._ops += 1
        try:
            return open(self._path(key), "rb")  # the caller closes the stream
        except FileNotFoundError as exc:
            raise ObjectNotFoundError("object not found", segment=key, endpoint=self.endpoint) from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.full_prefix(prefix)
        out: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d not in (META_DIR, HOLD_DIR)]
                rel_dir = ""
            for name in filenames:
                if name.startswith("."):
                    continue  # temporaries and probes
                key = f"{rel_dir}/{name}" if rel_dir else name
                if key.startswith(base):
                    st = os.stat(os.path.join(dirpath, name))
                    out.append(ObjectInfo(key, st.st_size, dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)))
        out.sort(key=lambda o: o.key)  # the same lexicographic order S3 listings have
        yield from out

    def list_versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """A directory keeps no versions and no delete markers, so there is no history to
        list: say so (the report warns ``versions-unchecked``) rather than present each file
        as a checked single version.  A deleted or replaced file is caught on file:// by the
        ledger, the seq gaps, the witnesses and the metadata's stored SHA-256 instead."""
        raise VersionsUnavailable(f"{self.endpoint} is a directory: it keeps no object versions, so a deleted or "
                                  "replaced file leaves no history to list")
        yield  # pragma: no cover  (makes this a generator, like the other backends' listings)

    def set_legal_hold(self, key: str, on: bool) -> None:
        if not self._path(key).exists():
            raise ObjectNotFoundError("object not found", segment=key, endpoint=self.endpoint)
        hold = self._hold_path(key)
        if on:
            hold.parent.mkdir(parents=True, exist_ok=True)
            hold.touch()
        else:
            hold.unlink(missing_ok=True)
