"""`terraform init` + `terraform validate` of terraform/aws (module and example), offline,
against the hashicorp/aws provider from a local filesystem mirror (issue 18: the module
pinned provider 6.x for one attribute and had never been validated).

The mirror is found at $TF_PROVIDER_MIRROR, else /opt/tf-plugins (this machine's), else
.tools/tf-plugins (tools/install-test-deps.sh fills it on a fresh machine).  The Azure
module is not validated here: no azurerm provider is available offline (python-hcl2 and
checkov check it in tests/infra/test_terraform.py).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.tools  # terraform and its provider mirror

ROOT = Path(__file__).resolve().parents[2]
MIRRORS = [os.environ.get("TF_PROVIDER_MIRROR"), "/opt/tf-plugins", str(ROOT / ".tools" / "tf-plugins")]
# The oldest provider major the module supports; validate against what the mirror holds.
PROVIDER = "registry.terraform.io/hashicorp/aws"


def _mirror() -> Path:
    for m in MIRRORS:
        if m and (Path(m) / PROVIDER).is_dir():
            return Path(m)
    pytest.fail(f"no local mirror of {PROVIDER} in {[m for m in MIRRORS if m]}: run tools/install-test-deps.sh")


def _terraform() -> str:
    found = shutil.which("terraform")
    if found is None:
        pytest.fail("terraform is not installed: run tools/install-test-deps.sh")
    return found


@pytest.mark.parametrize("module", ["terraform/aws", "terraform/aws/examples/basic"])
def test_terraform_init_and_validate_offline(module: str, tmp_path: Path) -> None:
    work = tmp_path / "tf"
    # a copy: init writes .terraform/ and a lock file, which must not land in the repository
    shutil.copytree(ROOT / "terraform", work, ignore=shutil.ignore_patterns(".terraform*"))
    rc = tmp_path / "terraformrc"
    rc.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{_mirror()}"\n  }}\n}}\n')
    env = dict(os.environ, TF_CLI_CONFIG_FILE=str(rc), TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1",
               TF_DATA_DIR=str(tmp_path / "data"))
    cwd = work / module.removeprefix("terraform/")
    init = subprocess.run([_terraform(), "init", "-backend=false", "-input=false", "-no-color"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stdout[-3000:] + init.stderr[-3000:]
    versions = {p.name for p in (_mirror() / PROVIDER).iterdir()}
    assert any(v.startswith("5.") for v in versions), f"validated against {versions}: the 5.x promise needs a 5.x"
    val = subprocess.run([_terraform(), "validate", "-json", "-no-color"], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300)
    report = json.loads(val.stdout)
    assert report["valid"] is True and val.returncode == 0, json.dumps(report["diagnostics"], indent=1)[-4000:]
    # a deprecated attribute is a warning today and an error in the next major
    warnings = [d for d in report["diagnostics"] if d["severity"] == "warning"]
    assert not warnings, json.dumps(warnings, indent=1)[-4000:]


# ------------------------------------------------------------------ applied to moto's server


def _evaluate_denies(policy: dict[str, Any], action: str, context: dict[str, str]) -> list[str]:
    """Sids of the bucket policy's Deny statements that match ``action`` in ``context``
    (IAM semantics for the operators the module uses; a missing key makes a condition false,
    except for negated operators and Null, as AWS documents)."""
    hits = []
    for st in policy["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        if st["Effect"] != "Deny" or not any(fnmatch.fnmatchcase(action, a) for a in actions):
            continue
        ok = True
        for op, conds in st.get("Condition", {}).items():
            for key, want in conds.items():
                wants = want if isinstance(want, list) else [want]
                have = context.get(key)
                if op == "Null":
                    ok &= (have is None) == (wants == ["true"])
                elif op in ("StringEquals", "Bool"):
                    ok &= have is not None and have in wants
                elif op == "StringNotEquals":
                    ok &= have is None or have not in wants
                elif op == "ArnNotLike":
                    ok &= have is None or not any(fnmatch.fnmatchcase(have, w) for w in wants)
                elif op == "NumericLessThan":
                    ok &= have is not None and float(have) < float(wants[0])
                else:
                    raise AssertionError(f"operator {op} not modelled: extend _evaluate_denies")
        if ok:
            hits.append(st["Sid"])
    return hits


@pytest.mark.slow
def test_module_applies_to_moto_and_the_pipeline_ships_into_it(tmp_path: Path, moto_endpoint: str,
                                                                hot_dir: Path) -> None:
    """`terraform apply` of terraform/aws against moto's server (S3, KMS, IAM, STS), then
    `pipeline ship` with default settings into the bucket it made: every object is locked in
    COMPLIANCE mode and encrypted with the module's KMS key (the bucket default: the pipeline
    sends no encryption header), and the bucket policy as the provider rendered it denies
    what the module promises."""
    import boto3

    from tests.ship.test_shipper import write_events

    suffix = uuid.uuid4().hex[:8]
    work = tmp_path / "tf"
    shutil.copytree(ROOT / "terraform" / "aws", work / "mod", ignore=shutil.ignore_patterns(".terraform*", "examples"))
    endpoints = "\n".join(f'    {svc} = "{moto_endpoint}"' for svc in ("s3", "kms", "iam", "sts"))
    legal = "arn:aws:iam::123456789012:role/legal"
    (work / "main.tf").write_text(f"""
provider "aws" {{
  region                      = "us-east-1"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true
  endpoints {{
{endpoints}
  }}
}}
module "worm" {{
  source                 = "./mod"
  bucket_name            = "tf-logs-{suffix}"
  witness_bucket_name    = "tf-witness-{suffix}"
  retention_days         = 1
  witness_retention_days = 2
  legal_hold_role_arns   = ["{legal}"]
  shipper_policy_name    = "shipper-{suffix}"
  auditor_policy_name    = "auditor-{suffix}"
  legal_hold_policy_name = "legal-{suffix}"
}}
output "bucket" {{ value = module.worm.bucket_name }}
output "kms"    {{ value = module.worm.kms_key_arn }}
""")
    rc = tmp_path / "terraformrc"
    rc.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{_mirror()}"\n  }}\n}}\n')
    env = dict(os.environ, TF_CLI_CONFIG_FILE=str(rc), TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1")
    for argv in (["init", "-input=false", "-no-color"], ["apply", "-auto-approve", "-input=false", "-no-color"]):
        proc = subprocess.run([_terraform(), *argv], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = json.loads(subprocess.run([_terraform(), "output", "-json"], cwd=work, env=env, capture_output=True,
                                    text=True, check=True).stdout)
    bucket, key_arn = out["bucket"]["value"], out["kms"]["value"]

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    # moto evaluates a bucket policy's Deny statements without their conditions (measured:
    # every conditional Deny matching s3:PutObject refuses all uploads), so the policy is
    # checked below with IAM's semantics and removed from the emulator before shipping.
    s3.delete_bucket_policy(Bucket=bucket)

    write_events(hot_dir, 300, max_bytes=16 * 1024)
    ship = subprocess.run([sys.executable, "-m", "pipeline", "ship", "--hot", str(hot_dir), "--once",
                           "--retention-days", "1", "--cold",
                           f"s3://{bucket}/prod?endpoint_url={moto_endpoint}&region=us-east-1"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert ship.returncode == 0, ship.stdout + ship.stderr
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="prod/").get("Contents", [])]
    assert keys
    for k in keys:
        head = s3.head_object(Bucket=bucket, Key=k)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key_arn), k
        assert head["ObjectLockMode"] == "COMPLIANCE"

    shipper = "arn:aws:iam::123456789012:role/shipper"
    base = {"aws:SecureTransport": "true", "s3:TlsVersion": "1.3", "aws:PrincipalArn": shipper}
    cases = [  # (action, extra context, denied by)
        ("s3:PutObject", {}, []),  # the pipeline's default: no encryption header
        ("s3:PutObject", {"s3:x-amz-server-side-encryption": "aws:kms",
                          "s3:x-amz-server-side-encryption-aws-kms-key-id": key_arn}, []),
        ("s3:PutObject", {"s3:x-amz-server-side-encryption": "AES256"}, ["DenyOtherEncryptionThanSSEKMS"]),
        ("s3:PutObject", {"s3:x-amz-server-side-encryption": "aws:kms",
                          "s3:x-amz-server-side-encryption-aws-kms-key-id": "arn:aws:kms:us-east-1:1:key/x"},
         ["DenyWrongKMSKey"]),
        ("s3:GetObject", {"s3:TlsVersion": "1.1"}, ["DenyTLSOlderThan12"]),
        ("s3:GetObject", {"aws:SecureTransport": "false"}, ["DenyInsecureTransport"]),
        ("s3:PutObjectLegalHold", {"s3:object-lock-legal-hold": "ON"}, []),
        ("s3:PutObjectLegalHold", {"s3:object-lock-legal-hold": "OFF"}, ["DenyLiftingLegalHoldsExceptLegalRoles"]),
        ("s3:PutObjectLegalHold", {"s3:object-lock-legal-hold": "OFF", "aws:PrincipalArn": legal}, []),
        ("s3:DeleteObjectVersion", {}, ["DenyDeletionAndLockChanges"]),
    ]
    for action, extra, denied in cases:
        assert _evaluate_denies(policy, action, {**base, **extra}) == denied, (action, extra)
