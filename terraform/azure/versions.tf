terraform {
  required_version = ">= 1.5.0"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 4.x: storage_account_id on containers and immutability policies,
      # https_traffic_only_enabled on the account.
      version = ">= 4.0, < 5.0"
    }
  }
}
