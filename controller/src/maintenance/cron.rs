//! Cron: fires due schedules every tick (see `drove_queue::cron` for the
//! exactly-once rules).

use std::time::Duration;

use drove_queue::Schema;

use crate::pool::Pool;
use crate::serve::metrics::ControllerMetrics;

#[derive(Debug, Clone)]
pub struct CronConfig {
    pub interval: Duration,
    /// A time missed by at most this long still fires (controller restarts);
    /// older ones follow the schedule's catch-up policy.
    pub late_tolerance: Duration,
}

impl Default for CronConfig {
    fn default() -> Self {
        CronConfig {
            interval: Duration::from_secs(1),
            late_tolerance: Duration::from_secs(300),
        }
    }
}

pub struct CronFirer {
    pub pool: Pool,
    pub schema: Schema,
    pub metrics: ControllerMetrics,
    pub config: CronConfig,
}

impl super::Service for CronFirer {
    fn name(&self) -> &'static str {
        "cron"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn leader_only(&self) -> bool {
        true
    }

    async fn run_once(&self) -> anyhow::Result<Option<String>> {
        let mut conn = crate::pool::get(&self.pool).await?;
        let tolerance = chrono::Duration::from_std(self.config.late_tolerance)?;
        let fired =
            drove_queue::cron::cron_fire_due(conn.client_mut(), &self.schema, tolerance).await?;
        let jobs = fired.iter().filter(|f| f.job.is_some()).count();
        self.metrics.cron_fired.inc_by(jobs as u64);
        Ok((!fired.is_empty()).then(|| {
            fired
                .iter()
                .map(|f| match f.job {
                    Some(id) => format!(
                        "{} fired for {} (job {id})",
                        f.name,
                        f.due.format("%H:%M:%S")
                    ),
                    None => format!(
                        "{} skipped missed time {}",
                        f.name,
                        f.due.format("%Y-%m-%d %H:%M:%S")
                    ),
                })
                .collect::<Vec<_>>()
                .join("; ")
        }))
    }
}
