# The containers read their secrets from Secret Manager when they start (see
# ../drove-cloud-init/templates/drove-prepare.sh); nothing secret is put in
# instance metadata. Values generated here are ephemeral and written through
# write-only arguments, so they are not stored in the terraform state either:
# read them with `gcloud secrets versions access latest --secret=ID`.

locals {
  database_url_secret_id = var.create_cloud_sql ? google_secret_manager_secret.database_url[0].secret_id : var.database_url_secret_id
  create_api_token       = local.controller_enabled && var.api_token_secret_id == null
  api_token_secret_id    = local.create_api_token ? google_secret_manager_secret.api_token[0].secret_id : var.api_token_secret_id
}

resource "google_secret_manager_secret" "database_url" {
  count = var.create_cloud_sql ? 1 : 0

  project   = var.project_id
  secret_id = "${var.name}-database-url"
  labels    = local.common_labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

ephemeral "random_password" "database" {
  count = var.create_cloud_sql ? 1 : 0

  length  = 40
  special = false # the password goes into a URL as it is
}

resource "google_secret_manager_secret_version" "database_url" {
  count = var.create_cloud_sql ? 1 : 0

  secret = google_secret_manager_secret.database_url[0].id
  # verify-ca: TLS with the server certificate checked against the instance's
  # CA (mounted from the instance template); Cloud SQL's private-IP
  # certificates do not name the IP, so the host name is not compared.
  secret_data_wo = format(
    "postgres://%s:%s@%s:5432/%s?sslmode=verify-ca&sslrootcert=%s",
    google_sql_user.drove[0].name,
    ephemeral.random_password.database[0].result,
    google_sql_database_instance.this[0].private_ip_address,
    google_sql_database.drove[0].name,
    module.cloud_init.database_ca_cert_path,
  )
  secret_data_wo_version = var.database_password_version
}

resource "google_secret_manager_secret" "api_token" {
  count = local.create_api_token ? 1 : 0

  project   = var.project_id
  secret_id = "${var.name}-api-token"
  labels    = local.common_labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

ephemeral "random_password" "api_token" {
  count = local.create_api_token ? 1 : 0

  length  = 48
  special = false
}

resource "google_secret_manager_secret_version" "api_token" {
  count = local.create_api_token ? 1 : 0

  secret                 = google_secret_manager_secret.api_token[0].id
  secret_data_wo         = ephemeral.random_password.api_token[0].result
  secret_data_wo_version = var.api_token_version
}
