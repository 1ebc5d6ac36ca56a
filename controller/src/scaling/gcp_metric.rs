//! The `gcp-metric` backend: publishes the group's work (jobs due plus
//! running) as a Cloud Monitoring custom metric that the MIG autoscaler
//! targets with a per-instance assignment (desired VMs = work / target), next
//! to CPU. Scaling to zero works because the metric is per group (resource
//! `global`, label `group`), not per VM.
//!
//! At most one point per `interval` (Cloud Monitoring accepts one point per
//! series every 5 s; the autoscaler reads once a minute or so), published at
//! once when the work changes from or to zero so scale-out starts quickly.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use google_cloud_api::model::metric_descriptor::{MetricKind, ValueType};
use google_cloud_api::model::{Metric, MonitoredResource};
use google_cloud_monitoring_v3::client::MetricService;
use google_cloud_monitoring_v3::model::{Point, TimeInterval, TimeSeries, TypedValue};

use super::backend::{Applied, Backend, BackendError, BoxFuture, Decision};
use super::gcp::{GcpConn, backend_error, configure};

/// The metric the terraform module's autoscaler reads by default.
pub const DEFAULT_METRIC_TYPE: &str = "custom.googleapis.com/drove/queue_backlog";
/// Cloud Monitoring's floor between points of one series, with margin.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct MetricConfig {
    pub project: String,
    pub group: String,
    pub metric_type: String,
    pub interval: Duration,
}

pub struct GcpMetricBackend {
    client: MetricService,
    config: MetricConfig,
    last: Mutex<Option<(Instant, f64)>>,
}

impl GcpMetricBackend {
    pub async fn new(
        config: MetricConfig,
        conn: &GcpConn,
    ) -> Result<GcpMetricBackend, BackendError> {
        if config.interval < MIN_INTERVAL {
            return Err(BackendError::new(
                "gcp-metric",
                format!("--metric-interval must be at least {MIN_INTERVAL:?}"),
                false,
            ));
        }
        let client = configure!(MetricService::builder(), conn)
            .build()
            .await
            .map_err(|e| {
                BackendError::new(
                    "gcp-metric",
                    format!("building the Monitoring client: {e}"),
                    true,
                )
            })?;
        Ok(GcpMetricBackend {
            client,
            config,
            last: Mutex::new(None),
        })
    }

    fn due(&self, value: f64) -> bool {
        match *self.last.lock().expect("metric lock poisoned") {
            None => true,
            Some((at, prev)) => {
                at.elapsed() >= self.config.interval
                    || ((prev == 0.0) != (value == 0.0) && at.elapsed() >= Duration::from_secs(5))
            }
        }
    }
}

impl Backend for GcpMetricBackend {
    fn name(&self) -> &'static str {
        "gcp-metric"
    }

    fn apply<'a>(&'a self, d: &'a Decision) -> BoxFuture<'a, Result<Applied, BackendError>> {
        Box::pin(async move {
            if !self.due(d.work) {
                return Ok(Applied::default());
            }
            let c = &self.config;
            let now = google_cloud_wkt::Timestamp::try_from(std::time::SystemTime::now())
                .map_err(|e| BackendError::new("gcp-metric", format!("clock: {e}"), true))?;
            let series = TimeSeries::new()
                .set_metric(
                    Metric::new()
                        .set_type(c.metric_type.clone())
                        .set_labels([("group", c.group.clone())]),
                )
                .set_resource(
                    MonitoredResource::new()
                        .set_type("global")
                        .set_labels([("project_id", c.project.clone())]),
                )
                .set_metric_kind(MetricKind::Gauge)
                .set_value_type(ValueType::Double)
                .set_points([Point::new()
                    .set_interval(TimeInterval::new().set_end_time(now))
                    .set_value(TypedValue::new().set_double_value(d.work))]);
            self.client
                .create_time_series()
                .set_name(format!("projects/{}", c.project))
                .set_time_series([series])
                .send()
                .await
                .map_err(|e| backend_error("gcp-metric", "writing the queue metric", e))?;
            *self.last.lock().expect("metric lock poisoned") = Some((Instant::now(), d.work));
            tracing::debug!(metric = %c.metric_type, value = d.work, "queue metric published");
            Ok(Applied::default())
        })
    }
}
