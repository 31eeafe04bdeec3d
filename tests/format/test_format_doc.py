"""The worked example in docs/FORMAT.md must match the code byte for byte."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import orjson

from pipeline import merkle
from pipeline.record import GENESIS_HASH, encode_record, parse_record
from pipeline.verify.chain import verify_stream

DOC = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"


def example_lines() -> list[bytes]:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- example:begin -->", 1)[1].split("<!-- example:end -->", 1)[0]
    body = block.split("```jsonl\n", 1)[1].split("```", 1)[0]
    return [line.encode() + b"\n" for line in body.splitlines() if line]


def test_example_lines_parse_and_chain() -> None:
    lines = example_lines()
    assert len(lines) == 4
    prev = GENESIS_HASH
    for i, line in enumerate(lines):
        rec = parse_record(line)
        assert rec.seq == i
        assert rec.prev == prev
        prev = rec.hash


def test_example_hashes_in_table_match() -> None:
    text = DOC.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d) \| `([0-9a-f]{64})` \| `([0-9a-f]{64})` \|$", text, re.M)
    assert len(rows) == 4
    for (seq, h, leaf), line in zip(rows, example_lines(), strict=True):
        assert hashlib.sha256(line[:-76]).hexdigest() == h, seq
        assert merkle.leaf_hash(line[:-1]).hex() == leaf, seq


def test_example_is_what_the_encoder_writes() -> None:
    prev = GENESIS_HASH.encode()
    for line in example_lines():
        rec = parse_record(line)
        rebuilt, digest = encode_record(rec.stream, rec.seq, rec.ts.encode(), rec.kind, prev,
                                        orjson.dumps(rec.data))
        assert rebuilt == line
        prev = digest


def test_example_file_digest_and_seal_roots(tmp_path: Path) -> None:
    data = b"".join(example_lines())
    assert len(data) == 1651
    assert hashlib.sha256(data).hexdigest() == "2554d364f639ad5bf98a4f22b8e3bb8d8c338d345737c20d0651be89fb56a947"
    seal = parse_record(example_lines()[-1]).data
    root = merkle.root_from_leaves(line[:-1] for line in example_lines()[:3])
    assert seal["merkle_root"] == root.hex() == "a98e4ba79d66838f3625dfbdb8b25d5559bfd6862a5b1c32505940174aaec364"
    stream = tmp_path / "payments"
    stream.mkdir()
    (stream / "seg-00000000000000000000.jsonl").write_bytes(data)
    report = verify_stream(stream, workers=1)
    assert report.ok, report.findings
    assert report.records == 4
