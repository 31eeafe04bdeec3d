"""An in-process S3 (moto's server over real HTTP) with an Object Lock bucket.

Used by ``pipeline quickstart`` so the whole pipeline runs without a cloud account.  moto
enforces COMPLIANCE-mode deletion refusal on single-part uploads, which is what the
quickstart shows; its gaps are listed in ../shared/FACTS.md and docs/COLD.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class EmbeddedS3:
    server: Any
    endpoint: str
    bucket: str

    def url(self, prefix: str = "audit") -> str:
        return f"s3://{self.bucket}/{prefix}?endpoint_url={self.endpoint}&region=us-east-1"

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def stop(self) -> None:
        self.server.stop()


def start(bucket: str = "worm-quickstart", retention_days: int = 1) -> EmbeddedS3:
    """Start moto's server on a free loopback port and create a locked bucket."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request access log on the console

    # dummy credentials for the emulator only; set just for this process, never logged
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "quickstart")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "quickstart")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = EmbeddedS3(server, f"http://{host}:{port}", bucket)
    c = s3.client()
    c.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    c.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": retention_days}},
        },
    )
    return s3
