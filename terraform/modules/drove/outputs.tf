output "group_name" {
  description = "Name of the regional managed instance group of workers (the --group of scripts/rolling-update.sh)."
  value       = google_compute_region_instance_group_manager.workers.name
}

output "group_self_link" {
  description = "Self link of the worker instance group manager."
  value       = google_compute_region_instance_group_manager.workers.self_link
}

output "instance_group" {
  description = "The instance group the manager creates (for load balancer backends, if any)."
  value       = google_compute_region_instance_group_manager.workers.instance_group
}

output "worker_instance_template" {
  description = "Name of the worker instance template terraform manages."
  value       = google_compute_instance_template.worker.name
}

output "worker_instance_template_self_link" {
  description = "Self link of that template."
  value       = google_compute_instance_template.worker.self_link
}

output "worker_service_account" {
  description = "Email of the workers' service account."
  value       = google_service_account.worker.email
}

output "worker_drain_grace_seconds" {
  description = "Drain grace of the workers (DROVE_GRACE); docker's stop timeout is this + 5 s."
  value       = module.cloud_init.worker_drain_grace_seconds
}

output "worker_env" {
  description = "Environment of the worker container (no secrets)."
  value       = module.cloud_init.worker_env
}

output "health_check" {
  description = "Self link of the autohealing health check."
  value       = google_compute_health_check.worker.self_link
}

output "autoscaler" {
  description = "Name of the autoscaler (scaling_mode = autoscaler-metric), else null."
  value       = one(google_compute_region_autoscaler.workers[*].name)
}

output "controller_service_account" {
  description = "Email of the controller's service account, or null."
  value       = one(google_service_account.controller[*].email)
}

output "controller_instance" {
  description = "Name of the controller VM, or null."
  value       = one(google_compute_instance.controller[*].name)
}

output "controller_zone" {
  description = "Zone of the controller VM, or null."
  value       = local.controller_zone
}

output "controller_internal_ip" {
  description = "Private IP of the controller (API, dashboard and /metrics on controller_listen_port)."
  value       = one(google_compute_address.controller[*].address)
}

output "controller_url" {
  description = "Base URL of the controller's API inside the VPC, or null."
  value       = local.controller_enabled ? "http://${google_compute_address.controller[0].address}:${var.controller_listen_port}" : null
}

output "api_token_secret_id" {
  description = "Secret Manager secret holding the controller's API token, or null."
  value       = local.controller_enabled ? local.api_token_secret_id : null
}

output "database_url_secret_id" {
  description = "Secret Manager secret whose latest version is the database URL."
  value       = local.database_url_secret_id
}

output "cloud_sql_instance" {
  description = "Name of the Cloud SQL instance, or null."
  value       = one(google_sql_database_instance.this[*].name)
}

output "cloud_sql_connection_name" {
  description = "Cloud SQL connection name (PROJECT:REGION:INSTANCE), for the Cloud SQL Auth Proxy, or null."
  value       = one(google_sql_database_instance.this[*].connection_name)
}

output "cloud_sql_private_ip" {
  description = "Private IP of the Cloud SQL instance, or null."
  value       = one(google_sql_database_instance.this[*].private_ip_address)
}

output "network" {
  description = "VPC network the VMs use."
  value       = local.network
}

output "subnetwork" {
  description = "Subnet the VMs use."
  value       = local.subnetwork
}

output "scaling_mode" {
  description = "How the group is sized: autoscaler-metric, controller-resize or fixed."
  value       = var.scaling_mode
}

output "rolling_update_command" {
  description = "The command that rolls the group to a new worker image tag."
  value       = "scripts/rolling-update.sh --project ${var.project_id} --region ${var.region} --group ${local.group_name} NEW_TAG"
}
