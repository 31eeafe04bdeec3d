variable "resource_group_name" {
  description = "Existing resource group that holds the storage account."
  type        = string
}

variable "location" {
  description = "Azure region of the storage account, for example westeurope."
  type        = string
}

variable "storage_account_name" {
  description = "Globally unique storage account name (3-24 lower-case letters and digits). The pipeline's [cold] url is az://<storage_account_name>/<container_name>/<prefix>."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]{3,24}$", var.storage_account_name))
    error_message = "storage_account_name must be 3-24 lower-case letters and digits."
  }
}

variable "container_name" {
  description = "Container for sealed segments."
  type        = string
  default     = "audit-logs"
}

variable "witness_container_name" {
  description = "Container for signed checkpoints (the external witness). For real independence put the witness in another account or subscription with the same module."
  type        = string
  default     = "audit-witness"
}

variable "retention_days" {
  description = "Time-based retention, in days since creation, of the locked container policies and the account's default version-level policy. Locked policies can be extended but never shortened or deleted. 2555 days = 7 years; must be at least the pipeline's [cold] retention_days."
  type        = number
  default     = 2555

  validation {
    condition     = var.retention_days >= 1 && var.retention_days <= 146000
    error_message = "retention_days must be between 1 and 146000 (Azure's maximum)."
  }
}

variable "account_immutability_state" {
  description = "State of the account-level default version-level immutability policy: Unlocked (can still be changed; the locked container policies are the enforcement) or Locked (irreversible: can only be extended)."
  type        = string
  default     = "Unlocked"

  validation {
    condition     = contains(["Unlocked", "Locked"], var.account_immutability_state)
    error_message = "account_immutability_state must be Unlocked or Locked."
  }
}

variable "replication_type" {
  description = "Storage redundancy: GRS, RAGRS, GZRS or RAGZRS (geo-redundant: a regional outage does not lose the only copy of the audit trail)."
  type        = string
  default     = "RAGZRS"

  validation {
    condition     = contains(["GRS", "RAGRS", "GZRS", "RAGZRS"], var.replication_type)
    error_message = "replication_type must be geo-redundant: GRS, RAGRS, GZRS or RAGZRS."
  }
}

variable "allowed_subnet_ids" {
  description = "Subnet IDs (with the Microsoft.Storage service endpoint) allowed through the account firewall, typically the AKS node subnet running the sidecar."
  type        = list(string)
  default     = []
}

variable "allowed_ip_ranges" {
  description = "Public IPv4 addresses or CIDR ranges allowed through the account firewall (for example an operator's egress address for `pipeline verify`). Private ranges are not allowed by Azure here."
  type        = list(string)
  default     = []
}

variable "log_analytics_workspace_id" {
  description = "Log Analytics workspace receiving the blob service's StorageRead/StorageWrite/StorageDelete logs. null disables the diagnostic setting."
  type        = string
  default     = null
}

variable "shipper_principal_id" {
  description = "Object ID of the identity the shipper runs as (the user-assigned managed identity federated with the Kubernetes service account, or a service principal). It is given the custom shipper role on this account."
  type        = string
}

variable "shipper_role_name" {
  description = "Name of the custom role definition created for the shipper."
  type        = string
  default     = "worm-pipeline shipper"
}

variable "tags" {
  description = "Tags applied to every resource the module creates."
  type        = map(string)
  default     = {}
}

variable "private_endpoint_subnet_id" {
  description = "Subnet ID for a private endpoint to the blob service. When set, the account's public network access is disabled and the shipper must reach it through this endpoint. Null: no private endpoint, the default-deny firewall applies."
  type        = string
  default     = null
}

variable "private_dns_zone_ids" {
  description = "Private DNS zone IDs (privatelink.blob.core.windows.net) to register the private endpoint in. Empty: manage DNS yourself."
  type        = list(string)
  default     = []
}

variable "auditor_principal_ids" {
  description = "Object IDs of Entra ID principals (auditors) given the built-in Storage Blob Data Reader role on the account: read and list only."
  type        = list(string)
  default     = []
}
