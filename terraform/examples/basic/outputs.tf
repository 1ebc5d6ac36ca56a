output "group_name" {
  description = "Worker group (for scripts/rolling-update.sh --group)."
  value       = module.drove.group_name
}

output "worker_instance_template" {
  description = "Worker instance template managed by terraform."
  value       = module.drove.worker_instance_template
}

output "controller_instance" {
  description = "Controller VM name."
  value       = module.drove.controller_instance
}

output "controller_zone" {
  description = "Controller VM zone."
  value       = module.drove.controller_zone
}

output "controller_url" {
  description = "Controller API inside the VPC."
  value       = module.drove.controller_url
}

output "api_token_secret_id" {
  description = "Secret holding the API token."
  value       = module.drove.api_token_secret_id
}

output "database_url_secret_id" {
  description = "Secret holding the database URL."
  value       = module.drove.database_url_secret_id
}

output "worker_service_account" {
  description = "Workers' service account."
  value       = module.drove.worker_service_account
}

output "controller_service_account" {
  description = "Controller's service account."
  value       = module.drove.controller_service_account
}

output "rolling_update_command" {
  description = "How to roll the workers to a new image tag."
  value       = module.drove.rolling_update_command
}
