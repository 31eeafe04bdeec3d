"""terraform/: parses, encodes the locking and least-privilege rules, and passes checkov.

The HCL is checked by parsing it with python-hcl2 and asserting on the structure, and by
checkov's static analysis (which runs in its own venv: tools/install-checkov.sh).
`terraform init` + `validate` run in tests/infra/test_terraform_validate.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "terraform"
AWS = TF / "aws"
AZURE = TF / "azure"
ALL_TF = sorted(TF.rglob("*.tf"))


def _clean(value: Any) -> Any:
    """python-hcl2 >= 7 keeps string quotes and block markers; drop both."""
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _load(path: Path) -> dict[str, Any]:
    with path.open() as fh:
        return dict(_clean(hcl2.load(fh)))


def _module(directory: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted(directory.glob("*.tf")):
        for key, value in _load(path).items():
            merged.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    return merged


def _blocks(module: dict[str, Any], kind: str, type_: str) -> dict[str, dict[str, Any]]:
    """{name: body} of every `kind "type_" "name"` block."""
    out: dict[str, dict[str, Any]] = {}
    for entry in module.get(kind, []):
        for name, body in entry.get(type_, {}).items():
            out[name] = body
    return out


def _one(module: dict[str, Any], kind: str, type_: str, name: str) -> dict[str, Any]:
    blocks = _blocks(module, kind, type_)
    assert name in blocks, f'no {kind} "{type_}" "{name}"'
    return blocks[name]


def _single(block: dict[str, Any], key: str) -> dict[str, Any]:
    value = block[key]
    assert isinstance(value, list) and len(value) == 1, f"{key}: {value!r}"
    return dict(value[0])


@pytest.fixture(scope="module")
def aws() -> dict[str, Any]:
    return _module(AWS)


@pytest.fixture(scope="module")
def azure() -> dict[str, Any]:
    return _module(AZURE)


@pytest.mark.parametrize("path", ALL_TF, ids=lambda p: str(p.relative_to(TF)))
def test_every_file_parses(path: Path) -> None:
    assert _load(path), f"{path} is empty"


def test_layout() -> None:
    for module in (AWS, AZURE):
        for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md", "examples/basic/main.tf"):
            assert (module / name).is_file(), f"{module.name}/{name} missing"
    assert "terraform validate" in (TF / "README.md").read_text()


@pytest.mark.parametrize("path", ALL_TF, ids=lambda p: str(p.relative_to(TF)))
def test_every_variable_and_output_documented(path: Path) -> None:
    parsed = _load(path)
    for kind in ("variable", "output"):
        for entry in parsed.get(kind, []):
            for name, body in entry.items():
                assert len(body.get("description", "")) > 10, f"{kind} {name} in {path.name} lacks a description"


@pytest.mark.parametrize("module", [AWS, AZURE], ids=["aws", "azure"])
def test_module_variables_documented_in_readme(module: Path) -> None:
    readme = (module / "README.md").read_text()
    names = [name for entry in _load(module / "variables.tf")["variable"] for name in entry]
    missing = [n for n in names if f"`{n}`" not in readme]
    assert not missing, f"{module.name}/README.md does not document {missing}"


# --------------------------------------------------------------------------- AWS


def test_aws_buckets_locked_in_compliance_mode(aws: dict[str, Any]) -> None:
    locals_ = {k: v for entry in aws["locals"] for k, v in entry.items()}
    assert set(locals_["locked_buckets"]) == {"logs", "witness"}, "a separate witness bucket"
    bucket = _one(aws, "resource", "aws_s3_bucket", "locked")
    assert bucket["for_each"] == "${local.locked_buckets}"
    assert bucket["object_lock_enabled"] is True
    assert bucket["force_destroy"] is False

    versioning = _one(aws, "resource", "aws_s3_bucket_versioning", "locked")
    assert _single(versioning, "versioning_configuration")["status"] == "Enabled"

    lock = _one(aws, "resource", "aws_s3_bucket_object_lock_configuration", "locked")
    retention = _single(_single(lock, "rule"), "default_retention")
    assert retention["mode"] == "COMPLIANCE"
    assert "retention_days" in retention["days"]
    variables = {k: v for entry in aws["variable"] for k, v in entry.items()}
    assert variables["retention_days"]["default"] == 2555


def test_aws_encryption_and_public_access(aws: dict[str, Any]) -> None:
    key = _one(aws, "resource", "aws_kms_key", "logs")
    assert key["enable_key_rotation"] is True
    sse = _one(aws, "resource", "aws_s3_bucket_server_side_encryption_configuration", "locked")
    default = _single(_single(sse, "rule"), "apply_server_side_encryption_by_default")
    assert default["sse_algorithm"] == "aws:kms"
    assert default["kms_master_key_id"] == "${aws_kms_key.logs.arn}"
    blocks = _blocks(aws, "resource", "aws_s3_bucket_public_access_block")
    assert set(blocks) == {"locked", "access_logs"}
    for block in blocks.values():
        for setting in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
            assert block[setting] is True, setting


def _statements(aws: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return list(_one(aws, "data", "aws_iam_policy_document", name)["statement"])


def test_aws_bucket_policy_denies_insecure_transport_deletion_and_downgrades(aws: dict[str, Any]) -> None:
    statements = _statements(aws, "bucket")
    denies = [s for s in statements if s["effect"] == "Deny"]
    assert denies == statements, "the locked buckets' policy only denies"

    tls = [s for s in denies if any(c["variable"] == "aws:SecureTransport" for c in s.get("condition", []))]
    assert len(tls) == 1
    (condition,) = tls[0]["condition"]
    assert condition["test"] == "Bool" and condition["values"] == ["false"]
    assert tls[0]["actions"] == ["s3:*"]

    denied = {a for s in denies for a in s["actions"]}
    for action in ("s3:DeleteObject*", "s3:BypassGovernanceRetention", "s3:PutBucketObjectLockConfiguration",
                   "s3:PutObjectRetention"):
        assert action in denied, action
    conditions = {c["variable"]: c for s in denies for c in s.get("condition", [])}
    assert conditions["s3:object-lock-mode"]["values"] == ["GOVERNANCE"]
    assert conditions["s3:object-lock-remaining-retention-days"]["test"] == "NumericLessThan"
    for s in denies:
        principals = _single(s, "principals")
        assert principals == {"type": "*", "identifiers": ["*"]}

    policy = _one(aws, "resource", "aws_s3_bucket_policy", "locked")
    assert "${aws_s3_bucket_object_lock_configuration.locked}" in policy["depends_on"]


def test_aws_lifecycle_to_colder_classes(aws: dict[str, Any]) -> None:
    lifecycle = _one(aws, "resource", "aws_s3_bucket_lifecycle_configuration", "locked")
    rules = [r for r in lifecycle["rule"] if r["id"] == "colder-storage"]
    assert len(rules) == 1
    classes = [t["storage_class"] for t in rules[0]["transition"]]
    assert classes == ["STANDARD_IA", "GLACIER_IR"]
    assert rules[0]["status"] == "Enabled"


def test_aws_logging_and_notifications(aws: dict[str, Any]) -> None:
    logging = _one(aws, "resource", "aws_s3_bucket_logging", "locked")
    assert logging["target_bucket"] == "${aws_s3_bucket.access_logs.id}"
    assert _one(aws, "resource", "aws_s3_bucket_notification", "locked")["eventbridge"] is True


SHIPPER_ACTIONS = {
    "s3:PutObject",
    "s3:PutObjectRetention",
    "s3:PutObjectLegalHold",
    "s3:AbortMultipartUpload",
    "s3:GetObject",
    "s3:GetObjectAttributes",
    "s3:GetObjectRetention",
    "s3:GetObjectLegalHold",
    "s3:ListBucket",
    "s3:GetBucketObjectLockConfiguration",
    "kms:GenerateDataKey",
    "kms:Decrypt",
}


def test_aws_shipper_policy_is_least_privilege(aws: dict[str, Any]) -> None:
    statements = _statements(aws, "shipper")
    assert all(s["effect"] == "Allow" for s in statements)
    actions = {a for s in statements for a in s["actions"]}
    assert actions == SHIPPER_ACTIONS
    for action in actions:
        assert "Delete" not in action and "Bypass" not in action, action
        assert not action.startswith("s3:PutBucket"), action
        assert "*" not in action, action
    for s in statements:
        resources = s["resources"]  # a list literal or a `for` expression (a string)
        listed = resources if isinstance(resources, list) else [resources]
        assert all(r != "*" for r in listed), "no wildcard resources"
        assert all("aws_s3_bucket.locked" in r or "aws_kms_key.logs" in r for r in listed), listed
        if "s3:PutObjectLegalHold" in s["actions"]:
            assert s["condition"][0]["values"] == ["ON"], "the shipper may only place holds"
    policy = _one(aws, "resource", "aws_iam_policy", "shipper")
    assert policy["policy"] == "${data.aws_iam_policy_document.shipper.json}"


def _conditions(statement: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["variable"]: c for c in statement.get("condition", [])}


def _by_sid(aws: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    return {s["sid"]: s for s in _statements(aws, name)}


def test_aws_provider_5x_compatible() -> None:
    # issue 18: `data.aws_region.current.region` exists only in provider 6.x
    for path in sorted(AWS.rglob("*.tf")):
        assert "aws_region.current.region" not in path.read_text(), path
    versions = [_load(p) for p in (AWS / "versions.tf", AWS / "examples" / "basic" / "main.tf")]
    for parsed in versions:
        (tf,) = parsed["terraform"]
        aws_req = tf["required_providers"][0]["aws"]
        assert aws_req["version"].startswith(">= 5."), aws_req


def test_aws_bucket_policy_denies_old_tls_and_other_encryption(aws: dict[str, Any]) -> None:
    sids = _by_sid(aws, "bucket")
    tls = _conditions(sids["DenyTLSOlderThan12"])["s3:TlsVersion"]
    assert (tls["test"], tls["values"]) == ("NumericLessThan", ["1.2"])
    assert sids["DenyTLSOlderThan12"]["actions"] == ["s3:*"]
    for sid, variable, allowed in (("DenyOtherEncryptionThanSSEKMS", "s3:x-amz-server-side-encryption", "aws:kms"),
                                   ("DenyWrongKMSKey", "s3:x-amz-server-side-encryption-aws-kms-key-id",
                                    "${aws_kms_key.logs.arn}")):
        st = sids[sid]
        assert st["effect"] == "Deny" and st["actions"] == ["s3:PutObject"]
        (null, cmp) = st["condition"]
        # the Null=false guard keeps uploads without the header (bucket default) allowed
        assert (null["test"], null["variable"], null["values"]) == ("Null", variable, ["false"])
        assert (cmp["test"], cmp["variable"], cmp["values"]) == ("StringNotEquals", variable, [allowed])


def test_aws_legal_holds_placed_by_the_shipper_lifted_only_by_legal(aws: dict[str, Any]) -> None:
    shipper = _statements(aws, "shipper")
    grants = [s for s in shipper if "s3:PutObjectLegalHold" in s["actions"]]
    assert len(grants) == 1 and grants[0]["actions"] == ["s3:PutObjectLegalHold"]
    hold = _conditions(grants[0])["s3:object-lock-legal-hold"]
    assert (hold["test"], hold["values"]) == ("StringEquals", ["ON"])
    deny = _by_sid(aws, "bucket")["DenyLiftingLegalHoldsExceptLegalRoles"]
    assert set(deny["actions"]) == {"s3:PutObjectLegalHold", "s3:PutObject"}
    assert _conditions(deny)["s3:object-lock-legal-hold"]["values"] == ["OFF"]
    dynamic = deny["dynamic"][0]["condition"]["content"][0]
    assert dynamic["variable"] == "aws:PrincipalArn" and "legal_hold_role_arns" in dynamic["values"]
    legal = {a for st in _statements(aws, "legal_hold") for a in st["actions"]}
    assert "s3:PutObjectLegalHold" in legal and not any("Delete" in a or ("Retention" in a and "Put" in a)
                                                        for a in legal)
    outputs = {k for entry in aws["output"] for k in entry}
    assert {"auditor_policy_arn", "legal_hold_policy_arn"} <= outputs


def test_aws_auditor_policy_is_read_only(aws: dict[str, Any]) -> None:
    statements = _statements(aws, "auditor")
    assert all(s["effect"] == "Allow" for s in statements)
    actions = {a for s in statements for a in s["actions"]}
    for needed in ("s3:GetObject", "s3:ListBucket", "s3:ListBucketVersions", "s3:GetObjectRetention",
                   "s3:GetObjectLegalHold", "s3:GetBucketObjectLockConfiguration", "s3:GetEncryptionConfiguration",
                   "kms:Decrypt"):
        assert needed in actions, needed
    for action in actions:
        verb = action.split(":", 1)[1]
        assert verb.startswith(("Get", "List")) or action == "kms:Decrypt", action
        assert "*" not in action
    policy = _one(aws, "resource", "aws_iam_policy", "auditor")
    assert policy["policy"] == "${data.aws_iam_policy_document.auditor.json}"


# --------------------------------------------------------------------------- Azure


def test_azure_account_hardened_and_version_level_immutable(azure: dict[str, Any]) -> None:
    account = _one(azure, "resource", "azurerm_storage_account", "logs")
    assert account["min_tls_version"] == "TLS1_2"
    assert account["https_traffic_only_enabled"] is True
    assert account["allow_nested_items_to_be_public"] is False
    assert account["infrastructure_encryption_enabled"] is True
    assert account["shared_access_key_enabled"] is False
    assert account["is_hns_enabled"] is False
    blob = _single(account, "blob_properties")
    assert blob["versioning_enabled"] is True
    immutability = _single(account, "immutability_policy")
    assert immutability["allow_protected_append_writes"] is True
    assert immutability["period_since_creation_in_days"] == "${var.retention_days}"
    network = _single(account, "network_rules")
    assert network["default_action"] == "Deny"
    assert network["ip_rules"] == "${var.allowed_ip_ranges}"
    assert network["virtual_network_subnet_ids"] == "${var.allowed_subnet_ids}"


def test_azure_containers_under_locked_time_based_policy(azure: dict[str, Any]) -> None:
    locals_ = {k: v for entry in azure["locals"] for k, v in entry.items()}
    assert set(locals_["containers"]) == {"logs", "witness"}
    container = _one(azure, "resource", "azurerm_storage_container", "locked")
    assert container["container_access_type"] == "private"
    policy = _one(azure, "resource", "azurerm_storage_container_immutability_policy", "locked")
    assert policy["for_each"] == "${azurerm_storage_container.locked}"
    assert policy["locked"] is True
    assert policy["protected_append_writes_enabled"] is True
    assert policy["immutability_period_in_days"] == "${var.retention_days}"


def test_azure_shipper_role_cannot_delete(azure: dict[str, Any]) -> None:
    role = _one(azure, "resource", "azurerm_role_definition", "shipper")
    permissions = _single(role, "permissions")
    allowed = permissions["actions"] + permissions["data_actions"]
    for action in allowed:
        assert "delete" not in action.lower(), action
        assert "runAsSuperUser" not in action, action
        assert "*" not in action, action
    assert {a.rsplit("/", 2)[-2] + "/" + a.rsplit("/", 1)[-1] for a in permissions["data_actions"]} == {
        "blobs/read", "blobs/write", "add/action"}
    refused = permissions["not_data_actions"]
    assert any(a.endswith("/blobs/delete") for a in refused)
    assert any("runAsSuperUser" in a for a in refused)
    assignment = _one(azure, "resource", "azurerm_role_assignment", "shipper")
    assert assignment["principal_id"] == "${var.shipper_principal_id}"
    assert "azurerm_role_definition.shipper" in assignment["role_definition_id"]


# --------------------------------------------------------------------------- checkov

SKIP_RE = re.compile(r"#\s*checkov:skip=(CKV2?_[A-Z]+_\d+):(.*)")


def _skips(directory: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(directory.rglob("*.tf")):
        for match in SKIP_RE.finditer(path.read_text()):
            found.setdefault(match.group(1), []).append(match.group(2).strip())
    return found


@pytest.mark.parametrize("module", [AWS, AZURE], ids=["aws", "azure"])
def test_every_checkov_skip_is_justified(module: Path) -> None:
    skips = _skips(module)
    assert skips, "expected some justified skips"
    for check, reasons in skips.items():
        for reason in reasons:
            assert len(reason) >= 30, f"{check}: justify the skip, not just name it ({reason!r})"


def _checkov() -> str:
    candidates = [os.environ.get("CHECKOV_BIN"), str(ROOT / ".tools" / "checkov-venv" / "bin" / "checkov"),
                  shutil.which("checkov")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("checkov is not installed: run tools/install-checkov.sh (installs it into .tools/checkov-venv)")


@pytest.mark.parametrize("module", [AWS, AZURE], ids=["aws", "azure"])
def test_checkov_passes(module: Path) -> None:
    # --skip-download: no network calls for guidelines or custom policies.
    argv = [_checkov(), "-d", str(module), "--framework", "terraform", "--compact",
            "--skip-download", "--output", "json"]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_COLOR": "1"}
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    reports = report if isinstance(report, list) else [report]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, f"checkov findings: {failed}"
    assert proc.returncode == 0, proc.stderr[-3000:]
    passed = sum(r["summary"]["passed"] for r in reports)
    assert passed > 10, "checkov evaluated (almost) nothing"
    skipped = {c["check_id"] for r in reports for c in r["results"]["skipped_checks"]}
    assert skipped <= set(_skips(module)), "every skip comes from a justified comment"


def test_aws_lifecycle_aborts_incomplete_multipart_and_never_archives(aws: dict[str, Any]) -> None:
    """Leftover parts of an upload the shipper could not abort are removed, and no
    transition goes to a class that would need a restore before verification (issue 8)."""
    lifecycle = _one(aws, "resource", "aws_s3_bucket_lifecycle_configuration", "locked")
    (rule,) = [r for r in lifecycle["rule"] if r["id"] == "colder-storage"]
    abort = rule["abort_incomplete_multipart_upload"]
    abort = abort[0] if isinstance(abort, list) else abort
    assert 1 <= abort["days_after_initiation"] <= 7
    classes = {t["storage_class"] for t in rule["transition"]}
    classes |= {t["storage_class"] for t in rule["noncurrent_version_transition"]}
    assert not classes & {"GLACIER", "DEEP_ARCHIVE"}
    # The lifecycle rule must not expire anything inside the retention period.
    assert "expiration" not in rule


def test_azure_private_endpoint_option_disables_public_access(azure: dict[str, Any]) -> None:
    account = _one(azure, "resource", "azurerm_storage_account", "logs")
    assert account["public_network_access_enabled"] == "${var.private_endpoint_subnet_id == null}"
    pe = _one(azure, "resource", "azurerm_private_endpoint", "blob")
    assert pe["count"] == "${var.private_endpoint_subnet_id == null ? 0 : 1}"
    conn = _single(pe, "private_service_connection")
    assert conn["subresource_names"] == ["blob"] and conn["is_manual_connection"] is False
    assert conn["private_connection_resource_id"] == "${azurerm_storage_account.logs.id}"
    variables = {k: v for entry in azure["variable"] for k, v in entry.items()}
    assert variables["private_endpoint_subnet_id"]["default"] is None


def test_azure_auditor_reader_role_is_read_only(azure: dict[str, Any]) -> None:
    auditor = _one(azure, "resource", "azurerm_role_assignment", "auditor")
    assert auditor["role_definition_name"] == "Storage Blob Data Reader"
    assert auditor["scope"] == "${azurerm_storage_account.logs.id}"
    assert "auditor_principal_ids" in auditor["for_each"]
