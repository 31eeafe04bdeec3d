"""Reading a stream back from cold storage, checked, for ``pipeline export`` and ``pipeline restore``.

``stream_objects`` lists a stream's objects in stream order; ``fetch_checked`` downloads one,
decompresses it (bounded by the metadata's size) and checks both layers against the
object's metadata: the stored bytes (service SHA-256 and ``worm_stored_sha256``) and the
segment they decode to (size, SHA-256, then the seal's Merkle root after the chain scan).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.cold.base import ColdStore, ObjectStat
from pipeline.errors import PipelineError
from pipeline.findings import Finding
from pipeline.format.layout import decode_metadata, segment_of_key, stream_prefix
from pipeline.format.segment import parse_segment_name
from pipeline.verify.chain import SegmentScan
from pipeline.verify.coldread import Fetched, fetch_segment


class ReadbackError(PipelineError, RuntimeError):
    """Reading back cannot start or continue (not a hot tier, no objects, archived objects,
    duplicates): nothing was concluded about the data (exit 2)."""


@dataclass
class ColdSegment:
    name: str
    key: str
    stat: ObjectStat
    stream: str = ""

    @property
    def meta(self) -> dict[str, str]:
        return decode_metadata(self.stat.metadata)


@dataclass
class Checked:
    fetched: Fetched
    problems: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def list_streams_in(store: ColdStore) -> list[str]:
    out: set[str] = set()
    for info in store.list(""):
        parsed = segment_of_key(info.key)
        if parsed is not None:
            out.add(parsed[0])
    return sorted(out)


def stream_objects(store: ColdStore, stream: str) -> list[ColdSegment]:
    """Every object of ``stream`` in (first seq, attempt) order, one HEAD each."""
    names: dict[str, list[str]] = {}
    for info in store.list(stream_prefix("", stream)):
        parsed = segment_of_key(info.key)
        if parsed is None or parsed[0] != stream:
            continue
        names.setdefault(parsed[1], []).append(info.key)
    dup = {n: ks for n, ks in names.items() if len(ks) > 1}
    if dup:
        n, ks = next(iter(dup.items()))
        raise ReadbackError(f"segment {n} is stored more than once ({', '.join(ks)}); run pipeline verify-tier")
    ordered = sorted(names, key=lambda n: parse_segment_name(n) or (0, 0))
    segs = [ColdSegment(n, names[n][0], store.stat(names[n][0]), stream) for n in ordered]
    archived = [s for s in segs if s.stat.archived]
    if archived:
        raise ReadbackError(
            f"{len(archived)} object(s) are in an archive storage class ({archived[0].stat.storage_class}) and must "
            f"be thawed first, e.g. `aws s3api restore-object --bucket BUCKET --key {archived[0].key} "
            "--restore-request Days=7`; wait for the restore to complete, then run this again. First: "
            + ", ".join(s.key for s in archived[:5]))
    return segs


def fetch_checked(store: ColdStore, seg: ColdSegment, dest: Path) -> Checked:
    fr = fetch_segment(store, seg.stat, dest)
    out = Checked(fr)
    meta = seg.meta

    def problem(code: str, message: str) -> None:
        out.problems.append(Finding.of(code, seg.stream, seg.name, message, where=seg.key))

    want = meta.get("stored_sha256")
    if not want:
        problem("metadata-invalid", f"{seg.key} carries no worm_stored_sha256 metadata")
    elif fr.stored_sha256 != want:
        problem("object-replaced", f"{seg.key}: the stored bytes hash to {fr.stored_sha256[:16]}…, the upload "
                f"recorded {want[:16]}…")
    if seg.stat.sha256 is not None and want and seg.stat.sha256 not in (want, meta.get("stored_sha256_composite")):
        problem("object-replaced", f"{seg.key}: the service's SHA-256 differs from the upload's")
    if fr.frame_problem is not None:
        problem("frame-invalid", f"{seg.key}: {fr.frame_problem}")
    if not fr.ok:
        problem("content-invalid", f"{seg.key}: {fr.problem}: {fr.detail}")
        return out
    if fr.sha256 != meta.get("sha256") or str(fr.size) != meta.get("size"):
        problem("content-mismatch", f"{seg.key} decompresses to {fr.size} bytes with SHA-256 {fr.sha256[:16]}…, "
                f"the metadata says {meta.get('size')} bytes, {str(meta.get('sha256'))[:16]}…")
    return out


def merkle_problem(seg: ColdSegment, scan: SegmentScan) -> Finding | None:
    want = seg.meta.get("merkle_root")
    got = (scan.seal or {}).get("merkle_root", scan.merkle_root)
    if want and got != want:
        return Finding.of("content-mismatch", seg.stream, seg.name, f"{seg.key}: Merkle root {str(got)[:16]}… "
                          f"differs from the metadata's {want[:16]}…", scan.first_seq, seg.key)
    return None
