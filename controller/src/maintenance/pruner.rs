//! The pruner: deletes finished jobs past their queue's retention, in
//! batches, a bounded amount per pass so it never monopolises the database.

use std::time::{Duration, Instant};

use drove_queue::Schema;

use crate::pool::Pool;
use crate::serve::metrics::ControllerMetrics;

#[derive(Debug, Clone)]
pub struct PrunerConfig {
    pub interval: Duration,
    /// Rows per DELETE statement.
    pub batch: i64,
    /// Stop a pass after this long (the next pass continues).
    pub budget: Duration,
}

impl Default for PrunerConfig {
    fn default() -> Self {
        PrunerConfig {
            interval: Duration::from_secs(30),
            batch: 10_000,
            budget: Duration::from_secs(10),
        }
    }
}

pub struct Pruner {
    pub pool: Pool,
    pub schema: Schema,
    pub metrics: ControllerMetrics,
    pub config: PrunerConfig,
}

impl super::Service for Pruner {
    fn name(&self) -> &'static str {
        "pruner"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn leader_only(&self) -> bool {
        true
    }

    async fn run_once(&self) -> anyhow::Result<Option<String>> {
        let conn = crate::pool::get(&self.pool).await?;
        let started = Instant::now();
        let mut total = 0;
        loop {
            let n = drove_queue::prune::jobs_prune(conn.client(), &self.schema, self.config.batch)
                .await?;
            total += n;
            self.metrics.pruned.inc_by(n);
            if n < self.config.batch as u64 || started.elapsed() >= self.config.budget {
                break;
            }
        }
        Ok((total > 0).then(|| format!("pruned {total} finished jobs past retention")))
    }
}
