# drove on Google Cloud: a regional managed instance group of worker VMs, a
# controller VM, the network around them and (optionally) Cloud SQL.
# docs/deploy-gcp.md walks through it; the files here are split by concern:
#   network.tf     VPC, subnet, Cloud NAT, firewall rules
#   iam.tf         service accounts and their (least) roles
#   secrets.tf     database URL and API token in Secret Manager
#   database.tf    optional Cloud SQL for PostgreSQL, private IP, TLS only
#   workers.tf     instance template, health check, group, autoscaler
#   controller.tf  the controller VM
# The containers' settings and cloud-init live in ../drove-cloud-init, a
# module without providers so that tests can render it offline.

locals {
  controller_enabled = var.controller_image != null
  group_name         = "${var.name}-workers"
  zone_count         = var.worker_zones == null ? 3 : length(var.worker_zones)

  controller_scaler = {
    autoscaler-metric = "gcp-metric"
    controller-resize = "gcp-mig"
    fixed             = "none"
  }[var.scaling_mode]

  # HOST/PROJECT/REPOSITORY of each image, for the Artifact Registry bindings.
  image_pattern   = "^([a-z0-9-]+)-docker\\.pkg\\.dev/([a-z0-9.:-]+)/([a-z0-9._-]+)/"
  worker_repo     = regex(local.image_pattern, var.worker_image)
  controller_repo = local.controller_enabled ? regex(local.image_pattern, var.controller_image) : null

  common_labels = merge(var.labels, { "drove-deployment" = var.name })

  apis = concat(
    [
      "compute.googleapis.com",
      "iam.googleapis.com",
      "iap.googleapis.com",
      "secretmanager.googleapis.com",
      "artifactregistry.googleapis.com",
      "logging.googleapis.com",
      "monitoring.googleapis.com",
    ],
    var.create_cloud_sql ? ["sqladmin.googleapis.com", "servicenetworking.googleapis.com"] : [],
  )
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? toset(local.apis) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

module "cloud_init" {
  source = "../drove-cloud-init"

  worker_image                = var.worker_image
  controller_image            = var.controller_image
  database_url_secret_version = "projects/${var.project_id}/secrets/${local.database_url_secret_id}/versions/latest"
  api_token_secret_version    = local.controller_enabled ? "projects/${var.project_id}/secrets/${local.api_token_secret_id}/versions/latest" : null
  database_ca_cert_pem        = var.create_cloud_sql ? google_sql_database_instance.this[0].server_ca_cert[0].cert : var.database_ca_cert_pem

  worker = {
    schema              = var.schema
    queues              = var.worker_queues
    slots               = var.worker_slots
    drain_grace_seconds = var.worker_drain_grace_seconds
    lease_ttl           = var.worker_lease_ttl
    http_port           = var.worker_http_port
    exec                = var.worker_exec
    extra_env           = var.worker_extra_env
    spot                = var.worker_spot
    log_driver          = var.log_driver
    docker_args         = var.worker_docker_args
  }

  controller = {
    schema           = var.schema
    listen_port      = var.controller_listen_port
    scaler           = local.controller_scaler
    project          = var.project_id
    region           = var.region
    group_name       = local.group_name
    min_workers      = var.min_workers
    max_workers      = var.max_workers
    target_backlog   = var.target_jobs_per_worker
    metric_interval  = var.metric_interval
    migrate_on_start = var.controller_migrate_on_start
    extra_env        = var.controller_extra_env
    log_driver       = var.log_driver
  }
}
