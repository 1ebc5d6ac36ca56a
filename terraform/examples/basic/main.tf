# A complete drove deployment in one project: VPC with Cloud NAT, Cloud SQL
# for PostgreSQL (private IP, TLS only), the controller VM, and a regional
# group of worker VMs that scales from zero on the queue backlog.
# Step by step: docs/deploy-gcp.md.

provider "google" {
  project = var.project_id
  region  = var.region
}

module "drove" {
  source = "../../modules/drove"

  project_id       = var.project_id
  region           = var.region
  name             = "drove"
  worker_image     = var.worker_image
  controller_image = var.controller_image

  worker_machine_type    = "e2-standard-2"
  worker_spot            = var.worker_spot
  worker_queues          = ["default"]
  scaling_mode           = var.scaling_mode
  min_workers            = 0
  max_workers            = var.max_workers
  target_jobs_per_worker = 2

  cloud_sql_deletion_protection = var.cloud_sql_deletion_protection

  labels = {
    app = "drove"
  }
}
