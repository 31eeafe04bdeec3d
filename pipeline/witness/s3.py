"""A witness kept as create-only objects under an S3 prefix, with credentials the host lacks for deletes.

Key layout: ``<prefix>/<escaped origin>/<size:020d>`` holding the checkpoint note.  Every
object is written with ``IfNoneMatch='*'`` (a create-only conditional put), so the same
credentials cannot overwrite a witnessed checkpoint; with an Object Lock bucket they
cannot delete it either.  Zero-padded sizes make the lexicographically last key the
latest checkpoint.  Self-contained on purpose: it needs nothing from pipeline/cold/.
"""

from __future__ import annotations

from typing import Any

from pipeline.format.checkpoint import Checkpoint, NoteError, split_note
from pipeline.format.layout import witness_object_key, witness_origin_prefix
from pipeline.witness import ConsistencyFn, WitnessError
from pipeline.witness._common import check_extends


def _error_code(exc: Exception) -> str:
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        err = resp.get("Error", {})
        code = err.get("Code") if isinstance(err, dict) else None
        status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return str(code or status or "")
    return ""


class S3Witness:
    def __init__(self, client: Any, bucket: str, prefix: str = "witness") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.name = f"s3://{bucket}/{self.prefix}"

    def _dir(self, origin: str) -> str:
        return witness_origin_prefix(self.prefix, origin)

    def _keys(self, origin: str) -> list[str]:
        keys: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._dir(origin)}
        while True:
            resp = self.client.list_objects_v2(**kwargs)
            keys.extend(o["Key"] for o in resp.get("Contents", []))
            if not resp.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]
        return sorted(keys)

    def _get(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def latest(self, origin: str) -> tuple[Checkpoint, bytes] | None:
        keys = self._keys(origin)
        if not keys:
            return None
        note = self._get(keys[-1])
        try:
            return Checkpoint.parse(split_note(note)[0]), note
        except NoteError as exc:
            raise WitnessError(f"{self.name}: stored checkpoint {keys[-1]} is unreadable: {exc}") from exc

    def add_checkpoint(self, note: bytes, checkpoint: Checkpoint, prove: ConsistencyFn) -> list[str]:
        prev = self.latest(checkpoint.origin)
        check_extends(prev[0] if prev else None, checkpoint, prove, self.name)
        key = witness_object_key(self.prefix, checkpoint.origin, checkpoint.size)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=note, IfNoneMatch="*",
                                   ContentType="text/plain; charset=utf-8")
        except Exception as exc:
            if _error_code(exc) not in ("PreconditionFailed", "412"):
                raise WitnessError(f"{self.name}: cannot store checkpoint {checkpoint.size}: {exc}") from exc
            existing = Checkpoint.parse(split_note(self._get(key))[0])
            if existing.root != checkpoint.root:
                raise WitnessError(
                    f"{self.name}: FORK: {key} already holds a different root for size {checkpoint.size}",
                    status=409, fork=True, size=checkpoint.size,
                ) from exc
        return []

    def checkpoints(self, origin: str) -> list[bytes]:
        return [self._get(k) for k in self._keys(origin)]
