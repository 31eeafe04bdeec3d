"""The segment manifest: what a third party needs to find and check one segment
(docs/FORMAT.md, "Segment manifest").  ``pipeline.format.segment.build_manifest`` computes
one from a file; cold objects carry one as metadata (``pipeline.format.layout``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class SegmentManifest:
    """What a third party needs to find and check one sealed segment.

    Written as JSON beside cold objects and into cold object metadata; see
    docs/FORMAT.md, "Segment manifest".
    """

    stream: str
    segment: str
    first_seq: int
    last_seq: int  # seq of the last record in the file (the seal, when sealed)
    records: int
    size: int
    sha256: str
    merkle_root: str  # RFC 6962 root over the record lines before the seal (the seal's merkle_root)
    first_prev: str  # prev hash of the first record: links to the previous segment
    last_hash: str  # hash of the last record in the file
    sealed: bool
    first_ts: str
    last_ts: str
    torn_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmentManifest:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**fields)
