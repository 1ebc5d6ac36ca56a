//! The scheduler (leader only): wakes workers when delayed jobs come due,
//! so `run_at` has sub-second precision instead of the workers' slow poll.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use drove_queue::Schema;

use crate::pool::Pool;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub interval: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            interval: Duration::from_millis(250),
        }
    }
}

pub struct Scheduler {
    pub pool: Pool,
    pub schema: Schema,
    pub config: SchedulerConfig,
    /// Jobs due up to this time have been announced.
    after: Mutex<DateTime<Utc>>,
}

impl Scheduler {
    pub fn new(pool: Pool, schema: Schema, config: SchedulerConfig) -> Scheduler {
        // The first pass also wakes queues whose delayed jobs came due while
        // no controller was running.
        Scheduler {
            pool,
            schema,
            config,
            after: Mutex::new(DateTime::<Utc>::UNIX_EPOCH),
        }
    }
}

impl super::Service for Scheduler {
    fn name(&self) -> &'static str {
        "scheduler"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn leader_only(&self) -> bool {
        true
    }

    async fn run_once(&self) -> anyhow::Result<Option<String>> {
        let after = *self.after.lock().expect("scheduler lock poisoned");
        let conn = crate::pool::get(&self.pool).await?;
        let (queues, now) =
            drove_queue::schedule::jobs_wake_due(conn.client(), &self.schema, after).await?;
        *self.after.lock().expect("scheduler lock poisoned") = now;
        if !queues.is_empty() {
            tracing::debug!(?queues, "delayed jobs came due; workers woken");
        }
        Ok(None)
    }
}
