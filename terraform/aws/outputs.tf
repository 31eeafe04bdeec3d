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

output "cold_url" {
  description = "Value for the pipeline's [cold] url (append a prefix such as /prod if wanted)."
  value       = "s3://${aws_s3_bucket.locked["logs"].id}?region=${data.aws_region.current.region}"
}

output "retention_days" {
  description = "Default COMPLIANCE retention of the log bucket; set the pipeline's [cold] retention_days to this value."
  value       = var.retention_days
}
