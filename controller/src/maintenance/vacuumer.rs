//! The vacuumer: vacuums the job tables once their dead rows pass the
//! policy's threshold (see [`drove_queue::vacuum`] for why autovacuum alone
//! is too slow at high job rates). A pass is one statistics read, plus a
//! VACUUM of each table that is due.

use std::time::Duration;

use drove_queue::Schema;
use drove_queue::vacuum::VacuumPolicy;

use crate::pool::Pool;
use crate::serve::metrics::ControllerMetrics;

#[derive(Debug, Clone)]
pub struct VacuumerConfig {
    /// Time between checks of the dead rows.
    pub interval: Duration,
    pub policy: VacuumPolicy,
}

impl Default for VacuumerConfig {
    fn default() -> Self {
        VacuumerConfig {
            interval: Duration::from_secs(2),
            policy: VacuumPolicy::default(),
        }
    }
}

pub struct Vacuumer {
    pub pool: Pool,
    pub schema: Schema,
    pub metrics: ControllerMetrics,
    pub config: VacuumerConfig,
}

impl super::Service for Vacuumer {
    fn name(&self) -> &'static str {
        "vacuumer"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn leader_only(&self) -> bool {
        true
    }

    /// A VACUUM of a big table can take minutes; it is not abandoned.
    fn timeout(&self) -> Duration {
        Duration::from_secs(3600)
    }

    async fn run_once(&self) -> anyhow::Result<Option<String>> {
        let conn = crate::pool::get(&self.pool).await?;
        let done = drove_queue::vacuum::tables_vacuum_due(
            conn.client(),
            &self.schema,
            &self.config.policy,
        )
        .await?;
        for v in &done {
            self.metrics.vacuums.with_label_values(&[v.table]).inc();
        }
        Ok((!done.is_empty()).then(|| {
            done.iter()
                .map(|v| {
                    format!(
                        "vacuumed {} ({} dead rows, {:.2?})",
                        v.table, v.dead, v.took
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        }))
    }
}
