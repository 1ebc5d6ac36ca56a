output "worker_user_data" {
  description = "cloud-init user-data (#cloud-config) of the worker VMs."
  value       = local.worker_user_data
}

output "worker_metadata" {
  description = "Instance metadata of the worker template: user-data, the image key read by the unit, logging and SSH settings."
  value = merge(local.common_metadata, {
    user-data   = local.worker_user_data
    drove-image = var.worker_image
  })
}

output "worker_env" {
  description = "Environment of the worker container (plain settings only; the database URL comes from a file)."
  value       = local.worker_env
}

output "worker_unit" {
  description = "The worker's systemd unit, as written to /etc/systemd/system/drove-worker.service."
  value       = local.worker_unit
}

output "worker_drain_grace_seconds" {
  description = "Drain grace given to the worker (DROVE_GRACE)."
  value       = local.grace_seconds
}

output "worker_stop_timeout_seconds" {
  description = "docker stop timeout of the worker container: the grace plus a margin."
  value       = local.stop_timeout_seconds
}

output "health_port" {
  description = "Port of the worker's HTTP server (/healthz, /readyz, /metrics): the MIG's named port and health-check port."
  value       = var.worker.http_port
}

output "health_path" {
  description = "Liveness path probed by the autohealing health check."
  value       = local.health_path
}

output "controller_user_data" {
  description = "cloud-init user-data of the controller VM, or null without a controller."
  value       = local.controller_user_data
}

output "controller_metadata" {
  description = "Instance metadata of the controller VM, or null without a controller."
  value = var.controller_image == null ? null : merge(local.common_metadata, {
    user-data   = local.controller_user_data
    drove-image = var.controller_image
  })
}

output "controller_env" {
  description = "Environment of the controller container."
  value       = local.controller_env
}

output "controller_unit" {
  description = "The controller's systemd unit, or null without a controller."
  value       = local.controller_unit
}

output "registries" {
  description = "Artifact Registry hosts the VMs log in to."
  value       = local.registries
}

output "database_ca_cert_path" {
  description = "Path of the database CA file on the VMs and in the containers, for sslrootcert= in the database URL."
  value       = local.ca_cert_path
}
