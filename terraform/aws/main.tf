# Locked storage for worm-pipeline on AWS S3.
#
#   logs     sealed segments, manifests          Object Lock COMPLIANCE, retention_days
#   witness  signed checkpoints (external witness) Object Lock COMPLIANCE, witness_retention_days
#   access   S3 server access logs of both buckets
#
# Both locked buckets: versioning, default COMPLIANCE retention, SSE-KMS with a
# rotating customer-managed key, every public access block setting on, a bucket
# policy denying non-TLS access, deletion, retention downgrades and lock changes,
# lifecycle transitions to STANDARD_IA and GLACIER_IR, access logging and
# EventBridge notifications.  The shipper gets an IAM policy with only what it calls.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  account_id        = data.aws_caller_identity.current.account_id
  partition         = data.aws_partition.current.partition
  access_log_bucket = coalesce(var.access_log_bucket_name, "${var.bucket_name}-access-logs")

  locked_buckets = {
    logs = {
      name           = var.bucket_name
      retention_days = var.retention_days
    }
    witness = {
      name           = var.witness_bucket_name
      retention_days = coalesce(var.witness_retention_days, var.retention_days + 365)
    }
  }

  # Explicit retention shorter than this (one day of slack for rounding) is refused
  # by the bucket policy; the shipper always writes at least the bucket default.
  min_remaining_retention_days = {
    for k, b in local.locked_buckets : k => max(b.retention_days - 1, 1)
  }
}

# ---------------------------------------------------------------------------
# KMS key for SSE-KMS on both locked buckets
# ---------------------------------------------------------------------------

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:A KMS key policy's Resource "*" means "this key"; account-root administration is the AWS default that keeps the key manageable through IAM.
  #checkov:skip=CKV_AWS_111:A KMS key policy's Resource "*" means "this key"; write access is limited to IAM principals of this account.
  #checkov:skip=CKV_AWS_356:Resource "*" is the only valid resource in a KMS key policy (it refers to the key itself).
  statement {
    sid       = "AccountAdministration"
    effect    = "Allow"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid       = "DenyKeyDeletionExceptBreakGlass"
    effect    = "Deny"
    actions   = ["kms:ScheduleKeyDeletion", "kms:DisableKey"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["*"]
    }

    dynamic "condition" {
      for_each = length(var.break_glass_role_arns) > 0 ? [1] : []
      content {
        test     = "ArnNotLike"
        variable = "aws:PrincipalArn"
        values   = var.break_glass_role_arns
      }
    }
  }
}

resource "aws_kms_key" "logs" {
  description             = "worm-pipeline: SSE-KMS for the locked log and witness buckets"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = var.kms_deletion_window_in_days
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = var.tags
}

resource "aws_kms_alias" "logs" {
  name          = "alias/${var.bucket_name}"
  target_key_id = aws_kms_key.logs.key_id
}

# ---------------------------------------------------------------------------
# The locked buckets: logs and witness
# ---------------------------------------------------------------------------

resource "aws_s3_bucket" "locked" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is a deployment choice (a second region and key); the witness bucket already keeps an independent copy of every checkpoint.
  for_each = local.locked_buckets

  bucket = each.value.name
  # Object Lock can only be enabled at creation; it also forces versioning on.
  object_lock_enabled = true
  # Never let `terraform destroy` empty a bucket (it could not delete locked versions anyway).
  force_destroy = false
  tags          = merge(var.tags, { "worm-pipeline/role" = each.key })
}

resource "aws_s3_bucket_versioning" "locked" {
  for_each = aws_s3_bucket.locked

  bucket = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "locked" {
  for_each = aws_s3_bucket.locked

  bucket = each.value.id
  rule {
    default_retention {
      mode = "COMPLIANCE"
      days = local.locked_buckets[each.key].retention_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.locked]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "locked" {
  for_each = aws_s3_bucket.locked

  bucket = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.logs.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "locked" {
  for_each = aws_s3_bucket.locked

  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "locked" {
  for_each = aws_s3_bucket.locked

  bucket = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "locked" {
  for_each = aws_s3_bucket.locked

  bucket = each.value.id

  # Storage-class transitions keep each version's Object Lock retention: S3 changes the
  # class of the locked version in place (same version ID, same COMPLIANCE retain-until
  # date and legal hold), it does not copy or delete it.  The rule stops at GLACIER_IR
  # on purpose: it is read in milliseconds, so `pipeline verify-tier --deep`, export and
  # restore work without a thaw; GLACIER/DEEP_ARCHIVE would need a RestoreObject first
  # (the cold tier reports ObjectArchivedError with the command).  Costs: docs/COSTS.md.
  rule {
    id     = "colder-storage"
    status = "Enabled"

    filter {}

    transition {
      days          = var.transition_to_standard_ia_days
      storage_class = "STANDARD_IA"
    }

    transition {
      days          = var.transition_to_glacier_ir_days
      storage_class = "GLACIER_IR"
    }

    noncurrent_version_transition {
      noncurrent_days = var.transition_to_standard_ia_days
      storage_class   = "STANDARD_IA"
    }

    noncurrent_version_transition {
      noncurrent_days = var.transition_to_glacier_ir_days
      storage_class   = "GLACIER_IR"
    }

    # Multipart uploads (segments >= cold multipart_threshold) are aborted by the shipper
    # on failure; this removes the parts an abort could not reach (an outage), which are
    # otherwise billed as storage forever and invisible to listings.
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  dynamic "rule" {
    for_each = var.expire_after_days == null ? [] : [var.expire_after_days]
    content {
      id     = "expire-after-retention"
      status = "Enabled"

      filter {}

      expiration {
        days = rule.value
      }

      noncurrent_version_expiration {
        noncurrent_days = 1
      }

      abort_incomplete_multipart_upload {
        days_after_initiation = 7
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.locked]
}

resource "aws_s3_bucket_logging" "locked" {
  for_each = aws_s3_bucket.locked

  bucket        = each.value.id
  target_bucket = aws_s3_bucket.access_logs.id
  target_prefix = "${each.value.id}/"

  # S3 checks the target's permissions on PutBucketLogging (InvalidTargetBucketForLogging):
  # the access-log bucket's policy granting logging.s3.amazonaws.com must exist first.
  # Found by applying the module to moto's server (tests/infra/test_terraform_validate.py).
  depends_on = [aws_s3_bucket_policy.access_logs]
}

resource "aws_s3_bucket_notification" "locked" {
  for_each = aws_s3_bucket.locked

  bucket = each.value.id
  # Object-level events (created, delete-marker created, lock changes) go to
  # EventBridge, where an alerting rule can page on anything but ObjectCreated.
  eventbridge = true
}

data "aws_iam_policy_document" "bucket" {
  for_each = local.locked_buckets

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      "arn:${local.partition}:s3:::${each.value.name}",
      "arn:${local.partition}:s3:::${each.value.name}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  # TLS 1.0/1.1 are refused as well as plain HTTP.
  statement {
    sid     = "DenyTLSOlderThan12"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      "arn:${local.partition}:s3:::${each.value.name}",
      "arn:${local.partition}:s3:::${each.value.name}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }

  # Objects are encrypted with the module's key: an upload without an encryption header
  # gets the bucket default (SSE-KMS with that key; the pipeline sends no header by
  # default), one that names another key or SSE-S3 is refused.  Each condition pairs
  # Null=false with the comparison, because a negated operator on an absent header is true.
  statement {
    sid       = "DenyOtherEncryptionThanSSEKMS"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["arn:${local.partition}:s3:::${each.value.name}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Null"
      variable = "s3:x-amz-server-side-encryption"
      values   = ["false"]
    }

    condition {
      test     = "StringNotEquals"
      variable = "s3:x-amz-server-side-encryption"
      values   = ["aws:kms"]
    }
  }

  statement {
    sid       = "DenyWrongKMSKey"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["arn:${local.partition}:s3:::${each.value.name}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Null"
      variable = "s3:x-amz-server-side-encryption-aws-kms-key-id"
      values   = ["false"]
    }

    condition {
      test     = "StringNotEquals"
      variable = "s3:x-amz-server-side-encryption-aws-kms-key-id"
      values   = [aws_kms_key.logs.arn]
    }
  }

  # Legal holds: anyone allowed may place one (ON); only the legal roles may lift one
  # (OFF).  The condition key is present on PutObjectLegalHold and on a PutObject that
  # carries a legal-hold header.  With no legal role configured nobody can lift a hold
  # until one is added here (a reviewed Terraform change).
  statement {
    sid       = "DenyLiftingLegalHoldsExceptLegalRoles"
    effect    = "Deny"
    actions   = ["s3:PutObjectLegalHold", "s3:PutObject"]
    resources = ["arn:${local.partition}:s3:::${each.value.name}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "StringEquals"
      variable = "s3:object-lock-legal-hold"
      values   = ["OFF"]
    }

    dynamic "condition" {
      for_each = length(var.legal_hold_role_arns) > 0 ? [1] : []
      content {
        test     = "ArnNotLike"
        variable = "aws:PrincipalArn"
        values   = var.legal_hold_role_arns
      }
    }
  }

  statement {
    sid    = "DenyDeletionAndLockChanges"
    effect = "Deny"
    actions = [
      "s3:DeleteObject*",
      "s3:BypassGovernanceRetention",
      "s3:PutBucketObjectLockConfiguration",
      "s3:DeleteBucket",
    ]
    resources = [
      "arn:${local.partition}:s3:::${each.value.name}",
      "arn:${local.partition}:s3:::${each.value.name}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    dynamic "condition" {
      for_each = length(var.break_glass_role_arns) > 0 ? [1] : []
      content {
        test     = "ArnNotLike"
        variable = "aws:PrincipalArn"
        values   = var.break_glass_role_arns
      }
    }
  }

  statement {
    sid       = "DenyGovernanceModeRetention"
    effect    = "Deny"
    actions   = ["s3:PutObject", "s3:PutObjectRetention"]
    resources = ["arn:${local.partition}:s3:::${each.value.name}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "StringEquals"
      variable = "s3:object-lock-mode"
      values   = ["GOVERNANCE"]
    }
  }

  statement {
    sid       = "DenyShortRetention"
    effect    = "Deny"
    actions   = ["s3:PutObject", "s3:PutObjectRetention"]
    resources = ["arn:${local.partition}:s3:::${each.value.name}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "NumericLessThan"
      variable = "s3:object-lock-remaining-retention-days"
      values   = [tostring(local.min_remaining_retention_days[each.key])]
    }
  }
}

resource "aws_s3_bucket_policy" "locked" {
  for_each = aws_s3_bucket.locked

  bucket = each.value.id
  policy = data.aws_iam_policy_document.bucket[each.key].json

  # The policy denies s3:PutBucketObjectLockConfiguration: set the lock first.
  depends_on = [
    aws_s3_bucket_object_lock_configuration.locked,
    aws_s3_bucket_public_access_block.locked,
  ]
}

# ---------------------------------------------------------------------------
# Access-log bucket (S3 server access logs of both locked buckets)
# ---------------------------------------------------------------------------

resource "aws_s3_bucket" "access_logs" {
  #checkov:skip=CKV_AWS_18:This is the access-log target; logging it to itself would loop and logging it elsewhere needs yet another bucket.
  #checkov:skip=CKV_AWS_144:Cross-region replication of access logs is out of scope for this module.
  #checkov:skip=CKV_AWS_145:S3 server access logging only delivers to buckets encrypted with SSE-S3, not SSE-KMS.
  #checkov:skip=CKV_AWS_143:S3 server access logging does not deliver to a bucket with a default Object Lock retention.
  bucket        = local.access_log_bucket
  force_destroy = false
  tags          = merge(var.tags, { "worm-pipeline/role" = "access-logs" })
}

resource "aws_s3_bucket_versioning" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "access_logs" {
  bucket                  = aws_s3_bucket.access_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"

    filter {}

    expiration {
      days = var.access_log_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 30
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.access_logs]
}

resource "aws_s3_bucket_notification" "access_logs" {
  bucket      = aws_s3_bucket.access_logs.id
  eventbridge = true
}

data "aws_iam_policy_document" "access_logs" {
  statement {
    sid       = "S3ServerAccessLogsDelivery"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/*"]

    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [for b in aws_s3_bucket.locked : b.arn]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.access_logs.arn,
      "${aws_s3_bucket.access_logs.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "access_logs" {
  bucket     = aws_s3_bucket.access_logs.id
  policy     = data.aws_iam_policy_document.access_logs.json
  depends_on = [aws_s3_bucket_public_access_block.access_logs]
}

# ---------------------------------------------------------------------------
# IAM policy for the shipper: only the calls pipeline/cold/s3.py makes
# ---------------------------------------------------------------------------

data "aws_iam_policy_document" "shipper" {
  statement {
    sid = "WriteAndVerifySegments"
    # PutObject covers CreateMultipartUpload/UploadPart/CompleteMultipartUpload.
    # PutObjectRetention is needed because uploads carry explicit COMPLIANCE
    # retain-until headers; the bucket policy refuses GOVERNANCE mode and anything
    # shorter than the bucket default, and S3 itself refuses to shorten COMPLIANCE.
    # AbortMultipartUpload discards the parts of a failed upload, never a stored object.
    effect = "Allow"
    actions = [
      "s3:PutObject",
      "s3:PutObjectRetention",
      "s3:AbortMultipartUpload",
      "s3:GetObject",
      "s3:GetObjectAttributes",
      "s3:GetObjectRetention",
      "s3:GetObjectLegalHold",
    ]
    resources = [for b in aws_s3_bucket.locked : "${b.arn}/*"]
  }

  # A stolen shipper credential may place holds (cold.legal_hold) but never lift one:
  # allowed only with the hold ON (the bucket policy also denies OFF to all but the
  # legal roles, whatever other policies grant).
  statement {
    sid       = "PlaceLegalHoldsOnly"
    effect    = "Allow"
    actions   = ["s3:PutObjectLegalHold"]
    resources = [for b in aws_s3_bucket.locked : "${b.arn}/*"]

    condition {
      test     = "StringEquals"
      variable = "s3:object-lock-legal-hold"
      values   = ["ON"]
    }
  }

  statement {
    sid    = "ListAndCheckLock"
    effect = "Allow"
    actions = [
      "s3:ListBucket",
      "s3:GetBucketObjectLockConfiguration",
    ]
    resources = [for b in aws_s3_bucket.locked : b.arn]
  }

  statement {
    sid    = "UseTheBucketKey"
    effect = "Allow"
    actions = [
      "kms:GenerateDataKey",
      "kms:Decrypt",
    ]
    resources = [aws_kms_key.logs.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}

resource "aws_iam_policy" "shipper" {
  name        = var.shipper_policy_name
  description = "worm-pipeline shipper: write and verify segments and checkpoints, place (never lift) legal holds; no delete, no governance bypass, no bucket configuration"
  policy      = data.aws_iam_policy_document.shipper.json
  tags        = var.tags
}

# ---------------------------------------------------------------------------
# IAM policies for the auditor (read-only) and the legal team (lift holds)
# ---------------------------------------------------------------------------

# Everything `pipeline verify-tier`, `export` and `restore` read, and nothing else: no
# Put*, no Delete*, no bucket configuration changes.
data "aws_iam_policy_document" "auditor" {
  statement {
    sid    = "ReadSegmentsAndLocks"
    effect = "Allow"
    actions = [
      "s3:GetObject",
      "s3:GetObjectVersion",
      "s3:GetObjectAttributes",
      "s3:GetObjectVersionAttributes",
      "s3:GetObjectRetention",
      "s3:GetObjectLegalHold",
    ]
    resources = [for b in aws_s3_bucket.locked : "${b.arn}/*"]
  }

  statement {
    sid    = "ListAndReadBucketConfiguration"
    effect = "Allow"
    actions = [
      "s3:ListBucket",
      "s3:ListBucketVersions",
      "s3:GetBucketObjectLockConfiguration",
      "s3:GetBucketVersioning",
      "s3:GetEncryptionConfiguration",
      "s3:GetBucketPolicy",
      "s3:GetLifecycleConfiguration",
    ]
    resources = [for b in aws_s3_bucket.locked : b.arn]
  }

  statement {
    sid       = "DecryptThroughS3"
    effect    = "Allow"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.logs.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}

resource "aws_iam_policy" "auditor" {
  name        = var.auditor_policy_name
  description = "worm-pipeline auditor: read segments, checkpoints, locks and bucket configuration; no writes"
  policy      = data.aws_iam_policy_document.auditor.json
  tags        = var.tags
}

# The only grant that can switch a legal hold OFF; the bucket policy denies it to every
# principal not listed in var.legal_hold_role_arns.
data "aws_iam_policy_document" "legal_hold" {
  statement {
    sid    = "PlaceAndLiftLegalHolds"
    effect = "Allow"
    actions = [
      "s3:PutObjectLegalHold",
      "s3:GetObjectLegalHold",
      "s3:GetObjectRetention",
    ]
    resources = [for b in aws_s3_bucket.locked : "${b.arn}/*"]
  }

  statement {
    sid       = "ListObjects"
    effect    = "Allow"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions"]
    resources = [for b in aws_s3_bucket.locked : b.arn]
  }
}

resource "aws_iam_policy" "legal_hold" {
  name        = var.legal_hold_policy_name
  description = "worm-pipeline legal team: place and lift legal holds on log and witness objects"
  policy      = data.aws_iam_policy_document.legal_hold.json
  tags        = var.tags
}
