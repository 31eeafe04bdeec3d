terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.x: data.aws_region's `region` attribute; the split aws_s3_bucket_*
      # resources and aws_kms_key.rotation_period_in_days are there too.
      version = ">= 6.0, < 7.0"
    }
  }
}
