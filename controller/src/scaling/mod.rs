//! Scaling: the [`policy`] turns queue state into a desired group size; the
//! [`scaler`] loop applies it through one [`backend::Backend`]:
//! [`gcp_metric`], [`gcp_mig`], [`local`] (or `docker`, the MIG simulation).

pub mod backend;
pub mod docker;
pub mod gcp;
pub mod gcp_metric;
pub mod gcp_mig;
pub mod local;
pub mod policy;
pub mod scaler;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use backend::{Backend, BackendError};
use policy::{PolicyConfig, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScalerKind {
    /// No scaling: the controller only reports.
    None,
    /// Publish the queue signal as a Cloud Monitoring metric for the MIG autoscaler.
    GcpMetric,
    /// Resize the managed instance group through the Compute API.
    GcpMig,
    /// Start and stop drove-worker processes on this machine (the demo).
    Local,
    /// Start and stop worker containers (the MIG simulation).
    Docker,
}

/// Scaling settings of `drove serve`.
#[derive(Debug, Clone, Args)]
pub struct ScalingArgs {
    /// How the group is scaled.
    #[arg(long, env = "DROVE_SCALER", value_enum, default_value = "none")]
    pub scaler: ScalerKind,
    /// Fewest workers (0 allows scaling to zero).
    #[arg(long, env = "DROVE_MIN_WORKERS", default_value_t = 0)]
    pub min_workers: u32,
    /// Most workers.
    #[arg(long, env = "DROVE_MAX_WORKERS", default_value_t = 10)]
    pub max_workers: u32,
    /// Work per worker: jobs (due + running), e.g. `4`, or seconds of work
    /// from the observed run time, e.g. `30s`.
    #[arg(long, env = "DROVE_TARGET_BACKLOG", default_value = "2")]
    pub target_backlog: Target,
    /// Slots per worker to assume before any worker has registered.
    #[arg(long, env = "DROVE_SLOTS_PER_WORKER", default_value_t = 2)]
    pub slots_per_worker: u32,
    /// Scale in only after the work stayed lower for this long.
    #[arg(long, env = "DROVE_SCALE_IN_AFTER", default_value = "60s", value_parser = humantime::parse_duration)]
    pub scale_in_after: Duration,
    /// With --min-workers 0: go to zero only after no work at all for this long.
    #[arg(long, env = "DROVE_SCALE_TO_ZERO_AFTER", default_value = "5m", value_parser = humantime::parse_duration)]
    pub scale_to_zero_after: Duration,
    /// How often the policy runs.
    #[arg(long, env = "DROVE_SCALE_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub scale_interval: Duration,
    /// gcp-metric: how often the metric is written (at least 10s).
    #[arg(long, env = "DROVE_METRIC_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub metric_interval: Duration,
    /// gcp-*: the project.
    #[arg(long, env = "DROVE_GCP_PROJECT")]
    pub gcp_project: Option<String>,
    /// gcp-mig: the region of a regional group.
    #[arg(long, env = "DROVE_GCP_REGION", conflicts_with = "gcp_zone")]
    pub gcp_region: Option<String>,
    /// gcp-mig: the zone of a zonal group.
    #[arg(long, env = "DROVE_GCP_ZONE")]
    pub gcp_zone: Option<String>,
    /// gcp-*: the managed instance group (the metric's `group` label).
    #[arg(long, env = "DROVE_GCP_MIG")]
    pub gcp_mig: Option<String>,
    /// gcp-metric: the metric type the autoscaler reads.
    #[arg(long, env = "DROVE_GCP_METRIC_TYPE", default_value = gcp_metric::DEFAULT_METRIC_TYPE)]
    pub gcp_metric_type: String,
    /// gcp-*: API endpoint override (for a local fake in tests).
    #[arg(long, env = "DROVE_GCP_ENDPOINT", hide = true)]
    pub gcp_endpoint: Option<String>,
    /// gcp-*: send no credentials (only for a local fake).
    #[arg(long, env = "DROVE_GCP_ANONYMOUS", hide = true)]
    pub gcp_anonymous: bool,
    /// local: the drove-worker binary (default: next to this one).
    #[arg(long, env = "DROVE_LOCAL_WORKER_BIN")]
    pub local_worker_bin: Option<PathBuf>,
    /// local: extra arguments for each worker (e.g. "--slots 1"), shell-quoted.
    #[arg(
        long,
        env = "DROVE_LOCAL_WORKER_ARGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub local_worker_args: String,
    /// local: write each worker's log in this directory.
    #[arg(long, env = "DROVE_LOCAL_LOG_DIR")]
    pub local_log_dir: Option<PathBuf>,
    #[command(flatten)]
    pub docker: docker::DockerArgs,
}

impl ScalingArgs {
    pub fn policy(&self) -> Result<PolicyConfig, String> {
        if self.min_workers > self.max_workers {
            return Err(format!(
                "--min-workers {} is more than --max-workers {}",
                self.min_workers, self.max_workers
            ));
        }
        Ok(PolicyConfig {
            min: self.min_workers,
            max: self.max_workers,
            target: self.target_backlog,
            slots_per_worker: self.slots_per_worker,
            scale_in_after: self.scale_in_after,
            idle_to_zero_after: self.scale_to_zero_after,
        })
    }

    fn need<'a>(&self, v: &'a Option<String>, flag: &str) -> Result<&'a str, BackendError> {
        v.as_deref().ok_or_else(|| {
            let scaler = self
                .scaler
                .to_possible_value()
                .map(|p| p.get_name().to_string())
                .unwrap_or_default();
            BackendError::new("config", format!("--scaler {scaler} needs {flag}"), false)
        })
    }

    /// Builds the chosen backend. `worker_env` is the environment (database
    /// URL, schema) the local and docker backends pass on to their workers.
    pub async fn backend(
        &self,
        worker_env: &[(String, String)],
    ) -> Result<Option<Arc<dyn Backend>>, BackendError> {
        let conn = gcp::GcpConn {
            endpoint: self.gcp_endpoint.clone(),
            anonymous: self.gcp_anonymous,
        };
        Ok(match self.scaler {
            ScalerKind::None => None,
            ScalerKind::GcpMetric => {
                gcp::install_crypto_provider();
                let config = gcp_metric::MetricConfig {
                    project: self.need(&self.gcp_project, "--gcp-project")?.to_string(),
                    group: self.need(&self.gcp_mig, "--gcp-mig")?.to_string(),
                    metric_type: self.gcp_metric_type.clone(),
                    interval: self.metric_interval,
                };
                Some(Arc::new(
                    gcp_metric::GcpMetricBackend::new(config, &conn).await?,
                ))
            }
            ScalerKind::GcpMig => {
                gcp::install_crypto_provider();
                let location = match (&self.gcp_zone, &self.gcp_region) {
                    (Some(z), _) => gcp_mig::Location::Zone(z.clone()),
                    (None, Some(r)) => gcp_mig::Location::Region(r.clone()),
                    (None, None) => {
                        return Err(BackendError::new(
                            "config",
                            "--scaler gcp-mig needs --gcp-region or --gcp-zone",
                            false,
                        ));
                    }
                };
                let config = gcp_mig::MigConfig {
                    project: self.need(&self.gcp_project, "--gcp-project")?.to_string(),
                    location,
                    group: self.need(&self.gcp_mig, "--gcp-mig")?.to_string(),
                };
                Some(Arc::new(gcp_mig::GcpMigBackend::new(config, &conn).await?))
            }
            ScalerKind::Local => {
                let worker_bin = match &self.local_worker_bin {
                    Some(p) => p.clone(),
                    None => std::env::current_exe()
                        .map_err(|e| BackendError::new("local", e.to_string(), false))?
                        .with_file_name("drove-worker"),
                };
                let mut args = vec!["--http".to_string(), "127.0.0.1:0".to_string()];
                args.extend(shell_words::split(&self.local_worker_args).map_err(|e| {
                    BackendError::new("local", format!("--local-worker-args: {e}"), false)
                })?);
                if let Some(dir) = &self.local_log_dir {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| BackendError::new("local", e.to_string(), false))?;
                }
                Some(Arc::new(local::LocalBackend::new(local::LocalConfig {
                    worker_bin,
                    args,
                    env: worker_env.to_vec(),
                    log_dir: self.local_log_dir.clone(),
                    stop_timeout: Duration::from_secs(35),
                })))
            }
            ScalerKind::Docker => Some(Arc::new(self.docker.backend(worker_env)?)),
        })
    }
}
