"""docs/FORMAT.md section 10 against the code: the documented metadata keys, the frame
layout, and the auditor's shell commands run on an object the code stored (moto)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import zstandard

from pipeline.cold import ColdSettings, open_store
from pipeline.cold.base import META_PREFIX, METADATA_KEYS, decode_metadata, encode_metadata
from pipeline.cold.s3 import S3Store
from tests.cold.coldutil import new_bucket, write_segment

DOC = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"
# the zstd and openssl command-line tools: tools/install-test-deps.sh installs them, and a
# machine without them fails these tests rather than skipping them (`make test-fast` leaves
# them out)
needs_zstd = pytest.mark.tools


@pytest.fixture(autouse=True)
def _cli_tools(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("tools") and (shutil.which("zstd") is None or shutil.which("openssl") is None):
        pytest.fail("zstd / openssl command-line tools not installed: run tools/install-test-deps.sh")


def section10() -> str:
    text = DOC.read_text()
    start = text.index("## 10. Cold objects")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def audit_script() -> str:
    m = re.search(r"<!-- cold-audit:begin -->\n```sh\n(.*?)```\n<!-- cold-audit:end -->", section10(), re.S)
    assert m, "the audit block is missing from FORMAT.md section 10"
    return m.group(1)


def test_documented_keys_are_exactly_the_metadata_keys(tmp_path: Path) -> None:
    table = re.findall(r"^\| (`worm_[a-z0-9_]+`(?:, `worm_[a-z0-9_]+`)*) \|", section10(), re.M)
    documented = {k.strip("`") for cell in table for k in cell.split(", ")}
    expected = {META_PREFIX + k for k in METADATA_KEYS} | {META_PREFIX + "stored_sha256_composite"}
    assert documented == expected
    # And what the code actually writes (single-part and multipart) is all documented.
    _, man = write_segment(tmp_path, records=5)
    assert set(encode_metadata(man, "zstd", 1, "ab" * 32)) == {META_PREFIX + k for k in METADATA_KEYS}
    assert set(encode_metadata(man, "zstd", 1, "ab" * 32, "cd" * 32)) <= documented


def _stored(moto_endpoint: str, tmp_path: Path) -> tuple[Path, dict[str, str], Path, Any]:
    """A segment shipped with the default settings, downloaded back as obj.zst."""
    store = open_store(f"s3://{new_bucket(moto_endpoint)}/audit?endpoint_url={moto_endpoint}&region=us-east-1",
                       ColdSettings())
    assert isinstance(store, S3Store)
    # ~5 MB: more than one zstd job with the default worker threads, still one frame.
    path, man = write_segment(tmp_path / "hot", records=12000, payload=200)
    res = store.put_segment("app", path.name, str(path), man)
    assert res.key.endswith(".jsonl.zst") and res.verify.ok
    meta = decode_metadata(store.stat(res.key).metadata)
    work = tmp_path / "audit"
    work.mkdir()
    stream = store.open(res.key)
    (work / "obj.zst").write_bytes(stream.read())
    stream.close()
    return path, meta, work, man


def test_frame_layout_matches_the_document(moto_endpoint: str, tmp_path: Path) -> None:
    path, meta, work, man = _stored(moto_endpoint, tmp_path)
    body = (work / "obj.zst").read_bytes()
    assert body[:4] == bytes.fromhex("28b52ffd")
    fhd = body[4]
    assert fhd & 0x04, "Content_Checksum_flag"
    assert fhd & 0x03 == 0, "no Dictionary_ID"
    params = zstandard.get_frame_parameters(body)
    assert params.content_size == man.size == int(meta["size"])
    assert params.has_checksum and params.dict_id == 0 and params.window_size <= 1 << 26
    # Exactly one frame: decoding it leaves nothing over.
    dobj = zstandard.ZstdDecompressor().decompressobj()
    assert dobj.decompress(body) == path.read_bytes()
    assert dobj.eof and dobj.unused_data == b""
    assert meta["compression"] == "zstd" and meta["format"] == "1"
    assert meta["stored_sha256"] == hashlib.sha256(body).hexdigest() and int(meta["stored_size"]) == len(body)


def _run_audit(work: Path, meta: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "SIZE": meta["size"], "SHA": meta["sha256"],
           "SSIZE": meta["stored_size"], "SSHA": meta["stored_sha256"]}
    return subprocess.run(["bash", "-c", audit_script()], cwd=work, env=env, capture_output=True, text=True,
                          timeout=60)


@needs_zstd
def test_auditor_commands_verify_a_stored_object(moto_endpoint: str, tmp_path: Path) -> None:
    path, meta, work, _ = _stored(moto_endpoint, tmp_path)
    proc = _run_audit(work, meta)
    assert proc.returncode == 0, proc.stderr
    assert "cold object OK" in proc.stdout
    # zstd -d gave back the exact segment, whose SHA-256 is the metadata's.
    assert (work / "seg.jsonl").read_bytes() == path.read_bytes()
    assert hashlib.sha256((work / "seg.jsonl").read_bytes()).hexdigest() == meta["sha256"]


@needs_zstd
def test_auditor_commands_fail_on_damage_and_on_a_bomb(moto_endpoint: str, tmp_path: Path) -> None:
    _, meta, work, _ = _stored(moto_endpoint, tmp_path)
    good = (work / "obj.zst").read_bytes()
    # A flipped byte in the stored object: the stored SHA-256 line fails.
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    (work / "obj.zst").write_bytes(bytes(bad))
    assert _run_audit(work, meta).returncode != 0
    # Even with metadata rewritten to match the damaged bytes, zstd's own checks refuse it.
    forged = dict(meta, stored_sha256=hashlib.sha256(bad).hexdigest())
    proc = _run_audit(work, forged)
    assert proc.returncode != 0 and "cold object OK" not in proc.stdout
    # A valid frame that decodes to more than worm_size: refused, and at most SIZE + 1
    # bytes reach the disk.
    bomb = zstandard.ZstdCompressor(level=19, write_checksum=True).compress(b"\n" * (64 << 20))
    (work / "obj.zst").write_bytes(bomb)
    bomb_meta = dict(meta, stored_size=str(len(bomb)), stored_sha256=hashlib.sha256(bomb).hexdigest())
    proc = _run_audit(work, bomb_meta)
    assert proc.returncode != 0 and "cold object OK" not in proc.stdout
    seg = work / "seg.jsonl"
    assert not seg.exists() or seg.stat().st_size <= int(meta["size"]) + 1
