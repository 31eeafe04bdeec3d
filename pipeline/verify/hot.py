"""Verify a hot tier: every chain, plus forward-secure seals and witnessed checkpoints.

``verify_hot`` is what ``pipeline verify`` runs (the CLI only parses and renders) and what
``pipeline.verify_log`` exposes: the chain check of ``verify.chain`` per stream, starting
after the prefix the shipper evicted (recorded in its ledger), then -- when given -- the
forward-secure MAC of every seal (docs/PROOFS.md) and the checkpoints directory witnesses
hold.  Findings (``pipeline.findings.Finding``) go into each ``StreamReport``; a report is
``ok`` when none of them is an error (a witnessed checkpoint that could not be compared is
a warning).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.findings import Finding
from pipeline.format.record import ts_epoch
from pipeline.verify.chain import Note, SegmentScan, StreamReport


class VerifyError(PipelineError):
    """Verification could not run (a missing directory or stream, an unreadable file, an
    unusable key): nothing was concluded about the data."""


def streams_to_verify(hot: Path, stream: str | None) -> list[str]:
    from pipeline.format.segment import list_streams

    if not hot.is_dir():
        raise VerifyError(f"hot directory {hot} does not exist")
    if stream is not None and not (hot / stream).is_dir():
        raise VerifyError(f"stream {stream!r} not found in {hot}")
    streams = [stream] if stream is not None else list_streams(hot)
    if not streams:
        raise VerifyError(f"no streams in {hot}")
    return streams


def verify_hot(
    hot_dir: str | os.PathLike[str],
    stream: str | None = None,
    *,
    fss_key: str | None = None,
    witness_dirs: Iterable[str | os.PathLike[str]] = (),
    vkey: str | os.PathLike[str] | None = None,
    origin: str | None = None,
    workers: int | None = None,
    file_hashes: bool = False,
    on_scanned: Callable[[int], None] | None = None,
) -> list[StreamReport]:
    """One report per stream (``stream``, or every stream when None).  ``fss_key``: the
    forward-secure verification key (``fss-v1:...``) or a file holding it.  ``witness_dirs``
    need ``vkey`` (the log's checkpoint verifier key file); ``origin`` defaults to the
    stream name.

    Raises VerifyError when verification could not run: never a finding."""
    from pipeline.format.layout import read_head_or_none
    from pipeline.format.segment import list_segments
    from pipeline.ship.ledger import open_ledger_readonly
    from pipeline.verify.chain import scan_all, stitch

    hot = Path(hot_dir)
    wdirs = [Path(w) for w in witness_dirs]
    if wdirs and vkey is None:
        raise VerifyError("witness directories need the log's verifier key (vkey) to check the witnessed "
                          "checkpoints")
    streams = streams_to_verify(hot, stream)
    reports: list[StreamReport] = []
    ledger = open_ledger_readonly(hot)
    try:
        for name in streams:
            d = hot / name
            for attempt in range(5):
                try:
                    # verify_stream's reads, in this order: head.json, the listing, then the ledger
                    # (below), so that what each names is on disk or recorded when the next is read
                    head = read_head_or_none(d)
                    paths = list_segments(d)
                    # segments the shipper evicted after confirming their cold copies are not missing:
                    # the hot tier legitimately starts after them (verify-tier checks the cold side).
                    # Read AFTER the listing and judged against it: read before, an eviction in
                    # between removed a file the prefix still counted (a false missing-start)
                    start = ledger.evicted_prefix(name, {p.name for p in paths}) if ledger else None
                    scans = scan_all(paths, workers, file_hashes=file_hashes, stream=name, on_scanned=on_scanned)
                    scans = reread_unsealed(scans, file_hashes=file_hashes, stream=name)
                    report = stitch(name, scans, head=head, start_seq=start[0] if start else 0,
                                    start_hash=start[1] if start else None)
                    break
                except FileNotFoundError as exc:
                    # a listed segment was evicted before it was read: list again (bounded)
                    if ledger is None or attempt == 4 or not d.is_dir():
                        raise VerifyError(f"cannot read stream {name!r}: {exc}") from exc
                except OSError as exc:
                    raise VerifyError(f"cannot read stream {name!r}: {exc}") from exc
            if start:
                report.notes.append(Note(name, "", "evicted", f"records before seq {start[0]} were shipped, "
                                         "confirmed and evicted (see the shipper ledger)"))
            reports.append(report)
    finally:
        if ledger:
            ledger.close()
    try:
        for r in reports:
            if fss_key:
                check_fss(r, fss_key)
            for wdir in wdirs:
                assert vkey is not None
                check_witness(r, hot / r.stream, wdir, Path(vkey), origin or r.stream)
    except (OSError, ValueError) as exc:
        raise VerifyError(str(exc)) from exc
    return reports


def reread_unsealed(scans: list[SegmentScan], *, file_hashes: bool, stream: str | None) -> list[SegmentScan]:
    """``scans`` with every segment that was unsealed when read but is followed by another
    read again.  Rotation opens the next segment before the old one's seal is written, and
    one flush writes that seal before the next segment's first records; so the old segment
    may have been read before its seal and the next one after its records (a false
    ``truncated``).  Read again now, AFTER the later segments, a segment still unsealed
    really was abandoned (its recovery record, or the lack of one, judges it).  Only a file
    that grew since its scan is read again: the seal adds bytes, and an abandoned segment
    (immutable, the usual case here) is then not read and hashed twice."""
    from pipeline.verify import chain

    return [chain.scan_segment(s.path, stream, file_hash=file_hashes)
            if not s.sealed and i + 1 < len(scans) and os.stat(s.path).st_size != s.size else s
            for i, s in enumerate(scans)]


def check_fss(report: StreamReport, key_arg: str) -> None:
    """Every seal must carry a valid forward-secure MAC, in strictly increasing (epoch, index)
    order (docs/PROOFS.md), except seals older than forward-secure sealing itself: no seal
    with ``fss`` before them, and timed before the key's start (docs/FORMAT.md §4)."""
    from pipeline.fss import FssVerifier

    text = Path(key_arg).read_text().strip() if Path(key_arg).is_file() else key_arg
    verifier = FssVerifier(text)
    fss_seen = False  # sealing is never switched back off: once a seal has fss, every later one must
    for s in report.segments:
        if not s.sealed or s.seal is None or s.last_ts is None:
            continue
        if "fss" not in s.seal and not fss_seen and ts_epoch(s.last_ts) < verifier.key.start:
            continue  # sealed before forward-secure sealing was set up
        fss_seen = fss_seen or "fss" in s.seal
        problem = verifier.check(s.seal, s.last_ts)
        if problem:
            report.findings.append(Finding.of("fss-invalid", report.stream, s.name, problem, s.last_seq))




def check_witness(report: StreamReport, stream_dir: Path, witness_dir: Path, vkey: Path, origin: str) -> None:
    """A witnessed checkpoint fixes the root of a prefix of the log: a chain rebuilt after it
    (even re-signed with a stolen key) no longer matches."""
    from pipeline.proofs import verify_against_witnesses
    from pipeline.witness.directory import read_witness_checkpoints

    notes = read_witness_checkpoints(witness_dir, origin)
    if not notes:
        # nothing to compare is not "the witnesses agree": a wrong origin (the writer's is
        # <signing.origin>/<stream>) or an empty witness must not pass as a check
        held = sorted(p.name for p in witness_dir.iterdir() if p.is_dir()) if witness_dir.is_dir() else []
        raise VerifyError(f"witness directory {witness_dir} holds no checkpoint for origin {origin!r}"
                          + (f" (it holds origins {', '.join(held)}, escaped): pass --origin" if held else "")
                          + "; nothing was compared")
    report.findings.extend(verify_against_witnesses(stream_dir, notes, vkey))
