"""Fixtures for shipper and sidecar tests: moto's server over HTTP, real boto3 clients."""

from __future__ import annotations

import uuid
from typing import Any

import pytest


@pytest.fixture(scope="session")
def s3_endpoint(moto_endpoint: str) -> str:
    """The session's moto server (tests/conftest.py)."""
    return moto_endpoint


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def make_bucket(endpoint: str, *, lock: bool = True) -> str:
    name = f"ship-{uuid.uuid4().hex[:12]}"
    c = s3_client(endpoint)
    c.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
    if lock:
        c.put_object_lock_configuration(
            Bucket=name,
            ObjectLockConfiguration={"ObjectLockEnabled": "Enabled",
                                     "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    return name


@pytest.fixture
def locked_bucket(s3_endpoint: str) -> str:
    return make_bucket(s3_endpoint)
