//! The controller's reaper: reclaims the jobs of workers whose lease
//! expired (workers do it too; both are safe at once), and every
//! [`ReaperConfig::orphan_sweep_every`] passes also reclaims running jobs
//! whose owner has no registry row at all.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use drove_queue::Schema;

use crate::pool::Pool;
use crate::serve::metrics::ControllerMetrics;

#[derive(Debug, Clone)]
pub struct ReaperConfig {
    pub interval: Duration,
    pub orphan_sweep_every: u32,
}

impl Default for ReaperConfig {
    fn default() -> Self {
        ReaperConfig {
            interval: Duration::from_secs(2),
            orphan_sweep_every: 30,
        }
    }
}

pub struct Reaper {
    pub pool: Pool,
    pub schema: Schema,
    pub metrics: ControllerMetrics,
    pub config: ReaperConfig,
    passes: AtomicU32,
}

impl Reaper {
    pub fn new(
        pool: Pool,
        schema: Schema,
        metrics: ControllerMetrics,
        config: ReaperConfig,
    ) -> Reaper {
        Reaper {
            pool,
            schema,
            metrics,
            config,
            passes: AtomicU32::new(0),
        }
    }
}

impl super::Service for Reaper {
    fn name(&self) -> &'static str {
        "reaper"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn leader_only(&self) -> bool {
        true
    }

    async fn run_once(&self) -> anyhow::Result<Option<String>> {
        let pass = self.passes.fetch_add(1, Ordering::Relaxed);
        let sweep = self.config.orphan_sweep_every > 0
            && pass.is_multiple_of(self.config.orphan_sweep_every);
        let conn = crate::pool::get(&self.pool).await?;
        let r = drove_queue::leases_reclaim_expired(conn.client(), &self.schema, sweep).await?;
        let n = (r.requeued + r.dead) as u64;
        self.metrics.reaped.inc_by(n);
        Ok((n > 0 || !r.workers.is_empty()).then(|| {
            format!(
                "dead workers {:?}: {} jobs requeued, {} dead",
                r.workers, r.requeued, r.dead
            )
        }))
    }
}
