variable "worker_image" {
  description = "Worker image in Artifact Registry, LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE:TAG (or @sha256:DIGEST)."
  type        = string

  validation {
    condition     = can(regex(local.image_pattern, var.worker_image))
    error_message = "worker_image must be an Artifact Registry image: LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE:TAG or ...@sha256:DIGEST."
  }
}

variable "controller_image" {
  description = "Controller image (runs `drove serve`), same form as worker_image. Null when there is no controller VM."
  type        = string
  default     = null

  validation {
    condition     = var.controller_image == null || can(regex(local.image_pattern, coalesce(var.controller_image, "-")))
    error_message = "controller_image must be an Artifact Registry image: LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE:TAG or ...@sha256:DIGEST."
  }
}

variable "database_url_secret_version" {
  description = "Secret Manager version holding the PostgreSQL URL, as projects/PROJECT/secrets/SECRET/versions/VERSION (usually `latest`). Fetched by the VM at container start."
  type        = string

  validation {
    condition     = can(regex("^projects/[^/]+/secrets/[A-Za-z0-9_-]+/versions/[A-Za-z0-9_-]+$", var.database_url_secret_version))
    error_message = "database_url_secret_version must look like projects/PROJECT/secrets/SECRET/versions/latest."
  }
}

variable "database_ca_cert_pem" {
  description = "PEM of the database server's CA (Cloud SQL's server CA), written to /etc/drove/db-server-ca.pem on the VM and mounted read-only at the same path in the containers, for `sslrootcert=` in the URL. Null for none."
  type        = string
  default     = null
}

variable "api_token_secret_version" {
  description = "Secret Manager version holding the controller's API bearer token (projects/PROJECT/secrets/SECRET/versions/VERSION). Required when controller_image is set."
  type        = string
  default     = null

  validation {
    condition     = var.api_token_secret_version == null || can(regex("^projects/[^/]+/secrets/[A-Za-z0-9_-]+/versions/[A-Za-z0-9_-]+$", coalesce(var.api_token_secret_version, "-")))
    error_message = "api_token_secret_version must look like projects/PROJECT/secrets/SECRET/versions/latest."
  }
  validation {
    condition     = var.controller_image == null || var.api_token_secret_version != null
    error_message = "api_token_secret_version is required when controller_image is set."
  }
}

variable "worker" {
  description = "Worker container settings; see terraform/modules/drove/variables.tf for the meaning of each field."
  type = object({
    schema              = optional(string, "drove")
    queues              = optional(list(string), ["default"])
    slots               = optional(number)
    drain_grace_seconds = optional(number)
    lease_ttl           = optional(string, "10s")
    http_port           = optional(number, 8080)
    exec                = optional(string)
    extra_env           = optional(map(string), {})
    spot                = optional(bool, false)
    log_driver          = optional(string, "gcplogs")
    docker_args         = optional(list(string), [])
  })
  default = {}

  validation {
    condition     = var.worker.drain_grace_seconds == null || try(var.worker.drain_grace_seconds >= 1 && var.worker.drain_grace_seconds <= local.standard_max_grace && floor(var.worker.drain_grace_seconds) == var.worker.drain_grace_seconds, false)
    error_message = "worker.drain_grace_seconds must be a whole number of seconds from 1 to 100 (a standard VM gets 120 s between the soft and the hard power-off)."
  }
  validation {
    condition     = !var.worker.spot || var.worker.drain_grace_seconds == null || try(var.worker.drain_grace_seconds <= local.spot_max_grace, false)
    error_message = "worker.drain_grace_seconds must be at most 20 on Spot VMs: they get about 30 s to shut down, and docker's stop timeout is the grace plus 5 s."
  }
  validation {
    condition     = var.worker.http_port >= 1024 && var.worker.http_port <= 65535
    error_message = "worker.http_port must be from 1024 to 65535 (the worker runs as a non-root user)."
  }
  validation {
    condition     = var.worker.slots == null || try(var.worker.slots >= 1 && floor(var.worker.slots) == var.worker.slots, false)
    error_message = "worker.slots must be a positive whole number, or null for one slot per vCPU."
  }
  validation {
    condition     = length(var.worker.queues) > 0 && alltrue([for q in var.worker.queues : can(regex("^[A-Za-z0-9_.:-]+$", q))])
    error_message = "worker.queues must name at least one queue; names use letters, digits and _ . : - only."
  }
  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.worker.schema))
    error_message = "worker.schema must be a lower-case PostgreSQL identifier."
  }
  validation {
    condition     = contains(["gcplogs", "json-file"], var.worker.log_driver)
    error_message = "worker.log_driver must be gcplogs or json-file."
  }
  validation {
    condition     = alltrue([for k, v in var.worker.extra_env : can(regex("^[A-Z_][A-Z0-9_]*$", k)) && !contains(local.forbidden_env, k) && !strcontains(v, "\n")])
    error_message = "worker.extra_env keys must be upper-case environment names other than DATABASE_URL (pass secrets as files), and values must be single lines."
  }
  validation {
    condition     = alltrue([for a in var.worker.docker_args : can(regex(local.docker_arg_pattern, a))])
    error_message = "worker.docker_args entries must be single docker run options without spaces, quotes, backslashes, % or $ (e.g. --shm-size=1g)."
  }
  validation {
    condition     = var.worker.exec == null || !strcontains(coalesce(var.worker.exec, "-"), "\n")
    error_message = "worker.exec must be a single line: kind=command args;kind2=command2."
  }
}

variable "controller" {
  description = "Controller container settings; see terraform/modules/drove/variables.tf for the meaning of each field."
  type = object({
    schema           = optional(string, "drove")
    listen_port      = optional(number, 8000)
    scaler           = optional(string, "none")
    project          = optional(string)
    region           = optional(string)
    group_name       = optional(string)
    min_workers      = optional(number, 0)
    max_workers      = optional(number, 10)
    target_backlog   = optional(number, 4)
    metric_interval  = optional(string, "30s")
    migrate_on_start = optional(bool, true)
    extra_env        = optional(map(string), {})
    log_driver       = optional(string, "gcplogs")
  })
  default = {}

  validation {
    condition     = contains(["none", "gcp-metric", "gcp-mig"], var.controller.scaler)
    error_message = "controller.scaler must be none, gcp-metric or gcp-mig."
  }
  validation {
    condition     = var.controller.scaler == "none" || (var.controller.project != null && var.controller.region != null && var.controller.group_name != null)
    error_message = "controller.project, region and group_name are required when the controller scales the group."
  }
  validation {
    condition     = var.controller.listen_port >= 1024 && var.controller.listen_port <= 65535
    error_message = "controller.listen_port must be from 1024 to 65535."
  }
  validation {
    condition     = contains(["gcplogs", "json-file"], var.controller.log_driver)
    error_message = "controller.log_driver must be gcplogs or json-file."
  }
  validation {
    condition     = alltrue([for k, v in var.controller.extra_env : can(regex("^[A-Z_][A-Z0-9_]*$", k)) && !contains(local.forbidden_env, k) && !strcontains(v, "\n")])
    error_message = "controller.extra_env keys must be upper-case environment names other than DATABASE_URL (pass secrets as files), and values must be single lines."
  }
  validation {
    condition     = can(regex("^[0-9]+(s|m|h)$", var.controller.metric_interval)) && try(tonumber(trimsuffix(var.controller.metric_interval, "s")) >= 10, true)
    error_message = "controller.metric_interval must be a duration like 30s or 1m, at least 10s (the controller's minimum; Cloud Monitoring bills and rate-limits per point)."
  }
}
