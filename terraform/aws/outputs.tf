output "bucket_name" {
  description = "Name of the locked log bucket."
  value       = aws_s3_bucket.locked["logs"].id
}

output "bucket_arn" {
  description = "ARN of the locked log bucket."
  value       = aws_s3_bucket.locked["logs"].arn
}

output "witness_bucket_name" {
  description = "Name of the locked witness bucket for signed checkpoints."
  value       = aws_s3_bucket.locked["witness"].id
}

output "witness_bucket_arn" {
  description = "ARN of the locked witness bucket."
  value       = aws_s3_bucket.locked["witness"].arn
}

output "access_log_bucket_name" {
  description = "Name of the bucket receiving S3 server access logs."
  value       = aws_s3_bucket.access_logs.id
}

output "kms_key_arn" {
  description = "ARN of the customer-managed KMS key encrypting both locked buckets."
  value       = aws_kms_key.logs.arn
}

output "shipper_policy_arn" {
  description = "ARN of the IAM policy to attach to the shipper's role (IRSA role, instance profile or task role)."
  value       = aws_iam_policy.shipper.arn
}

output "auditor_policy_arn" {
  description = "ARN of the read-only IAM policy for auditors: objects, versions, locks, legal holds and bucket configuration of both locked buckets, kms:Decrypt through S3. No write of any kind."
  value       = aws_iam_policy.auditor.arn
}

output "legal_hold_policy_arn" {
  description = "ARN of the IAM policy that places and lifts legal holds; attach it only to the roles in legal_hold_role_arns (the bucket policy denies lifting to everyone else)."
  value       = aws_iam_policy.legal_hold.arn
}

output "cold_url" {
  description = "Value for the pipeline's [cold] url (append a prefix such as /prod if wanted)."
  value       = "s3://${aws_s3_bucket.locked["logs"].id}?region=${data.aws_region.current.name}"
}

output "retention_days" {
  description = "Default COMPLIANCE retention of the log bucket; set the pipeline's [cold] retention_days to this value."
  value       = var.retention_days
}
