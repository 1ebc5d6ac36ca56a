# Container settings and cloud-init user-data for the drove VMs.
#
# Each VM runs one container from a systemd unit written by cloud-init (the
# Container-Optimized OS way; the instance template's container declaration,
# "konlet", is deprecated). The unit:
#   - reads the image reference from the instance metadata key `drove-image`
#     (so a new image is a new template differing in one metadata key: see
#     scripts/rolling-update.sh), logs docker in to Artifact Registry with
#     docker-credential-gcr, pulls the image;
#   - fetches the database URL (and the controller's API token) from Secret
#     Manager with the VM's service account, into files on tmpfs that are
#     mounted read-only into the container (DROVE_DATABASE_URL_FILE);
#   - runs the container with host networking, an env file of plain settings,
#     a docker stop timeout of the drain grace + 5 s, logs to Cloud Logging;
#   - restarts it on any exit.

locals {
  # Artifact Registry image: HOST/PROJECT/REPOSITORY/IMAGE(:TAG | @sha256:DIGEST)
  image_pattern      = "^([a-z0-9-]+-docker\\.pkg\\.dev)/([a-z0-9.:-]+)/([a-z0-9._-]+)/([a-z0-9._/-]+)(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$"
  docker_arg_pattern = "^--[a-z][a-z0-9-]*(=[^\\s\"'\\\\%$]+)?$"
  forbidden_env      = ["DATABASE_URL"]

  # Shutdown windows (seconds between Compute Engine's soft and hard power-off):
  # 120 for standard VMs, 30 for Spot VMs. docker stop waits grace + margin.
  standard_max_grace = 100
  spot_max_grace     = 20
  default_grace      = 25
  stop_margin        = 5

  grace_seconds        = coalesce(var.worker.drain_grace_seconds, var.worker.spot ? local.spot_max_grace : local.default_grace)
  stop_timeout_seconds = local.grace_seconds + local.stop_margin

  # Paths inside the containers (and on the VM for the CA file).
  database_url_file = "/run/secrets/database-url"
  api_token_file    = "/run/secrets/api-token"
  ca_cert_path      = "/etc/drove/db-server-ca.pem"
  health_path       = "/healthz"

  registries = distinct(compact([
    regex(local.image_pattern, var.worker_image)[0],
    var.controller_image == null ? "" : regex(local.image_pattern, var.controller_image)[0],
  ]))

  worker_env = merge(
    {
      DROVE_DATABASE_URL_FILE = local.database_url_file
      DROVE_SCHEMA            = var.worker.schema
      DROVE_QUEUES            = join(",", var.worker.queues)
      DROVE_GRACE             = "${local.grace_seconds}s"
      DROVE_HTTP_ADDR         = "0.0.0.0:${var.worker.http_port}"
      DROVE_LOG_FORMAT        = "json"
      DROVE_LEASE_TTL         = var.worker.lease_ttl
    },
    var.worker.slots == null ? {} : { DROVE_SLOTS = tostring(var.worker.slots) },
    var.worker.exec == null ? {} : { DROVE_EXEC = var.worker.exec },
    var.worker.extra_env,
  )

  controller_env = merge(
    {
      DROVE_DATABASE_URL_FILE = local.database_url_file
      DROVE_API_TOKEN_FILE    = local.api_token_file
      DROVE_SCHEMA            = var.controller.schema
      DROVE_LISTEN            = "0.0.0.0:${var.controller.listen_port}"
      DROVE_LOG_FORMAT        = "json"
      DROVE_MIGRATE_ON_START  = tostring(var.controller.migrate_on_start)
      DROVE_SCALER            = var.controller.scaler
    },
    var.controller.scaler == "none" ? {} : {
      DROVE_GCP_PROJECT     = var.controller.project
      DROVE_GCP_REGION      = var.controller.region
      DROVE_GCP_MIG         = var.controller.group_name
      DROVE_MIN_WORKERS     = tostring(var.controller.min_workers)
      DROVE_MAX_WORKERS     = tostring(var.controller.max_workers)
      DROVE_TARGET_BACKLOG  = tostring(var.controller.target_backlog)
      DROVE_METRIC_INTERVAL = var.controller.metric_interval
    },
    var.controller.extra_env,
  )

  ca_mount = var.database_ca_cert_pem == null ? [] : [
    "--mount=type=bind,source=${local.ca_cert_path},target=${local.ca_cert_path},readonly",
  ]
  ca_file = var.database_ca_cert_pem == null ? [] : [{
    path        = local.ca_cert_path
    permissions = "0644"
    owner       = "root:root"
    content     = var.database_ca_cert_pem
  }]

  # Options common to both containers. Host networking: the health check and
  # the API reach the VM's own address, and the process sees the VM's name.
  # (No --init: the binaries handle SIGTERM themselves; add it through
  # worker_docker_args if your exec jobs leave orphans to reap.)
  common_docker_args = [
    "--network=host",
    "--security-opt=no-new-privileges",
    "--cap-drop=ALL",
  ]

  worker_docker_args = concat(
    local.common_docker_args,
    [
      "--stop-timeout=${local.stop_timeout_seconds}",
      "--env-file=/etc/drove/drove-worker.env",
      "--mount=type=bind,source=/run/drove/secrets/database-url,target=${local.database_url_file},readonly",
    ],
    local.ca_mount,
    local.log_args[var.worker.log_driver],
    var.worker.docker_args,
  )

  controller_docker_args = concat(
    local.common_docker_args,
    [
      # The controller has no long-running work to drain.
      "--stop-timeout=10",
      "--env-file=/etc/drove/drove-controller.env",
      "--mount=type=bind,source=/run/drove/secrets/database-url,target=${local.database_url_file},readonly",
      "--mount=type=bind,source=/run/drove/secrets/api-token,target=${local.api_token_file},readonly",
    ],
    local.ca_mount,
    local.log_args[var.controller.log_driver],
  )

  # gcplogs: docker ships each line to Cloud Logging itself (log name
  # gcplogs-docker-driver, the line in jsonPayload.message). json-file: lines
  # stay on the VM, where Container-Optimized OS's logging agent (enabled by
  # google-logging-enabled) picks them up. non-blocking: a slow logging API
  # never stalls the process.
  log_args = {
    gcplogs   = ["--log-driver=gcplogs", "--log-opt=mode=non-blocking", "--log-opt=max-buffer-size=4m"]
    json-file = ["--log-driver=json-file", "--log-opt=max-size=50m", "--log-opt=max-file=3"]
  }

  prepare_script = file("${path.module}/templates/drove-prepare.sh")

  worker_unit = templatefile("${path.module}/templates/container.service.tftpl", {
    unit                 = "drove-worker"
    role                 = "worker"
    container            = "drove-worker"
    registries           = local.registries
    open_ports           = [var.worker.http_port]
    image_metadata_key   = "drove-image"
    secret_specs         = ["${var.database_url_secret_version}=/run/drove/secrets/database-url"]
    docker_args          = local.worker_docker_args
    command              = []
    grace_seconds        = local.grace_seconds
    stop_timeout_seconds = local.stop_timeout_seconds
  })

  controller_unit = var.controller_image == null ? null : templatefile("${path.module}/templates/container.service.tftpl", {
    unit               = "drove-controller"
    role               = "controller"
    container          = "drove-controller"
    registries         = local.registries
    open_ports         = [var.controller.listen_port]
    image_metadata_key = "drove-image"
    secret_specs = [
      "${var.database_url_secret_version}=/run/drove/secrets/database-url",
      "${coalesce(var.api_token_secret_version, "missing")}=/run/drove/secrets/api-token",
    ]
    docker_args          = local.controller_docker_args
    command              = ["serve"]
    grace_seconds        = 5
    stop_timeout_seconds = 10
  })

  worker_cloud_config = {
    write_files = concat(
      [
        { path = "/etc/drove/drove-prepare.sh", permissions = "0755", owner = "root:root", content = local.prepare_script },
        { path = "/etc/drove/drove-worker.env", permissions = "0644", owner = "root:root", content = local.worker_env_file },
        { path = "/etc/systemd/system/drove-worker.service", permissions = "0644", owner = "root:root", content = local.worker_unit },
      ],
      local.ca_file,
    )
    runcmd = [
      ["systemctl", "daemon-reload"],
      ["systemctl", "start", "--no-block", "drove-worker.service"],
    ]
  }

  controller_cloud_config = var.controller_image == null ? null : {
    write_files = concat(
      [
        { path = "/etc/drove/drove-prepare.sh", permissions = "0755", owner = "root:root", content = local.prepare_script },
        { path = "/etc/drove/drove-controller.env", permissions = "0644", owner = "root:root", content = local.controller_env_file },
        { path = "/etc/systemd/system/drove-controller.service", permissions = "0644", owner = "root:root", content = local.controller_unit },
      ],
      local.ca_file,
    )
    runcmd = [
      ["systemctl", "daemon-reload"],
      ["systemctl", "start", "--no-block", "drove-controller.service"],
    ]
  }

  # docker --env-file: one KEY=VALUE a line, taken literally (no quoting).
  worker_env_file     = join("", [for k in sort(keys(local.worker_env)) : "${k}=${local.worker_env[k]}\n"])
  controller_env_file = join("", [for k in sort(keys(local.controller_env)) : "${k}=${local.controller_env[k]}\n"])

  worker_user_data     = "#cloud-config\n${yamlencode(local.worker_cloud_config)}"
  controller_user_data = var.controller_image == null ? null : "#cloud-config\n${yamlencode(local.controller_cloud_config)}"

  # Instance metadata shared by both kinds of VM.
  common_metadata = {
    # Container-Optimized OS ships journald (and json-file container logs) to
    # Cloud Logging, and node metrics to Cloud Monitoring.
    google-logging-enabled    = "true"
    google-monitoring-enabled = "true"
    # No project-wide SSH keys; OS Login (IAM) decides who may SSH, via IAP.
    block-project-ssh-keys = "true"
    enable-oslogin         = "TRUE"
    serial-port-enable     = "FALSE"
  }
}
