# Optional Cloud SQL for PostgreSQL: private IP only (through private services
# access peering with the VPC), TLS required, automated backups with
# point-in-time recovery. The `drove` user's password is generated per apply
# but only sent when database_password_version changes, together with the new
# database URL secret version; it is never stored in the state.

resource "google_compute_global_address" "sql_peering" {
  count = var.create_cloud_sql && var.cloud_sql_private_service_access ? 1 : 0

  project       = var.project_id
  name          = "${var.name}-sql-peering"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 20
  network       = local.network

  depends_on = [google_project_service.apis]
}

resource "google_service_networking_connection" "sql" {
  count = var.create_cloud_sql && var.cloud_sql_private_service_access ? 1 : 0

  network                 = local.network
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.sql_peering[0].name]
}

resource "google_sql_database_instance" "this" {
  #checkov:skip=CKV_GCP_6: TLS is required (ssl_mode ENCRYPTED_ONLY). Client certificates (TRUSTED_CLIENT_CERTIFICATE_REQUIRED) would have to be issued to every VM of an autoscaled group, and drove's connector does not present one; access is also limited to the private IP (no public IP, VPC peering) and a password read from Secret Manager.
  #checkov:skip=CKV_GCP_79: PostgreSQL 15 is the version drove's test suite runs on; newer ones are allowed through cloud_sql_database_version (validated >= 15).
  #checkov:skip=CKV_GCP_110: pgAudit would log every statement of the queue's hot path (claims, heartbeats, completions: thousands per second) with job payloads, which are user data; connections, disconnections, lock waits and errors are logged instead. Add the cloudsql.enable_pgaudit flag if your compliance rules require it.
  #checkov:skip=CKV_GCP_111: Same as CKV_GCP_110: statement logging (log_statement) would record job payloads and multiply log volume on the queue's hot path.
  #checkov:skip=CKV2_GCP_13: log_duration logs one line per statement, i.e. every claim, heartbeat and completion; drove exports its own latency metrics, and slow statements can be caught by lowering log_min_duration_statement.
  count = var.create_cloud_sql ? 1 : 0

  project             = var.project_id
  name                = "${var.name}-pg"
  region              = var.region
  database_version    = var.cloud_sql_database_version
  deletion_protection = var.cloud_sql_deletion_protection

  settings {
    tier                        = var.cloud_sql_tier
    edition                     = var.cloud_sql_edition
    availability_type           = var.cloud_sql_availability_type
    disk_type                   = "PD_SSD"
    disk_size                   = var.cloud_sql_disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = var.cloud_sql_deletion_protection
    user_labels                 = local.common_labels

    ip_configuration {
      ipv4_enabled    = false
      private_network = local.network
      ssl_mode        = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "03:00"
      transaction_log_retention_days = 7

      backup_retention_settings {
        retained_backups = 14
      }
    }

    maintenance_window {
      day          = 7
      hour         = 4
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled  = true
      record_application_tags = false
      record_client_address   = false
    }

    # Connection and lock logging (cheap, and what you want when tuning the
    # fleet's connection count); no statement logging: payloads are user data.
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_min_messages"
      value = "warning"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
  }

  depends_on = [google_service_networking_connection.sql, google_project_service.apis]
}

resource "google_sql_database" "drove" {
  count = var.create_cloud_sql ? 1 : 0

  project  = var.project_id
  name     = "drove"
  instance = google_sql_database_instance.this[0].name
}

resource "google_sql_user" "drove" {
  count = var.create_cloud_sql ? 1 : 0

  project             = var.project_id
  name                = "drove"
  instance            = google_sql_database_instance.this[0].name
  password_wo         = ephemeral.random_password.database[0].result
  password_wo_version = var.database_password_version
  # PostgreSQL refuses to drop a role that owns objects; the instance goes
  # with its users anyway.
  deletion_policy = "ABANDON"
}
