# Minimal use of the module: a locked log bucket, a witness bucket, and a role for
# the shipper running on EKS with IAM Roles for Service Accounts.
#
#   cd terraform/aws/examples/basic
#   terraform init && terraform apply -var oidc_provider_arn=... -var oidc_provider_url=...

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region for the buckets."
  type        = string
  default     = "eu-west-1"
}

variable "name_prefix" {
  description = "Prefix for the bucket names (bucket names are global: pick something unique)."
  type        = string
  default     = "acme-audit-prod"
}

variable "oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider (aws_iam_openid_connect_provider)."
  type        = string
}

variable "oidc_provider_url" {
  description = "Issuer URL of the EKS cluster's OIDC provider without https:// (oidc.eks.<region>.amazonaws.com/id/<id>)."
  type        = string
}

variable "break_glass_role_arn" {
  description = "Role allowed to change Object Lock configuration and delete expired versions; null for none."
  type        = string
  default     = null
}

module "worm_storage" {
  source = "../.."

  bucket_name           = "${var.name_prefix}-logs"
  witness_bucket_name   = "${var.name_prefix}-witness"
  retention_days        = 2555
  break_glass_role_arns = var.break_glass_role_arn == null ? [] : [var.break_glass_role_arn]

  tags = {
    service = "worm-pipeline"
    env     = "prod"
  }
}

# The role the sidecar assumes through the Kubernetes service account
# audit-demo/worm-pipeline (deploy/kubernetes/serviceaccount.yaml).
data "aws_iam_policy_document" "shipper_trust" {
  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:sub"
      values   = ["system:serviceaccount:audit-demo:worm-pipeline"]
    }

    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "shipper" {
  name               = "worm-pipeline-shipper"
  assume_role_policy = data.aws_iam_policy_document.shipper_trust.json
}

resource "aws_iam_role_policy_attachment" "shipper" {
  role       = aws_iam_role.shipper.name
  policy_arn = module.worm_storage.shipper_policy_arn
}

output "cold_url" {
  description = "Put this in pipeline.toml [cold] url."
  value       = module.worm_storage.cold_url
}

output "shipper_role_arn" {
  description = "Annotate the service account with eks.amazonaws.com/role-arn set to this."
  value       = aws_iam_role.shipper.arn
}
