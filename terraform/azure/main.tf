# Locked storage for worm-pipeline on Azure Blob Storage.
#
# A StorageV2 account with TLS 1.2+, HTTPS only, no public blob access, no shared
# keys (Entra ID only), infrastructure (double) encryption, blob versioning and
# version-level immutability; a firewall that denies by default; two containers
# (segments, checkpoints) each under a locked time-based retention policy that
# allows only protected appends; and a custom role for the shipper with no delete
# rights, assigned to the shipper's identity.

locals {
  containers = {
    logs    = var.container_name
    witness = var.witness_container_name
  }
}

resource "azurerm_storage_account" "logs" {
  #checkov:skip=CKV2_AZURE_1:Encrypted with Microsoft-managed keys plus infrastructure encryption; customer-managed keys need a Key Vault whose loss would make the archive unreadable, so they are an opt-in outside this module.
  #checkov:skip=CKV_AZURE_59:Access is restricted by the firewall below (default deny, allow-listed subnets and IPs); set public_network_access_enabled = false when the shipper reaches the account through a private endpoint.
  #checkov:skip=CKV_AZURE_33:The account's queue service is unused; blob requests are logged by azurerm_monitor_diagnostic_setting.blob.
  #checkov:skip=CKV2_AZURE_33:The private endpoint is optional (var.private_endpoint_subnet_id, azurerm_private_endpoint.blob) because it depends on the caller's virtual network; the default-deny firewall is the baseline without it.
  name                     = var.storage_account_name
  resource_group_name      = var.resource_group_name
  location                 = var.location
  account_kind             = "StorageV2"
  account_tier             = "Standard"
  account_replication_type = var.replication_type
  access_tier              = "Hot"

  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  infrastructure_encryption_enabled = true
  # With a private endpoint the public endpoint is switched off entirely.
  public_network_access_enabled = var.private_endpoint_subnet_id == null
  cross_tenant_replication_enabled  = false
  local_user_enabled                = false
  sftp_enabled                      = false
  # Version-level immutability is not available with a hierarchical namespace.
  is_hns_enabled = false

  # Account-wide default: every new blob version is immutable for retention_days.
  # Needs blob versioning (below).
  immutability_policy {
    allow_protected_append_writes = true
    state                         = var.account_immutability_state
    period_since_creation_in_days = var.retention_days
  }

  blob_properties {
    versioning_enabled  = true
    change_feed_enabled = true

    delete_retention_policy {
      days = 30
    }

    container_delete_retention_policy {
      days = 30
    }
  }

  network_rules {
    default_action             = "Deny"
    bypass                     = ["AzureServices", "Logging", "Metrics"]
    ip_rules                   = var.allowed_ip_ranges
    virtual_network_subnet_ids = var.allowed_subnet_ids
  }

  sas_policy {
    expiration_period = "01.00:00:00"
    expiration_action = "Log"
  }

  tags = var.tags
}

resource "azurerm_storage_container" "locked" {
  #checkov:skip=CKV2_AZURE_21:Blob read/write/delete requests are logged through azurerm_monitor_diagnostic_setting.blob (resource logs); the legacy azurerm_log_analytics_storage_insights this check looks for needs an account key, and shared keys are disabled.
  for_each = local.containers

  name                  = each.value
  storage_account_id    = azurerm_storage_account.logs.id
  container_access_type = "private"
}

resource "azurerm_storage_container_immutability_policy" "locked" {
  for_each = azurerm_storage_container.locked

  storage_container_resource_manager_id = each.value.id
  immutability_period_in_days           = var.retention_days
  # Appends to append blobs are allowed, rewriting or deleting anything is not.
  protected_append_writes_enabled = true
  # Locking is irreversible: the period can then only be extended, and neither the
  # container nor the account can be deleted while it holds protected blobs.
  locked = true
}

resource "azurerm_monitor_diagnostic_setting" "blob" {
  count = var.log_analytics_workspace_id == null ? 0 : 1

  name                       = "worm-pipeline-blob-audit"
  target_resource_id         = "${azurerm_storage_account.logs.id}/blobServices/default"
  log_analytics_workspace_id = var.log_analytics_workspace_id

  enabled_log {
    category = "StorageRead"
  }

  enabled_log {
    category = "StorageWrite"
  }

  enabled_log {
    category = "StorageDelete"
  }

  enabled_metric {
    category = "Transaction"
  }
}

# The shipper uploads, reads back and lists; it never deletes.  Explicit
# not_data_actions keep delete and the immutability super-user action out even if
# the allowed list is widened later.
resource "azurerm_role_definition" "shipper" {
  name        = var.shipper_role_name
  scope       = azurerm_storage_account.logs.id
  description = "worm-pipeline shipper: write, append and read blobs, list containers; no delete, no immutability override"

  permissions {
    actions = [
      "Microsoft.Storage/storageAccounts/blobServices/containers/read",
    ]
    data_actions = [
      "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
      "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
      "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
    ]
    not_data_actions = [
      "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
      "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/deleteBlobVersion/action",
      "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/permanentDelete/action",
      "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/immutableStorage/runAsSuperUser/action",
    ]
  }

  assignable_scopes = [azurerm_storage_account.logs.id]
}

resource "azurerm_role_assignment" "shipper" {
  scope              = azurerm_storage_account.logs.id
  role_definition_id = azurerm_role_definition.shipper.role_definition_resource_id
  principal_id       = var.shipper_principal_id
}

# ---------------------------------------------------------------------------
# Optional private endpoint for the blob service
# ---------------------------------------------------------------------------

# The shipper then reaches the account over a private IP in its own virtual network and
# the account's public endpoint is disabled (public_network_access_enabled above).
resource "azurerm_private_endpoint" "blob" {
  count = var.private_endpoint_subnet_id == null ? 0 : 1

  name                = "${var.storage_account_name}-blob"
  resource_group_name = var.resource_group_name
  location            = var.location
  subnet_id           = var.private_endpoint_subnet_id

  private_service_connection {
    name                           = "${var.storage_account_name}-blob"
    private_connection_resource_id = azurerm_storage_account.logs.id
    subresource_names              = ["blob"]
    is_manual_connection           = false
  }

  dynamic "private_dns_zone_group" {
    for_each = length(var.private_dns_zone_ids) > 0 ? [1] : []
    content {
      name                 = "blob"
      private_dns_zone_ids = var.private_dns_zone_ids
    }
  }

  tags = var.tags
}

# ---------------------------------------------------------------------------
# Read-only access for auditors
# ---------------------------------------------------------------------------

# Storage Blob Data Reader: list containers and read blobs, their versions, properties,
# immutability policies and legal holds; nothing else (what `pipeline verify-tier`,
# `export` and `restore` need).
resource "azurerm_role_assignment" "auditor" {
  for_each = toset(var.auditor_principal_ids)

  scope                = azurerm_storage_account.logs.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = each.value
}
