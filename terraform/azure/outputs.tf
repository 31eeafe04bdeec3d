output "storage_account_id" {
  description = "Resource ID of the storage account."
  value       = azurerm_storage_account.logs.id
}

output "storage_account_name" {
  description = "Name of the storage account."
  value       = azurerm_storage_account.logs.name
}

output "blob_endpoint" {
  description = "Primary blob endpoint of the account."
  value       = azurerm_storage_account.logs.primary_blob_endpoint
}

output "container_name" {
  description = "Container holding sealed segments."
  value       = azurerm_storage_container.locked["logs"].name
}

output "witness_container_name" {
  description = "Container holding signed checkpoints."
  value       = azurerm_storage_container.locked["witness"].name
}

output "cold_url" {
  description = "Value for the pipeline's [cold] url (append a prefix such as /prod if wanted)."
  value       = "az://${azurerm_storage_account.logs.name}/${azurerm_storage_container.locked["logs"].name}"
}

output "shipper_role_definition_id" {
  description = "Resource ID of the custom shipper role."
  value       = azurerm_role_definition.shipper.role_definition_resource_id
}

output "retention_days" {
  description = "Retention of the locked container policies; set the pipeline's [cold] retention_days to this value."
  value       = var.retention_days
}

output "auditor_role_name" {
  description = "The role given to auditor_principal_ids on the account (read and list blobs only)."
  value       = "Storage Blob Data Reader"
}

output "private_endpoint_ip" {
  description = "Private IP address of the blob private endpoint, or null when none is configured."
  value       = try(azurerm_private_endpoint.blob[0].private_service_connection[0].private_ip_address, null)
}
