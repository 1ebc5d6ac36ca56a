# The worker group: a Container-Optimized OS instance template whose
# cloud-init runs the drove-worker container, a regional managed instance
# group with autohealing on /healthz, and (scaling_mode = autoscaler-metric)
# an autoscaler on the controller's queue metric.

resource "google_compute_instance_template" "worker" {
  #checkov:skip=CKV_GCP_32: block-project-ssh-keys = "true" is in module.cloud_init.worker_metadata, which checkov cannot evaluate; scripts/tests/deploy/test_cloud_init.py asserts it on the rendered metadata.
  project     = var.project_id
  name_prefix = "${var.name}-worker-"
  description = "drove worker ${var.worker_image}"
  region      = var.region

  machine_type   = var.worker_machine_type
  can_ip_forward = false
  tags           = ["${var.name}-worker"]
  labels         = merge(local.common_labels, { "drove-role" = "worker" })

  # user-data (cloud-init), drove-image (read by the unit at start), logging
  # and SSH settings: see ../drove-cloud-init.
  metadata = module.cloud_init.worker_metadata

  disk {
    boot         = true
    auto_delete  = true
    source_image = var.cos_image
    disk_size_gb = var.worker_disk_size_gb
    disk_type    = var.worker_disk_type
    type         = "PERSISTENT"
    mode         = "READ_WRITE"
    labels       = local.common_labels
  }

  # No access_config block: no external IP. Egress goes through Cloud NAT.
  network_interface {
    subnetwork = local.subnetwork
  }

  service_account {
    email = google_service_account.worker.email
    # Access is decided by the service account's IAM roles (iam.tf), not by
    # legacy scopes, as Google recommends.
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  scheduling {
    provisioning_model          = var.worker_spot ? "SPOT" : "STANDARD"
    preemptible                 = var.worker_spot
    automatic_restart           = !var.worker_spot
    on_host_maintenance         = var.worker_spot ? "TERMINATE" : "MIGRATE"
    instance_termination_action = var.worker_spot ? "DELETE" : null
  }

  lifecycle {
    # A changed template is a new template; the group moves to it (rolling
    # update per update_policy) before the old one is deleted.
    create_before_destroy = true
  }
}

resource "google_compute_health_check" "worker" {
  project             = var.project_id
  name                = "${var.name}-worker-healthz"
  description         = "Liveness of the drove-worker process (not of the database)."
  check_interval_sec  = var.health_check.check_interval_sec
  timeout_sec         = var.health_check.timeout_sec
  healthy_threshold   = var.health_check.healthy_threshold
  unhealthy_threshold = var.health_check.unhealthy_threshold

  http_health_check {
    port         = module.cloud_init.health_port
    request_path = module.cloud_init.health_path
  }

  depends_on = [google_project_service.apis]
}

resource "google_compute_region_instance_group_manager" "workers" {
  project            = var.project_id
  name               = local.group_name
  region             = var.region
  base_instance_name = "${var.name}-worker"
  description        = "drove workers (${var.scaling_mode})"

  distribution_policy_zones = var.worker_zones

  version {
    name              = "primary"
    instance_template = google_compute_instance_template.worker.self_link_unique
  }

  # Fixed size only; otherwise the autoscaler or the controller owns the size
  # (an unset target_size is not managed by terraform, so no drift).
  target_size = var.scaling_mode == "fixed" ? var.worker_count : null

  named_port {
    name = "http"
    port = module.cloud_init.health_port
  }

  auto_healing_policies {
    health_check      = google_compute_health_check.worker.id
    initial_delay_sec = var.autohealing_initial_delay_sec
  }

  update_policy {
    type                           = "PROACTIVE"
    minimal_action                 = var.update_policy.minimal_action
    most_disruptive_allowed_action = "REPLACE"
    instance_redistribution_type   = "PROACTIVE"
    replacement_method             = var.update_policy.replacement_method
    max_surge_fixed                = var.update_policy.max_surge
    max_unavailable_fixed          = var.update_policy.max_unavailable
  }

  instance_lifecycle_policy {
    # A VM recreated by autohealing gets the group's current template.
    force_update_on_repair    = "YES"
    default_action_on_failure = "REPAIR"
  }

  wait_for_instances = false

  lifecycle {
    precondition {
      condition = alltrue([
        for n in [var.update_policy.max_surge, var.update_policy.max_unavailable] : n == 0 || n >= local.zone_count
      ])
      error_message = "update_policy.max_surge and max_unavailable must each be 0 or at least the number of zones (${local.zone_count}) of a regional group."
    }
  }

  # The VMs read the secret and pull the image at boot: grant that first.
  depends_on = [
    google_project_iam_member.worker,
    google_artifact_registry_repository_iam_member.worker,
    google_secret_manager_secret_iam_member.worker_database_url,
    google_secret_manager_secret_version.database_url,
    google_compute_router_nat.nat,
  ]
}

resource "google_compute_region_autoscaler" "workers" {
  count = var.scaling_mode == "autoscaler-metric" ? 1 : 0

  project = var.project_id
  name    = "${var.name}-workers"
  region  = var.region
  target  = google_compute_region_instance_group_manager.workers.id

  autoscaling_policy {
    min_replicas    = var.min_workers
    max_replicas    = var.max_workers
    cooldown_period = var.autoscaler_initialization_period_sec
    mode            = var.autoscaler_mode

    # A per-group metric (resource `global`, not gce_instance) that counts the
    # work for the whole group: the autoscaler keeps size = value / assignment,
    # down to zero when the queue is empty and min_workers is 0.
    metric {
      name                       = var.queue_metric_type
      filter                     = "resource.type = \"global\" AND metric.label.group = \"${local.group_name}\""
      single_instance_assignment = var.target_jobs_per_worker
    }

    dynamic "cpu_utilization" {
      for_each = var.autoscaler_cpu_target == null ? [] : [var.autoscaler_cpu_target]
      content {
        target = cpu_utilization.value
      }
    }

    dynamic "scale_in_control" {
      for_each = var.autoscaler_scale_in == null ? [] : [var.autoscaler_scale_in]
      content {
        time_window_sec = scale_in_control.value.time_window_sec
        max_scaled_in_replicas {
          fixed   = scale_in_control.value.max_replicas_fixed
          percent = scale_in_control.value.max_replicas_percent
        }
      }
    }
  }
}
