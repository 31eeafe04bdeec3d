"""Verify, then decrypt: what ``pipeline decrypt`` and ``pipeline disclose`` run.

Integrity is checked before a single byte is decrypted, with the same code as ``pipeline
verify`` (hot tier) or per segment file plus the links between them (exported files), so a
decrypted event is always one the chain and the Merkle tree vouch for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.crypt import scheme
from pipeline.crypt.reader import SegmentReader, load_identities, seal_segment_name
from pipeline.errors import PipelineError
from pipeline.findings import Finding
from pipeline.format.record import Kind
from pipeline.format.segment import list_segments, parse_segment_name
from pipeline.verify.chain import scan_segment, stitch
from pipeline.verify.hot import verify_hot


class NotVerified(PipelineError):
    """Integrity verification found problems: nothing is decrypted."""

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__(f"{len(findings)} finding(s)")
        self.findings = findings


@dataclass(frozen=True)
class Source:
    """Where the segments come from: a hot directory (with an optional stream), or files."""

    hot: Path | None = None
    stream: str | None = None
    files: tuple[Path, ...] = ()


def _order_key(p: Path) -> tuple[int, int]:
    parsed = parse_segment_name(p.name.removesuffix(".zst"))
    if parsed is None:
        raise PipelineError(f"{p}: not a segment file name (seg-<20 digits>[.<attempt>].jsonl); keep the "
                            "names segments are shipped under")
    return parsed


def verified_segments(source: Source) -> list[tuple[str, list[Path]]]:
    """(stream, segment paths in order) once everything verified; NotVerified otherwise."""
    if source.hot is not None:
        reports = verify_hot(source.hot, source.stream)
        findings = [f for r in reports for f in r.findings]
        if findings:
            raise NotVerified(findings)
        return [(r.stream, list_segments(source.hot / r.stream)) for r in reports]
    for p in source.files:
        if p.name.endswith(".zst"):
            raise PipelineError(f"{p}: decompress cold objects first (zstd -d, docs/FORMAT.md §10)")
        if p.is_dir():
            raise PipelineError(f"{p}: a directory, not a segment file (for a hot tier: --hot {p})")
        if not p.is_file():
            raise PipelineError(f"{p}: no such file")
    paths = sorted(source.files, key=_order_key)
    if not paths:
        raise PipelineError("no segment files given")
    scans = [scan_segment(p, file_hash=False) for p in paths]
    findings = [f for s in scans for f in s.findings]
    if not findings:
        first = scans[0]
        stream = _stream_of(paths[0])
        report = stitch(stream, scans, start_seq=first.first_seq or 0, start_hash=first.first_prev)
        findings = report.findings
    if findings:
        raise NotVerified(findings)
    return [(_stream_of(paths[0]), paths)]


def _stream_of(path: Path) -> str:
    with path.open("rb") as f:
        line = f.readline()
    from pipeline.format.record import parse_record

    return parse_record(line).stream


@dataclass
class Filter:
    since: float | None = None
    until: float | None = None
    matches: Callable[[dict[str, Any]], bool] | None = None


def decrypted_events(source: Source, identity_file: str | os.PathLike[str],
                     flt: Filter | None = None, tally: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """Every event of ``source`` (verified first), decrypted, as
    ``{"stream", "seq", "ts", "segment", "data"}``, filtered by ``flt``.  ``tally`` counts
    the events yielded under "encrypted" (opened with the identity) and "clear" (written
    while encryption was off: nothing to open)."""
    from pipeline.format.record import ts_epoch

    identities = load_identities(identity_file)
    flt = flt or Filter()
    reader = SegmentReader(identities)
    def in_range(rec: Any) -> bool:
        if flt.since is None and flt.until is None:
            return True
        t = ts_epoch(rec.ts)
        return not ((flt.since is not None and t < flt.since) or (flt.until is not None and t > flt.until))

    for stream, paths in verified_segments(source):
        for path in paths:
            # events outside the time range are not decrypted: their key records are not
            # unwrapped, so a range wrapped to one identity needs only that identity
            for rec, data in reader.records(path, seal_segment_name(path), want=in_range):
                if rec.kind != Kind.EVENT.value or data is None or not in_range(rec):
                    continue
                if flt.matches is not None and not flt.matches(data):
                    continue
                if tally is not None:
                    kind = "clear" if scheme.enc_member(rec.data) is None else "encrypted"
                    tally[kind] = tally.get(kind, 0) + 1
                yield {"stream": stream, "seq": rec.seq, "ts": rec.ts, "segment": path.name, "data": data}


def segment_paths_for(source: Source) -> list[Path]:
    return [p for _, paths in verified_segments(source) for p in paths]


def disclosure(hot: Path, stream: str, seq: int, identity_file: str | os.PathLike[str], *,
               proof: bool = True) -> dict[str, Any]:
    """One event for a third party: the inclusion proof of record ``seq`` (its ``leaf`` is the
    record line; ``pipeline prove``'s document), the segment it is in, and k(seq), the key
    that opens that record and no other (docs/ENCRYPTION.md, "Selective disclosure")."""
    from pipeline.crypt.reader import disclose
    from pipeline.proofs import ProveError, prove_inclusion

    identities = load_identities(identity_file)
    paths = segment_paths_for(Source(hot=hot, stream=stream))
    found = disclose(paths, seq, identities)
    doc: dict[str, Any] = {}
    if proof:
        try:
            doc = prove_inclusion(hot / stream, seq)
        except ProveError as exc:
            raise PipelineError(f"no inclusion proof for seq {seq}: {exc} (pass --no-proof to disclose without "
                                "one)") from exc
    else:
        import base64

        doc = {"index": seq, "leaf": base64.b64encode(found["record"].encode().rstrip(b"\n")).decode()}
    doc["disclosure"] = {"v": 1, "stream": stream, "segment": found["segment"], "record_key": found["record_key"]}
    return doc


def open_disclosure(doc: dict[str, Any], verifiers: list[Any] | None) -> tuple[dict[str, Any], str | None]:
    """(the event, why the proof fails or None).  With ``verifiers`` the inclusion proof and its
    signed checkpoint are checked first; without, only that the key opens the record."""
    import base64
    import binascii

    from pipeline.crypt.reader import open_disclosed
    from pipeline.proofs import verify_proof_document

    d = doc.get("disclosure")
    if not isinstance(d, dict) or not isinstance(d.get("segment"), str) or not isinstance(d.get("record_key"), str):
        raise ValueError("not a disclosure document: no disclosure.segment / disclosure.record_key")
    problem = verify_proof_document(doc, verifiers) if verifiers is not None else None
    try:
        leaf = base64.b64decode(str(doc.get("leaf")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"leaf is not base64: {exc}") from None
    return open_disclosed(leaf.decode() + "\n", d["segment"], d["record_key"]), problem
