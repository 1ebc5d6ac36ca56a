# ---------------------------------------------------------------------------
# Project, naming, network
# ---------------------------------------------------------------------------

variable "project_id" {
  description = "Google Cloud project that hosts everything."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID (6-30 lower-case letters, digits and hyphens), not a project number or name."
  }
}

variable "region" {
  description = "Region of the worker group, the controller, the subnet and Cloud SQL (e.g. europe-west1)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Compute Engine region such as us-central1 or europe-west1."
  }
}

variable "name" {
  description = "Prefix of every resource name (VPC, group, template, service accounts, secrets, Cloud SQL). Use one per deployment, e.g. drove-prod and drove-staging side by side."
  type        = string
  default     = "drove"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,14}[a-z0-9]$", var.name))
    error_message = "name must be 2-16 lower-case letters, digits or hyphens, starting with a letter (service account IDs derived from it are limited to 30 characters)."
  }
}

variable "labels" {
  description = "Labels added to the VMs, disks, secrets and the Cloud SQL instance."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "labels keys and values must be lower-case letters, digits, _ or -, keys starting with a letter, at most 63 characters."
  }
}

variable "enable_apis" {
  description = "Enable the Google APIs the deployment uses (Compute, IAM, Secret Manager, Artifact Registry, Logging, Monitoring, IAP, and Cloud SQL Admin + Service Networking with Cloud SQL). They are left enabled on destroy."
  type        = bool
  default     = true
}

variable "create_network" {
  description = "Create a VPC and one subnet for drove. When false, give network_self_link and subnetwork_self_link of an existing VPC."
  type        = bool
  default     = true
}

variable "network_self_link" {
  description = "Existing VPC network (self link or projects/P/global/networks/N) when create_network is false."
  type        = string
  default     = null
}

variable "subnetwork_self_link" {
  description = "Existing subnet in var.region (self link or projects/P/regions/R/subnetworks/N) when create_network is false. It should have Private Google Access on."
  type        = string
  default     = null

  validation {
    condition     = var.create_network || (var.network_self_link != null && var.subnetwork_self_link != null)
    error_message = "network_self_link and subnetwork_self_link are required when create_network is false."
  }
}

variable "subnet_cidr" {
  description = "Primary range of the subnet created when create_network is true."
  type        = string
  default     = "10.20.0.0/20"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0)) && can(regex("^(10\\.|172\\.(1[6-9]|2[0-9]|3[01])\\.|192\\.168\\.)", var.subnet_cidr))
    error_message = "subnet_cidr must be a private IPv4 CIDR (10/8, 172.16/12 or 192.168/16)."
  }
}

variable "create_nat" {
  description = "Create a Cloud Router and Cloud NAT for the subnet, so the VMs (which have no external IP) can reach the internet. Google APIs, Artifact Registry included, are reached through Private Google Access either way."
  type        = bool
  default     = true
}

variable "cos_image" {
  description = "Container-Optimized OS boot image of all VMs: an image family URL (new VMs take the family's newest image) or a pinned image."
  type        = string
  default     = "projects/cos-cloud/global/images/family/cos-stable"

  validation {
    condition     = can(regex("^(https://www\\.googleapis\\.com/compute/v1/)?projects/cos-cloud/global/images/(family/)?cos-[a-z0-9-]+$", var.cos_image))
    error_message = "cos_image must be a Container-Optimized OS image or family in the cos-cloud project, e.g. projects/cos-cloud/global/images/family/cos-stable."
  }
}

variable "log_driver" {
  description = "How container logs reach Cloud Logging: gcplogs (docker sends each line itself; the JSON line lands in jsonPayload.message) or json-file (lines stay on the VM and Container-Optimized OS's logging agent ships them)."
  type        = string
  default     = "gcplogs"

  validation {
    condition     = contains(["gcplogs", "json-file"], var.log_driver)
    error_message = "log_driver must be gcplogs or json-file."
  }
}

# ---------------------------------------------------------------------------
# Images and the queue
# ---------------------------------------------------------------------------

variable "worker_image" {
  description = "Worker image (drove-worker) in Artifact Registry: LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE:TAG or ...@sha256:DIGEST. The worker service account gets read access to that repository."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9-]+-docker\\.pkg\\.dev/[a-z0-9.:-]+/[a-z0-9._-]+/[a-z0-9._/-]+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$", var.worker_image))
    error_message = "worker_image must be an Artifact Registry image with a tag or digest: LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE:TAG."
  }
}

variable "controller_image" {
  description = "Controller image (drove, run as `drove serve`), same form as worker_image. Null for no controller VM, which is only allowed with scaling_mode = \"fixed\"."
  type        = string
  default     = null

  validation {
    condition     = var.controller_image == null || can(regex("^[a-z0-9-]+-docker\\.pkg\\.dev/[a-z0-9.:-]+/[a-z0-9._-]+/[a-z0-9._/-]+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$", coalesce(var.controller_image, "-")))
    error_message = "controller_image must be an Artifact Registry image with a tag or digest: LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE:TAG."
  }
  validation {
    condition     = var.controller_image != null || var.scaling_mode == "fixed"
    error_message = "controller_image is required unless scaling_mode is \"fixed\": the controller publishes the queue metric or resizes the group."
  }
}

variable "schema" {
  description = "PostgreSQL schema of the queue tables (DROVE_SCHEMA); one database can host several deployments in different schemas."
  type        = string
  default     = "drove"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.schema))
    error_message = "schema must be a lower-case PostgreSQL identifier."
  }
}

# ---------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------

variable "worker_machine_type" {
  description = "Machine type of the worker VMs. Slots default to its vCPU count."
  type        = string
  default     = "e2-standard-2"

  validation {
    condition     = can(regex("^[a-z0-9]+-[a-z0-9-]+$", var.worker_machine_type))
    error_message = "worker_machine_type must be a machine type name such as e2-standard-2 or c3-highcpu-4."
  }
}

variable "worker_disk_size_gb" {
  description = "Boot disk size of the worker VMs (holds the image and the container logs)."
  type        = number
  default     = 20

  validation {
    condition     = var.worker_disk_size_gb >= 10 && var.worker_disk_size_gb <= 2000 && floor(var.worker_disk_size_gb) == var.worker_disk_size_gb
    error_message = "worker_disk_size_gb must be a whole number from 10 to 2000."
  }
}

variable "worker_disk_type" {
  description = "Boot disk type of the worker VMs."
  type        = string
  default     = "pd-balanced"

  validation {
    condition     = contains(["pd-standard", "pd-balanced", "pd-ssd", "hyperdisk-balanced"], var.worker_disk_type)
    error_message = "worker_disk_type must be pd-standard, pd-balanced, pd-ssd or hyperdisk-balanced."
  }
}

variable "worker_spot" {
  description = "Run the workers on Spot VMs (much cheaper, can be preempted at any time with about 30 s notice; the drain grace defaults to 20 s then). Preempted jobs are released and run again elsewhere."
  type        = bool
  default     = false
}

variable "worker_zones" {
  description = "Zones of the regional group (in var.region). Null lets Compute Engine pick up to three zones."
  type        = list(string)
  default     = null

  validation {
    condition     = var.worker_zones == null || try(length(var.worker_zones) > 0 && alltrue([for z in var.worker_zones : startswith(z, "${var.region}-")]), false)
    error_message = "worker_zones must be a non-empty list of zones of var.region, e.g. [\"europe-west1-b\", \"europe-west1-c\"]."
  }
}

variable "worker_queues" {
  description = "Queues the workers take jobs from (DROVE_QUEUES)."
  type        = list(string)
  default     = ["default"]

  validation {
    condition     = length(var.worker_queues) > 0 && alltrue([for q in var.worker_queues : can(regex("^[A-Za-z0-9_.:-]+$", q))])
    error_message = "worker_queues must name at least one queue; names use letters, digits and _ . : - only."
  }
}

variable "worker_slots" {
  description = "Jobs run at once per worker VM (DROVE_SLOTS). Null: one per vCPU."
  type        = number
  default     = null

  validation {
    condition     = var.worker_slots == null || try(var.worker_slots >= 1 && var.worker_slots <= 1024 && floor(var.worker_slots) == var.worker_slots, false)
    error_message = "worker_slots must be a whole number from 1 to 1024, or null."
  }
}

variable "worker_drain_grace_seconds" {
  description = "On SIGTERM (scale-in, rolling update, preemption) a worker stops claiming and lets running jobs finish for this long, then releases the rest (DROVE_GRACE). docker's stop timeout is this + 5 s. Null: 25 s, or 20 s on Spot VMs. At most 100 (standard VMs get 120 s to shut down) or 20 on Spot VMs (30 s)."
  type        = number
  default     = null

  validation {
    condition     = var.worker_drain_grace_seconds == null || try(var.worker_drain_grace_seconds >= 1 && var.worker_drain_grace_seconds <= 100 && floor(var.worker_drain_grace_seconds) == var.worker_drain_grace_seconds, false)
    error_message = "worker_drain_grace_seconds must be a whole number of seconds from 1 to 100."
  }
  validation {
    condition     = !var.worker_spot || var.worker_drain_grace_seconds == null || try(var.worker_drain_grace_seconds <= 20, false)
    error_message = "worker_drain_grace_seconds must be at most 20 with worker_spot: Spot VMs get about 30 s between the shutdown signal and power-off."
  }
}

variable "worker_lease_ttl" {
  description = "Lease of a claimed job (DROVE_LEASE_TTL): a job whose worker stops heartbeating is run again elsewhere about this long after."
  type        = string
  default     = "10s"

  validation {
    condition     = can(regex("^[0-9]+(ms|s|m)$", var.worker_lease_ttl))
    error_message = "worker_lease_ttl must be a duration such as 10s or 1m."
  }
}

variable "worker_http_port" {
  description = "Port of the worker's HTTP server (/healthz, /readyz, /metrics): DROVE_HTTP_ADDR, the group's named port `http`, and the autohealing health check's port."
  type        = number
  default     = 8080

  validation {
    condition     = var.worker_http_port >= 1024 && var.worker_http_port <= 65535 && floor(var.worker_http_port) == var.worker_http_port
    error_message = "worker_http_port must be from 1024 to 65535 (the container runs as a non-root user)."
  }
}

variable "worker_exec" {
  description = "Commands run by the exec handler, per job kind (DROVE_EXEC): \"kind=command args;kind2=command2\". The commands must exist in the worker image. Null for none."
  type        = string
  default     = null

  validation {
    condition     = var.worker_exec == null || !strcontains(coalesce(var.worker_exec, "-"), "\n")
    error_message = "worker_exec must be a single line."
  }
}

variable "worker_extra_env" {
  description = "More environment for the worker container (plain settings, not secrets: they are visible in the instance template)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.worker_extra_env : can(regex("^[A-Z_][A-Z0-9_]*$", k)) && k != "DATABASE_URL" && !strcontains(v, "\n")])
    error_message = "worker_extra_env keys must be upper-case environment names other than DATABASE_URL, with single-line values."
  }
}

variable "worker_docker_args" {
  description = "Extra `docker run` options for the worker container, one option per item, e.g. [\"--shm-size=1g\", \"--init\"]."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.worker_docker_args : can(regex("^--[a-z][a-z0-9-]*(=[^\\s\"'\\\\%$]+)?$", a))])
    error_message = "worker_docker_args items must each be one --option or --option=value, without spaces, quotes, backslashes, % or $."
  }
}

# ---------------------------------------------------------------------------
# Health checking and rolling updates
# ---------------------------------------------------------------------------

variable "health_check" {
  description = "Autohealing health check of the workers' /healthz (liveness of the process, not of the database). A VM failing unhealthy_threshold probes in a row is recreated."
  type = object({
    check_interval_sec  = optional(number, 10)
    timeout_sec         = optional(number, 5)
    healthy_threshold   = optional(number, 2)
    unhealthy_threshold = optional(number, 3)
  })
  default = {}

  validation {
    condition     = var.health_check.timeout_sec <= var.health_check.check_interval_sec && var.health_check.timeout_sec >= 1 && var.health_check.check_interval_sec <= 300
    error_message = "health_check.timeout_sec must be at least 1 and at most check_interval_sec, which must be at most 300."
  }
  validation {
    condition     = var.health_check.healthy_threshold >= 1 && var.health_check.healthy_threshold <= 10 && var.health_check.unhealthy_threshold >= 1 && var.health_check.unhealthy_threshold <= 10
    error_message = "health_check thresholds must be from 1 to 10."
  }
}

variable "autohealing_initial_delay_sec" {
  description = "Time a new worker VM gets to boot, pull the image and start before failed health checks count (the MIG's autohealing initial delay)."
  type        = number
  default     = 300

  validation {
    condition     = var.autohealing_initial_delay_sec >= 0 && var.autohealing_initial_delay_sec <= 3600
    error_message = "autohealing_initial_delay_sec must be from 0 to 3600."
  }
}

variable "update_policy" {
  description = "Rolling update policy of the group, used when terraform changes the template (scripts/rolling-update.sh passes its own --max-surge/--max-unavailable). On a regional group, max_surge and max_unavailable must each be 0 or at least the number of zones (3 unless worker_zones says otherwise). replacement_method RECREATE keeps VM names and needs max_surge = 0."
  type = object({
    max_surge          = optional(number, 3)
    max_unavailable    = optional(number, 0)
    replacement_method = optional(string, "SUBSTITUTE")
    minimal_action     = optional(string, "REPLACE")
  })
  default = {}

  validation {
    condition     = contains(["SUBSTITUTE", "RECREATE"], var.update_policy.replacement_method) && contains(["REFRESH", "RESTART", "REPLACE"], var.update_policy.minimal_action)
    error_message = "update_policy.replacement_method must be SUBSTITUTE or RECREATE, and minimal_action REFRESH, RESTART or REPLACE."
  }
  validation {
    condition     = var.update_policy.max_surge >= 0 && var.update_policy.max_unavailable >= 0 && var.update_policy.max_surge + var.update_policy.max_unavailable > 0
    error_message = "update_policy.max_surge and max_unavailable must be >= 0 and not both 0."
  }
  validation {
    condition     = var.update_policy.replacement_method != "RECREATE" || (var.update_policy.max_surge == 0 && var.update_policy.max_unavailable > 0)
    error_message = "update_policy.replacement_method RECREATE needs max_surge = 0 and max_unavailable > 0."
  }
}

# ---------------------------------------------------------------------------
# Scaling
# ---------------------------------------------------------------------------

variable "scaling_mode" {
  description = <<-EOT
    How the worker group's size follows the queue:
    - "autoscaler-metric": the controller publishes the queue backlog as a Cloud Monitoring
      metric (DROVE_SCALER=gcp-metric) and the MIG autoscaler sizes the group from it
      (plus CPU if autoscaler_cpu_target is set). Google-managed, survives a controller
      outage (the group keeps its size), but scale-out follows the metric with ~1-2 min of
      delay and scale-in is stabilized over ~10 min.
    - "controller-resize": the controller resizes the group itself through the Compute API
      (DROVE_SCALER=gcp-mig) with a custom role limited to this group. Faster reaction,
      drove's own policy; no autoscaler exists.
    - "fixed": worker_count VMs, no scaling.
  EOT
  type        = string
  default     = "autoscaler-metric"

  validation {
    condition     = contains(["autoscaler-metric", "controller-resize", "fixed"], var.scaling_mode)
    error_message = "scaling_mode must be autoscaler-metric, controller-resize or fixed."
  }
}

variable "worker_count" {
  description = "Size of the group with scaling_mode = \"fixed\"."
  type        = number
  default     = 1

  validation {
    condition     = var.worker_count >= 0 && var.worker_count <= 1000 && floor(var.worker_count) == var.worker_count
    error_message = "worker_count must be a whole number from 0 to 1000."
  }
}

variable "min_workers" {
  description = "Smallest group size when scaling (0 lets an idle deployment cost no worker VMs; then CPU cannot be a scaling signal, see autoscaler_cpu_target)."
  type        = number
  default     = 0

  validation {
    condition     = var.min_workers >= 0 && floor(var.min_workers) == var.min_workers
    error_message = "min_workers must be a whole number >= 0."
  }
}

variable "max_workers" {
  description = "Largest group size when scaling. Also bounds the database connections the fleet opens."
  type        = number
  default     = 10

  validation {
    condition     = var.max_workers >= 1 && var.max_workers <= 1000 && floor(var.max_workers) == var.max_workers && var.max_workers >= var.min_workers
    error_message = "max_workers must be a whole number from 1 to 1000 and at least min_workers."
  }
}

variable "target_jobs_per_worker" {
  description = "Jobs (waiting + running) one worker VM should have: the autoscaler's single-instance assignment for the queue metric (desired VMs = backlog / this), and DROVE_TARGET_BACKLOG for the controller. Set it to the slots per VM for the lowest latency, higher for fewer VMs."
  type        = number
  default     = 2

  validation {
    condition     = var.target_jobs_per_worker > 0
    error_message = "target_jobs_per_worker must be positive."
  }
}

variable "queue_metric_type" {
  description = "Cloud Monitoring metric the controller publishes and the autoscaler reads (GAUGE, DOUBLE, resource `global`, label `group` = the group's name). Must match what the controller writes."
  type        = string
  default     = "custom.googleapis.com/drove/queue_backlog"

  validation {
    condition     = can(regex("^(custom|workload)\\.googleapis\\.com/[A-Za-z0-9_/.-]+$", var.queue_metric_type))
    error_message = "queue_metric_type must be a custom metric type such as custom.googleapis.com/drove/queue_backlog."
  }
}

variable "metric_interval" {
  description = "How often the controller publishes the metric or re-evaluates the group size (DROVE_METRIC_INTERVAL), at least 10s."
  type        = string
  default     = "30s"

  validation {
    condition     = can(regex("^[0-9]+(s|m)$", var.metric_interval)) && try(tonumber(trimsuffix(var.metric_interval, "s")) >= 10, true)
    error_message = "metric_interval must be a duration such as 30s or 1m, at least 10s."
  }
}

variable "autoscaler_mode" {
  description = "Autoscaler mode with scaling_mode = \"autoscaler-metric\": ON, ONLY_SCALE_OUT (never removes VMs; useful while observing) or OFF (keeps the configuration, changes nothing)."
  type        = string
  default     = "ON"

  validation {
    condition     = contains(["ON", "ONLY_SCALE_OUT", "OFF"], var.autoscaler_mode)
    error_message = "autoscaler_mode must be ON, ONLY_SCALE_OUT or OFF."
  }
}

variable "autoscaler_cpu_target" {
  description = "Also scale on average CPU utilization (0 < target <= 1), e.g. 0.8; the larger recommendation wins. CPU is a per-VM signal, so it needs min_workers >= 1. Null: queue metric only."
  type        = number
  default     = null

  validation {
    condition     = var.autoscaler_cpu_target == null || try(var.autoscaler_cpu_target > 0 && var.autoscaler_cpu_target <= 1, false)
    error_message = "autoscaler_cpu_target must be in (0, 1], or null."
  }
  validation {
    condition     = var.autoscaler_cpu_target == null || var.min_workers >= 1
    error_message = "autoscaler_cpu_target needs min_workers >= 1: with zero VMs there is no CPU to measure, so the autoscaler cannot scale to or from zero on CPU."
  }
}

variable "autoscaler_initialization_period_sec" {
  description = "Autoscaler initialization period (cooldown): how long a new VM's CPU is ignored while it boots and pulls the image."
  type        = number
  default     = 120

  validation {
    condition     = var.autoscaler_initialization_period_sec >= 0 && var.autoscaler_initialization_period_sec <= 3600
    error_message = "autoscaler_initialization_period_sec must be from 0 to 3600."
  }
}

variable "autoscaler_scale_in" {
  description = "Autoscaler scale-in controls: remove at most max_replicas_percent of the group (or max_replicas_fixed VMs) within any time_window_sec. Null: no limit beyond the autoscaler's ~10 min stabilization."
  type = object({
    max_replicas_fixed   = optional(number)
    max_replicas_percent = optional(number)
    time_window_sec      = optional(number, 600)
  })
  default = { max_replicas_percent = 50 }

  validation {
    condition     = var.autoscaler_scale_in == null || try((var.autoscaler_scale_in.max_replicas_fixed == null) != (var.autoscaler_scale_in.max_replicas_percent == null), false)
    error_message = "autoscaler_scale_in must set exactly one of max_replicas_fixed and max_replicas_percent."
  }
  validation {
    condition     = var.autoscaler_scale_in == null || try(var.autoscaler_scale_in.time_window_sec >= 60 && var.autoscaler_scale_in.time_window_sec <= 3600, false)
    error_message = "autoscaler_scale_in.time_window_sec must be from 60 to 3600."
  }
}

# ---------------------------------------------------------------------------
# Controller
# ---------------------------------------------------------------------------

variable "controller_machine_type" {
  description = "Machine type of the controller VM."
  type        = string
  default     = "e2-small"

  validation {
    condition     = can(regex("^[a-z0-9]+-[a-z0-9-]+$", var.controller_machine_type))
    error_message = "controller_machine_type must be a machine type name such as e2-small."
  }
}

variable "controller_zone" {
  description = "Zone of the controller VM. Null: the first zone of var.region that is up."
  type        = string
  default     = null

  validation {
    condition     = var.controller_zone == null || startswith(coalesce(var.controller_zone, "-"), "${var.region}-")
    error_message = "controller_zone must be a zone of var.region."
  }
}

variable "controller_listen_port" {
  description = "Port of the controller's HTTP server (API, dashboard, /metrics): DROVE_LISTEN."
  type        = number
  default     = 8000

  validation {
    condition     = var.controller_listen_port >= 1024 && var.controller_listen_port <= 65535 && floor(var.controller_listen_port) == var.controller_listen_port
    error_message = "controller_listen_port must be from 1024 to 65535."
  }
}

variable "controller_allowed_cidrs" {
  description = "Sources allowed to reach the controller's port. The default is Google's IAP TCP-forwarding range, for `gcloud compute start-iap-tunnel`; add your producers' private ranges (a VPC connector, GKE pods, the subnet itself)."
  type        = list(string)
  default     = ["35.235.240.0/20"]

  validation {
    condition     = alltrue([for c in var.controller_allowed_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "controller_allowed_cidrs must be IPv4 CIDRs, and never 0.0.0.0/0."
  }
}

variable "controller_migrate_on_start" {
  description = "Let the controller run the queue's migrations when it starts (DROVE_MIGRATE_ON_START), under an advisory lock. Workers wait for the schema."
  type        = bool
  default     = true
}

variable "controller_extra_env" {
  description = "More environment for the controller container (plain settings, not secrets)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.controller_extra_env : can(regex("^[A-Z_][A-Z0-9_]*$", k)) && k != "DATABASE_URL" && !strcontains(v, "\n")])
    error_message = "controller_extra_env keys must be upper-case environment names other than DATABASE_URL, with single-line values."
  }
}

variable "api_token_secret_id" {
  description = "Existing Secret Manager secret (ID in project_id) holding the controller's API bearer token. Null: the module creates `<name>-api-token` with a generated token that never enters the state (read it with `gcloud secrets versions access latest --secret=<name>-api-token`)."
  type        = string
  default     = null

  validation {
    condition     = var.api_token_secret_id == null || can(regex("^[A-Za-z0-9_-]{1,255}$", coalesce(var.api_token_secret_id, "-")))
    error_message = "api_token_secret_id must be a secret ID (letters, digits, _ and -)."
  }
}

variable "api_token_version" {
  description = "Bump to generate a new API token (module-created secret only). Restart the controller afterwards."
  type        = number
  default     = 1
}

variable "allow_iap_ssh" {
  description = "Allow SSH to the VMs through IAP (35.235.240.0/20, port 22). Who may connect is still decided by OS Login IAM roles."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------------------
# Database
# ---------------------------------------------------------------------------

variable "create_cloud_sql" {
  description = "Create a Cloud SQL for PostgreSQL instance with a private IP only and TLS required, a `drove` database and user, and the `<name>-database-url` secret. When false, give database_url_secret_id."
  type        = bool
  default     = true
}

variable "database_url_secret_id" {
  description = "Existing Secret Manager secret (ID in project_id) whose latest version is the PostgreSQL URL, when create_cloud_sql is false. The VMs must reach that server privately."
  type        = string
  default     = null

  validation {
    condition     = var.database_url_secret_id == null || can(regex("^[A-Za-z0-9_-]{1,255}$", coalesce(var.database_url_secret_id, "-")))
    error_message = "database_url_secret_id must be a secret ID (letters, digits, _ and -)."
  }
  validation {
    condition     = var.create_cloud_sql || var.database_url_secret_id != null
    error_message = "database_url_secret_id is required when create_cloud_sql is false."
  }
}

variable "database_ca_cert_pem" {
  description = "CA certificate (PEM) of your own PostgreSQL server, mounted at /etc/drove/db-server-ca.pem for `sslmode=verify-ca&sslrootcert=/etc/drove/db-server-ca.pem`. Ignored with create_cloud_sql (its CA is used)."
  type        = string
  default     = null
}

variable "cloud_sql_private_service_access" {
  description = "Create the private services access range and peering that Cloud SQL's private IP needs. Set false if the VPC already has one for servicenetworking.googleapis.com."
  type        = bool
  default     = true
}

variable "cloud_sql_database_version" {
  description = "Cloud SQL PostgreSQL version."
  type        = string
  default     = "POSTGRES_15"

  validation {
    condition     = can(regex("^POSTGRES_1[5-9]$", var.cloud_sql_database_version))
    error_message = "cloud_sql_database_version must be POSTGRES_15 or newer."
  }
}

variable "cloud_sql_tier" {
  description = "Cloud SQL machine tier. Size max_connections for max_workers x connections per worker + controllers."
  type        = string
  default     = "db-custom-1-3840"
}

variable "cloud_sql_edition" {
  description = "Cloud SQL edition: ENTERPRISE or ENTERPRISE_PLUS."
  type        = string
  default     = "ENTERPRISE"

  validation {
    condition     = contains(["ENTERPRISE", "ENTERPRISE_PLUS"], var.cloud_sql_edition)
    error_message = "cloud_sql_edition must be ENTERPRISE or ENTERPRISE_PLUS."
  }
}

variable "cloud_sql_availability_type" {
  description = "ZONAL, or REGIONAL for a standby in another zone with automatic failover."
  type        = string
  default     = "ZONAL"

  validation {
    condition     = contains(["ZONAL", "REGIONAL"], var.cloud_sql_availability_type)
    error_message = "cloud_sql_availability_type must be ZONAL or REGIONAL."
  }
}

variable "cloud_sql_disk_size_gb" {
  description = "Initial Cloud SQL disk size (it grows automatically)."
  type        = number
  default     = 20

  validation {
    condition     = var.cloud_sql_disk_size_gb >= 10
    error_message = "cloud_sql_disk_size_gb must be at least 10."
  }
}

variable "cloud_sql_deletion_protection" {
  description = "Protect the Cloud SQL instance from deletion (both terraform's and the API's). Set false, apply, then destroy to remove it."
  type        = bool
  default     = true
}

variable "database_password_version" {
  description = "Bump to generate a new password for the `drove` Cloud SQL user; the user and the database URL secret change in the same apply. Restart the containers afterwards (roll the group)."
  type        = number
  default     = 1
}
