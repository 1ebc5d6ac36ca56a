# One service account per kind of VM, each with only what its container
# needs. Project-level roles are limited to writing logs and metrics (those
# roles have no narrower scope); everything else is granted on the one
# repository, the one secret or, through an IAM condition, the one group.

resource "google_service_account" "worker" {
  project      = var.project_id
  account_id   = "${var.name}-worker"
  display_name = "drove worker VMs (${var.name})"
  description  = "Runs the drove-worker container: pulls its image, reads the database URL secret, writes logs and metrics."

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "controller" {
  count = local.controller_enabled ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name}-controller"
  display_name = "drove controller VM (${var.name})"
  description  = "Runs `drove serve`: reads its secrets, publishes the queue metric or resizes the worker group, writes logs."

  depends_on = [google_project_service.apis]
}

locals {
  # logWriter: gcplogs and the COS logging agent. metricWriter: the COS
  # monitoring agent (and, for the controller, the queue metric).
  project_roles = ["roles/logging.logWriter", "roles/monitoring.metricWriter"]
}

resource "google_project_iam_member" "worker" {
  for_each = toset(local.project_roles)

  project = var.project_id
  role    = each.value
  member  = google_service_account.worker.member
}

resource "google_project_iam_member" "controller" {
  for_each = local.controller_enabled ? toset(local.project_roles) : toset([])

  project = var.project_id
  role    = each.value
  member  = google_service_account.controller[0].member
}

resource "google_artifact_registry_repository_iam_member" "worker" {
  project    = local.worker_repo[1]
  location   = local.worker_repo[0]
  repository = local.worker_repo[2]
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.worker.member
}

resource "google_artifact_registry_repository_iam_member" "controller" {
  count = local.controller_enabled ? 1 : 0

  project    = local.controller_repo[1]
  location   = local.controller_repo[0]
  repository = local.controller_repo[2]
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.controller[0].member
}

resource "google_secret_manager_secret_iam_member" "worker_database_url" {
  project   = var.project_id
  secret_id = local.database_url_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.worker.member
}

resource "google_secret_manager_secret_iam_member" "controller_database_url" {
  count = local.controller_enabled ? 1 : 0

  project   = var.project_id
  secret_id = local.database_url_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.controller[0].member
}

resource "google_secret_manager_secret_iam_member" "controller_api_token" {
  count = local.controller_enabled ? 1 : 0

  project   = var.project_id
  secret_id = local.api_token_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.controller[0].member
}

# controller-resize: the controller reads and resizes the worker group.
# Compute Engine has no IAM policy on an instance group manager, so the role
# is granted on the project with an IAM condition on the resource name: the
# binding applies to this one group only. The permissions:
#   compute.instanceGroupManagers.get     describe, listManagedInstances
#   compute.instanceGroupManagers.update  resize (and deleteInstances, which
#                                         lets drove remove idle VMs first)
# Operation polling (compute.regionOperations.get) cannot be scoped by name
# (operations have random names), so it is a second, unconditional role with
# that read-only permission alone.
locals {
  controller_resizes = local.controller_enabled && var.scaling_mode == "controller-resize"
  role_prefix        = replace(var.name, "-", "_")
}

resource "google_project_iam_custom_role" "group_resizer" {
  count = local.controller_resizes ? 1 : 0

  project     = var.project_id
  role_id     = "${local.role_prefix}_group_resizer"
  title       = "drove group resizer (${var.name})"
  description = "Read and resize the drove worker group; bound with a condition on the group's name."
  permissions = [
    "compute.instanceGroupManagers.get",
    "compute.instanceGroupManagers.update",
  ]
}

resource "google_project_iam_member" "controller_group_resizer" {
  count = local.controller_resizes ? 1 : 0

  project = var.project_id
  role    = google_project_iam_custom_role.group_resizer[0].id
  member  = google_service_account.controller[0].member

  condition {
    title       = "only-${local.group_name}"
    description = "Only the regional instance group manager ${local.group_name} in ${var.region}."
    expression  = "resource.name.endsWith(\"/regions/${var.region}/instanceGroupManagers/${local.group_name}\")"
  }
}

resource "google_project_iam_custom_role" "operation_reader" {
  count = local.controller_resizes ? 1 : 0

  project     = var.project_id
  role_id     = "${local.role_prefix}_operation_reader"
  title       = "drove operation reader (${var.name})"
  description = "Poll the regional operations started by resizing the drove worker group."
  permissions = ["compute.regionOperations.get"]
}

resource "google_project_iam_member" "controller_operation_reader" {
  count = local.controller_resizes ? 1 : 0

  project = var.project_id
  role    = google_project_iam_custom_role.operation_reader[0].id
  member  = google_service_account.controller[0].member
}
