"""Cold-tier encryption (issue 18): by default no encryption header is sent, so the bucket's
default (SSE-KMS with its key in terraform/aws) applies; ``cold.sse`` / ``kms_key_id`` only
when set, through the configuration file, the environment and ``pipeline ship``.  Real
boto3 against moto's server, which applies a bucket's default encryption as S3 does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.cold import ColdSettings
from pipeline.cold.s3 import S3Store
from pipeline.config import ConfigError, load_config
from tests.ship.conftest import make_bucket, s3_client
from tests.ship.test_shipper import write_events

REPO = Path(__file__).resolve().parents[2]
OTHER_KEY = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"


def kms_bucket(endpoint: str) -> tuple[str, str]:
    """A locked bucket whose default encryption is SSE-KMS with a key of its own."""
    import boto3

    kms = boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    key = kms.create_key(Description="worm-pipeline test")["KeyMetadata"]["Arn"]
    bucket = make_bucket(endpoint)
    s3_client(endpoint).put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key},
         "BucketKeyEnabled": True}]})
    return bucket, key


def ship(hot: Path, endpoint: str, bucket: str, *extra: str) -> list[dict[str, Any]]:
    p = subprocess.run([sys.executable, "-m", "pipeline", "ship", "--hot", str(hot), "--once", "--retention-days",
                        "1", "--cold", f"s3://{bucket}/p?endpoint_url={endpoint}&region=us-east-1", *extra],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.returncode == 0, p.stdout + p.stderr
    c = s3_client(endpoint)
    keys = [o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix="p/app/").get("Contents", [])]
    assert keys, "nothing was shipped"
    return [c.head_object(Bucket=bucket, Key=k) for k in keys]


def test_default_sends_no_header_and_the_bucket_kms_key_applies(hot_dir: Path, moto_endpoint: str) -> None:
    bucket, key = kms_bucket(moto_endpoint)
    write_events(hot_dir, 400, max_bytes=16 * 1024)
    for head in ship(hot_dir, moto_endpoint, bucket):
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == key, "the bucket's key, not SSE-S3"


@pytest.mark.parametrize(("args", "sse", "kms"), [
    (("--sse", "AES256"), "AES256", None),
    (("--kms-key-id", OTHER_KEY), "aws:kms", OTHER_KEY),
    (("--sse", "aws:kms", "--kms-key-id", OTHER_KEY), "aws:kms", OTHER_KEY),
])
def test_ship_honours_sse_and_kms_key(hot_dir: Path, moto_endpoint: str, args: tuple[str, ...], sse: str,
                                      kms: str | None) -> None:
    bucket, _ = kms_bucket(moto_endpoint)
    write_events(hot_dir, 200, max_bytes=16 * 1024)
    for head in ship(hot_dir, moto_endpoint, bucket, *args):
        assert head["ServerSideEncryption"] == sse
        assert head.get("SSEKMSKeyId") == kms


def test_ship_refuses_a_kms_key_with_aes256(hot_dir: Path, moto_endpoint: str) -> None:
    write_events(hot_dir, 10)  # a real hot tier, so the settings are what is refused
    p = subprocess.run([sys.executable, "-m", "pipeline", "ship", "--hot", str(hot_dir), "--once",
                        "--cold", f"s3://b/p?endpoint_url={moto_endpoint}", "--sse", "AES256", "--kms-key-id", "k"],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.returncode == 2 and "kms_key_id" in p.stderr, p.stderr


def _cfg(tmp_path: Path, cold_extra: str = "") -> Path:
    cfg = tmp_path / "p.toml"
    cfg.write_text(f'[hot]\ndir = "{tmp_path}/hot"\n[cold]\nurl = "s3://b/p"\n{cold_extra}')
    return cfg


def test_config_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PIPELINE_COLD_SSE", "PIPELINE_COLD_KMS_KEY_ID"):
        monkeypatch.delenv(var, raising=False)
    s = load_config(_cfg(tmp_path)).cold.settings()
    assert (s.sse, s.kms_key_id) == (None, None)
    assert ColdSettings().sse is None
    monkeypatch.setenv("PIPELINE_COLD_KMS_KEY_ID", OTHER_KEY)
    s = load_config(_cfg(tmp_path)).cold.settings()
    assert (s.sse, s.kms_key_id) == ("aws:kms", OTHER_KEY)
    monkeypatch.delenv("PIPELINE_COLD_KMS_KEY_ID")
    monkeypatch.setenv("PIPELINE_COLD_SSE", "AES256")
    assert load_config(_cfg(tmp_path)).cold.settings().sse == "AES256"
    monkeypatch.setenv("PIPELINE_COLD_KMS_KEY_ID", OTHER_KEY)
    with pytest.raises(ConfigError, match=r"KMS_KEY_ID: needs cold\.sse"):
        load_config(_cfg(tmp_path))


def _verify_tier(hot: Path, endpoint: str, bucket: str) -> dict[str, Any]:
    import json

    p = subprocess.run([sys.executable, "-m", "pipeline", "verify-tier", "--hot", str(hot), "--json", "--cold",
                        f"s3://{bucket}/p?endpoint_url={endpoint}&region=us-east-1"],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.returncode in (0, 1), p.stderr
    return dict(json.loads(p.stdout))


def _codes(report: dict[str, Any]) -> list[str]:
    out = [f["code"] for f in report.get("findings", [])]
    for st in report.get("streams", []):
        out += [f["code"] for f in st.get("findings", [])]
    return out


def test_verify_tier_reports_objects_encrypted_otherwise(hot_dir: Path, moto_endpoint: str) -> None:
    bucket, _ = kms_bucket(moto_endpoint)
    write_events(hot_dir, 200, max_bytes=16 * 1024)
    heads = ship(hot_dir, moto_endpoint, bucket)
    assert "encryption-differs" not in _codes(_verify_tier(hot_dir, moto_endpoint, bucket))
    # one object re-encrypted with another key (a new version over the same key, as S3 allows)
    c = s3_client(moto_endpoint)
    victim = c.list_objects_v2(Bucket=bucket, Prefix="p/app/")["Contents"][0]["Key"]
    body = c.get_object(Bucket=bucket, Key=victim)
    c.put_object(Bucket=bucket, Key=victim, Body=body["Body"].read(), Metadata=body["Metadata"],
                 ServerSideEncryption="aws:kms", SSEKMSKeyId=OTHER_KEY)
    codes = _codes(_verify_tier(hot_dir, moto_endpoint, bucket))
    assert codes.count("encryption-differs") == 1, codes
    assert len(heads) >= 2, "the other objects keep the bucket's key and are not reported"


def s3_store(url: str, settings: ColdSettings) -> S3Store:
    from pipeline.cold import open_store

    store = open_store(url, settings)
    assert isinstance(store, S3Store)
    return store


def test_expected_encryption_configured_wins_over_the_bucket_default(moto_endpoint: str) -> None:
    bucket, key = kms_bucket(moto_endpoint)
    url = f"s3://{bucket}/p?endpoint_url={moto_endpoint}&region=us-east-1"
    assert s3_store(url, ColdSettings(retention_days=1)).expected_encryption() == ("aws:kms", key)
    assert s3_store(url, ColdSettings(retention_days=1, sse="AES256")).expected_encryption() == ("AES256", None)
    plain = make_bucket(moto_endpoint)
    got = s3_store(f"s3://{plain}/p?endpoint_url={moto_endpoint}", ColdSettings(retention_days=1))
    assert got.expected_encryption() in (None, ("AES256", None))  # S3 now encrypts every bucket with SSE-S3
