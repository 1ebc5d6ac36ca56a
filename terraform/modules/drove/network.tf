# The VMs have no external IP: Google APIs (Artifact Registry, Secret Manager,
# Logging, Monitoring) are reached through Private Google Access, anything
# else through Cloud NAT. Ingress is closed except for Google's health
# checkers on the worker port and the controller's allowed sources.

resource "google_compute_network" "this" {
  count = var.create_network ? 1 : 0

  project                 = var.project_id
  name                    = "${var.name}-vpc"
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"

  depends_on = [google_project_service.apis]
}

resource "google_compute_subnetwork" "this" {
  count = var.create_network ? 1 : 0

  project                  = var.project_id
  name                     = "${var.name}-${var.region}"
  region                   = var.region
  network                  = google_compute_network.this[0].id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

locals {
  network    = var.create_network ? google_compute_network.this[0].self_link : var.network_self_link
  subnetwork = var.create_network ? google_compute_subnetwork.this[0].self_link : var.subnetwork_self_link
}

resource "google_compute_router" "nat" {
  count = var.create_nat ? 1 : 0

  project = var.project_id
  name    = "${var.name}-router"
  region  = var.region
  network = local.network
}

resource "google_compute_router_nat" "nat" {
  count = var.create_nat ? 1 : 0

  project                            = var.project_id
  name                               = "${var.name}-nat"
  region                             = var.region
  router                             = google_compute_router.nat[0].name
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = local.subnetwork
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# Autohealing probes come from these two Google ranges only.
resource "google_compute_firewall" "health_checks" {
  project       = var.project_id
  name          = "${var.name}-allow-health-checks"
  network       = local.network
  direction     = "INGRESS"
  priority      = 1000
  source_ranges = ["35.191.0.0/16", "130.211.0.0/22"]

  target_service_accounts = [google_service_account.worker.email]

  allow {
    protocol = "tcp"
    ports    = [tostring(module.cloud_init.health_port)]
  }
}

resource "google_compute_firewall" "controller" {
  count = local.controller_enabled && length(var.controller_allowed_cidrs) > 0 ? 1 : 0

  project       = var.project_id
  name          = "${var.name}-allow-controller"
  network       = local.network
  direction     = "INGRESS"
  priority      = 1000
  source_ranges = var.controller_allowed_cidrs

  target_service_accounts = [google_service_account.controller[0].email]

  allow {
    protocol = "tcp"
    ports    = [tostring(var.controller_listen_port)]
  }
}

resource "google_compute_firewall" "iap_ssh" {
  count = var.allow_iap_ssh ? 1 : 0

  project       = var.project_id
  name          = "${var.name}-allow-iap-ssh"
  network       = local.network
  direction     = "INGRESS"
  priority      = 1000
  source_ranges = ["35.235.240.0/20"]

  target_service_accounts = concat(
    [google_service_account.worker.email],
    google_service_account.controller[*].email,
  )

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }
}
