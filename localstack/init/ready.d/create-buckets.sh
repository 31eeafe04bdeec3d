#!/usr/bin/env bash
# LocalStack ready hook: create the buckets the way terraform/aws does.
#   audit-logs     Object Lock enabled at creation, versioning, default COMPLIANCE retention
#   audit-witness  the same, for signed checkpoints
# Retention is short by default (LOCK_RETENTION_DAYS=1) so a local stack can be thrown
# away; the Terraform default is 2555 days.  Runs inside the LocalStack container,
# where awslocal is installed; idempotent.
set -euo pipefail

days="${LOCK_RETENTION_DAYS:-1}"
buckets="${LOCK_BUCKETS:-audit-logs audit-witness}"

for bucket in $buckets; do
  if awslocal s3api head-bucket --bucket "$bucket" 2>/dev/null; then
    echo "create-buckets: $bucket exists"
  else
    awslocal s3api create-bucket --bucket "$bucket" --object-lock-enabled-for-bucket
    echo "create-buckets: created $bucket"
  fi
  awslocal s3api put-bucket-versioning --bucket "$bucket" \
    --versioning-configuration Status=Enabled
  awslocal s3api put-object-lock-configuration --bucket "$bucket" \
    --object-lock-configuration "{\"ObjectLockEnabled\":\"Enabled\",\"Rule\":{\"DefaultRetention\":{\"Mode\":\"COMPLIANCE\",\"Days\":$days}}}"
  awslocal s3api put-public-access-block --bucket "$bucket" \
    --public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
  awslocal s3api get-object-lock-configuration --bucket "$bucket"
done
