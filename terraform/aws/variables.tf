variable "bucket_name" {
  description = "Name of the Object Lock bucket that receives sealed segments (the pipeline's [cold] url is s3://<bucket_name>/<prefix>). Globally unique."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 characters, lower case, digits, dots, hyphens)."
  }
}

variable "witness_bucket_name" {
  description = "Name of the separate Object Lock bucket that receives signed checkpoints (the external witness). Keep it apart from the log bucket; ideally give it to a different account in production."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.witness_bucket_name))
    error_message = "witness_bucket_name must be a valid S3 bucket name."
  }
}

variable "access_log_bucket_name" {
  description = "Name of the bucket that receives S3 server access logs for both locked buckets. Defaults to \"<bucket_name>-access-logs\"."
  type        = string
  default     = null
}

variable "retention_days" {
  description = "Default Object Lock retention of the log bucket, in days, in COMPLIANCE mode: no one, including the account root user, can delete or shorten it before it expires. 2555 days = 7 years (SOX 802, SEC 17a-4 broker-dealer records take 6; PCI DSS 10.5.1 needs 1). Must match or not exceed the pipeline's [cold] retention_days."
  type        = number
  default     = 2555

  validation {
    condition     = var.retention_days >= 1 && var.retention_days <= 36500
    error_message = "retention_days must be between 1 and 36500."
  }
}

variable "witness_retention_days" {
  description = "Default COMPLIANCE retention of the witness bucket, in days. Checkpoints must outlive the segments they vouch for, so this defaults to the log bucket's retention_days plus one year."
  type        = number
  default     = null
}

variable "transition_to_standard_ia_days" {
  description = "Days after creation when objects move to STANDARD_IA (30 is the minimum S3 allows). Object Lock retention is kept across storage-class transitions."
  type        = number
  default     = 30
}

variable "transition_to_glacier_ir_days" {
  description = "Days after creation when objects move to GLACIER_IR (Glacier Instant Retrieval: millisecond reads, so `pipeline verify` and restores need no restore request). Must be at least 30 days after the STANDARD_IA transition."
  type        = number
  default     = 90
}

variable "expire_after_days" {
  description = "If set, lifecycle expiration (a delete marker, then removal of non-current versions) for objects older than this many days. Must be greater than retention_days: locked versions cannot be removed before their retention date anyway. null keeps everything forever."
  type        = number
  default     = null

  validation {
    condition     = var.expire_after_days == null || try(var.expire_after_days > var.retention_days, false)
    error_message = "expire_after_days must be greater than retention_days."
  }
}

variable "access_log_retention_days" {
  description = "Days to keep S3 server access logs in the access-log bucket (PCI DSS 10.5.1 asks for at least one year)."
  type        = number
  default     = 400
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before the KMS key can be deleted once scheduled for deletion (7-30 days). Deleting the key makes every object in the buckets unreadable, locked or not; keep the maximum."
  type        = number
  default     = 30
}

variable "break_glass_role_arns" {
  description = "IAM role ARNs exempt from the bucket policy's denial of s3:DeleteObject*, s3:BypassGovernanceRetention and s3:PutBucketObjectLockConfiguration (for example to delete versions whose retention has expired, or to change the default retention). COMPLIANCE mode still protects every locked version from them. Empty: nobody is exempt."
  type        = list(string)
  default     = []
}

variable "legal_hold_role_arns" {
  description = "IAM role ARNs allowed to lift (set OFF) legal holds; the bucket policy denies it to every other principal, the shipper included. Attach the `legal_hold_policy_arn` output to these roles. Empty: nobody can lift a hold until a role is added."
  type        = list(string)
  default     = []
}

variable "auditor_policy_name" {
  description = "Name of the read-only IAM policy for auditors (output `auditor_policy_arn`)."
  type        = string
  default     = "worm-pipeline-auditor"
}

variable "legal_hold_policy_name" {
  description = "Name of the IAM policy that places and lifts legal holds (output `legal_hold_policy_arn`)."
  type        = string
  default     = "worm-pipeline-legal-hold"
}

variable "shipper_policy_name" {
  description = "Name of the IAM policy created for the shipper sidecar. Attach it to the role the sidecar assumes (IRSA, instance profile or ECS task role)."
  type        = string
  default     = "worm-pipeline-shipper"
}

variable "tags" {
  description = "Tags applied to every resource the module creates."
  type        = map(string)
  default     = {}
}
