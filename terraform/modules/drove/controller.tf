# The controller: one small Container-Optimized OS VM running `drove serve`
# from the same kind of cloud-init unit as the workers. It holds no state
# (the queue is in PostgreSQL), so it is replaced whenever its image or
# configuration changes, and any number of controllers could run (loops that
# must run once per fleet take leadership in the database).

data "google_compute_zones" "up" {
  count = local.controller_enabled && var.controller_zone == null ? 1 : 0

  project = var.project_id
  region  = var.region
  status  = "UP"
}

locals {
  controller_zone = local.controller_enabled ? coalesce(var.controller_zone, try(sort(data.google_compute_zones.up[0].names)[0], null)) : null
}

# A stable private address for producers and the IAP tunnel.
resource "google_compute_address" "controller" {
  count = local.controller_enabled ? 1 : 0

  project      = var.project_id
  name         = "${var.name}-controller"
  region       = var.region
  subnetwork   = local.subnetwork
  address_type = "INTERNAL"
}

resource "terraform_data" "controller_config" {
  count = local.controller_enabled ? 1 : 0

  input = sha256(jsonencode(module.cloud_init.controller_metadata))
}

resource "google_compute_instance" "controller" {
  #checkov:skip=CKV_GCP_32: block-project-ssh-keys = "true" is in module.cloud_init.controller_metadata, which checkov cannot evaluate; scripts/tests/deploy/test_cloud_init.py asserts it on the rendered metadata.
  #checkov:skip=CKV_GCP_38: Customer-supplied keys (CSEK) must be sent with every start of the VM, which an unattended VM cannot do; the boot disk holds no data (COS and a pulled image) and is encrypted at rest by Google like every disk.
  count = local.controller_enabled ? 1 : 0

  project      = var.project_id
  name         = "${var.name}-controller"
  zone         = local.controller_zone
  machine_type = var.controller_machine_type
  description  = "drove controller ${var.controller_image}"
  tags         = ["${var.name}-controller"]
  labels       = merge(local.common_labels, { "drove-role" = "controller" })

  metadata = module.cloud_init.controller_metadata

  boot_disk {
    auto_delete = true
    initialize_params {
      image  = var.cos_image
      size   = 10
      type   = "pd-balanced"
      labels = local.common_labels
    }
  }

  network_interface {
    subnetwork = local.subnetwork
    network_ip = google_compute_address.controller[0].address
  }

  service_account {
    email  = google_service_account.controller[0].email
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  scheduling {
    automatic_restart   = true
    on_host_maintenance = "MIGRATE"
  }

  allow_stopping_for_update = true

  lifecycle {
    # cloud-init runs at boot: a new image or configuration needs a new VM.
    replace_triggered_by = [terraform_data.controller_config[0]]
  }

  depends_on = [
    google_project_iam_member.controller,
    google_artifact_registry_repository_iam_member.controller,
    google_secret_manager_secret_iam_member.controller_database_url,
    google_secret_manager_secret_iam_member.controller_api_token,
    google_secret_manager_secret_version.database_url,
    google_secret_manager_secret_version.api_token,
    google_project_iam_member.controller_group_resizer,
    google_compute_router_nat.nat,
  ]
}
