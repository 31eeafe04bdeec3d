terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.x and 6.x: the split aws_s3_bucket_* resources and
      # aws_kms_key.rotation_period_in_days exist in both; data.aws_region.name (not 6.x's
      # `region`) is read.  tests/infra/test_terraform_validate.py runs `terraform
      # validate` against 5.100.0.
      version = ">= 5.40, < 7.0"
    }
  }
}
