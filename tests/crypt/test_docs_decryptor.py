"""Shipped cold objects decrypted by a decryptor written from docs/FORMAT.md §10-§11 alone:
the ``age`` CLI unwraps each key record's seed, ``cryptography`` opens each payload.  Nothing
from ``pipeline.crypt`` is imported here.  The same objects pass ``verify-tier --deep`` and
the hot tier ``verify`` without any key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pipeline.cli import main
from pipeline.cold import ColdSettings, open_store
from pipeline.crypt.writer import EncryptionSettings
from pipeline.hot.factory import open_hotlog
from pipeline.ship.shipper import Shipper
from tests.crypt.conftest import AgeKey
from tests.ship.conftest import make_bucket, s3_client


def independent_decrypt(segment: bytes, identity: Path) -> dict[int, dict[str, Any]]:
    """Every encrypted event of one segment, by seq, following FORMAT §11 step by step."""
    seeds: dict[int, tuple[bytes, str]] = {}
    out: dict[int, dict[str, Any]] = {}
    for line in segment.splitlines():
        rec = json.loads(line)
        if rec["kind"] == "key":
            d = rec["data"]
            assert d["v"] == 1 and d["scheme"] == "age-x25519+sha256-ratchet+chacha20-poly1305"
            wrapped = base64.b64decode(d["wrapped"], validate=True)
            seed = subprocess.run(["age", "-d", "-i", str(identity)], input=wrapped, capture_output=True,
                                  check=True).stdout
            assert len(seed) == 32
            seeds[rec["seq"]] = (seed, d["segment"])
        elif rec["kind"] == "event" and "_enc" in rec["data"]:
            enc = rec["data"]["_enc"]
            key_seq, seq = enc["key_seq"], rec["seq"]
            seed, segment_name = seeds[key_seq]
            k = seed
            for _ in range(seq - key_seq):
                k = hashlib.sha256(b"worm-pipeline/ratchet/v1" + b"\x00" + k).digest()
            record_key = hmac.new(k, b"worm-pipeline/record-key/v1", hashlib.sha256).digest()
            aad = b"\x00".join([b"worm-pipeline/event/v1", rec["stream"].encode(), segment_name.encode(),
                                str(seq).encode(), str(key_seq).encode()])
            plain = ChaCha20Poly1305(record_key).decrypt(bytes(12), base64.b64decode(enc["ct"]), aad)
            event = json.loads(plain)
            for name, value in rec["data"].items():  # clear members equal the plaintext's
                if name != "_enc":
                    assert event[name] == value
            out[seq] = event
    return out


@pytest.mark.slow
def test_shipped_cold_objects_decrypt_from_the_format_document(tmp_path: Path, moto_endpoint: str,
                                                               auditor: AgeKey, escrow: AgeKey,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    hot = tmp_path / "hot"
    settings = EncryptionSettings((auditor.recipient, escrow.recipient), clear_fields=("action",))
    written: dict[int, dict[str, Any]] = {}
    with open_hotlog(hot, "app", segment_max_bytes=8192, heartbeat_interval=0, immutable="off",
                     encryption=settings) as log:
        for i in range(60):
            event = {"user": f"user-{i}", "ip": f"10.0.0.{i}", "action": "login" if i % 2 else "logout",
                     "password": "hunter2-secret"}
            written[log.append(event).seq] = event
        batch = [{"user": f"bulk-{i}", "action": "read"} for i in range(40)]
        for r, event in zip(log.append_many(batch), batch, strict=True):
            written[r.seq] = event
    assert main(["verify", "--hot", str(hot)]) == 0  # no key anywhere

    bucket = make_bucket(moto_endpoint)
    url = f"s3://{bucket}/audit?endpoint_url={moto_endpoint}&region=us-east-1"
    summary = Shipper(hot, open_store(url, ColdSettings(retention_days=1)), hot_retention=3600.0).run_once()
    assert summary.confirmed >= 3 and summary.failed == 0
    assert main(["verify-tier", "--hot", str(hot), "--cold", url, "--deep", "--retention-days", "1"]) == 0

    c = s3_client(moto_endpoint)
    decrypted: dict[int, dict[str, Any]] = {}
    keys = [o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix="audit/app/")["Contents"]]
    for key in keys:
        body = c.get_object(Bucket=bucket, Key=key)["Body"].read()
        segment = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()
        assert b"hunter2" not in segment and b"user-1" not in segment and b"10.0.0." not in segment
        got = independent_decrypt(segment, auditor.identity_file)
        key_names = {json.loads(ln)["data"]["segment"] for ln in segment.splitlines() if b'"kind":"key"' in ln}
        assert key_names == {key.rsplit("/", 1)[1].removesuffix(".zst")}
        decrypted.update(got)
    assert set(decrypted) == set(written)
    for seq, event in written.items():
        opened = decrypted[seq]
        if "password" in event:  # redaction ran before encryption
            assert opened["password"].startswith("[REDACTED")
            assert {k: v for k, v in opened.items() if k != "password"} == {k: v for k, v in event.items()
                                                                           if k != "password"}
        else:
            assert opened == event
    # pipeline export --identity reads the same objects from cold storage, verified and decrypted
    capsys.readouterr()
    assert main(["export", "--cold", url, "--stream", "app", "--identity", str(escrow.identity_file),
                 "--match", "user=bulk-7"]) == 0
    assert [json.loads(ln)["data"] for ln in capsys.readouterr().out.splitlines()] == [
        {"user": "bulk-7", "action": "read"}]
    assert main(["export", "--cold", url, "--stream", "app", "--identity", str(escrow.identity_file)]) == 0
    exported = {json.loads(ln)["seq"]: json.loads(ln)["data"] for ln in capsys.readouterr().out.splitlines()}
    assert exported == decrypted
    # the escrow identity opens the same seeds
    first = c.get_object(Bucket=bucket, Key=sorted(keys)[0])["Body"].read()
    seg0 = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(first)).read()
    assert independent_decrypt(seg0, escrow.identity_file) == independent_decrypt(seg0, auditor.identity_file)
