# Minimal use of the module: a locked account for a shipper running on AKS with
# workload identity (deploy/kubernetes/serviceaccount.yaml, Azure variant).
#
#   cd terraform/azure/examples/basic
#   terraform init && terraform apply -var aks_oidc_issuer_url=... -var aks_subnet_id=...

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.0, < 5.0"
    }
  }
}

provider "azurerm" {
  features {}
  # The account has shared keys disabled: the provider must use Entra ID for data-plane calls.
  storage_use_azuread = true
}

variable "location" {
  description = "Azure region."
  type        = string
  default     = "westeurope"
}

variable "aks_oidc_issuer_url" {
  description = "OIDC issuer URL of the AKS cluster (az aks show --query oidcIssuerProfile.issuerUrl)."
  type        = string
}

variable "aks_subnet_id" {
  description = "Subnet of the AKS nodes; it needs the Microsoft.Storage service endpoint."
  type        = string
}

variable "log_analytics_workspace_id" {
  description = "Log Analytics workspace for the blob service's audit logs."
  type        = string
  default     = null
}

resource "azurerm_resource_group" "audit" {
  name     = "rg-audit-prod"
  location = var.location
}

resource "azurerm_user_assigned_identity" "shipper" {
  name                = "id-worm-pipeline-shipper"
  resource_group_name = azurerm_resource_group.audit.name
  location            = azurerm_resource_group.audit.location
}

resource "azurerm_federated_identity_credential" "shipper" {
  name                = "aks-audit-demo-worm-pipeline"
  resource_group_name = azurerm_resource_group.audit.name
  parent_id           = azurerm_user_assigned_identity.shipper.id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = var.aks_oidc_issuer_url
  subject             = "system:serviceaccount:audit-demo:worm-pipeline"
}

module "worm_storage" {
  source = "../.."

  resource_group_name        = azurerm_resource_group.audit.name
  location                   = azurerm_resource_group.audit.location
  storage_account_name       = "acmeauditprodlogs"
  retention_days             = 2555
  allowed_subnet_ids         = [var.aks_subnet_id]
  log_analytics_workspace_id = var.log_analytics_workspace_id
  shipper_principal_id       = azurerm_user_assigned_identity.shipper.principal_id

  tags = {
    service = "worm-pipeline"
    env     = "prod"
  }
}

output "cold_url" {
  description = "Put this in pipeline.toml [cold] url."
  value       = module.worm_storage.cold_url
}

output "shipper_client_id" {
  description = "Annotate the service account with azure.workload.identity/client-id set to this."
  value       = azurerm_user_assigned_identity.shipper.client_id
}
