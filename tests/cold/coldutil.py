"""Helpers for the cold-tier tests (a uniquely named module: `conftest` is ambiguous
when the whole suite runs, since tests/conftest.py exists too)."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from pipeline import merkle
from pipeline.hot import attr
from pipeline.hot.segment import SegmentManifest, build_manifest, segment_name
from pipeline.record import GENESIS_HASH, encode_record

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def write_segment(
    directory: Path,
    stream: str = "app",
    first_seq: int = 0,
    records: int = 200,
    prev: str = GENESIS_HASH,
    payload: int = 200,
    seal: bool = True,
    salt: str = "",
) -> tuple[Path, SegmentManifest]:
    """A real chained segment: event records, then a seal-like record carrying the Merkle root."""
    d = directory / stream
    d.mkdir(parents=True, exist_ok=True)
    path = d / segment_name(first_seq)
    prev_b = prev.encode()
    cr = merkle.CompactRange()
    filler = ("x" * payload).encode()
    with open(path, "wb") as f:
        for i in range(records):
            seq = first_seq + i
            ts = b"2026-11-21T12:%02d:%02d.%06dZ" % ((seq // 60) % 60, seq % 60, seq % 1000000)
            data = b'{"i":%d,"user":"u%d","msg":"%s%s"}' % (seq, seq % 97, salt.encode(), filler)
            line, h = encode_record(stream, seq, ts, "event", prev_b, data)
            cr.append(merkle.leaf_hash(line[:-1]))
            f.write(line)
            prev_b = h
        if seal:
            seq = first_seq + records
            data = b'{"merkle_root":"%s","records":%d}' % (cr.root().hex().encode(), records)
            line, _ = encode_record(stream, seq, b"2026-11-21T13:00:00.000000Z", "seal", prev_b, data)
            f.write(line)
    return path, build_manifest(path)


def clear_immutable_tree(root: Path) -> None:
    """Stored files get chattr +i; clear it so pytest can remove its temporary directories."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                attr.clear_protection(os.path.join(dirpath, name))


def new_bucket(endpoint: str, lock: bool = True) -> str:
    from pipeline.cold.base import ColdSettings
    from pipeline.cold.s3 import make_client

    name = f"cold-{uuid.uuid4().hex[:16]}"
    client = make_client(ColdSettings(), endpoint, "us-east-1")
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
    client.close()
    return name
